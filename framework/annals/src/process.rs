//! Stateful process managers: workflows that remember.
//!
//! A saga written as a plain [`Consumer`] keeps no state of its own: to act on "payment
//! captured *and* stock reserved" it must rebuild what it saw from views. A
//! [`ProcessManager`] keeps its state as an event-sourced stream per correlation key
//! (`CATEGORY-key`), reacts to records of any aggregates its filter passes, sends
//! commands caused by them, and schedules deadlines (see [`schedule`](crate::schedule)).
//!
//! It runs as an at-least-once consumer group ([`start`]). For each record it passes,
//! the runner finds the instance ([`ProcessManager::key`]), folds its state, and calls
//! [`ProcessManager::react`]. The events `react` returns are appended to the instance's
//! stream expecting the version folded, with a command id derived from the record. So:
//!
//! - a record changes an instance once: redelivered after its events were recorded, it
//!   is recognised by that command id and skipped;
//! - redelivered before, `react` runs again on the same state, and the commands it sends
//!   with [`Step::command`] contexts carry the same command ids, so the store applies
//!   them once;
//! - two records of one instance handled at once (they may come from different
//!   partitions) cannot both record on the same state: the second is refused by the
//!   expected version, folds the first's events, and reacts again.
//!
//! `react` should therefore send the same commands for the same record and state, and
//! name each with [`Step::command`].

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::aggregate::event::{encode, Decoder};
use crate::aggregate::{CommandContext, DomainEvent, Upcasters};
use crate::error::{Error, Result};
use crate::group::{Consumer, Filter, GroupMember, GroupOptions, Processed};
use crate::position::{ExpectedVersion, Version};
use crate::record::RecordedEvent;
use crate::schedule::{Cancel, Scheduler};
use crate::store::{AppendRequest, Store};
use crate::stream::{is_category, StreamId};

/// How often a reaction is run again on a state that changed under it before the
/// record fails (and is retried by the group, then dead-lettered).
const MAX_REACTIONS: u32 = 16;

/// The state of one process instance, folded from its own events.
pub trait ProcessState: Default + Send + Sync + 'static {
    /// The category of the process's streams: an instance keyed `o-42` is the stream
    /// `CATEGORY-o-42`.
    const CATEGORY: &'static str;
    /// What the process records: what it decided and must remember.
    type Event: DomainEvent;
    /// Folds one of its events into the state.
    fn apply(&mut self, event: &Self::Event);
}

/// A long-running workflow with state of its own (see the [module](self)).
#[async_trait]
pub trait ProcessManager: Send + Sync + 'static {
    /// The state of an instance.
    type State: ProcessState;

    /// The records it reacts to.
    fn filter(&self) -> Filter;

    /// The instance `record` belongs to (an order id, say); `None` to pass it by.
    fn key(&self, record: &RecordedEvent) -> Option<String>;

    /// Reacts to `step.record()` given the instance's state: sends commands under
    /// [`Step::command`] contexts, schedules and cancels deadlines through `step`, and
    /// returns the events to record. An error is retried, then dead-lettered.
    async fn react(&self, state: &Self::State, step: &Step<'_>) -> Result<Vec<<Self::State as ProcessState>::Event>>;
}

/// What a reaction may do besides deciding: name its commands, and schedule or cancel
/// deadlines, each caused by the record it reacts to.
pub struct Step<'a> {
    record: &'a RecordedEvent,
    scheduler: &'a Scheduler,
}

impl Step<'_> {
    /// The record the process reacts to.
    pub fn record(&self) -> &RecordedEvent {
        self.record
    }

    /// The context of the command this reaction sends as its step `name`: caused by the
    /// record, in its correlation, with a command id derived from the record and
    /// `name`. A redelivered record sends it again under the same id, and the store
    /// applies it once.
    pub fn command(&self, name: &str) -> CommandContext {
        CommandContext::caused_by(self.record, name)
    }

    /// Schedules a deadline as step `name` (see [`Scheduler::schedule`]); returns its
    /// command id, to keep in the state and cancel later. Scheduling it again on a
    /// redelivery changes nothing.
    pub async fn schedule(&self, at: DateTime<Utc>, name: &str, target: &str, payload: &Value) -> Result<Uuid> {
        let context = self.command(name);
        self.scheduler.schedule(at, &context, target, payload).await?;
        Ok(context.command_id)
    }

    /// Cancels a deadline (see [`Scheduler::cancel`]).
    pub async fn cancel(&self, deadline: Uuid) -> Result<Cancel> {
        self.scheduler.cancel(deadline).await
    }
}

