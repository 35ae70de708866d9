//! Records applied verbatim on a follower (I8), command ids rebuilt (I5 across a
//! failover), read-only followers, promotion; across engines (a PostgreSQL follower of
//! a SQLite leader is how a store moves to PostgreSQL).

use annals::{
    AppendRequest, Error, ExpectedVersion, Metadata, NewEvent, Offset, RecordedEvent, Store, StoreOptions, StreamId,
    Version,
};
use annals_testkit::TestStore;
use serde_json::json;
use sqlx::Connection;
use uuid::Uuid;

async fn open(t: &TestStore) -> Store {
    t.open_with(|o| o.partitions(16)).await.expect("open")
}

async fn fill(leader: &Store) -> Vec<Uuid> {
    let mut commands = Vec::new();
    for i in 0..120u64 {
        let stream = StreamId::new(format!("acct-{}", i % 13)).expect("id");
        let command = Uuid::now_v7();
        commands.push(command);
        let mut request = AppendRequest::new(stream, ExpectedVersion::Any).command_id(command);
        for j in 0..(i % 3 + 1) {
            let metadata = Metadata::default().with("n", i).with("z", "last");
            request = request.event(
                NewEvent::from_json_text("Posted", format!(r#"{{"amount": {i}, "j" : {j}, "f": 1.50}}"#))
                    .expect("payload")
                    .with_metadata(metadata),
            );
        }
        leader.append(request).await.expect("append");
    }
    commands
}

async fn partition(store: &Store, p: u32) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    loop {
        let page = store.read_partition(p, all.len() as u64, 1_000).await.expect("read");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// Ships everything the follower lacks, as a follower does: fetches of about `page`
/// records, whole appends.
async fn ship(leader: &Store, follower: &Store, page: usize) {
    for p in 0..leader.partition_count() {
        loop {
            let next = follower.high_watermarks().await.expect("hw")[p as usize];
            let records = leader
                .fetch(p, next, page, std::time::Duration::ZERO)
                .await
                .expect("read");
            if records.is_empty() {
                break;
            }
            follower.apply_replicated(records).await.expect("apply");
        }
    }
}

async fn follower_mirrors_the_leader(leader: TestStore, follower: TestStore) {
    let (leader, follower) = (open(&leader).await, open(&follower).await);
    let commands = fill(&leader).await;
    follower.follow("http://leader.example:7070", 0).await.expect("follow");
    assert_eq!(follower.replica().role(), "follower");

    ship(&leader, &follower, 7).await;
    for p in 0..16 {
        assert_eq!(
            partition(&follower, p).await,
            partition(&leader, p).await,
            "partition {p} differs"
        );
    }

    // A consumer group runs on the follower: its offsets and read model are the
    // follower's own.
    let tally = annals_testkit::tally::Tally::new("tally");
    let options = annals::group::GroupOptions {
        heartbeat_interval: std::time::Duration::from_millis(50),
        ..Default::default()
    };
    let member = annals::group::GroupMember::projection(&follower, "tally", tally.clone(), options)
        .await
        .expect("a group joins on the follower");
    annals_testkit::tally::caught_up(&follower, "tally").await;
    member.shutdown().await.expect("leave");
    assert_eq!(
        tally.totals(&follower).await,
        annals_testkit::tally::fold_log(&follower).await
    );

    // Only the leader takes appends.
    let refused = follower
        .append(
            AppendRequest::new(StreamId::new("acct-1").expect("id"), ExpectedVersion::Any)
                .event(NewEvent::json("X", &json!(1)).expect("e")),
        )
        .await;
    assert!(
        matches!(&refused, Err(Error::ReadOnlyReplica { leader }) if leader == "http://leader.example:7070"),
        "{refused:?}"
    );

    // A gap, an overlap, part of an append or a stream of another partition writes
    // nothing.
    let p0 = partition(&leader, 0).await;
    let first_append = p0.iter().position(|r| r.last_in_append).expect("an append") + 1;
    let overlap = follower.apply_replicated(p0[..first_append].to_vec()).await;
    assert!(matches!(overlap, Err(Error::ReplicationGap { .. })), "{overlap:?}");
    let mut gapped = p0[..first_append + 1].to_vec();
    gapped.remove(0);
    assert!(matches!(
        follower.apply_replicated(gapped).await,
        Err(Error::ReplicationGap { .. })
    ));
    let multi = p0.iter().position(|r| !r.last_in_append).expect("a multi-event append");
    let mut cut = p0[multi..=multi].to_vec();
    cut[0].offset = Offset(p0.len() as u64);
    let refused = follower.apply_replicated(cut.clone()).await;
    assert!(
        matches!(refused, Err(Error::InvalidReplicatedRecords { .. })),
        "part of an append was taken: {refused:?}"
    );
    cut[0].last_in_append = true;
    cut[0].stream = StreamId::new("acct-0.elsewhere").expect("id");
    assert_ne!(annals::partition_for(&cut[0].stream, 16), 0);
    let refused = follower.apply_replicated(cut).await;
    assert!(
        matches!(refused, Err(Error::InvalidReplicatedRecords { .. })),
        "{refused:?}"
    );
    assert_eq!(partition(&follower, 0).await, p0);

    // Failover: promoted, it takes appends, and the old leader's command ids are duplicates.
    let promoted = follower.promote().await.expect("promote");
    assert_eq!((promoted.leader, promoted.epoch), (None, 1));
    // Records the old leader still ships (a fetch in flight) are refused.
    leader
        .append(
            AppendRequest::new(p0[0].stream.clone(), ExpectedVersion::Any)
                .event(NewEvent::json("Posted", &json!({})).expect("e")),
        )
        .await
        .expect("the old leader appends");
    let late = partition(&leader, 0).await[p0.len()..].to_vec();
    assert_eq!(late.len(), 1);
    let refused = follower.apply_replicated(late).await;
    assert!(matches!(refused, Err(Error::NotAReplica)), "{refused:?}");
    assert_eq!(partition(&follower, 0).await, p0);
    // Command 7 went to acct-7 (acct-{i % 13}).
    let stream = StreamId::new("acct-7").expect("id");
    let retried = follower
        .append(
            AppendRequest::new(stream.clone(), ExpectedVersion::Any)
                .command_id(commands[7])
                .event(NewEvent::json("Posted", &json!({})).expect("e")),
        )
        .await
        .expect("retry");
    assert!(
        retried.duplicate,
        "a command applied on the old leader ran again after failover"
    );
    let (_, original) = leader
        .command_outcome(commands[7])
        .await
        .expect("lookup")
        .expect("known");
    assert_eq!(
        (
            retried.first_offset,
            retried.last_offset,
            retried.first_version,
            retried.last_version
        ),
        (
            original.first_offset,
            original.last_offset,
            original.first_version,
            original.last_version
        )
    );
    let fresh = follower
        .append(
            AppendRequest::new(stream, ExpectedVersion::Any).event(NewEvent::json("Posted", &json!({})).expect("e")),
        )
        .await
        .expect("append on the new leader");
    assert!(!fresh.duplicate);
    follower.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_follows_sqlite() {
    follower_mirrors_the_leader(
        TestStore::sqlite().await.expect("s"),
        TestStore::sqlite().await.expect("s"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_follows_sqlite() {
    if let Some(pg) = TestStore::postgres().await {
        follower_mirrors_the_leader(TestStore::sqlite().await.expect("s"), pg).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_follows_postgres() {
    if let (Some(leader), Some(follower)) = (TestStore::postgres().await, TestStore::postgres().await) {
        follower_mirrors_the_leader(leader, follower).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_follows_postgres() {
    if let Some(pg) = TestStore::postgres().await {
        follower_mirrors_the_leader(pg, TestStore::sqlite().await.expect("s")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_and_epoch_survive_a_reopen() {
    let t = TestStore::sqlite().await.expect("s");
    let store = open(&t).await;
    store.follow("http://a:1", 3).await.expect("follow");
    store.close().await;
    let again = StoreOptions::from_url(t.url().expect("url"))
        .expect("url")
        .open()
        .await
        .expect("open");
    assert_eq!(again.replica().leader.as_deref(), Some("http://a:1"));
    assert_eq!(again.replica().epoch, 3, "a follower takes its leader's epoch");
    assert_eq!(
        again.follow("http://b:1", 1).await.expect("follow").epoch,
        3,
        "an epoch never goes down"
    );
    again.promote().await.expect("promote");
    again.promote().await.expect("promote");
    again.close().await;
    let third = open(&t).await;
    assert_eq!((third.replica().leader, third.replica().epoch), (None, 5));
}

/// Records applied on a PostgreSQL follower are announced with `NOTIFY`, as appends
/// are: subscribers in other processes on the follower's database wake at once rather
/// than at their next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_follower_notifies_what_it_applies() {
    let Some(pg) = TestStore::postgres().await else { return };
    let sqlite = TestStore::sqlite().await.expect("s");
    let leader = open(&sqlite).await;
    fill(&leader).await;
    let follower = open(&pg).await;
    follower.follow("http://leader.example:7070", 0).await.expect("follow");

    let url = pg.url().expect("url");
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let store_id: Uuid = sqlx::query_scalar("SELECT store_id FROM annals_store")
        .fetch_one(&mut conn)
        .await
        .expect("store id");
    let mut listener = sqlx::postgres::PgListener::connect(url).await.expect("listener");
    let channel = format!("annals_{}", store_id.simple());
    listener.listen(&channel).await.expect("LISTEN");

    let p = annals::partition_for(&StreamId::new("acct-0").expect("id"), 16);
    let records = leader.read_partition(p, 0, 1_000).await.expect("read");
    let next = records.len();
    follower.apply_replicated(records).await.expect("apply");
    let heard = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification within 10 s")
        .expect("a notification");
    assert!(
        heard.payload().split(' ').any(|pair| pair == format!("{p}:{next}")),
        "{:?}",
        heard.payload()
    );
}

/// A truncation takes with the records what names them: the snapshots that folded
/// them, their dead letters; a group's committed offset past the new end comes back
/// to it, so the group handles the records the leader ships in their place.
async fn truncation_takes_what_named_the_removed_records(t: TestStore) {
    use annals::group::{admin, GroupMember, GroupOptions};
    use annals_testkit::tally;

    let leader = Store::open("memory:").await.expect("memory");
    let follower = open(&t).await;
    follower.follow("http://leader.invalid", 0).await.expect("follow");
    let acct = "acct-1";
    let partition = annals::partition_for(&StreamId::new(acct).expect("id"), 16);
    for amount in 1..=3 {
        tally::add(&leader, acct, amount).await;
    }
    ship(&leader, &follower, 100).await;
    let kept = follower.high_watermark(partition).await.expect("hw");
    // What the follower holds beyond `kept` is what a truncation will remove.
    tally::add(&leader, acct, 4).await;
    tally::add_poison(&leader, acct).await;
    ship(&leader, &follower, 100).await;

    let table = tally::Tally::new("tally");
    let options = GroupOptions {
        heartbeat_interval: std::time::Duration::from_millis(50),
        retry_backoff: std::time::Duration::from_millis(5),
        max_attempts: 1,
        ..GroupOptions::default()
    };
    let member = GroupMember::projection(&follower, "tally", table.clone(), options)
        .await
        .expect("a group on the follower");
    tally::caught_up(&follower, "tally").await;
    member.shutdown().await.expect("leave");
    let dead = admin::dead_letters(&follower, Some("tally"))
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1, "the poison record is a dead letter");
    let stream = StreamId::new(acct).expect("id");
    let db = follower.read_models().expect("db");
    for version in [Version(3), Version(4)] {
        db.transaction(move |tx| {
            Box::pin(async move {
                annals::snapshot::write(tx, &StreamId::new("acct-1").expect("id"), version, 1, "{}").await
            })
        })
        .await
        .expect("a snapshot");
    }

    let end = follower.high_watermark(partition).await.expect("hw");
    follower.truncate_replica(partition, kept, end).await.expect("truncate");
    assert_eq!(follower.high_watermark(partition).await.expect("hw"), kept);
    let newest = annals::snapshot::newest(&follower, &stream).await.expect("snapshot");
    assert_eq!(
        newest.map(|s| s.version),
        Some(Version(3)),
        "a snapshot of removed records stayed"
    );
    assert!(admin::dead_letters(&follower, Some("tally"))
        .await
        .expect("dead letters")
        .is_empty());
    // The projection's table holds the removed records' effects: its partition stops,
    // for an operator to rebuild it, and it does not apply what is shipped in their
    // place on top of them.
    let described = admin::describe(&follower, "tally").await.expect("describe");
    let state = &described.partitions[partition.index()];
    assert_eq!(state.committed, kept);
    assert!(state.paused, "{state:?}");
    assert!(
        state
            .stopped_reason
            .as_deref()
            .is_some_and(|reason| reason.contains("truncation")),
        "{state:?}"
    );
    assert_eq!(described.lag, 0);
}

annals_testkit::on_sql_engines!(truncation_takes_what_named_the_removed_records);
