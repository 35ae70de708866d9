//! Checking a follower's log against its leader's before it follows, and cutting it
//! back when an operator allows it.
//!
//! A follower's partitions must be a prefix of the leader's (I8). Records are copied
//! verbatim after checking that they continue the follower's log, so two logs that
//! hold the same record (same event id) at the same offset agree on everything before
//! it: comparing one record per partition, the follower's last, tells whether the
//! follower is a prefix, and the records two diverged logs share are a prefix of both,
//! which a binary search finds.

use std::io::Write;

use annals::{Offset, Partition, RecordedEvent, Store};
use annals_client::Client;

use super::leader::Leader;
use super::{FollowError, FollowOptions, Truncation};

/// Checks the leader's epoch and partition count against `store`'s.
pub(super) async fn check_leader(store: &Store, leader: &Leader, http: &Client) -> Result<u64, FollowError> {
    let partitions = leader.partitions(http).await?;
    let ours = store.replica().epoch;
    if partitions.leader_epoch < ours {
        return Err(FollowError::StaleLeader {
            leader: leader.url.clone(),
            theirs: partitions.leader_epoch,
            ours,
        });
    }
    if !partitions.append_boundaries {
        return Err(FollowError::LeaderTooOld {
            leader: leader.url.clone(),
        });
    }
    if partitions.partition_count != store.partition_count() {
        return Err(FollowError::PartitionCount {
            leader: leader.url.clone(),
            theirs: partitions.partition_count,
            ours: store.partition_count(),
        });
    }
    Ok(partitions.leader_epoch)
}

/// Everything a follower checks before its fetch loops start: the leader, then this
/// store's log against the leader's. A diverged log is cut back if `options` allow
/// it and stops the follower otherwise, changing nothing. Then the store follows the
/// leader, at the leader's epoch.
pub(super) async fn start(
    store: &Store,
    leader: &Leader,
    http: &Client,
    options: &FollowOptions,
) -> Result<(), FollowError> {
    store.refresh_replica().await?;
    let epoch = check_leader(store, leader, http).await?;
    let diverged = first_divergence(store, leader, http).await?;
    if let Some((partition, offset)) = diverged {
        let Some(truncation) = &options.truncate_diverged else {
            return Err(FollowError::Diverged { partition, offset });
        };
        let cuts = common_prefixes(store, leader, http).await?;
        let removed: u64 = cuts.iter().map(|cut| cut.end - cut.keep).sum();
        if removed > truncation.max_records {
            return Err(FollowError::TruncationTooLarge {
                records: removed,
                max: truncation.max_records,
            });
        }
        // A follower from here on: it takes no appends while it is being cut back,
        // and only a follower can be.
        store.follow(&leader.url, epoch).await?;
        truncate(store, &cuts, truncation).await?;
    }
    let replica = store.replica();
    if replica.leader.as_deref() != Some(leader.url.as_str()) || replica.epoch < epoch {
        store.follow(&leader.url, epoch).await?;
    }
    Ok(())
}

/// The first partition whose last record is not the leader's record at that offset.
async fn first_divergence(
    store: &Store,
    leader: &Leader,
    http: &Client,
) -> Result<Option<(Partition, Offset)>, FollowError> {
    for (partition, next) in store.high_watermarks().await?.into_iter().enumerate() {
        let Some(last) = next.checked_sub(1) else { continue };
        let partition = Partition(partition as u32);
        if !shares(store, leader, http, partition, last).await? {
            return Ok(Some((partition, last)));
        }
    }
    Ok(None)
}

/// Whether this store and the leader hold the same record at `offset`.
async fn shares(
    store: &Store,
    leader: &Leader,
    http: &Client,
    partition: Partition,
    offset: Offset,
) -> Result<bool, FollowError> {
    let mine = store.read_partition_sealed(partition, offset, 1).await?;
    let theirs = leader.record_at(http, partition, offset).await?;
    // The same record: a record is only ever copied whole, so these name it.
    Ok(match (mine.first(), theirs) {
        (Some(mine), Some(theirs)) => {
            mine.offset == offset
                && (&mine.event_id, &mine.stream, mine.version, mine.recorded_at)
                    == (&theirs.event_id, &theirs.stream, theirs.version, theirs.recorded_at)
        }
        _ => false,
    })
}

/// Where a partition is cut: the records below `keep` are shared with the leader,
/// those from `keep` to `end` are not.
struct Cut {
    partition: Partition,
    keep: Offset,
    end: Offset,
}

/// For every partition, how much of this store's log the leader shares.
async fn common_prefixes(store: &Store, leader: &Leader, http: &Client) -> Result<Vec<Cut>, FollowError> {
    let mut cuts = Vec::new();
    for (partition, end) in store.high_watermarks().await?.into_iter().enumerate() {
        let partition = Partition(partition as u32);
        if end == 0 || shares(store, leader, http, partition, end - 1).await? {
            continue;
        }
        // The shared records are offsets 0..keep: find the largest such keep.
        let (mut shared, mut unshared) = (Offset(0), end);
        while unshared - shared > 1 {
            let middle = shared + (unshared - shared) / 2;
            if shares(store, leader, http, partition, middle - 1).await? {
                shared = middle;
            } else {
                unshared = middle;
            }
        }
        cuts.push(Cut {
            partition,
            keep: shared,
            end,
        });
    }
    Ok(cuts)
}

/// Writes the records `cuts` remove to the truncation's file (synced), then removes
/// them.
async fn truncate(store: &Store, cuts: &[Cut], truncation: &Truncation) -> Result<(), FollowError> {
    let file_error = |source| FollowError::TruncationFile {
        path: truncation.removed_to.clone(),
        source,
    };
    // Never over an existing file: it may hold what an earlier cut removed.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&truncation.removed_to)
        .map_err(file_error)?;
    let mut file = std::io::BufWriter::new(file);
    for cut in cuts {
        let mut from = cut.keep;
        while from < cut.end {
            let records: Vec<RecordedEvent> = store.read_partition_sealed(cut.partition, from, 1_000).await?;
            let Some(last) = records.last() else { break };
            from = last.offset + 1;
            for record in &records {
                serde_json::to_writer(&mut file, record).map_err(|e| file_error(e.into()))?;
                file.write_all(b"\n").map_err(file_error)?;
            }
        }
    }
    let file = file.into_inner().map_err(|e| file_error(e.into_error()))?;
    file.sync_all().map_err(file_error)?;
    for cut in cuts {
        tracing::warn!(
            partition = %cut.partition,
            from = %cut.keep,
            records = cut.end - cut.keep,
            file = %truncation.removed_to.display(),
            "removing records the leader does not have"
        );
        store.truncate_replica(cut.partition, cut.keep, cut.end).await?;
    }
    Ok(())
}
