//! Read-model transactions on SQLite's C API.
//!
//! SQLite has one writer at a time, and a commit costs a WAL write and a sync. Write
//! transactions therefore go to the store's writer thread ([`super::writer`]), which
//! also commits the log's appends: nothing in the process competes for the write lock.
//! The writer runs every transaction waiting in one SQLite transaction, each under its
//! own savepoint so that a failing one rolls back alone, and commits them together:
//! group commit, as a log does. Each caller hears its result once the commit it rode on
//! is known.
//!
//! A transaction's work is polled on the writer thread. Its statements run at once; if
//! it awaits anything else (a timer, a lock, a network call), every other writer of the
//! store waits with it. So the time it may spend so is bounded
//! ([`StoreOptions::transaction_await_limit`]): past it the work is dropped, its
//! savepoint rolled back, and it fails with [`Error::TransactionAwaited`] while the
//! others commit. Reads run on connections of their own, on blocking threads.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::types::ValueRef;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::writer;
use crate::error::{EngineFailure, Error, Result};
use crate::options::StoreOptions;
use crate::readmodel::{Answer, Database, Engine, Param, Row, Statements, Tx, Value, Work};

/// The most transactions one commit carries.
pub(super) const MAX_GROUP: usize = 64;

/// The read model's connections: idle ones for reads, and the writer's queue.
struct Connections {
    path: PathBuf,
    synchronous: &'static str,
    busy_timeout: Duration,
    await_limit: Duration,
    idle: Mutex<Vec<rusqlite::Connection>>,
    writer: Arc<writer::Queue>,
}

type Outcome = std::thread::Result<Result<Answer>>;

/// A write transaction waiting for the writer.
pub(super) struct Job {
    work: Option<Work>,
    /// The runtime of the caller, entered while its work is polled.
    runtime: Handle,
    await_limit: Duration,
    ran: Option<Outcome>,
    reply: oneshot::Sender<Outcome>,
}

impl Job {
    /// Runs the work in the group's transaction; whether it succeeded.
    fn run(&mut self, tx: &mut Tx) -> bool {
        let Some(work) = self.work.take() else { return false };
        let limit = self.await_limit;
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
            poll_on_this_thread(work(tx), &self.runtime, limit).unwrap_or(Err(Error::TransactionAwaited { limit }))
        }));
        let ok = matches!(ran, Ok(Ok(_)));
        self.ran = Some(ran);
        ok
    }

    /// Whether the caller stopped waiting before the work began.
    pub(super) fn abandoned(&self) -> bool {
        self.reply.is_closed()
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

/// Wakes the thread that polls a transaction's work.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on this thread, inside `runtime`, until it is ready; `None` once it
/// has waited, in all, `limit` for something to wake it.
fn poll_on_this_thread<F: Future>(future: F, runtime: &Handle, limit: Duration) -> Option<F::Output> {
    let _entered = runtime.enter();
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    let mut waited = Duration::ZERO;
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return Some(output);
        }
        if waited >= limit {
            return None;
        }
        let parked = Instant::now();
        std::thread::park_timeout(limit - waited);
        waited += parked.elapsed();
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
        let job = Job {
            work: Some(work),
            runtime: Handle::current(),
            await_limit: self.await_limit,
            ran: None,
            reply,
        };
        self.writer.send(writer::Job::Transaction(job)).await?;
        unwind(answered.await.unwrap_or(Ok(Err(Error::Closed))))
    }
}

/// The read models of the SQLite store at `path`, whose writer takes jobs from `writer`.
pub(super) fn database(path: PathBuf, options: &StoreOptions, writer: Arc<writer::Queue>) -> crate::readmodel::Db {
    crate::readmodel::Db::new(Arc::new(Arc::new(Connections::new(path, options, writer))))
}

impl Connections {
    fn new(path: PathBuf, options: &StoreOptions, writer: Arc<writer::Queue>) -> Self {
        Connections {
            path,
            synchronous: options.synchronous.pragma(),
            busy_timeout: options.busy_timeout,
            await_limit: options.transaction_await_limit,
            idle: Mutex::new(Vec::new()),
            writer,
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
        conn.busy_timeout(self.busy_timeout).map_err(Error::from)?;
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
}

/// Runs `jobs` in one transaction on the writer's connection, each under a savepoint,
/// and commits them together; gives the connection back.
pub(super) fn group(mut conn: rusqlite::Connection, jobs: Vec<Job>) -> rusqlite::Connection {
    if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
        answer_all(jobs, &Error::from(error));
        return conn;
    }
    let mut ran: Vec<Job> = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter();
    while let Some(mut job) = jobs.next() {
        if let Err(error) = conn.execute_batch("SAVEPOINT annals_job") {
            return abandon(conn, ran, job, jobs, &Error::from(error));
        }
        let ok;
        (conn, ok) = lend(conn, |tx| job.run(tx));
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
            conn
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
) -> rusqlite::Connection {
    answer_all(ran.into_iter().chain(std::iter::once(current)).chain(rest), error);
    roll_back(conn)
}

/// Ends the connection's transaction, if one is open. If even that fails, the engine
/// has lost the connection's state; the next `BEGIN` fails and says so.
fn roll_back(conn: rusqlite::Connection) -> rusqlite::Connection {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    conn
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
        let conn = connections.take()?;
        conn.execute_batch("BEGIN").map_err(Error::from)?;
        let (conn, result) = lend(conn, |tx| runtime.block_on(work(tx)));
        let conn = roll_back(conn);
        if conn.is_autocommit() {
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
