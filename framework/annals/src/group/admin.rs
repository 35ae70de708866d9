//! Operating groups: list and describe them with their lag, pause and resume
//! partitions, reset offsets, and list, retry or skip dead letters.
//!
//! Lag is the partition's high watermark minus the group's committed offset. A member is
//! live while its last heartbeat is younger than its session timeout.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::coordination::{validate_group, CommitMode, GroupRecord, Mirrored, PartitionRow, ResetTargets};
pub use crate::coordination::{DeadLetter, DeadLetterStatus};
use crate::error::{Error, Result};
use crate::position::{Offset, Partition};
use crate::store::Store;

/// One group in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// The group's name.
    pub group: String,
    /// Its generation (bumped on every membership change).
    pub generation: i64,
    /// Live members.
    pub members: u64,
    /// Records not yet committed, over all partitions.
    pub lag: u64,
    /// How it commits, as its members last said (`None` for a group no member of
    /// this version has joined).
    pub commit_mode: Option<CommitMode>,
    /// On a follower: the leader this group's offsets and dead letters are copied
    /// from (see [`mirror`]); `None` for a group of this store's own.
    pub mirrored_from: Option<String>,
}

/// A live member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Its id.
    pub member_id: String,
    /// The host it runs on.
    pub host: String,
    /// When it joined.
    pub joined_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// The partitions it owns.
    pub partitions: Vec<Partition>,
}

/// A group's position in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The partition.
    pub partition: Partition,
    /// The next offset the group will process.
    pub committed: Offset,
    /// The partition's next offset.
    pub high_watermark: Offset,
    /// `high_watermark - committed`.
    pub lag: u64,
    /// The member working on it, if any.
    pub owner: Option<String>,
    /// Paused by an operator or stopped by the failure policy.
    pub paused: bool,
    /// Why the failure policy stopped it.
    pub stopped_reason: Option<String>,
}

/// Everything about one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDescription {
    /// The group's name.
    pub group: String,
    /// Its generation.
    pub generation: i64,
    /// Live members.
    pub members: Vec<MemberInfo>,
    /// Per partition, in order.
    pub partitions: Vec<PartitionState>,
    /// Total lag.
    pub lag: u64,
    /// Dead letters waiting (failed, parked or marked for retry).
    pub dead_letters: u64,
    /// How it commits, as its members last said.
    pub commit_mode: Option<CommitMode>,
    /// On a follower: the leader it is copied from, if it is (see [`mirror`]).
    pub mirrored_from: Option<String>,
}

/// Where [`reset`] moves a group's committed offsets. Its JSON form is the HTTP API's:
/// `"earliest"`, `"latest"`, `{"timestamp": rfc3339}` or `{"offsets": {"p": o}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetTo {
    /// Offset 0 of every partition: replay everything.
    Earliest,
    /// The high watermarks: skip everything written so far.
    Latest,
    /// The first record written at or after this time, per partition.
    Timestamp(DateTime<Utc>),
    /// Explicit offsets for some partitions; the others keep theirs.
    Offsets(BTreeMap<Partition, Offset>),
}

/// Every group, by name.
pub async fn list(store: &Store) -> Result<Vec<GroupSummary>> {
    let watermarks = store.high_watermarks().await?;
    let rows = store.groups()?.list().await?;
    Ok(rows
        .into_iter()
        .map(|row| GroupSummary {
            lag: lag(&watermarks, &row.committed),
            group: row.group,
            generation: row.generation,
            members: row.live_members,
            commit_mode: row.commit_mode,
            mirrored_from: row.mirrored_from,
        })
        .collect())
}

fn lag(watermarks: &[Offset], committed: &BTreeMap<Partition, Offset>) -> u64 {
    watermarks
        .iter()
        .zip(Partition::all(u32::MAX))
        .map(|(hw, p)| hw.0.saturating_sub(committed.get(&p).map_or(0, |c| c.0)))
        .sum()
}

