//! Read-model transactions on SQLite and PostgreSQL: concurrent transactions commit or
//! roll back each on its own, whatever they share a commit with (SQLite's group commit).

use std::collections::BTreeSet;

use annals::readmodel::Db;
use annals::{params, Error};
use annals_testkit::TestStore;

annals_testkit::on_sql_engines!(
    concurrent_transactions_succeed_and_fail_alone,
    a_panicking_transaction_rolls_back_alone,
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
    db.transaction(|tx| {
        Box::pin(async move {
            tx.execute("CREATE TABLE kv (k BIGINT PRIMARY KEY, v TEXT NOT NULL)", &[])
                .await
                .map(drop)
        })
    })
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
                            1 => return Err(Error::Handler(format!("refused {i}"))),
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
                matches!(&result, Err(Error::Handler(m)) if *m == format!("refused {i}")),
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
