//! An append the engine itself refuses fails alone. A trigger that raises on one event
//! type stands in for any failure of the engine inside a group commit: the writer
//! rolls the batch back and writes its appends one at a time, so the poisoned appends
//! get the engine's error and every other append of their batches commits, at
//! gapless offsets, their `recorded_at` never going back. Run on both engines; the
//! batch-size histogram shows that the appends really shared commits.
//!
//! Under steady group commits on SQLite, the WAL starts over instead of growing: only
//! the writer's own checkpoint, between two of its commits, can copy every frame.

use std::sync::OnceLock;

use annals::{AppendRequest, Error, ExpectedVersion, NewEvent, Store, StreamId};
use annals_testkit::TestStore;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use sqlx::Connection;

const APPENDS: usize = 96;

fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().expect("the only recorder"))
}

/// How many appends and batches the writers have committed so far.
fn batches() -> (f64, f64) {
    let text = metrics().render();
    let value = |name: &str| {
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    };
    (
        value("annals_append_batch_appends_sum"),
        value("annals_append_batch_appends_count"),
    )
}

fn poisoned(n: usize) -> bool {
    n % 8 == 3
}

/// Appends `APPENDS` one-event appends to streams of their own, all at once; every
/// eighth is poisoned. Checks each outcome and the log they leave.
async fn poisoned_appends_fail_alone(store: Store) {
    let (appends_before, batches_before) = batches();
    let tasks: Vec<_> = (0..APPENDS)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let kind = if poisoned(n) { "Poison" } else { "Fine" };
                let stream = StreamId::new(format!("batch-{n}")).expect("stream id");
                let request = AppendRequest::new(stream, ExpectedVersion::NoStream)
                    .event(NewEvent::json(kind, &json!({ "n": n })).expect("event"));
                store.append(request).await
            })
        })
        .collect();
    let mut written = 0;
    for (n, task) in tasks.into_iter().enumerate() {
        match (poisoned(n), task.await.expect("task")) {
            (true, Err(Error::Engine { .. })) => {}
            (false, Ok(outcome)) => {
                assert_eq!(outcome.first_version, 1);
                written += 1;
            }
            (poison, other) => panic!("append {n} (poisoned: {poison}): {other:?}"),
        }
    }
    let (appends_after, batches_after) = batches();
    assert!(
        appends_after - appends_before > batches_after - batches_before,
        "no two appends shared a commit, so no batch was rolled back"
    );

    assert_eq!(store.record_count().await.expect("count"), written);
    for (partition, next) in store.high_watermarks().await.expect("watermarks").iter().enumerate() {
        let records = store
            .read_partition(partition as u32, 0, usize::MAX)
            .await
            .expect("read");
        let offsets: Vec<u64> = records.iter().map(|record| record.offset.0).collect();
        assert_eq!(
            offsets,
            (0..next.0).collect::<Vec<_>>(),
            "partition {partition} has gaps"
        );
        assert!(records.iter().all(|record| record.event_type == "Fine"));
        assert!(
            records
                .windows(2)
                .all(|pair| pair[0].recorded_at <= pair[1].recorded_at),
            "partition {partition}: recorded_at went back"
        );
    }
    for n in (0..APPENDS).filter(|n| poisoned(*n)) {
        let stream = StreamId::new(format!("batch-{n}")).expect("stream id");
        assert_eq!(store.stream_version(&stream).await.expect("version"), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_the_engine_refuses_fails_alone_in_its_group_commit() {
    metrics();

    let t = TestStore::sqlite().await.expect("sqlite");
    let store = t.open().await;
    let url = t.url().expect("url");
    let mut conn = sqlx::SqliteConnection::connect(url).await.expect("connects");
    sqlx::query(
        "CREATE TRIGGER poison BEFORE INSERT ON annals_events WHEN NEW.event_type = 'Poison'
         BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
    )
    .execute(&mut conn)
    .await
    .expect("trigger");
    conn.close().await.expect("closes");
    poisoned_appends_fail_alone(store.clone()).await;
    store.close().await;

    let Some(t) = TestStore::postgres().await else { return };
    let store = t.open().await;
    let mut conn = sqlx::PgConnection::connect(t.url().expect("url"))
        .await
        .expect("connects");
    for statement in [
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS
         $$ BEGIN RAISE EXCEPTION 'poisoned'; END $$",
        "CREATE TRIGGER poison BEFORE INSERT ON annals_events FOR EACH ROW
         WHEN (NEW.event_type = 'Poison') EXECUTE FUNCTION poison()",
    ] {
        sqlx::query(statement).execute(&mut conn).await.expect("trigger");
    }
    conn.close().await.expect("closes");
    poisoned_appends_fail_alone(store.clone()).await;
    store.close().await;
}

/// Eight tasks append without pause until the WAL has been written four times over
/// its checkpoint threshold (4,000 pages): the `-wal` file, which never shrinks while
/// the store is open, must stay near that threshold. A writer that left checkpoints
/// to the background thread alone would let it grow for as long as appends come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_starts_over_under_steady_group_commits() {
    const TASKS: u64 = 8;
    const APPENDS_PER_TASK: u64 = 2_000;
    let t = TestStore::sqlite().await.expect("sqlite");
    let store = t.open().await;
    // Over half a page: each event fills a page of the table alone.
    let note = "n".repeat(3_000);
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (store, note) = (store.clone(), note.clone());
            tokio::spawn(async move {
                for n in 0..APPENDS_PER_TASK {
                    let stream = StreamId::new(format!("steady-{task}-{}", n % 50)).expect("stream id");
                    let request = AppendRequest::new(stream, ExpectedVersion::Any)
                        .event(NewEvent::json("Noted", &json!({ "n": n, "note": note })).expect("event"));
                    store.append(request).await.expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("appender");
    }
    let path = t.url().and_then(|url| url.strip_prefix("sqlite://")).expect("a file");
    let wal = std::fs::metadata(format!("{path}-wal")).expect("the WAL").len();
    let written = std::fs::metadata(path).expect("the database").len();
    store.close().await;
    // A WAL frame is a page and its 24-byte header.
    const PAGE: u64 = 4096 + 24;
    assert!(written > 12_000 * 4096, "the appends wrote only {written} bytes");
    assert!(
        wal < 6_000 * PAGE,
        "the WAL grew to {wal} bytes ({} pages) while {written} bytes were written",
        wal / PAGE
    );
}