/// One group's members, partitions, lag and dead letters.
pub async fn describe(store: &Store, group: &str) -> Result<GroupDescription> {
    validate_group(group)?;
    let watermarks = store.high_watermarks().await?;
    let record = group_record(store, group).await?;
    let live: Vec<&str> = record.members.iter().map(|m| m.member_id.as_str()).collect();
    let states: Vec<PartitionState> = record
        .partitions
        .iter()
        .map(|row| {
            let high_watermark = watermarks.get(row.partition.index()).copied().unwrap_or_default();
            PartitionState {
                partition: row.partition,
                committed: row.committed,
                high_watermark,
                lag: high_watermark.0.saturating_sub(row.committed.0),
                // An owner whose session expired is not working on it any more.
                owner: row.owner.clone().filter(|o| live.contains(&o.as_str())),
                paused: row.paused,
                stopped_reason: row.stopped_reason.clone(),
            }
        })
        .collect();
    let members = record
        .members
        .iter()
        .map(|member| MemberInfo {
            partitions: states
                .iter()
                .filter(|s| s.owner.as_deref() == Some(member.member_id.as_str()))
                .map(|s| s.partition)
                .collect(),
            member_id: member.member_id.clone(),
            host: member.host.clone(),
            joined_at: member.joined_at,
            heartbeat_at: member.heartbeat_at,
        })
        .collect();
    Ok(GroupDescription {
        group: group.to_owned(),
        generation: record.generation,
        members,
        lag: states.iter().map(|s| s.lag).sum(),
        partitions: states,
        dead_letters: record.dead_letters,
        commit_mode: record.commit_mode,
        mirrored_from: record.mirrored_from,
    })
}

/// Copies a leader's at-least-once group into this follower: its committed offsets
/// (never past what this store holds: a record it lacks may be another after a
/// failover) and its dead letters of records this store holds. A follower keeps
/// doing so (see `annals follow`), so that after a promotion the group's consumers
/// resume about where they were instead of from offset 0; at least once, as ever.
///
/// A group this store already has as its own (one that members joined here) is left
/// alone: returns `false`, as on a store that is not a follower (any more). So is a
/// group that is not at-least-once: a projection's
/// read model lives in its leader's database, and its offsets mean nothing here.
/// The first member that joins a copied group here makes it this store's own.
pub async fn mirror(
    store: &Store,
    leader: &str,
    group: &GroupDescription,
    dead_letters: &[DeadLetter],
) -> Result<bool> {
    validate_group(&group.group)?;
    if group.commit_mode != Some(CommitMode::AtLeastOnce) {
        return Ok(false);
    }
    let watermarks = store.high_watermarks().await?;
    let partitions = group
        .partitions
        .iter()
        .filter(|p| p.partition < store.partition_count())
        .map(|p| PartitionRow {
            partition: p.partition,
            committed: p.committed.min(watermarks[p.partition.index()]),
            owner: None,
            paused: p.paused,
            stopped_reason: p.stopped_reason.clone(),
        })
        .collect();
    let dead_letters = dead_letters
        .iter()
        .filter(|d| d.group == group.group && watermarks.get(d.partition.index()).is_some_and(|held| d.offset < *held))
        .cloned()
        .collect();
    store
        .groups()?
        .mirror(Mirrored {
            group: group.group.clone(),
            leader: leader.to_owned(),
            generation: group.generation,
            partitions,
            dead_letters,
        })
        .await
}

/// Moves the committed offsets of `group`; refused while it has live members.
pub async fn reset(store: &Store, group: &str, to: ResetTo) -> Result<()> {
    validate_group(group)?;
    let watermarks = store.high_watermarks().await?;
    let targets = match to {
        ResetTo::Earliest => ResetTargets::Offsets(
            Partition::all(watermarks.len() as u32)
                .map(|p| (p, Offset(0)))
                .collect(),
        ),
        ResetTo::Latest => ResetTargets::Offsets(
            Partition::all(watermarks.len() as u32)
                .zip(watermarks.iter().copied())
                .collect(),
        ),
        ResetTo::Offsets(offsets) => {
            for (&partition, &offset) in &offsets {
                let Some(&high_watermark) = watermarks.get(partition.index()) else {
                    return Err(Error::PartitionOutOfRange {
                        partition,
                        partition_count: store.partition_count(),
                    });
                };
                if offset > high_watermark {
                    return Err(Error::OffsetOutOfRange {
                        partition,
                        offset,
                        high_watermark,
                    });
                }
            }
            ResetTargets::Offsets(offsets)
        }
        ResetTo::Timestamp(at) => ResetTargets::Since {
            at,
            high_watermarks: watermarks,
        },
    };
    store.groups()?.reset(group, targets).await
}

/// Pauses `partitions` (all when `None`) of `group`: their owners stop after the batch
/// in hand, within one heartbeat.
pub async fn pause(store: &Store, group: &str, partitions: Option<Vec<Partition>>) -> Result<()> {
    set_paused(store, group, partitions, true).await
}

