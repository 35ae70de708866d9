//! The sink against a real Kafka-protocol broker, on every engine.

use std::collections::HashMap;
use std::time::Duration;

use annals::group::Filter;
use annals::{partition_for, AppendRequest, ExpectedVersion, NewEvent, Store, StreamId};
use annals_kafka::{Error, Sink, SinkOptions};
use annals_testkit::kafka::{create_topic, read_topic, Broker, Message};
use annals_testkit::TestStore;

async fn append(store: &Store, stream: &str, n: u64) {
    let id = StreamId::new(stream).expect("stream id");
    let request = AppendRequest::new(id, ExpectedVersion::Any)
        .event(NewEvent::json("Added", &serde_json::json!({ "n": n })).expect("event"));
    store.append(request).await.expect("append");
}

/// Waits until `topic` holds `count` messages, and returns them.
async fn shipped(broker: &Broker, topic: &str, count: usize) -> Vec<Message> {
    for _ in 0..600 {
        let messages = read_topic(&broker.address(), topic);
        if messages.len() >= count {
            return messages;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{topic} never held {count} messages; broker log:\n{}", broker.log());
}

/// Every record of the store, shipped once to the partition of the same number, in
/// offset order, with its headers; and each stream's events in version order.
async fn assert_mirrors(store: &Store, messages: &[Message], only: Option<&str>) {
    let expected: Vec<_> = annals_testkit::every_record(store)
        .await
        .into_iter()
        .filter(|r| only.is_none_or(|c| r.stream.category() == c))
        .collect();
    assert_eq!(messages.len(), expected.len(), "one message per record");
    let mut versions: HashMap<&str, u64> = HashMap::new();
    for (message, record) in messages.iter().zip(&expected) {
        assert_eq!(message.partition as u32, record.partition.0, "same partition");
        assert_eq!(message.key.as_deref(), Some(record.stream.as_str()));
        assert_eq!(message.value.as_deref(), Some(record.payload.get()));
        assert_eq!(
            message.header("annals-offset"),
            Some(record.offset.0.to_string().as_str())
        );
        assert_eq!(
            message.header("annals-event-id"),
            Some(record.event_id.to_string().as_str())
        );
        assert_eq!(message.header("annals-type"), Some(record.event_type.as_str()));
        let version: u64 = message
            .header("annals-version")
            .expect("version")
            .parse()
            .expect("number");
        let last = versions.entry(message.key.as_deref().expect("key")).or_insert(0);
        assert!(version > *last, "a stream's events in version order");
        *last = version;
    }
}

async fn ships_everything_once(test: TestStore) {
    let Some(broker) = Broker::start().await else { return };
    let store = test.open().await;
    for n in 0..300 {
        append(&store, &format!("order-{}", n % 37), n).await;
    }
    let sink = Sink::start(&store, SinkOptions::new(broker.address(), "orders"))
        .await
        .expect("sink starts");
    // Records appended while it runs follow.
    for n in 300..400 {
        append(&store, &format!("order-{}", n % 41), n).await;
    }
    let messages = shipped(&broker, "orders", 400).await;
    sink.shutdown().await.expect("shutdown");
    assert_mirrors(&store, &messages, None).await;

    // A new sink resumes after the topic's last record: nothing is shipped twice.
    for n in 400..450 {
        append(&store, &format!("order-{}", n % 7), n).await;
    }
    let sink = Sink::start(&store, SinkOptions::new(broker.address(), "orders"))
        .await
        .expect("sink starts again");
    let messages = shipped(&broker, "orders", 450).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sink.shutdown().await.expect("shutdown");
    assert_eq!(read_topic(&broker.address(), "orders").len(), 450);
    assert_mirrors(&store, &messages, None).await;
}

#[tokio::test]
async fn the_sink_ships_each_record_once_in_order_sqlite() {
    ships_everything_once(TestStore::sqlite().await.expect("sqlite")).await;
}

#[tokio::test]
async fn the_sink_ships_each_record_once_in_order_postgres() {
    let Some(test) = TestStore::postgres().await else {
        return;
    };
    ships_everything_once(test).await;
}

#[tokio::test]
async fn the_sink_resumes_from_the_topic_not_the_group_offset() {
    let Some(broker) = Broker::start().await else { return };
    let test = TestStore::sqlite().await.expect("sqlite");
    let store = test.open().await;
    for n in 0..100 {
        append(&store, &format!("order-{}", n % 13), n).await;
    }
    let options = SinkOptions::new(broker.address(), "orders");
    let sink = Sink::start(&store, options.clone()).await.expect("sink starts");
    shipped(&broker, "orders", 100).await;
    sink.shutdown().await.expect("shutdown");
    // The group's offsets are moved back to the start, as a crash between produce and
    // commit would leave them: the topic still says what was shipped.
    annals::group::admin::reset(&store, &options.group, annals::group::admin::ResetTo::Earliest)
        .await
        .expect("reset");
    for n in 100..120 {
        append(&store, &format!("order-{}", n % 13), n).await;
    }
    let sink = Sink::start(&store, options).await.expect("sink starts again");
    let messages = shipped(&broker, "orders", 120).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sink.shutdown().await.expect("shutdown");
    assert_mirrors(&store, &messages, None).await;
}

#[tokio::test]
async fn the_sink_ships_only_the_chosen_categories() {
    let Some(broker) = Broker::start().await else { return };
    let test = TestStore::sqlite().await.expect("sqlite");
    let store = test.open().await;
    for n in 0..90 {
        let category = ["order", "invoice", "cart"][n as usize % 3];
        append(&store, &format!("{category}-{}", n % 11), n).await;
    }
    let mut options = SinkOptions::new(broker.address(), "orders-only");
    options.filter = Filter::categories(["order"]).expect("category");
    let sink = Sink::start(&store, options).await.expect("sink starts");
    let messages = shipped(&broker, "orders-only", 30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sink.shutdown().await.expect("shutdown");
    assert_mirrors(&store, &messages, Some("order")).await;
}

#[tokio::test]
async fn a_topic_with_another_partition_count_is_refused() {
    let Some(broker) = Broker::start().await else { return };
    let test = TestStore::sqlite().await.expect("sqlite");
    let store = test.open().await;
    create_topic(&broker.address(), "three", 3).await;
    let refused = Sink::start(&store, SinkOptions::new(broker.address(), "three"))
        .await
        .expect_err("refused");
    assert!(
        matches!(refused, Error::PartitionCountMismatch { kafka: 3, annals, .. } if annals == store.partition_count()),
        "{refused}"
    );
    assert_eq!(refused.code(), "partition_count_mismatch");
    // Nothing was shipped, and no group was made.
    assert!(read_topic(&broker.address(), "three").is_empty());
    assert!(annals::group::admin::list(&store).await.expect("groups").is_empty());
}

#[tokio::test]
async fn a_topic_filled_from_another_history_stops_the_sink() {
    let Some(broker) = Broker::start().await else { return };
    let (one, two) = (
        TestStore::sqlite().await.expect("sqlite"),
        TestStore::sqlite().await.expect("sqlite"),
    );
    let (first, second) = (one.open().await, two.open().await);
    for n in 0..20 {
        append(&first, "order-1", n).await;
        append(&second, "order-1", n).await;
    }
    let sink = Sink::start(&first, SinkOptions::new(broker.address(), "orders"))
        .await
        .expect("sink starts");
    shipped(&broker, "orders", 20).await;
    sink.shutdown().await.expect("shutdown");
    // Same offsets, other event ids: the second store never had these records.
    let sink = Sink::start(&second, SinkOptions::new(broker.address(), "orders"))
        .await
        .expect("sink starts");
    let stopped = tokio::time::timeout(Duration::from_secs(60), sink.wait())
        .await
        .expect("the sink stops")
        .expect_err("with an error");
    assert!(matches!(stopped, Error::Diverged { offset: 19, .. }), "{stopped}");
    assert_eq!(read_topic(&broker.address(), "orders").len(), 20, "nothing shipped");
}

/// Kafka's default partitioner (murmur2, as the Java client and librdkafka's
/// `murmur2_random` compute it) and annals place every key in the same partition.
#[tokio::test]
async fn kafka_and_annals_place_every_key_in_the_same_partition() {
    let Some(broker) = Broker::start().await else { return };
    let partitions = 16;
    create_topic(&broker.address(), "keys", partitions).await;
    let producer = annals_testkit::kafka::producer(&broker.address());
    let keys: Vec<String> = (0..1200)
        .map(|n| match n % 4 {
            0 => format!("order-{n}"),
            1 => format!("customer-{}", uuid::Uuid::new_v4()),
            2 => format!("cart:{n}:x@y.z"),
            _ => format!("k{}", n * 7919),
        })
        .collect();
    let placed = futures::future::join_all(
        keys.iter()
            .map(|key| annals_testkit::kafka::produce(&producer, "keys", key, "{}")),
    )
    .await;
    for (key, (partition, _)) in keys.iter().zip(placed) {
        let stream = StreamId::new(key.as_str()).expect("stream id");
        assert_eq!(partition as u32, partition_for(&stream, partitions as u32).0, "{key}");
    }
}

/// A record the producer refuses for good (larger than `message.max.bytes`) stops the
/// sink with `refused`, instead of a retry that could never pass.
#[tokio::test]
async fn a_record_the_producer_refuses_for_good_stops_the_sink() {
    let Some(broker) = Broker::start().await else { return };
    let test = TestStore::sqlite().await.expect("sqlite");
    let store = test.open().await;
    append(&store, "order-1", 1).await;
    let big = serde_json::json!({ "note": "x".repeat(5_000) });
    let request = AppendRequest::new(StreamId::new("order-1").expect("id"), ExpectedVersion::Any)
        .event(NewEvent::json("Added", &big).expect("event"));
    store.append(request).await.expect("append");
    let mut options = SinkOptions::new(broker.address(), "small");
    options.kafka.push(("message.max.bytes".into(), "2000".into()));
    let sink = Sink::start(&store, options).await.expect("sink starts");
    let failure = tokio::time::timeout(Duration::from_secs(60), sink.failure())
        .await
        .expect("the sink stops");
    assert!(matches!(failure, Error::Refused { offset: 1, .. }), "{failure}");
    assert_eq!(failure.code(), "refused");
    sink.shutdown().await.expect("shutdown");
    assert_eq!(
        read_topic(&broker.address(), "small").len(),
        1,
        "the record before it shipped"
    );
}
