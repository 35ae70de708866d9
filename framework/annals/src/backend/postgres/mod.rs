//! The PostgreSQL engine. Appends go through `annals_append` (see
//! `migrations/postgres`), one round trip for a whole batch; each writer connection
//! (one by default) owns a share of the partitions and group-commits whatever appends
//! wait for it ([`writer`]). Subscribers across
//! processes are woken by `LISTEN/NOTIFY` ([`notify`]).

mod notify;
mod readmodel;
mod replicate;
mod session;
mod writer;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow, Postgres};
use sqlx::query::Query;
use sqlx::Row;
use tokio::task::JoinHandle;
use uuid::Uuid;

use self::session::Kept;
use super::batch::{self, Pending, TurnWaits, QUEUE_DEPTH};
use super::sql::groups::{Dialect, SqlGroups};
use super::sql::snapshots::SqlSnapshots;
use super::{sql, sql_int, Backend, Groups, PreparedAppend, Replicated, RoleChange, SnapshotLog, StreamRange, Wakeups};
use crate::coordination::Commits;
use crate::error::{Error, Result};
use crate::log::{AppendOutcome, Replica, StreamInfo, Visitor};
use crate::options::{StoreOptions, DEFAULT_PARTITIONS};
use crate::position::{Offset, Partition, Version};
use crate::record::{EventView, RecordedEvent};
use crate::stream::StreamId;

use crate::group::FilterIndex;

/// How long a closing store waits for its notification senders to announce what is
/// pending: announcing is a hint (remote subscribers poll anyway), and a server that
/// does not answer must not hold the close up. A sender still busy then is stopped
/// where it is, and its connection closed.
const LAST_ANNOUNCEMENT: Duration = Duration::from_secs(2);

/// A stream id's category as `annals_events_by_category` indexes it.
const CATEGORY: &str = "split_part(stream_id, '-', 1)";

pub(crate) struct PgBackend {
    pool: PgPool,
    /// Connections folds keep between reads.
    readers: Kept,
    /// One queue per writer, and what the writer lends to lone appenders; partition
    /// p goes to writer p % writers.
    queues: Mutex<Vec<(flume::Sender<Pending>, Arc<writer::Slot>)>>,
    /// What every write of this store needs (the writers', the appenders' committing
    /// on their own tasks, the follower's): the lock space, the wake-ups of this
    /// process's subscribers and the notifier of other processes'.
    shared: Arc<writer::Shared>,
    /// The writers' tasks; like the senders and the listener, each is awaited in place
    /// and dropped only once finished, so a close whose future is dropped leaves the
    /// next one to wait for what remains.
    writers: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Commands waiting for their aggregate's turn, which the writers do not wait for.
    waits: Arc<TurnWaits>,
    /// The notification senders (new records, group commits), each with what it
    /// announces.
    senders: tokio::sync::Mutex<Vec<(Arc<notify::Notifier>, JoinHandle<()>)>>,
    /// The task turning other processes' notifications into wake-ups.
    listener: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    /// Group commits made here, or announced by other processes.
    commits: Arc<Commits>,
    partition_count: u32,
    read_models: crate::readmodel::Db,
    snapshots: SqlSnapshots,
    groups: SqlGroups,
}

