//! Record reads on SQLite's C API: the hot read paths (a stream, a partition) run on a
//! blocking thread with a read-only connection, a fraction of what a row costs through
//! sqlx's SQLite worker.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;

use crate::backend::sql;
use crate::error::{Error, Result};
use crate::position::{Offset, Partition, Version};
use crate::record::RecordedEvent;
use crate::stream::StreamId;

/// Idle read-only connections, reused.
pub(super) struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

impl Readers {
    pub(super) fn new(path: PathBuf, busy_timeout: Duration) -> Arc<Self> {
        Arc::new(Readers {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn take(&self) -> Result<rusqlite::Connection> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(conn);
        }
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(Error::Sqlite)?;
        conn.busy_timeout(self.busy_timeout).map_err(Error::Sqlite)?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(conn)
    }

    /// Runs `read` on an idle connection, on a blocking thread.
    async fn run<T, F>(self: &Arc<Self>, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.take()?;
            let result = read(&conn);
            readers.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            result
        })
        .await
        .map_err(|_| Error::Closed)?
    }

    pub(super) async fn stream(
        self: &Arc<Self>,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let stream = stream.as_str().to_owned();
        self.run(move |conn| {
            query(
                conn,
                &sql::read_stream(),
                rusqlite::params![stream, clamp(from), clamp(limit)],
                limit.min(STREAM_RESERVE),
            )
        })
        .await
    }

    /// Up to `limit` rows a fold needs of `stream` from version `from` on, owned: the
    /// visitor runs on the caller's task, the read on a blocking thread.
    pub(super) async fn fold(self: &Arc<Self>, stream: &StreamId, from: Version, limit: usize) -> Result<Vec<FoldRow>> {
        let stream = stream.as_str().to_owned();
        self.run(move |conn| {
            let mut statement = conn.prepare_cached(sql::FOLD_STREAM).map_err(Error::Sqlite)?;
            let mut rows = statement
                .query(rusqlite::params![stream, clamp(from), clamp(limit)])
                .map_err(Error::Sqlite)?;
            let mut folded = Vec::with_capacity(limit.min(STREAM_RESERVE));
            while let Some(row) = rows.next().map_err(Error::Sqlite)? {
                let text = |i| {
                    row.get_ref(i)
                        .and_then(|v| v.as_str().map_err(Into::into))
                        .map_err(Error::Sqlite)
                };
                folded.push(FoldRow {
                    version: row.get::<_, i64>(0).map_err(Error::Sqlite)? as Version,
                    event_type: text(1)?.to_owned(),
                    payload: text(2)?.to_owned(),
                    schema_version: crate::record::schema_version_in(text(3)?)?,
                });
            }
            Ok(folded)
        })
        .await
    }

    pub(super) async fn partition(
        self: &Arc<Self>,
        partition: Partition,
        from: Offset,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.run(move |conn| {
            query(
                conn,
                &sql::read_partition(),
                rusqlite::params![partition, clamp(from), clamp(limit)],
                limit.min(BATCH_RESERVE),
            )
        })
        .await
    }
}

/// One event as a fold sees it (see [`EventView`](crate::EventView)).
pub(super) struct FoldRow {
    pub(super) version: Version,
    pub(super) event_type: String,
    pub(super) payload: String,
    pub(super) schema_version: Option<u32>,
}

fn clamp(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// The most records a partition read reserves room for before it has seen them: a
/// consumer's batch, usually full (growing a vector of records copies all of them each
/// time it doubles).
const BATCH_RESERVE: usize = 1_000;
/// The same for a stream read, which is often short whatever its limit.
const STREAM_RESERVE: usize = 64;

fn query(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    reserve: usize,
) -> Result<Vec<RecordedEvent>> {
    let mut statement = conn.prepare_cached(sql).map_err(Error::Sqlite)?;
    let mut rows = statement.query(params).map_err(Error::Sqlite)?;
    let mut records = Vec::with_capacity(reserve);
    while let Some(row) = rows.next().map_err(Error::Sqlite)? {
        records.push(record(row)?);
    }
    Ok(records)
}

fn record(row: &rusqlite::Row<'_>) -> Result<RecordedEvent> {
    let get_i64 = |i| row.get::<_, i64>(i).map_err(Error::Sqlite);
    let text = |i| row.get::<_, String>(i).map_err(Error::Sqlite);
    let id = row.get_ref(4).map_err(Error::Sqlite)?;
    let event_id = match id {
        rusqlite::types::ValueRef::Blob(bytes) => uuid::Uuid::from_slice(bytes).ok(),
        rusqlite::types::ValueRef::Text(text) => std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()),
        _ => None,
    }
    .ok_or(Error::Sqlite(rusqlite::Error::InvalidColumnType(
        4,
        "event_id".into(),
        id.data_type(),
    )))?;
    Ok(RecordedEvent {
        partition: get_i64(0)? as Partition,
        offset: get_i64(1)? as Offset,
        stream: StreamId::trusted(text(2)?),
        version: get_i64(3)? as Version,
        event_id,
        event_type: text(5)?,
        payload: RawValue::from_string(text(6)?).map_err(Error::InvalidJson)?,
        metadata: serde_json::from_str(&text(7)?).map_err(Error::InvalidJson)?,
        recorded_at: chrono::DateTime::from_timestamp_micros(get_i64(8)?).unwrap_or_default(),
        last_in_append: get_i64(9)? != 0,
    })
}
