//! The member of a timer group: fires the due timers of the partitions it owns, and
//! hands each fired timer to the handler.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{micros, Clock, EndedData, ScheduledData, SystemClock, CATEGORY, TIMER_FIRED, TIMER_SCHEDULED};
use crate::aggregate::CommandContext;
use crate::error::{Error, Result};
use crate::group::{Consumer, Filter, GroupMember, GroupOptions, Processed};
use crate::position::{ExpectedVersion, Partition, Version};
use crate::record::{NewEvent, RecordedEvent};
use crate::store::{AppendRequest, Store};
use crate::stream::StreamId;
use crate::trace::TraceParent;

/// A fired timer, as its handler gets it.
#[derive(Debug, Clone)]
pub struct Timer {
    /// The command id it was scheduled under: run its command under this id.
    pub command_id: Uuid,
    /// What the scheduler named as the target.
    pub target: String,
    /// The payload it was scheduled with.
    pub payload: Value,
    /// When it was due.
    pub due_at: DateTime<Utc>,
    /// When it fired.
    pub fired_at: DateTime<Utc>,
    correlation_id: Uuid,
    fired_event: Uuid,
    traceparent: Option<TraceParent>,
}

impl Timer {
    /// The context to run the timer's command in: its command id is the timer's, so
    /// however often the timer is delivered, the store applies the command once; it
    /// keeps the schedule's correlation and trace, and is caused by the `TimerFired`
    /// record.
    pub fn context(&self) -> CommandContext {
        CommandContext {
            command_id: self.command_id,
            correlation_id: self.correlation_id,
            causation_id: Some(self.fired_event),
            metadata: serde_json::Map::new(),
            traceparent: self.traceparent.map(|parent| parent.child()),
        }
    }

    /// The payload as a `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(&self.payload).map_err(Error::InvalidJson)
    }

    fn read(scheduled: &RecordedEvent, fired: &RecordedEvent) -> Result<Timer> {
        let data: ScheduledData = scheduled.decode()?;
        Ok(Timer {
            command_id: data.command_id,
            target: data.target,
            payload: data.payload,
            due_at: data.due_at,
            fired_at: fired.recorded_at,
            correlation_id: scheduled.metadata.correlation_id.unwrap_or(scheduled.event_id),
            fired_event: fired.event_id,
            traceparent: scheduled.metadata.traceparent,
        })
    }
}

/// What runs a fired timer's command.
///
/// A timer is handed over at least once: again after a crash or a rebalance that came
/// before its group committed past it. Run the command under [`Timer::context`] and the
/// store applies it once. An error is retried, then dead-lettered like any consumer's
/// (see [`group::admin`](crate::group::admin)).
#[async_trait]
pub trait TimerHandler: Send + Sync + 'static {
    /// Runs `timer`'s command.
    async fn fire(&self, timer: &Timer) -> Result<()>;
}

/// How a [`TimerWorker`] runs.
#[derive(Clone)]
pub struct TimerOptions {
    /// How its group member runs (batch size, session timeout, retries, …).
    pub group: GroupOptions,
    /// The clock timers are due by (default: the system's).
    pub clock: Arc<dyn Clock>,
    /// Most timers of one partition fired per round (default 512).
    pub batch_size: usize,
    /// Most `TimerFired` appends in flight at once (default 64): they share the store's
    /// group commits.
    pub in_flight: usize,
    /// How often the member looks for due timers without having been told of one
    /// (default 1 s). A timer scheduled in a partition it owns wakes it at once, and it
    /// sleeps until the soonest one it knows of is due.
    pub idle_poll: Duration,
}

impl Default for TimerOptions {
    fn default() -> Self {
        TimerOptions {
            group: GroupOptions::default(),
            clock: Arc::new(SystemClock),
            batch_size: 512,
            in_flight: 64,
            idle_poll: Duration::from_secs(1),
        }
    }
}

impl std::fmt::Debug for TimerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerOptions")
            .field("group", &self.group)
            .field("batch_size", &self.batch_size)
            .field("in_flight", &self.in_flight)
            .field("idle_poll", &self.idle_poll)
            .finish_non_exhaustive()
    }
}

/// A running member of a timer group: fires the timers due in the partitions it owns
/// and hands them to its [`TimerHandler`]. Run one or more per store, in any processes,
/// on the leader (a follower takes no appends; start the worker once it is promoted).
pub struct TimerWorker {
    member: GroupMember,
    stop: watch::Sender<bool>,
    firing: FiringTask,
}

impl std::fmt::Debug for TimerWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerWorker")
            .field("member_id", &self.member.member_id())
            .finish()
    }
}

impl TimerWorker {
    /// Starts a member of the timer group `group` on `store`.
    pub async fn start(
        store: &Store,
        group: &str,
        handler: impl TimerHandler,
        options: TimerOptions,
    ) -> Result<TimerWorker> {
        if let Some(leader) = store.replica().leader {
            return Err(Error::ReadOnlyReplica { leader });
        }
        let scheduled = Arc::new(Notify::new());
        let delivery = Delivery {
            store: store.clone(),
            handler: Arc::new(handler),
            scheduled: scheduled.clone(),
        };
        let member = GroupMember::consumer(store, group, delivery, options.group.clone()).await?;
        let (stop, stopped) = watch::channel(false);
        let firing = Firing {
            store: store.clone(),
            group: group.to_owned(),
            clock: options.clock.clone(),
            assignment: member.watch_assignment(),
            scheduled,
            stopped,
            options,
        };
        let firing = FiringTask(tokio::spawn(firing.run()));
        Ok(TimerWorker { member, stop, firing })
    }

