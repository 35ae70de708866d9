//! The single SQLite writer and its group commit.
//!
//! The writer is a thread of its own with one connection on SQLite's C API (through
//! rusqlite), where a cached prepared statement costs microseconds. Everything this
//! process writes to the store's file goes through that connection: appends, records
//! shipped from a leader, role changes, truncation, and the read-model transactions of
//! projections, consumer groups and snapshots ([`super::readmodel`]). Nothing in the
//! process competes for SQLite's write lock, so nothing waits on a busy handler for it.
//! While appends come one at a time, an appender borrows the connection and commits on
//! its own thread ([`append_now`]); otherwise they queue up for the writer thread.
//!
//! The writer takes the appends of a batch one by one as they come ([`Batching`]):
//! the first opens a `BEGIN IMMEDIATE` transaction, and each is written as soon as it
//! is taken, while the batch's last appenders are still on their way: what the log
//! holds for its keys is read, it is decided on its own ([`Admission`]) and inserted if
//! admitted. The batch commits once, when no more appends are coming: one disk sync
//! for all of them. An append that fails its checks fails alone; if the engine itself
//! fails mid-batch, the batch is rolled back and each append is retried alone, so only
//! the one that caused it gets the error. Replicated batches waiting together are
//! committed together the same way.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::readmodel;
use crate::backend::admit::{Admission, Admitted, CommandRecord, LogView};
use crate::backend::batch::{self, Batching, Pending, Queued, Singles, TurnWaitsWatch};
use crate::backend::{now_micros, PreparedAppend, Replicated, Wakeups};
use crate::error::{Error, Result};
use crate::log::AppendOutcome;
use crate::position::{Offset, Partition, Version};
use crate::stream::StreamId;

/// Most appends in one transaction.
const MAX_BATCH_APPENDS: usize = 1024;
/// Most events in one transaction (bounds the writer's memory).
const MAX_BATCH_EVENTS: usize = 8192;

const INSERT_EVENT: &str = include_str!("sql/insert_event.sql");
const INSERT_COMMAND: &str = include_str!("sql/insert_command.sql");

/// What the writer is asked to do.
pub(super) enum Job {
    /// An append, group-committed with the others waiting.
    Append(Pending),
    /// Records shipped from the leader, committed with the other replicated batches
    /// waiting.
    Replicate(Replicated, oneshot::Sender<Result<()>>),
    /// Any other write of the store's tables, run alone; it answers its caller itself.
    Alone(Box<dyn FnOnce(&Connection) + Send>),
    /// A read-model transaction, committed with the others waiting.
    Transaction(readmodel::Job),
}

/// Where jobs are sent to the writer thread. Closing it lets the writer finish what is
/// queued and stop, whoever still holds the queue.
#[derive(Default)]
pub(super) struct Queue(Mutex<Option<flume::Sender<Job>>>);

impl Queue {
    pub(super) fn new(sender: flume::Sender<Job>) -> Arc<Self> {
        Arc::new(Queue(Mutex::new(Some(sender))))
    }

