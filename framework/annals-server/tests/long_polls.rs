//! The cap on long polls, alone in its process: the gauge of waiting requests it
//! watches is process-wide.

use std::time::Duration;

use annals::{Store, StreamId};
use annals_server::{ServerOptions, Spawned};
use annals_testkit::tally::add;
use annals_testkit::wait_for;

/// Past the cap, a long poll answers at once instead of holding its connection; the
/// ones within it still wait for the next record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_past_the_cap_answer_at_once() {
    let store = Store::open("memory:").await.expect("store");
    let options = ServerOptions {
        max_long_polls: 1,
        ..ServerOptions::default()
    };
    let server = Spawned::start(store.clone(), options).await.expect("serve");
    let client = annals_client::Client::new(server.url(), None);
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.fetch(0.into(), 0.into(), 10, 20_000, None).await }
    });
    // The first poll holds the only permit once the server reports it waiting.
    wait_for("the first long poll to wait", async || {
        let metrics = reqwest::get(format!("{}/metrics", server.url()))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        metrics.contains("annals_long_polls_waiting 1")
    })
    .await;
    let second = tokio::time::timeout(
        Duration::from_secs(10),
        client.fetch(0.into(), 0.into(), 10, 20_000, None),
    )
    .await
    .expect("the second long poll waited past the cap")
    .expect("fetch");
    assert!(second.events.is_empty());
    assert!(!waiting.is_finished(), "the first long poll stopped waiting");
    let mut stream = 0;
    while annals::partition_for(&StreamId::new(format!("order-{stream}")).expect("id"), 16) != annals::Partition(0) {
        stream += 1;
    }
    add(&store, &format!("order-{stream}"), 1).await;
    let first = waiting.await.expect("join").expect("fetch");
    assert_eq!(first.events.len(), 1, "the waiting poll was not woken by the append");
    server.stop().await.expect("stop");
}
