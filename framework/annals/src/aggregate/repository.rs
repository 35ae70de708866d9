//! Loading aggregates and running commands against them.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::cache::{Cache, CacheOptions};
use super::event::{encode, Decoder};
use super::{Aggregate, CommandContext, DomainEvent, Upcasters};
use crate::backend::{Waiters, APPENDING_FOR};
use crate::error::Error;
use crate::log::AppendOutcome;
use crate::position::{ExpectedVersion, Version};
use crate::snapshot::{self, SnapshotOptions, Snapshottable};
use crate::store::Store;
use crate::store::{AppendRequest, EventStore};
use crate::stream::{is_category, StreamId};

/// How a repository retries a command that lost a race (`WrongExpectedVersion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (default 10).
    pub max_attempts: u32,
    /// Upper bound of the first random back-off; doubles each attempt (default 1 ms).
    pub base_delay: Duration,
    /// Upper bound of any back-off (default 50 ms).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(50),
        }
    }
}

impl RetryPolicy {
    /// A random delay in `[0, min(max_delay, base_delay · 2^(attempt-1))]` ("full jitter").
    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        Duration::from_micros(rand::thread_rng().gen_range(0..=cap.as_micros() as u64))
    }
}

/// An aggregate as loaded: its state and the version of its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<A> {
    /// The state after every event.
    pub state: A,
    /// The number of events applied (the stream's version).
    pub version: Version,
}

/// What running a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Executed {
    /// Where the events went; `None` when the command produced no events (then
    /// nothing was written and the command id was not recorded). With
    /// `duplicate: true` the command id had been applied before and nothing was
    /// written now: the store said so when the events were appended, or, when the
    /// handler refused or produced nothing, the repository found the command id.
    pub outcome: Option<AppendOutcome>,
    /// The attempt that went through: 1 unless lost races (conflicts with other
    /// writers) made the repository run the command again. Catching up once with a
    /// kept state that was behind the stream is not counted. 0 when the command id was
    /// found applied before after the handler refused or produced nothing.
    pub attempts: u32,
}

impl Executed {
    /// Where the command's last event is (see [`AppendOutcome::position`]); `None`
    /// when it wrote nothing.
    pub fn position(&self) -> Option<crate::position::Position> {
        self.outcome.as_ref().map(AppendOutcome::position)
    }
}

/// Why a command did not go through.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The aggregate refused the command (a domain rule).
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// Other writers kept changing the stream; every attempt lost the race.
    #[error("{stream} kept changing: gave up after {attempts} attempts")]
    Conflict {
        /// The aggregate's stream.
        stream: StreamId,
        /// Attempts made.
        attempts: u32,
    },
    /// The store failed, or refused the append (for example a command id already used
    /// on another stream).
    #[error(transparent)]
    Store(#[from] Error),
}

/// Loads aggregates of type `A` and runs commands against them.
///
/// By default it keeps the aggregates it loads in memory, with their versions, and
/// runs the next command on one from there (see [`with_cache`](Repository::with_cache)).
pub struct Repository<A> {
    store: Arc<dyn EventStore>,
    retry: RetryPolicy,
    upcasters: Arc<Upcasters>,
    snapshots: Option<Snapshots<A>>,
    cache: Arc<Cache<A>>,
    weigh: fn(&A) -> usize,
    aggregate: PhantomData<fn() -> A>,
}

/// How a repository reads and writes `A`'s snapshots.
struct Snapshots<A> {
    store: Store,
    schema_version: u32,
    options: SnapshotOptions,
    decode: fn(&str) -> Result<A, Error>,
    encode: fn(&A) -> Result<String, Error>,
}

impl<A> Clone for Snapshots<A> {
    fn clone(&self) -> Self {
        Snapshots {
            store: self.store.clone(),
            schema_version: self.schema_version,
            options: self.options,
            decode: self.decode,
            encode: self.encode,
        }
    }
}

impl<A> Snapshots<A> {
    async fn write(&self, stream: &StreamId, loaded: &Loaded<A>) -> Result<(), Error> {
        let state = (self.encode)(&loaded.state)?;
        snapshot::save(&self.store, stream, loaded.version, self.schema_version, &state).await
    }
}

impl<A> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Repository {
            store: self.store.clone(),
            retry: self.retry,
            upcasters: self.upcasters.clone(),
            snapshots: self.snapshots.clone(),
            cache: self.cache.clone(),
            weigh: self.weigh,
            aggregate: PhantomData,
        }
    }
}

