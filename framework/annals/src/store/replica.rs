//! A store's place in replication: a leader (it takes appends) or a follower of a
//! leader (it takes only records shipped from it, applied verbatim), and its leader
//! epoch, bumped on every promotion.

use super::Store;
use crate::backend::admit::CommandRecord;
use crate::backend::{Replicated, RoleChange};
use crate::error::{Error, Result};
use crate::log::{AppendOutcome, Replica};
use crate::partitioner::partition_for;
use crate::position::{Offset, Partition};
use crate::record::RecordedEvent;

impl Store {
    /// This store's role and epoch, as of its last change in this process (see
    /// [`refresh_replica`](Store::refresh_replica)).
    pub fn replica(&self) -> Replica {
        self.inner.replica.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_replica(&self, replica: Replica) -> Replica {
        *self.inner.replica.write().unwrap_or_else(|p| p.into_inner()) = replica.clone();
        replica
    }

    /// Reads the role and epoch from the database (another process may have promoted
    /// this store).
    pub async fn refresh_replica(&self) -> Result<Replica> {
        let replica = self.inner.backend.replica().await?;
        Ok(self.set_replica(replica))
    }

    /// Makes this store a follower of `leader`, whose leader epoch is `leader_epoch`:
    /// from now on it refuses appends (`ReadOnlyReplica`) and takes only replicated
    /// records, and its own epoch rises to the leader's (it never goes down), so that
    /// a promotion later takes it past every epoch it has seen.
    pub async fn follow(&self, leader: &str, leader_epoch: u64) -> Result<Replica> {
        let change = RoleChange::Follow {
            leader: leader.to_owned(),
            epoch: leader_epoch,
        };
        let replica = self.inner.backend.change_role(change).await?;
        Ok(self.set_replica(replica))
    }

    /// Makes this store a leader with the next leader epoch. Returns the new state.
    /// Replicated records in flight are refused from then on (`NotAReplica`): the
    /// engines check the role in the transaction that would write them.
    pub async fn promote(&self) -> Result<Replica> {
        let replica = self.inner.backend.change_role(RoleChange::Promote).await?;
        Ok(self.set_replica(replica))
    }

    /// Applies records shipped from the leader, verbatim: same partition, offset,
    /// stream, version, event id, type, payload, metadata, time and append boundary.
    /// They must all be of one partition, continue it exactly (the first at its next
    /// offset, no gap) and end on an append's last record, or nothing is written
    /// (`ReplicationGap`, `InvalidReplicatedRecords`). Command ids are rebuilt from the
    /// records' metadata in the same transaction, so a retried command is a duplicate
    /// on this store too after a failover (I5). A store that is not a follower takes
    /// none (`NotAReplica`).
    pub async fn apply_replicated(&self, records: Vec<RecordedEvent>) -> Result<()> {
        let Some(first) = records.first() else { return Ok(()) };
        let (partition, first_offset) = (first.partition, first.offset);
        self.check_partition(partition)?;
        let invalid = |offset, reason| Error::InvalidReplicatedRecords {
            partition,
            offset,
            reason,
        };
        let mut commands = Vec::new();
        let mut append_start = 0;
        for (i, record) in records.iter().enumerate() {
            let expected = first_offset + i as u64;
            if record.partition != partition || record.offset != expected {
                return Err(Error::ReplicationGap {
                    partition,
                    first: record.offset,
                    next: expected,
                });
            }
            if partition_for(&record.stream, self.inner.partition_count) != partition {
                return Err(invalid(record.offset, "its stream belongs to another partition"));
            }
            if !record.last_in_append {
                continue;
            }
            let append = &records[append_start..=i];
            append_start = i + 1;
            if append.iter().any(|r| r.stream != record.stream) {
                return Err(invalid(record.offset, "one append holds records of several streams"));
            }
            if let Some(command_id) = append[0].metadata.command_id {
                let outcome = AppendOutcome {
                    partition,
                    first_offset: append[0].offset,
                    last_offset: record.offset,
                    first_version: append[0].version,
                    last_version: record.version,
                    duplicate: false,
                };
                let stream = record.stream.clone();
                commands.push((command_id, CommandRecord { stream, outcome }));
            }
        }
        if append_start != records.len() {
            let last = first_offset + records.len() as u64 - 1;
            return Err(invalid(last, "the records end inside an append"));
        }
        // Before the records: a follower that stops between the two must not hold
        // sealed records of a stream it does not know to seal snapshots of.
        self.note_sealed(&records).await?;
        let replicated = Replicated {
            partition,
            first_offset,
            records,
            commands,
        };
        self.inner.backend.append_replicated(replicated).await
    }

    /// Removes this follower's records of `partition` from `from_offset` to `end`, which
    /// must be the partition's next offset (`PartitionMoved` otherwise, and nothing is
    /// removed), with their command ids, the dead letters that name them and the
    /// snapshots that folded them. Consumer groups' offsets past the new end come back
    /// to it; a transactional group's partition there also stops, because its read
    /// model holds the removed records' effects (rebuild the group). For a follower
    /// that holds records its leader never had (see `annals follow
    /// --truncate-diverged`); a leader refuses (`NotAReplica`).
    pub async fn truncate_replica(
        &self,
        partition: impl Into<Partition>,
        from_offset: impl Into<Offset>,
        end: impl Into<Offset>,
    ) -> Result<()> {
        let partition = partition.into();
        self.check_partition(partition)?;
        self.inner
            .backend
            .truncate(partition, from_offset.into(), end.into())
            .await
    }
}
