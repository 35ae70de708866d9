//! The store contract as tests: each function checks one invariant of the design
//! (DESIGN.md §2) or one documented behaviour, on whatever engine the [`TestStore`]
//! opens. [`conformance_suite!`](crate::conformance_suite) runs them all.
//!
//! The tests panic with a message naming the broken rule.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use annals::{
    partition_for, AppendOutcome, AppendRequest, Error, EventStore, ExpectedVersion, Metadata, NewEvent, Store,
    StreamId,
};
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

use crate::TestStore;

fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("valid test stream id")
}

fn event(kind: &str, payload: serde_json::Value) -> NewEvent {
    NewEvent::json(kind, &payload).expect("serialisable payload")
}

/// An append of `count` events whose payloads say which append and position they are.
fn tagged_append(stream_id: &StreamId, expected: ExpectedVersion, tag: u64, count: u64) -> AppendRequest {
    let mut request = AppendRequest::new(stream_id.clone(), expected);
    for i in 0..count {
        request = request.event(event("Tagged", json!({"append": tag, "i": i, "of": count})));
    }
    request
}

async fn append_one(store: &Store, id: &StreamId, expected: ExpectedVersion) -> AppendOutcome {
    store
        .append(AppendRequest::new(id.clone(), expected).event(event("Noted", json!({"n": 1}))))
        .await
        .expect("append succeeds")
}

/// A tiny deterministic generator, so failures reproduce.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Reads every record of `partition`, checking offsets are exactly 0, 1, 2, ….
pub async fn read_whole_partition(store: &Store, partition: u32) -> Vec<annals::RecordedEvent> {
    let mut records = Vec::new();
    loop {
        let batch = store
            .read_partition(partition, records.len() as u64, 1_000)
            .await
            .expect("read partition");
        if batch.is_empty() {
            return records;
        }
        for record in batch {
            assert_eq!(
                record.offset,
                records.len() as u64,
                "I1: partition {partition} has a gap or a duplicate"
            );
            records.push(record);
        }
    }
}

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

/// Whether an error is the one a bad input deserves.
type ErrorCheck = fn(&Error) -> bool;

/// I9: each kind of bad input gets its typed error and changes nothing.
pub async fn i9_bad_input_changes_nothing(t: &TestStore) {
    let store = t.open().await;
    let id = stream("order-9");
    let mine = Uuid::new_v4();
    append_one(&store, &id, ExpectedVersion::NoStream).await;
    store
        .append(AppendRequest::new(id.clone(), ExpectedVersion::Any).event(event("Noted", json!(1)).with_id(mine)))
        .await
        .expect("append with a client event id");
    let before = store.high_watermarks().await.expect("watermarks");
    let limits = store.limits().clone();

    for bad in ["", "has space", "slash/", &"x".repeat(201), "ünïcode"] {
        assert!(
            matches!(StreamId::new(bad), Err(Error::InvalidStreamId { .. })),
            "{bad:?}"
        );
    }
    let big = "x".repeat(limits.max_event_bytes);
    let cases: Vec<(&str, AppendRequest, ErrorCheck)> = vec![
        (
            "empty append",
            AppendRequest::new(id.clone(), ExpectedVersion::Any),
            |e| matches!(e, Error::EmptyAppend),
        ),
        (
            "too many events",
            AppendRequest {
                events: (0..=limits.max_events_per_append)
                    .map(|_| event("E", json!(0)))
                    .collect(),
                ..AppendRequest::new(id.clone(), ExpectedVersion::Any)
            },
            |e| matches!(e, Error::TooManyEvents { .. }),
        ),
        (
            "oversized payload",
            AppendRequest::new(id.clone(), ExpectedVersion::Any).event(event("E", json!(big))),
            |e| matches!(e, Error::PayloadTooLarge { index: 0, .. }),
        ),
        (
            "oversized append",
            AppendRequest {
                events: (0..5)
                    .map(|_| event("E", json!(&big[..limits.max_event_bytes - 10])))
                    .collect(),
                ..AppendRequest::new(id.clone(), ExpectedVersion::Any)
            },
            |e| matches!(e, Error::AppendTooLarge { .. }),
        ),
        (
            "empty event type",
            AppendRequest::new(id.clone(), ExpectedVersion::Any).event(event("", json!(0))),
            |e| matches!(e, Error::InvalidEventType { .. }),
        ),
        (
            "event id twice in one append",
            AppendRequest::new(id.clone(), ExpectedVersion::Any)
                .event(event("E", json!(0)).with_id(Uuid::from_u128(7)))
                .event(event("E", json!(1)).with_id(Uuid::from_u128(7))),
            |e| matches!(e, Error::DuplicateEventId { .. }),
        ),
        (
            "event id already stored",
            AppendRequest::new(id.clone(), ExpectedVersion::Any)
                .event(event("E", json!(0)))
                .event(event("E", json!(1)).with_id(mine)),
            |e| matches!(e, Error::DuplicateEventId { event_id } if *event_id != Uuid::nil()),
        ),
        (
            "reserved metadata key",
            AppendRequest::new(id.clone(), ExpectedVersion::Any)
                .event(event("E", json!(0)).with_metadata(Metadata::new().with("command_id", "forged"))),
            |e| matches!(e, Error::ReservedMetadataKey { key } if key == "command_id"),
        ),
        (
            "wrong expected version",
            AppendRequest::new(id.clone(), ExpectedVersion::Exact(7)).event(event("E", json!(0))),
            |e| matches!(e, Error::WrongExpectedVersion { actual: 2, .. }),
        ),
    ];
    for (name, request, expected) in cases {
        match store.append(request).await {
            Err(error) => assert!(expected(&error), "{name}: wrong error {error:?}"),
            Ok(outcome) => panic!("{name}: accepted as {outcome:?}"),
        }
        assert_eq!(
            store.high_watermarks().await.expect("watermarks"),
            before,
            "I9: {name} changed the log"
        );
        assert_eq!(
            store.stream_version(&id).await.expect("version"),
            2,
            "I9: {name} changed the stream"
        );
    }
    assert!(matches!(
        store.read_partition(store.partition_count(), 0, 10).await,
        Err(Error::PartitionOutOfRange { .. })
    ));
    assert!(matches!(
        store.list_streams(Some("bad-category"), 10, None).await,
        Err(Error::InvalidCategory { .. })
    ));
    assert!(NewEvent::from_json_text("E", "{not json").is_err());
}

