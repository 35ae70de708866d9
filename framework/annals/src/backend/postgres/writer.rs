//! PostgreSQL writers: each takes every append waiting (up to a bound) and sends the
//! batch to the batch function in one round trip, one transaction, one WAL flush.
//!
//! Each writer owns a fixed share of the partitions (`partition % writers`), so the
//! writers of one process never wait on each other's partition locks and their
//! commits overlap in PostgreSQL's WAL flushes. The function's per-partition locks keep
//! offsets gapless and in commit order across processes. A writer keeps one
//! [`Session`] for its calls, and lends it to an appender that finds it free while
//! appends come one at a time ([`append_now`]).

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::postgres::PgPool;
use sqlx::Row;
use uuid::Uuid;

use super::notify::Notifier;
use super::session::Session;
use crate::backend::batch::{self, Batching, Pending, Singles, TurnWaitsWatch};
use crate::backend::{PreparedAppend, Wakeups};
use crate::error::{Error, Result};
use crate::log::AppendOutcome;
use crate::position::{ExpectedVersion, Offset, Partition, Version};
use crate::stream::StreamId;

/// Most appends in one call.
const MAX_BATCH_APPENDS: usize = 512;
/// Most events in one call.
const MAX_BATCH_EVENTS: usize = 8192;

/// What every write of one store needs: its writers', its appenders' that commit on
/// their own tasks, and its follower's.
pub(super) struct Shared {
    /// The store's advisory-lock space (first key of `pg_advisory_xact_lock`).
    pub(super) lock_space: i32,
    pub(super) wakeups: Arc<Wakeups>,
    pub(super) notifier: Arc<Notifier>,
}

/// What a writer shares with the appenders of its partitions: its session, which an
/// appender borrows to commit on its own task while appends come one at a time (see
/// [`append_now`]), and how many of its batches in a row held a single append.
pub(super) struct Slot {
    session: tokio::sync::Mutex<Session>,
    singles: Singles,
}

impl Slot {
    pub(super) fn new(pool: PgPool) -> Arc<Self> {
        Arc::new(Slot {
            session: tokio::sync::Mutex::new(Session::new(pool)),
            singles: Singles::new(),
        })
    }

    /// Whether appends have come one at a time, so that handing the next to the
    /// writer would gather nothing.
    pub(super) fn lone(&self) -> bool {
        self.singles.lone()
    }
}

/// Writes what comes on `queue` until the store closes it, then closes the session.
pub(super) async fn run(shared: Arc<Shared>, slot: Arc<Slot>, queue: flume::Receiver<Pending>, waits: TurnWaitsWatch) {
    let mut batching = Batching::new(MAX_BATCH_APPENDS, MAX_BATCH_EVENTS, waits);
    while let Some(batch) = batching.next(&queue).await {
        slot.singles.batch(batch.len());
        let mut session = slot.session.lock().await;
        // Checked once the session is ours, just before the call is sent.
        let batch: Vec<_> = batch.into_iter().filter(|pending| !pending.abandoned()).collect();
        if batch.is_empty() {
            continue;
        }
        let (appends, replies) = batch::split(batch);
        let results = match appends.as_slice() {
            [append] => vec![append_one(&mut session, shared.lock_space, append).await],
            _ => match append_batch(&mut session, shared.lock_space, &appends).await {
                Ok(results) => results,
                Err(error) => {
                    tracing::debug!(%error, appends = appends.len(), "batch failed; retrying appends one by one");
                    let mut results = Vec::with_capacity(appends.len());
                    for append in &appends {
                        results.push(append_one(&mut session, shared.lock_space, append).await);
                    }
                    results
                }
            },
        };
        drop(session);
        publish(&shared, &results);
        batching.answer(&queue, &appends, replies, results, &shared.wakeups);
    }
    slot.session.lock().await.close().await;
}

