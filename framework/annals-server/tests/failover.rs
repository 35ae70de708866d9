//! After a failover the old leader may only come back as a follower of the new one: if
//! it wrote nothing more, it follows; if it kept writing, it refuses to and says so,
//! changing nothing, unless an operator allows it to cut back its own records, within
//! a bound, after writing them to a file. A store promoted past a leader's epoch
//! refuses that leader.

mod support;

use annals::{AppendRequest, ExpectedVersion, NewEvent, RecordedEvent, Store, StreamId};
use annals_server::follower::{FollowError, FollowOptions, Follower, Leader, Truncation};
use annals_server::Spawned;
use annals_testkit::conformance::read_whole_partition;
use annals_testkit::TestStore;
use serde_json::json;
use support::serve;

async fn add(store: &Store, stream: &str) {
    let request = AppendRequest::new(StreamId::new(stream).expect("id"), ExpectedVersion::Any)
        .event(NewEvent::json("Posted", &json!({"at": stream})).expect("event"))
        .event(NewEvent::json("Noted", &json!({"at": stream})).expect("event"));
    store.append(request).await.expect("append");
}

async fn caught_up(leader: &Store, follower: &Store) {
    let target = leader.high_watermarks().await.expect("hw");
    for _ in 0..1_000 {
        if follower.high_watermarks().await.expect("hw") == target {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the follower never caught up");
}

async fn everything(store: &Store) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    for partition in 0..store.partition_count() {
        all.extend(read_whole_partition(store, partition).await);
    }
    all
}

fn leader(url: &str) -> Leader {
    Leader::at(url)
}

/// What a follower that stops by itself stopped on.
async fn stops_on(store: &Store, url: &str, options: FollowOptions) -> FollowError {
    let mut follower = Follower::start(store.clone(), leader(url), options);
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(30), follower.wait())
        .await
        .expect("the follower went on");
    stopped.expect_err("the follower stopped without an error")
}

/// An old leader `old`, replaced by `new` (promoted from its follower), which then
/// took writes. The old leader wrote to `unshipped` after its follower's last fetch.
/// Returns the new leader's server.
async fn fail_over(old: &Store, new: &Store, unshipped: &[&str]) -> Spawned {
    for i in 0..40 {
        add(old, &format!("acct-{}", i % 7)).await;
    }
    let old_server = serve(old.clone()).await;
    let old_url = old_server.url().to_owned();
    let follower = Follower::start(new.clone(), leader(&old_url), FollowOptions::default());
    caught_up(old, new).await;
    follower.stop().await.expect("stop");
    for stream in unshipped {
        add(old, stream).await;
    }
    old_server.stop().await.expect("old leader stops");
    assert_eq!(new.promote().await.expect("promote").epoch, 1);
    add(new, "acct-1").await;
    add(new, "acct-2").await;
    serve(new.clone()).await
}

