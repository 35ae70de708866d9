//! `min_insync_followers`: an append over HTTP is acknowledged only once a follower
//! holds it; without one it times out with a clear error and stays durable.

use std::time::Duration;

use annals::StreamId;
use annals_server::follower::{FollowOptions, Follower, Leader};
use annals_server::{ServerOptions, Spawned};
use annals_testkit::TestStore;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_wait_for_a_follower() {
    let (leader_t, follower_t) = (
        TestStore::sqlite().await.expect("s"),
        TestStore::sqlite().await.expect("s"),
    );
    let leader = leader_t.open_with(|o| o.partitions(16)).await.expect("leader");
    let replica = follower_t.open_with(|o| o.partitions(16)).await.expect("follower");
    let options = ServerOptions {
        min_insync_followers: 1,
        ack_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    };
    let server = Spawned::start(leader.clone(), options).await.expect("serve");
    let url = server.url().to_owned();
    let http = reqwest::Client::new();
    let append = || async {
        let response = http
            .post(format!("{url}/v1/streams/order-1/events"))
            .json(&json!({"expected_version": "any", "events": [{"type": "Placed", "data": {}}]}))
            .send()
            .await
            .expect("POST");
        (
            response.status().as_u16(),
            response.json::<Value>().await.expect("JSON"),
        )
    };

    // No follower: a clear error, and the append is durable all the same.
    let (status, timed_out) = append().await;
    assert_eq!(
        (status, timed_out["error"].as_str()),
        (503, Some("replication_timeout")),
        "{timed_out}"
    );
    assert_eq!(timed_out["outcome"]["first_version"], 1);
    let order = StreamId::new("order-1").expect("id");
    assert_eq!(leader.stream_version(&order).await.expect("version"), 1);

    // With a follower: acknowledged only once the follower holds it.
    let follower = Follower::start(replica.clone(), Leader::at(url.clone()), FollowOptions::default());
    for _ in 0..5 {
        let (status, acked) = append().await;
        assert_eq!(status, 201, "{acked}");
        let p = acked["partition"].as_u64().expect("partition") as usize;
        let held = replica.high_watermarks().await.expect("hw")[p];
        assert!(
            held > acked["last_offset"].as_u64().expect("offset"),
            "acknowledged before the follower held it"
        );
    }
    follower.stop().await.expect("stop");
    server.stop().await.expect("serve");
}
