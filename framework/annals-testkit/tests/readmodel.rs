//! Read-model transactions on SQLite and PostgreSQL: concurrent transactions commit or
//! roll back each on its own, whatever they share a commit with (SQLite's group commit).
//! On SQLite they share the store's one writer with appends, and one that awaits too
//! long is rolled back rather than holding up the rest.

use std::collections::BTreeSet;
use std::time::Duration;

use annals::readmodel::{Db, Param};
use annals::{params, AppendRequest, Error, ExpectedVersion, NewEvent, StreamId};
use annals_testkit::TestStore;

annals_testkit::on_sql_engines!(
    concurrent_transactions_succeed_and_fail_alone,
    a_panicking_transaction_rolls_back_alone,
    execute_many_runs_every_row_or_fails_at_the_first_bad_one,
);

async fn keys(db: &Db) -> BTreeSet<i64> {
    db.query("SELECT k FROM kv ORDER BY k", Vec::new())
        .await
        .expect("select")
        .iter()
        .map(|row| row.get(0).expect("k"))
        .collect()
}

async fn create(db: &Db) {
    create_table(db, "CREATE TABLE kv (k BIGINT PRIMARY KEY, v TEXT NOT NULL)").await;
}

async fn create_table(db: &Db, ddl: &'static str) {
    db.transaction(move |tx| Box::pin(async move { tx.execute(ddl, &[]).await.map(drop) }))
        .await
        .expect("create");
}

async fn concurrent_transactions_succeed_and_fail_alone(t: TestStore) {
    let store = t.open().await;
    let db = store.read_models().expect("sql");
    create(&db).await;
    db.transaction(|tx| Box::pin(async move { tx.execute("INSERT INTO kv VALUES (1000, 'taken')", &[]).await }))
        .await
        .expect("seed");
    // Every third transaction fails after writing: by returning an error, or on a
    // duplicate key after a first insert that succeeded.
    let tasks: Vec<_> = (0..60_i64)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                db.transaction(move |tx| {
                    Box::pin(async move {
                        tx.execute("INSERT INTO kv VALUES ($1, $2)", params![i, format!("v{i}")])
                            .await?;
                        match i % 6 {
                            1 => return Err(Error::handler(format!("refused {i}"))),
                            4 => tx.execute("INSERT INTO kv VALUES (1000, 'again')", &[]).await?,
                            _ => 0,
                        };
                        Ok(i)
                    })
                })
                .await
            })
        })
        .collect();
    let mut committed = BTreeSet::from([1000]);
    for (i, task) in (0_i64..).zip(tasks) {
        let result = task.await.expect("task");
        match i % 6 {
            1 => assert!(
                matches!(&result, Err(Error::Handler(m)) if m.to_string() == format!("refused {i}")),
                "{result:?}"
            ),
            4 => assert!(result.is_err(), "transaction {i} broke the key and succeeded"),
            _ => {
                assert_eq!(result.expect("committed"), i);
                committed.insert(i);
            }
        }
    }
    assert_eq!(keys(&db).await, committed);
}

async fn a_panicking_transaction_rolls_back_alone(t: TestStore) {
    let store = t.open().await;
    let db = store.read_models().expect("sql");
    create(&db).await;
    let tasks: Vec<_> = (0..20_i64)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                db.transaction(move |tx| {
                    Box::pin(async move {
                        tx.execute("INSERT INTO kv VALUES ($1, 'v')", params![i]).await?;
                        assert!(i != 7, "transaction 7 panics");
                        Ok(())
                    })
                })
                .await
            })
        })
        .collect();
    for (i, task) in (0_i64..).zip(tasks) {
        match task.await {
            Ok(result) => result.expect("committed"),
            Err(join) => assert!(i == 7 && join.is_panic(), "transaction {i}: {join}"),
        }
    }
    let expected: BTreeSet<i64> = (0..20).filter(|&i| i != 7).collect();
    assert_eq!(keys(&db).await, expected);
    // The writer is still fine.
    db.transaction(|tx| Box::pin(async move { tx.execute("INSERT INTO kv VALUES (99, 'after')", &[]).await }))
        .await
        .expect("a later transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_refuses_a_transaction_that_ends_itself() {
    let Some(t) = TestStore::sqlite().await else { return };
    let store = t.open().await;
    let db = store.read_models().expect("sql");
    create(&db).await;
    let ended = db
        .transaction(|tx| {
            Box::pin(async move {
                tx.execute("INSERT INTO kv VALUES (1, 'v')", &[]).await?;
                tx.execute("ROLLBACK", &[]).await
            })
        })
        .await;
    assert!(matches!(ended, Err(Error::TransactionEnded)), "{ended:?}");
    db.transaction(|tx| Box::pin(async move { tx.execute("INSERT INTO kv VALUES (2, 'v')", &[]).await }))
        .await
        .expect("the next transaction");
    assert_eq!(keys(&db).await, BTreeSet::from([2]));
}