/// Commits `append` on the calling task with the writer's session, if the session is
/// free: a lone append then costs no hand-off to the writer task and back. Gives the
/// append back when the session is busy (the writer, or another appender, is
/// committing), and from then on sends appends to the writer until it has seen
/// single ones again (see [`Singles`]).
pub(super) async fn append_now(
    shared: &Shared,
    slot: &Slot,
    append: PreparedAppend,
) -> std::result::Result<Result<AppendOutcome>, PreparedAppend> {
    let Ok(session) = slot.session.try_lock() else {
        slot.singles.contended();
        return Err(append);
    };
    let mut lent = Lent { session, done: false };
    let result = append_one(&mut lent.session, shared.lock_space, &append).await;
    lent.done = true;
    drop(lent);
    let results = std::slice::from_ref(&result);
    publish(shared, results);
    batch::committed(results, &shared.wakeups);
    Ok(result)
}

/// The writer's session, lent to an appender. An appender dropped while its call runs
/// (a cancelled request) leaves the connection in the middle of the exchange, so the
/// session gives it back to the pool, which drains and checks it, and takes another.
struct Lent<'a> {
    session: tokio::sync::MutexGuard<'a, Session>,
    done: bool,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.session.discard();
        }
    }
}

/// Other processes learn of the new offsets through NOTIFY, sent off this path.
fn publish(shared: &Shared, results: &[Result<AppendOutcome>]) {
    for outcome in results.iter().flatten().filter(|outcome| !outcome.duplicate) {
        shared.notifier.publish(outcome.partition, outcome.last_offset + 1);
    }
}

/// One append alone, in a call of its own.
async fn append_one(session: &mut Session, lock_space: i32, append: &PreparedAppend) -> Result<AppendOutcome> {
    match append_batch(session, lock_space, std::slice::from_ref(append)).await {
        Ok(mut single) => single.remove(0),
        Err(error) => retry_alone(session, lock_space, append, error).await,
    }
}

