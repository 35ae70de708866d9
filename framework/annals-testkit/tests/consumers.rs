//! Consumer groups with at-least-once consumers, on every engine (the memory engine
//! included): the group protocol, fencing, delivery order and dead letters need no SQL
//! read model, so each engine must give the same answers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::group::admin::{self, DeadLetterStatus, ResetTo};
use annals::group::{Consumer, Filter, GroupMember, GroupOptions, Processed};
use annals::{async_trait, Error, Offset, Partition, RecordedEvent, Version};
use annals_testkit::tally::{add, add_poison, caught_up};
use annals_testkit::{wait_for, TestStore};

annals_testkit::on_every_engine!(
    at_least_once_consumers_dedup_with_processed,
    each_partition_is_delivered_in_offset_order,
    an_expired_member_is_replaced_and_nothing_is_lost,
    a_dead_letter_parks_its_stream_until_skipped,
    a_truncation_moves_offsets_back_and_drops_dead_letters,
);

fn fast() -> GroupOptions {
    GroupOptions {
        batch_size: 50,
        session_timeout: Duration::from_secs(3),
        heartbeat_interval: Duration::from_millis(100),
        retry_backoff: Duration::from_millis(5),
        ..GroupOptions::default()
    }
}

/// One delivery: partition, offset, stream and version.
type Delivery = (Partition, Offset, String, Version);

/// Every delivery, per member, in the order the member saw them; fails on poison.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Delivery>>>,
}

impl Recorder {
    fn seen(&self) -> Vec<Delivery> {
        self.seen.lock().expect("lock").clone()
    }
}

#[async_trait]
impl Consumer for Recorder {
    async fn handle(&self, record: &RecordedEvent, _: &Processed) -> annals::Result<()> {
        let payload: serde_json::Value = record.decode()?;
        if payload["poison"] == true {
            return Err(Error::handler("poison"));
        }
        self.seen.lock().expect("lock").push((
            record.partition,
            record.offset,
            record.stream.as_str().to_owned(),
            record.version,
        ));
        Ok(())
    }
}

