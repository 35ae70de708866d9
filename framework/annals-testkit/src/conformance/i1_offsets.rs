//! I1: offsets in a partition are gapless and in order, under concurrent writers.

use super::*;

/// I1: 8 writers append concurrently while one reader per partition follows the log.
/// A reader must never see an offset skipped (k+1 before k), and every offset below
/// a high watermark it read must be readable right after.
pub async fn i1_offsets_gapless_under_concurrent_writers(t: &TestStore) {
    let store = t.open().await;
    let partitions = store.partition_count();
    let done = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..partitions)
        .map(|partition| {
            let store = store.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut next = 0u64;
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let watermark = store.high_watermarks().await.expect("watermarks")[partition as usize];
                    loop {
                        let batch = store.read_partition(partition, next, 300).await.expect("read");
                        if batch.is_empty() {
                            break;
                        }
                        for record in batch {
                            assert_eq!(
                                record.offset, next,
                                "I1: reader of partition {partition} saw offset {} while expecting {next}",
                                record.offset
                            );
                            next += 1;
                        }
                    }
                    assert!(
                        next >= watermark,
                        "I1: partition {partition} reported watermark {watermark} but only {next} records were readable"
                    );
                    if finished {
                        return next;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();

    let writers: Vec<_> = (0..8u64)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (writer + 1));
                let mut events = 0;
                for n in 0..150 {
                    let id = stream(&format!("i1-{}", rng.next() % 64));
                    let count = 1 + rng.next() % 3;
                    store
                        .append(tagged_append(&id, ExpectedVersion::Any, writer * 1_000 + n, count))
                        .await
                        .expect("append");
                    events += count;
                }
                events
            })
        })
        .collect();
    let mut appended = 0;
    for writer in writers {
        appended += writer.await.expect("writer");
    }
    done.store(true, Ordering::SeqCst);
    let mut seen = 0;
    for reader in readers {
        seen += reader.await.expect("reader");
    }
    assert_eq!(seen, appended, "I1: readers saw {seen} records of {appended} appended");
    let watermarks = store.high_watermarks().await.expect("watermarks");
    for partition in 0..partitions {
        let records = read_whole_partition(&store, partition).await;
        assert_eq!(
            records.len() as u64,
            watermarks[partition as usize],
            "watermark of partition {partition}"
        );
        assert_eq!(
            store.high_watermark(partition).await.expect("watermark"),
            watermarks[partition as usize],
            "one partition's watermark read alone"
        );
    }
    assert!(matches!(
        store.high_watermark(partitions).await,
        Err(annals::Error::PartitionOutOfRange { .. })
    ));
}