impl<A: Snapshottable> Repository<A> {
    /// Loads from snapshots: the newest snapshot of the stream whose schema version
    /// is `A::SNAPSHOT_VERSION`, then only the events after it. A stream whose newest
    /// snapshot has an older schema is folded in full and snapshotted again. With
    /// `options.on_command_every`, commands also write snapshots. Snapshots live in
    /// `store`'s snapshot log.
    pub fn with_snapshots(mut self, store: &Store, options: SnapshotOptions) -> Self {
        self.snapshots = Some(Snapshots {
            store: store.clone(),
            schema_version: A::SNAPSHOT_VERSION,
            options,
            decode: |json| serde_json::from_str(json).map_err(Error::InvalidJson),
            encode: |state| serde_json::to_string(state).map_err(Error::InvalidJson),
        });
        self
    }
}

impl<A: Aggregate> Repository<A> {
    /// A repository on `store` with the default retry policy and cache.
    pub fn new(store: impl EventStore + 'static) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// A repository on a shared store.
    pub fn from_arc(store: Arc<dyn EventStore>) -> Self {
        Repository {
            store,
            retry: RetryPolicy::default(),
            upcasters: Arc::new(Upcasters::new()),
            snapshots: None,
            cache: Arc::new(Cache::new(CacheOptions::default())),
            weigh: |_| std::mem::size_of::<A>(),
            aggregate: PhantomData,
        }
    }

    /// Keeps up to `options`' bounds of aggregates in memory between commands (on by
    /// default). A command runs on the kept state and appends expecting its version;
    /// when another writer (another process, or a repository that does not share this
    /// one's cache) appended meanwhile, the store refuses, the repository reads only
    /// the events after the kept version, and runs the command again. A refusal is
    /// given only on the stream's latest state. Commands on one aggregate through this
    /// repository and its clones run one after another rather than race each other. A
    /// new cache is empty; clones made after this call share it.
    pub fn with_cache(mut self, options: CacheOptions) -> Self {
        self.cache = Arc::new(Cache::new(options));
        self
    }

    /// Loads every aggregate from the store for every command: for aggregates too
    /// large to keep, or a process that runs one command per aggregate. Commands on
    /// one aggregate still take turns.
    pub fn without_cache(mut self) -> Self {
        self.cache = Arc::new(Cache::single_flight());
        self
    }

    /// How many bytes an aggregate's state takes, for the cache's byte bound. The
    /// default counts `size_of::<A>()`, which is right for states without heap data;
    /// weigh states that grow (vectors, maps, strings) with their contents.
    pub fn weigh_with(mut self, weigh: fn(&A) -> usize) -> Self {
        self.weigh = weigh;
        self
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Converts events written with older schema versions as they are loaded.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = Arc::new(upcasters);
        self
    }

    /// `A::CATEGORY`, checked when the program is compiled: a category that is empty,
    /// holds `-` (`order-line-7` would list under `order`) or a character stream ids
    /// refuse does not build.
    ///
    /// ```compile_fail
    /// use annals::aggregate::{Aggregate, DomainEvent, Repository};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize, DomainEvent)]
    /// # #[serde(tag = "type", content = "data")]
    /// # enum Nothing {}
    /// #[derive(Default)]
    /// struct Misnamed;
    /// impl Aggregate for Misnamed {
    ///     const CATEGORY: &'static str = "order-line";
    ///     # type Command = ();
    ///     # type Event = Nothing;
    ///     # type Error = std::convert::Infallible;
    ///     # fn handle(&self, _: ()) -> Result<Vec<Nothing>, Self::Error> { Ok(vec![]) }
    ///     # fn apply(&mut self, _: &Nothing) {}
    /// }
    /// let _ = Repository::<Misnamed>::stream_id("7");
    /// ```
    pub const CATEGORY: &'static str = {
        assert!(
            is_category(A::CATEGORY),
            "Aggregate::CATEGORY must be 1-200 bytes of A-Z a-z 0-9 _ . : @, without '-'"
        );
        A::CATEGORY
    };

    /// The stream of aggregate `id`: `CATEGORY-id`.
    pub fn stream_id(id: &str) -> Result<StreamId, Error> {
        Ok(StreamId::new(format!("{}-{id}", Self::CATEGORY))?)
    }