/// Each expected version admits exactly the versions the contract says.
pub async fn expected_version_semantics(t: &TestStore) {
    let store = t.open().await;
    let id = stream("cart-1");
    let conflict = |result: annals::Result<AppendOutcome>| match result {
        Err(Error::WrongExpectedVersion { actual, .. }) => actual,
        other => panic!("expected a conflict, got {other:?}"),
    };
    let one = |expected| AppendRequest::new(id.clone(), expected).event(event("E", json!(0)));
    assert_eq!(conflict(store.append(one(ExpectedVersion::StreamExists)).await), 0);
    assert_eq!(conflict(store.append(one(ExpectedVersion::Exact(1))).await), 0);
    assert_eq!(
        store
            .append(one(ExpectedVersion::NoStream))
            .await
            .expect("new stream")
            .last_version,
        1
    );
    assert_eq!(conflict(store.append(one(ExpectedVersion::NoStream)).await), 1);
    assert_eq!(conflict(store.append(one(ExpectedVersion::Exact(0))).await), 1);
    assert_eq!(
        store
            .append(one(ExpectedVersion::StreamExists))
            .await
            .expect("exists")
            .last_version,
        2
    );
    assert_eq!(
        store
            .append(one(ExpectedVersion::Exact(2)))
            .await
            .expect("exact")
            .last_version,
        3
    );
    assert_eq!(conflict(store.append(one(ExpectedVersion::Exact(2))).await), 3);
    assert_eq!(
        store.append(one(ExpectedVersion::Any)).await.expect("any").last_version,
        4
    );
    assert_eq!(store.append(one(ExpectedVersion::Exact(0))).await.ok(), None);
    let fresh = AppendRequest::new(stream("cart-2"), ExpectedVersion::Exact(0)).event(event("E", json!(0)));
    assert_eq!(
        store
            .append(fresh)
            .await
            .expect("Exact(0) on a new stream")
            .last_version,
        1
    );
}

