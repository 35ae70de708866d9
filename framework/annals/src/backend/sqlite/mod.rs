//! The embedded SQLite engine: WAL, `synchronous=FULL` by default, async readers on a
//! pool of their own (sqlx, which also runs the migrations), and one writer thread that
//! group-commits whatever appends and read-model transactions are waiting (see
//! [`writer`] and [`readmodel`]), through a VFS that writes each commit's WAL frames
//! at once ([`wal_writes`]).

mod checkpoint;
mod reader;
mod readmodel;
#[allow(unsafe_code)]
mod wal_writes;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};

use uuid::Uuid;

use super::batch::{self, TurnWaits, QUEUE_DEPTH};
use super::sql::groups::{Dialect, SqlGroups};
use super::sql::snapshots::SqlSnapshots;
use super::{sql, sql_int, Backend, Groups, PreparedAppend, Replicated, RoleChange, SnapshotLog, StreamRange, Wakeups};
use crate::error::{Error, Result};
use crate::log::{AppendOutcome, Replica, StreamInfo, Visitor};
use crate::options::{StoreOptions, Synchronous, DEFAULT_PARTITIONS};
use crate::position::{Offset, Partition, Version};
use crate::record::RecordedEvent;
use crate::stream::StreamId;

pub(crate) struct SqliteBackend {
    readers: SqlitePool,
    queue: Arc<writer::Queue>,
    /// The writer's connection, for appends made on the caller's thread.
    writer_conn: Arc<writer::Shared>,
    /// The writer thread, which ends once it has drained its queue.
    writer: Worker,
    /// Commands waiting for their aggregate's turn, which the writer does not wait for.
    waits: Arc<TurnWaits>,
    checkpointer: checkpoint::Checkpointer,
    wakeups: Arc<Wakeups>,
    commits: crate::coordination::Commits,
    partition_count: u32,
    read_models: crate::readmodel::Db,
    snapshots: SqlSnapshots,
    groups: SqlGroups,
    records: Arc<reader::Readers>,
}

impl SqliteBackend {
    /// Runs `work` in a transaction of its own on the writer's connection.
    async fn write_alone<T: Send + 'static>(
        &self,
        work: impl FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.on_writer(move |conn| writer::commit(conn, work)).await
    }

    /// Runs `work` on the writer's connection between two batches, outside any
    /// transaction.
    async fn on_writer<T: Send + 'static>(
        &self,
        work: impl FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = writer::Job::Alone(Box::new(move |conn| {
            let _ = reply.send(work(conn));
        }));
        self.queue.send(job).await?;
        answer.await.map_err(|_| Error::Closed)?
    }

    pub(crate) async fn open(path: &Path, options: &StoreOptions) -> Result<Self> {
        let connect = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::from_str(options.synchronous.pragma())?)
            .busy_timeout(options.busy_timeout)
            .statement_cache_capacity(200);
        if !options.create_if_missing && !path.exists() {
            return Err(Error::StoreNotFound {
                url: options.redacted_url.clone(),
            });
        }
        let mut conn = connect.clone().create_if_missing(true).connect().await?;
        migrate(&mut conn).await?;
        let partition_count = init_store(&mut conn, options.partitions).await?;
        conn.close().await?;
        let writer_conn = writer::Shared::new(open_writer(path, options)?);
        let checkpointer = checkpoint::Checkpointer::start(path, options.busy_timeout)?;

        let readers = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .connect_with(connect)
            .await?;
        let wakeups = Arc::new(Wakeups::new(partition_count));
        let (queue, pending) = flume::bounded(QUEUE_DEPTH);
        let queue = writer::Queue::new(queue);
        let (waits, mut watches) = TurnWaits::new(1);
        let writer = {
            let (wakeups, writer_conn, watch) = (wakeups.clone(), writer_conn.clone(), watches.remove(0));
            Worker::spawn("annals-sqlite-writer", move || {
                writer::run(writer_conn, pending, wakeups, watch)
            })?
        };
        let read_models = readmodel::database(path.to_owned(), options, queue.clone());
        Ok(SqliteBackend {
            readers,
            queue,
            writer_conn,
            writer,
            waits,
            checkpointer,
            wakeups,
            commits: crate::coordination::Commits::default(),
            partition_count,
            snapshots: SqlSnapshots::new(read_models.clone()),
            groups: SqlGroups::new(read_models.clone(), &DIALECT),
            read_models,
            records: reader::Readers::new(path.to_owned(), options.busy_timeout),
        })
    }
}

