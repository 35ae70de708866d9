//! The in-process engine: the reference model the others are tested against, and the
//! quickest store for tests and examples. Nothing survives the process.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::admit::{Admission, Admitted, CommandRecord, LogView};
use super::{now_micros, Backend, Groups, PreparedAppend, Replicated, RoleChange, SnapshotLog, Wakeups};
use crate::error::{Error, Result};
use crate::log::{AppendOutcome, Replica, StreamInfo, Visitor};
use crate::position::{Offset, Partition, Version};
use crate::record::RecordedEvent;
use crate::stream::StreamId;

mod groups;
mod snapshots;

pub(crate) struct MemoryBackend {
    log: Arc<Mutex<Log>>,
    groups: groups::MemoryGroups,
    snapshots: snapshots::MemorySnapshots,
    wakeups: Wakeups,
    commits: crate::coordination::Commits,
    partition_count: u32,
}

#[derive(Default)]
struct Log {
    partitions: Vec<Vec<RecordedEvent>>,
    /// Offsets of each stream's events in its partition, in version order.
    streams: BTreeMap<StreamId, Vec<Offset>>,
    commands: HashMap<Uuid, CommandRecord>,
    event_ids: HashSet<Uuid>,
    /// Each deleted stream's latest deletion record: its version, and whether it was hard.
    deleted: HashMap<StreamId, (Version, bool)>,
    /// How far the scavenger truncated each stream: the version its records are
    /// redacted below.
    truncated: HashMap<StreamId, Version>,
    replica: Replica,
}

impl Log {
    /// Applies the deletion and truncation records among the records of `partition`
    /// from `from` on, as the SQL engines' triggers do: a deletion redacts the earlier
    /// records of its stream, a truncation those of the stream it names below its
    /// version. Returns the deleted streams, whose snapshots go too.
    fn apply_redactions(&mut self, partition: Partition, from: usize) -> Vec<StreamId> {
        enum Written {
            Deletion(StreamId, (Version, bool)),
            Truncation(StreamId, Version),
        }
        let written: Vec<Written> = self.partitions[partition.index()][from..]
            .iter()
            .filter_map(|record| match deletion_of(record) {
                Some(deletion) => Some(Written::Deletion(record.stream.clone(), deletion)),
                None => crate::store::truncation_of(record).map(|(stream, before)| Written::Truncation(stream, before)),
            })
            .collect();
        let mut deleted = Vec::new();
        for written in written {
            match written {
                Written::Deletion(stream, (version, hard)) => {
                    self.redact_below(&stream, version, true);
                    self.deleted.insert(stream.clone(), (version, hard));
                    deleted.push(stream);
                }
                Written::Truncation(stream, before) => {
                    self.redact_below(&stream, before, false);
                    let truncated = self.truncated.entry(stream).or_insert(before);
                    *truncated = (*truncated).max(before);
                }
            }
        }
        deleted
    }

    /// Redacts the records of `stream` below version `below`; a truncation leaves its
    /// deletion records be (a hard deletion must stay hard).
    fn redact_below(&mut self, stream: &StreamId, below: Version, deletions_too: bool) {
        let partition = crate::partition_for(stream, self.partitions.len() as u32);
        let offsets = self.streams.get(stream).map_or(&[][..], Vec::as_slice);
        let records = &mut self.partitions[partition.index()];
        for offset in offsets.iter().take(below.0.saturating_sub(1) as usize) {
            let record = &mut records[offset.0 as usize];
            if deletions_too || deletion_of(record).is_none() {
                crate::store::lifecycle::redact(record);
            }
        }
    }

    /// Redacts the records of `partition` from `from` on (just copied from a leader)
    /// whose stream was already truncated past them: the truncation, in another
    /// partition, was copied first.
    fn redact_truncated(&mut self, partition: Partition, from: usize) {
        let Log {
            partitions, truncated, ..
        } = self;
        for record in &mut partitions[partition.index()][from..] {
            let below = truncated.get(&record.stream).copied().unwrap_or(Version(1));
            if record.version < below && deletion_of(record).is_none() {
                crate::store::lifecycle::redact(record);
            }
        }
    }

    /// After a truncation removed deletion records of `streams`: each one's latest
    /// remaining deletion becomes its latest again.
    fn recount_deletions(&mut self, streams: &HashSet<StreamId>) {
        for stream in streams {
            let partition = &self.partitions[crate::partition_for(stream, self.partitions.len() as u32).index()];
            let offsets = self.streams.get(stream).map_or(&[][..], |offsets| offsets.as_slice());
            let latest = (offsets.iter().rev()).find_map(|offset| deletion_of(&partition[offset.0 as usize]));
            match latest {
                Some(latest) => self.deleted.insert(stream.clone(), latest),
                None => self.deleted.remove(stream),
            };
        }
    }
}