    pub(super) fn sender(&self) -> Result<flume::Sender<Job>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(Error::Closed)
    }

    pub(super) async fn send(&self, job: Job) -> Result<()> {
        self.sender()?.send_async(job).await.map_err(|_| Error::Closed)
    }

    pub(super) fn close(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

impl From<Pending> for Job {
    fn from(pending: Pending) -> Self {
        Job::Append(pending)
    }
}

impl Queued for Job {
    fn events(&self) -> usize {
        match self {
            Job::Append(pending) => pending.events(),
            Job::Replicate(replicated, _) => replicated.records.len(),
            Job::Alone(_) | Job::Transaction(_) => 1,
        }
    }
}

/// The writer's connection: the writer thread's, lent to an appender that finds the
/// writer idle (see [`append_now`]).
pub(super) struct Shared {
    /// Taken when the store closes, which closes it.
    conn: Mutex<Option<Connection>>,
    /// How many of the writer's batches in a row held a single job.
    singles: Singles,
}

impl Shared {
    pub(super) fn new(conn: Connection) -> Arc<Self> {
        Arc::new(Shared {
            conn: Mutex::new(Some(conn)),
            singles: Singles::new(),
        })
    }

    /// Whether an appender should commit on its own thread: appends have come one at a
    /// time, so waiting for the writer thread would gather nothing.
    pub(super) fn lone(&self) -> bool {
        self.singles.lone()
    }

    /// Runs `read` on the writer's connection if it is free. Every commit by another
    /// connection empties a reader's page cache; the writer's stays current, so a read
    /// that follows this process's own appends finds its pages in memory.
    pub(super) fn try_read<T>(&self, read: impl FnOnce(&Connection) -> T) -> Option<T> {
        let conn = self.try_lock()?;
        conn.as_ref().map(read)
    }

    /// The connection if it is free. A panic while it was lent out (a fold's visitor,
    /// say) leaves the lock poisoned; the connection is still fit when no transaction
    /// was left open, and is taken again then.
    fn try_lock(&self) -> Option<MutexGuard<'_, Option<Connection>>> {
        match self.conn.try_lock() {
            Ok(conn) => Some(conn),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                let conn = poisoned.into_inner();
                if conn.as_ref().is_some_and(Connection::is_autocommit) {
                    self.conn.clear_poison();
                    Some(conn)
                } else {
                    None
                }
            }
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Closes the connection, once the writer thread has stopped and no appender
    /// holds it.
    pub(super) fn close(&self) {
        lock(&self.conn).take();
    }
}

fn lock(conn: &Mutex<Option<Connection>>) -> MutexGuard<'_, Option<Connection>> {
    // A panic inside a transaction leaves it to be rolled back by the next BEGIN's
    // failure path; the connection itself stays usable.
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Commits `append` on the calling thread, if the writer's connection is free: a lone
/// append then costs no hand-off to the writer thread and back. Gives the append back
/// when the connection is busy (the writer, or another appender, is committing).
pub(super) fn append_now(
    shared: &Shared,
    append: PreparedAppend,
    wakeups: &Wakeups,
) -> std::result::Result<Result<AppendOutcome>, PreparedAppend> {
    let Some(conn) = shared.try_lock() else {
        // Another commit is under way: appends no longer come one at a time.
        shared.singles.contended();
        return Err(append);
    };
    let Some(conn) = conn.as_ref() else {
        return Ok(Err(Error::Closed));
    };
    let appends = std::slice::from_ref(&append);
    let mut results = each_alone_on_failure(appends, |some| commit_batch(conn, some));
    batch::committed(&results, wakeups);
    Ok(results.pop().unwrap_or(Err(Error::Closed)))
}

/// Runs the writer until every sender of `queue` is gone.
pub(super) fn run(shared: Arc<Shared>, queue: flume::Receiver<Job>, wakeups: Arc<Wakeups>, waits: TurnWaitsWatch) {
    let mut batching = Batching::new(MAX_BATCH_APPENDS, MAX_BATCH_EVENTS, waits);
    loop {
        let mut guard = None;
        let mut appends = Appending::default();
        let mut replicated = Vec::new();
        let mut alone = Vec::new();
        let mut transactions = Vec::new();
        let mut jobs = 0;
        let more = batching.gather_blocking(&queue, |job| {
            jobs += 1;
            match job {
                Job::Append(pending) if pending.abandoned() => {}
                Job::Transaction(job) if job.abandoned() => {}
                Job::Append(pending) => {
                    let conn = guard.get_or_insert_with(|| lock(&shared.conn));
                    appends.take(conn.as_ref(), pending);
                }
                Job::Replicate(records, reply) => replicated.push((records, reply)),
                Job::Alone(work) => alone.push(work),
                Job::Transaction(job) => transactions.push(job),
            }
        });
        if !more {
            return;
        }
        shared.singles.batch(jobs);
        let mut guard = guard.unwrap_or_else(|| lock(&shared.conn));
        let Some(conn) = guard.as_ref() else { return };
        if let Some(Answers {
            appends,
            replies,
            results,
        }) = appends.commit(conn)
        {
            batching.answer(&queue, &appends, replies, results, &wakeups);
        }
        if !replicated.is_empty() {
            let (batches, replies): (Vec<_>, Vec<_>) = replicated.into_iter().unzip();
            let results = each_alone_on_failure(&batches, |some| commit(conn, |conn| write_replicated(conn, some)));
            for ((batch, reply), result) in batches.iter().zip(replies).zip(results) {
                if result.is_ok() {
                    wakeups.publish(batch.partition, batch.next_offset());
                }
                let _ = reply.send(result);
            }
        }
        for work in alone {
            work(conn);
        }
        while !transactions.is_empty() {
            let group: Vec<_> = transactions
                .drain(..transactions.len().min(readmodel::MAX_GROUP))
                .collect();
            if let Some(conn) = guard.take() {
                *guard = Some(readmodel::group(conn, group));
            }
        }
    }
}

/// Writes `items` with `write`, which answers each on its own; if the engine fails the
/// whole transaction, writes each item alone, so only the one that caused it fails.
fn each_alone_on_failure<I, T>(items: &[I], write: impl Fn(&[I]) -> Result<Vec<Result<T>>>) -> Vec<Result<T>> {
    write(items).unwrap_or_else(|error| one_by_one(items, error, write))
}

/// After the engine failed a transaction of `items` with `error` (rolled back): each
/// item written alone, so only the one that caused it fails.
fn one_by_one<I, T>(items: &[I], error: Error, write: impl Fn(&[I]) -> Result<Vec<Result<T>>>) -> Vec<Result<T>> {
    if items.len() == 1 {
        return vec![Err(error)];
    }
    tracing::warn!(%error, items = items.len(), "group commit failed; retrying one by one");
    items
        .iter()
        .map(|item| write(std::slice::from_ref(item)).and_then(|mut r| r.remove(0)))
        .collect()
}

/// Runs `work` in one `BEGIN IMMEDIATE` transaction: committed when it returns `Ok`,
/// rolled back otherwise. The error means nothing was written.
pub(super) fn commit<T>(conn: &Connection, work: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    begin(conn)?;
    match work(conn).and_then(|done| end(conn).map(|_| done)) {
        Ok(done) => Ok(done),
        Err(error) => {
            rollback(conn);
            Err(error)
        }
    }
}

fn begin(conn: &Connection) -> Result<()> {
    run_cached(conn, "BEGIN IMMEDIATE")
}

fn end(conn: &Connection) -> Result<()> {
    run_cached(conn, "COMMIT")
}

/// Runs `sql`, prepared once as every statement of the writer is rather than parsed
/// per batch.
fn run_cached(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(drop)
        .map_err(engine)
}

fn rollback(conn: &Connection) {
    // If even the rollback fails the connection is gone, and so is the transaction.
    let _ = conn.execute_batch("ROLLBACK");
}

/// Writes replicated batches, verbatim; each is refused on its own when the store is
/// not a follower or the batch does not start at its partition's next offset.
fn write_replicated(conn: &Connection, batches: &[Replicated]) -> Result<Vec<Result<()>>> {
    let leader: Option<String> = conn
        .query_row(crate::backend::sql::REPLICA, [], |row| row.get(0))
        .map_err(engine)?;
    if leader.is_none() {
        return Ok(batches.iter().map(|_| Err(Error::NotAReplica)).collect());
    }
    let mut next_offset = conn
        .prepare_cached(include_str!("sql/next_offset.sql"))
        .map_err(engine)?;
    let mut insert_event = conn.prepare_cached(INSERT_EVENT).map_err(engine)?;
    let mut insert_command = conn.prepare_cached(INSERT_COMMAND).map_err(engine)?;
    let mut redact_truncated = conn
        .prepare_cached(include_str!("sql/redact_truncated.sql"))
        .map_err(engine)?;
    let mut results = Vec::with_capacity(batches.len());
    for batch in batches {
        let next: Option<i64> = next_offset
            .query_row([batch.partition], |row| row.get(0))
            .map_err(engine)?;
        let next = Offset(next.unwrap_or(0) as u64);
        if next != batch.first_offset {
            results.push(Err(Error::ReplicationGap {
                partition: batch.partition,
                first: batch.first_offset,
                next,
            }));
            continue;
        }
        for record in &batch.records {
            insert_event
                .execute(params![
                    record.partition,
                    record.offset.0 as i64,
                    record.stream.as_str(),
                    record.version.0 as i64,
                    record.event_id.as_bytes().as_slice(),
                    record.event_type,
                    record.payload.get(),
                    serde_json::to_string(&record.metadata).map_err(Error::InvalidJson)?,
                    record.recorded_at.timestamp_micros(),
                    record.last_in_append,
                    record.redacted,
                ])
                .map_err(engine)?;
        }
        redact_truncated
            .execute(params![batch.partition, batch.first_offset.0 as i64])
            .map_err(engine)?;
        for (command_id, command) in &batch.commands {
            insert_command_row(&mut insert_command, *command_id, &command.stream, &command.outcome)?;
        }
        results.push(Ok(()));
    }
    Ok(results)
}

/// Writes `appends` in one transaction of their own and commits them.
fn commit_batch(conn: &Connection, appends: &[PreparedAppend]) -> Result<Vec<Result<AppendOutcome>>> {
    commit(conn, |conn| {
        let mut writing = Writing::new();
        appends.iter().map(|append| writing.write(conn, append)).collect()
    })
}

/// A committed batch's appends, where their outcomes go, and the outcomes.
struct Answers {
    appends: Vec<PreparedAppend>,
    replies: Vec<oneshot::Sender<Result<AppendOutcome>>>,
    results: Vec<Result<AppendOutcome>>,
}

/// The appends of one batch, written one by one as the writer takes them from its
/// queue, inside one transaction that commits them together: a batch's statements run
/// while its last appenders are still on their way, instead of after them.
#[derive(Default)]
struct Appending {
    appends: Vec<PreparedAppend>,
    replies: Vec<oneshot::Sender<Result<AppendOutcome>>>,
    results: Vec<Result<AppendOutcome>>,
    /// The open transaction's admission, once the first append began it.
    writing: Option<Writing>,
    /// The engine failed the transaction: nothing more is written in it.
    failed: Option<Error>,
}

impl Appending {
    /// Writes `pending`'s append (unless the store is closed or the transaction
    /// failed) and keeps it for the answer.
    fn take(&mut self, conn: Option<&Connection>, pending: Pending) {
        if let (None, Some(conn)) = (&self.failed, conn) {
            match self.write(conn, &pending.append) {
                Ok(result) => self.results.push(result),
                Err(error) => self.failed = Some(error),
            }
        }
        self.appends.push(pending.append);
        self.replies.push(pending.reply);
    }

    fn write(&mut self, conn: &Connection, append: &PreparedAppend) -> Result<Result<AppendOutcome>> {
        let writing = match &mut self.writing {
            Some(writing) => writing,
            None => {
                begin(conn)?;
                self.writing.insert(Writing::new())
            }
        };
        writing.write(conn, append)
    }

    /// Commits the batch; if the engine failed it, rolls it back and writes each append
    /// alone, so only the one that caused it fails. Gives back the [`Answers`] for
    /// [`Batching::answer`]; `None` for a batch with no appends.
    fn commit(self, conn: &Connection) -> Option<Answers> {
        if self.appends.is_empty() {
            return None;
        }
        let committed = match self.failed {
            None => end(conn),
            Some(error) => Err(error),
        };
        let results = match committed {
            Ok(()) => self.results,
            Err(error) => {
                rollback(conn);
                one_by_one(&self.appends, error, |some| commit_batch(conn, some))
            }
        };
        Some(Answers {
            appends: self.appends,
            replies: self.replies,
            results,
        })
    }
}

/// A transaction's admission: what the log holds for the keys its appends touch, read
/// as each append comes, and what its earlier appends wrote.
struct Writing {
    admission: Admission<BatchView>,
    /// The transaction's `recorded_at` (microseconds): never before the newest record
    /// of a partition it writes, whatever the clock or another process did.
    stamp: i64,
}

impl Writing {
    fn new() -> Self {
        Writing {
            admission: Admission::new(BatchView::default()),
            stamp: now_micros().timestamp_micros(),
        }
    }

    /// Decides `append` and inserts it if admitted. The outer error is the engine's:
    /// the transaction must be rolled back.
    fn write(&mut self, conn: &Connection, append: &PreparedAppend) -> Result<Result<AppendOutcome>> {
        let view = self.admission.view_mut();
        view.read(conn, append)?;
        self.stamp = self.stamp.max(view.latest_stamp);
        let outcome = match self.decide(conn, append)? {
            Ok(Admitted::Write(outcome)) => outcome,
            Ok(Admitted::Duplicate(outcome)) => return Ok(Ok(outcome)),
            Err(error) => return Ok(Err(error)),
        };
        self.admission.record(append, outcome);
        let mut insert_event = conn.prepare_cached(INSERT_EVENT).map_err(engine)?;
        let last = append.events.len() - 1;
        for (i, event) in append.events.iter().enumerate() {
            insert_event
                .execute(params![
                    append.partition,
                    (outcome.first_offset + i as u64).0 as i64,
                    append.stream.as_str(),
                    (outcome.first_version + i as u64).0 as i64,
                    event.event_id.as_bytes().as_slice(),
                    event.event_type,
                    event.payload.get(),
                    event.metadata,
                    self.stamp,
                    i == last,
                    false,
                ])
                .map_err(engine)?;
        }
        Ok(Ok(outcome))
    }

    /// Decides `append`, reading the stored outcome of its command id only where it
    /// matters (I5): when the append is refused (a retried command may be refused by
    /// the state its first run changed), and when the row that records the command's
    /// outcome, inserted before the events, finds the command id taken. A new command,
    /// the common case, costs no lookup. The outer error is the engine's.
    fn decide(&mut self, conn: &Connection, append: &PreparedAppend) -> Result<Result<Admitted>> {
        let decision = self.admission.decide(append);
        let Some(command_id) = append.command_id else {
            return Ok(decision);
        };
        let recorded = match &decision {
            // The same command earlier in this batch.
            Ok(Admitted::Duplicate(_)) => return Ok(decision),
            Ok(Admitted::Write(outcome)) => remember_command(conn, command_id, &append.stream, outcome)?,
            Err(_) => false,
        };
        if recorded {
            return Ok(decision);
        }
        let stored = self.admission.view_mut().read_command(conn, command_id)?;
        match decision {
            _ if stored => Ok(self.admission.decide(append)),
            Err(_) => Ok(decision),
            // The command id was taken, yet its row is not there to read.
            Ok(_) => Err(engine(rusqlite::Error::QueryReturnedNoRows)),
        }
    }
}

/// Records the outcome of the append made with `command_id`, unless the command id
/// is taken; tells whether it was recorded.
fn remember_command(conn: &Connection, command_id: Uuid, stream: &StreamId, outcome: &AppendOutcome) -> Result<bool> {
    let mut remember = conn
        .prepare_cached(include_str!("sql/remember_command.sql"))
        .map_err(engine)?;
    Ok(insert_command_row(&mut remember, command_id, stream, outcome)? == 1)
}

/// Runs `insert`, an `INSERT` into `annals_command_ids`, for one command's outcome;
/// gives the rows it inserted.
fn insert_command_row(
    insert: &mut rusqlite::Statement<'_>,
    command_id: Uuid,
    stream: &StreamId,
    outcome: &AppendOutcome,
) -> Result<usize> {
    insert
        .execute(params![
            command_id.as_bytes().as_slice(),
            stream.as_str(),
            outcome.partition,
            outcome.first_offset.0 as i64,
            outcome.last_offset.0 as i64,
            outcome.first_version.0 as i64,
            outcome.last_version.0 as i64,
        ])
        .map_err(engine)
}

/// What the log holds for the keys one batch touches, read inside its transaction.
#[derive(Default)]
struct BatchView {
    versions: HashMap<StreamId, Version>,
    next_offsets: HashMap<Partition, Offset>,
    /// The newest `recorded_at` in the touched partitions (microseconds), so the
    /// batch's own never goes back, whatever the clock or another process did.
    latest_stamp: i64,
    commands: HashMap<Uuid, CommandRecord>,
    held_event_ids: HashSet<Uuid>,
    hard_deleted: HashSet<StreamId>,
}

impl BatchView {
    /// Reads what `append` needs that the batch has not read yet.
    fn read(&mut self, conn: &Connection, append: &PreparedAppend) -> Result<()> {
        let prepare = |sql| conn.prepare_cached(sql).map_err(engine);
        if !self.versions.contains_key(&append.stream) {
            let (current, hard): (Option<i64>, Option<bool>) = prepare(include_str!("sql/stream_version.sql"))?
                .query_row([append.stream.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(engine)?;
            self.versions
                .insert(append.stream.clone(), Version(current.unwrap_or(0) as u64));
            if hard == Some(true) {
                self.hard_deleted.insert(append.stream.clone());
            }
        }
        if let Entry::Vacant(slot) = self.next_offsets.entry(append.partition) {
            let newest: Option<(i64, i64)> = prepare(include_str!("sql/partition_end.sql"))?
                .query_row([append.partition], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
                .map_err(engine)?;
            let (next, stamp) = newest.map_or((0, 0), |(offset, stamp)| (offset + 1, stamp));
            slot.insert(Offset(next as u64));
            self.latest_stamp = self.latest_stamp.max(stamp);
        }
        for client in append.events.iter().filter(|event| event.client_id) {
            if prepare(include_str!("sql/event_held.sql"))?
                .exists([client.event_id.as_bytes().as_slice()])
                .map_err(engine)?
            {
                self.held_event_ids.insert(client.event_id);
            }
        }
        Ok(())
    }

    /// Reads the stored outcome of `command_id`; tells whether there is one.
    fn read_command(&mut self, conn: &Connection, command_id: Uuid) -> Result<bool> {
        let known = conn
            .prepare_cached(include_str!("sql/command.sql"))
            .map_err(engine)?
            .query_row([command_id.as_bytes().as_slice()], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    AppendOutcome {
                        partition: row.get(1)?,
                        first_offset: Offset(row.get::<_, i64>(2)? as u64),
                        last_offset: Offset(row.get::<_, i64>(3)? as u64),
                        first_version: Version(row.get::<_, i64>(4)? as u64),
                        last_version: Version(row.get::<_, i64>(5)? as u64),
                        duplicate: false,
                    },
                ))
            })
            .optional()
            .map_err(engine)?;
        let Some((stream, outcome)) = known else {
            return Ok(false);
        };
        let stream = StreamId::trusted(stream);
        self.commands.insert(command_id, CommandRecord { stream, outcome });
        Ok(true)
    }
}

impl LogView for BatchView {
    fn stream_version(&self, stream: &StreamId) -> Version {
        self.versions.get(stream).copied().unwrap_or_default()
    }
    fn next_offset(&self, partition: Partition) -> Offset {
        self.next_offsets.get(&partition).copied().unwrap_or_default()
    }
    fn command(&self, command_id: &Uuid) -> Option<CommandRecord> {
        self.commands.get(command_id).cloned()
    }
    fn holds_event(&self, event_id: &Uuid) -> bool {
        self.held_event_ids.contains(event_id)
    }
    fn hard_deleted(&self, stream: &StreamId) -> bool {
        self.hard_deleted.contains(stream)
    }
}

/// A failure of the SQLite engine itself.
pub(super) fn engine(error: rusqlite::Error) -> Error {
    Error::from(error)
}
