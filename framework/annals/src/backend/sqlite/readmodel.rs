//! Read-model transactions on SQLite's C API, on blocking threads.
//!
//! SQLite has one writer at a time, and a commit costs a WAL write and a sync. Write
//! transactions therefore queue for one writer per open store, which runs every
//! transaction waiting in one SQLite transaction (each under its own savepoint, so a
//! failing one rolls back alone) and commits them together: group commit, as a log
//! does. Each caller hears its result once the commit it rode on is known. The writer
//! keeps its own connection, so its page cache stays warm from group to group.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::ValueRef;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::error::{EngineFailure, Error, Result};
use crate::options::StoreOptions;
use crate::readmodel::{Answer, Database, Engine, Param, Row, Statements, Tx, Value, Work};

/// The most transactions one commit carries.
const MAX_GROUP: usize = 64;

/// The read model's connections: idle ones for reads, and the writer's queue.
struct Connections {
    path: PathBuf,
    synchronous: &'static str,
    busy_timeout: Duration,
    idle: Mutex<Vec<rusqlite::Connection>>,
    writer: Mutex<Writer>,
}

/// Write transactions waiting for the writer, and its connection between groups.
#[derive(Default)]
struct Writer {
    queue: Vec<Job>,
    /// A blocking thread is draining the queue.
    draining: bool,
    conn: Option<rusqlite::Connection>,
}

type Outcome = std::thread::Result<Result<Answer>>;

/// A write transaction waiting for its group.
struct Job {
    work: Option<Work>,
    ran: Option<Outcome>,
    reply: oneshot::Sender<Outcome>,
}

impl Job {
    /// Runs the work in the group's transaction; whether it succeeded.
    fn run(&mut self, tx: &mut Tx, runtime: &Handle) -> bool {
        let Some(work) = self.work.take() else { return false };
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(work(tx))));
        let ok = matches!(ran, Ok(Ok(_)));
        self.ran = Some(ran);
        ok
    }

    /// Tells the caller how it ended, once the group's commit (or its failure) is known.
    fn answer(self, committed: Result<()>) {
        let outcome = match self.ran {
            Some(Ok(Ok(value))) => Ok(committed.map(|()| value)),
            Some(ran) => ran,
            None => Ok(Err(committed.err().unwrap_or(Error::Closed))),
        };
        let _ = self.reply.send(outcome);
    }
}

/// A transaction's connection, lent to the work it runs.
struct SqliteTx(rusqlite::Connection);

#[async_trait]
impl Statements for SqliteTx {
    fn engine(&self) -> Engine {
        Engine::Sqlite
    }

    async fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64> {
        execute(&self.0, sql, params)
    }

    async fn execute_many(&mut self, sql: &str, rows: &[&[Param]]) -> Result<u64> {
        execute_many(&self.0, sql, rows)
    }