    /// The group member's id.
    pub fn member_id(&self) -> &str {
        self.member.member_id()
    }

    /// The partitions whose timers this worker fires now.
    pub fn assignment(&self) -> Vec<Partition> {
        self.member.assignment()
    }

    /// Stops firing, then stops the member gracefully (see [`GroupMember::shutdown`]).
    /// Dropping the worker stops both too, without waiting.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        let _ = (&mut self.firing.0).await;
        self.member.shutdown().await
    }
}

/// The firing task, stopped when the worker is dropped without `shutdown`.
struct FiringTask(JoinHandle<()>);

impl Drop for FiringTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The consumer half: hands `TimerFired` records to the handler, and tells the firing
/// half of timers scheduled in the member's partitions.
struct Delivery {
    store: Store,
    handler: Arc<dyn TimerHandler>,
    scheduled: Arc<Notify>,
}

#[async_trait]
impl Consumer for Delivery {
    fn filter(&self) -> Filter {
        Filter::categories([CATEGORY])
            .unwrap_or_default()
            .event_types([TIMER_SCHEDULED, TIMER_FIRED])
    }

    async fn handle(&self, record: &RecordedEvent, _processed: &Processed) -> Result<()> {
        if record.event_type == TIMER_SCHEDULED {
            // It may be due sooner than what the firing half sleeps for.
            self.scheduled.notify_one();
            return Ok(());
        }
        let scheduled = self.store.read_stream(&record.stream, Version(1), 1).await?;
        let Some(scheduled) = scheduled.first() else {
            return Err(Error::InvalidTimer {
                reason: "a fired timer has no TimerScheduled record",
            });
        };
        let timer = Timer::read(scheduled, record)?;
        self.handler.fire(&timer).await
    }
}

/// The firing half: appends `TimerFired` to the due timers of the owned partitions.
struct Firing {
    store: Store,
    group: String,
    clock: Arc<dyn Clock>,
    assignment: watch::Receiver<Vec<Partition>>,
    scheduled: Arc<Notify>,
    stopped: watch::Receiver<bool>,
    options: TimerOptions,
}

impl Firing {
    async fn run(mut self) {
        let mut failures = 0u32;
        while !*self.stopped.borrow() {
            let partitions = self.assignment.borrow_and_update().clone();
            let wait = match self.round(&partitions).await {
                Ok(Round::Fired) => {
                    failures = 0;
                    continue;
                }
                Ok(Round::Idle(next)) => {
                    failures = 0;
                    next
                }
                Err(error) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(%error, failures, "could not fire timers; trying again");
                    }
                    None
                }
            };
            let idle = tokio::time::sleep(self.options.idle_poll * failures.clamp(1, 10));
            let due = async {
                match wait {
                    Some(at) => self.clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            // A closed channel means the member, or the worker, is gone: so is the
            // firing.
            let gone = tokio::select! {
                _ = due => false,
                _ = idle => false,
                _ = self.scheduled.notified() => false,
                changed = self.assignment.changed() => changed.is_err(),
                changed = self.stopped.changed() => changed.is_err(),
            };
            if gone {
                return;
            }
        }
    }

    /// Fires what is due in `partitions`; or says when the soonest timer there is due.
    async fn round(&self, partitions: &[Partition]) -> Result<Round> {
        let now = self.clock.now();
        let mut fired = false;
        let mut next: Option<i64> = None;
        for &partition in partitions {
            let due = self
                .store
                .due_timers(partition, now.timestamp_micros(), self.options.batch_size)
                .await?;
            if due.is_empty() {
                if let Some(at) = self.store.next_timer(partition).await? {
                    next = Some(next.map_or(at, |next| next.min(at)));
                }
                continue;
            }
            fired = true;
            // Each append in a task of its own, so that they share the store's commits
            // (appends a single task runs together commit one by one on SQLite).
            let mut claims = tokio::task::JoinSet::new();
            let mut won = 0;
            for (stream, _) in due {
                while claims.len() >= self.options.in_flight.max(1) {
                    won += usize::from(claimed(claims.join_next().await)?);
                }
                claims.spawn(fire(self.store.clone(), stream, now));
            }
            while let Some(claim) = claims.join_next().await {
                won += usize::from(claimed(Some(claim))?);
            }
            crate::telemetry::timers_fired(&self.group, won);
        }
        Ok(if fired {
            Round::Fired
        } else {
            Round::Idle(next.map(micros))
        })
    }
}

/// Appends `TimerFired` to a due timer, expecting it at version 1; `false` when a
/// cancel, or another member, got there first, and then there is nothing to do.
async fn fire(store: Store, stream: StreamId, now: DateTime<Utc>) -> Result<bool> {
    let request = AppendRequest::new(stream, ExpectedVersion::Exact(Version(1)))
        .event(NewEvent::json(TIMER_FIRED, &EndedData { at: now })?);
    match store.append(request).await {
        Ok(_) => Ok(true),
        Err(Error::WrongExpectedVersion { .. }) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Whether a finished claim task fired its timer.
fn claimed(joined: Option<std::result::Result<Result<bool>, tokio::task::JoinError>>) -> Result<bool> {
    match joined {
        Some(Ok(outcome)) => outcome,
        Some(Err(_)) => Err(Error::Closed),
        None => Ok(false),
    }
}

enum Round {
    /// Timers fired: look again at once.
    Fired,
    /// Nothing was due; the soonest pending timer, if any.
    Idle(Option<DateTime<Utc>>),
}
