//! I9: bad input gets a typed error and changes nothing.

use super::*;

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
            matches!(
                StreamId::new(bad).map_err(Error::from),
                Err(Error::InvalidStreamId { .. })
            ),
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
            "payload nested past the limit",
            AppendRequest::new(id.clone(), ExpectedVersion::Any).event(
                NewEvent::from_json_text("E", format!("{}{}", "[".repeat(5_000), "]".repeat(5_000))).expect("json"),
            ),
            |e| {
                matches!(
                    e,
                    Error::JsonTooDeep {
                        index: 0,
                        what: "payload",
                        limit: 128
                    }
                )
            },
        ),
        (
            "metadata nested past the limit",
            AppendRequest::new(id.clone(), ExpectedVersion::Any).event(
                event("E", json!(0))
                    .with_metadata(Metadata::new().with("deep", (0..200).fold(json!(1), |inner, _| json!([inner])))),
            ),
            |e| matches!(e, Error::JsonTooDeep { what: "metadata", .. }),
        ),
        (
            "wrong expected version",
            AppendRequest::new(id.clone(), ExpectedVersion::Exact(Version(7))).event(event("E", json!(0))),
            |e| matches!(e, Error::WrongExpectedVersion { actual: Version(2), .. }),
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