    /// Rebuilds aggregate `id` from its events (a new aggregate if it has none).
    pub async fn load(&self, id: &str) -> Result<Loaded<A>, Error> {
        self.load_stream(&Self::stream_id(id)?).await
    }

    async fn load_stream(&self, stream: &StreamId) -> Result<Loaded<A>, Error> {
        let mut loaded = Loaded {
            state: A::default(),
            version: Version(0),
        };
        let mut snapshot_again = false;
        if let Some(snapshots) = &self.snapshots {
            match snapshots
                .store
                .newest_snapshot(stream, Some(snapshots.schema_version))
                .await?
            {
                Some(found) if found.schema_version == snapshots.schema_version => {
                    loaded = Loaded {
                        state: (snapshots.decode)(&found.state)?,
                        version: found.version,
                    };
                }
                // None in this shape: fold from the start, and snapshot again if the
                // newest is of an older shape. (A newer one was written by a newer
                // build; leave it alone.)
                other => {
                    snapshot_again = other.is_some_and(|found| found.schema_version < snapshots.schema_version);
                }
            }
        }
        self.catch_up(stream, &mut loaded).await?;
        if let (true, Some(snapshots)) = (snapshot_again && loaded.version > 0, &self.snapshots) {
            // The load succeeded; a failed write only means the next load folds again.
            if let Err(error) = snapshots.write(stream, &loaded).await {
                tracing::warn!(%stream, %error, "writing a snapshot in the new shape failed");
            }
        }
        Ok(loaded)
    }

    /// Applies the events of `stream` after `loaded.version` to `loaded`.
    async fn catch_up(&self, stream: &StreamId, loaded: &mut Loaded<A>) -> Result<(), Error> {
        let mut decoder = Decoder::new(&self.upcasters);
        self.store
            .fold_stream(stream, loaded.version + 1, &mut |event| {
                if crate::store::starts_over(stream, &event)? {
                    loaded.state = A::default();
                } else {
                    loaded.state.apply(&decoder.decode::<A::Event>(event)?);
                }
                loaded.version = event.version;
                Ok(())
            })
            .await
    }