    async fn query(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Row>> {
        query(&self.0, sql, params)
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// Runs `work` on `conn`, and gives the connection back.
fn lend<T>(conn: rusqlite::Connection, work: impl FnOnce(&mut Tx) -> T) -> (rusqlite::Connection, T) {
    let mut tx = Tx::new(SqliteTx(conn));
    let result = work(&mut tx);
    (tx.into_inner::<SqliteTx>().0, result)
}

#[async_trait]
impl Database for Arc<Connections> {
    fn engine(&self) -> Engine {
        Engine::Sqlite
    }

    async fn query(&self, sql: &str, params: Vec<Param>) -> Result<Vec<Row>> {
        read(self.clone(), sql.to_owned(), params).await
    }

    async fn transaction(&self, work: Work, writes: bool) -> Result<Answer> {
        if !writes {
            return read_transaction(self.clone(), work).await;
        }
        let (reply, answered) = oneshot::channel();
        self.submit(Job {
            work: Some(work),
            ran: None,
            reply,
        });
        unwind(answered.await.unwrap_or(Ok(Err(Error::Closed))))
    }
}

/// The read models of the SQLite store at `path`.
pub(super) fn database(path: PathBuf, options: &StoreOptions) -> crate::readmodel::Db {
    crate::readmodel::Db::new(Arc::new(Arc::new(Connections::new(path, options))))
}

impl Connections {
    fn new(path: PathBuf, options: &StoreOptions) -> Self {
        Connections {
            path,
            synchronous: options.synchronous.pragma(),
            busy_timeout: options.busy_timeout,
            idle: Mutex::new(Vec::new()),
            writer: Mutex::new(Writer::default()),
        }
    }

    fn open(&self) -> Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(Error::from)?;
        conn.execute_batch(&format!("PRAGMA synchronous = {};", self.synchronous))
            .map_err(Error::from)?;
        super::wait_in_short_steps(&conn, self.busy_timeout)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    fn take(&self) -> Result<rusqlite::Connection> {
        match self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            Some(conn) => Ok(conn),
            None => self.open(),
        }
    }

    fn give_back(&self, conn: rusqlite::Connection) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `job`, and starts a writer if none is draining the queue.
    fn submit(self: &Arc<Self>, job: Job) {
        let start = {
            let mut writer = self.writer();
            writer.queue.push(job);
            !std::mem::replace(&mut writer.draining, true)
        };
        if start {
            // Made here, so that a task dropped before it runs still answers the queue.
            let mut draining = Draining {
                connections: self.clone(),
                done: false,
            };
            let runtime = Handle::current();
            tokio::task::spawn_blocking(move || draining.run(&runtime));
        }
    }
}

/// The writer: runs groups until the queue is empty. Dropped without finishing (its
/// thread never ran, or it panicked), it answers what is left and lets the next
/// submission start a new writer.
struct Draining {
    connections: Arc<Connections>,
    done: bool,
}

impl Draining {
    fn run(&mut self, runtime: &Handle) {
        super::set_busy_timeout(self.connections.busy_timeout);
        loop {
            let (jobs, conn) = {
                let mut writer = self.connections.writer();
                if writer.queue.is_empty() {
                    writer.draining = false;
                    self.done = true;
                    return;
                }
                let n = writer.queue.len().min(MAX_GROUP);
                (writer.queue.drain(..n).collect::<Vec<_>>(), writer.conn.take())
            };
            let conn = match conn.map_or_else(|| self.connections.open(), Ok) {
                Ok(conn) => conn,
                Err(error) => {
                    answer_all(jobs, &error);
                    continue;
                }
            };
            self.connections.writer().conn = group(conn, jobs, runtime);
        }
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let jobs = {
            let mut writer = self.connections.writer();
            writer.draining = false;
            std::mem::take(&mut writer.queue)
        };
        answer_all(jobs, &Error::Closed);
    }
}

/// Runs `jobs` in one transaction, each under a savepoint, and commits them together.
/// Returns the connection unless it is no longer fit for reuse.
fn group(mut conn: rusqlite::Connection, jobs: Vec<Job>, runtime: &Handle) -> Option<rusqlite::Connection> {
    if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
        answer_all(jobs, &Error::from(error));
        return Some(conn);
    }
    let mut ran: Vec<Job> = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter();
    while let Some(mut job) = jobs.next() {
        if let Err(error) = conn.execute_batch("SAVEPOINT annals_job") {
            return abandon(conn, ran, job, jobs, &Error::from(error));
        }
        let ok;
        (conn, ok) = lend(conn, |tx| job.run(tx, runtime));
        if conn.is_autocommit() {
            // The group's transaction is gone: the work ended it itself (a COMMIT or
            // ROLLBACK in its SQL), or it failed with an error SQLite answers by
            // rolling back everything (a full disk, an I/O error). A failed work
            // keeps its own error; the others hear why they were rolled back.
            let error = if ok {
                Error::TransactionEnded
            } else {
                // Not this transaction's fault: it may try again.
                Error::Engine {
                    kind: EngineFailure::Busy,
                    source: "rolled back: a transaction committed in the same group failed and SQLite ended the group"
                        .into(),
                }
            };
            return abandon(conn, ran, job, jobs, &error);
        }
        let close = if ok {
            "RELEASE annals_job"
        } else {
            "ROLLBACK TO annals_job; RELEASE annals_job"
        };
        if let Err(error) = conn.execute_batch(close) {
            return abandon(conn, ran, job, jobs, &Error::from(error));
        }
        ran.push(job);
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => {
            for job in ran {
                job.answer(Ok(()));
            }
            Some(conn)
        }
        Err(error) => {
            let error = Error::from(error);
            answer_all(ran, &error);
            roll_back(conn)
        }
    }
}

/// Ends a group that cannot go on: nothing of it is committed, and every job in it is
/// told so. The jobs not reached yet are told too, so their callers may try again.
fn abandon(
    conn: rusqlite::Connection,
    ran: Vec<Job>,
    current: Job,
    rest: impl Iterator<Item = Job>,
    error: &Error,
) -> Option<rusqlite::Connection> {
    answer_all(ran.into_iter().chain(std::iter::once(current)).chain(rest), error);
    roll_back(conn)
}

fn roll_back(conn: rusqlite::Connection) -> Option<rusqlite::Connection> {
    if conn.is_autocommit() || conn.execute_batch("ROLLBACK").is_ok() {
        Some(conn)
    } else {
        // A connection that cannot roll back is dropped rather than reused.
        None
    }
}

/// Tells every job of a group that failed as a whole why it failed.
fn answer_all(jobs: impl IntoIterator<Item = Job>, error: &Error) {
    for job in jobs {
        job.answer(Err(copy_of(error)));
    }
}

/// The same failure again, for another caller (errors are not `Clone`).
fn copy_of(error: &Error) -> Error {
    match error {
        Error::Engine { kind, source } => Error::Engine {
            kind: *kind,
            source: source.to_string().into(),
        },
        Error::Closed => Error::Closed,
        Error::TransactionEnded => Error::TransactionEnded,
        other => Error::Engine {
            kind: EngineFailure::Other,
            source: other.to_string().into(),
        },
    }
}

fn unwind(outcome: Outcome) -> Result<Answer> {
    outcome.unwrap_or_else(|panic: Box<dyn Any + Send>| std::panic::resume_unwind(panic))
}

/// A read transaction: `BEGIN` on an idle connection, rolled back when done.
async fn read_transaction(connections: Arc<Connections>, work: Work) -> Result<Answer> {
    let runtime = Handle::current();
    let joined = tokio::task::spawn_blocking(move || {
        super::set_busy_timeout(connections.busy_timeout);
        let conn = connections.take()?;
        conn.execute_batch("BEGIN").map_err(Error::from)?;
        let (conn, result) = lend(conn, |tx| runtime.block_on(work(tx)));
        if let Some(conn) = roll_back(conn) {
            connections.give_back(conn);
        }
        result
    })
    .await;
    match joined {
        Ok(result) => result,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(_) => Err(Error::Closed),
    }
}

/// One query on an idle connection, outside any transaction.
async fn read(connections: Arc<Connections>, sql: String, params: Vec<Param>) -> Result<Vec<Row>> {
    tokio::task::spawn_blocking(move || {
        super::set_busy_timeout(connections.busy_timeout);
        let conn = connections.take()?;
        let rows = query(&conn, &sql, &params);
        connections.give_back(conn);
        rows
    })
    .await
    .map_err(|_| Error::Closed)?
}

/// The index in a statement's params of parameter `index` (1-based). `$n` is a named
/// parameter to SQLite, numbered by first appearance: each is bound by the number in
/// its name, so any order and reuse work.
fn parameter_number(statement: &rusqlite::Statement<'_>, index: usize) -> Option<usize> {
    statement
        .parameter_name(index)
        .and_then(|name| name.strip_prefix('$'))
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| n.checked_sub(1))
}

