//! `GET /v1/groups/{group}/wait`: read-your-writes over HTTP.

use std::time::Duration;

use annals::group::{Consumer, GroupMember, GroupOptions, Processed};
use annals::{async_trait, RecordedEvent, Store};
use annals_server::{ServerOptions, Spawned};
use serde_json::Value;

struct Nothing;

#[async_trait]
impl Consumer for Nothing {
    async fn handle(&self, _: &RecordedEvent, _: &Processed) -> annals::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waits_for_a_group_to_see_its_append() {
    let store = Store::open("memory:").await.expect("store");
    let member = GroupMember::consumer(&store, "views", Nothing, GroupOptions::default())
        .await
        .expect("join");
    let server = Spawned::start(store.clone(), ServerOptions::default())
        .await
        .expect("serve");
    let http = reqwest::Client::new();
    let appended: Value = http
        .post(format!("{}/v1/streams/order-1/events", server.url()))
        .json(&serde_json::json!({"expected_version": "any", "events": [{"type": "Placed", "data": {}}]}))
        .send()
        .await
        .expect("append")
        .json()
        .await
        .expect("JSON");
    let (partition, offset) = (&appended["partition"], &appended["last_offset"]);
    let wait = |offset: u64, timeout_ms: u64| {
        let url = format!(
            "{}/v1/groups/views/wait?partition={partition}&offset={offset}&timeout_ms={timeout_ms}",
            server.url()
        );
        let http = http.clone();
        async move {
            let response = http.get(url).send().await.expect("wait");
            (
                response.status().as_u16(),
                response.json::<Value>().await.expect("JSON"),
            )
        }
    };
    let (status, seen) = wait(offset.as_u64().expect("offset"), 30_000).await;
    assert_eq!((status, &seen["reached"]), (200, &Value::Bool(true)), "{seen}");
    let (status, not_yet) = tokio::time::timeout(Duration::from_secs(20), wait(1_000, 200))
        .await
        .expect("the timeout was not kept");
    assert_eq!((status, &not_yet["reached"]), (200, &Value::Bool(false)), "{not_yet}");
    let (status, unknown) = {
        let response = http
            .get(format!("{}/v1/groups/nobody/wait?partition=0&offset=0", server.url()))
            .send()
            .await
            .expect("wait");
        (
            response.status().as_u16(),
            response.json::<Value>().await.expect("JSON"),
        )
    };
    assert_eq!(
        (status, unknown["error"].as_str()),
        (404, Some("not_found")),
        "{unknown}"
    );
    // The typed client gives the same answers.
    let client = annals_client::Client::new(server.url(), None);
    let position = annals::Position {
        partition: serde_json::from_value(partition.clone()).expect("partition"),
        offset: serde_json::from_value(offset.clone()).expect("offset"),
    };
    let waited = client.wait_until("views", position, 30_000).await.expect("wait");
    assert!(waited.reached && waited.committed > position.offset, "{waited:?}");
    server.stop().await.expect("stop");
    member.shutdown().await.expect("leave");
}