/// A transaction whose work sleeps (on SQLite's single writer) holds up appends and
/// other transactions only until the await limit: then it is rolled back, fails with
/// its own error, and the others commit. Two writers competing for the lock would
/// leave the append waiting for the lock until its busy timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_transaction_that_awaits_too_long_holds_nobody_up() {
    let Some(t) = TestStore::sqlite().await else { return };
    let limit = Duration::from_millis(100);
    let store = t
        .open_with(|options| options.transaction_await_limit(limit))
        .await
        .expect("open");
    let db = store.read_models().expect("sql");
    create(&db).await;
    let (started, has_started) = tokio::sync::oneshot::channel();
    let slow = tokio::spawn({
        let db = db.clone();
        async move {
            db.transaction(move |tx| {
                Box::pin(async move {
                    tx.execute("INSERT INTO kv VALUES (1, 'slow')", &[]).await?;
                    let _ = started.send(());
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    Ok(())
                })
            })
            .await
        }
    });
    has_started.await.expect("the slow transaction started");
    const WITHIN: Duration = Duration::from_secs(30);
    let append = AppendRequest::new(StreamId::new("order-1").expect("id"), ExpectedVersion::NoStream)
        .event(NewEvent::json("Placed", &serde_json::json!({})).expect("event"));
    tokio::time::timeout(WITHIN, store.append(append))
        .await
        .expect("the append was held up")
        .expect("append");
    tokio::time::timeout(
        WITHIN,
        db.transaction(|tx| Box::pin(async move { tx.execute("INSERT INTO kv VALUES (2, 'v')", &[]).await })),
    )
    .await
    .expect("the transaction was held up")
    .expect("transaction");
    let slow = tokio::time::timeout(WITHIN, slow)
        .await
        .expect("the slow one was never stopped")
        .expect("task");
    assert!(
        matches!(slow, Err(Error::TransactionAwaited { limit: l }) if l == limit),
        "{slow:?}"
    );
    assert_eq!(
        keys(&db).await,
        BTreeSet::from([2]),
        "the slow one's insert was rolled back"
    );
}

/// An append made from inside a write transaction waits for the store's one writer,
/// which is running that transaction: the transaction is rolled back at the await
/// limit, and the append it left queued is not written afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_append_left_by_a_rolled_back_transaction_does_not_land() {
    let Some(t) = TestStore::sqlite().await else { return };
    let store = t
        .open_with(|options| options.transaction_await_limit(Duration::from_millis(100)))
        .await
        .expect("open");
    let db = store.read_models().expect("sql");
    let orphan = StreamId::new("order-orphan").expect("id");
    let failed = db
        .transaction({
            let (store, orphan) = (store.clone(), orphan.clone());
            move |_tx| {
                Box::pin(async move {
                    let append = AppendRequest::new(orphan, ExpectedVersion::Any)
                        .event(NewEvent::json("Placed", &serde_json::json!({})).expect("event"));
                    store.append(append).await.map(drop)
                })
            }
        })
        .await;
    assert!(matches!(failed, Err(Error::TransactionAwaited { .. })), "{failed:?}");
    // The writer takes its queue in order: once this append is answered, the one the
    // transaction left behind has been dealt with.
    let after = AppendRequest::new(StreamId::new("order-after").expect("id"), ExpectedVersion::Any)
        .event(NewEvent::json("Placed", &serde_json::json!({})).expect("event"));
    store.append(after).await.expect("append");
    assert_eq!(
        store.stream_version(&orphan).await.expect("version"),
        annals::Version(0),
        "the append of a rolled-back transaction landed"
    );
}

/// Awaits that end well within the limit (a short timer, a yield) are fine: the work is
/// polled again when woken and commits whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_transaction_may_await_briefly() {
    let Some(t) = TestStore::sqlite().await else { return };
    let store = t.open().await;
    let db = store.read_models().expect("sql");
    create(&db).await;
    db.transaction(|tx| {
        Box::pin(async move {
            tx.execute("INSERT INTO kv VALUES (1, 'v')", &[]).await?;
            tokio::time::sleep(Duration::from_millis(5)).await;
            tokio::task::yield_now().await;
            tx.execute("INSERT INTO kv VALUES (2, 'v')", &[]).await
        })
    })
    .await
    .expect("committed");
    assert_eq!(keys(&db).await, BTreeSet::from([1, 2]));
}

/// `execute_many` binds each row afresh (a NULL after a value stays NULL), binds `$n`
/// by number in any order, counts the rows changed, and a failing row fails the
/// transaction it is in.
async fn execute_many_runs_every_row_or_fails_at_the_first_bad_one(t: TestStore) {
    let store = t.open().await;
    let db = store.read_models().expect("sql");
    create_table(&db, "CREATE TABLE notes (k BIGINT PRIMARY KEY, v TEXT)").await;
    let changed = db
        .transaction(|tx| {
            Box::pin(async move {
                let rows: Vec<Vec<Param>> = vec![
                    vec![Param::from("one"), Param::from(1)],
                    vec![Param::from("two"), Param::from(2)],
                    vec![Param::Text(None), Param::from(3)],
                ];
                tx.execute_many("INSERT INTO notes (k, v) VALUES ($2, $1)", &rows).await
            })
        })
        .await
        .expect("rows");
    assert_eq!(changed, 3);
    let notes = |db: Db| async move {
        db.query("SELECT k, v FROM notes ORDER BY k", Vec::new())
            .await
            .expect("select")
            .iter()
            .map(|row| (row.get::<i64>(0).expect("k"), row.get::<Option<String>>(1).expect("v")))
            .collect::<Vec<_>>()
    };
    let before = notes(db.clone()).await;
    assert_eq!(before, [(1, Some("one".into())), (2, Some("two".into())), (3, None)]);

    let failed = db
        .transaction(|tx| {
            Box::pin(async move {
                let rows = [
                    [Param::from(4), Param::from("four")],
                    [Param::from(1), Param::from("again")],
                ];
                tx.execute_many("INSERT INTO notes (k, v) VALUES ($1, $2)", &rows).await
            })
        })
        .await;
    assert!(failed.is_err(), "a duplicate key fails the batch: {failed:?}");
    assert_eq!(
        notes(db).await,
        before,
        "the row before the failing one rolled back with it"
    );
}