/// The version of `record` and whether it deletes hard, when it is a deletion record.
fn deletion_of(record: &RecordedEvent) -> Option<(Version, bool)> {
    (record.event_type == crate::store::lifecycle::STREAM_DELETED).then(|| {
        let hard = crate::store::lifecycle::is_hard_deletion(&record.event_type, record.payload.get());
        (record.version, hard)
    })
}

impl LogView for Log {
    fn stream_version(&self, stream: &StreamId) -> Version {
        self.streams
            .get(stream)
            .map_or(Version(0), |offsets| Version(offsets.len() as u64))
    }
    fn next_offset(&self, partition: Partition) -> Offset {
        Offset(self.partitions[partition.index()].len() as u64)
    }
    fn command(&self, command_id: &Uuid) -> Option<CommandRecord> {
        self.commands.get(command_id).cloned()
    }
    fn holds_event(&self, event_id: &Uuid) -> bool {
        self.event_ids.contains(event_id)
    }
    fn hard_deleted(&self, stream: &StreamId) -> bool {
        self.deleted.get(stream).is_some_and(|(_, hard)| *hard)
    }
}

impl MemoryBackend {
    pub(crate) fn new(partition_count: u32) -> Self {
        let log = Arc::new(Mutex::new(Log {
            partitions: (0..partition_count).map(|_| Vec::new()).collect(),
            ..Log::default()
        }));
        MemoryBackend {
            log: log.clone(),
            groups: groups::MemoryGroups::new(log),
            snapshots: snapshots::MemorySnapshots::default(),
            wakeups: Wakeups::new(partition_count),
            commits: crate::coordination::Commits::default(),
            partition_count,
        }
    }

