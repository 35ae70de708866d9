//! I2: a stream's versions are contiguous, in offset order, in one partition.

use super::*;

/// I2: writers race on a few streams with exact expected versions, retrying on
/// conflict. Every stream ends with versions 1..v in offset order, in its partition.
pub async fn i2_stream_versions_contiguous(t: &TestStore) {
    let store = t.open().await;
    let writers: Vec<_> = (0..8u64)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut rng = XorShift(writer + 7);
                let mut written = HashMap::<String, u64>::new();
                for n in 0..60 {
                    let id = stream(&format!("i2-{}", rng.next() % 5));
                    let count = 1 + rng.next() % 3;
                    loop {
                        let version = store.stream_version(&id).await.expect("version");
                        match store
                            .append(tagged_append(
                                &id,
                                ExpectedVersion::Exact(version),
                                writer * 1_000 + n,
                                count,
                            ))
                            .await
                        {
                            Ok(outcome) => {
                                assert_eq!(outcome.first_version, version + 1);
                                assert_eq!(outcome.last_version, version + count);
                                *written.entry(id.to_string()).or_default() += count;
                                break;
                            }
                            Err(Error::WrongExpectedVersion { actual, .. }) => assert!(actual > version),
                            Err(other) => panic!("unexpected error: {other}"),
                        }
                    }
                }
                written
            })
        })
        .collect();
    let mut expected = HashMap::<String, u64>::new();
    for writer in writers {
        for (id, count) in writer.await.expect("writer") {
            *expected.entry(id).or_default() += count;
        }
    }
    for (id, count) in expected {
        let id = stream(&id);
        let records = store.read_stream(&id, 1, 10_000).await.expect("read stream");
        assert_eq!(records.len() as u64, count, "I2: {id} holds every event once");
        assert_eq!(store.stream_version(&id).await.expect("version"), count);
        let partition = partition_for(&id, store.partition_count());
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.version, i as u64 + 1, "I2: versions of {id} are 1..v");
            assert_eq!(record.partition, partition, "I2: {id} lives in one partition");
            assert_eq!(&record.stream, &id);
            if i > 0 {
                assert!(
                    record.offset > records[i - 1].offset,
                    "I2: versions of {id} follow offset order"
                );
            }
        }
    }
}
