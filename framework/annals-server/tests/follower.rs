//! A follower never holds part of an append (I3 on the follower), even when one run of
//! a stream's records committed together is longer than a fetch asks for.

use std::time::Duration;

use annals::{partition_for, Metadata, RecordedEvent, StreamId};
use annals_server::follower::{Follower, Leader};
use annals_server::ServerOptions;
use annals_testkit::TestStore;
use serde_json::value::RawValue;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_longer_than_a_fetch_arrives_whole() {
    let stores = [
        TestStore::sqlite().await.expect("sqlite"),
        TestStore::sqlite().await.expect("sqlite"),
    ];
    let leader = stores[0].open_with(|o| o.partitions(16)).await.expect("open");
    let follower = stores[1].open_with(|o| o.partitions(16)).await.expect("open");

    // 3,000 records of one stream with one `recorded_at`, as appends of 700, 1,000,
    // 1,000 and 300 events that one group commit wrote: from the log alone their
    // boundaries cannot be told, and a fetch of 2,000 would stop inside the third.
    // Written verbatim on a store that then becomes the leader.
    leader.follow("http://earlier-leader.invalid").await.expect("follow");
    let stream = StreamId::new("acct-1").expect("id");
    let partition = partition_for(&stream, 16);
    let at = chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros()).expect("now");
    let run: Vec<RecordedEvent> = (0..3_000)
        .map(|i| RecordedEvent {
            partition,
            offset: i,
            stream: stream.clone(),
            version: i + 1,
            event_id: uuid::Uuid::now_v7(),
            event_type: "Posted".into(),
            payload: RawValue::from_string("{}".into()).expect("json"),
            metadata: Metadata::default(),
            recorded_at: at,
        })
        .collect();
    leader.apply_replicated(run).await.expect("write the run");
    leader.promote().await.expect("promote");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(annals_server::serve(
        leader.clone(),
        listener,
        ServerOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));

    // A long poll on the follower's log sees what its first apply makes visible.
    let first = {
        let follower = follower.clone();
        tokio::spawn(async move { follower.fetch(partition, 0, 10_000, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let running = Follower::start(follower.clone(), Leader { url, token: None })
        .await
        .expect("follow");
    let seen = first.await.expect("task").expect("fetch");
    assert_eq!(seen.len(), 3_000, "the follower held part of the run");
    running.stop().await.expect("stop");
    let _ = stop.send(());
}

/// The server's public futures can be spawned (see `annals-testkit/tests/send.rs` for
/// the bug this guards against). Built, never run.
#[test]
fn public_futures_are_send() {
    fn spawnable<F: std::future::Future + Send + 'static>(future: F) {
        drop(future);
    }
    let leader = Leader {
        url: "http://127.0.0.1:1".into(),
        token: None,
    };
    spawnable({
        let leader = leader.clone();
        async move { leader.partition_count().await }
    });
    spawnable(async move {
        let store = annals::Store::open("memory:").await?;
        let mut follower = Follower::start(store.clone(), leader).await?;
        follower.wait().await?;
        follower.stop().await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(annals::Error::Io)?;
        annals_server::serve(
            store,
            listener,
            ServerOptions::default(),
            annals_server::shutdown_signal(),
        )
        .await
        .map_err(annals::Error::Io)?;
        Ok::<_, annals_server::follower::FollowError>(())
    });
}
