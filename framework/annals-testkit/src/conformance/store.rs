//! The store itself: a fixed partition count, Kafka's partitioner, and no store created where none was asked for.

use super::*;

/// The partition count is fixed when a store is created.
pub async fn partition_count_is_fixed(t: &TestStore) {
    let zero = annals::StoreOptions::from_url("memory:")
        .expect("url")
        .partitions(0)
        .open()
        .await;
    assert!(matches!(zero, Err(Error::InvalidPartitionCount)));
    if !t.is_durable() {
        return;
    }
    assert!(matches!(
        t.open_with(|o| o.partitions(0)).await,
        Err(Error::InvalidPartitionCount)
    ));
    let created = t.open_with(|o| o.partitions(8)).await.expect("create with 8");
    assert_eq!(created.partition_count(), 8);
    created.close().await;
    let again = t.open().await;
    assert_eq!(
        again.partition_count(),
        8,
        "the recorded count wins when none is asked for"
    );
    assert_eq!(again.high_watermarks().await.expect("watermarks").len(), 8);
    again.close().await;
    match t.open_with(|o| o.partitions(16)).await {
        Err(Error::PartitionCountMismatch {
            stored: 8,
            requested: 16,
        }) => {}
        other => panic!("expected PartitionCountMismatch, got {other:?}"),
    }
}

/// Streams land where Kafka's partitioner puts the same keys.
pub async fn streams_land_in_kafka_partitions(t: &TestStore) {
    let store = t.open().await;
    assert_eq!(store.partition_count(), 16);
    let mut placed = BTreeMap::new();
    for id in ["order-1", "order-2", "order-42", "product-sku-9", "customer-alice"] {
        placed.insert(
            id,
            append_one(&store, &stream(id), ExpectedVersion::NoStream)
                .await
                .partition,
        );
    }
    let expected = BTreeMap::from([
        ("order-1", Partition(6)),
        ("order-2", Partition(3)),
        ("order-42", Partition(0)),
        ("product-sku-9", Partition(1)),
        ("customer-alice", Partition(6)),
    ]);
    assert_eq!(placed, expected);
}

/// Opening with `create_if_missing(false)` finds no store where none was created, and
/// creates nothing; once created, the store opens that way.
pub async fn missing_store_is_not_created(t: &TestStore) {
    if !t.is_durable() {
        return;
    }
    match t.open_with(|o| o.create_if_missing(false)).await {
        Err(Error::StoreNotFound { url }) => assert!(!url.is_empty()),
        other => panic!("expected StoreNotFound, got {other:?}"),
    }
    assert!(
        matches!(
            t.open_with(|o| o.create_if_missing(false)).await,
            Err(Error::StoreNotFound { .. })
        ),
        "the failed open created something"
    );
    t.open().await.close().await;
    let store = t
        .open_with(|o| o.create_if_missing(false))
        .await
        .expect("existing store opens");
    assert_eq!(store.partition_count(), 16);
}

/// A `close` whose future is dropped before it finishes (a shutdown deadline, a
/// `select!`) is finished by the next one: the appends queued before the first still
/// commit and are acknowledged, and when the second returns every one of them is in
/// the log.
pub async fn a_cancelled_close_is_finished_by_the_next(t: &TestStore) {
    if !t.is_durable() {
        return;
    }
    const APPENDS: u64 = 300;
    const EVENTS: u64 = 40;
    let store = t.open().await;
    let queued = Arc::new(tokio::sync::Semaphore::new(0));
    let appends: Vec<_> = (0..APPENDS)
        .map(|i| {
            let (store, queued) = (store.clone(), queued.clone());
            tokio::spawn(async move {
                let id = stream(&format!("closing-{i}"));
                let append = store.append(tagged_append(&id, ExpectedVersion::NoStream, i, EVENTS));
                futures::pin_mut!(append);
                // Polled once, the append is committed, waits in a writer's queue, or is
                // being committed on this task with a writer's session (PostgreSQL).
                let first = futures::poll!(&mut append);
                queued.add_permits(1);
                match first {
                    std::task::Poll::Ready(outcome) => outcome,
                    std::task::Poll::Pending => append.await,
                }
            })
        })
        .collect();
    let all = queued
        .acquire_many(APPENDS as u32)
        .await
        .expect("the semaphore stays open");
    all.forget();

    // The first close gives up at its first wait; the second must finish the work.
    let _ = tokio::time::timeout(Duration::ZERO, store.close()).await;
    tokio::time::timeout(Duration::from_secs(60), store.close())
        .await
        .expect("a close after a cancelled one finishes");
    let reopened = t.open().await;
    let in_log: u64 = reopened
        .high_watermarks()
        .await
        .expect("watermarks")
        .iter()
        .map(|end| end.0)
        .sum();
    reopened.close().await;

    for (i, append) in appends.into_iter().enumerate() {
        if let Err(error) = append.await.expect("append task") {
            panic!("append {i}, queued before the store closed, was not committed: {error}");
        }
    }
    assert_eq!(
        in_log,
        APPENDS * EVENTS,
        "the second close returned before the appends queued before the first were committed"
    );
}
