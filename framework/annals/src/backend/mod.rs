//! What an engine implements. Engines only persist and look up: every check that does
//! not need the log (stream ids, limits, partitioning, event ids, metadata) happened
//! once in [`Store`](crate::Store) before a [`PreparedAppend`] reaches them.

pub(crate) mod admit;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod batch;
pub(crate) mod memory;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub(crate) mod sql;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::value::RawValue;
use tokio::sync::watch;
use uuid::Uuid;

use crate::coordination::{
    DeadLetter, DeadLetterStatus, Fence, GroupRecord, GroupRow, Joining, Membership, Mirrored, ResetTargets,
};
use crate::error::Result;
use crate::log::{AppendOutcome, Replica, StoredSnapshot, StreamInfo, Visitor};
use crate::options::{Location, StoreOptions, DEFAULT_PARTITIONS};
use crate::position::{ExpectedVersion, Offset, Partition, Version};
use crate::readmodel::{Db, Tx};
use crate::record::RecordedEvent;
use crate::stream::StreamId;
use admit::CommandRecord;

/// Opens (or creates) the engine `options` name.
pub(crate) async fn open(options: &StoreOptions) -> Result<Box<dyn Backend>> {
    Ok(match &options.location {
        Location::Memory => Box::new(memory::MemoryBackend::new(
            options.partitions.unwrap_or(DEFAULT_PARTITIONS),
        )),
        #[cfg(feature = "sqlite")]
        Location::Sqlite(path) => Box::new(sqlite::SqliteBackend::open(path, options).await?),
        #[cfg(feature = "postgres")]
        Location::Postgres(url) => Box::new(postgres::PgBackend::open(url, options).await?),
    })
}

/// An append that passed every check the store can make without the log.
#[derive(Debug)]
pub(crate) struct PreparedAppend {
    pub(crate) stream: StreamId,
    pub(crate) partition: Partition,
    pub(crate) expected: ExpectedVersion,
    pub(crate) command_id: Option<Uuid>,
    pub(crate) events: Vec<PreparedEvent>,
    /// When a repository's command makes the append: the commands waiting for the
    /// turn on its aggregate.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) waiters: Option<Arc<Waiters>>,
}

impl PreparedAppend {
    /// Whether answering this append lets a command waiting for its aggregate's turn
    /// take it.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn hands_over(&self) -> bool {
        self.waiters.as_ref().is_some_and(|waiters| waiters.count() > 0)
    }
}

/// The commands waiting for one aggregate's turn (single flight) behind the command
/// that holds it, shared by the aggregate's slot in a repository's cache and the
/// append its holder makes: a writer answering that append knows whether a command
/// takes the turn next and is about to append.
#[derive(Debug, Default)]
pub(crate) struct Waiters(AtomicUsize);

impl Waiters {
    /// A command begins to wait for the turn; it counts until the guard drops (it has
    /// the turn, or was given up).
    pub(crate) fn join(&self) -> Waiting<'_> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Waiting(self)
    }

    /// How many commands wait for the turn.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A command counted among an aggregate's [`Waiters`] until this drops.
pub(crate) struct Waiting<'w>(&'w Waiters);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::SeqCst);
    }
}

tokio::task_local! {
    /// The waiters for the turn on the aggregate whose holder appends on this task.
    pub(crate) static APPENDING_FOR: Arc<Waiters>;
}

/// One event as engines store it: id assigned, metadata already encoded.
#[derive(Debug)]
pub(crate) struct PreparedEvent {
    pub(crate) event_id: Uuid,
    /// The client chose the id, so it may collide with a stored one and must be checked.
    pub(crate) client_id: bool,
    pub(crate) event_type: String,
    pub(crate) payload: Box<RawValue>,
    pub(crate) metadata: String,
    /// The metadata's schema version (see [`RecordedEvent::schema_version`]), which
    /// PostgreSQL keeps in a column of its own.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) schema_version: Option<u32>,
}

/// Records shipped from a leader into one partition, as the store checked them: all of
/// `partition`, offsets `first_offset`, `first_offset + 1`, … in order, the last one
/// ending an append.
#[derive(Debug)]
pub(crate) struct Replicated {
    pub(crate) partition: Partition,
    pub(crate) first_offset: Offset,
    pub(crate) records: Vec<RecordedEvent>,
    /// The command ids the records carry: one per append made with one.
    pub(crate) commands: Vec<(Uuid, CommandRecord)>,
}

impl Replicated {
    /// The partition's next offset once these records are written.
    pub(crate) fn next_offset(&self) -> Offset {
        self.first_offset + self.records.len() as u64
    }
}

