//! Read-model transactions on SQLite's C API, each on a blocking thread.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use rusqlite::types::ValueRef;

use super::{Param, Row, Tx, TxInner, Value};
use crate::error::{Error, Result};
use crate::store::StoreOptions;

/// Idle connections, reused from one transaction to the next.
pub(super) struct Connections {
    path: PathBuf,
    synchronous: &'static str,
    busy_timeout: Duration,
    idle: Mutex<Vec<rusqlite::Connection>>,
    /// One write transaction at a time per process: waiting here costs nothing, while
    /// waiting in SQLite's busy handler means sleeping in millisecond steps.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Connections {
    pub(super) fn new(path: PathBuf, options: &StoreOptions) -> Self {
        Connections {
            path,
            synchronous: options.synchronous.pragma(),
            busy_timeout: options.busy_timeout,
            idle: Mutex::new(Vec::new()),
            turn: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn take(&self) -> Result<rusqlite::Connection> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(conn);
        }
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(Error::Sqlite)?;
        conn.execute_batch(&format!("PRAGMA synchronous = {};", self.synchronous))
            .map_err(Error::Sqlite)?;
        crate::backend::sqlite::wait_in_short_steps(&conn, self.busy_timeout)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    fn give_back(&self, conn: rusqlite::Connection) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
    }
}

/// A transaction: `BEGIN IMMEDIATE` after this process's other writers when it
/// `writes`, a plain (deferred, read) transaction otherwise.
pub(super) async fn transaction<T, F>(connections: Arc<Connections>, work: F, writes: bool) -> Result<T>
where
    T: Send + 'static,
    F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<T>> + Send + 'static,
{
    let runtime = tokio::runtime::Handle::current();
    let turn = if writes {
        Some(connections.turn.clone().lock_owned().await)
    } else {
        None
    };
    let joined = tokio::task::spawn_blocking(move || {
        crate::backend::sqlite::set_busy_timeout(connections.busy_timeout);
        let conn = connections.take()?;
        conn.execute_batch(if writes { "BEGIN IMMEDIATE" } else { "BEGIN" })
            .map_err(Error::Sqlite)?;
        let mut tx = Tx {
            inner: TxInner::Sqlite(conn),
        };
        let result = runtime.block_on(work(&mut tx));
        #[allow(irrefutable_let_patterns)]
        let TxInner::Sqlite(conn) = tx.inner
        else {
            unreachable!("a SQLite Db makes SQLite transactions")
        };
        let result = result.and_then(|value| {
            conn.execute_batch("COMMIT").map_err(Error::Sqlite)?;
            Ok(value)
        });
        if result.is_err() && !conn.is_autocommit() {
            // A connection that cannot roll back is dropped rather than reused.
            if conn.execute_batch("ROLLBACK").is_err() {
                return result;
            }
        }
        connections.give_back(conn);
        result
    })
    .await;
    drop(turn);
    match joined {
        Ok(result) => result,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(_) => Err(Error::Closed),
    }
}

/// One query on an idle connection, outside any transaction.
pub(super) async fn read(connections: Arc<Connections>, sql: String, params: Vec<Param>) -> Result<Vec<Row>> {
    tokio::task::spawn_blocking(move || {
        crate::backend::sqlite::set_busy_timeout(connections.busy_timeout);
        let conn = connections.take()?;
        let rows = query(&conn, &sql, &params);
        connections.give_back(conn);
        rows
    })
    .await
    .map_err(|_| Error::Closed)?
}

fn prepare<'c>(conn: &'c rusqlite::Connection, sql: &str, params: &[Param]) -> Result<rusqlite::CachedStatement<'c>> {
    let mut statement = conn.prepare_cached(sql).map_err(Error::Sqlite)?;
    for index in 1..=statement.parameter_count() {
        // `$n` is a named parameter to SQLite, numbered by first appearance: bind each
        // by the number in its name, so any order and reuse work.
        let number = statement
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok());
        let Some(param) = number.and_then(|n| params.get(n.wrapping_sub(1))) else {
            continue;
        };
        let bound = match param {
            Param::Int(v) => statement.raw_bind_parameter(index, v),
            Param::Real(v) => statement.raw_bind_parameter(index, v),
            Param::Text(v) => statement.raw_bind_parameter(index, v),
            Param::Bool(v) => statement.raw_bind_parameter(index, v),
            Param::Blob(v) => statement.raw_bind_parameter(index, v),
        };
        bound.map_err(Error::Sqlite)?;
    }
    Ok(statement)
}

pub(super) fn execute(conn: &rusqlite::Connection, sql: &str, params: &[Param]) -> Result<u64> {
    let mut statement = prepare(conn, sql, params)?;
    Ok(statement.raw_execute().map_err(Error::Sqlite)? as u64)
}

pub(super) fn query(conn: &rusqlite::Connection, sql: &str, params: &[Param]) -> Result<Vec<Row>> {
    let mut statement = prepare(conn, sql, params)?;
    let columns = statement.column_count();
    let mut rows = statement.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(Error::Sqlite)? {
        let mut values = Vec::with_capacity(columns);
        for i in 0..columns {
            values.push(match row.get_ref(i).map_err(Error::Sqlite)? {
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