/// Appends checked in the same group commit fail alone: of 24 concurrent creations
/// of one stream exactly one succeeds, while 24 appends to fresh streams all succeed.
pub async fn concurrent_appends_fail_alone(t: &TestStore) {
    let store = t.open().await;
    let tasks: Vec<_> = (0..48)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = if n % 2 == 0 {
                    "race-0".to_owned()
                } else {
                    format!("race-{n}")
                };
                let request = AppendRequest::new(stream(&id), ExpectedVersion::NoStream).event(event("E", json!(n)));
                (n, store.append(request).await)
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        match task.await.expect("task") {
            (n, Ok(_)) if n % 2 == 0 => winners += 1,
            (_, Ok(outcome)) => assert_eq!(outcome.first_version, 1),
            (n, Err(Error::WrongExpectedVersion { actual: 1, .. })) if n % 2 == 0 => {}
            (n, other) => panic!("append {n}: {other:?}"),
        }
    }
    assert_eq!(winners, 1, "exactly one creation of race-0 wins");
    assert_eq!(store.stream_version(&stream("race-0")).await.expect("version"), 1);
}

/// Stream and partition reads honour their start position and limit.
pub async fn reads_respect_from_and_limit(t: &TestStore) {
    let store = t.open().await;
    let id = stream("ledger-1");
    for n in 0..5 {
        append_one(&store, &id, ExpectedVersion::Exact(n)).await;
    }
    let versions = |records: Vec<annals::RecordedEvent>| records.iter().map(|r| r.version).collect::<Vec<_>>();
    assert_eq!(versions(store.read_stream(&id, 3, 2).await.expect("read")), [3, 4]);
    assert_eq!(
        versions(store.read_stream(&id, 0, 100).await.expect("read")),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        versions(store.read_stream(&id, 6, 100).await.expect("read")),
        Vec::<u64>::new()
    );
    assert!(store
        .read_stream(&stream("ledger-none"), 1, 10)
        .await
        .expect("read")
        .is_empty());
    assert_eq!(store.stream_version(&stream("ledger-none")).await.expect("version"), 0);

    let partition = partition_for(&id, store.partition_count());
    let offsets: Vec<u64> = store
        .read_partition(partition, 1, 3)
        .await
        .expect("read")
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(offsets, [1, 2, 3]);
    assert!(store.read_partition(partition, 5, 10).await.expect("read").is_empty());
    assert_eq!(
        store.high_watermarks().await.expect("watermarks")[partition as usize],
        5
    );
    assert_eq!(
        store.high_watermarks().await.expect("watermarks").len(),
        store.partition_count() as usize
    );
}

/// `fold_stream` visits exactly what `read_stream` returns, in version order, from the
/// version asked, with the schema version each record's metadata gives (odd values
/// included); an error from the visitor stops the read and comes back unchanged.
pub async fn fold_stream_sees_what_read_stream_returns(t: &TestStore) {
    let store = t.open().await;
    let id = stream("fold-1");
    let odd_versions = [
        json!(3),
        json!("2"),
        json!(-1),
        json!(2.5),
        json!(99_999_999_999u64),
        json!(0),
    ];
    for half in 0..2u64 {
        let mut request = AppendRequest::new(id.clone(), ExpectedVersion::Exact(half * 750));
        for i in half * 750..(half + 1) * 750 {
            let kind = if i % 2 == 0 { "Even" } else { "Odd" };
            let mut metadata = Metadata::default().with("i", i);
            if let Some(version) = odd_versions.get(i as usize % 8) {
                metadata = metadata.with("schema_version", version.clone());
            }
            request = request.event(event(kind, json!({"i": i})).with_metadata(metadata));
        }
        store.append(request).await.expect("append");
    }
    append_one(&store, &stream("fold-2"), ExpectedVersion::NoStream).await;

    let records = store.read_stream(&id, 1, 2_000).await.expect("read");
    let read_as: Vec<Option<u32>> = records[..8].iter().map(|r| r.schema_version()).collect();
    assert_eq!(
        read_as,
        [Some(3), None, None, None, Some(u32::MAX), Some(0), None, None]
    );
    let mut seen = Vec::new();
    store
        .fold_stream(&id, 0, &mut |event| {
            seen.push((
                event.version,
                event.event_type.to_owned(),
                event.payload.to_owned(),
                event.schema_version,
            ));
            Ok(())
        })
        .await
        .expect("fold");
    let expected: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.version,
                r.event_type.clone(),
                r.payload.get().to_owned(),
                r.schema_version(),
            )
        })
        .collect();
    assert_eq!(seen, expected, "fold_stream and read_stream disagree");

    let mut versions = Vec::new();
    store
        .fold_stream(&id, 1_499, &mut |event| {
            versions.push(event.version);
            Ok(())
        })
        .await
        .expect("fold");
    assert_eq!(versions, [1_499, 1_500]);

    let mut visits = 0;
    let stopped = store
        .fold_stream(&id, 1, &mut |_| {
            visits += 1;
            if visits == 3 {
                Err(Error::Closed)
            } else {
                Ok(())
            }
        })
        .await;
    assert!(matches!(stopped, Err(Error::Closed)), "{stopped:?}");
    assert_eq!(visits, 3, "the read went on after the visitor failed");

    let mut none = 0;
    store
        .fold_stream(&stream("fold-none"), 1, &mut |_| {
            none += 1;
            Ok(())
        })
        .await
        .expect("fold of an unknown stream");
    assert_eq!(none, 0);
}