/// A thread of the store (the writer, the checkpointer) whose end any number of
/// callers can wait for: a close whose future is dropped leaves the thread to the next
/// close, where a joined handle would have been given away.
pub(super) struct Worker {
    thread: std::thread::Thread,
    /// `true` once the thread's work has returned; a thread that panics drops the
    /// sender, which ends a wait too.
    ended: tokio::sync::watch::Receiver<bool>,
}

impl Worker {
    /// Starts a thread named `name` running `work`.
    pub(super) fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> Result<Self> {
        let (end, ended) = tokio::sync::watch::channel(false);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                work();
                end.send_replace(true);
            })
            .map_err(Error::Io)?;
        Ok(Worker {
            thread: handle.thread().clone(),
            ended,
        })
    }

    /// Wakes the thread if it is parked.
    pub(super) fn unpark(&self) {
        self.thread.unpark();
    }

    /// Waits until the thread's work has returned.
    pub(super) async fn ended(&self) {
        let _ = self.ended.clone().wait_for(|ended| *ended).await;
    }
}

/// Brings the schema up to date (`migrations/sqlite`).
///
/// `Migrator::run` is generic over `Acquire<'a>`, and a future that awaits it is `Send`
/// for one lifetime only: `tokio::spawn(async { Store::open(url).await })` failed to
/// compile ("implementation of `Send` is not general enough"). `run_direct`, which
/// sqlx keeps for this very case, takes the connection itself; the explicit
/// `BoxFuture` keeps the bound checked here rather than at users' spawn sites.
fn migrate(conn: &mut SqliteConnection) -> futures::future::BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        sqlx::migrate!("../../migrations/sqlite")
            .run_direct(conn)
            .await
            .map_err(|error| Error::Migration(error.into()))
    })
}

/// The writer's own connection, with the same durability as the readers. It writes
/// every redaction, and `secure_delete` makes it overwrite the bytes a redaction frees
/// instead of leaving them in free space.
fn open_writer(path: &Path, options: &StoreOptions) -> Result<rusqlite::Connection> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    // Its WAL writes are kept until SQLite syncs them, which it does at every commit
    // unless `synchronous` is `NORMAL`.
    let synced = !matches!(options.synchronous, Synchronous::Normal);
    let conn = synced
        .then(|| wal_writes::open(path, flags))
        .flatten()
        .unwrap_or_else(|| rusqlite::Connection::open_with_flags(path, flags))
        .map_err(Error::from)?;
    let synchronous = options.synchronous.pragma();
    let autocheckpoint = checkpoint::WRITER_AFTER_PAGES;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA cache_size = -16384;
         PRAGMA secure_delete = ON; PRAGMA wal_autocheckpoint = {autocheckpoint};"
    ))
    .map_err(Error::from)?;
    // Only another process's writer can hold the lock this one waits for.
    conn.busy_timeout(options.busy_timeout).map_err(Error::from)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Creates the store row on first open, or checks the requested partition count
/// against the recorded one.
async fn init_store(conn: &mut SqliteConnection, requested: Option<u32>) -> Result<u32> {
    let mut tx = conn.begin().await?;
    let stored: Option<i64> = sqlx::query_scalar(include_str!("sql/partition_count.sql"))
        .fetch_optional(&mut *tx)
        .await?;
    let count = match (stored, requested) {
        (Some(stored), Some(requested)) if stored != i64::from(requested) => {
            return Err(Error::PartitionCountMismatch {
                stored: stored as u32,
                requested,
            })
        }
        (Some(stored), _) => stored as u32,
        (None, requested) => {
            let count = requested.unwrap_or(DEFAULT_PARTITIONS);
            sqlx::query(include_str!("sql/create_store.sql"))
                .bind(Uuid::new_v4())
                .bind(i64::from(count))
                .bind(chrono::Utc::now().timestamp_micros())
                .execute(&mut *tx)
                .await?;
            sqlx::query(include_str!("sql/create_partitions.sql"))
                .bind(i64::from(count))
                .execute(&mut *tx)
                .await?;
            count
        }
    };
    tx.commit().await?;
    Ok(count)
}

/// How the group statements read on SQLite: its `IMMEDIATE` transactions already
/// keep other writers out, so rows need no locks.
static DIALECT: Dialect = Dialect::new(
    "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    "",
    "",
    "recorded_at >= $2",
);

/// How many times [`Backend::reclaim`] tries to empty the WAL.
const RECLAIM_ATTEMPTS: usize = 50;
/// How long it waits between two tries.
const RECLAIM_PAUSE: Duration = Duration::from_millis(20);