    /// The pending timers of `partition`: streams of the timer category whose only
    /// record is a `TimerScheduled`. Found by a scan, where the SQL engines keep an index.
    fn pending_timers(&self, partition: Partition) -> Vec<(StreamId, i64)> {
        use std::ops::Bound;
        let log = self.log();
        let category = crate::schedule::CATEGORY;
        let (from, to) = (format!("{category}-"), format!("{category}."));
        let records = &log.partitions[partition.index()];
        log.streams
            .range::<str, _>((Bound::Included(from.as_str()), Bound::Excluded(to.as_str())))
            .filter(|(stream, offsets)| {
                offsets.len() == 1 && crate::partition_for(stream, self.partition_count) == partition
            })
            .filter_map(|(stream, offsets)| {
                let record = records.get(offsets[0].0 as usize)?;
                Some((stream.clone(), crate::schedule::scheduled_due(record)?))
            })
            .collect()
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock cannot leave the log half-written: every
        // append is fully decided before the first push.
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn partition_count(&self) -> u32 {
        self.partition_count
    }

    async fn append(&self, append: PreparedAppend) -> Result<AppendOutcome> {
        let outcome = {
            let mut log = self.log();
            let outcome = match Admission::new(&*log).admit(&append)? {
                Admitted::Duplicate(outcome) => return Ok(outcome),
                Admitted::Write(outcome) => outcome,
            };
            let partition = append.partition.index();
            // Monotonic within the partition even if the wall clock steps back.
            let recorded_at = log.partitions[partition]
                .last()
                .map_or_else(now_micros, |last| last.recorded_at.max(now_micros()));
            // Build every record before touching the log, so an append is all or nothing.
            let last = append.events.len() - 1;
            let records = append
                .events
                .into_iter()
                .enumerate()
                .map(|(i, event)| {
                    Ok(RecordedEvent {
                        partition: append.partition,
                        offset: outcome.first_offset + i as u64,
                        stream: append.stream.clone(),
                        version: outcome.first_version + i as u64,
                        event_id: event.event_id,
                        event_type: event.event_type,
                        payload: event.payload,
                        metadata: serde_json::from_str(&event.metadata).map_err(Error::InvalidJson)?,
                        recorded_at,
                        last_in_append: i == last,
                        redacted: false,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            log.event_ids.extend(records.iter().map(|record| record.event_id));
            let from = log.partitions[partition].len();
            log.partitions[partition].extend(records);
            log.streams
                .entry(append.stream.clone())
                .or_default()
                .extend((outcome.first_offset.0..=outcome.last_offset.0).map(Offset));
            for stream in log.apply_redactions(append.partition, from) {
                self.snapshots.forget(&stream);
            }
            if let Some(command_id) = append.command_id {
                log.commands.insert(
                    command_id,
                    CommandRecord {
                        stream: append.stream,
                        outcome,
                    },
                );
            }
            outcome
        };
        self.wakeups.publish_outcomes([&outcome]);
        Ok(outcome)
    }

    async fn read_stream(&self, stream: &StreamId, from_version: Version, limit: usize) -> Result<Vec<RecordedEvent>> {
        let log = self.log();
        let Some(offsets) = log.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let partition = &log.partitions[(crate::partition_for(stream, self.partition_count)).index()];
        let skip = usize::try_from(from_version.0.saturating_sub(1)).unwrap_or(usize::MAX);
        Ok(offsets
            .iter()
            .skip(skip)
            .take(limit)
            .map(|offset| partition[offset.0 as usize].clone())
            .collect())
    }

    async fn fold_stream(&self, stream: &StreamId, from_version: Version, visit: &mut Visitor<'_>) -> Result<()> {
        // Copied out first: `visit` runs user code, which must not run under the lock.
        for record in self.read_stream(stream, from_version, usize::MAX).await? {
            if !record.redacted {
                record.view(&mut *visit)?;
            }
        }
        Ok(())
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        Ok(self.log().stream_version(stream))
    }

    async fn deletion(&self, stream: &StreamId) -> Result<Option<(Version, bool)>> {
        Ok(self.log().deleted.get(stream).copied())
    }

    async fn position_of_event(&self, id: Uuid) -> Result<Option<(Partition, Offset)>> {
        let log = self.log();
        Ok(log
            .partitions
            .iter()
            .flatten()
            .find(|record| record.event_id == id)
            .map(|record| (record.partition, record.offset)))
    }

    async fn truncated_before(&self, stream: &StreamId) -> Result<Option<Version>> {
        Ok(self.log().truncated.get(stream).copied())
    }

    async fn first_version_since(&self, stream: &StreamId, since_us: i64) -> Result<Option<Version>> {
        let since = chrono::DateTime::from_timestamp_micros(since_us).unwrap_or_default();
        let log = self.log();
        let Some(offsets) = log.streams.get(stream) else {
            return Ok(None);
        };
        let partition = &log.partitions[crate::partition_for(stream, self.partition_count).index()];
        Ok(offsets
            .iter()
            .map(|offset| &partition[offset.0 as usize])
            .find(|record| record.recorded_at >= since)
            .map(|record| record.version))
    }

    async fn read_partition(
        &self,
        partition: Partition,
        from_offset: Offset,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let log = self.log();
        let records = &log.partitions[partition.index()];
        let start = usize::try_from(from_offset.0).unwrap_or(usize::MAX).min(records.len());
        Ok(records[start..].iter().take(limit).cloned().collect())
    }

    async fn read_filtered(
        &self,
        partition: Partition,
        range: std::ops::Range<Offset>,
        limit: usize,
        read: &super::FilteredRead,
    ) -> Result<super::Filtered> {
        let log = self.log();
        let records = &log.partitions[partition.index()];
        let end = usize::try_from(range.end.0).unwrap_or(usize::MAX).min(records.len());
        let start = usize::try_from(range.start.0).unwrap_or(usize::MAX).min(end);
        let passing: Vec<RecordedEvent> = records[start..end]
            .iter()
            .filter(|record| read.filter.matches(record))
            .take(limit)
            .cloned()
            .collect();
        let covered = super::FilteredRead::covered(&passing, limit, range.end);
        Ok((passing, covered))
    }

    async fn filter_indexes(&self) -> Result<Vec<crate::group::FilterIndex>> {
        Ok(crate::group::FilterIndex::ALL.to_vec())
    }

    async fn set_filter_index(&self, _index: crate::group::FilterIndex, _enabled: bool) -> Result<()> {
        Ok(())
    }

    async fn high_watermarks(&self) -> Result<Vec<Offset>> {
        Ok(self
            .log()
            .partitions
            .iter()
            .map(|records| Offset(records.len() as u64))
            .collect())
    }

    async fn list_streams(
        &self,
        category: Option<&str>,
        limit: usize,
        after: Option<&StreamId>,
    ) -> Result<Vec<StreamInfo>> {
        use std::ops::Bound;
        let log = self.log();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(log
            .streams
            .range::<StreamId, _>((start, Bound::Unbounded))
            .filter(|(stream, _)| category.is_none_or(|category| stream.category() == category))
            .filter(|(stream, offsets)| {
                log.deleted
                    .get(*stream)
                    .is_none_or(|(version, _)| version.0 != offsets.len() as u64)
            })
            .take(limit)
            .map(|(stream, offsets)| StreamInfo {
                stream: stream.clone(),
                partition: crate::partition_for(stream, self.partition_count),
                version: Version(offsets.len() as u64),
            })
            .collect())
    }

    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<(StreamId, AppendOutcome)>> {
        let log = self.log();
        let record = log.commands.get(&command_id);
        Ok(record.map(|record| {
            (
                record.stream.clone(),
                AppendOutcome {
                    duplicate: true,
                    ..record.outcome
                },
            )
        }))
    }

    async fn due_timers(&self, partition: Partition, until: i64, limit: usize) -> Result<Vec<(StreamId, i64)>> {
        let mut due = self.pending_timers(partition);
        due.retain(|(_, at)| *at <= until);
        due.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        due.truncate(limit);
        Ok(due)
    }

    async fn next_timer(&self, partition: Partition) -> Result<Option<i64>> {
        Ok(self.pending_timers(partition).into_iter().map(|(_, at)| at).min())
    }

    fn commits(&self) -> &crate::coordination::Commits {
        &self.commits
    }

    fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    async fn replica(&self) -> Result<Replica> {
        Ok(self.log().replica.clone())
    }

    async fn change_role(&self, change: RoleChange) -> Result<Replica> {
        // Groups copied from a leader are copied while the store is a follower: the
        // role does not change under a copy (see `MemoryGroups::mirror`).
        let _groups = self.groups.lock().await?;
        let mut log = self.log();
        log.replica = match change {
            RoleChange::Follow { leader, epoch } => Replica {
                leader: Some(leader),
                epoch: log.replica.epoch.max(epoch),
            },
            RoleChange::Promote => Replica {
                leader: None,
                epoch: log.replica.epoch + 1,
            },
        };
        Ok(log.replica.clone())
    }

    async fn append_replicated(&self, replicated: Replicated) -> Result<()> {
        let next = replicated.next_offset();
        {
            let mut log = self.log();
            if log.replica.leader.is_none() {
                return Err(Error::NotAReplica);
            }
            let partition = replicated.partition;
            let held = log.next_offset(partition);
            if held != replicated.first_offset {
                return Err(Error::ReplicationGap {
                    partition,
                    first: replicated.first_offset,
                    next: held,
                });
            }
            for record in &replicated.records {
                log.streams
                    .entry(record.stream.clone())
                    .or_default()
                    .push(record.offset);
                log.event_ids.insert(record.event_id);
            }
            log.commands.extend(replicated.commands);
            let from = log.partitions[partition.index()].len();
            log.partitions[partition.index()].extend(replicated.records);
            for stream in log.apply_redactions(partition, from) {
                self.snapshots.forget(&stream);
            }
            log.redact_truncated(partition, from);
        }
        self.wakeups.publish(replicated.partition, next);
        Ok(())
    }

    async fn truncate(&self, partition: Partition, from_offset: Offset, end: Offset) -> Result<()> {
        // The groups' lock first, as every path that takes both does.
        let mut groups = self.groups.lock().await?;
        let mut log = self.log();
        if log.replica.leader.is_none() {
            return Err(Error::NotAReplica);
        }
        let actual = log.next_offset(partition);
        if actual != end {
            return Err(Error::PartitionMoved {
                partition,
                expected: end,
                actual,
            });
        }
        let start = usize::try_from(from_offset.0).unwrap_or(usize::MAX);
        let records = &mut log.partitions[partition.index()];
        let removed = records.split_off(start.min(records.len()));
        // Snapshots that folded a removed record go with it.
        let mut first_removed: HashMap<&StreamId, Version> = HashMap::new();
        for record in &removed {
            let first = first_removed.entry(&record.stream).or_insert(record.version);
            *first = (*first).min(record.version);
        }
        self.snapshots.forget_from(&first_removed);
        groups.truncate(partition, from_offset);
        let undeleted: HashSet<StreamId> = (removed.iter())
            .filter(|record| deletion_of(record).is_some())
            .map(|record| record.stream.clone())
            .collect();
        for record in &removed {
            log.event_ids.remove(&record.event_id);
            if let Some(offsets) = log.streams.get_mut(&record.stream) {
                offsets.retain(|offset| *offset < from_offset);
                if offsets.is_empty() {
                    log.streams.remove(&record.stream);
                }
            }
        }
        log.commands
            .retain(|_, command| command.outcome.partition != partition || command.outcome.first_offset < from_offset);
        log.recount_deletions(&undeleted);
        drop(log);
        self.wakeups.rewind(partition, from_offset);
        Ok(())
    }

    fn snapshots(&self) -> &dyn SnapshotLog {
        &self.snapshots
    }

    fn groups(&self) -> Option<&dyn Groups> {
        Some(&self.groups)
    }

    fn poll_interval(&self) -> Duration {
        // Every writer is in-process and wakes subscribers directly.
        Duration::from_secs(60)
    }

    async fn close(&self) {}
}
