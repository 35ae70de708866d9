//! Record reads on SQLite's C API: the hot read paths (a stream, a fold, a partition)
//! run on a read-only connection, a fraction of what a row costs through sqlx's SQLite
//! worker. On a multi-threaded runtime they run on the caller's thread (see
//! [`may_block`]); elsewhere on a blocking thread.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;

use crate::backend::sql;
use crate::error::{Error, Result};
use crate::log::Visitor;
use crate::position::{Offset, Partition, Version};
use crate::record::{EventView, RecordedEvent};
use crate::stream::StreamId;

/// Whether the calling task may block its thread on SQLite: on a multi-threaded
/// runtime, `block_in_place` hands the thread's other tasks to another worker, which
/// costs less than sending the work to a blocking thread and the answer back. On a
/// current-thread runtime it would block every task, and `block_in_place` panics.
pub(super) fn may_block() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|runtime| runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

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
        .map_err(Error::from)?;
        conn.busy_timeout(self.busy_timeout).map_err(Error::from)?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(conn)
    }

    /// Runs `read` on an idle connection: on this thread where it may block, else on a
    /// blocking thread.
    async fn run<T, F>(self: &Arc<Self>, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        if may_block() {
            return tokio::task::block_in_place(|| self.with_idle(read));
        }
        let readers = self.clone();
        tokio::task::spawn_blocking(move || readers.with_idle(read))
            .await
            .map_err(|_| Error::Closed)?
    }

    fn with_idle<T>(&self, read: impl FnOnce(&rusqlite::Connection) -> Result<T>) -> Result<T> {
        let conn = self.take()?;
        let result = read(&conn);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        result
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
                sql::READ_STREAM,
                rusqlite::params![stream, clamp(from), clamp(limit)],
                limit.min(STREAM_RESERVE),
            )
        })
        .await
    }

    /// Shows `visit` the events of `stream` from version `from` on. Where this thread
    /// may block, the visitor sees each row as SQLite returns it, in one read, with
    /// nothing copied; otherwise pages of rows are read on a blocking thread and
    /// visited on the caller's task.
    pub(super) async fn fold(
        self: &Arc<Self>,
        stream: &StreamId,
        from: Version,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        if may_block() {
            return tokio::task::block_in_place(|| {
                self.with_idle(|conn| visit_rows(conn, stream.as_str(), from, usize::MAX, visit).map(drop))
            });
        }
        const PAGE: usize = 1_000;
        let mut next = from;
        loop {
            let stream = stream.as_str().to_owned();
            let rows = self
                .run(move |conn| {
                    let mut rows = Vec::with_capacity(STREAM_RESERVE);
                    visit_rows(conn, &stream, next, PAGE, &mut |view| {
                        rows.push(FoldRow::from(view));
                        Ok(())
                    })
                    .map(drop)?;
                    Ok(rows)
                })
                .await?;
            for row in &rows {
                visit(row.view())?;
            }
            match rows.last() {
                Some(last) if rows.len() == PAGE => next = last.version + 1,
                _ => return Ok(()),
            }
        }
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
                sql::READ_PARTITION,
                rusqlite::params![partition, clamp(from), clamp(limit)],
                limit.min(BATCH_RESERVE),
            )
        })
        .await
    }
}

impl Readers {
    /// The records of `partition` in `range` that pass `read`'s filter, through the
    /// filter index it names (see [`Backend::read_filtered`]).
    ///
    /// [`Backend::read_filtered`]: crate::backend::Backend::read_filtered
    pub(super) async fn filtered(
        self: &Arc<Self>,
        partition: Partition,
        range: std::ops::Range<Offset>,
        limit: usize,
        read: crate::backend::FilteredRead,
    ) -> Result<crate::backend::Filtered> {
        self.run(move |conn| {
            let statement = read.sql(CATEGORY);
            let mut records = Vec::new();
            for key in read.keys() {
                let mut params: Vec<rusqlite::types::Value> = vec![
                    i64::from(partition.0).into(),
                    key.clone().into(),
                    clamp(range.start).into(),
                    clamp(range.end).into(),
                ];
                params.extend(
                    read.allowed_types()
                        .iter()
                        .map(|t| rusqlite::types::Value::from(t.clone())),
                );
                params.push(clamp(limit).into());
                records.extend(query(conn, &statement, rusqlite::params_from_iter(params), 0)?);
            }
            Ok(read.merge(records, limit, range.end))
        })
        .await
    }
}

