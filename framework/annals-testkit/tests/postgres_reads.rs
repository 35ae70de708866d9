//! PostgreSQL folds a stream from rows in the order its plan finds them (no sort on
//! the server, so rows reach the fold while the scan goes on) and puts them in version
//! order itself. On an append-only table that order is nearly always version order;
//! a row rewritten in place (a redaction, or as here by hand) moves to the end of the
//! table, and the fold must still see every version once, in order.

use annals::{AppendRequest, ExpectedVersion, NewEvent, Store, StreamId, Version};
use annals_testkit::TestStore;
use serde_json::json;
use sqlx::postgres::PgPool;

/// Folds `stream` from `from` and returns the versions it was shown.
async fn folded(store: &Store, stream: &StreamId, from: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    store
        .fold_stream(stream, Version(from), &mut |event| {
            seen.push(event.version.0);
            Ok(())
        })
        .await
        .expect("folds");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fold_shows_versions_in_order_whatever_order_the_rows_come_in() {
    let Some(t) = TestStore::postgres().await else {
        return;
    };
    let store = t.open().await;
    let stream = StreamId::new("moved-1").expect("stream id");
    for n in 0..120u64 {
        let request = AppendRequest::new(stream.clone(), ExpectedVersion::Exact(Version(n)))
            .event(NewEvent::json("Noted", &json!({ "n": n, "pad": "x".repeat(200) })).expect("event"));
        store.append(request).await.expect("append");
    }
    // Sessions that read the table in its physical order.
    let url = t.url().expect("a PostgreSQL URL");
    let scanning_url = format!("{url}%20-c%20enable_indexscan%3Doff%20-c%20enable_bitmapscan%3Doff");
    let pool = PgPool::connect(&scanning_url).await.expect("connects");
    // A new event id is a change to an indexed column, so the rows' new versions are
    // written where there is room: after the rows that follow them.
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

    let scanning = Store::open(&scanning_url).await.expect("opens");
    assert_eq!(folded(&scanning, &stream, 1).await, (1..=120).collect::<Vec<_>>());
    assert_eq!(folded(&scanning, &stream, 50).await, (50..=120).collect::<Vec<_>>());
    assert_eq!(folded(&scanning, &stream, 121).await, Vec::<u64>::new());
    // The same through the plan the planner picks.
    assert_eq!(folded(&store, &stream, 1).await, (1..=120).collect::<Vec<_>>());
    scanning.close().await;
    store.close().await;
}
