//! The log-shipping follower: one fetch loop per partition, long-polling the leader's
//! fetch route from the follower's own next offset and applying what comes back
//! verbatim. The position is the follower's log itself, so a follower killed at any
//! point resumes without gap or duplicate (I8).
//!
//! A follower stops only when going on would be wrong: its log diverged from the
//! leader's, the leader's epoch is below its own, the partition counts differ, or the
//! leader refuses its token. Everything else (the leader down or answering an error,
//! the network, this store's database) is retried with a bounded back-off, logged,
//! counted in `annals_replication_errors_total` and shown in its [`FollowerStatus`].

mod diverge;
mod groups;
mod keys;
mod leader;
mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use annals::{Offset, Partition, Store, StoreOptions};
use annals_client::Client;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub use leader::Leader;
use status::Tracker;
pub use status::{FollowerState, FollowerStatus};

/// Records asked for per fetch. The leader answers with whole appends: fewer when the
/// last would not fit, all of the first when it alone is longer.
const FETCH: usize = 2_000;
/// The first wait after a failure; each further failure in a row doubles it.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a follower stopped, or a step of it failed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// This store failed (retried) or refused the records.
    #[error(transparent)]
    Store(#[from] annals::Error),
    /// The leader could not be reached or answered something unexpected (retried).
    #[error("leader {leader}: {message}")]
    Leader {
        /// The leader's URL.
        leader: String,
        /// What happened.
        message: String,
    },
    /// The leader refused the token (`--leader-token`).
    #[error("leader {leader} refused the token (401): check --leader-token")]
    Unauthorized {
        /// The leader's URL.
        leader: String,
    },
    /// The leader has a lower epoch than this store: it was replaced, and following it
    /// would take records from a deposed leader.
    #[error("leader {leader} is at epoch {theirs}, below this store's {ours}: refusing its records")]
    StaleLeader {
        /// The leader's URL.
        leader: String,
        /// The leader's epoch.
        theirs: u64,
        /// This store's epoch.
        ours: u64,
    },
    /// This store holds records the leader does not have (it was a leader that kept
    /// writing after another was promoted, or it followed another leader): following
    /// would fork the log. Nothing is truncated unless the options allow it.
    #[error(
        "partition {partition}: this store's record at offset {offset} is not the leader's; the logs diverged \
         (annals follow --truncate-diverged --max-truncate N removes such records)"
    )]
    Diverged {
        /// The partition.
        partition: Partition,
        /// The offset where they differ (or that the leader lacks).
        offset: Offset,
    },
    /// The logs diverged and cutting this store back to the last record it shares
    /// with the leader would remove more records than allowed; nothing was removed.
    #[error(
        "the logs diverged: this store holds {records} record(s) the leader lacks, more than the {max} \
         --max-truncate allows; nothing was removed"
    )]
    TruncationTooLarge {
        /// Records the cut would remove.
        records: u64,
        /// The bound.
        max: u64,
    },
    /// The leader runs an older annals that does not say where its appends end: its
    /// records could not be shipped whole.
    #[error("leader {leader} does not report append boundaries: upgrade it to this version of annals first")]
    LeaderTooOld {
        /// The leader's URL.
        leader: String,
    },
    /// The partition counts differ.
    #[error("leader {leader} has {theirs} partitions, this store {ours}")]
    PartitionCount {
        /// The leader's URL.
        leader: String,
        /// The leader's count.
        theirs: u32,
        /// This store's count.
        ours: u32,
    },
    /// The records removed by a truncation could not be written to their file;
    /// nothing was removed.
    #[error("cannot write the truncated records to {path}: {source}")]
    TruncationFile {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The leader's certificate authority file could not be used.
    #[error("cannot use the certificate authority file {}: {reason}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

impl FollowError {
    /// Whether trying again later can succeed: the leader or the network may come
    /// back, the database may recover. A follower retries these and stops on the rest.
    pub fn is_transient(&self) -> bool {
        match self {
            FollowError::Leader { .. } => true,
            // A gap or a batch the store refused: the next round reads the store's
            // own next offset again and fetches from there.
            FollowError::Store(
                annals::Error::ReplicationGap { .. }
                | annals::Error::InvalidReplicatedRecords { .. }
                | annals::Error::PartitionMoved { .. },
            ) => true,
            FollowError::Store(error) => error.is_transient(),
            _ => false,
        }
    }

    /// A short, stable code: the store's own for its errors, else `leader_unavailable`,
    /// `unauthorized`, `stale_leader`, `diverged`, `partition_count_mismatch` or
    /// `truncation_file`. `--json` output and the metric
    /// `annals_replication_errors_total{kind}` carry it.
    pub fn code(&self) -> &'static str {
        match self {
            FollowError::Store(error) => error.code(),
            FollowError::Leader { .. } => "leader_unavailable",
            FollowError::Unauthorized { .. } => "unauthorized",
            FollowError::StaleLeader { .. } => "stale_leader",
            FollowError::Diverged { .. } | FollowError::TruncationTooLarge { .. } => "diverged",
            FollowError::PartitionCount { .. } => "partition_count_mismatch",
            FollowError::LeaderTooOld { .. } => "leader_too_old",
            FollowError::TruncationFile { .. } => "truncation_file",
            FollowError::Certificate { .. } => "certificate",
        }
    }
}