impl PgBackend {
    /// Whether a filter index exists and is valid (`None`: it does not exist).
    async fn index_validity(&self, index: FilterIndex) -> Result<Option<bool>> {
        Ok(
            sqlx::query_scalar("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)")
                .bind(index.table_index())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub(crate) async fn open(url: &str, options: &StoreOptions) -> Result<Self> {
        let connect: PgConnectOptions = url.parse().map_err(|error: sqlx::Error| Error::InvalidUrl {
            url: crate::options::redact(url),
            reason: error.to_string(),
        })?;
        // Each writer, the two notification senders and the listener keep a connection
        // of their own; at least one more is left for everything else, and folds keep
        // a third of those (see `Kept`).
        let kept_for_good = options.writers + 3;
        let connections = options.max_connections.max(kept_for_good as u32 + 1);
        let spare = connections as usize - kept_for_good;
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            // A ping before every acquire would add a round trip to every batch; a
            // broken connection fails its query instead and the pool replaces it.
            .test_before_acquire(false)
            .connect_with(connect)
            .await?;
        if !options.create_if_missing {
            let exists: bool = sqlx::query_scalar(include_str!("sql/store_exists.sql"))
                .fetch_one(&pool)
                .await?;
            if !exists {
                pool.close().await;
                return Err(Error::StoreNotFound {
                    url: options.redacted_url.clone(),
                });
            }
        }
        migrate(&mut *pool.acquire().await?).await?;
        let (partition_count, store_id) = init_store(&pool, options.partitions).await?;

        let wakeups = Arc::new(Wakeups::new(partition_count));
        let channel = format!("annals_{}", store_id.simple());
        let commits_channel = format!("{channel}_commits");
        let announced = Arc::new(notify::Notifier::default());
        let commits = Arc::new(Commits::announcing({
            let announced = announced.clone();
            move |group, partition, committed| announced.publish_commit(group, partition, committed)
        }));
        let notifier = Arc::new(notify::Notifier::default());
        let senders = [
            (notifier.clone(), channel.clone()),
            (announced, commits_channel.clone()),
        ]
        .into_iter()
        .map(|(announces, channel)| {
            let sender = tokio::spawn(notify::send(pool.clone(), channel, announces.clone()));
            (announces, sender)
        })
        .collect();
        let listener = tokio::spawn(notify::listen(
            pool.clone(),
            [channel, commits_channel],
            wakeups.clone(),
            commits.clone(),
        ));
        let shared = Arc::new(writer::Shared {
            lock_space: store_id.as_u128() as i32,
            wakeups,
            notifier,
        });
        let (waits, watches) = TurnWaits::new(options.writers);
        let (queues, writers): (Vec<_>, Vec<_>) = watches
            .into_iter()
            .map(|watch| {
                let (queue, pending) = flume::bounded(QUEUE_DEPTH);
                let slot = writer::Slot::new(pool.clone());
                let writer = tokio::spawn(writer::run(shared.clone(), slot.clone(), pending, watch));
                ((queue, slot), writer)
            })
            .unzip();
        let read_models = readmodel::database(pool.clone());
        Ok(PgBackend {
            readers: Kept::new(pool.clone(), spare / 3),
            snapshots: SqlSnapshots::new(read_models.clone()),
            groups: SqlGroups::new(read_models.clone(), &DIALECT),
            read_models,
            pool,
            queues: Mutex::new(queues),
            shared,
            writers: tokio::sync::Mutex::new(writers),
            waits,
            senders: tokio::sync::Mutex::new(senders),
            listener: tokio::sync::Mutex::new(Some(listener)),
            commits,
            partition_count,
        })
    }
}

/// Brings the schema up to date (`migrations/postgres`); boxed with an explicit `Send`
/// for the reason the SQLite engine's `migrate` gives.
fn migrate(conn: &mut sqlx::PgConnection) -> futures::future::BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        sqlx::migrate!("../../migrations/postgres")
            .run_direct(conn)
            .await
            .map_err(|error| Error::Migration(error.into()))
    })
}