/// A stream id's category as `annals_events_by_category` indexes it: SQLite uses an
/// index on an expression only for that very expression.
pub(super) const CATEGORY: &str =
    "(CASE WHEN instr(stream_id, '-') > 0 THEN substr(stream_id, 1, instr(stream_id, '-') - 1) ELSE stream_id END)";

/// One event as a fold sees it, owned, to cross from a blocking thread.
struct FoldRow {
    version: Version,
    event_type: String,
    payload: String,
    schema_version: Option<u32>,
}

impl From<EventView<'_>> for FoldRow {
    fn from(view: EventView<'_>) -> Self {
        FoldRow {
            version: view.version,
            event_type: view.event_type.to_owned(),
            payload: view.payload.to_owned(),
            schema_version: view.schema_version,
        }
    }
}

impl FoldRow {
    fn view(&self) -> EventView<'_> {
        EventView {
            version: self.version,
            event_type: &self.event_type,
            payload: &self.payload,
            schema_version: self.schema_version,
        }
    }
}

/// Up to `limit` events of `stream` from version `from` on, each shown to `visit`
/// borrowed from SQLite's row. Returns how many there were and the last one's version.
pub(super) fn visit_rows(
    conn: &rusqlite::Connection,
    stream: &str,
    from: Version,
    limit: usize,
    visit: &mut Visitor<'_>,
) -> Result<(usize, Version)> {
    let mut statement = conn.prepare_cached(sql::FOLD_STREAM).map_err(Error::from)?;
    let mut rows = statement
        .query(rusqlite::params![stream, clamp(from), clamp(limit)])
        .map_err(Error::from)?;
    let (mut seen, mut last) = (0, from);
    while let Some(row) = rows.next().map_err(Error::from)? {
        let text = |i| {
            row.get_ref(i)
                .and_then(|v| v.as_str().map_err(Into::into))
                .map_err(Error::from)
        };
        last = Version(row.get::<_, i64>(0).map_err(Error::from)? as u64);
        visit(EventView {
            version: last,
            event_type: text(1)?,
            payload: text(2)?,
            schema_version: crate::record::schema_version_in(text(3)?)?,
        })?;
        seen += 1;
    }
    Ok((seen, last))
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
    let mut statement = conn.prepare_cached(sql).map_err(Error::from)?;
    let mut rows = statement.query(params).map_err(Error::from)?;
    let mut records = Vec::with_capacity(reserve);
    while let Some(row) = rows.next().map_err(Error::from)? {
        records.push(record(row)?);
    }
    Ok(records)
}

fn record(row: &rusqlite::Row<'_>) -> Result<RecordedEvent> {
    let get_i64 = |i| row.get::<_, i64>(i).map_err(Error::from);
    let text = |i| row.get::<_, String>(i).map_err(Error::from);
    let id = row.get_ref(4).map_err(Error::from)?;
    let event_id = match id {
        rusqlite::types::ValueRef::Blob(bytes) => uuid::Uuid::from_slice(bytes).ok(),
        rusqlite::types::ValueRef::Text(text) => std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()),
        _ => None,
    }
    .ok_or(Error::from(rusqlite::Error::InvalidColumnType(
        4,
        "event_id".into(),
        id.data_type(),
    )))?;
    Ok(RecordedEvent {
        partition: Partition(get_i64(0)? as u32),
        offset: Offset(get_i64(1)? as u64),
        stream: StreamId::trusted(text(2)?),
        version: Version(get_i64(3)? as u64),
        event_id,
        event_type: text(5)?,
        payload: RawValue::from_string(text(6)?).map_err(Error::InvalidJson)?,
        metadata: serde_json::from_str(&text(7)?).map_err(Error::InvalidJson)?,
        recorded_at: chrono::DateTime::from_timestamp_micros(get_i64(8)?).unwrap_or_default(),
        last_in_append: get_i64(9)? != 0,
        redacted: get_i64(10)? != 0,
    })
}
