//! PostgreSQL folds a stream from rows in the order its plan finds them (no sort on
//! the server, so rows reach the fold while the scan goes on) and puts them in version
//! order itself. On an append-only table that order is nearly always version order,
//! but a row written again lands wherever its page has room, and a deleted stream's
//! first records are redacted, so the first row is not the version asked for. Each
//! fold must still show every version once, in order. A fold keeps its connection for
//! the next one, and gives it up when the store closes.

use annals::{AppendRequest, Deletion, ExpectedVersion, NewEvent, Store, StreamId, Version};
use annals_testkit::TestStore;
use serde_json::json;
use sqlx::postgres::PgPool;

/// Folds `stream` from `from`: each version shown, with its payload's `n` (`None`
/// for records without one, such as a deletion).
async fn folded(store: &Store, stream: &StreamId, from: u64) -> Vec<(u64, Option<u64>)> {
    let mut seen = Vec::new();
    store
        .fold_stream(stream, Version(from), &mut |event| {
            let payload: serde_json::Value = serde_json::from_str(event.payload).expect("JSON");
            seen.push((event.version.0, payload["n"].as_u64()));
            Ok(())
        })
        .await
        .expect("folds");
    seen
}

/// Appends `count` events to `stream`, numbered `n` from 0, up to 500 a request.
async fn append(store: &Store, stream: &StreamId, count: u64) {
    for first in (0..count).step_by(500) {
        let mut request = AppendRequest::new(stream.clone(), ExpectedVersion::Any);
        for n in first..count.min(first + 500) {
            request =
                request.event(NewEvent::json("Noted", &json!({ "n": n, "pad": "x".repeat(200) })).expect("event"));
        }
        store.append(request).await.expect("append");
    }
}

/// A store whose sessions read tables in their physical order, and a pool on it.
async fn scanning(t: &TestStore) -> (Store, PgPool) {
    let url = t.url().expect("a PostgreSQL URL");
    let url = format!("{url}%20-c%20enable_indexscan%3Doff%20-c%20enable_bitmapscan%3Doff");
    let pool = PgPool::connect(&url).await.expect("connects");
    (Store::open(&url).await.expect("opens"), pool)
}

/// A store whose sessions carry `name` as their `application_name`, holding `count`
/// events in `stream`, and a pool on the same database.
async fn named(t: &TestStore, name: &str, stream: &StreamId, count: u64) -> (Store, PgPool) {
    let url = t.url().expect("a PostgreSQL URL");
    let store = Store::open(&annals_testkit::postgres::named_url(url, name))
        .await
        .expect("opens");
    append(&store, stream, count).await;
    (store, PgPool::connect(url).await.expect("connects"))
}

