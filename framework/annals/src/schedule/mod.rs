//! Deadlines and scheduled commands: timers kept in the log, fired once by a consumer
//! group.
//!
//! A timer is a stream of the reserved category [`CATEGORY`], named after the timer's
//! command id: [`Scheduler::schedule`] appends `TimerScheduled` (the due time, a target
//! and a JSON payload), and the timer ends with one `TimerFired` or `TimerCancelled`.
//! Both are appended expecting the stream at version 1, so whichever comes first wins
//! and the other is refused: a cancel that comes first always wins, and a timer fires
//! at most once. Because timers are records, they replicate with the log and survive
//! restarts and failover; the engine indexes the pending ones by partition and due time
//! as it writes them.
//!
//! A [`TimerWorker`] is a member of a consumer group over the timer category. For each
//! partition it owns, it appends `TimerFired` to the timers that are due by its
//! [`Clock`], and it hands each `TimerFired` record it consumes to a [`TimerHandler`],
//! at least once, with the group's retries and dead letters. The handler runs the
//! timer's command under the timer's command id ([`Timer::context`]), so the store
//! applies it exactly once however often it is delivered (I5).
//!
//! ```
//! use annals::aggregate::CommandContext;
//! use annals::schedule::{Cancel, Scheduler, TimerStatus};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> annals::Result<()> {
//! let store = annals::Store::open("memory:").await?;
//! let scheduler = Scheduler::new(&store);
//! let expire = CommandContext::new();
//! let due = chrono::Utc::now() + chrono::Duration::minutes(15);
//! scheduler
//!     .schedule(due, &expire, "order.expire", &serde_json::json!({"order": "o-1"}))
//!     .await?;
//! assert!(matches!(scheduler.status(expire.command_id).await?, Some(TimerStatus::Pending { .. })));
//! assert_eq!(scheduler.cancel(expire.command_id).await?, Cancel::Cancelled);
//! # Ok(()) }
//! ```

mod clock;
mod worker;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::aggregate::CommandContext;
use crate::error::{Error, Result};
use crate::position::{ExpectedVersion, Position, Version};
use crate::record::{NewEvent, RecordedEvent};
use crate::store::{AppendRequest, Store};
use crate::stream::StreamId;

pub use clock::{Clock, ManualClock, SystemClock};
pub use worker::{Timer, TimerHandler, TimerOptions, TimerWorker};

/// The category of timer streams, reserved for them.
pub const CATEGORY: &str = "annals.timer";
/// The event type of a timer's first record.
pub const TIMER_SCHEDULED: &str = "TimerScheduled";
/// The event type of the record that fires a timer.
pub const TIMER_FIRED: &str = "TimerFired";
/// The event type of the record that cancels a timer.
pub const TIMER_CANCELLED: &str = "TimerCancelled";
/// The longest target, in bytes.
pub const MAX_TARGET_LEN: usize = 200;

/// The stream of the timer with command id `command_id`.
pub fn timer_stream(command_id: Uuid) -> StreamId {
    StreamId::new(format!("{CATEGORY}-{command_id}")).expect("a uuid makes a valid stream id")
}

/// What `TimerScheduled` holds. `due_at_us` is what the engines index.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ScheduledData {
    command_id: Uuid,
    target: String,
    due_at: DateTime<Utc>,
    due_at_us: i64,
    payload: Value,
}

/// What `TimerFired` and `TimerCancelled` hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EndedData {
    at: DateTime<Utc>,
}

/// The due time of `record` if it is a pending timer's `TimerScheduled`: what the SQL
/// engines' index holds, for the memory engine, which has none.
pub(crate) fn scheduled_due(record: &RecordedEvent) -> Option<i64> {
    #[derive(Deserialize)]
    struct Due {
        due_at_us: i64,
    }
    (record.event_type == TIMER_SCHEDULED && record.stream.category() == CATEGORY)
        .then(|| serde_json::from_str::<Due>(record.payload.get()).ok())
        .flatten()
        .map(|due| due.due_at_us)
}

/// A timer just scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    /// The timer's command id.
    pub command_id: Uuid,
    /// Where its `TimerScheduled` record is.
    pub position: Position,
    /// The timer was already scheduled with this command id: nothing changed, and its
    /// due time, target and payload are the first schedule's.
    pub duplicate: bool,
}

/// What [`Scheduler::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// The timer is cancelled (now, or by an earlier cancel): it will not fire.
    Cancelled,
    /// Too late: the timer has fired.
    AlreadyFired,
    /// No timer has this command id.
    Unknown,
}

/// Where a timer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerStatus {
    /// Waiting for its due time (or for a worker to fire it).
    Pending {
        /// When it is due.
        due_at: DateTime<Utc>,
        /// Its target.
        target: String,
    },
    /// Fired at this time; its command has been or will be handed to the handler.
    Fired {
        /// When `TimerFired` was written.
        at: DateTime<Utc>,
    },
    /// Cancelled at this time.
    Cancelled {
        /// When `TimerCancelled` was written.
        at: DateTime<Utc>,
    },
}

/// Schedules and cancels timers in a store.
#[derive(Debug, Clone)]
pub struct Scheduler {
    store: Store,
}

