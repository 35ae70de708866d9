//! The embedded engine reads a stream three ways, and each must see the same log:
//!
//! - on a current-thread runtime, in pages read on a blocking thread;
//! - on a multi-threaded runtime while appends come one at a time, on the writer's
//!   connection (whose page cache holds what it wrote);
//! - on a multi-threaded runtime while appends are concurrent, on a reader's
//!   connection, on the caller's thread.
//!
//! The conformance suite runs on a multi-threaded runtime with lone appends, so it
//! covers the second way only.

use std::collections::BTreeMap;

use annals::{AppendRequest, ExpectedVersion, NewEvent, StreamId, Version};
use annals_testkit::{conformance, TestStore};
use serde_json::json;

#[tokio::test(flavor = "current_thread")]
async fn a_current_thread_runtime_folds_in_pages() {
    let t = TestStore::sqlite().await.expect("sqlite");
    conformance::fold_stream_sees_what_read_stream_returns(&t).await;
}

/// Folds while eight tasks append to other streams, so some folds run on readers'
/// connections and some on the writer's; every fold of the streams sees exactly the
/// versions the appends acknowledged before it began, and what was appended after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folds_during_concurrent_appends_see_every_acknowledged_event() {
    let t = TestStore::sqlite().await.expect("sqlite");
    let store = t.open().await;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = StreamId::new(format!("busy-{w}")).expect("stream id");
                for n in 0..150u64 {
                    let request = AppendRequest::new(id.clone(), ExpectedVersion::Exact(Version(n)))
                        .event(NewEvent::json("Noted", &json!({ "n": n })).expect("event"));
                    store.append(request).await.expect("append");
                }
            })
        })
        .collect();

    let id = StreamId::new("folded-1").expect("stream id");
    let mut acknowledged = Version(0);
    let mut folds = BTreeMap::new();
    while !writers.iter().all(|w| w.is_finished()) || acknowledged < 40 {
        let request = AppendRequest::new(id.clone(), ExpectedVersion::Exact(acknowledged))
            .event(NewEvent::json("Counted", &json!({ "n": acknowledged.0 + 1 })).expect("event"));
        acknowledged = store.append(request).await.expect("append").last_version;
        let mut seen = Vec::new();
        store
            .fold_stream(&id, 1, &mut |event| {
                let payload: serde_json::Value = serde_json::from_str(event.payload).expect("payload");
                seen.push((event.version, payload["n"].as_u64()));
                Ok(())
            })
            .await
            .expect("fold");
        let expected: Vec<_> = (1..=acknowledged.0).map(|v| (Version(v), Some(v))).collect();
        assert_eq!(seen, expected, "a fold missed or reordered acknowledged events");
        folds.insert(acknowledged, seen.len());
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    for w in 0..8 {
        let id = StreamId::new(format!("busy-{w}")).expect("stream id");
        let mut versions = Vec::new();
        store
            .fold_stream(&id, 1, &mut |event| {
                versions.push(event.version);
                Ok(())
            })
            .await
            .expect("fold");
        assert_eq!(versions, (1..=150).collect::<Vec<_>>());
    }
    assert!(folds.len() >= 40);
    store.close().await;
}