/// Binds `param` to parameter `index`; a parameter with no value binds NULL.
fn bind(statement: &mut rusqlite::Statement<'_>, index: usize, param: Option<&Param>) -> Result<()> {
    let bound = match param {
        Some(Param::Int(v)) => statement.raw_bind_parameter(index, v),
        Some(Param::Real(v)) => statement.raw_bind_parameter(index, v),
        Some(Param::Text(v)) => statement.raw_bind_parameter(index, v),
        Some(Param::Bool(v)) => statement.raw_bind_parameter(index, v),
        Some(Param::Blob(v)) => statement.raw_bind_parameter(index, v),
        None => statement.raw_bind_parameter(index, rusqlite::types::Null),
    };
    bound.map_err(Error::from)
}

fn prepare<'c>(conn: &'c rusqlite::Connection, sql: &str, params: &[Param]) -> Result<rusqlite::CachedStatement<'c>> {
    let mut statement = conn.prepare_cached(sql).map_err(Error::from)?;
    for index in 1..=statement.parameter_count() {
        let number = parameter_number(&statement, index);
        bind(&mut statement, index, number.and_then(|n| params.get(n)))?;
    }
    Ok(statement)
}

fn execute(conn: &rusqlite::Connection, sql: &str, params: &[Param]) -> Result<u64> {
    let mut statement = prepare(conn, sql, params)?;
    Ok(statement.raw_execute().map_err(Error::from)? as u64)
}

/// One statement, prepared and looked up once, run for each row of parameters.
fn execute_many(conn: &rusqlite::Connection, sql: &str, rows: &[&[Param]]) -> Result<u64> {
    let mut statement = conn.prepare_cached(sql).map_err(Error::from)?;
    let numbers: Vec<Option<usize>> = (1..=statement.parameter_count())
        .map(|index| parameter_number(&statement, index))
        .collect();
    let mut changed = 0;
    for row in rows {
        let params = *row;
        for (index, number) in (1..).zip(&numbers) {
            bind(&mut statement, index, number.and_then(|n| params.get(n)))?;
        }
        changed += statement.raw_execute().map_err(Error::from)? as u64;
    }
    Ok(changed)
}

fn query(conn: &rusqlite::Connection, sql: &str, params: &[Param]) -> Result<Vec<Row>> {
    let mut statement = prepare(conn, sql, params)?;
    let columns = statement.column_count();
    let mut rows = statement.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(Error::from)? {
        let mut values = Vec::with_capacity(columns);
        for i in 0..columns {
            values.push(match row.get_ref(i).map_err(Error::from)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Real(v) => Value::Real(v),
                ValueRef::Text(v) => Value::Text(String::from_utf8_lossy(v).into_owned()),
                ValueRef::Blob(v) => Value::Blob(v.to_vec()),
            });
        }
        out.push(Row(values));
    }
    Ok(out)
}