/// Streams list in byte order, filtered by category, paged with `after`.
pub async fn list_streams_by_category_and_page(t: &TestStore) {
    let store = t.open().await;
    for id in [
        "order-2",
        "order-10",
        "order",
        "orderx-1",
        "order-1",
        "payment-1",
        "order_a-1",
        "order.b",
    ] {
        append_one(&store, &stream(id), ExpectedVersion::NoStream).await;
    }
    append_one(&store, &stream("order-1"), ExpectedVersion::Exact(1)).await;
    let names = |list: Vec<annals::StreamInfo>| list.into_iter().map(|s| s.stream.to_string()).collect::<Vec<_>>();

    let orders = store.list_streams(Some("order"), 100, None).await.expect("list");
    assert_eq!(orders[1].version, 2, "order-1 has two events");
    assert_eq!(
        orders[1].partition,
        partition_for(&stream("order-1"), store.partition_count())
    );
    assert_eq!(names(orders), ["order", "order-1", "order-10", "order-2"]);
    let page = store
        .list_streams(Some("order"), 2, Some(&stream("order-1")))
        .await
        .expect("list");
    assert_eq!(names(page), ["order-10", "order-2"]);
    let all = store.list_streams(None, 100, None).await.expect("list");
    assert_eq!(
        names(all),
        [
            "order",
            "order-1",
            "order-10",
            "order-2",
            "order.b",
            "order_a-1",
            "orderx-1",
            "payment-1"
        ]
    );
    assert_eq!(
        names(
            store
                .list_streams(None, 2, Some(&stream("order_a-1")))
                .await
                .expect("list")
        ),
        ["orderx-1", "payment-1"]
    );
}

async fn next_record(
    feed: &mut futures::stream::BoxStream<'static, annals::Result<annals::RecordedEvent>>,
) -> annals::RecordedEvent {
    tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .expect("a record within 10 s")
        .expect("stream goes on")
        .expect("no error")
}

/// A subscription replays what is stored, then delivers new records as they arrive.
pub async fn subscribe_catches_up_then_waits(t: &TestStore) {
    let store = t.open().await;
    let id = stream("feed-1");
    for n in 0..3 {
        append_one(&store, &id, ExpectedVersion::Exact(n)).await;
    }
    let partition = partition_for(&id, store.partition_count());
    let mut feed = store.subscribe(partition, 1);
    assert_eq!(next_record(&mut feed).await.offset, 1);
    assert_eq!(next_record(&mut feed).await.offset, 2);

    let writer = {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            for n in 3..5 {
                append_one(&store, &id, ExpectedVersion::Exact(n)).await;
            }
        })
    };
    let started = std::time::Instant::now();
    assert_eq!(next_record(&mut feed).await.version, 4);
    assert_eq!(next_record(&mut feed).await.version, 5);
    writer.await.expect("writer");
    // Woken by the append, not by the fallback poll (generous bound for a busy machine).
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "subscription was not woken by the append"
    );

    let mut missing = store.subscribe(store.partition_count(), 0);
    assert!(matches!(
        missing.next().await,
        Some(Err(Error::PartitionOutOfRange { .. }))
    ));
}

