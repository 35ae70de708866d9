//! Reads: stream and partition reads, folds, stream listings, subscriptions, and records round-tripping.

use super::*;

/// Stream and partition reads honour their start position and limit.
pub async fn reads_respect_from_and_limit(t: &TestStore) {
    let store = t.open().await;
    let id = stream("ledger-1");
    for n in 0..5 {
        append_one(&store, &id, ExpectedVersion::Exact(Version(n))).await;
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
        .map(|r| r.offset.0)
        .collect();
    assert_eq!(offsets, [1, 2, 3]);
    assert!(store.read_partition(partition, 5, 10).await.expect("read").is_empty());
    assert_eq!(store.high_watermarks().await.expect("watermarks")[partition.index()], 5);
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
        let mut request = AppendRequest::new(id.clone(), ExpectedVersion::Exact(Version(half * 750)));
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
    append_one(&store, &stream("order-1"), ExpectedVersion::Exact(Version(1))).await;
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
        append_one(&store, &id, ExpectedVersion::Exact(Version(n))).await;
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
                append_one(&store, &id, ExpectedVersion::Exact(Version(n))).await;
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
        (outcome.partition, outcome.first_offset, Version(1))
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
            AppendRequest::new(id.clone(), ExpectedVersion::Exact(Version(2)))
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