/// Records every delivery of `acct` streams; marks event ids as processed after the
/// "side effect".
struct Mailer {
    sent: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Consumer for Mailer {
    fn filter(&self) -> Filter {
        Filter::categories(["acct"]).expect("category").event_types(["Added"])
    }

    async fn handle(&self, record: &RecordedEvent, processed: &Processed) -> annals::Result<()> {
        if processed.contains(record.event_id).await? {
            return Ok(());
        }
        self.sent.lock().expect("lock").push(record.stream.to_string());
        processed.insert(record.event_id).await?;
        Ok(())
    }
}

async fn at_least_once_consumers_dedup_with_processed(t: TestStore) {
    let store = t.open().await;
    for i in 0..20 {
        add(&store, &format!("acct-{}", i % 3), i).await;
        add(&store, &format!("other-{}", i % 3), i).await;
    }
    let sent = Arc::new(Mutex::new(Vec::new()));
    let member = GroupMember::consumer(&store, "mail", Mailer { sent: sent.clone() }, fast())
        .await
        .expect("joins");
    caught_up(&store, "mail").await;
    member.shutdown().await.expect("leaves");
    assert_eq!(
        sent.lock().expect("lock").len(),
        20,
        "the filter let other streams through"
    );
    // A redelivery (offsets reset) sends nothing twice.
    admin::reset(&store, "mail", ResetTo::Earliest).await.expect("reset");
    let member = GroupMember::consumer(&store, "mail", Mailer { sent: sent.clone() }, fast())
        .await
        .expect("joins");
    caught_up(&store, "mail").await;
    member.shutdown().await.expect("leaves");
    assert_eq!(sent.lock().expect("lock").len(), 20);
}

/// I7: two members share the partitions; every record reaches one of them, and each
/// member sees each partition's records in offset order.
async fn each_partition_is_delivered_in_offset_order(t: TestStore) {
    let store = t.open().await;
    let (a, b) = (Recorder::default(), Recorder::default());
    let first = GroupMember::consumer(&store, "order", a.clone(), fast())
        .await
        .expect("a joins");
    let second = GroupMember::consumer(&store, "order", b.clone(), fast())
        .await
        .expect("b joins");
    for i in 0..400 {
        add(&store, &format!("acct-{}", i % 37), i).await;
    }
    caught_up(&store, "order").await;
    first.shutdown().await.expect("a leaves");
    second.shutdown().await.expect("b leaves");

    let mut delivered: BTreeMap<Partition, Vec<Offset>> = BTreeMap::new();
    for (partition, offset, _, _) in a.seen().into_iter().chain(b.seen()) {
        delivered.entry(partition).or_default().push(offset);
    }
    let mut total = 0;
    for (partition, end) in store.high_watermarks().await.expect("ends").into_iter().enumerate() {
        let mut offsets = delivered.remove(&Partition(partition as u32)).unwrap_or_default();
        offsets.sort_unstable();
        offsets.dedup();
        assert_eq!(
            offsets,
            (0..end.0).map(Offset).collect::<Vec<_>>(),
            "partition {partition} lost records"
        );
        total += end.0;
    }
    assert_eq!(total, 400);
    // Neither member gets back a partition it lost here, so each sees every partition
    // it had in strictly increasing offsets.
    for recorder in [&a, &b] {
        let mut last: BTreeMap<Partition, Offset> = BTreeMap::new();
        for (partition, offset, _, _) in recorder.seen() {
            let before = last.insert(partition, offset);
            assert!(
                before.is_none_or(|before| offset > before),
                "partition {partition}: offset {offset} after {before:?}"
            );
        }
    }
}

/// I6 and I7: a member that stops heartbeating is expired by the next member's
/// heartbeat, which takes its partitions in a new generation (the stale member's
/// commits are fenced from then on; when its workers stop on that, it joins again as a
/// new member). Every record still reaches the group, and its offsets end at the log's
/// end.
async fn an_expired_member_is_replaced_and_nothing_is_lost(t: TestStore) {
    let store = t.open().await;
    let stalled = GroupOptions {
        session_timeout: Duration::from_millis(500),
        heartbeat_interval: Duration::from_secs(3600),
        ..fast()
    };
    let (stale_seen, live_seen) = (Recorder::default(), Recorder::default());
    let stale = GroupMember::consumer(&store, "g", stale_seen.clone(), stalled)
        .await
        .expect("stale member joins");
    assert_eq!(stale.assignment().len(), store.partition_count() as usize);
    let before = admin::describe(&store, "g").await.expect("describe").generation;
    tokio::time::sleep(Duration::from_millis(700)).await;

    let live = GroupMember::consumer(&store, "g", live_seen.clone(), fast())
        .await
        .expect("live member joins");
    assert_eq!(live.assignment().len(), store.partition_count() as usize);
    let described = admin::describe(&store, "g").await.expect("describe");
    assert_eq!(described.members.len(), 1, "{described:#?}");
    assert!(described.generation > before, "no new generation: {described:#?}");

    for i in 0..200 {
        add(&store, &format!("acct-{}", i % 13), i).await;
    }
    caught_up(&store, "g").await;
    let described = admin::describe(&store, "g").await.expect("describe");
    for partition in &described.partitions {
        assert_eq!(partition.committed, partition.high_watermark, "{described:#?}");
    }
    let mut offsets: Vec<(Partition, Offset)> = live_seen
        .seen()
        .into_iter()
        .chain(stale_seen.seen())
        .map(|(p, o, _, _)| (p, o))
        .collect();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets.len(), 200, "records were lost");
    live.shutdown().await.expect("live member leaves");
    stale.shutdown().await.expect("stale member stops");
}

