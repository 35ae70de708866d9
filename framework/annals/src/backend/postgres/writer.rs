//! PostgreSQL writers: each takes every append waiting (up to a bound) and sends the
//! batch to `annals_append` in one round trip, one transaction, one WAL flush. Several
//! writers run at once; the function's per-partition locks keep offsets gapless and
//! in commit order whatever the number of writers and processes.

use std::sync::Arc;

use sqlx::postgres::PgPool;
use sqlx::Row;
use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

use super::notify::Notifier;
use crate::backend::{PreparedAppend, Wakeups};
use crate::error::{Error, Result};
use crate::position::{ExpectedVersion, Offset, Partition, Version};
use crate::store::AppendOutcome;
use crate::stream::StreamId;

/// Appends that may wait for a writer before senders are slowed down.
pub(super) const QUEUE_DEPTH: usize = 4096;
/// Most appends in one call.
const MAX_BATCH_APPENDS: usize = 512;
/// Most events in one call.
const MAX_BATCH_EVENTS: usize = 8192;

pub(super) struct Pending {
    pub(super) append: PreparedAppend,
    pub(super) reply: oneshot::Sender<Result<AppendOutcome>>,
}

pub(super) async fn run(
    pool: PgPool,
    queue: Arc<Mutex<mpsc::Receiver<Pending>>>,
    wakeups: Arc<Wakeups>,
    notifier: Arc<Notifier>,
) {
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else { return };
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
            batch
        };
        let (appends, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.append, p.reply)).unzip();
        let results = match append_batch(&pool, &appends).await {
            Ok(results) => results,
            Err(error) if appends.len() == 1 => vec![Err(error)],
            Err(error) => {
                // A race the function cannot see coming (the same command id or event id
                // committed by another process meanwhile) aborts the whole call. Alone,
                // each append gets its own answer.
                tracing::debug!(%error, appends = appends.len(), "batch failed; retrying appends one by one");
                let mut results = Vec::with_capacity(appends.len());
                for append in &appends {
                    let single = append_batch(&pool, std::slice::from_ref(append)).await;
                    results.push(single.and_then(|mut result| result.remove(0)));
                }
                results
            }
        };
        let written: Vec<&AppendOutcome> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        wakeups.publish_outcomes(written.iter().copied());
        for outcome in written.iter().filter(|outcome| !outcome.duplicate) {
            notifier.publish(outcome.partition, outcome.last_offset + 1);
        }
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
}

/// How `annals_append` encodes an expected version.
fn encode_expected(expected: ExpectedVersion) -> i64 {
    match expected {
        ExpectedVersion::Any => -1,
        ExpectedVersion::StreamExists => -2,
        ExpectedVersion::NoStream => 0,
        ExpectedVersion::Exact(version) => i64::try_from(version).unwrap_or(i64::MAX),
    }
}

/// One call of `annals_append`. The outer error means the transaction rolled back.
async fn append_batch(pool: &PgPool, appends: &[PreparedAppend]) -> Result<Vec<Result<AppendOutcome>>> {
    let events = appends.iter().map(|a| a.events.len()).sum();
    let mut a_stream = Vec::with_capacity(appends.len());
    let mut a_partition = Vec::with_capacity(appends.len());
    let mut a_expected = Vec::with_capacity(appends.len());
    let mut a_command = Vec::with_capacity(appends.len());
    let mut a_count = Vec::with_capacity(appends.len());
    let mut e_id = Vec::with_capacity(events);
    let mut e_check = Vec::with_capacity(events);
    let mut e_type = Vec::with_capacity(events);
    let mut e_payload = Vec::with_capacity(events);
    let mut e_metadata = Vec::with_capacity(events);
    for append in appends {
        a_stream.push(append.stream.as_str());
        a_partition.push(append.partition as i32);
        a_expected.push(encode_expected(append.expected));
        a_command.push(append.command_id);
        a_count.push(append.events.len() as i32);
        for event in &append.events {
            e_id.push(event.event_id);
            e_check.push(event.client_id);
            e_type.push(event.event_type.as_str());
            e_payload.push(event.payload.get());
            e_metadata.push(event.metadata.as_str());
        }
    }
    let rows = sqlx::query(
        "SELECT o_status, o_first_offset, o_last_offset, o_first_version, o_last_version, o_actual, o_other \
         FROM annals_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&a_stream)
    .bind(&a_partition)
    .bind(&a_expected)
    .bind(&a_command)
    .bind(&a_count)
    .bind(&e_id)
    .bind(&e_check)
    .bind(&e_type)
    .bind(&e_payload)
    .bind(&e_metadata)
    .fetch_all(pool)
    .await?;

    appends
        .iter()
        .zip(rows)
        .map(|(append, row)| {
            let position = |i| row.try_get::<Option<i64>, _>(i).map(|v| v.unwrap_or(0) as u64);
            let outcome = |duplicate| -> Result<AppendOutcome> {
                Ok(AppendOutcome {
                    partition: append.partition as Partition,
                    first_offset: position(1)? as Offset,
                    last_offset: position(2)? as Offset,
                    first_version: position(3)? as Version,
                    last_version: position(4)? as Version,
                    duplicate,
                })
            };
            let other = || row.try_get::<Option<String>, _>(6).map(Option::unwrap_or_default);
            Ok(match row.try_get::<i16, _>(0)? {
                0 => outcome(false),
                1 => outcome(true),
                2 => Err(Error::WrongExpectedVersion {
                    stream: append.stream.clone(),
                    expected: append.expected,
                    actual: position(5)?,
                }),
                3 => Err(Error::CommandIdConflict {
                    command_id: append.command_id.unwrap_or_default(),
                    stream: append.stream.clone(),
                    existing_stream: StreamId::trusted(other()?),
                }),
                _ => Err(Error::DuplicateEventId {
                    event_id: other()?.parse().unwrap_or(Uuid::nil()),
                }),
            })
        })
        .collect()
}