async fn pair() -> ([TestStore; 2], Store, Store) {
    let stores = [
        TestStore::sqlite().await.expect("s"),
        TestStore::sqlite().await.expect("s"),
    ];
    let old = stores[0].open_with(|o| o.partitions(16)).await.expect("open");
    let new = stores[1].open_with(|o| o.partitions(16)).await.expect("open");
    (stores, old, new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_leader_follows_the_new_one_or_refuses_when_it_diverged() {
    // The old leader, unchanged since, comes back as a follower: it catches up, and
    // takes the new leader's epoch.
    let (_stores, old, new) = pair().await;
    let new_server = fail_over(&old, &new, &[]).await;
    let new_url = new_server.url().to_owned();
    let rejoined = Follower::start(old.clone(), leader(&new_url), FollowOptions::default());
    caught_up(&new, &old).await;
    rejoined.stop().await.expect("stop");
    assert_eq!(old.replica().leader.as_deref(), Some(new_url.as_str()));
    assert_eq!(old.replica().epoch, 1, "a follower takes its leader's epoch");
    new_server.stop().await.expect("server stops");

    // Had it written after its follower's last fetch, it refuses, says where, and
    // changes nothing: its records, its role.
    let (_stores, old, new) = pair().await;
    let new_server = fail_over(&old, &new, &["acct-1"]).await;
    let new_url = new_server.url().to_owned();
    let before = everything(&old).await;
    let FollowError::Diverged { partition, .. } = stops_on(&old, &new_url, FollowOptions::default()).await else {
        panic!("a diverged log was followed");
    };
    assert_eq!(
        partition,
        annals::partition_for(&StreamId::new("acct-1").expect("id"), 16)
    );
    assert_eq!(everything(&old).await, before, "a refused follower changed its log");
    assert_eq!(
        old.refresh_replica().await.expect("role"),
        annals::Replica { leader: None, epoch: 0 },
        "a refused follower changed its role"
    );
    new_server.stop().await.expect("server stops");

    // A store never promoted is at epoch 0: the promoted one (epoch 1) refuses it.
    let deposed = TestStore::sqlite().await.expect("s");
    let deposed = deposed.open_with(|o| o.partitions(16)).await.expect("open");
    let deposed_server = serve(deposed).await;
    let deposed_url = deposed_server.url().to_owned();
    let refused = stops_on(&new, &deposed_url, FollowOptions::default()).await;
    assert!(
        matches!(refused, FollowError::StaleLeader { theirs: 0, ours: 1, .. }),
        "{refused:?}"
    );
    deposed_server.stop().await.expect("server stops");
}

/// The bug this guards: a diverged follower could only start again from an empty
/// store. With the operator's leave it is cut back to the last record it shares with
/// the leader, never by more than the bound, after the records are written to a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverged_follower_is_cut_back_within_the_bound() {
    let sqlite = TestStore::sqlite().await.expect("s");
    let Some(postgres) = TestStore::postgres().await else {
        return;
    };
    let old = sqlite.open_with(|o| o.partitions(16)).await.expect("open");
    let new = postgres.open_with(|o| o.partitions(16)).await.expect("open");
    // The old leader took three appends (six records) the new one never had.
    let new_server = fail_over(&old, &new, &["acct-1", "acct-3", "acct-3"]).await;
    let new_url = new_server.url().to_owned();
    let diverged = everything(&old).await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("cut.jsonl");
    let options = |max_records| FollowOptions {
        truncate_diverged: Some(Truncation {
            max_records,
            removed_to: file.clone(),
        }),
    };

    let refused = stops_on(&old, &new_url, options(5)).await;
    assert!(
        matches!(refused, FollowError::TruncationTooLarge { records: 6, max: 5 }),
        "{refused:?}"
    );
    assert_eq!(everything(&old).await, diverged, "a refused cut removed records");
    assert!(!file.exists(), "a refused cut wrote its file");

    let follower = Follower::start(old.clone(), leader(&new_url), options(6));
    caught_up(&new, &old).await;
    follower.stop().await.expect("stop");
    assert_eq!(
        everything(&old).await,
        everything(&new).await,
        "the logs differ after the cut"
    );
    let removed: Vec<RecordedEvent> = std::fs::read_to_string(&file)
        .expect("the file of removed records")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a record"))
        .collect();
    assert_eq!(removed.len(), 6);
    assert!(removed.iter().all(|record| diverged.contains(record)));
    let kept = everything(&new).await;
    assert!(removed.iter().all(|record| !kept.contains(record)));
    new_server.stop().await.expect("server stops");
}

/// Records an at-least-once consumer was handed.
#[derive(Clone, Default)]
struct Seen(std::sync::Arc<std::sync::Mutex<Vec<(annals::Partition, annals::Offset)>>>);

#[annals::async_trait]
impl annals::group::Consumer for Seen {
    async fn handle(&self, record: &RecordedEvent, _: &annals::group::Processed) -> annals::Result<()> {
        self.0.lock().expect("lock").push((record.partition, record.offset));
        Ok(())
    }
}

/// Consumer groups across a failover, as `__consumer_offsets` gives Kafka users: an
/// at-least-once group resumes on the promoted store where it was on the old leader
/// (the follower copied its offsets), not from offset 0; a projection group, whose
/// read model stayed in the old leader's database, is not copied and builds its
/// tables anew from offset 0. From SQLite to PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_groups_resume_after_a_failover() {
    use annals::group::{admin, GroupMember, GroupOptions};
    use annals_testkit::tally;

    let sqlite = TestStore::sqlite().await.expect("s");
    let Some(postgres) = TestStore::postgres().await else {
        return;
    };
    let old = sqlite.open_with(|o| o.partitions(16)).await.expect("open");
    let new = postgres.open_with(|o| o.partitions(16)).await.expect("open");
    let options = || GroupOptions {
        heartbeat_interval: std::time::Duration::from_millis(50),
        ..GroupOptions::default()
    };
    for i in 0..60 {
        tally::add(&old, &format!("acct-{}", i % 5), 1).await;
    }
    let before = Seen::default();
    let mailer = GroupMember::consumer(&old, "mailer", before.clone(), options())
        .await
        .expect("a consumer");
    tally::caught_up(&old, "mailer").await;
    mailer.shutdown().await.expect("leave");
    let table = tally::Tally::new("tally");
    let projection = GroupMember::projection(&old, "tally", table.clone(), options())
        .await
        .expect("a projection");
    tally::caught_up(&old, "tally").await;
    projection.shutdown().await.expect("leave");

    let old_server = serve(old.clone()).await;
    let old_url = old_server.url().to_owned();
    let follower = Follower::start(new.clone(), leader(&old_url), FollowOptions::default());
    caught_up(&old, &new).await;
    let committed = |d: &admin::GroupDescription| d.partitions.iter().map(|p| p.committed).collect::<Vec<_>>();
    let on_old = committed(&admin::describe(&old, "mailer").await.expect("describe"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let copied = loop {
        if let Ok(copied) = admin::describe(&new, "mailer").await {
            if committed(&copied) == on_old {
                break copied;
            }
        }
        assert!(std::time::Instant::now() < deadline, "the group was never copied");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(copied.mirrored_from.as_deref(), Some(old_url.as_str()));
    assert!(
        admin::describe(&new, "tally").await.is_err(),
        "a projection group was copied without its read model"
    );
    follower.stop().await.expect("stop");
    old_server.stop().await.expect("old leader stops");

    // Failover: the promoted store takes appends; its groups start.
    new.promote().await.expect("promote");
    for i in 0..10 {
        tally::add(&new, &format!("acct-{}", i % 5), 1).await;
    }
    let after = Seen::default();
    let mailer = GroupMember::consumer(&new, "mailer", after.clone(), options())
        .await
        .expect("the consumer on the promoted store");
    tally::caught_up(&new, "mailer").await;
    mailer.shutdown().await.expect("leave");
    let handled = after.0.lock().expect("lock").clone();
    assert_eq!(
        handled.len(),
        10,
        "the consumer replayed what it had handled: {handled:?}"
    );
    assert!(handled
        .iter()
        .all(|(partition, offset)| *offset >= on_old[partition.index()]));
    let own = admin::describe(&new, "mailer").await.expect("describe");
    assert_eq!(own.mirrored_from, None, "a group members joined is the store's own");

    let projection = GroupMember::projection(&new, "tally", table.clone(), options())
        .await
        .expect("the projection on the promoted store");
    tally::caught_up(&new, "tally").await;
    projection.shutdown().await.expect("leave");
    assert_eq!(
        table.totals(&new).await,
        tally::fold_log(&new).await,
        "rebuilt from offset 0"
    );
}
