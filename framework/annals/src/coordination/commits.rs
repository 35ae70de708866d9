//! Group commits as this process sees them: each member publishes where it committed
//! to, and a reader waiting to see its own write ([`wait_until`]) wakes at once. An
//! engine that can tell other processes (PostgreSQL) announces each local commit and
//! feeds the ones it hears of back in.
//!
//! [`wait_until`]: crate::group::admin::wait_until

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::position::{Offset, Partition};

/// Tells other processes of a commit made here.
type Announce = Box<dyn Fn(&str, Partition, Offset) + Send + Sync>;

/// The committed offset of every (group, partition) moved in this process or heard of.
#[derive(Default)]
pub(crate) struct Commits {
    watches: Mutex<HashMap<(String, Partition), watch::Sender<Offset>>>,
    announce: Option<Announce>,
}

impl Commits {
    /// Commits that are also announced to other processes with `announce`.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn announcing(announce: impl Fn(&str, Partition, Offset) + Send + Sync + 'static) -> Self {
        Commits {
            watches: Mutex::default(),
            announce: Some(Box::new(announce)),
        }
    }

    /// A member here committed `group`'s `partition` up to `committed` (the next
    /// offset it will handle).
    pub(crate) fn publish(&self, group: &str, partition: Partition, committed: Offset) {
        self.heard(group, partition, committed);
        if let Some(announce) = &self.announce {
            announce(group, partition, committed);
        }
    }

    /// Another process committed `group`'s `partition` up to `committed`.
    pub(crate) fn heard(&self, group: &str, partition: Partition, committed: Offset) {
        let mut commits = self.watches.lock().unwrap_or_else(|p| p.into_inner());
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
        let mut commits = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        commits
            .entry((group.to_owned(), partition))
            .or_insert_with(|| watch::Sender::new(Offset(0)))
            .subscribe()
    }
}
