//! The single SQLite writer and its group commit.
//!
//! The writer is a thread of its own with one connection on SQLite's C API (through
//! rusqlite), where a cached prepared statement costs microseconds. Appends queue up
//! while it is busy; it takes everything waiting (up to a bound), opens one
//! `BEGIN IMMEDIATE` transaction, looks up what the batch needs, decides every append
//! on its own ([`Admission`]), inserts the admitted ones and commits once: one disk
//! sync for the whole batch. An append that fails its checks fails alone; if the
//! engine itself fails mid-batch, the batch is rolled back and each append is retried
//! alone, so only the one that caused it gets the error.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use crate::backend::admit::{Admission, Admitted, CommandRecord, LogView};
use crate::backend::batch::{self, Batching, Pending};
use crate::backend::{now_micros, PreparedAppend, Wakeups};
use crate::error::{Error, Result};
use crate::position::{Offset, Partition, Version};
use crate::store::AppendOutcome;
use crate::stream::StreamId;

/// Most appends in one transaction.
const MAX_BATCH_APPENDS: usize = 1024;
/// Most events in one transaction (bounds the writer's memory).
const MAX_BATCH_EVENTS: usize = 8192;

/// Runs the writer until every sender of `queue` is gone.
pub(super) fn run(conn: Connection, queue: flume::Receiver<Pending>, wakeups: Arc<Wakeups>) {
    let mut batching = Batching::new(MAX_BATCH_APPENDS, MAX_BATCH_EVENTS);
    while let Some(batch) = batching.next_blocking(&queue) {
        let (appends, replies) = batch::split(batch);

        let results = match commit_batch(&conn, &appends) {
            Ok(results) => results,
            Err(error) if appends.len() == 1 => vec![Err(error)],
            Err(error) => {
                tracing::warn!(%error, appends = appends.len(), "group commit failed; retrying appends one by one");
                appends
                    .iter()
                    .map(|append| commit_batch(&conn, std::slice::from_ref(append)).and_then(|mut r| r.remove(0)))
                    .collect()
            }
        };
        batch::answer(replies, results, &wakeups);
    }
}