/// A change of a store's place in replication.
#[derive(Debug, Clone)]
pub(crate) enum RoleChange {
    /// Follow `leader`, whose epoch is `epoch`: the store's own epoch rises to it.
    Follow { leader: String, epoch: u64 },
    /// Become a leader, at the next epoch.
    Promote,
}

/// The storage engine behind a [`Store`](crate::Store).
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn partition_count(&self) -> u32;
    /// The commands whose appends this engine's writers do not wait for, when its
    /// writers gather appends into group commits.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    fn turn_waits(&self) -> Option<&batch::TurnWaits> {
        None
    }
    async fn append(&self, append: PreparedAppend) -> Result<AppendOutcome>;
    async fn read_stream(&self, stream: &StreamId, from_version: Version, limit: usize) -> Result<Vec<RecordedEvent>>;
    async fn fold_stream(&self, stream: &StreamId, from_version: Version, visit: &mut Visitor<'_>) -> Result<()>;
    async fn stream_version(&self, stream: &StreamId) -> Result<Version>;
    /// The version of `stream`'s latest deletion record, and whether it was hard.
    async fn deletion(&self, stream: &StreamId) -> Result<Option<(Version, bool)>>;
    /// Where the record with event id `id` is, if there is one.
    async fn position_of_event(&self, id: Uuid) -> Result<Option<(Partition, Offset)>>;
    /// Makes the bytes that redactions freed unreadable in the engine's files, where the
    /// engine can (SQLite: a `TRUNCATE` checkpoint empties the WAL, whose older frames
    /// still held them). The default does nothing.
    async fn reclaim(&self) -> Result<()> {
        Ok(())
    }
    /// The version below which the scavenger truncated `stream`.
    async fn truncated_before(&self, stream: &StreamId) -> Result<Option<Version>>;
    /// The first version of `stream` written at or after `since_us` (µs since the epoch).
    async fn first_version_since(&self, stream: &StreamId, since_us: i64) -> Result<Option<Version>>;
    async fn read_partition(
        &self,
        partition: Partition,
        from_offset: Offset,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>>;
    /// The records of `partition` in `range` that pass `read`'s filter, at most
    /// `limit`, in offset order, and the offset up to which the answer covers the range:
    /// every record below it that passes is in the answer. The SQL engines read them
    /// through the filter index `read` names, so records that do not pass are not read.
    async fn read_filtered(
        &self,
        partition: Partition,
        range: std::ops::Range<Offset>,
        limit: usize,
        read: &FilteredRead,
    ) -> Result<Filtered>;
    /// The filter indexes the store has (see [`FilterIndex`](crate::group::FilterIndex)).
    async fn filter_indexes(&self) -> Result<Vec<crate::group::FilterIndex>>;
    /// Builds (`enabled`) or drops a filter index; nothing when it is so already.
    async fn set_filter_index(&self, index: crate::group::FilterIndex, enabled: bool) -> Result<()>;
    async fn high_watermarks(&self) -> Result<Vec<Offset>>;
    /// One partition's next offset.
    async fn high_watermark(&self, partition: Partition) -> Result<Offset> {
        Ok(self.high_watermarks().await?[partition.index()])
    }
    async fn list_streams(
        &self,
        category: Option<&str>,
        limit: usize,
        after: Option<&StreamId>,
    ) -> Result<Vec<StreamInfo>>;
    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<(StreamId, AppendOutcome)>>;
    /// The pending timers of `partition` (streams of the timer category whose only
    /// record is `TimerScheduled`) due by `until` (µs since the Unix epoch), soonest
    /// first, at most `limit`: stream ids and due times. The engine keeps them indexed
    /// as it writes the log (see `migrations/*/0007_timers.sql`).
    async fn due_timers(&self, partition: Partition, until: i64, limit: usize) -> Result<Vec<(StreamId, i64)>>;
    /// When the soonest pending timer of `partition` is due.
    async fn next_timer(&self, partition: Partition) -> Result<Option<i64>>;
    /// Wake-ups for subscribers, fed by this engine's commits.
    fn wakeups(&self) -> &Wakeups;

    /// Group commits made in this process and, where the engine can tell, in others:
    /// what readers waiting to see their writes wake on.
    fn commits(&self) -> &crate::coordination::Commits;
    /// The store's role and epoch as stored.
    async fn replica(&self) -> Result<Replica>;
    /// Changes the store's role; returns the new one.
    async fn change_role(&self, change: RoleChange) -> Result<Replica>;
    /// Writes records shipped from the leader, verbatim, in one transaction with the
    /// command ids they carry, by the writer that writes appends. Refused with
    /// `NotAReplica` unless the store is a follower (checked in that transaction, so a
    /// promotion cannot slip in between) and with `ReplicationGap` unless they start at
    /// the partition's next offset; nothing is written then.
    async fn append_replicated(&self, replicated: Replicated) -> Result<()>;
    /// Removes the records of `partition` from `from_offset` to `end` (its next
    /// offset, checked in the transaction: `PartitionMoved` when it is another), on a
    /// follower only: with them go their command ids, the dead letters that name them
    /// and the snapshots that folded them; consumer groups' offsets past the new end
    /// come back to it, and transactional groups there stop (see `sql/log/truncate.sql`). One
    /// transaction; subscribers are told the partition now ends at `from_offset`.
    async fn truncate(&self, partition: Partition, from_offset: Offset, end: Offset) -> Result<()>;
    /// Transactions on the store's database, for read models and consumer groups;
    /// `None` for an engine without SQL.
    fn read_models(&self) -> Option<crate::readmodel::Db> {
        None
    }
    /// The snapshot log.
    fn snapshots(&self) -> &dyn SnapshotLog;
    /// Consumer groups; `None` for an engine without them.
    fn groups(&self) -> Option<&dyn Groups> {
        None
    }
    /// How often a subscriber with nothing to read looks again without a wake-up.
    fn poll_interval(&self) -> Duration;
    async fn close(&self);
}

/// The snapshot log: aggregate states keyed by stream id, each at a version and in a
/// schema version of its JSON. A tombstone removes its key's earlier snapshots;
/// compaction keeps, per key, only the newest snapshot after the key's last tombstone.
#[async_trait]
pub(crate) trait SnapshotLog: Send + Sync {
    /// The newest live snapshot of `stream` (highest version, then latest written); of
    /// schema version `preferring` first, when it has one.
    async fn newest(&self, stream: &StreamId, preferring: Option<u32>) -> Result<Option<StoredSnapshot>>;
    /// Appends a snapshot; `state: None` appends a tombstone.
    async fn write(&self, snapshot: NewSnapshot<'_>) -> Result<()>;
    /// Rows (snapshots and tombstones) and bytes of state.
    async fn size(&self) -> Result<(u64, u64)>;
    /// Removes every row compaction removes, and the tombstones written before
    /// `tombstones_before` (µs since the Unix epoch).
    async fn compact(&self, tombstones_before: i64) -> Result<()>;
}

/// Consumer groups as an engine keeps them: membership and partition assignment,
/// fenced offset commits, dead letters, and the event ids at-least-once consumers have
/// processed. The methods that take a [`Tx`] run inside the caller's transaction, one
/// that [`Groups::db`] opened: a projection's writes commit with the offsets (I6). The
/// others run in transactions of their own.
#[async_trait]
pub(crate) trait Groups: Send + Sync {
    /// Transactions for group work, which projections' read models share.
    fn db(&self) -> Db;

    /// Joins (or stays in) a group, removes members whose session expired, rebalances
    /// when membership changed, and returns what the member owns. A member that joins
    /// records the group's commit mode and makes a group copied from a leader this
    /// store's own.
    async fn heartbeat(&self, tx: &mut Tx, joining: &Joining<'_>, partitions: u32) -> Result<Membership>;
    /// Leaves a group at once, handing the member's partitions to the others.
    async fn leave(&self, tx: &mut Tx, group: &str, member: &str, partitions: u32) -> Result<()>;
    /// The committed offset of the fence's partition; `Fenced` if its member does not
    /// own it (any more).
    async fn owned_offset(&self, tx: &mut Tx, fence: &Fence<'_>) -> Result<Offset>;
    /// Moves the committed offset from `from` to `to`, only if the fence's member still
    /// owns the partition and nobody moved it since: otherwise `Fenced`, and the
    /// caller's transaction must roll back.
    async fn commit(&self, tx: &mut Tx, fence: &Fence<'_>, from: Offset, to: Offset) -> Result<()>;
    /// Stops a partition (the failure policy), saying why.
    async fn stop(&self, tx: &mut Tx, group: &str, partition: Partition, reason: &str) -> Result<()>;

    /// Writes a dead letter for `record` (nothing if it has one).
    async fn add_dead_letter(
        &self,
        tx: &mut Tx,
        group: &str,
        record: &RecordedEvent,
        status: DeadLetterStatus,
        error: &str,
        attempts: u32,
    ) -> Result<()>;
    /// A partition's dead letters in offset order: id, offset, stream and status.
    async fn partition_dead_letters(
        &self,
        tx: &mut Tx,
        group: &str,
        partition: Partition,
    ) -> Result<Vec<(i64, Offset, String, DeadLetterStatus)>>;
    /// A retried dead letter was handled: it goes.
    async fn resolve_dead_letter(&self, tx: &mut Tx, group: &str, id: i64) -> Result<()>;
    /// A retried dead letter failed again.
    async fn fail_dead_letter(&self, tx: &mut Tx, group: &str, id: i64, error: &str, attempts: u32) -> Result<()>;
    /// The dead letters of `stream` marked for retry after `offset` wait again, parked.
    async fn park_behind(&self, tx: &mut Tx, group: &str, stream: &str, offset: Offset) -> Result<()>;

    /// Whether an at-least-once consumer of `group` marked `event_id` as done.
    async fn processed(&self, group: &str, event_id: Uuid) -> Result<bool>;
    /// Marks `event_id` as done; `false` if it already was.
    async fn mark_processed(&self, group: &str, event_id: Uuid) -> Result<bool>;

    /// Every group, by name.
    async fn list(&self) -> Result<Vec<GroupRow>>;
    /// One group, if it exists.
    async fn describe(&self, group: &str) -> Result<Option<GroupRecord>>;
    /// Copies a leader's group into this follower; `false` when this store is not a
    /// follower or the group is its own.
    async fn mirror(&self, mirrored: Mirrored) -> Result<bool>;
    /// Moves a group's committed offsets; refused while it has live members.
    async fn reset(&self, group: &str, targets: ResetTargets) -> Result<()>;
    /// Pauses or resumes partitions (all when `None`).
    async fn set_paused(&self, group: &str, partitions: Option<Vec<Partition>>, paused: bool) -> Result<()>;
    /// Dead letters, of one group or all, in group and offset order.
    async fn dead_letters(&self, group: Option<&str>) -> Result<Vec<DeadLetter>>;
    /// Marks a dead letter, and those parked behind it, for retry; returns it so.
    async fn retry_dead_letter(&self, id: i64) -> Result<DeadLetter>;
    /// Removes a dead letter and hands the records parked behind it to the group.
    async fn skip_dead_letter(&self, id: i64) -> Result<DeadLetter>;
    /// A rebuild's end: `group` takes the committed offsets and dead letters of its
    /// replay `replay`, which is forgotten; returns the offsets.
    async fn take_over(&self, tx: &mut Tx, group: &str, replay: &str) -> Result<Vec<(Partition, Offset)>>;
    /// Removes everything of a group.
    async fn forget(&self, group: &str) -> Result<()>;
}

/// A snapshot to append (a tombstone when `state` is `None`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewSnapshot<'a> {
    pub(crate) stream: &'a StreamId,
    pub(crate) version: Version,
    pub(crate) schema_version: u32,
    pub(crate) state: Option<&'a str>,
}

/// One watch channel per partition carrying the highest known next offset. Writers
/// publish after each commit; subscribers wait for a change, then read the log.
pub(crate) struct Wakeups {
    partitions: Vec<watch::Sender<Offset>>,
}

impl Wakeups {
    pub(crate) fn new(partition_count: u32) -> Self {
        Wakeups {
            partitions: (0..partition_count).map(|_| watch::channel(Offset(0)).0).collect(),
        }
    }

    /// Records that `partition` now holds offsets below `next_offset`.
    pub(crate) fn publish(&self, partition: Partition, next_offset: Offset) {
        if let Some(sender) = self.partitions.get(partition.index()) {
            sender.send_if_modified(|known| {
                let newer = next_offset > *known;
                if newer {
                    *known = next_offset;
                }
                newer
            });
        }
    }

    /// Publishes the end of every written (not duplicate) outcome.
    pub(crate) fn publish_outcomes<'a>(&self, outcomes: impl IntoIterator<Item = &'a AppendOutcome>) {
        for outcome in outcomes {
            if !outcome.duplicate {
                self.publish(outcome.partition, outcome.last_offset + 1);
            }
        }
    }

    /// Records that `partition` now ends at `next_offset`, below what it held: after a
    /// truncation, records shipped again at the removed offsets must wake subscribers.
    pub(crate) fn rewind(&self, partition: Partition, next_offset: Offset) {
        if let Some(sender) = self.partitions.get(partition.index()) {
            sender.send_replace(next_offset);
        }
    }

    /// The end of `partition` as last published in this process (by its writers, a
    /// PostgreSQL notification, or a poll that found records).
    pub(crate) fn latest(&self, partition: Partition) -> Offset {
        self.partitions
            .get(partition.index())
            .map_or(Offset(0), |sender| *sender.borrow())
    }

    pub(crate) fn watch(&self, partition: Partition) -> watch::Receiver<Offset> {
        self.partitions[partition.index()].subscribe()
    }
}

/// A count or position as SQL's signed 64-bit integer (saturating).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn sql_int(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// Records that pass a filter, and the offset up to which they are all of them.
pub(crate) type Filtered = (Vec<RecordedEvent>, Offset);

/// How a filtered group reads a partition through a filter index: by its categories
/// (its event types then checked in the same statement), or by its event types (its
/// categories then checked as rows come back); one statement per key, each reading
/// its key's index entries in offset order, and the answers merged.
#[derive(Debug, Clone)]
pub(crate) struct FilteredRead {
    pub(crate) filter: crate::group::Filter,
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) by_category: bool,
}

impl FilteredRead {
    /// The read `filter` can make with the indexes the store has; `None` when it must
    /// read the whole log (no filter, or no index for it).
    pub(crate) fn plan(filter: &crate::group::Filter, indexes: &[crate::group::FilterIndex]) -> Option<Self> {
        use crate::group::FilterIndex;
        let by_category = if !filter.category_list().is_empty() && indexes.contains(&FilterIndex::Category) {
            true
        } else if !filter.event_type_list().is_empty() && indexes.contains(&FilterIndex::EventType) {
            false
        } else {
            return None;
        };
        Some(FilteredRead {
            filter: filter.clone(),
            by_category,
        })
    }

    /// The keys read one at a time.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn keys(&self) -> &[String] {
        if self.by_category {
            self.filter.category_list()
        } else {
            self.filter.event_type_list()
        }
    }

    /// The statement, given the engine's category expression.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn sql(&self, category: &str) -> String {
        sql::read_filtered(category, self.by_category, self.allowed_types().len())
    }

    /// The event types bound after the key, when reading by category.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn allowed_types(&self) -> &[String] {
        if self.by_category {
            self.filter.event_type_list()
        } else {
            &[]
        }
    }

    /// The answers of every key for a read of a range ending at `end`, each at most
    /// `limit` records: the first `limit` by offset, and the offset they cover. A key's
    /// records below the last of those are all among its answer, so nothing is missed
    /// there; past it they may be. Then what the statement did not check of the filter
    /// (the categories, when reading by event type) is.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn merge(&self, mut records: Vec<RecordedEvent>, limit: usize, end: Offset) -> Filtered {
        records.sort_unstable_by_key(|record| record.offset);
        records.truncate(limit);
        let covered = Self::covered(&records, limit, end);
        records.retain(|record| self.filter.matches(record));
        (records, covered)
    }

    /// Where an answer of `limit` records at most, read in offset order from a range
    /// ending at `end`, covers the range to: past its last record when it is full (the
    /// read stopped there), the range's end otherwise.
    pub(crate) fn covered(records: &[RecordedEvent], limit: usize, end: Offset) -> Offset {
        match records.last() {
            Some(last) if records.len() >= limit => last.offset + 1,
            _ => end,
        }
    }
}