    /// Runs `command` against aggregate `id` and appends its events with the
    /// context's command id, expecting the version its state is at. On a conflict it
    /// reads the events it missed and runs the command again, as the retry policy
    /// allows.
    ///
    /// A command id the store already applied is answered with the original outcome
    /// (`duplicate: true`) and writes nothing: the store finds it when the events are
    /// appended. When the handler refuses or produces no events, the repository looks
    /// the command id up, because a retried command whose first run went through may
    /// be refused by the state that run created, and makes sure the state it decided on
    /// is the stream's latest.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        context: &CommandContext,
    ) -> Result<Executed, CommandError<A::Error>>
    where
        A::Command: Clone,
    {
        let stream = Self::stream_id(id)?;
        let slot = self.cache.slot(&stream);
        // Single flight: commands on this aggregate take turns on its slot. The store
        // hears of one that waits: it cannot append before the command ahead of it has
        // its append answered, and a group commit need not wait for it meanwhile.
        let mut turn = self
            .cache
            .turn(&stream, &slot, self.weigh, || self.store.waiting_for_turn())
            .await;
        self.run(&stream, &mut turn.held, &slot.waiters, command, context).await
    }

    /// Runs a command on `held` (loaded first when empty) and leaves there the state
    /// as of the version it knows for sure, or nothing when that is unknown.
    async fn run(
        &self,
        stream: &StreamId,
        held: &mut Option<Loaded<A>>,
        waiters: &Arc<Waiters>,
        command: A::Command,
        context: &CommandContext,
    ) -> Result<Executed, CommandError<A::Error>>
    where
        A::Command: Clone,
    {
        // A kept state found behind the stream once is not a lost race: the first
        // catch-up from it costs no attempt and no back-off.
        let (mut loaded, mut kept) = match held.take() {
            Some(loaded) => (loaded, true),
            None => (self.load_stream(stream).await?, false),
        };
        let metadata = context.event_metadata(<A::Event as DomainEvent>::SCHEMA_VERSION);
        let max_attempts = self.retry.max_attempts.max(1);
        let mut attempt = 0;
        while attempt < max_attempts {
            attempt += 1;
            let events = match loaded.state.handle(command.clone()) {
                Ok(events) if !events.is_empty() => events,
                decided => {
                    // A refusal, or nothing to do, stands only on the stream's latest
                    // state (a kept one may be behind another writer's), and only if
                    // this command id was not applied before: a retried command whose
                    // first run went through may be refused by what that run did.
                    let version = loaded.version;
                    let (known, caught_up) =
                        tokio::join!(self.applied_before(stream, context), self.catch_up(stream, &mut loaded));
                    let known = known.and_then(|known| caught_up.map(|()| known));
                    if let Some(original) = known? {
                        *held = Some(loaded);
                        return Ok(Executed {
                            outcome: Some(original),
                            attempts: 0,
                        });
                    }
                    if loaded.version != version {
                        if std::mem::take(&mut kept) {
                            attempt -= 1;
                        }
                        continue;
                    }
                    *held = Some(loaded);
                    return match decided {
                        Ok(_) => Ok(Executed {
                            outcome: None,
                            attempts: attempt,
                        }),
                        Err(refused) => Err(CommandError::Rejected(refused)),
                    };
                }
            };
            let mut request = AppendRequest::new(stream.clone(), ExpectedVersion::Exact(loaded.version))
                .command_id(context.command_id);
            for event in &events {
                request = request.event(encode(event)?.with_metadata(metadata.clone()));
            }
            // The writer that answers the append learns whether a command waits to
            // take the turn after this one.
            match APPENDING_FOR.scope(waiters.clone(), self.store.append(request)).await {
                Ok(outcome) => {
                    if !outcome.duplicate {
                        for event in &events {
                            loaded.state.apply(event);
                        }
                        let before = loaded.version;
                        loaded.version = outcome.last_version;
                        self.snapshot_after(stream, before, &loaded).await;
                    }
                    *held = Some(loaded);
                    return Ok(Executed {
                        outcome: Some(outcome),
                        attempts: attempt,
                    });
                }
                Err(Error::WrongExpectedVersion { actual, .. }) => {
                    if actual < loaded.version {
                        // The stream is shorter than the state kept of it (a follower
                        // cut back, a store restored): start again from the store.
                        loaded = self.load_stream(stream).await?;
                    } else {
                        // Another writer got there first: read only what it wrote.
                        self.catch_up(stream, &mut loaded).await?;
                    }
                    if std::mem::take(&mut kept) {
                        attempt -= 1;
                    } else if attempt < max_attempts {
                        tokio::time::sleep(self.retry.backoff(attempt)).await;
                    }
                }
                // Written or not, the store cannot say: the next command loads again.
                Err(error) => return Err(error.into()),
            }
        }
        *held = Some(loaded);
        Err(CommandError::Conflict {
            stream: stream.clone(),
            attempts: max_attempts,
        })
    }

    /// The original outcome, as a duplicate, if the command id was applied before;
    /// `CommandIdConflict` if it was applied to another stream.
    async fn applied_before(
        &self,
        stream: &StreamId,
        context: &CommandContext,
    ) -> Result<Option<AppendOutcome>, Error> {
        match self.store.command_outcome(context.command_id).await? {
            Some((applied_to, _)) if applied_to != *stream => Err(Error::CommandIdConflict {
                command_id: context.command_id,
                stream: stream.clone(),
                existing_stream: applied_to,
            }),
            Some((_, outcome)) => Ok(Some(outcome)),
            None => Ok(None),
        }
    }
}

impl<A: Aggregate> Repository<A> {
    /// Snapshots on the command path, when a command took the stream from `before`
    /// past a multiple of `on_command_every`. A failure is logged, not returned: the
    /// command went through.
    async fn snapshot_after(&self, stream: &StreamId, before: Version, loaded: &Loaded<A>) {
        let Some(snapshots) = &self.snapshots else { return };
        let Some(every) = snapshots.options.on_command_every.filter(|every| *every > 0) else {
            return;
        };
        if loaded.version.0 / every > before.0 / every {
            if let Err(error) = snapshots.write(stream, loaded).await {
                tracing::warn!(%stream, %error, "snapshot on the command path failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_grows() {
        let policy = RetryPolicy::default();
        for attempt in 1..20 {
            assert!(policy.backoff(attempt) <= policy.max_delay);
        }
        let first_cap = (0..200).map(|_| policy.backoff(1)).max().unwrap();
        assert!(first_cap <= policy.base_delay);
    }
}
