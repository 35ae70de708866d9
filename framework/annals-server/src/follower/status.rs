//! What a follower is doing, as its API, `/metrics` and the console show it: its
//! replication lag per partition, whether it is retrying, and the errors it retried.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::FollowError;

/// A follower's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowerState {
    /// Checking the leader and this store's log against it.
    Starting,
    /// Every partition is fetching.
    Following,
    /// At least one partition's last attempt failed; it retries with back-off.
    Retrying,
    /// The store was promoted: it is a leader now.
    Promoted,
    /// Stopped on an error no retry can cure (see [`FollowerStatus::last_error`]).
    Failed,
    /// Stopped on request.
    Stopped,
}

/// A snapshot of a follower's status.
#[derive(Debug, Clone, Serialize)]
pub struct FollowerStatus {
    /// The leader's URL.
    pub leader: String,
    /// What the follower is doing.
    pub state: FollowerState,
    /// Records the follower lacked at its last fetch, per partition.
    pub lag: Vec<u64>,
    /// Errors retried since the follower started (a leader down or answering an
    /// error, the network, this store's database).
    pub errors: u64,
    /// The last error, retried or not.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<DateTime<Utc>>,
}

/// The follower's status as its tasks update it.
#[derive(Debug)]
pub(super) struct Tracker {
    leader: String,
    lag: Vec<AtomicU64>,
    failing: Vec<AtomicBool>,
    state: Mutex<FollowerState>,
    errors: AtomicU64,
    last_error: Mutex<Option<(String, DateTime<Utc>)>>,
}

impl Tracker {
    pub(super) fn new(leader: &str, partitions: u32) -> Self {
        Tracker {
            leader: leader.to_owned(),
            lag: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            failing: (0..partitions).map(|_| AtomicBool::new(false)).collect(),
            state: Mutex::new(FollowerState::Starting),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub(super) fn snapshot(&self) -> FollowerStatus {
        let (last_error, last_error_at) = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unzip();
        let mut state = *self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state == FollowerState::Following && self.failing.iter().any(|f| f.load(Ordering::Relaxed)) {
            state = FollowerState::Retrying;
        }
        FollowerStatus {
            leader: self.leader.clone(),
            state,
            lag: self.lag.iter().map(|lag| lag.load(Ordering::Relaxed)).collect(),
            errors: self.errors.load(Ordering::Relaxed),
            last_error,
            last_error_at,
        }
    }

    pub(super) fn set_state(&self, state: FollowerState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// A fetch of `partition` was applied; the leader's high watermark was `lag`
    /// records ahead of this store's.
    pub(super) fn fetched(&self, partition: usize, lag: u64) {
        self.lag[partition].store(lag, Ordering::Relaxed);
        self.failing[partition].store(false, Ordering::Relaxed);
        metrics::gauge!("annals_replication_lag", "partition" => partition.to_string()).set(lag as f64);
    }

    /// An error that the follower retries (`partition` is `None` before the fetch
    /// loops start).
    pub(super) fn retrying(&self, partition: Option<usize>, error: &FollowError) {
        if let Some(partition) = partition {
            self.failing[partition].store(true, Ordering::Relaxed);
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("annals_replication_errors_total", "kind" => error.code()).increment(1);
        self.record(error);
    }

    /// An error that stops the follower.
    pub(super) fn failed(&self, error: &FollowError) {
        self.set_state(FollowerState::Failed);
        self.record(error);
    }

    fn record(&self, error: &FollowError) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some((error.to_string(), Utc::now()));
    }
}
