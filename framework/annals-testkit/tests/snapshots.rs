//! Snapshots from the compacted snapshot log, on every engine.

use std::convert::Infallible;
use std::time::Duration;

use annals::aggregate::{Aggregate, CommandContext, DomainEvent, Repository};
use annals::group::{GroupMember, GroupOptions};
use annals::snapshot::{self, SnapshotOptions, Snapshottable, Snapshotter};
use annals::{Store, StreamId, Version};
use annals_testkit::tally::caught_up;
use annals_testkit::TestStore;
use serde::{Deserialize, Serialize};

/// A ledger that remembers every amount, so a state folded from the wrong events, or
/// in the wrong order, shows.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Ledger {
    entries: Vec<i64>,
    balance: i64,
}

#[derive(Debug, Serialize, Deserialize, DomainEvent)]
#[serde(tag = "type", content = "data")]
enum LedgerEvent {
    Posted { amount: i64 },
}

impl Aggregate for Ledger {
    const CATEGORY: &'static str = "ledger";
    type Command = i64;
    type Event = LedgerEvent;
    type Error = Infallible;

    fn handle(&self, amount: i64) -> Result<Vec<LedgerEvent>, Infallible> {
        Ok(vec![LedgerEvent::Posted { amount }])
    }

    fn apply(&mut self, LedgerEvent::Posted { amount }: &LedgerEvent) {
        self.entries.push(*amount);
        self.balance += amount;
    }
}

impl Snapshottable for Ledger {}

/// The same stream read by a newer build whose state has a new shape.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LedgerV2 {
    count: u64,
    balance: i64,
}

impl Aggregate for LedgerV2 {
    const CATEGORY: &'static str = "ledger";
    type Command = i64;
    type Event = LedgerEvent;
    type Error = Infallible;

    fn handle(&self, amount: i64) -> Result<Vec<LedgerEvent>, Infallible> {
        Ok(vec![LedgerEvent::Posted { amount }])
    }

    fn apply(&mut self, LedgerEvent::Posted { amount }: &LedgerEvent) {
        self.count += 1;
        self.balance += amount;
    }
}

impl Snapshottable for LedgerV2 {
    const SNAPSHOT_VERSION: u32 = 2;
}

annals_testkit::on_every_engine!(
    commands_snapshot_on_the_command_path,
    compaction_keeps_one_snapshot_per_live_key,
    a_schema_change_falls_back_to_the_events,
    a_truncation_takes_the_snapshots_that_folded_removed_records,
);

/// Snapshots written inside read-model transactions: by the snapshotter with its
/// group's offsets, and by hand.
mod in_transactions {
    use super::*;

    annals_testkit::on_sql_engines!(
        the_snapshotter_writes_every_n_events,
        compaction_racing_snapshots_keeps_the_newest,
    );
}

async fn post(repo: &Repository<Ledger>, id: &str, amounts: impl IntoIterator<Item = i64>) {
    for amount in amounts {
        repo.execute(id, amount, &CommandContext::new()).await.expect("post");
    }
}

fn stream(id: &str) -> StreamId {
    Repository::<Ledger>::stream_id(id).expect("stream id")
}

async fn rows(store: &Store) -> u64 {
    snapshot::size(store).await.expect("size").0
}

async fn the_snapshotter_writes_every_n_events(t: TestStore) {
    let store = t.open().await;
    let plain = Repository::<Ledger>::new(store.clone());
    for id in ["a", "b", "c"] {
        post(&plain, id, 1..=35).await;
    }
    let options = GroupOptions {
        heartbeat_interval: Duration::from_millis(100),
        ..GroupOptions::default()
    };
    let member = GroupMember::projection(&store, "snapshots", Snapshotter::<Ledger>::new(&store, 10), options)
        .await
        .expect("join");
    caught_up(&store, "snapshots").await;
    member.shutdown().await.expect("leave");
    assert_eq!(rows(&store).await, 9, "three snapshots (10, 20, 30) per stream");
    let newest = snapshot::newest(&store, &stream("b"))
        .await
        .expect("newest")
        .expect("a snapshot");
    assert_eq!(newest.version, 30);
    let at_30: Ledger = serde_json::from_str(&newest.state).expect("state");
    assert_eq!(at_30.entries, (1..=30).collect::<Vec<_>>());

    let snapshotting = Repository::<Ledger>::new(store.clone()).with_snapshots(&store, SnapshotOptions::default());
    assert_eq!(
        snapshotting.load("b").await.expect("load"),
        plain.load("b").await.expect("load")
    );
}