/// Starts a member of the group `group` that runs `manager` (at-least-once).
pub async fn start<P: ProcessManager>(
    store: &Store,
    group: &str,
    manager: P,
    options: GroupOptions,
) -> Result<GroupMember> {
    let category = <P::State as ProcessState>::CATEGORY;
    if !is_category(category) {
        return Err(Error::InvalidCategory {
            category: category.to_owned(),
        });
    }
    let runner = Runner {
        manager: Arc::new(manager),
        store: store.clone(),
        scheduler: Scheduler::new(store),
    };
    GroupMember::consumer(store, group, runner, options).await
}

/// Folds the state of instance `key` of `P`: the state and the version it is at.
pub async fn load<S: ProcessState>(store: &Store, key: &str) -> Result<(S, Version)> {
    fold(store, &instance::<S>(key)?, &Upcasters::new()).await
}

fn instance<S: ProcessState>(key: &str) -> Result<StreamId> {
    Ok(StreamId::new(format!("{}-{key}", S::CATEGORY))?)
}

async fn fold<S: ProcessState>(store: &Store, stream: &StreamId, upcasters: &Upcasters) -> Result<(S, Version)> {
    let mut state = S::default();
    let mut version = Version(0);
    let mut decoder = Decoder::new(upcasters);
    store
        .fold_stream(stream, Version(1), &mut |event| {
            if crate::store::starts_over(stream, &event)? {
                state = S::default();
            } else {
                state.apply(&decoder.decode::<S::Event>(event)?);
            }
            version = event.version;
            Ok(())
        })
        .await?;
    Ok((state, version))
}

/// The consumer a process manager runs as.
struct Runner<P> {
    manager: Arc<P>,
    store: Store,
    scheduler: Scheduler,
}

#[async_trait]
impl<P: ProcessManager> Consumer for Runner<P> {
    fn filter(&self) -> Filter {
        self.manager.filter()
    }

    async fn handle(&self, record: &RecordedEvent, _processed: &Processed) -> Result<()> {
        let Some(key) = self.manager.key(record) else {
            return Ok(());
        };
        let stream = instance::<P::State>(&key)?;
        // The command id the record's events are recorded under: found, they were.
        let recorded = Uuid::new_v5(
            &record.event_id,
            format!("annals.process:{}", <P::State as ProcessState>::CATEGORY).as_bytes(),
        );
        if self.store.command_outcome(recorded).await?.is_some() {
            return Ok(());
        }
        let step = Step {
            record,
            scheduler: &self.scheduler,
        };
        let context = step.command("annals.process");
        let schema = <<P::State as ProcessState>::Event as DomainEvent>::SCHEMA_VERSION;
        for _ in 0..MAX_REACTIONS {
            let (state, version) = fold::<P::State>(&self.store, &stream, &Upcasters::new()).await?;
            let events = self.manager.react(&state, &step).await?;
            if events.is_empty() {
                return Ok(());
            }
            let mut request = AppendRequest::new(stream.clone(), ExpectedVersion::Exact(version)).command_id(recorded);
            for event in &events {
                request = request.event(encode(event)?.with_metadata(context.event_metadata(schema)));
            }
            match self.store.append(request).await {
                Ok(_) => return Ok(()),
                // Another record of this instance was recorded meanwhile: react again
                // on the state it left.
                Err(Error::WrongExpectedVersion { .. }) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(Error::handler(format!(
            "process instance {stream} changed under {MAX_REACTIONS} reactions in a row"
        )))
    }
}
