//! The sink against a real Kafka-protocol broker.

use annals::{AppendRequest, ExpectedVersion, NewEvent, Store, StreamId};
use annals_kafka::{Sink, SinkOptions};
use annals_testkit::kafka::{read_topic, Broker};
use annals_testkit::TestStore;

async fn append(store: &Store, stream: &str, n: u64) {
    let id = StreamId::new(stream).expect("stream id");
    let request = AppendRequest::new(id, ExpectedVersion::Any)
        .event(NewEvent::json("Added", &serde_json::json!({ "n": n })).expect("event"));
    store.append(request).await.expect("append");
}

#[tokio::test]
async fn the_sink_ships_each_record_once_to_its_partition() {
    let Some(broker) = Broker::start().await else { return };
    let test = TestStore::sqlite().await.expect("sqlite");
    let store = test.open().await;
    for n in 0..200 {
        append(&store, &format!("order-{}", n % 37), n).await;
    }
    let sink = Sink::start(&store, SinkOptions::new(broker.address(), "orders"))
        .await
        .expect("sink starts");
    let total = 200;
    let started = std::time::Instant::now();
    for _ in 0..300 {
        let t = std::time::Instant::now();
        let n = read_topic(&broker.address(), "orders").len();
        eprintln!("{:?} read {n} in {:?}", started.elapsed(), t.elapsed());
        if n >= total {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    sink.shutdown().await.expect("shutdown");
    let messages = read_topic(&broker.address(), "orders");
    assert_eq!(messages.len(), total, "{}", broker.log());
    for message in &messages {
        let offset: u64 = message
            .header("annals-offset")
            .expect("offset")
            .parse()
            .expect("number");
        assert_eq!(offset as i64, message.offset);
    }
}