/// The current time, truncated to the microsecond precision every engine stores.
pub(crate) fn now_micros() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// The stream-id range a `list_streams` call covers, as SQL conditions. A category `c`
/// is the byte range `[c, c.)`: `.` follows `-` and no other allowed byte sorts between
/// them, so the range holds exactly `c` and the ids that start with `c-`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) struct StreamRange {
    bounds: Vec<(&'static str, String)>,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl StreamRange {
    pub(crate) fn new(category: Option<&str>, after: Option<&StreamId>) -> Self {
        let mut bounds = Vec::new();
        if let Some(after) = after {
            bounds.push((">", after.as_str().to_owned()));
        }
        if let Some(category) = category {
            bounds.push((">=", category.to_owned()));
            bounds.push(("<", format!("{category}.")));
        }
        StreamRange { bounds }
    }

    /// ` AND column > $1 AND …`, one condition per bound.
    pub(crate) fn sql_conditions(&self, column: &str) -> String {
        self.bounds
            .iter()
            .enumerate()
            .map(|(i, (op, _))| format!(" AND {column} {op} ${}", i + 1))
            .collect()
    }

    /// The values of the bounds, in placeholder order.
    pub(crate) fn binds(&self) -> impl Iterator<Item = &str> {
        self.bounds.iter().map(|(_, value)| value.as_str())
    }

    /// How many placeholders the conditions use.
    pub(crate) fn len(&self) -> usize {
        self.bounds.len()
    }
}