/// How a follower treats a log that diverged from its leader's.
#[derive(Debug, Clone, Default)]
pub struct FollowOptions {
    /// `None` (the default): stop with [`FollowError::Diverged`] and change nothing.
    /// `Some`: cut this store back to the last record it shares with the leader,
    /// within the bound, then follow.
    pub truncate_diverged: Option<Truncation>,
}

/// An operator's leave to cut a diverged follower back (DESIGN §9).
#[derive(Debug, Clone)]
pub struct Truncation {
    /// The most records the cut may remove, over all partitions; a larger cut is
    /// refused ([`FollowError::TruncationTooLarge`]) and nothing is removed.
    pub max_records: u64,
    /// Where the removed records are written first, one JSON record per line.
    pub removed_to: PathBuf,
}

/// A running follower.
pub struct Follower {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), FollowError>>>,
    tracker: Arc<Tracker>,
}

/// Reads a follower's status from elsewhere (the server's routes).
#[derive(Debug, Clone)]
pub struct FollowerHandle(Arc<Tracker>);

impl FollowerHandle {
    /// The follower's status now.
    pub fn status(&self) -> FollowerStatus {
        self.0.snapshot()
    }
}

impl Follower {
    /// Starts following `leader` into `store`, which becomes (or stays) its follower
    /// once its log is checked against the leader's. Returns at once: the checks and
    /// the fetch loops run in the background, retrying what can be retried; an error
    /// that stops them comes out of [`wait`](Follower::wait) or
    /// [`stop`](Follower::stop).
    pub fn start(store: Store, leader: Leader, options: FollowOptions) -> Follower {
        let (stop, stopped) = watch::channel(false);
        let tracker = Arc::new(Tracker::new(&leader.url, store.partition_count()));
        let task = tokio::spawn(supervise(store, leader, options, tracker.clone(), stopped));
        Follower {
            stop,
            task: Some(task),
            tracker,
        }
    }

    /// The follower's status now.
    pub fn status(&self) -> FollowerStatus {
        self.tracker.snapshot()
    }

    /// A handle that reads the status from another task.
    pub fn handle(&self) -> FollowerHandle {
        FollowerHandle(self.tracker.clone())
    }

    /// Waits until the follower stops by itself: `Ok` when the store was promoted, the
    /// error otherwise. Once it has returned, it waits forever.
    pub async fn wait(&mut self) -> Result<(), FollowError> {
        match self.task.as_mut() {
            Some(task) => {
                let ended = joined(task.await);
                self.task = None;
                ended
            }
            None => std::future::pending().await,
        }
    }

    /// Stops the follower; returns the error it had stopped on, if any.
    pub async fn stop(mut self) -> Result<(), FollowError> {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => joined(task.await),
            None => Ok(()),
        }
    }
}

/// How a task ended; one that panicked passes its panic on.
fn joined(result: Result<Result<(), FollowError>, tokio::task::JoinError>) -> Result<(), FollowError> {
    match result {
        Ok(result) => result,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(_) => Ok(()),
    }
}

/// Opens the store `options` name, which a follower writes into, creating it with the leader's partition
/// count when there is none. Neither a leader that does not answer yet nor a database
/// that is not up yet is an error: both are retried, with the follower's back-off,
/// until they answer; the errors that will not pass are returned.
pub async fn open_store(options: &StoreOptions, leader: &Leader) -> Result<Store, FollowError> {
    let mut backoff = Backoff(0);
    loop {
        let existing = options.clone().create_if_missing(false).open().await;
        let attempt = match existing {
            Err(annals::Error::StoreNotFound { .. }) => match leader.partition_count().await {
                Ok(count) => options
                    .clone()
                    .partitions(count)
                    .open()
                    .await
                    .map_err(FollowError::Store),
                Err(error) => Err(error),
            },
            opened => opened.map_err(FollowError::Store),
        };
        match attempt {
            Err(error) if error.is_transient() => {
                tracing::warn!(%error, "cannot open the follower's store yet; retrying");
                tokio::time::sleep(backoff.next()).await;
            }
            opened => return opened,
        }
    }
}

