//! Acknowledgement by followers (`min_insync_followers`, like Kafka's `acks=all` with
//! `min.insync.replicas`): followers report their position on every fetch (the offset
//! they fetch from is the one they lack first), and an append waits until enough of
//! them hold it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use annals::{AppendOutcome, Offset, Partition};
use tokio::sync::Notify;

/// What followers hold, as they last reported it.
#[derive(Default)]
pub(crate) struct Followers {
    /// Per follower, per partition: the next offset it lacks.
    positions: Mutex<HashMap<String, HashMap<Partition, Offset>>>,
    moved: Notify,
}

impl Followers {
    /// A fetch by `follower` from `from` in `partition`: it holds everything below.
    pub(crate) fn report(&self, follower: &str, partition: Partition, from: Offset) {
        let mut positions = self.positions.lock().unwrap_or_else(|p| p.into_inner());
        let held = positions
            .entry(follower.to_owned())
            .or_default()
            .entry(partition)
            .or_default();
        if from > *held {
            *held = from;
            drop(positions);
            self.moved.notify_waiters();
        }
    }

    /// How many followers hold `outcome`'s last record.
    fn holding(&self, outcome: &AppendOutcome) -> usize {
        let positions = self.positions.lock().unwrap_or_else(|p| p.into_inner());
        positions
            .values()
            .filter(|held| {
                held.get(&outcome.partition)
                    .is_some_and(|next| *next > outcome.last_offset)
            })
            .count()
    }

    /// Waits until `needed` followers hold `outcome`, or `timeout` passes; returns how
    /// many held it in the end.
    pub(crate) async fn wait(&self, outcome: &AppendOutcome, needed: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so a report between the two still wakes us.
            let moved = self.moved.notified();
            let holding = self.holding(outcome);
            if holding >= needed {
                return holding;
            }
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return self.holding(outcome);
            }
        }
    }
}
