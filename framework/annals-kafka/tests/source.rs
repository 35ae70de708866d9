//! The source against a real Kafka-protocol broker.

use std::time::Duration;

use annals::{RecordedEvent, Store, StreamId};
use annals_kafka::{command_id, BadMessages, Error, Source, SourceOptions, StreamFrom};
use annals_testkit::every_record;
use annals_testkit::kafka::{create_topic, produce, produce_with_headers, producer, Broker};
use annals_testkit::TestStore;

async fn appended(store: &Store, count: usize) -> Vec<RecordedEvent> {
    for _ in 0..600 {
        let all = every_record(store).await;
        if all.len() >= count {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the store never held {count} records");
}

async fn appends_each_message_once(test: TestStore) {
    let Some(broker) = Broker::start().await else { return };
    let store = test.open().await;
    create_topic(&broker.address(), "payments", 4).await;
    let kafka = producer(&broker.address());
    let mut sent = Vec::new();
    for n in 0..200 {
        let key = format!("payment-{}", n % 23);
        let (partition, offset) = produce(&kafka, "payments", &key, &format!(r#"{{"n":{n}}}"#)).await;
        sent.push((key, n, partition, offset));
    }
    let source = Source::start(&store, SourceOptions::new(broker.address(), "payments"))
        .await
        .expect("source starts");
    let records = appended(&store, 200).await;
    source.shutdown().await.expect("shutdown");
    assert_eq!(records.len(), 200);
    for (key, n, partition, offset) in &sent {
        let stream = StreamId::new(key.as_str()).expect("stream");
        let events = store.read_stream(&stream, 1u64, 1000).await.expect("read");
        let event = events
            .iter()
            .find(|e| e.metadata.command_id == Some(command_id("payments", *partition, *offset)))
            .expect("appended with its command id");
        assert_eq!(event.payload.get(), format!(r#"{{"n":{n}}}"#));
        assert_eq!(event.event_type, "kafka.Message");
        assert_eq!(
            event.metadata.extra["kafka"],
            serde_json::json!({"topic": "payments", "partition": partition, "offset": offset})
        );
    }
    // Each stream holds its messages in the order they were produced.
    for n in 0..23 {
        let stream = StreamId::new(format!("payment-{n}")).expect("stream");
        let payloads: Vec<i64> = store
            .read_stream(&stream, 1u64, 1000)
            .await
            .expect("read")
            .iter()
            .map(|e| {
                serde_json::from_str::<serde_json::Value>(e.payload.get()).expect("json")["n"]
                    .as_i64()
                    .expect("n")
            })
            .collect();
        let mut sorted = payloads.clone();
        sorted.sort();
        assert_eq!(payloads, sorted, "payment-{n} in produce order");
    }

    // Every message delivered again (a new group from the earliest offset, as a crash
    // before any commit would): nothing is appended twice.
    let mut again = SourceOptions::new(broker.address(), "payments");
    again.group = "replay".into();
    let source = Source::start(&store, again).await.expect("source starts");
    tokio::time::sleep(Duration::from_secs(5)).await;
    source.shutdown().await.expect("shutdown");
    assert_eq!(every_record(&store).await.len(), 200, "redelivery appends nothing");
}

#[tokio::test]
async fn the_source_appends_each_message_once_sqlite() {
    appends_each_message_once(TestStore::sqlite().await.expect("sqlite")).await;
}

#[tokio::test]
async fn the_source_appends_each_message_once_postgres() {
    let Some(test) = TestStore::postgres().await else {
        return;
    };
    appends_each_message_once(test).await;
}

#[tokio::test]
async fn streams_come_from_a_header_and_types_from_annals_type() {
    let Some(broker) = Broker::start().await else { return };
    let test = TestStore::sqlite().await.expect("sqlite");
    let store = test.open().await;
    create_topic(&broker.address(), "events", 2).await;
    let kafka = producer(&broker.address());
    produce_with_headers(
        &kafka,
        "events",
        "ignored key",
        r#"{"total":3}"#,
        &[("aggregate", "order-7"), ("annals-type", "OrderPlaced")],
    )
    .await;
    let mut options = SourceOptions::new(broker.address(), "events");
    options.stream_from = "header:aggregate".parse().expect("stream from");
    assert_eq!(options.stream_from, StreamFrom::Header("aggregate".into()));
    let source = Source::start(&store, options).await.expect("source starts");
    let records = appended(&store, 1).await;
    source.shutdown().await.expect("shutdown");
    assert_eq!(records[0].stream.as_str(), "order-7");
    assert_eq!(records[0].event_type, "OrderPlaced");
}

#[tokio::test]
async fn a_bad_message_stops_the_source_or_is_skipped() {
    let Some(broker) = Broker::start().await else { return };
    let test = TestStore::sqlite().await.expect("sqlite");
    let store = test.open().await;
    create_topic(&broker.address(), "mixed", 1).await;
    let kafka = producer(&broker.address());
    produce(&kafka, "mixed", "order-1", r#"{"n":0}"#).await;
    produce(&kafka, "mixed", "order-1", "not json").await;
    produce(&kafka, "mixed", "no spaces allowed", r#"{"n":2}"#).await;
    // A message the store itself refuses (a reserved event type), before another of the
    // same stream in the same batch.
    produce_with_headers(
        &kafka,
        "mixed",
        "order-1",
        r#"{"n":"forged"}"#,
        &[("annals-type", "annals.Forged")],
    )
    .await;
    produce(&kafka, "mixed", "order-1", r#"{"n":3}"#).await;

    let mut source = Source::start(&store, SourceOptions::new(broker.address(), "mixed"))
        .await
        .expect("source starts");
    let stopped = tokio::time::timeout(Duration::from_secs(60), source.wait())
        .await
        .expect("stops")
        .expect_err("on the bad message");
    assert!(matches!(stopped, Error::BadMessage { offset: 1, .. }), "{stopped}");
    assert_eq!(stopped.code(), "bad_message");
    // What came before it is appended; started again, it stops at the same message.
    let records = every_record(&store).await;
    assert!(records.iter().any(|r| r.payload.get() == r#"{"n":0}"#));
    let mut source = Source::start(&store, SourceOptions::new(broker.address(), "mixed"))
        .await
        .expect("source starts");
    let again = tokio::time::timeout(Duration::from_secs(60), source.wait())
        .await
        .expect("stops")
        .expect_err("on the bad message");
    assert!(matches!(again, Error::BadMessage { offset: 1, .. }), "{again}");

    let mut skipping = SourceOptions::new(broker.address(), "mixed");
    skipping.bad_messages = BadMessages::Skip;
    let source = Source::start(&store, skipping).await.expect("source starts");
    let records = appended(&store, 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    source.shutdown().await.expect("shutdown");
    let payloads: Vec<&str> = records.iter().map(|r| r.payload.get()).collect();
    assert_eq!(
        payloads,
        [r#"{"n":0}"#, r#"{"n":3}"#],
        "bad messages skipped, the rest once"
    );
}

#[tokio::test]
async fn bad_settings_are_refused() {
    let test = TestStore::sqlite().await.expect("sqlite");
    let store = test.open().await;
    assert!(matches!("kee".parse::<StreamFrom>(), Err(Error::InvalidSetting(_))));
    assert!(matches!("header:".parse::<StreamFrom>(), Err(Error::InvalidSetting(_))));
    assert!(matches!("maybe".parse::<BadMessages>(), Err(Error::InvalidSetting(_))));
    let mut options = SourceOptions::new("127.0.0.1:1", "t");
    options.event_type = "annals.Mine".into();
    assert!(matches!(
        Source::start(&store, options).await,
        Err(Error::InvalidSetting(_))
    ));
    let mut options = SourceOptions::new("127.0.0.1:1", "t");
    options.start = "middle".into();
    assert!(matches!(
        Source::start(&store, options).await,
        Err(Error::InvalidSetting(_))
    ));
}
