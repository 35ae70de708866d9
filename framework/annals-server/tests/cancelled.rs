//! An append over HTTP whose client goes away while the append waits for the store's
//! writer is not written (PostgreSQL, real HTTP on loopback): the server drops the
//! request's work when its connection closes, and the writer leaves out appends whose
//! callers are gone.

use std::time::Duration;

use annals::StreamId;
use annals_server::{ServerOptions, Spawned};
use annals_testkit::postgres::PartitionLock;
use annals_testkit::TestStore;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_append_whose_client_leaves_while_it_queues_is_not_written() {
    let Some(t) = TestStore::postgres().await else {
        return;
    };
    let store = t.open().await;
    let server = Spawned::start(store.clone(), ServerOptions::default())
        .await
        .expect("serves");
    let url = server.url().to_owned();
    let (held, queued) = (
        StreamId::new("acct-1").expect("stream id"),
        StreamId::new("acct-2").expect("stream id"),
    );
    let (mut other, waiting) = PartitionLock::hold_writer(t.url().expect("url"), &store, &held).await;

    let body = json!({"expected_version": "no_stream", "events": [{"type": "Deposited", "data": {}}]});
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let left = impatient
        .post(format!("{url}/v1/streams/acct-2/events"))
        .json(&body)
        .send()
        .await;
    assert!(left.is_err(), "the append waited for the writer: {left:?}");
    // The server notices the closed connection while the append still queues.
    tokio::time::sleep(Duration::from_millis(500)).await;
    other.release().await;
    waiting.await.expect("task").expect("the first append");

    let again = reqwest::Client::new()
        .post(format!("{url}/v1/streams/acct-2/events"))
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = again.status();
    let text = again.text().await.expect("body");
    assert!(status.is_success(), "the abandoned append was written: {status} {text}");
    assert_eq!(store.stream_version(&queued).await.expect("version"), 1);
    server.stop().await.expect("stops");
}