/// What goes in comes out: payload bytes, types, ids, metadata, timestamps, and the
/// record's JSON wire format.
pub async fn records_round_trip(t: &TestStore) {
    let store = t.open().await;
    let id = stream("order-77");
    let (correlation, causation, command, event_id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::now_v7());
    let spaced = r#"{ "total" : 12.50,  "lines": [ 1, 2 ] }"#;
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let outcome = store
        .append(
            AppendRequest::new(id.clone(), ExpectedVersion::Any)
                .command_id(command)
                .event(
                    NewEvent::from_json_text("OrderPlaced", spaced)
                        .expect("json")
                        .with_id(event_id)
                        .with_metadata(
                            Metadata::new()
                                .with_correlation_id(correlation)
                                .with_causation_id(causation)
                                .with("user", "alice")
                                .with("attempt", 2),
                        ),
                )
                .event(event("OrderPaid", json!({"amount": "12.50"}))),
        )
        .await
        .expect("append");
    let records = store.read_stream(&id, 1, 10).await.expect("read");
    assert_eq!(records.len(), 2);
    let first = &records[0];
    assert_eq!(first.payload.get(), spaced, "payload bytes are kept as appended");
    assert_eq!((first.event_type.as_str(), first.event_id), ("OrderPlaced", event_id));
    assert_eq!(
        (first.partition, first.offset, first.version),
        (outcome.partition, outcome.first_offset, 1)
    );
    assert_eq!(first.metadata.correlation_id, Some(correlation));
    assert_eq!(first.metadata.causation_id, Some(causation));
    assert_eq!(first.metadata.command_id, Some(command));
    assert_eq!(first.metadata.extra.get("user"), Some(&json!("alice")));
    assert_eq!(first.metadata.extra.get("attempt"), Some(&json!(2)));
    assert!(first.recorded_at > before && first.recorded_at <= chrono::Utc::now());
    assert_eq!(
        first.recorded_at.timestamp_subsec_nanos() % 1_000,
        0,
        "microsecond precision"
    );
    assert_ne!(records[1].event_id, Uuid::nil());
    assert_eq!(records[1].event_id.get_version_num(), 7, "generated ids are UUID v7");
    assert_eq!(records[1].metadata.command_id, Some(command));
    assert_eq!(
        records[1].decode::<serde_json::Value>().expect("decode"),
        json!({"amount": "12.50"})
    );

    // Where the append ends: its last record, and only it, says so.
    assert_eq!((first.last_in_append, records[1].last_in_append), (false, true));

    let wire = |record| {
        let wire = serde_json::to_value(record).expect("serialise");
        let mut keys: Vec<String> = wire.as_object().expect("object").keys().cloned().collect();
        keys.sort_unstable();
        (wire, keys)
    };
    let record_keys = [
        "data",
        "id",
        "metadata",
        "offset",
        "partition",
        "recorded_at",
        "stream",
        "type",
        "version",
    ];
    // The last record of an append has the record's nine keys; the others also carry
    // `"last_in_append": false`.
    let (last, keys) = wire(&records[1]);
    assert_eq!(keys, record_keys);
    let (inner, keys) = wire(first);
    let mut with_boundary = record_keys.to_vec();
    with_boundary.insert(2, "last_in_append");
    assert_eq!(keys, with_boundary);
    assert_eq!(inner["last_in_append"], json!(false));
    assert_eq!(inner["data"], json!({"total": 12.50, "lines": [1, 2]}));
    assert_eq!(last["type"], json!("OrderPaid"));
    drop((inner, last));
    for record in &records {
        let text = serde_json::to_string(record).expect("serialise");
        let back: annals::RecordedEvent = serde_json::from_str(&text).expect("deserialise");
        assert_eq!(&back, record, "a record reads back from its JSON as it was");
    }

    // The store owns metadata.command_id: an append without a command id never stores
    // one, whatever the caller put there.
    let mut claimed = Metadata::new();
    claimed.command_id = Some(Uuid::new_v4());
    store
        .append(
            AppendRequest::new(id.clone(), ExpectedVersion::Exact(2))
                .event(event("OrderNoted", json!({})).with_metadata(claimed)),
        )
        .await
        .expect("append");
    let noted = store.read_stream(&id, 3, 1).await.expect("read");
    assert_eq!(
        noted[0].metadata.command_id, None,
        "a record claims a command id that was never applied"
    );
}

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
        ("order-1", 6),
        ("order-2", 3),
        ("order-42", 0),
        ("product-sku-9", 1),
        ("customer-alice", 6),
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