/// Waits between attempts: [`FIRST_BACKOFF`], doubling up to [`MAX_BACKOFF`], each
/// wait spread by ±25 % so that loops failing together do not retry in lockstep.
struct Backoff(u32);

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = FIRST_BACKOFF.saturating_mul(1 << self.0.min(16)).min(MAX_BACKOFF);
        self.0 += 1;
        wait.mul_f64(rand::random::<f64>() * 0.5 + 0.75)
    }

    fn reset(&mut self) {
        self.0 = 0;
    }
}

/// Sleeps `wait` unless asked to stop first; says whether it was asked.
async fn stopped_during(wait: Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    let asked = tokio::select! {
        _ = stopped.wait_for(|stop| *stop) => true,
        () = tokio::time::sleep(wait) => false,
    };
    asked || *stopped.borrow()
}

/// Runs `step` every `every` until a stop is asked for, or until `step` answers
/// `false` (there is nothing to do, ever). A failure is counted, logged as `what`
/// failing, and retried at the next turn: it never stops the follower.
async fn periodically<F, Fut>(
    every: Duration,
    what: &str,
    tracker: &Tracker,
    mut stopped: watch::Receiver<bool>,
    mut step: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, FollowError>>,
{
    loop {
        let done = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            done = step() => done,
        };
        match done {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                tracker.retrying(None, &error);
                tracing::warn!(%error, "{what} failed; retrying");
            }
        }
        if stopped_during(every, &mut stopped).await {
            return;
        }
    }
}

/// The follower's life: the start checks, then one fetch loop per partition until the
/// store is promoted, a loop meets an error no retry cures, or a stop is asked for.
async fn supervise(
    store: Store,
    leader: Leader,
    options: FollowOptions,
    tracker: Arc<Tracker>,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), FollowError> {
    let http = leader.client()?;
    let mut backoff = Backoff(0);
    loop {
        match diverge::start(&store, &leader, &http, &options).await {
            Ok(()) => break,
            Err(error) if error.is_transient() => {
                tracker.retrying(None, &error);
                tracing::warn!(%error, "cannot start following yet; retrying");
                if stopped_during(backoff.next(), &mut stopped).await {
                    tracker.set_state(FollowerState::Stopped);
                    return Ok(());
                }
            }
            Err(error) => {
                tracker.failed(&error);
                return Err(error);
            }
        }
    }
    tracker.set_state(FollowerState::Following);

    // Loops stop together: on a stop, on a promotion one of them saw, on an error.
    let (stop_loops, loops_stopped) = watch::channel(false);
    let id: Arc<str> = format!("follower-{}", uuid::Uuid::new_v4().simple()).into();
    let mut loops = JoinSet::new();
    let keys = Arc::new(keys::KeyCopy::default());
    for partition in Partition::all(store.partition_count()) {
        let partition_loop = PartitionLoop {
            store: store.clone(),
            leader: leader.clone(),
            http: http.clone(),
            partition,
            id: id.clone(),
            tracker: tracker.clone(),
            keys: keys.clone(),
        };
        loops.spawn(partition_loop.run(loops_stopped.clone()));
    }
    let copying_keys = tokio::spawn(keys::copy(
        keys,
        store.clone(),
        leader.clone(),
        http.clone(),
        tracker.clone(),
        loops_stopped.clone(),
    ));
    let copying = tokio::spawn(groups::copy(
        store.clone(),
        leader.clone(),
        http.clone(),
        tracker.clone(),
        loops_stopped.clone(),
    ));
    // A stop, or the first loop to end (promoted, or an error no retry cures), ends
    // them all; the first error is the outcome.
    let first = tokio::select! {
        _ = stopped.wait_for(|stop| *stop) => Ok(()),
        Some(ended) = loops.join_next() => joined(ended),
    };
    let _ = stop_loops.send(true);
    let outcome = first.and(drain(&mut loops).await);
    match &outcome {
        Err(error) => tracker.failed(error),
        Ok(()) if store.replica().leader.is_none() => tracker.set_state(FollowerState::Promoted),
        Ok(()) => tracker.set_state(FollowerState::Stopped),
    }
    // The copies of consumer groups stop with the loops; on a promoted store the
    // state says so already, so that appends are taken meanwhile.
    let _ = copying.await;
    let _ = copying_keys.await;
    outcome
}