#[async_trait]
impl Backend for SqliteBackend {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn partition_count(&self) -> u32 {
        self.partition_count
    }

    fn turn_waits(&self) -> Option<&TurnWaits> {
        Some(&self.waits)
    }

    async fn append(&self, append: PreparedAppend) -> Result<AppendOutcome> {
        let queue = self.queue.sender()?;
        // Appends coming one at a time and nothing waiting for the writer: commit here
        // if its connection is free, which saves handing the append to the writer
        // thread and the answer back. Under concurrent appends they go to the writer,
        // which commits them together. Only on a multi-threaded runtime, where blocking
        // this thread moves its other tasks elsewhere. Appends started together by one
        // task (`join_all`) look lone here, and commit one after another: concurrent
        // appends share commits when they come from tasks of their own.
        if reader::may_block() && queue.is_empty() && self.writer_conn.lone() {
            let attempt = tokio::task::block_in_place(|| writer::append_now(&self.writer_conn, append, &self.wakeups));
            return match attempt {
                Ok(outcome) => outcome,
                Err(append) => batch::submit(queue, append).await,
            };
        }
        batch::submit(queue, append).await
    }

    async fn read_stream(&self, stream: &StreamId, from_version: Version, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.records.stream(stream, from_version, limit).await
    }

    async fn fold_stream(&self, stream: &StreamId, from_version: Version, visit: &mut Visitor<'_>) -> Result<()> {
        // While appends come one at a time, the writer's connection is mostly idle and
        // its page cache holds what they wrote, where a reader's was emptied by them.
        // It reads one page there, so that a long stream does not hold up the writer;
        // the rest, if any, on a reader.
        const ON_THE_WRITER: usize = 1_000;
        let mut from = from_version;
        if reader::may_block() && self.writer_conn.lone() {
            let read = tokio::task::block_in_place(|| {
                self.writer_conn
                    .try_read(|conn| reader::visit_rows(conn, stream.as_str(), from, ON_THE_WRITER, visit))
            });
            match read {
                Some(Ok((seen, last))) if seen == ON_THE_WRITER => from = last + 1,
                Some(done) => return done.map(drop),
                None => {}
            }
        }
        self.records.fold(stream, from, visit).await
    }

    async fn due_timers(&self, partition: Partition, until: i64, limit: usize) -> Result<Vec<(StreamId, i64)>> {
        sql::due_timers(&self.read_models, partition, until, limit).await
    }

    async fn next_timer(&self, partition: Partition) -> Result<Option<i64>> {
        sql::next_timer(&self.read_models, partition).await
    }

