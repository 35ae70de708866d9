//! The single SQLite writer and its group commit.
//!
//! Appends queue up while the writer is busy; the writer takes everything waiting (up
//! to a bound), opens one `BEGIN IMMEDIATE` transaction, looks up what the batch needs
//! in a handful of statements, decides every append on its own ([`Admission`]), writes
//! the admitted ones with multi-row INSERTs and commits once: one disk sync for the
//! whole batch. An append that fails its checks fails alone; if the engine itself fails
//! mid-batch, the batch is rolled back and each append is retried alone, so only the
//! one that caused it gets the error.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{Sqlite, SqliteArguments};
use sqlx::query::Query;
use sqlx::{Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::backend::admit::{Admission, Admitted, CommandRecord, LogView};
use crate::backend::{now_micros, PreparedAppend, PreparedEvent, Wakeups};
use crate::error::Result;
use crate::position::{Offset, Partition, Version};
use crate::store::AppendOutcome;
use crate::stream::StreamId;

/// Appends that may wait for the writer before senders are slowed down.
pub(super) const QUEUE_DEPTH: usize = 4096;
/// Most appends in one transaction.
const MAX_BATCH_APPENDS: usize = 1024;
/// Most events in one transaction (bounds the writer's memory).
const MAX_BATCH_EVENTS: usize = 8192;

pub(super) struct Pending {
    pub(super) append: PreparedAppend,
    pub(super) reply: oneshot::Sender<Result<AppendOutcome>>,
}

pub(super) async fn run(mut conn: SqliteConnection, mut queue: mpsc::Receiver<Pending>, wakeups: Arc<Wakeups>) {
    let mut last_stamp = DateTime::<Utc>::MIN_UTC;
    while let Some(first) = queue.recv().await {
        let mut events = first.append.events.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_APPENDS && events < MAX_BATCH_EVENTS {
            match queue.try_recv() {
                Ok(next) => {
                    events += next.append.events.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let (appends, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.append, p.reply)).unzip();

        // Never let recorded_at go back, whatever the wall clock does.
        last_stamp = last_stamp.max(now_micros());
        let results = match commit_batch(&mut conn, &appends, last_stamp).await {
            Ok(results) => results,
            Err(error) if appends.len() == 1 => vec![Err(error)],
            Err(error) => {
                tracing::warn!(%error, appends = appends.len(), "group commit failed; retrying appends one by one");
                let mut results = Vec::with_capacity(appends.len());
                for append in &appends {
                    let single = commit_batch(&mut conn, std::slice::from_ref(append), last_stamp).await;
                    results.push(single.and_then(|mut result| result.remove(0)));
                }
                results
            }
        };
        wakeups.publish_outcomes(results.iter().filter_map(|result| result.as_ref().ok()));
        for (reply, result) in replies.into_iter().zip(results) {
            // The caller may have gone away; its append is committed either way.
            let _ = reply.send(result);
        }
    }
}

/// Writes one batch in one transaction. The outer error means nothing was written.
async fn commit_batch(
    conn: &mut SqliteConnection,
    appends: &[PreparedAppend],
    stamp: DateTime<Utc>,
) -> Result<Vec<Result<AppendOutcome>>> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    match write_batch(conn, appends, stamp).await {
        Ok(results) => {
            sqlx::query("COMMIT").execute(&mut *conn).await?;
            Ok(results)
        }
        Err(error) => {
            // If even the rollback fails the connection is gone, and so is the transaction.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(error)
        }
    }
}

async fn write_batch(
    conn: &mut SqliteConnection,
    appends: &[PreparedAppend],
    stamp: DateTime<Utc>,
) -> Result<Vec<Result<AppendOutcome>>> {
    let view = BatchView::load(conn, appends).await?;
    let mut admission = Admission::new(&view);
    let mut rows = Vec::new();
    let mut commands = Vec::new();
    let results: Vec<Result<AppendOutcome>> = appends
        .iter()
        .map(|append| match admission.admit(append)? {
            Admitted::Duplicate(outcome) => Ok(outcome),
            Admitted::Write(outcome) => {
                rows.extend(append.events.iter().enumerate().map(|(i, event)| EventRow {
                    append,
                    event,
                    offset: outcome.first_offset + i as u64,
                    version: outcome.first_version + i as u64,
                }));
                if let Some(command_id) = append.command_id {
                    commands.push((command_id, append, outcome));
                }
                Ok(outcome)
            }
        })
        .collect();

    let stamp = stamp.timestamp_micros();
    insert_rows(
        conn,
        r#"INSERT INTO annals_events (partition, "offset", stream_id, version, event_id, event_type, payload, metadata, recorded_at) VALUES "#,
        "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
        &rows,
        |query, row| {
            query
                .bind(i64::from(row.append.partition))
                .bind(row.offset as i64)
                .bind(row.append.stream.as_str())
                .bind(row.version as i64)
                .bind(row.event.event_id)
                .bind(row.event.event_type.as_str())
                .bind(row.event.payload.get())
                .bind(row.event.metadata.as_str())
                .bind(stamp)
        },
    )
    .await?;
    insert_rows(
        conn,
        "INSERT INTO annals_command_ids (command_id, stream_id, partition, first_offset, last_offset, first_version, last_version) VALUES ",
        "(?, ?, ?, ?, ?, ?, ?)",
        &commands,
        |query, (command_id, append, outcome)| {
            query
                .bind(*command_id)
                .bind(append.stream.as_str())
                .bind(i64::from(outcome.partition))
                .bind(outcome.first_offset as i64)
                .bind(outcome.last_offset as i64)
                .bind(outcome.first_version as i64)
                .bind(outcome.last_version as i64)
        },
    )
    .await?;
    Ok(results)
}

struct EventRow<'a> {
    append: &'a PreparedAppend,
    event: &'a PreparedEvent,
    offset: Offset,
    version: Version,
}

type SqliteQuery<'q> = Query<'q, Sqlite, SqliteArguments<'q>>;

/// Inserts `rows` with multi-row `VALUES` statements. Chunks are 1–16 rows or a power
/// of two up to 256, so only 20 distinct statements are ever prepared and cached.
async fn insert_rows<'r, T>(
    conn: &mut SqliteConnection,
    head: &str,
    tuple: &str,
    rows: &'r [T],
    bind: impl for<'q> Fn(SqliteQuery<'q>, &'q T) -> SqliteQuery<'q>,
) -> Result<()> {
    let mut rest = rows;
    while !rest.is_empty() {
        let size = match rest.len() {
            n @ 1..=16 => n,
            n => (n.min(256) + 1).next_power_of_two() / 2,
        };
        let (chunk, tail) = rest.split_at(size);
        let sql = format!("{head}{}", vec![tuple; size].join(", "));
        let mut query = sqlx::query(&sql);
        for row in chunk {
            query = bind(query, row);
        }
        query.execute(&mut *conn).await?;
        rest = tail;
    }
    Ok(())
}

