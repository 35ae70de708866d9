//! Group commits as this process sees them: each member publishes where it committed
//! to, and a reader waiting to see its own write ([`wait_until`]) wakes at once.
//!
//! [`wait_until`]: crate::group::admin::wait_until

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::position::{Offset, Partition};

/// The committed offset of every (group, partition) a member of this process moved.
#[derive(Default)]
pub(crate) struct Commits(Mutex<HashMap<(String, Partition), watch::Sender<Offset>>>);

impl Commits {
    /// `group` committed `partition` up to `committed` (the next offset it will handle).
    pub(crate) fn publish(&self, group: &str, partition: Partition, committed: Offset) {
        let mut commits = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match commits.get(&(group.to_owned(), partition)) {
            Some(sender) => {
                sender.send_replace(committed);
            }
            None => {
                commits.insert((group.to_owned(), partition), watch::Sender::new(committed));
            }
        }
    }

    /// Wakes on every commit of `group` on `partition` made in this process.
    pub(crate) fn watch(&self, group: &str, partition: Partition) -> watch::Receiver<Offset> {
        let mut commits = self.0.lock().unwrap_or_else(|p| p.into_inner());
        commits
            .entry((group.to_owned(), partition))
            .or_insert_with(|| watch::Sender::new(Offset(0)))
            .subscribe()
    }
}
