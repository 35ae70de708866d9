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

/// I5 comes before every refusal: a retried command whose append would now be refused
/// (for a stale expected version, or for the event id it chose itself) is answered with
/// its original outcome, and a known command id on another stream is a conflict even
/// where that append would be refused too. A refused append records no command id, so
/// the command can still be applied. Deliveries of one command, some of which would be
/// refused, write it once, whichever comes first.
pub async fn i5_command_id_answers_before_refusals(t: &TestStore) {
    let store = t.open().await;

    let command = Uuid::new_v4();
    let id = stream("refund-1");
    match store
        .append(tagged_append(&id, ExpectedVersion::Exact(Version(5)), 1, 1).command_id(command))
        .await
    {
        Err(Error::WrongExpectedVersion { .. }) => {}
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    }
    assert_eq!(
        store.command_outcome(command).await.expect("lookup"),
        None,
        "I5: a refused append recorded its command id"
    );
    let applied = store
        .append(tagged_append(&id, ExpectedVersion::NoStream, 2, 1).command_id(command))
        .await
        .expect("the command, refused once, is applied");
    assert!(!applied.duplicate, "I5: a refused append counted as applied");

    // The event id the client chose is in the log now; the retry is still answered.
    let chosen = Uuid::new_v4();
    let command = Uuid::new_v4();
    let request = || {
        AppendRequest::new(stream("refund-2"), ExpectedVersion::Any)
            .event(event("Refunded", json!({"amount": 5})).with_id(chosen))
            .command_id(command)
    };
    let first = store.append(request()).await.expect("first delivery");
    let retry = store
        .append(request())
        .await
        .expect("a retry is not a duplicate event id");
    assert_eq!(
        retry,
        AppendOutcome {
            duplicate: true,
            ..first
        },
        "I5: a retry returns the original outcome"
    );
    match store
        .append(tagged_append(&stream("refund-3"), ExpectedVersion::Exact(Version(7)), 3, 1).command_id(command))
        .await
    {
        Err(Error::CommandIdConflict { existing_stream, .. }) => assert_eq!(existing_stream.as_str(), "refund-2"),
        other => panic!("I5: expected CommandIdConflict before the version check, got {other:?}"),
    }

    // Eight deliveries of one command at once, half with an expected version the
    // stream never has: one writes, the others are duplicates of it or refused.
    let command = Uuid::new_v4();
    let id = stream("refund-4");
    let racers: Vec<_> = (0..8u64)
        .map(|n| {
            let store = store.clone();
            let expected = if n % 2 == 0 {
                ExpectedVersion::Exact(Version(9))
            } else {
                ExpectedVersion::Any
            };
            let request = tagged_append(&id, expected, n, 1).command_id(command);
            tokio::spawn(async move { store.append(request).await })
        })
        .collect();
    let mut answers = Vec::new();
    for racer in racers {
        answers.push(racer.await.expect("racer"));
    }
    let written: Vec<_> = answers.iter().flatten().filter(|o| !o.duplicate).copied().collect();
    assert_eq!(written.len(), 1, "I5: exactly one delivery writes: {answers:?}");
    for answer in &answers {
        match answer {
            Ok(outcome) => assert_eq!(outcome.first_offset, written[0].first_offset, "I5: {answers:?}"),
            Err(Error::WrongExpectedVersion { .. }) => {}
            Err(other) => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(store.stream_version(&id).await.expect("version"), 1);
}
