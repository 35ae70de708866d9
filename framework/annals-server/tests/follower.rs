//! A follower never holds part of an append (I3 on the follower), even for appends
//! longer than a fetch asks for, written to one stream by one group commit (one
//! `recorded_at`): the log records where each append ends, the leader's fetch answers
//! with whole appends, and the follower keeps the boundaries.

mod support;

use std::time::Duration;

use annals::{partition_for, AppendRequest, EventStore, ExpectedVersion, Limits, NewEvent, StreamId};
use annals_server::follower::{FollowOptions, Follower, Leader};
use annals_server::ServerOptions;
use annals_testkit::conformance::read_whole_partition;
use annals_testkit::TestStore;
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

    let (url, stop) = serve(leader.clone()).await;
    let running = Follower::start(follower.clone(), Leader { url, token: None }, FollowOptions::default());
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
    let boundaries: Vec<u64> = shipped.iter().filter(|r| r.last_in_append).map(|r| r.offset).collect();
    assert_eq!(boundaries, ends, "the follower kept other boundaries");
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
        let mut follower = Follower::start(store.clone(), leader, FollowOptions::default());
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