async fn commands_snapshot_on_the_command_path(t: TestStore) {
    let store = t.open().await;
    let repo = Repository::<Ledger>::new(store.clone()).with_snapshots(
        &store,
        SnapshotOptions {
            on_command_every: Some(5),
        },
    );
    post(&repo, "a", 1..=12).await;
    let newest = snapshot::newest(&store, &stream("a"))
        .await
        .expect("newest")
        .expect("a snapshot");
    assert_eq!(newest.version, 10);
    assert_eq!(rows(&store).await, 2);
    let loaded = repo.load("a").await.expect("load");
    assert_eq!((loaded.version, loaded.state.entries.len()), (Version(12), 12));
    assert_eq!(
        loaded,
        Repository::<Ledger>::new(store.clone()).load("a").await.expect("load")
    );
}

async fn compaction_keeps_one_snapshot_per_live_key(t: TestStore) {
    let store = t.open().await;
    let repo = Repository::<Ledger>::new(store.clone()).with_snapshots(
        &store,
        SnapshotOptions {
            on_command_every: Some(3),
        },
    );
    for id in ["a", "b", "c", "d"] {
        post(&repo, id, 1..=10).await;
    }
    assert_eq!(rows(&store).await, 12);
    snapshot::tombstone(&store, &stream("d")).await.expect("tombstone");
    assert!(
        snapshot::newest(&store, &stream("d")).await.expect("newest").is_none(),
        "tombstone ignored"
    );
    let full = Repository::<Ledger>::new(store.clone());
    assert_eq!(repo.load("d").await.expect("load"), full.load("d").await.expect("load"));

    // Kept a while, so every reader sees the tombstone.
    let done = snapshot::compact(&store, Duration::from_secs(3600))
        .await
        .expect("compact");
    assert_eq!((done.rows_before, done.rows_after), (13, 4), "{done:?}");
    assert!(done.bytes_after < done.bytes_before);
    for id in ["a", "b", "c"] {
        let newest = snapshot::newest(&store, &stream(id))
            .await
            .expect("newest")
            .expect("kept");
        assert_eq!(newest.version, 9);
    }
    let done = snapshot::compact(&store, Duration::ZERO).await.expect("compact");
    assert_eq!(done.rows_after, 3, "one snapshot per live key, the tombstoned key gone");

    // A key snapshotted again after its tombstone keeps that snapshot, even when an
    // older one from before the tombstone had a higher version.
    let key = stream("e");
    for (version, kill) in [(Version(9), false), (Version(0), true), (Version(3), false)] {
        let key = key.clone();
        if kill {
            snapshot::tombstone(&store, &key).await.expect("tombstone");
            continue;
        }
        snapshot::save(&store, &key, version, 1, "{\"entries\":[],\"balance\":0}")
            .await
            .expect("write");
    }
    snapshot::compact(&store, Duration::from_secs(3600))
        .await
        .expect("compact");
    let kept = snapshot::newest(&store, &key)
        .await
        .expect("newest")
        .expect("the snapshot after the tombstone");
    assert_eq!(kept.version, 3);
    for id in ["a", "b", "c", "d"] {
        assert_eq!(repo.load(id).await.expect("load"), full.load(id).await.expect("load"));
    }
}

async fn compaction_racing_snapshots_keeps_the_newest(t: TestStore) {
    let store = t.open().await;
    let db = store.read_models().expect("sql");
    let keys: Vec<StreamId> = (0..4).map(|k| stream(&k.to_string())).collect();
    let writer = {
        let (db, keys) = (db.clone(), keys.clone());
        tokio::spawn(async move {
            for version in (1..=60u64).map(Version) {
                for key in &keys {
                    let key = key.clone();
                    db.transaction(move |tx| {
                        Box::pin(
                            async move { snapshot::write(tx, &key, version, 1, &format!("{{\"v\":{version}}}")).await },
                        )
                    })
                    .await
                    .expect("write");
                }
            }
        })
    };
    let mut seen = vec![Version(0); keys.len()];
    while !writer.is_finished() {
        snapshot::compact(&store, Duration::ZERO).await.expect("compact");
        for (k, key) in keys.iter().enumerate() {
            if let Some(newest) = snapshot::newest(&store, key).await.expect("newest") {
                assert!(newest.version >= seen[k], "the newest snapshot of {key} went back");
                seen[k] = newest.version;
            }
        }
    }
    writer.await.expect("writer");
    snapshot::compact(&store, Duration::ZERO).await.expect("compact");
    assert_eq!(rows(&store).await, keys.len() as u64);
    for key in &keys {
        assert_eq!(
            snapshot::newest(&store, key)
                .await
                .expect("newest")
                .expect("kept")
                .version,
            60
        );
    }
}

