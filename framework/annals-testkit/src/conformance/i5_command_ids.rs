//! I5: a command id is applied at most once, also across restarts.

use super::*;

/// I5: a command id is applied once. A retry returns the original outcome marked
/// duplicate and writes nothing, even with other events; the same id on another
/// stream is a conflict; of many concurrent retries exactly one writes.
pub async fn i5_command_id_applied_once(t: &TestStore) {
    let store = t.open().await;
    let id = stream("payment-1");
    let command = Uuid::new_v4();
    let original = store
        .append(tagged_append(&id, ExpectedVersion::NoStream, 1, 2).command_id(command))
        .await
        .expect("first append");
    assert!(!original.duplicate);
    let records = store.read_stream(&id, 1, 10).await.expect("read");
    assert!(
        records.iter().all(|r| r.metadata.command_id == Some(command)),
        "command id is in the metadata"
    );

    let before = store.high_watermarks().await.expect("watermarks");
    // The retry's expected version is stale and its events differ: still the original answer.
    let retry = store
        .append(tagged_append(&id, ExpectedVersion::NoStream, 2, 3).command_id(command))
        .await
        .expect("retry is not an error");
    assert_eq!(
        retry,
        AppendOutcome {
            duplicate: true,
            ..original
        },
        "I5: a retry returns the original outcome"
    );
    assert_eq!(
        store.high_watermarks().await.expect("watermarks"),
        before,
        "I5: a retry wrote events"
    );
    assert_eq!(
        store.command_outcome(command).await.expect("lookup"),
        Some((id.clone(), retry)),
        "the store tells the outcome of a known command id"
    );
    assert_eq!(store.command_outcome(Uuid::new_v4()).await.expect("lookup"), None);

    let elsewhere = store
        .append(tagged_append(&stream("payment-2"), ExpectedVersion::Any, 3, 1).command_id(command))
        .await;
    match elsewhere {
        Err(Error::CommandIdConflict {
            command_id,
            stream: s,
            existing_stream,
        }) => {
            assert_eq!(
                (command_id, s.as_str(), existing_stream.as_str()),
                (command, "payment-2", "payment-1")
            );
        }
        other => panic!("I5: expected CommandIdConflict, got {other:?}"),
    }
    assert_eq!(
        store.high_watermarks().await.expect("watermarks"),
        before,
        "I5: a conflict wrote events"
    );

    // Sixteen concurrent deliveries of one command: one writes, all agree.
    let command = Uuid::new_v4();
    let racers: Vec<_> = (0..16)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(tagged_append(&stream("payment-3"), ExpectedVersion::Any, n, 1).command_id(command))
                    .await
                    .expect("append")
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for racer in racers {
        outcomes.push(racer.await.expect("racer"));
    }
    assert_eq!(
        outcomes.iter().filter(|o| !o.duplicate).count(),
        1,
        "I5: exactly one delivery writes"
    );
    assert!(outcomes.iter().all(|o| o.first_offset == outcomes[0].first_offset));
    assert_eq!(store.stream_version(&stream("payment-3")).await.expect("version"), 1);
}

/// I5 across restarts: after the store is opened again, a known command id is still
/// a duplicate.
pub async fn i5_command_id_survives_reopen(t: &TestStore) {
    let command = Uuid::new_v4();
    let id = stream("payment-9");
    let original = {
        let store = t.open().await;
        let outcome = store
            .append(tagged_append(&id, ExpectedVersion::Any, 1, 3).command_id(command))
            .await
            .expect("append");
        store.close().await;
        outcome
    };
    let store = t.open().await;
    let retry = store
        .append(tagged_append(&id, ExpectedVersion::Any, 1, 3).command_id(command))
        .await
        .expect("retry");
    assert_eq!(
        retry,
        AppendOutcome {
            duplicate: true,
            ..original
        },
        "I5: command ids survive a restart"
    );
    assert_eq!(store.stream_version(&id).await.expect("version"), 3);
}