/// Creates the store row and the partition rows on first open, or checks the requested
/// partition count against the recorded one. Safe against concurrent first opens.
async fn init_store(pool: &PgPool, requested: Option<u32>) -> Result<(u32, Uuid)> {
    let mut tx = pool.begin().await?;
    let count = requested.unwrap_or(DEFAULT_PARTITIONS);
    let created = sqlx::query(include_str!("sql/create_store.sql"))
        .bind(Uuid::new_v4())
        .bind(count as i32)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    let (stored, store_id): (i32, Uuid) = sqlx::query_as(include_str!("sql/store.sql"))
        .fetch_one(&mut *tx)
        .await?;
    let stored = stored as u32;
    if let Some(requested) = requested.filter(|requested| !created && *requested != stored) {
        return Err(Error::PartitionCountMismatch { stored, requested });
    }
    if created {
        sqlx::query(include_str!("sql/create_partitions.sql"))
            .bind(stored as i32)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok((stored, store_id))
}

fn record(row: &PgRow) -> Result<RecordedEvent> {
    Ok(RecordedEvent {
        partition: Partition(row.try_get::<i32, _>(0)? as u32),
        offset: Offset(row.try_get::<i64, _>(1)? as u64),
        stream: StreamId::trusted(row.try_get(2)?),
        version: Version(row.try_get::<i64, _>(3)? as u64),
        event_id: row.try_get(4)?,
        event_type: row.try_get(5)?,
        payload: serde_json::value::RawValue::from_string(row.try_get(6)?).map_err(Error::InvalidJson)?,
        metadata: serde_json::from_str(row.try_get(7)?).map_err(Error::InvalidJson)?,
        recorded_at: row.try_get(8)?,
        last_in_append: row.try_get(9)?,
        redacted: row.try_get(10)?,
    })
}

/// Most rows a fold keeps waiting for the versions before them.
const MAX_EARLY_ROWS: usize = 1_000;

/// `statement` (`FOLD_STREAM_VERSIONED` or `FOLD_STREAM_IN_ORDER`) for `stream` from
/// `from_version`.
fn fold_query<'q>(statement: &'q str, stream: &'q StreamId, from_version: Version) -> Query<'q, Postgres, PgArguments> {
    sqlx::query(statement).bind(stream.as_str()).bind(sql_int(from_version))
}

/// Folds `stream` from `from_version` with the rows sorted by the server.
async fn fold_in_order(
    readers: &Kept,
    stream: &StreamId,
    from_version: Version,
    visit: &mut Visitor<'_>,
) -> Result<()> {
    let mut conn = readers.take().await?;
    let mut rows = fold_query(sql::FOLD_STREAM_IN_ORDER, stream, from_version).fetch(conn.conn());
    while let Some(row) = rows.try_next().await? {
        let version = fold_version(&row)?;
        fold_row(&row, version, visit)?;
    }
    drop(rows);
    readers.give_back(conn);
    Ok(())
}

/// The version of a row of `FOLD_STREAM_VERSIONED` or `FOLD_STREAM_IN_ORDER`.
fn fold_version(row: &PgRow) -> Result<Version> {
    // The statement's column types are the schema's (bigint, text, text, bigint), so
    // the per-row type check of `try_get` is skipped: on a long stream it costs more
    // than decoding the columns.
    Ok(Version(row.try_get_unchecked::<i64, _>(0)? as u64))
}

/// Shows a row of `FOLD_STREAM_VERSIONED` or `FOLD_STREAM_IN_ORDER` to a fold.
fn fold_row(row: &PgRow, version: Version, visit: &mut Visitor<'_>) -> Result<()> {
    visit(EventView {
        version,
        event_type: row.try_get_unchecked(1)?,
        payload: row.try_get_unchecked(2)?,
        // Within 0 ..= u32::MAX: the store writes it from a u32.
        schema_version: row.try_get_unchecked::<Option<i64>, _>(3)?.map(|v| v as u32),
    })
}

/// How the group statements read on PostgreSQL.
static DIALECT: Dialect = Dialect::new(
    "CAST(extract(epoch FROM clock_timestamp()) * 1000 AS bigint)",
    " FOR UPDATE",
    " FOR SHARE",
    "recorded_at >= to_timestamp($2 / 1000000.0)",
);

#[async_trait]
impl Backend for PgBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn partition_count(&self) -> u32 {
        self.partition_count
    }

    fn turn_waits(&self) -> Option<&TurnWaits> {
        Some(&self.waits)
    }

    async fn append(&self, append: PreparedAppend) -> Result<AppendOutcome> {
        let (queue, slot) = {
            let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            queues.get(append.partition.index() % queues.len().max(1)).cloned()
        }
        .ok_or(Error::Closed)?;
        // Appends coming one at a time and nothing waiting for the writer: commit on
        // this task with the writer's session if it is free, which saves handing the
        // append to the writer and the answer back. Concurrent appends go to the
        // writer, which commits them together.
        if queue.is_empty() && slot.lone() {
            return match writer::append_now(&self.shared, &slot, append).await {
                Ok(outcome) => outcome,
                Err(append) => batch::submit(queue, append).await,
            };
        }
        batch::submit(queue, append).await
    }

    async fn read_stream(&self, stream: &StreamId, from_version: Version, limit: usize) -> Result<Vec<RecordedEvent>> {
        let rows = sqlx::query(sql::READ_STREAM)
            .bind(stream.as_str())
            .bind(sql_int(from_version))
            .bind(sql_int(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record).collect()
    }

    async fn fold_stream(&self, stream: &StreamId, from_version: Version, visit: &mut Visitor<'_>) -> Result<()> {
        // On a connection of its own rather than through the pool's executor, which
        // hands every row on through one more stream, and kept for the next fold
        // rather than given back to the pool, which pings it first.
        let mut conn = self.readers.take().await?;
        let mut rows = fold_query(sql::FOLD_STREAM_VERSIONED, stream, from_version).fetch(conn.conn());
        // Rows are shown as they arrive while their versions follow on from each
        // other; one that comes early waits for those before it.
        let mut next = from_version;
        let mut early = BTreeMap::new();
        while let Some(row) = rows.try_next().await? {
            let version = fold_version(&row)?;
            if version == next {
                fold_row(&row, version, visit)?;
                next += 1;
                while let Some(row) = early.remove(&next) {
                    fold_row(&row, next, visit)?;
                    next += 1;
                }
            } else if early.len() < MAX_EARLY_ROWS {
                early.insert(version, row);
            } else {
                // So many wait that `next` is most likely missing: the stream's
                // records from there on are redacted up to some version (a deletion,
                // a truncation). The rest is read again, in order.
                drop(rows);
                drop(conn);
                drop(early);
                return fold_in_order(&self.readers, stream, next, visit).await;
            }
        }
        // The connection is free for another fold before the rows that waited (after
        // a gap left by redacted records) are shown in order. One that a failed
        // statement or visitor left behind goes back to the pool instead, which
        // checks it.
        drop(rows);
        self.readers.give_back(conn);
        for (version, row) in early {
            fold_row(&row, version, visit)?;
        }
        Ok(())
    }

    async fn due_timers(&self, partition: Partition, until: i64, limit: usize) -> Result<Vec<(StreamId, i64)>> {
        sql::due_timers(&self.read_models, partition, until, limit).await
    }

    async fn next_timer(&self, partition: Partition) -> Result<Option<i64>> {
        sql::next_timer(&self.read_models, partition).await
    }

    async fn deletion(&self, stream: &StreamId) -> Result<Option<(Version, bool)>> {
        sql::deletion(&self.read_models, stream).await
    }

    async fn position_of_event(&self, id: uuid::Uuid) -> Result<Option<(Partition, Offset)>> {
        sql::position_of_event(&self.read_models, id).await
    }

    async fn truncated_before(&self, stream: &StreamId) -> Result<Option<Version>> {
        sql::truncated_before(&self.read_models, stream).await
    }

    async fn first_version_since(&self, stream: &StreamId, since_us: i64) -> Result<Option<Version>> {
        sql::first_version_since(&self.read_models, &DIALECT, stream, since_us).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        let version: Option<i64> = sqlx::query_scalar(sql::STREAM_VERSION)
            .bind(stream.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(Version(version.unwrap_or(0) as u64))
    }

    async fn read_partition(
        &self,
        partition: Partition,
        from_offset: Offset,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let rows = sqlx::query(sql::READ_PARTITION)
            .bind(partition.0 as i32)
            .bind(sql_int(from_offset))
            .bind(sql_int(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record).collect()
    }

    async fn read_filtered(
        &self,
        partition: Partition,
        range: std::ops::Range<Offset>,
        limit: usize,
        read: &super::FilteredRead,
    ) -> Result<super::Filtered> {
        let statement = read.sql(CATEGORY);
        let mut records = Vec::new();
        for key in read.keys() {
            let mut query = sqlx::query(&statement)
                .bind(partition.0 as i32)
                .bind(key.as_str())
                .bind(sql_int(range.start))
                .bind(sql_int(range.end));
            for event_type in read.allowed_types() {
                query = query.bind(event_type.as_str());
            }
            let rows = query.bind(sql_int(limit)).fetch_all(&self.pool).await?;
            for row in &rows {
                records.push(record(row)?);
            }
        }
        Ok(read.merge(records, limit, range.end))
    }

    async fn filter_indexes(&self) -> Result<Vec<FilterIndex>> {
        let mut enabled = Vec::new();
        for index in FilterIndex::ALL {
            if self.index_validity(index).await? == Some(true) {
                enabled.push(index);
            }
        }
        Ok(enabled)
    }

    async fn set_filter_index(&self, index: FilterIndex, enabled: bool) -> Result<()> {
        let validity = self.index_validity(index).await?;
        // A build that failed half-way leaves an invalid index behind: it goes first.
        if validity == Some(false) || (!enabled && validity.is_some()) {
            sqlx::raw_sql(&sql::drop_filter_index(index, true))
                .execute(&self.pool)
                .await?;
        }
        if enabled && validity != Some(true) {
            sqlx::raw_sql(&sql::create_filter_index(index, CATEGORY, true))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn high_watermarks(&self) -> Result<Vec<Offset>> {
        let next: Vec<Option<i64>> = sqlx::query_scalar(sql::HIGH_WATERMARKS).fetch_all(&self.pool).await?;
        Ok(next
            .into_iter()
            .map(|offset| Offset(offset.unwrap_or(0) as u64))
            .collect())
    }

    async fn high_watermark(&self, partition: Partition) -> Result<Offset> {
        let next: Option<i64> = sqlx::query_scalar(sql::HIGH_WATERMARK)
            .bind(partition.0 as i32)
            .fetch_one(&self.pool)
            .await?;
        Ok(Offset(next.unwrap_or(0) as u64))
    }

    async fn list_streams(
        &self,
        category: Option<&str>,
        limit: usize,
        after: Option<&StreamId>,
    ) -> Result<Vec<StreamInfo>> {
        let range = StreamRange::new(category, after);
        let query_text = sql::list_streams(&range);
        let mut query = sqlx::query(&query_text);
        for bound in range.binds() {
            query = query.bind(bound);
        }
        let rows = query.bind(sql_int(limit)).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(StreamInfo {
                    stream: StreamId::trusted(row.try_get(0)?),
                    partition: Partition(row.try_get::<i32, _>(1)? as u32),
                    version: Version(row.try_get::<i64, _>(2)? as u64),
                })
            })
            .collect()
    }

    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<(StreamId, AppendOutcome)>> {
        let row = sqlx::query(sql::COMMAND_OUTCOME)
            .bind(command_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            let outcome = AppendOutcome {
                partition: Partition(row.try_get::<i32, _>(1)? as u32),
                first_offset: Offset(row.try_get::<i64, _>(2)? as u64),
                last_offset: Offset(row.try_get::<i64, _>(3)? as u64),
                first_version: Version(row.try_get::<i64, _>(4)? as u64),
                last_version: Version(row.try_get::<i64, _>(5)? as u64),
                duplicate: true,
            };
            Ok((StreamId::trusted(row.try_get(0)?), outcome))
        })
        .transpose()
    }

    fn read_models(&self) -> Option<crate::readmodel::Db> {
        Some(self.read_models.clone())
    }

    fn commits(&self) -> &Commits {
        &self.commits
    }

    fn wakeups(&self) -> &Wakeups {
        &self.shared.wakeups
    }

    async fn replica(&self) -> Result<Replica> {
        let (leader, epoch) = sqlx::query_as(sql::REPLICA).fetch_one(&self.pool).await?;
        Ok(Replica::stored(leader, epoch))
    }

    async fn change_role(&self, change: RoleChange) -> Result<Replica> {
        let (leader, epoch): (Option<String>, i64) = match change {
            RoleChange::Follow { leader, epoch } => {
                sqlx::query_as(sql::FOLLOW)
                    .bind(leader)
                    .bind(sql_int(epoch))
                    .fetch_one(&self.pool)
                    .await?
            }
            RoleChange::Promote => sqlx::query_as(sql::PROMOTE).fetch_one(&self.pool).await?,
        };
        Ok(Replica::stored(leader, epoch))
    }

    async fn append_replicated(&self, replicated: Replicated) -> Result<()> {
        let (partition, first) = (replicated.partition, replicated.first_offset);
        let (status, next): (i16, i64) = replicate::call(&self.pool, self.shared.lock_space, &replicated).await?;
        match status {
            0 => {
                self.shared.wakeups.publish(partition, Offset(next as u64));
                self.shared.notifier.publish(partition, Offset(next as u64));
                Ok(())
            }
            1 => Err(Error::NotAReplica),
            _ => Err(Error::ReplicationGap {
                partition,
                first,
                next: Offset(next as u64),
            }),
        }
    }

    async fn truncate(&self, partition: Partition, from_offset: Offset, end: Offset) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(include_str!("sql/lock_partition.sql"))
            .bind(self.shared.lock_space)
            .bind(partition.0 as i32)
            .execute(&mut *tx)
            .await?;
        let (leader,): (Option<String>,) = sqlx::query_as(include_str!("sql/leader.sql"))
            .fetch_one(&mut *tx)
            .await?;
        if leader.is_none() {
            return Err(Error::NotAReplica);
        }
        let actual: Option<i64> = sqlx::query_scalar(sql::HIGH_WATERMARK)
            .bind(partition.0 as i32)
            .fetch_one(&mut *tx)
            .await?;
        let actual = Offset(actual.unwrap_or(0) as u64);
        if actual != end {
            return Err(Error::PartitionMoved {
                partition,
                expected: end,
                actual,
            });
        }
        for statement in sql::truncate() {
            sqlx::query(statement)
                .bind(partition.0 as i32)
                .bind(sql_int(from_offset))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.shared.wakeups.rewind(partition, from_offset);
        Ok(())
    }

    fn snapshots(&self) -> &dyn SnapshotLog {
        &self.snapshots
    }

    fn groups(&self) -> Option<&dyn Groups> {
        Some(&self.groups)
    }

    fn poll_interval(&self) -> Duration {
        // NOTIFY wakes subscribers; this only covers a notification lost with a
        // connection or a writer killed between its commit and its NOTIFY.
        Duration::from_secs(1)
    }

    async fn close(&self) {
        // The connections the store keeps are closed rather than given back to the
        // pool (see `Session`). Without the queue the writers finish what is queued,
        // then close their sessions. (An appender lending a writer's session holds a
        // clone of its queue, so the writer ends after it.)
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let mut writers = self.writers.lock().await;
        while let Some(writer) = writers.last_mut() {
            let _ = writer.await;
            writers.pop();
        }
        drop(writers);
        // The senders announce what the writers' last batches wrote, then stop.
        let mut senders = self.senders.lock().await;
        let deadline = tokio::time::Instant::now() + LAST_ANNOUNCEMENT;
        senders.iter().for_each(|(notifier, _)| notifier.close());
        while let Some((_, sender)) = senders.last_mut() {
            if tokio::time::timeout_at(deadline, &mut *sender).await.is_err() {
                sender.abort();
            }
            senders.pop();
        }
        drop(senders);
        self.readers.close().await;
        // The listener stops when the pool closes. sqlx's close (0.8) waits for every
        // connection out of the pool, but one given back during that last wait (a
        // statement of a read or a group that ran as the store closed) is left idle in
        // the closed pool: the second close closes it.
        self.pool.close().await;
        self.pool.close().await;
        let mut listener = self.listener.lock().await;
        if let Some(task) = listener.as_mut() {
            let _ = task.await;
            *listener = None;
        }
    }
}