async fn a_schema_change_falls_back_to_the_events(t: TestStore) {
    let store = t.open().await;
    let v1 = Repository::<Ledger>::new(store.clone()).with_snapshots(
        &store,
        SnapshotOptions {
            on_command_every: Some(4),
        },
    );
    post(&v1, "a", [5, 7, 11, 13, 17]).await;
    assert_eq!(
        snapshot::newest(&store, &stream("a"))
            .await
            .expect("newest")
            .expect("v1")
            .schema_version,
        1
    );

    let v2 = Repository::<LedgerV2>::new(store.clone()).with_snapshots(&store, SnapshotOptions::default());
    let loaded = v2.load("a").await.expect("load");
    assert_eq!(
        (loaded.version, loaded.state.count, loaded.state.balance),
        (Version(5), 5, 53)
    );
    let newest = snapshot::newest(&store, &stream("a"))
        .await
        .expect("newest")
        .expect("re-snapshot");
    assert_eq!((newest.schema_version, newest.version), (2, Version(5)));
    assert_eq!(v2.load("a").await.expect("load"), loaded);
    // The old build leaves the newer shape alone and folds from the events.
    assert_eq!(v1.load("a").await.expect("load").state.entries, [5, 7, 11, 13, 17]);
}

async fn a_truncation_takes_the_snapshots_that_folded_removed_records(t: TestStore) {
    let leader = Store::open("memory:").await.expect("leader");
    post(&Repository::<Ledger>::new(leader.clone()), "t", 1..=6).await;
    let key = stream("t");
    let records = leader.read_stream(&key, 1, 100).await.expect("read");

    let follower = t.open().await;
    follower.follow("http://leader.invalid", 0).await.expect("follow");
    follower.apply_replicated(records.clone()).await.expect("replicate");
    for version in [Version(3), Version(5)] {
        snapshot::save(&follower, &key, version, 1, "{\"entries\":[],\"balance\":0}")
            .await
            .expect("snapshot");
    }
    let partition = records[0].partition;
    let end = follower.high_watermark(partition).await.expect("end");
    follower
        .truncate_replica(partition, records[3].offset, end)
        .await
        .expect("truncate");
    let newest = snapshot::newest(&follower, &key).await.expect("newest");
    assert_eq!(
        newest.map(|s| s.version),
        Some(Version(3)),
        "a snapshot that folded removed records stayed"
    );
}

/// A random history of amounts, snapshotted at random versions (some with a stale
/// schema version), loads exactly as the full fold does.
mod property {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..Default::default() })]

        #[test]
        fn loading_with_snapshots_equals_the_full_fold(
            amounts in proptest::collection::vec(-1_000i64..1_000, 1..40),
            points in proptest::collection::vec((0usize..40, any::<bool>()), 0..6),
        ) {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let t = TestStore::sqlite().await.expect("sqlite");
                let store = t.open().await;
                let plain = Repository::<Ledger>::new(store.clone());
                post(&plain, "p", amounts.iter().copied()).await;
                let db = store.read_models().expect("sql");
                for (at, stale) in points {
                    let version = (at % amounts.len()) + 1;
                    let mut state = Ledger::default();
                    for amount in &amounts[..version] {
                        state.apply(&LedgerEvent::Posted { amount: *amount });
                    }
                    let json = serde_json::to_string(&state).expect("json");
                    let schema = if stale { 0 } else { 1 };
                    let key = stream("p");
                    db.transaction(move |tx| {
                        Box::pin(async move { snapshot::write(tx, &key, version as u64, schema, &json).await })
                    })
                    .await
                    .expect("write");
                }
                let snapshotting = Repository::<Ledger>::new(store.clone())
                    .with_snapshots(&store, SnapshotOptions::default());
                assert_eq!(snapshotting.load("p").await.expect("load"), plain.load("p").await.expect("load"));
            });
        }
    }
}