    async fn reclaim(&self) -> Result<()> {
        // A checkpoint cannot run inside a transaction. It waits for readers up to the
        // busy timeout, and is refused while another checkpoint (the background one)
        // runs: a reader still reading, or that checkpoint, keeps the WAL from being
        // emptied. Both end soon, so it is tried again for up to a second.
        for _ in 0..RECLAIM_ATTEMPTS {
            let busy = self
                .on_writer(|conn| {
                    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get::<_, i64>(0))
                        .map_err(writer::engine)
                })
                .await?;
            if busy == 0 {
                return Ok(());
            }
            tokio::time::sleep(RECLAIM_PAUSE).await;
        }
        tracing::warn!("readers kept the WAL from being emptied after a redaction; its old pages stay until writes overwrite them or a later checkpoint empties it");
        Ok(())
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
            .fetch_one(&self.readers)
            .await?;
        Ok(Version(version.unwrap_or(0) as u64))
    }

    async fn read_partition(
        &self,
        partition: Partition,
        from_offset: Offset,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.records.partition(partition, from_offset, limit).await
    }

    async fn read_filtered(
        &self,
        partition: Partition,
        range: std::ops::Range<Offset>,
        limit: usize,
        read: &super::FilteredRead,
    ) -> Result<super::Filtered> {
        self.records.filtered(partition, range, limit, read.clone()).await
    }

    async fn filter_indexes(&self) -> Result<Vec<crate::group::FilterIndex>> {
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index'")
            .fetch_all(&self.readers)
            .await?;
        Ok(crate::group::FilterIndex::ALL
            .into_iter()
            .filter(|index| names.iter().any(|name| name == index.table_index()))
            .collect())
    }

    async fn set_filter_index(&self, index: crate::group::FilterIndex, enabled: bool) -> Result<()> {
        let statement = if enabled {
            sql::create_filter_index(index, reader::CATEGORY, false)
        } else {
            sql::drop_filter_index(index, false)
        };
        self.write_alone(move |conn| conn.execute_batch(&statement).map_err(writer::engine))
            .await
    }

    async fn high_watermarks(&self) -> Result<Vec<Offset>> {
        let rows: Vec<Option<i64>> = sqlx::query_scalar(sql::HIGH_WATERMARKS)
            .fetch_all(&self.readers)
            .await?;
        Ok(rows.into_iter().map(|next| Offset(next.unwrap_or(0) as u64)).collect())
    }

    async fn high_watermark(&self, partition: Partition) -> Result<Offset> {
        let next: Option<i64> = sqlx::query_scalar(sql::HIGH_WATERMARK)
            .bind(partition.0 as i64)
            .fetch_one(&self.readers)
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
        let rows = query.bind(sql_int(limit)).fetch_all(&self.readers).await?;
        rows.iter()
            .map(|row| {
                Ok(StreamInfo {
                    stream: StreamId::trusted(row.try_get(0)?),
                    partition: Partition(row.try_get::<i64, _>(1)? as u32),
                    version: Version(row.try_get::<i64, _>(2)? as u64),
                })
            })
            .collect()
    }

    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<(StreamId, AppendOutcome)>> {
        let row = sqlx::query(sql::COMMAND_OUTCOME)
            .bind(command_id)
            .fetch_optional(&self.readers)
            .await?;
        row.map(|row| {
            let outcome = AppendOutcome {
                partition: Partition(row.try_get::<i64, _>(1)? as u32),
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

    fn commits(&self) -> &crate::coordination::Commits {
        &self.commits
    }

    fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    async fn replica(&self) -> Result<Replica> {
        let (leader, epoch) = sqlx::query_as(sql::REPLICA).fetch_one(&self.readers).await?;
        Ok(Replica::stored(leader, epoch))
    }

    async fn change_role(&self, change: RoleChange) -> Result<Replica> {
        self.write_alone(move |conn| {
            let replica = |row: &rusqlite::Row<'_>| Ok(Replica::stored(row.get(0)?, row.get(1)?));
            match change {
                RoleChange::Follow { leader, epoch } => {
                    conn.query_row(sql::FOLLOW, rusqlite::params![leader, sql_int(epoch)], replica)
                }
                RoleChange::Promote => conn.query_row(sql::PROMOTE, [], replica),
            }
            .map_err(writer::engine)
        })
        .await
    }

    async fn append_replicated(&self, replicated: Replicated) -> Result<()> {
        let redacts = (replicated.records.iter()).any(|record| {
            [crate::store::lifecycle::STREAM_DELETED, crate::store::STREAM_TRUNCATED]
                .contains(&record.event_type.as_str())
        });
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue.send(writer::Job::Replicate(replicated, reply)).await?;
        answer.await.map_err(|_| Error::Closed)??;
        // A follower empties its WAL after a redaction as its leader did.
        if redacts {
            self.reclaim().await?;
        }
        Ok(())
    }

    async fn truncate(&self, partition: Partition, from_offset: Offset, end: Offset) -> Result<()> {
        self.write_alone(move |conn| {
            let leader: Option<String> = conn
                .query_row(sql::REPLICA, [], |row| row.get(0))
                .map_err(writer::engine)?;
            if leader.is_none() {
                return Err(Error::NotAReplica);
            }
            let actual: Option<i64> = conn
                .query_row(sql::HIGH_WATERMARK, [partition], |row| row.get(0))
                .map_err(writer::engine)?;
            let actual = Offset(actual.unwrap_or(0) as u64);
            if actual != end {
                return Err(Error::PartitionMoved {
                    partition,
                    expected: end,
                    actual,
                });
            }
            for statement in sql::truncate() {
                conn.execute(
                    statement,
                    rusqlite::named_params! {"$1": partition, "$2": sql_int(from_offset)},
                )
                .map_err(writer::engine)?;
            }
            Ok(())
        })
        .await?;
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
        // Writers in this process wake subscribers at once; this only catches appends
        // made by another process on the same file.
        Duration::from_millis(250)
    }

    async fn close(&self) {
        // Dropping the queue lets the writer drain what is queued and stop. Every close
        // waits for that, and for the checkpointer's last checkpoint (see `Worker`), so
        // one whose future was dropped is finished by the next.
        self.queue.close();
        self.writer.ended().await;
        // After the writer thread and any append on a caller's thread: it waits for them.
        let shared = self.writer_conn.clone();
        let _ = tokio::task::spawn_blocking(move || shared.close()).await;
        self.checkpointer.stop().await;
        self.readers.close().await;
    }
}
