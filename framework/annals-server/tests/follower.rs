//! A follower never holds part of an append (I3 on the follower), even for appends
//! longer than a fetch asks for, written to one stream by one group commit (one
//! `recorded_at`): the log records where each append ends, the leader's fetch answers
//! with whole appends, and the follower keeps the boundaries.

mod support;

use std::time::Duration;

use annals::{partition_for, AppendRequest, ExpectedVersion, Limits, NewEvent, StreamId};
use annals_server::follower::{FollowOptions, Follower, Leader};
use annals_server::{ServerOptions, Spawned};
use annals_testkit::conformance::read_whole_partition;
use annals_testkit::TestStore;
use axum::response::IntoResponse;
use sqlx::Connection;
use support::serve;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_longer_than_a_fetch_arrive_whole() {
    let stores = [
        TestStore::sqlite().await.expect("sqlite"),
        TestStore::sqlite().await.expect("sqlite"),
    ];
    let limits = Limits {
        max_events_per_append: 5_000,
        max_append_bytes: 64 << 20,
        ..Limits::default()
    };
    let leader = stores[0]
        .open_with(|o| o.partitions(16).limits(limits))
        .await
        .expect("open");
    let follower = stores[1].open_with(|o| o.partitions(16)).await.expect("open");

    // Appends of 700, 2,500, 1,000 and 300 events to one stream, sent together so that
    // one group commit writes them with one `recorded_at`; the follower fetches 2,000
    // records at a time.
    let stream = StreamId::new("acct-1").expect("id");
    let partition = partition_for(&stream, 16);
    let appends = [700, 2_500, 1_000, 300].map(|count| {
        let (leader, stream) = (leader.clone(), stream.clone());
        tokio::spawn(async move {
            let mut request = AppendRequest::new(stream, ExpectedVersion::Any);
            for i in 0..count {
                request = request.event(NewEvent::from_json_text("Posted", format!(r#"{{"i":{i}}}"#)).expect("json"));
            }
            leader.append(request).await.expect("append")
        })
    });
    let mut ends = Vec::new();
    for append in appends {
        ends.push(append.await.expect("task").last_offset);
    }
    ends.sort_unstable();

    let server = serve(leader.clone()).await;
    let url = server.url().to_owned();
    let running = Follower::start(follower.clone(), Leader::at(url), FollowOptions::default());
    // While it catches up, the follower's log ends on an append's end whenever looked at.
    let mut seen = Vec::new();
    loop {
        let next = follower.high_watermark(partition).await.expect("hw");
        if let Some(last) = next.checked_sub(1) {
            let record = follower.read_partition(partition, last, 1).await.expect("read");
            assert!(
                record[0].last_in_append,
                "the follower held part of an append: it ends at {last}"
            );
            seen.push(last);
        }
        if next == 4_500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    seen.dedup();
    assert!(seen.iter().all(|end| ends.contains(end)), "{seen:?} not among {ends:?}");

    let shipped = read_whole_partition(&follower, partition).await;
    assert_eq!(
        shipped,
        read_whole_partition(&leader, partition).await,
        "the logs differ"
    );
    let boundaries: Vec<annals::Offset> = shipped.iter().filter(|r| r.last_in_append).map(|r| r.offset).collect();
    assert_eq!(boundaries, ends, "the follower kept other boundaries");
    running.stop().await.expect("stop");
    server.stop().await.expect("server stops");
}

/// The server's public futures can be spawned (see `annals-testkit/tests/send.rs` for
/// the bug this guards against). Built, never run.
#[test]
fn public_futures_are_send() {
    fn spawnable<F: std::future::Future + Send + 'static>(future: F) {
        drop(future);
    }
    let leader = Leader::at("http://127.0.0.1:1");
    spawnable({
        let leader = leader.clone();
        async move { leader.partition_count().await }
    });
    spawnable(async move {
        let store = annals::Store::open("memory:").await?;
        let mut follower = Follower::start(store.clone(), leader, FollowOptions::default());
        follower.wait().await?;
        follower.stop().await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(annals::Error::Io)?;
        annals_server::serve(
            store.clone(),
            listener,
            ServerOptions::default(),
            annals_server::shutdown_signal(),
        )
        .await
        .map_err(annals::Error::Io)?;
        let spawned = Spawned::start(store, ServerOptions::default())
            .await
            .map_err(annals::Error::Io)?;
        spawned.stop().await.map_err(annals::Error::Io)?;
        Ok::<_, annals_server::follower::FollowError>(())
    });
}

/// A follower never stops on a failure a retry can cure. Here the leader answers 503
/// for a while, then the follower's own PostgreSQL connections are cut, under load;
/// the follower retries each (counted, shown in its status), keeps running, and ends
/// with the leader's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let Some(url) = annals_testkit::postgres::fresh_schema_url().await else {
        return;
    };
    let name = format!("follower{}", uuid::Uuid::new_v4().simple());
    let follower_url = format!("{url}&application_name={name}");
    let leader_store = TestStore::sqlite().await.expect("sqlite");
    let leader = leader_store.open_with(|o| o.partitions(16)).await.expect("open");
    let follower = annals::StoreOptions::from_url(&follower_url)
        .expect("url")
        .partitions(16)
        .open()
        .await
        .expect("open");

    // The leader's API, answering 503 while `failing` is set.
    let failing = Arc::new(AtomicBool::new(true));
    let router = annals_server::router(leader.clone(), &ServerOptions::default()).layer(axum::middleware::from_fn({
        let failing = failing.clone();
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let failing = failing.load(Ordering::Relaxed);
            async move {
                if failing {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response()
                } else {
                    next.run(request).await
                }
            }
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let leader_url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, router).await });

    let mut running = Follower::start(follower.clone(), Leader::at(leader_url), FollowOptions::default());
    let append = |i: u64| {
        let leader = leader.clone();
        async move {
            let request = AppendRequest::new(
                StreamId::new(format!("acct-{}", i % 11)).expect("id"),
                ExpectedVersion::Any,
            )
            .event(NewEvent::from_json_text("Posted", format!(r#"{{"i":{i}}}"#)).expect("json"));
            leader.append(request).await.expect("append");
        }
    };
    for i in 0..50 {
        append(i).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = running.status();
    assert!(
        status.errors > 0 && status.last_error.as_deref().is_some_and(|e| e.contains("503")),
        "{status:?}"
    );
    failing.store(false, Ordering::Relaxed);
    // Answers already on their way are counted before the next phase starts.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The follower's database goes away under it, again and again, for a second.
    let admin_url = annals_testkit::postgres::server_url();
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.expect("connect");
    let errors_before = running.status().errors;
    let cut_until = std::time::Instant::now() + Duration::from_secs(1);
    let mut i = 50;
    while std::time::Instant::now() < cut_until {
        append(i).await;
        i += 1;
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1")
            .bind(&name)
            .execute(&mut admin)
            .await
            .expect("terminate");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = tokio::time::timeout(Duration::from_millis(10), running.wait()).await;
    assert!(stopped.is_err(), "the follower stopped: {stopped:?}");

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while follower.high_watermarks().await.ok() != Some(leader.high_watermarks().await.expect("hw")) {
        assert!(
            std::time::Instant::now() < deadline,
            "never caught up: {:?}",
            running.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for partition in 0..16 {
        assert_eq!(
            read_whole_partition(&follower, partition).await,
            read_whole_partition(&leader, partition).await
        );
    }
    let status = running.status();
    assert!(
        status.errors > errors_before,
        "database errors were not counted: {status:?}"
    );
    running.stop().await.expect("a follower that retried stops cleanly");
}

/// Served as a follower, a store refuses appends from the start, also while it cannot
/// check its log against an unreachable leader and its stored role is still a
/// leader's (an old leader restarted with `annals follow`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_follower_refuses_appends() {
    let t = TestStore::sqlite().await.expect("sqlite");
    let store = t.open().await;
    let leader = Leader::at("http://127.0.0.1:9");
    let follower = Follower::start(store.clone(), leader, FollowOptions::default());
    let options = ServerOptions {
        follower: Some(follower.handle()),
        ..ServerOptions::default()
    };
    let server = Spawned::start(store.clone(), options).await.expect("serve");
    let url = server.url().to_owned();
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/streams/acct-1/events"))
        .json(&serde_json::json!({"expected_version": "any", "events": [{"type": "T", "data": {}}]}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 403);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(
        (body["error"].as_str(), body["leader"].as_str()),
        (Some("read_only_replica"), Some("http://127.0.0.1:9"))
    );
    assert_eq!(store.replica().leader, None, "the store's own role is still a leader's");
    assert_eq!(
        follower.status().state,
        annals_server::follower::FollowerState::Starting
    );
    follower.stop().await.expect("stop");
    server.stop().await.expect("serve");
}