/// I7 with dead letters: a record that keeps failing is dead-lettered and its stream's
/// later records wait behind it, parked, while other streams go on; skipping it hands
/// them back in order.
async fn a_dead_letter_parks_its_stream_until_skipped(t: TestStore) {
    let store = t.open().await;
    let seen = Recorder::default();
    let member = GroupMember::consumer(&store, "g", seen.clone(), fast())
        .await
        .expect("joins");
    add(&store, "acct-1", 1).await;
    add_poison(&store, "acct-1").await;
    add(&store, "acct-1", 3).await;
    add(&store, "acct-1", 4).await;
    add(&store, "acct-2", 5).await;
    caught_up(&store, "g").await;
    let letters = admin::dead_letters(&store, Some("g")).await.expect("list");
    let statuses: Vec<DeadLetterStatus> = letters.iter().map(|l| l.status).collect();
    assert_eq!(
        statuses,
        [
            DeadLetterStatus::Failed,
            DeadLetterStatus::Parked,
            DeadLetterStatus::Parked
        ],
        "{letters:#?}"
    );
    assert_eq!(letters[0].attempts, 3);
    assert!(
        seen.seen().iter().any(|(_, _, stream, _)| stream == "acct-2"),
        "another stream waited"
    );

    let skipped = admin::skip_dead_letter(&store, letters[0].id).await.expect("skip");
    assert_eq!(skipped.offset, letters[0].offset);
    wait_for("the parked records to be handled", async || {
        admin::dead_letters(&store, Some("g")).await.expect("list").is_empty()
    })
    .await;
    let versions: Vec<u64> = seen
        .seen()
        .iter()
        .filter(|(_, _, stream, _)| stream == "acct-1")
        .map(|(_, _, _, version)| version.0)
        .collect();
    assert_eq!(versions, [1, 3, 4], "the skipped record's stream went on in order");
    assert!(matches!(
        admin::retry_dead_letter(&store, letters[0].id).await,
        Err(Error::DeadLetterNotFound { .. })
    ));
    member.shutdown().await.expect("leaves");
}

/// A follower's truncation takes what named the removed records: a group's offsets
/// past the new end come back to it, and the dead letters of removed records go.
async fn a_truncation_moves_offsets_back_and_drops_dead_letters(t: TestStore) {
    let leader = annals::Store::open("memory:").await.expect("leader");
    add(&leader, "acct-1", 1).await;
    add(&leader, "acct-1", 2).await;
    add_poison(&leader, "acct-1").await;
    add(&leader, "acct-1", 4).await;
    let stream = annals::StreamId::new("acct-1").expect("id");
    let records = leader.read_stream(&stream, 1, 10).await.expect("read");
    let partition = records[0].partition;

    let follower = t.open().await;
    follower.follow("http://leader.invalid", 0).await.expect("follow");
    follower.apply_replicated(records.clone()).await.expect("replicate");
    let member = GroupMember::consumer(&follower, "g", Recorder::default(), fast())
        .await
        .expect("joins");
    caught_up(&follower, "g").await;
    member.shutdown().await.expect("leaves");
    assert_eq!(admin::dead_letters(&follower, Some("g")).await.expect("list").len(), 2);

    let end = follower.high_watermark(partition).await.expect("end");
    follower
        .truncate_replica(partition, records[1].offset, end)
        .await
        .expect("truncate");
    let described = admin::describe(&follower, "g").await.expect("describe");
    let state = &described.partitions[partition.index()];
    assert_eq!(state.committed, records[1].offset, "{described:#?}");
    assert!(!state.paused, "an at-least-once group goes on: {described:#?}");
    assert!(
        admin::dead_letters(&follower, Some("g"))
            .await
            .expect("list")
            .is_empty(),
        "dead letters of removed records stayed"
    );
}

/// A projection that asks for the groups from inside its own transaction.
struct AsksInside {
    store: annals::Store,
}

#[async_trait]
impl annals::group::Projection for AsksInside {
    async fn handle(&self, _: &RecordedEvent, _: &mut annals::readmodel::Tx) -> annals::Result<()> {
        admin::list(&self.store).await.map(drop)
    }
}

/// On a memory store a group transaction holds the groups until it ends: group work a
/// handler starts from inside one is refused, not left waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_work_inside_a_memory_transaction_is_refused() {
    let store = annals::Store::open("memory:").await.expect("memory");
    let options = GroupOptions {
        max_attempts: 1,
        ..fast()
    };
    let member = GroupMember::projection(&store, "g", AsksInside { store: store.clone() }, options)
        .await
        .expect("joins");
    add(&store, "acct-1", 1).await;
    wait_for("the record to be dead-lettered", async || {
        !admin::dead_letters(&store, Some("g")).await.expect("list").is_empty()
    })
    .await;
    let letters = admin::dead_letters(&store, Some("g")).await.expect("list");
    assert!(letters[0].error.contains("inside a group transaction"), "{letters:#?}");
    member.shutdown().await.expect("leaves");
}