/// I8 on the engine: records shipped from a leader are stored verbatim (offsets,
/// versions, ids, payload text, times, append boundaries) with their command ids; a
/// batch that does not continue the log writes nothing; a truncation removes a
/// partition's end with its command ids; a promoted store takes no more records. The
/// leader here is an in-process store, the follower the engine under test.
pub async fn i8_replicated_records_continue_the_log(t: &TestStore) {
    let leader = Store::open("memory:").await.expect("memory store");
    let follower = t.open_with(|options| options.partitions(16)).await.expect("open");
    assert_eq!(
        follower.follow("http://leader.invalid", 3).await.expect("follow").epoch,
        3
    );
    let refused = follower
        .append(tagged_append(&stream("acct-1"), ExpectedVersion::Any, 0, 1))
        .await;
    assert!(
        matches!(refused, Err(Error::ReadOnlyReplica { .. })),
        "a follower took an append"
    );

    let mut commands = Vec::new();
    for i in 0..30u64 {
        let command = Uuid::new_v4();
        let request = tagged_append(&stream(&format!("acct-{}", i % 4)), ExpectedVersion::Any, i, i % 3 + 1);
        leader.append(request.command_id(command)).await.expect("append");
        commands.push(command);
    }
    let ship = |from: Vec<u64>| {
        let (leader, follower) = (leader.clone(), follower.clone());
        async move {
            for (partition, mut next) in from.into_iter().enumerate() {
                loop {
                    let records = leader
                        .fetch(partition as u32, next, 3, Duration::ZERO)
                        .await
                        .expect("fetch");
                    let Some(last) = records.last() else { break };
                    next = last.offset + 1;
                    follower.apply_replicated(records).await.expect("apply");
                }
            }
        }
    };
    ship(vec![0; 16]).await;
    for partition in 0..16 {
        assert_eq!(
            read_whole_partition(&follower, partition).await,
            read_whole_partition(&leader, partition).await,
            "partition {partition} is not the leader's, record for record"
        );
    }
    for command in &commands {
        assert_eq!(
            follower.command_outcome(*command).await.expect("lookup"),
            leader.command_outcome(*command).await.expect("lookup"),
            "command ids are rebuilt from the records"
        );
    }

    // Records that do not continue the log write nothing.
    let acct = stream("acct-1");
    let partition = partition_for(&acct, 16);
    let held = read_whole_partition(&follower, partition).await;
    let overlap = follower.apply_replicated(held[held.len() - 1..].to_vec()).await;
    assert!(matches!(overlap, Err(Error::ReplicationGap { .. })), "{overlap:?}");
    assert_eq!(read_whole_partition(&follower, partition).await, held);

    // A truncation removes the partition's last append with its command id; the
    // records can be shipped again.
    let cut = held[..held.len() - 1]
        .iter()
        .rposition(|record| record.last_in_append)
        .map_or(0, |end| end + 1) as u64;
    let removed = &held[cut as usize..];
    let command = removed[0].metadata.command_id.expect("appended with a command id");
    let end = held.len() as u64;
    let moved = follower.truncate_replica(partition, cut, end - 1).await;
    assert!(
        matches!(moved, Err(Error::PartitionMoved { actual, .. }) if actual == end),
        "a truncation of a partition that moved went ahead: {moved:?}"
    );
    assert_eq!(read_whole_partition(&follower, partition).await, held);
    follower.truncate_replica(partition, cut, end).await.expect("truncate");
    assert_eq!(read_whole_partition(&follower, partition).await, held[..cut as usize]);
    assert_eq!(
        follower.stream_version(&removed[0].stream).await.expect("version"),
        removed[0].version - 1
    );
    assert_eq!(follower.command_outcome(command).await.expect("lookup"), None);
    // A subscriber waiting at the new end is woken by the records shipped again there
    // (the engine's next wake-up for the partition went back with the truncation).
    let mut waiting = follower.subscribe(partition, cut);
    let mut from = follower.high_watermarks().await.expect("hw");
    from.iter_mut()
        .enumerate()
        .for_each(|(p, next)| *next = if p as u32 == partition { cut } else { u64::MAX });
    ship(from).await;
    assert_eq!(read_whole_partition(&follower, partition).await, held);
    let woken = tokio::time::timeout(Duration::from_secs(5), waiting.next()).await;
    assert!(
        matches!(&woken, Ok(Some(Ok(record))) if record.offset == cut),
        "a subscriber at the truncated end was not woken: {woken:?}"
    );

    // Promoted, it takes appends and no more records.
    assert_eq!(follower.promote().await.expect("promote").epoch, 4);
    let refused = follower.apply_replicated(removed.to_vec()).await;
    assert!(matches!(refused, Err(Error::NotAReplica)), "{refused:?}");
    let refused = follower.truncate_replica(partition, 0, held.len() as u64).await;
    assert!(matches!(refused, Err(Error::NotAReplica)), "a leader was truncated");
    assert_eq!(read_whole_partition(&follower, partition).await, held);
    follower
        .append(tagged_append(&acct, ExpectedVersion::Any, 99, 1))
        .await
        .expect("the promoted store appends");
}
