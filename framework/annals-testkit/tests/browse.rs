//! Finding records as an operator does: by event id, from a time, streams by prefix,
//! and a partition's records by event type, with and without the event-type index.

use annals::group::FilterIndex;
use annals::{AppendRequest, ExpectedVersion, Metadata, NewEvent, Offset, Partition, Store, StreamId, Version};
use annals_testkit::TestStore;
use serde_json::json;

annals_testkit::on_every_engine!(
    a_record_is_found_by_its_event_id,
    partitions_and_streams_are_read_from_a_time,
    streams_are_found_by_prefix_in_pages,
    records_are_read_by_event_type_with_and_without_an_index,
);

fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("stream id")
}

async fn append(store: &Store, id: &str, event_type: &str, n: u64) -> annals::AppendOutcome {
    let event = NewEvent::json(event_type, &json!({ "n": n })).expect("event");
    store
        .append(AppendRequest::new(stream(id), ExpectedVersion::Any).event(event))
        .await
        .expect("append")
}

async fn a_record_is_found_by_its_event_id(t: TestStore) {
    let store = t.open().await;
    append(&store, "order-1", "Placed", 1).await;
    let placed = store
        .read_stream(&stream("order-1"), 1, 1)
        .await
        .expect("read")
        .remove(0);
    let caused = NewEvent::json("Paid", &json!({"n": 2}))
        .expect("event")
        .with_metadata(Metadata::new().with_causation_id(placed.event_id));
    store
        .append(AppendRequest::new(stream("payment-1"), ExpectedVersion::NoStream).event(caused))
        .await
        .expect("append");
    let paid = store
        .read_stream(&stream("payment-1"), 1, 1)
        .await
        .expect("read")
        .remove(0);
    let found = store
        .read_event(paid.metadata.causation_id.expect("causation"))
        .await
        .expect("read");
    assert_eq!(found.as_ref(), Some(&placed));
    assert_eq!(store.read_event(paid.event_id).await.expect("read"), Some(paid));
    assert_eq!(store.read_event(uuid::Uuid::now_v7()).await.expect("read"), None);
}

async fn partitions_and_streams_are_read_from_a_time(t: TestStore) {
    let store = t.open().await;
    let mut times = Vec::new();
    for n in 0..6 {
        append(&store, "clock-1", "Ticked", n).await;
        let record = store
            .read_stream(&stream("clock-1"), n + 1, 1)
            .await
            .expect("read")
            .remove(0);
        times.push(record.recorded_at);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let partition = annals::partition_for(&stream("clock-1"), store.partition_count());
    for (n, time) in times.iter().enumerate() {
        assert_eq!(
            store.offset_at(partition, *time).await.expect("offset"),
            Offset(n as u64)
        );
        assert_eq!(
            store.version_at(&stream("clock-1"), *time).await.expect("version"),
            Some(Version(n as u64 + 1))
        );
    }
    let before = times[0] - chrono::Duration::seconds(60);
    let after = times[5] + chrono::Duration::seconds(60);
    assert_eq!(store.offset_at(partition, before).await.expect("offset"), Offset(0));
    assert_eq!(
        store.offset_at(partition, after).await.expect("offset"),
        Offset(6),
        "the partition's end"
    );
    assert_eq!(
        store.version_at(&stream("clock-1"), after).await.expect("version"),
        None
    );
    let empty = Partition((partition.0 + 1) % store.partition_count());
    assert_eq!(store.offset_at(empty, before).await.expect("offset"), Offset(0));
}

async fn streams_are_found_by_prefix_in_pages(t: TestStore) {
    let store = t.open().await;
    for id in [
        "acct", "acct-1", "acct-10", "acct-2", "acct-3", "acctx-1", "order-1", "ac-1",
    ] {
        append(&store, id, "Opened", 0).await;
    }
    let ids = |infos: Vec<annals::StreamInfo>| infos.into_iter().map(|i| i.stream.to_string()).collect::<Vec<_>>();
    let all = ids(store.streams_with_prefix("acct", 100, None).await.expect("find"));
    assert_eq!(all, ["acct", "acct-1", "acct-10", "acct-2", "acct-3", "acctx-1"]);
    assert_eq!(
        ids(store.streams_with_prefix("acct-1", 100, None).await.expect("find")),
        ["acct-1", "acct-10"]
    );
    // In pages of two, each after the last id of the one before.
    let mut pages = Vec::new();
    let mut after: Option<StreamId> = None;
    loop {
        let page = store
            .streams_with_prefix("acct-", 2, after.as_ref())
            .await
            .expect("find");
        let Some(last) = page.last() else { break };
        after = Some(last.stream.clone());
        pages.push(ids(page));
    }
    assert_eq!(pages, [vec!["acct-1", "acct-10"], vec!["acct-2", "acct-3"]]);
    assert!(store
        .streams_with_prefix("zzz", 10, None)
        .await
        .expect("find")
        .is_empty());
    assert!(
        store
            .streams_with_prefix("acct 1", 10, None)
            .await
            .expect("find")
            .is_empty(),
        "no id holds a space"
    );
    assert_eq!(store.streams_with_prefix("", 100, None).await.expect("find").len(), 8);
    // A page of another search, below the prefix, starts at the prefix.
    let below = stream("ac-1");
    assert_eq!(
        ids(store
            .streams_with_prefix("acct-1", 100, Some(&below))
            .await
            .expect("find")),
        ["acct-1", "acct-10"]
    );
    // A hard-deleted stream named by the prefix is left out, and the search goes on.
    store
        .delete_stream(&stream("acct-1"), annals::Deletion::Hard)
        .await
        .expect("delete");
    assert_eq!(
        ids(store.streams_with_prefix("acct-1", 100, None).await.expect("find")),
        ["acct-10"]
    );
}

async fn records_are_read_by_event_type_with_and_without_an_index(t: TestStore) {
    let store = t.open().await;
    // One stream, so one partition: every third record is Special.
    for n in 0..30 {
        append(&store, "mixed-1", if n % 3 == 0 { "Special" } else { "Plain" }, n).await;
    }
    let partition = annals::partition_for(&stream("mixed-1"), store.partition_count());
    let types = ["Special".to_owned()];
    for indexed in [false, true] {
        if indexed && t.is_durable() {
            store.enable_filter_index(FilterIndex::EventType).await.expect("index");
        }
        let mut seen = Vec::new();
        let mut from = Offset(0);
        loop {
            let found = store
                .read_partition_of_types(partition, from, 4, &types)
                .await
                .expect("read");
            if found.records.is_empty() && found.next_offset >= store.high_watermark(partition).await.expect("hw") {
                break;
            }
            assert!(found.records.len() <= 4);
            seen.extend(found.records.iter().map(|r| r.offset.0));
            assert!(found.next_offset > from, "no progress from {from}");
            from = found.next_offset;
        }
        assert_eq!(seen, (0..30).step_by(3).collect::<Vec<u64>>(), "indexed: {indexed}");
    }
}
