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

#[cfg(test)]
mod tests {
    use super::*;
    use annals::personal::{Subject, SubjectKey};
    use annals_client::wire::KeyChanges;
    use axum::extract::{Query, State};
    use axum::Json;
    use std::collections::HashMap;

    /// A leader's key table as `GET /v1/keys` answers it, which the test replaces.
    type Table = Arc<std::sync::Mutex<(u64, Vec<SubjectKey>)>>;

    async fn keys(State(table): State<Table>, Query(query): Query<HashMap<String, u64>>) -> Json<KeyChanges> {
        let (leader_epoch, changes) = table.lock().expect("table").clone();
        let after = query.get("after").copied().unwrap_or(0);
        let keys = changes.into_iter().filter(|change| change.seq > after).collect();
        Json(KeyChanges { keys, leader_epoch })
    }

    /// Real keys for `subjects`, numbered from 1 as a fresh leader's table does.
    async fn table_of(subjects: &[&str]) -> Vec<SubjectKey> {
        let store = Store::open("memory:").await.expect("store");
        for subject in subjects {
            let event = annals::NewEvent::json("Named", &serde_json::json!({"name": "x"}))
                .expect("event")
                .personal(Subject::new(*subject).expect("subject"), ["/name"]);
            let stream = annals::StreamId::new(format!("person-{subject}")).expect("stream");
            store
                .append(annals::AppendRequest::new(stream, annals::ExpectedVersion::Any).event(event))
                .await
                .expect("append");
        }
        store.keys_since(0, 100).await.expect("keys")
    }

    /// After a promotion the new leader numbers its table afresh: a follower that had
    /// copied further in the old one must copy the new one from the start.
    #[tokio::test]
    async fn a_new_leader_s_table_is_copied_from_the_start() {
        let table: Table = Arc::new(std::sync::Mutex::new((1, table_of(&["ada", "bob"]).await)));
        let app = axum::Router::new()
            .route("/v1/keys", axum::routing::get(keys))
            .with_state(table.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });

        let (leader, store) = (Leader::at(url), Store::open("memory:").await.expect("store"));
        let client = leader.client().expect("client");
        let copy = KeyCopy::default();
        copy.catch_up(&store, &leader, &client).await.expect("copy");
        let subjects =
            |changes: Vec<SubjectKey>| changes.into_iter().map(|c| c.subject.to_string()).collect::<Vec<_>>();
        assert_eq!(subjects(store.keys_since(0, 10).await.expect("keys")), ["ada", "bob"]);

        // A promoted follower that had only ada's key, then made carol's: seq 2 again.
        *table.lock().expect("table") = (2, table_of(&["ada", "carol"]).await);
        copy.catch_up(&store, &leader, &client).await.expect("copy");
        let copied = subjects(store.keys_since(0, 10).await.expect("keys"));
        assert!(
            copied.contains(&"carol".to_owned()),
            "carol's key was missed: {copied:?}"
        );
    }
}