/// Waits for every loop to end; the first error any of them ended with.
async fn drain(loops: &mut JoinSet<Result<(), FollowError>>) -> Result<(), FollowError> {
    let mut outcome = Ok(());
    while let Some(ended) = loops.join_next().await {
        if let (Ok(()), Err(error)) = (&outcome, joined(ended)) {
            outcome = Err(error);
        }
    }
    outcome
}

/// The fetch loop of one partition.
struct PartitionLoop {
    store: Store,
    leader: Leader,
    http: Client,
    partition: Partition,
    /// How this follower names itself to the leader, which counts it for acks.
    id: Arc<str>,
    tracker: Arc<Tracker>,
    /// The leader's keys, copied before records that need them.
    keys: Arc<keys::KeyCopy>,
}

/// What a fetch loop knows between rounds: its partition's next offset (it alone
/// writes the partition; read from the store at first and after an error), and whether
/// to look at the store's role before the next fetch.
struct Position {
    next: Option<Offset>,
    check_role: bool,
}

impl Position {
    fn unknown() -> Self {
        Position {
            next: None,
            check_role: true,
        }
    }
}

/// What one round of a fetch loop came to.
enum Round {
    /// Records were applied, or none were there.
    Fetched,
    /// The store was promoted, or a stop was asked for.
    Done,
}

impl PartitionLoop {
    async fn run(self, mut stopped: watch::Receiver<bool>) -> Result<(), FollowError> {
        let mut backoff = Backoff(0);
        // After a failure the next fetch does not wait at the leader, so that the
        // status says "following" as soon as the leader answers again.
        let mut wait_ms = leader::WAIT_MS;
        let mut position = Position::unknown();
        loop {
            if *stopped.borrow() {
                return Ok(());
            }
            match self.round(&mut position, wait_ms, &mut stopped).await {
                Ok(Round::Fetched) => {
                    backoff.reset();
                    wait_ms = leader::WAIT_MS;
                }
                Ok(Round::Done) => return Ok(()),
                Err(error) if error.is_transient() => {
                    wait_ms = 0;
                    position = Position::unknown();
                    self.tracker.retrying(Some(self.partition.index()), &error);
                    tracing::warn!(partition = %self.partition, %error, "replication failed; retrying");
                    if stopped_during(backoff.next(), &mut stopped).await {
                        return Ok(());
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One fetch, waiting up to `wait_ms` at the leader, and its application.
    async fn round(
        &self,
        position: &mut Position,
        wait_ms: u64,
        stopped: &mut watch::Receiver<bool>,
    ) -> Result<Round, FollowError> {
        let partition = self.partition;
        // Promoted (here or by `annals promote` in another process): stop following.
        // While records flow, the apply below finds out; an idle partition looks.
        if position.check_role && self.store.refresh_replica().await?.leader.is_none() {
            tracing::info!(%partition, "promoted: the follower stops");
            return Ok(Round::Done);
        }
        let next = match position.next {
            Some(next) => next,
            None => self.store.high_watermark(partition).await?,
        };
        let fetch = self
            .leader
            .fetch(&self.http, partition, next, FETCH, wait_ms, Some(&self.id));
        let fetched = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return Ok(Round::Done),
            fetched = fetch => fetched?,
        };
        if fetched.events.is_empty() && fetched.high_watermark < next {
            // The leader ends before this store does: it lost records this store
            // holds (restored from a backup, or not the leader this store followed).
            return Err(FollowError::Diverged {
                partition,
                offset: fetched.high_watermark,
            });
        }
        let reached = fetched.events.last().map_or(next, |record| record.offset + 1);
        let idle = fetched.events.is_empty();
        if keys::KeyCopy::needed_for(&fetched.events) {
            self.keys.catch_up(&self.store, &self.leader, &self.http).await?;
        }
        match self.store.apply_replicated(fetched.events).await {
            // Promoted while this fetch was in flight: its records are not taken.
            Err(annals::Error::NotAReplica) => {
                tracing::info!(%partition, "promoted: the follower stops");
                return Ok(Round::Done);
            }
            applied => applied?,
        }
        self.tracker
            .fetched(partition.index(), fetched.high_watermark.0.saturating_sub(reached.0));
        *position = Position {
            next: Some(reached),
            check_role: idle,
        };
        if idle {
            // Caught up: a good moment to check that the leader was not replaced.
            diverge::check_leader(&self.store, &self.leader, &self.http).await?;
        }
        Ok(Round::Fetched)
    }
}
