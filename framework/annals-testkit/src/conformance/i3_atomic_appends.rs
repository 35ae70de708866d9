//! I3: an append is stored whole or not at all.

use super::*;

/// I3: appends of several events, concurrent with each other, are each stored
/// contiguously and completely; a rejected multi-event append stores nothing.
pub async fn i3_appends_are_atomic(t: &TestStore) {
    let store = t.open().await;
    let writers: Vec<_> = (0..6u64)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut rng = XorShift(writer + 99);
                for n in 0..40 {
                    let id = stream(&format!("i3-{}", rng.next() % 4));
                    let count = 1 + rng.next() % 6;
                    store
                        .append(tagged_append(&id, ExpectedVersion::Any, writer * 1_000 + n, count))
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let before = store.high_watermarks().await.expect("watermarks");
    let id = stream("i3-0");
    let rejected = store
        .append(tagged_append(&id, ExpectedVersion::NoStream, 999_999, 5))
        .await;
    assert!(matches!(rejected, Err(Error::WrongExpectedVersion { .. })));
    assert_eq!(
        store.high_watermarks().await.expect("watermarks"),
        before,
        "I3: a rejected append wrote something"
    );

    for partition in 0..store.partition_count() {
        let records = read_whole_partition(&store, partition).await;
        let mut i = 0;
        while i < records.len() {
            let tag: serde_json::Value = records[i].decode().expect("payload");
            let count = tag["of"].as_u64().expect("count") as usize;
            assert!(i + count <= records.len(), "I3: append {} is cut short", tag["append"]);
            for (j, record) in records[i..i + count].iter().enumerate() {
                let part: serde_json::Value = record.decode().expect("payload");
                assert_eq!(
                    part["append"], tag["append"],
                    "I3: append {} is interleaved",
                    tag["append"]
                );
                assert_eq!(
                    part["i"].as_u64(),
                    Some(j as u64),
                    "I3: append {} is out of order",
                    tag["append"]
                );
                assert_eq!(record.stream, records[i].stream);
            }
            i += count;
        }
    }
}