/// Writes one batch in one transaction. The outer error means nothing was written.
fn commit_batch(conn: &Connection, appends: &[PreparedAppend]) -> Result<Vec<Result<AppendOutcome>>> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(engine)?;
    match write_batch(conn, appends).and_then(|results| conn.execute_batch("COMMIT").map_err(engine).map(|()| results))
    {
        Ok(results) => Ok(results),
        Err(error) => {
            // If even the rollback fails the connection is gone, and so is the transaction.
            let _ = conn.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}

fn write_batch(conn: &Connection, appends: &[PreparedAppend]) -> Result<Vec<Result<AppendOutcome>>> {
    let view = BatchView::load(conn, appends)?;
    let stamp = view.latest_stamp.max(now_micros().timestamp_micros());
    let mut admission = Admission::new(&view);
    let mut insert_event = conn
        .prepare_cached(
            r#"INSERT INTO annals_events (partition, "offset", stream_id, version, event_id, event_type, payload, metadata, recorded_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"#,
        )
        .map_err(engine)?;
    let mut insert_command = conn
        .prepare_cached(
            "INSERT INTO annals_command_ids (command_id, stream_id, partition, first_offset, last_offset, first_version, last_version)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .map_err(engine)?;

    let mut results = Vec::with_capacity(appends.len());
    for append in appends {
        let outcome = match admission.admit(append) {
            Ok(Admitted::Write(outcome)) => outcome,
            Ok(Admitted::Duplicate(outcome)) => {
                results.push(Ok(outcome));
                continue;
            }
            Err(error) => {
                results.push(Err(error));
                continue;
            }
        };
        for (i, event) in append.events.iter().enumerate() {
            insert_event
                .execute(params![
                    append.partition,
                    (outcome.first_offset + i as u64) as i64,
                    append.stream.as_str(),
                    (outcome.first_version + i as u64) as i64,
                    event.event_id.as_bytes().as_slice(),
                    event.event_type,
                    event.payload.get(),
                    event.metadata,
                    stamp,
                ])
                .map_err(engine)?;
        }
        if let Some(command_id) = append.command_id {
            insert_command
                .execute(params![
                    command_id.as_bytes().as_slice(),
                    append.stream.as_str(),
                    outcome.partition,
                    outcome.first_offset as i64,
                    outcome.last_offset as i64,
                    outcome.first_version as i64,
                    outcome.last_version as i64,
                ])
                .map_err(engine)?;
        }
        results.push(Ok(outcome));
    }
    Ok(results)
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
}

impl BatchView {
    fn load(conn: &Connection, appends: &[PreparedAppend]) -> Result<Self> {
        let mut view = BatchView::default();
        let mut version = conn
            .prepare_cached("SELECT max(version) FROM annals_events WHERE stream_id = ?")
            .map_err(engine)?;
        let mut last = conn
            .prepare_cached(
                r#"SELECT "offset", recorded_at FROM annals_events WHERE partition = ? ORDER BY "offset" DESC LIMIT 1"#,
            )
            .map_err(engine)?;
        let mut command = conn
            .prepare_cached(
                "SELECT stream_id, partition, first_offset, last_offset, first_version, last_version
                 FROM annals_command_ids WHERE command_id = ?",
            )
            .map_err(engine)?;
        let mut event = conn
            .prepare_cached("SELECT 1 FROM annals_events WHERE event_id = ?")
            .map_err(engine)?;

        for append in appends {
            if !view.versions.contains_key(&append.stream) {
                let current: Option<i64> = version
                    .query_row([append.stream.as_str()], |row| row.get(0))
                    .map_err(engine)?;
                view.versions
                    .insert(append.stream.clone(), current.unwrap_or(0) as Version);
            }
            if let Entry::Vacant(slot) = view.next_offsets.entry(append.partition) {
                let newest: Option<(i64, i64)> = last
                    .query_row([append.partition], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
                    .map_err(engine)?;
                let (next, stamp) = newest.map_or((0, 0), |(offset, stamp)| (offset + 1, stamp));
                slot.insert(next as Offset);
                view.latest_stamp = view.latest_stamp.max(stamp);
            }
            if let Some(command_id) = append.command_id {
                let known = command
                    .query_row([command_id.as_bytes().as_slice()], |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            AppendOutcome {
                                partition: row.get(1)?,
                                first_offset: row.get::<_, i64>(2)? as Offset,
                                last_offset: row.get::<_, i64>(3)? as Offset,
                                first_version: row.get::<_, i64>(4)? as Version,
                                last_version: row.get::<_, i64>(5)? as Version,
                                duplicate: false,
                            },
                        ))
                    })
                    .optional()
                    .map_err(engine)?;
                if let Some((stream, outcome)) = known {
                    let stream = StreamId::trusted(stream);
                    view.commands.insert(command_id, CommandRecord { stream, outcome });
                }
            }
            for client in append.events.iter().filter(|event| event.client_id) {
                if event.exists([client.event_id.as_bytes().as_slice()]).map_err(engine)? {
                    view.held_event_ids.insert(client.event_id);
                }
            }
        }
        Ok(view)
    }
}

impl LogView for BatchView {
    fn stream_version(&self, stream: &StreamId) -> Version {
        self.versions.get(stream).copied().unwrap_or(0)
    }
    fn next_offset(&self, partition: Partition) -> Offset {
        self.next_offsets.get(&partition).copied().unwrap_or(0)
    }
    fn command(&self, command_id: &Uuid) -> Option<CommandRecord> {
        self.commands.get(command_id).cloned()
    }
    fn holds_event(&self, event_id: &Uuid) -> bool {
        self.held_event_ids.contains(event_id)
    }
}

/// A failure of the SQLite engine itself.
fn engine(error: rusqlite::Error) -> Error {
    Error::Sqlite(error)
}
