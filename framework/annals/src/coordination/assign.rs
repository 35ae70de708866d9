//! Deterministic, sticky partition assignment.

/// Who owns each partition after a membership change.
///
/// `members` are the live member ids; `current[p]` is partition `p`'s owner before the
/// change. Members are taken in id order, and at most one per partition gets work: with
/// `n` working members each owns `partitions / n` partitions, the first
/// `partitions % n` one more. A partition stays with its owner while that owner is
/// still working and under its share; the rest go, in partition order, to the members
/// with room, in id order. The same inputs always give the same result, on every member.
pub(crate) fn assign(partitions: u32, members: &[String], current: &[Option<String>]) -> Vec<Option<String>> {
    let mut working: Vec<&String> = members.iter().collect();
    working.sort();
    working.dedup();
    working.truncate(partitions as usize);
    let mut assignment = vec![None; partitions as usize];
    if working.is_empty() {
        return assignment;
    }
    let base = partitions as usize / working.len();
    let extra = partitions as usize % working.len();
    let quota = |i: usize| base + usize::from(i < extra);
    let mut owned = vec![0usize; working.len()];
    for (p, owner) in current.iter().enumerate().take(partitions as usize) {
        let Some(owner) = owner else { continue };
        if let Ok(i) = working.binary_search(&owner) {
            if owned[i] < quota(i) {
                owned[i] += 1;
                assignment[p] = Some(owner.clone());
            }
        }
    }
    let mut i = 0;
    for slot in assignment.iter_mut().filter(|slot| slot.is_none()) {
        while owned[i] >= quota(i) {
            i += 1;
        }
        owned[i] += 1;
        *slot = Some(working[i].clone());
    }
    assignment
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn spreads_evenly_in_member_order() {
        let a = assign(5, &ids(&["b", "a"]), &[]);
        let owners: Vec<_> = a.iter().map(|o| o.as_deref().unwrap()).collect();
        assert_eq!(owners, ["a", "a", "a", "b", "b"]);
    }

    #[test]
    fn keeps_owners_when_a_member_joins() {
        let before = assign(4, &ids(&["a", "b"]), &[]);
        let after = assign(4, &ids(&["a", "b", "c"]), &before);
        let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count();
        assert_eq!(moved, 1, "{before:?} -> {after:?}");
    }

    #[test]
    fn more_members_than_partitions_leaves_some_idle() {
        let a = assign(2, &ids(&["c", "b", "a"]), &[]);
        assert_eq!(a, [Some("a".to_string()), Some("b".to_string())]);
    }

    proptest! {
        #[test]
        fn every_partition_has_one_working_owner_and_shares_are_fair(
            partitions in 1u32..40,
            members in proptest::collection::btree_set("[a-e]{1,2}", 0..8),
            seed in proptest::collection::vec(proptest::option::of("[a-e]{1,2}"), 0..40),
        ) {
            let members: Vec<String> = members.into_iter().collect();
            let a = assign(partitions, &members, &seed);
            prop_assert_eq!(a.len(), partitions as usize);
            if members.is_empty() {
                prop_assert!(a.iter().all(Option::is_none));
            } else {
                let mut counts = std::collections::BTreeMap::new();
                for owner in &a {
                    let owner = owner.clone().expect("every partition is owned");
                    prop_assert!(members.contains(&owner));
                    *counts.entry(owner).or_insert(0usize) += 1;
                }
                let (lo, hi) = (counts.values().min().copied().unwrap_or(0), counts.values().max().copied().unwrap_or(0));
                prop_assert!(hi - lo <= 1, "unfair: {:?}", counts);
                prop_assert_eq!(assign(partitions, &members, &seed), a, "not deterministic");
            }
        }
    }
}
