//! Filtered groups read only what passes their filter when the store has a filter
//! index for it, and still hand records over in offset order per partition, each once,
//! and commit their offsets to the end of the log: a group's offsets mean what they
//! mean for an unfiltered group, and what it is handed is what a group without the
//! index is handed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::group::{admin, Consumer, Filter, FilterIndex, GroupMember, GroupOptions, Processed};
use annals::{
    async_trait, AppendRequest, ExpectedVersion, NewEvent, Offset, Partition, RecordedEvent, Store, StreamId,
};
use annals_testkit::tally::caught_up;
use annals_testkit::TestStore;

annals_testkit::on_every_engine!(
    a_group_by_category_gets_its_records_in_order,
    a_group_by_event_type_gets_its_records_in_order,
    a_group_by_category_and_type_gets_both,
    a_group_by_type_and_category_reads_the_type_index,
    categories_are_whole_words,
    a_name_given_twice_counts_once,
    filter_indexes_are_enabled_and_disabled,
);

/// The records handed over, in order, and the filter asked for.
#[derive(Clone)]
struct Seen {
    filter: Filter,
    records: Arc<Mutex<Vec<(Partition, Offset)>>>,
}

#[async_trait]
impl Consumer for Seen {
    fn filter(&self) -> Filter {
        self.filter.clone()
    }

    async fn handle(&self, record: &RecordedEvent, _: &Processed) -> annals::Result<()> {
        self.records
            .lock()
            .expect("lock")
            .push((record.partition, record.offset));
        Ok(())
    }
}

/// 600 records over streams of categories `order`, `orders`, `order.audit`, `payment`
/// and a stream without a category part, `order`; types by position.
async fn fill(store: &Store) {
    let streams = [
        "order-1",
        "order-2",
        "orders-1",
        "order.audit-1",
        "payment-1",
        "order",
        "payment-2",
    ];
    for i in 0..600usize {
        let stream = StreamId::new(streams[(i * 7 + i / 5) % streams.len()]).expect("id");
        let event_type = ["Placed", "Paid", "Shipped"][i % 3];
        let request = AppendRequest::new(stream, ExpectedVersion::Any)
            .event(NewEvent::json(event_type, &serde_json::json!({ "i": i })).expect("event"));
        store.append(request).await.expect("append");
    }
}

/// Runs a group with `filter` and a batch of 7 over the whole log twice: first with no
/// filter index (the store reads the whole log and the worker filters), then with the
/// store's filter indexes `indexes` built after the log was written. Each time it checks
/// that the group got exactly the records that pass, in offset order per partition,
/// and committed to the end of every partition.
async fn check(t: TestStore, filter: Filter, indexes: &[FilterIndex]) {
    // Two partitions: the categories and types share them, and reads by several keys
    // are merged.
    let store = t.open_with(|o| o.partitions(2)).await.expect("open");
    fill(&store).await;
    let mut expected = Vec::new();
    for p in Partition::all(store.partition_count()) {
        let records = store.read_partition(p, Offset(0), 10_000).await.expect("read");
        expected.extend(
            records
                .iter()
                .filter(|r| filter.matches(r))
                .map(|r| (r.partition, r.offset)),
        );
    }
    assert!(
        !expected.is_empty() && expected.len() < 600,
        "a filter that picks some: {}",
        expected.len()
    );
    run_group(&store, "filtered-scan", &filter, &expected).await;
    for index in indexes {
        store.enable_filter_index(*index).await.expect("enable");
    }
    run_group(&store, "filtered", &filter, &expected).await;
}

/// Runs `group` over the whole log and checks it got `expected` and committed to the
/// end of every partition.
async fn run_group(store: &Store, group: &str, filter: &Filter, expected: &[(Partition, Offset)]) {
    let seen = Seen {
        filter: filter.clone(),
        records: Arc::default(),
    };
    let options = GroupOptions {
        batch_size: 7,
        heartbeat_interval: Duration::from_millis(100),
        ..GroupOptions::default()
    };
    let member = GroupMember::consumer(store, group, seen.clone(), options)
        .await
        .expect("join");
    caught_up(store, group).await;
    member.shutdown().await.expect("stop");

    let seen = seen.records.lock().expect("lock").clone();
    for p in Partition::all(store.partition_count()) {
        let of = |list: &[(Partition, Offset)]| list.iter().filter(|(q, _)| *q == p).copied().collect::<Vec<_>>();
        assert_eq!(of(&seen), of(expected), "{group}, partition {p}");
    }
    let described = admin::describe(store, group).await.expect("describe");
    let ends = store.high_watermarks().await.expect("hw");
    for partition in &described.partitions {
        assert_eq!(
            partition.committed,
            ends[partition.partition.index()],
            "{group}: {partition:?}"
        );
    }
}

const BOTH: &[FilterIndex] = &FilterIndex::ALL;

async fn a_group_by_category_gets_its_records_in_order(t: TestStore) {
    check(
        t,
        Filter::categories(["order", "payment"]).expect("filter"),
        &[FilterIndex::Category],
    )
    .await;
}

async fn a_group_by_event_type_gets_its_records_in_order(t: TestStore) {
    check(t, Filter::all().event_types(["Shipped"]), BOTH).await;
}

async fn a_group_by_category_and_type_gets_both(t: TestStore) {
    let filter = Filter::categories(["orders", "order.audit"])
        .expect("filter")
        .event_types(["Placed", "Paid"]);
    check(t, filter, BOTH).await;
}

/// Only the index by type: the categories are checked on what it gives.
async fn a_group_by_type_and_category_reads_the_type_index(t: TestStore) {
    let filter = Filter::categories(["payment"])
        .expect("filter")
        .event_types(["Paid", "Shipped"]);
    check(t, filter, &[FilterIndex::EventType]).await;
}

/// `order` is not `orders` nor `order.audit`, and a stream id without a `-` is its own
/// category.
async fn categories_are_whole_words(t: TestStore) {
    check(t, Filter::categories(["order"]).expect("filter"), BOTH).await;
}

/// One read per name: a name given twice must not hand its records over twice.
async fn a_name_given_twice_counts_once(t: TestStore) {
    let filter = Filter::categories(["payment", "order", "payment"])
        .expect("filter")
        .event_types(["Paid", "Paid"]);
    check(t, filter, BOTH).await;
}

async fn filter_indexes_are_enabled_and_disabled(t: TestStore) {
    let store = t.open().await;
    let memory = store.backend_name() == "memory";
    let listed = store.filter_indexes().await.expect("list");
    assert_eq!(listed.is_empty(), !memory, "{listed:?}");
    store.enable_filter_index(FilterIndex::EventType).await.expect("enable");
    store
        .enable_filter_index(FilterIndex::EventType)
        .await
        .expect("enable again");
    if !memory {
        assert_eq!(store.filter_indexes().await.expect("list"), [FilterIndex::EventType]);
    }
    store.enable_filter_index(FilterIndex::Category).await.expect("enable");
    assert_eq!(store.filter_indexes().await.expect("list"), FilterIndex::ALL);
    store
        .disable_filter_index(FilterIndex::EventType)
        .await
        .expect("disable");
    store
        .disable_filter_index(FilterIndex::EventType)
        .await
        .expect("disable again");
    if !memory {
        assert_eq!(store.filter_indexes().await.expect("list"), [FilterIndex::Category]);
    }
    let bad = "by-colour".parse::<FilterIndex>();
    assert!(matches!(bad, Err(annals::Error::InvalidFilterIndex { .. })), "{bad:?}");
    assert_eq!(
        "event-type".parse::<FilterIndex>().expect("parse"),
        FilterIndex::EventType
    );
}