/// What the log holds for the keys one batch touches, read inside its transaction.
#[derive(Default)]
struct BatchView {
    versions: HashMap<StreamId, Version>,
    next_offsets: HashMap<Partition, Offset>,
    commands: HashMap<Uuid, CommandRecord>,
    held_event_ids: HashSet<Uuid>,
}

impl BatchView {
    async fn load(conn: &mut SqliteConnection, appends: &[PreparedAppend]) -> Result<Self> {
        let mut view = BatchView::default();
        // Each lookup is one statement with a JSON array of keys, whatever the batch
        // size; the correlated max() subqueries are single index seeks.
        let streams: BTreeSet<&str> = appends.iter().map(|a| a.stream.as_str()).collect();
        let rows = sqlx::query(
            "SELECT s.value, (SELECT max(e.version) FROM annals_events e WHERE e.stream_id = s.value) \
             FROM json_each(?) s",
        )
        .bind(json_array(streams))
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let version: Option<i64> = row.try_get(1)?;
            view.versions
                .insert(StreamId::trusted(row.try_get(0)?), version.unwrap_or(0) as Version);
        }

        let partitions: BTreeSet<Partition> = appends.iter().map(|a| a.partition).collect();
        let rows = sqlx::query(
            r#"SELECT p.value, (SELECT max(e."offset") + 1 FROM annals_events e WHERE e.partition = p.value)
               FROM json_each(?) p"#,
        )
        .bind(json_array(partitions))
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let next: Option<i64> = row.try_get(1)?;
            view.next_offsets
                .insert(row.try_get::<i64, _>(0)? as Partition, next.unwrap_or(0) as Offset);
        }

        let command_ids: Vec<String> = appends.iter().filter_map(|a| a.command_id).map(hex).collect();
        if !command_ids.is_empty() {
            let rows = sqlx::query(
                "SELECT command_id, stream_id, partition, first_offset, last_offset, first_version, last_version \
                 FROM annals_command_ids WHERE command_id IN (SELECT unhex(value) FROM json_each(?))",
            )
            .bind(json_array(command_ids))
            .fetch_all(&mut *conn)
            .await?;
            for row in rows {
                let outcome = AppendOutcome {
                    partition: row.try_get::<i64, _>(2)? as Partition,
                    first_offset: row.try_get::<i64, _>(3)? as Offset,
                    last_offset: row.try_get::<i64, _>(4)? as Offset,
                    first_version: row.try_get::<i64, _>(5)? as Version,
                    last_version: row.try_get::<i64, _>(6)? as Version,
                    duplicate: false,
                };
                let stream = StreamId::trusted(row.try_get(1)?);
                view.commands.insert(row.try_get(0)?, CommandRecord { stream, outcome });
            }
        }

        let client_ids: Vec<String> = appends
            .iter()
            .flat_map(|a| &a.events)
            .filter(|e| e.client_id)
            .map(|e| hex(e.event_id))
            .collect();
        if !client_ids.is_empty() {
            let held: Vec<Uuid> = sqlx::query_scalar(
                "SELECT event_id FROM annals_events WHERE event_id IN (SELECT unhex(value) FROM json_each(?))",
            )
            .bind(json_array(client_ids))
            .fetch_all(&mut *conn)
            .await?;
            view.held_event_ids.extend(held);
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

fn hex(id: Uuid) -> String {
    id.simple().to_string()
}

fn json_array<T: serde::Serialize>(keys: impl IntoIterator<Item = T>) -> String {
    let keys: Vec<T> = keys.into_iter().collect();
    serde_json::to_string(&keys).unwrap_or_else(|_| "[]".to_owned())
}