/// Resumes paused or stopped partitions (all when `None`) of `group`.
pub async fn resume(store: &Store, group: &str, partitions: Option<Vec<Partition>>) -> Result<()> {
    set_paused(store, group, partitions, false).await
}

async fn set_paused(store: &Store, group: &str, partitions: Option<Vec<Partition>>, paused: bool) -> Result<()> {
    validate_group(group)?;
    if let Some(bad) = partitions.iter().flatten().find(|p| **p >= store.partition_count()) {
        return Err(Error::PartitionOutOfRange {
            partition: *bad,
            partition_count: store.partition_count(),
        });
    }
    store.groups()?.set_paused(group, partitions, paused).await
}

/// Dead letters, of one group or all, in group and offset order.
pub async fn dead_letters(store: &Store, group: Option<&str>) -> Result<Vec<DeadLetter>> {
    if let Some(group) = group {
        validate_group(group)?;
    }
    store.groups()?.dead_letters(group).await
}

/// Marks dead letter `id`, and the records of its stream parked behind it, for the
/// group's owner of the partition to handle again, in offset order. Returns it as marked.
pub async fn retry_dead_letter(store: &Store, id: i64) -> Result<DeadLetter> {
    store.groups()?.retry_dead_letter(id).await
}

/// Gives up on dead letter `id` for good: it is removed, and the records of its stream
/// parked behind it are handed to the group again, in offset order.
pub async fn skip_dead_letter(store: &Store, id: i64) -> Result<DeadLetter> {
    store.groups()?.skip_dead_letter(id).await
}

/// The stored state of `group`, or [`Error::GroupNotFound`].
async fn group_record(store: &Store, group: &str) -> Result<GroupRecord> {
    store
        .groups()?
        .describe(group)
        .await?
        .ok_or_else(|| Error::GroupNotFound {
            group: group.to_owned(),
        })
}

/// How a [`wait_until`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waited {
    /// Whether the group committed past the position in time.
    pub reached: bool,
    /// Where the group's commit on the position's partition stood when the wait ended.
    pub committed: Offset,
}

/// Waits until `group` has committed past `position` (handled the record there and
/// everything before it in its partition), or until `timeout` runs out: read-your-
/// writes for a caller that appended and wants the group's read model to show it.
///
/// A commit by a member in this process wakes the wait at once, and so does one in
/// another process on PostgreSQL (announced with `pg_notify` once committed); on SQLite a
/// commit in another process is seen at the store's next poll (250 ms,
/// [`StoreOptions::poll_interval`](crate::StoreOptions::poll_interval)). A group nobody has joined is [`Error::GroupNotFound`], and a partition
/// outside the store [`Error::PartitionOutOfRange`].
///
/// ```no_run
/// # async fn demo(store: annals::Store, outcome: annals::AppendOutcome) -> annals::Result<()> {
/// use annals::group::admin;
/// let waited = admin::wait_until(&store, "order-views", outcome.position(), std::time::Duration::from_secs(5)).await?;
/// if !waited.reached {
///     // The view may not show the order yet: say so, or answer from the command.
/// }
/// # Ok(()) }
/// ```
pub async fn wait_until(
    store: &Store,
    group: &str,
    position: crate::position::Position,
    timeout: std::time::Duration,
) -> Result<Waited> {
    validate_group(group)?;
    if position.partition.0 >= store.partition_count() {
        return Err(Error::PartitionOutOfRange {
            partition: position.partition,
            partition_count: store.partition_count(),
        });
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let committed_now = async || {
        let record = group_record(store, group).await?;
        let row = record.partitions.iter().find(|row| row.partition == position.partition);
        Ok::<_, Error>(row.map_or(Offset(0), |row| row.committed))
    };
    // Only a group that exists gets a watch (a wait on any other name must leave none
    // behind), and the watch is made before each read, so no commit is missed between.
    committed_now().await?;
    let mut commits = store.commits().watch(group, position.partition);
    loop {
        commits.borrow_and_update();
        let committed = committed_now().await?;
        if committed > position.offset {
            return Ok(Waited {
                reached: true,
                committed,
            });
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Waited {
                reached: false,
                committed,
            });
        }
        let next_look = (now + store.poll_interval()).min(deadline);
        tokio::select! {
            _ = commits.changed() => {}
            () = tokio::time::sleep_until(next_look) => {}
        }
    }
}