/// How many server processes serve sessions named `name` whose last statement
/// contains `statement`.
async fn serving(pool: &PgPool, name: &str, statement: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE $2")
        .bind(name)
        .bind(format!("%{statement}%"))
        .fetch_one(pool)
        .await
        .expect("pg_stat_activity")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fold_shows_versions_in_order_whatever_order_the_rows_come_in() {
    let Some(t) = TestStore::postgres().await else {
        return;
    };
    let store = t.open().await;
    let stream = StreamId::new("moved-1").expect("stream id");
    append(&store, &stream, 120).await;
    let (scanning, pool) = scanning(&t).await;
    // A new event id is a change to an indexed column, so each row is written again
    // where there is room: the pages are full, so after the rows that follow it.
    sqlx::query("UPDATE annals_events SET event_id = gen_random_uuid() WHERE stream_id = $1 AND version IN (1, 60)")
        .bind(stream.as_str())
        .execute(&pool)
        .await
        .expect("rewrites two rows");
    let physical: Vec<i64> = sqlx::query_scalar("SELECT version FROM annals_events WHERE stream_id = $1")
        .bind(stream.as_str())
        .fetch_all(&pool)
        .await
        .expect("scans");
    assert!(
        physical.windows(2).any(|pair| pair[0] > pair[1]),
        "the premise: a scan finds the rows out of version order"
    );
    pool.close().await;

    let all = |from: u64| (from..=120).map(|v| (v, Some(v - 1))).collect::<Vec<_>>();
    assert_eq!(folded(&scanning, &stream, 1).await, all(1));
    assert_eq!(folded(&scanning, &stream, 50).await, all(50));
    assert_eq!(folded(&scanning, &stream, 121).await, Vec::new());
    // The same through the plan the planner picks.
    assert_eq!(folded(&store, &stream, 1).await, all(1));
    scanning.close().await;
    store.close().await;
}

/// A soft-deleted stream's records before the deletion are redacted, so a fold from
/// version 1 first finds the deletion record. With a few records after it they wait
/// and are shown in order at the end; with more than a fold keeps waiting (1,000), it
/// reads the rest again in order, from the first version it has not shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fold_of_a_stream_whose_first_records_are_redacted_shows_the_rest_in_order() {
    let Some(t) = TestStore::postgres().await else {
        return;
    };
    let store = t.open().await;
    let (scanning, pool) = scanning(&t).await;
    for (name, after) in [("gapped-few", 10), ("gapped-many", 1_100)] {
        let stream = StreamId::new(name).expect("stream id");
        append(&store, &stream, 5).await;
        store.delete_stream(&stream, Deletion::Soft).await.expect("deletes");
        append(&store, &stream, after).await;
        let expected: Vec<(u64, Option<u64>)> = std::iter::once((6, None))
            .chain((0..after).map(|n| (7 + n, Some(n))))
            .collect();
        assert_eq!(folded(&scanning, &stream, 1).await, expected, "{name}, scanned");
        assert_eq!(folded(&store, &stream, 1).await, expected, "{name}");
        assert_eq!(
            folded(&store, &stream, 8).await,
            expected[2..],
            "{name}, from version 8"
        );
    }
    // Records redacted in the middle (by hand here): the fold shows versions 1 and 2,
    // then more than 1,000 rows wait for version 3, and it reads on from there.
    let stream = StreamId::new("gapped-middle").expect("stream id");
    append(&store, &stream, 1_100).await;
    sqlx::query(
        "UPDATE annals_events SET redacted = true, payload = 'null' WHERE stream_id = $1 AND version BETWEEN 3 AND 5",
    )
    .bind(stream.as_str())
    .execute(&pool)
    .await
    .expect("redacts three records");
    let expected: Vec<(u64, Option<u64>)> = [1, 2].into_iter().chain(6..=1_100).map(|v| (v, Some(v - 1))).collect();
    assert_eq!(folded(&scanning, &stream, 1).await, expected, "scanned");
    assert_eq!(folded(&store, &stream, 1).await, expected);
    pool.close().await;
    scanning.close().await;
    store.close().await;
}

/// A fold keeps its connection for the next one rather than give it back to sqlx's
/// pool, which pings every connection given back (one more round trip, and one more
/// wake-up of a server process, for every fold): a run of folds, one after another, is
/// served by one server process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folds_one_after_another_are_served_by_one_server_process() {
    let Some(t) = TestStore::postgres().await else {
        return;
    };
    let stream = StreamId::new("kept-1").expect("stream id");
    let (store, pool) = named(&t, "annals_kept_folds", &stream, 30).await;
    let expected: Vec<_> = (1..=30).map(|v| (v, Some(v - 1))).collect();
    for _ in 0..50 {
        assert_eq!(folded(&store, &stream, 1).await, expected);
    }
    assert_eq!(
        serving(&pool, "annals_kept_folds", "AND NOT redacted").await,
        1,
        "server processes whose last statement was a fold"
    );
    pool.close().await;
    store.close().await;
}

/// A fold that finishes while its store closes gives its connection back to the
/// closed pool, which closes it, instead of keeping it: once the store is closed, no
/// server process is left serving its folds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_closed_while_a_fold_runs_keeps_no_connection() {
    let Some(t) = TestStore::postgres().await else {
        return;
    };
    let stream = StreamId::new("closing-1").expect("stream id");
    let (store, pool) = named(&t, "annals_closing_fold", &stream, 600).await;
    let started = std::sync::Arc::new(tokio::sync::Notify::new());
    let fold = tokio::spawn({
        let (store, stream, started) = (store.clone(), stream.clone(), started.clone());
        async move {
            let mut seen = 0;
            store
                .fold_stream(&stream, Version(1), &mut |_| {
                    if seen == 0 {
                        started.notify_one();
                    }
                    seen += 1;
                    // Slow enough that the store closes while rows still come.
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    Ok(())
                })
                .await
                .map(|()| seen)
        }
    });
    started.notified().await;
    tokio::time::timeout(std::time::Duration::from_secs(30), store.close())
        .await
        .expect("the store closes");
    assert_eq!(fold.await.expect("the fold's task").expect("the fold"), 600);
    // Server processes end a moment after their connections close.
    annals_testkit::wait_for("no server process of the closed store", async || {
        serving(&pool, "annals_closing_fold", "").await == 0
    })
    .await;
    pool.close().await;
}