impl Scheduler {
    /// A scheduler writing to `store`.
    pub fn new(store: &Store) -> Self {
        Scheduler { store: store.clone() }
    }

    /// Schedules the command `context.command_id` for `at`: at that time a
    /// [`TimerWorker`] hands `target` and `payload` to its handler, which runs the
    /// command under that id. The timer's record carries the context's correlation,
    /// causation and trace, and the fired command continues them.
    ///
    /// Idempotent: scheduling a command id again changes nothing and answers
    /// [`Scheduled::duplicate`]. A time in the past fires as soon as a worker sees it.
    pub async fn schedule(
        &self,
        at: DateTime<Utc>,
        context: &CommandContext,
        target: &str,
        payload: &Value,
    ) -> Result<Scheduled> {
        if target.is_empty() {
            return Err(Error::InvalidTimer {
                reason: "the target is empty",
            });
        }
        if target.len() > MAX_TARGET_LEN {
            return Err(Error::InvalidTimer {
                reason: "the target is longer than 200 bytes",
            });
        }
        let command_id = context.command_id;
        let data = ScheduledData {
            command_id,
            target: target.to_owned(),
            due_at: at,
            due_at_us: at.timestamp_micros(),
            payload: payload.clone(),
        };
        let metadata = context.metadata();
        // The stream is named after the command id, so expecting no stream is what
        // makes scheduling idempotent; the timer's records carry no command id of their
        // own, which is left to the command the timer fires.
        let stream = timer_stream(command_id);
        let request = AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)
            .event(NewEvent::json(TIMER_SCHEDULED, &data)?.with_metadata(metadata));
        match self.store.append(request).await {
            Ok(outcome) => Ok(Scheduled {
                command_id,
                position: outcome.position(),
                duplicate: false,
            }),
            Err(Error::WrongExpectedVersion { .. }) => {
                let first = self.store.read_stream(&stream, Version(1), 1).await?;
                let first = first.first().ok_or(Error::InvalidTimer {
                    reason: "the timer's stream changed while it was scheduled",
                })?;
                Ok(Scheduled {
                    command_id,
                    position: crate::position::Position {
                        partition: first.partition,
                        offset: first.offset,
                    },
                    duplicate: true,
                })
            }
            Err(error) => Err(error),
        }
    }

    /// Cancels the timer `command_id` unless it has fired. A cancel that comes before
    /// the timer fires always wins: firing is refused once the timer is cancelled.
    pub async fn cancel(&self, command_id: Uuid) -> Result<Cancel> {
        let request = AppendRequest::new(timer_stream(command_id), ExpectedVersion::Exact(Version(1)))
            .event(NewEvent::json(TIMER_CANCELLED, &EndedData { at: Utc::now() })?);
        match self.store.append(request).await {
            Ok(_) => Ok(Cancel::Cancelled),
            Err(Error::WrongExpectedVersion { .. }) => Ok(match self.status(command_id).await? {
                Some(TimerStatus::Fired { .. }) => Cancel::AlreadyFired,
                Some(TimerStatus::Cancelled { .. }) => Cancel::Cancelled,
                Some(TimerStatus::Pending { .. }) | None => Cancel::Unknown,
            }),
            Err(error) => Err(error),
        }
    }

    /// Where the timer `command_id` stands; `None` if it was never scheduled.
    pub async fn status(&self, command_id: Uuid) -> Result<Option<TimerStatus>> {
        let records = self.store.read_stream(&timer_stream(command_id), Version(1), 2).await?;
        let Some(scheduled) = records.first() else {
            return Ok(None);
        };
        Ok(Some(match records.get(1) {
            Some(ended) if ended.event_type == TIMER_FIRED => TimerStatus::Fired { at: ended.recorded_at },
            Some(ended) => TimerStatus::Cancelled { at: ended.recorded_at },
            None => {
                let data: ScheduledData = scheduled.decode()?;
                TimerStatus::Pending {
                    due_at: data.due_at,
                    target: data.target,
                }
            }
        }))
    }

    /// The pending timers due by `until`, soonest first, at most `limit` per
    /// partition: their command ids and due times.
    pub async fn due(&self, until: DateTime<Utc>, limit: usize) -> Result<Vec<(Uuid, DateTime<Utc>)>> {
        let mut due = Vec::new();
        for partition in crate::position::Partition::all(self.store.partition_count()) {
            for (stream, at) in self
                .store
                .due_timers(partition, until.timestamp_micros(), limit)
                .await?
            {
                // A stream of the category not named after a command id was not written
                // by a scheduler: it is left out, rather than failing the list.
                match command_id_of(&stream) {
                    Ok(id) => due.push((id, micros(at))),
                    Err(_) => tracing::warn!(%stream, "a timer stream not named after a command id"),
                }
            }
        }
        due.sort_by_key(|(id, at)| (*at, *id));
        Ok(due)
    }
}

/// The command id a timer stream is named after.
fn command_id_of(stream: &StreamId) -> Result<Uuid> {
    Uuid::parse_str(stream.id()).map_err(|_| Error::InvalidTimer {
        reason: "a stream of the timer category is not named after a command id",
    })
}

fn micros(at: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at).unwrap_or(DateTime::<Utc>::MAX_UTC)
}
