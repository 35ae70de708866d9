//! The time timers are due by: the system's, or one a test moves by hand.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// The clock a [`TimerWorker`](super::TimerWorker) fires timers by.
#[async_trait]
pub trait Clock: Send + Sync + 'static {
    /// The time now.
    fn now(&self) -> DateTime<Utc>;

    /// Returns once [`now`](Clock::now) has reached `at`.
    async fn sleep_until(&self, at: DateTime<Utc>);
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        // Slept in steps of at most a minute, so that a wall clock set forward (or a
        // host resumed from suspend) is noticed.
        loop {
            let Ok(left) = (at - Utc::now()).to_std() else { return };
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(std::time::Duration::from_secs(60))).await;
        }
    }
}

/// A clock that only moves when told to, for tests: timers fire when it is moved past
/// their due time, and not before.
///
/// ```
/// use annals::schedule::{Clock, ManualClock};
/// let clock = ManualClock::starting_at(chrono::DateTime::UNIX_EPOCH);
/// clock.advance(std::time::Duration::from_secs(90));
/// assert_eq!(clock.now().timestamp(), 90);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock reading `at` until moved.
    pub fn starting_at(at: DateTime<Utc>) -> Self {
        ManualClock {
            now: Arc::new(watch::Sender::new(at)),
        }
    }

    /// A clock reading the system's time now, until moved.
    pub fn starting_now() -> Self {
        Self::starting_at(Utc::now())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        self.now
            .send_modify(|now| *now = now.checked_add_signed(by).unwrap_or(DateTime::<Utc>::MAX_UTC));
    }

    /// Sets the clock to `at` (backwards too).
    pub fn set(&self, at: DateTime<Utc>) {
        self.now.send_replace(at);
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        let mut now = self.now.subscribe();
        // The sender lives as long as `self`, so `changed` only fails after `self` is gone.
        while *now.borrow_and_update() < at {
            if now.changed().await.is_err() {
                return;
            }
        }
    }
}