/// A lone append that hit a unique violation raced with another process committing
/// the same command id or event id on another partition. That commit is visible now,
/// so one more call answers with the typed outcome (duplicate, conflict).
async fn retry_alone(
    session: &mut Session,
    lock_space: i32,
    append: &PreparedAppend,
    error: Error,
) -> Result<AppendOutcome> {
    let unique_violation = error
        .driver::<sqlx::Error>()
        .and_then(sqlx::Error::as_database_error)
        .is_some_and(|db| db.is_unique_violation());
    if !unique_violation {
        return Err(error);
    }
    append_batch(session, lock_space, std::slice::from_ref(append))
        .await
        .and_then(|mut single| single.remove(0))
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

/// Whether no append of `appends` can change another's outcome except by taking
/// offsets of its partition: their streams and command ids are distinct, and no event
/// id was chosen by the client (which might clash with one of another append).
fn independent(appends: &[PreparedAppend]) -> bool {
    let mut streams = HashSet::with_capacity(appends.len());
    let mut commands = HashSet::with_capacity(appends.len());
    appends.iter().all(|append| {
        streams.insert(append.stream.as_str())
            && append.command_id.is_none_or(|id| commands.insert(id))
            && append.events.iter().all(|event| !event.client_id)
    })
}

/// One call of `annals_append`; of `annals_append_one` for a batch of one append, or
/// of `annals_append_set` for a batch of appends that do not depend on each other
/// (the same decisions in fewer, simpler statements). The outer error means the
/// transaction rolled back.
async fn append_batch(
    session: &mut Session,
    lock_space: i32,
    appends: &[PreparedAppend],
) -> Result<Vec<Result<AppendOutcome>>> {
    let events = appends.iter().map(|a| a.events.len()).sum();
    let mut e_id = Vec::with_capacity(events);
    let mut e_type = Vec::with_capacity(events);
    let mut e_payload = Vec::with_capacity(events);
    let mut e_metadata = Vec::with_capacity(events);
    let mut e_schema = Vec::with_capacity(events);
    for event in appends.iter().flat_map(|append| &append.events) {
        e_id.push(event.event_id);
        e_type.push(event.event_type.as_str());
        e_payload.push(event.payload.get());
        e_metadata.push(event.metadata.as_str());
        e_schema.push(event.schema_version.map(i64::from));
    }
    let batch = |statement: &'static str| {
        sqlx::query(statement)
            .bind(lock_space)
            .bind(appends.iter().map(|a| a.stream.as_str()).collect::<Vec<_>>())
            .bind(appends.iter().map(|a| a.partition.0 as i32).collect::<Vec<_>>())
            .bind(appends.iter().map(|a| encode_expected(a.expected)).collect::<Vec<_>>())
            .bind(appends.iter().map(|a| a.command_id).collect::<Vec<_>>())
            .bind(appends.iter().map(|a| a.events.len() as i32).collect::<Vec<_>>())
            .bind(&e_id)
    };
    // Which event ids the client chose, for the functions that check them
    // (`annals_append_set` is only called when there are none).
    let e_check = || {
        appends
            .iter()
            .flat_map(|append| &append.events)
            .map(|event| event.client_id)
            .collect::<Vec<_>>()
    };
    let query = match appends {
        [append] => sqlx::query(include_str!("sql/append_one.sql"))
            .bind(lock_space)
            .bind(append.stream.as_str())
            .bind(append.partition.0 as i32)
            .bind(encode_expected(append.expected))
            .bind(append.command_id)
            .bind(&e_id)
            .bind(e_check()),
        _ if independent(appends) => batch(include_str!("sql/append_set.sql")),
        _ => batch(include_str!("sql/append.sql")).bind(e_check()),
    };
    let rows = query
        .bind(&e_type)
        .bind(&e_payload)
        .bind(&e_metadata)
        .bind(&e_schema)
        .fetch_all(session.conn().await?)
        .await
        .inspect_err(|_| session.discard())?;

    appends
        .iter()
        .zip(rows)
        .map(|(append, row)| {
            let position = |i| row.try_get::<Option<i64>, _>(i).map(|v| v.unwrap_or(0) as u64);
            let outcome = |duplicate| -> Result<AppendOutcome> {
                Ok(AppendOutcome {
                    partition: append.partition as Partition,
                    first_offset: Offset(position(1)?),
                    last_offset: Offset(position(2)?),
                    first_version: Version(position(3)?),
                    last_version: Version(position(4)?),
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
                    actual: Version(position(5)?),
                }),
                3 => Err(Error::CommandIdConflict {
                    command_id: append.command_id.unwrap_or_default(),
                    stream: append.stream.clone(),
                    existing_stream: StreamId::trusted(other()?),
                }),
                5 => Err(Error::StreamDeleted {
                    stream: append.stream.clone(),
                }),
                _ => Err(Error::DuplicateEventId {
                    event_id: other()?.parse().unwrap_or(Uuid::nil()),
                }),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::PreparedEvent;

    fn append(stream: &str, command_id: Option<Uuid>, client_id: bool) -> PreparedAppend {
        PreparedAppend {
            stream: StreamId::trusted(stream.to_owned()),
            partition: Partition(3),
            expected: ExpectedVersion::Any,
            command_id,
            events: vec![PreparedEvent {
                event_id: Uuid::now_v7(),
                client_id,
                event_type: "Opened".to_owned(),
                payload: serde_json::value::RawValue::from_string("{}".to_owned()).expect("json"),
                metadata: "{}".to_owned(),
                schema_version: None,
            }],
            waiters: None,
        }
    }

    /// Only batches whose appends cannot see each other's writes go to
    /// `annals_append_set`: one stream twice, one command id twice or an event id
    /// the client chose sends the batch to `annals_append`.
    #[test]
    fn only_independent_batches_are_decided_as_a_set() {
        let command = Some(Uuid::now_v7());
        let apart = [
            append("a-1", command, false),
            append("a-2", None, false),
            append("a-3", None, false),
        ];
        assert!(independent(&apart));
        let other = Some(Uuid::now_v7());
        assert!(independent(&[
            append("a-1", command, false),
            append("a-2", other, false)
        ]));
        assert!(!independent(&[append("a-1", None, false), append("a-1", None, false)]));
        assert!(!independent(&[
            append("a-1", command, false),
            append("a-2", command, false)
        ]));
        assert!(!independent(&[append("a-1", None, false), append("a-2", None, true)]));
    }
}
