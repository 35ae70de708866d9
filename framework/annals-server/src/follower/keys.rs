//! Subjects' keys across replication (see [`annals::personal`]). A follower copies its
//! leader's records sealed, and its key table beside them: every key the leader created
//! and every erasure, in the order the leader made them. It copies the key table before
//! applying any fetched record that holds a sealed field or an erasure record, so that a
//! follower holding a record can reveal it, and a follower holding an erasure record has
//! deleted the key; and every few seconds besides, so that erasures reach an idle
//! follower too. The first copy in a process reads the whole table.

use std::sync::Arc;
use std::time::Duration;

use annals::personal::{holds_sealed, SUBJECT_ERASED};
use annals::{RecordedEvent, Store};
use annals_client::Client;
use tokio::sync::{watch, Mutex};

use super::leader::Leader;
use super::status::Tracker;
use super::{periodically, FollowError};

/// Key changes asked for per request.
const PAGE: usize = 1_000;

/// How often the key table is copied besides: an erasure on the leader reaches an idle
/// follower within this long.
pub(super) const EVERY: Duration = Duration::from_secs(2);

/// The leader's key table as far as this follower copied it.
#[derive(Default)]
pub(super) struct KeyCopy {
    /// The leader's epoch, and the `seq` of the last change copied from it. `seq`s count
    /// in one leader's table: another leader's (after a promotion) is copied from the
    /// start.
    copied: Mutex<(u64, u64)>,
}

impl KeyCopy {
    /// Whether `records` need the leader's newest keys before they are applied.
    pub(super) fn needed_for(records: &[RecordedEvent]) -> bool {
        records
            .iter()
            .any(|record| record.event_type == SUBJECT_ERASED || holds_sealed(record.payload.get()))
    }

    /// Copies the leader's key changes since the last copy.
    pub(super) async fn catch_up(&self, store: &Store, leader: &Leader, client: &Client) -> Result<(), FollowError> {
        let mut copied = self.copied.lock().await;
        loop {
            let (epoch, after) = *copied;
            let (changes, leader_epoch) = leader.keys(client, after, PAGE).await?;
            if leader_epoch != epoch {
                *copied = (leader_epoch, 0);
                if after > 0 {
                    continue;
                }
            }
            let Some(last) = changes.last() else { return Ok(()) };
            let last = last.seq;
            store.import_keys(&changes).await?;
            copied.1 = last;
            if changes.len() < PAGE {
                return Ok(());
            }
        }
    }
}

/// Copies the leader's key changes every [`EVERY`] until a stop is asked for. A failure
/// is retried at the next turn; it never stops the follower.
pub(super) async fn copy(
    keys: Arc<KeyCopy>,
    store: Store,
    leader: Leader,
    client: Client,
    tracker: Arc<Tracker>,
    stopped: watch::Receiver<bool>,
) {
    periodically(EVERY, "copying the leader's keys", &tracker, stopped, || async {
        keys.catch_up(&store, &leader, &client).await.map(|()| true)
    })
    .await;
}
