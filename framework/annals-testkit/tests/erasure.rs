//! Personal data and its erasure (crypto-shredding): marked fields are sealed before any
//! engine writes them, every read reveals them while their subject's key exists, and
//! erasing the subject deletes the key, after which they read as erased on every read
//! path, in a replayed consumer group, in snapshots, on followers and in a backup taken
//! before; the log itself never changes.

use std::collections::BTreeMap;
use std::time::Duration;

use annals::personal::{Erasable, Subject, ERASURES_STREAM, SUBJECT_ERASED};
use annals::{
    snapshot, AppendRequest, Error, ExpectedVersion, NewEvent, Offset, Partition, RecordedEvent, Store, StreamId,
    Version,
};
use annals_testkit::TestStore;
use futures::StreamExt;
use serde_json::{json, Value};

annals_testkit::on_every_engine!(
    personal_fields_are_sealed_in_the_log_and_revealed_on_every_read,
    an_erased_subject_reads_as_erased_on_every_read,
    bad_personal_data_is_refused_and_changes_nothing,
    snapshots_of_personal_streams_are_sealed_and_die_with_the_key,
    a_replayed_group_sees_erased_fields,
    keys_can_live_in_another_database,
    another_process_caches_a_key_briefly_and_never_reveals_with_it,
);

/// Text that must never reach a database in the clear.
const SECRET: &str = "Quokka-Zanzibar-4410";

fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("stream id")
}

fn subject(id: &str) -> Subject {
    Subject::new(id).expect("subject")
}

/// An order's payload: the buyer's email and street are personal data.
fn order(buyer: &str, n: u64) -> Value {
    json!({
        "email": format!("{SECRET}-{buyer}-{n}@example.com"),
        "address": {"street": format!("{n} {SECRET} Lane"), "city": "Paris"},
        "total": n,
    })
}

fn placed(buyer: &str, n: u64) -> NewEvent {
    NewEvent::json("OrderPlaced", &order(buyer, n))
        .expect("event")
        .personal(subject(buyer), ["/email", "/address/street"])
}

/// A trade between two subjects: each side is its subject's personal data.
fn traded(seller: &str, buyer: &str) -> (NewEvent, Value) {
    let payload = json!({"seller": {"name": format!("{SECRET} {seller}")}, "buyer": {"name": format!("{SECRET} {buyer}")}, "sku": "A-1"});
    let event = NewEvent::json("Traded", &payload)
        .expect("event")
        .personal(subject(seller), ["/seller"])
        .personal(subject(buyer), ["/buyer"]);
    (event, payload)
}

async fn append(store: &Store, id: &StreamId, event: NewEvent) -> annals::Result<annals::AppendOutcome> {
    store
        .append(AppendRequest::new(id.clone(), ExpectedVersion::Any).event(event))
        .await
}

/// Writes: ada's orders in `order-1` (two) and `order-2`, bob's in `order-3`, a trade
/// between them in `trade-1`, and one order without personal data. Returns what each
/// stream's payloads are, in the clear.
async fn write_orders(store: &Store) -> BTreeMap<StreamId, Vec<Value>> {
    let mut written: BTreeMap<StreamId, Vec<Value>> = BTreeMap::new();
    for (id, buyer, n) in [
        ("order-1", "ada", 1),
        ("order-1", "ada", 2),
        ("order-2", "ada", 3),
        ("order-3", "bob", 4),
    ] {
        append(store, &stream(id), placed(buyer, n)).await.expect("append");
        written.entry(stream(id)).or_default().push(order(buyer, n));
    }
    let (event, payload) = traded("ada", "bob");
    append(store, &stream("trade-1"), event).await.expect("append");
    written.insert(stream("trade-1"), vec![payload]);
    let plain = json!({"total": 9});
    append(
        store,
        &stream("order-4"),
        NewEvent::json("OrderPlaced", &plain).expect("event"),
    )
    .await
    .expect("append");
    written.insert(stream("order-4"), vec![plain]);
    written
}

/// Every record of every partition, as `read` reads them.
async fn whole_log(store: &Store, sealed: bool) -> Vec<RecordedEvent> {
    let mut records = Vec::new();
    for p in Partition::all(store.partition_count()) {
        records.extend(
            match sealed {
                true => store.read_partition_sealed(p, Offset(0), 100_000).await,
                false => store.read_partition(p, Offset(0), 100_000).await,
            }
            .expect("read"),
        );
    }
    records
}

fn payload(record: &RecordedEvent) -> Value {
    serde_json::from_str(record.payload.get()).expect("json")
}

/// The payloads of `records`, per stream, in order; the store's own streams left out.
fn by_stream<'r>(records: impl IntoIterator<Item = &'r RecordedEvent>) -> BTreeMap<StreamId, Vec<Value>> {
    let mut streams: BTreeMap<StreamId, Vec<Value>> = BTreeMap::new();
    for record in records {
        if !record.stream.as_str().starts_with("annals.") {
            streams.entry(record.stream.clone()).or_default().push(payload(record));
        }
    }
    streams
}

/// Every read path's view of `store`'s streams: partitions, fetches, subscriptions,
/// stream reads and folds, each of which must agree.
async fn every_read(store: &Store) -> BTreeMap<StreamId, Vec<Value>> {
    let partitions = by_stream(&whole_log(store, false).await);
    let mut fetched = Vec::new();
    let mut subscribed = Vec::new();
    for p in Partition::all(store.partition_count()) {
        let end = store.high_watermark(p).await.expect("hw");
        fetched.extend(store.fetch(p, 0, 100_000, Duration::ZERO).await.expect("fetch"));
        let records: Vec<_> = store.subscribe(p, 0).take(end.0 as usize).collect().await;
        subscribed.extend(records.into_iter().map(|record| record.expect("record")));
    }
    assert_eq!(by_stream(&fetched), partitions, "fetch and read_partition differ");
    assert_eq!(
        by_stream(&subscribed),
        partitions,
        "subscribe and read_partition differ"
    );
    for (id, payloads) in &partitions {
        let read = store.read_stream(id, 1, 1_000).await.expect("read");
        assert_eq!(&by_stream(&read)[id], payloads, "read_stream of {id}");
        let mut folded = Vec::new();
        store
            .fold_stream(id, Version(1), &mut |event| {
                folded.push(serde_json::from_str::<Value>(event.payload).expect("json"));
                Ok(())
            })
            .await
            .expect("fold");
        assert_eq!(&folded, payloads, "fold_stream of {id}");
    }
    partitions
}

/// `value` with the fields at `pointers` read as `who`'s erased marker.
fn erased(mut value: Value, who: &str, pointers: &[&str]) -> Value {
    for pointer in pointers {
        *value.pointer_mut(pointer).expect("field") = json!({"annals.erased": {"subject": who}});
    }
    value
}

async fn personal_fields_are_sealed_in_the_log_and_revealed_on_every_read(t: TestStore) {
    let store = t.open().await;
    let written = write_orders(&store).await;

    let sealed = whole_log(&store, true).await;
    assert_eq!(sealed.len(), 6);
    for record in &sealed {
        let text = record.payload.get();
        assert!(
            !text.contains(SECRET),
            "the log holds personal data in the clear: {text}"
        );
        assert_eq!(annals::personal::holds_sealed(text), record.stream != stream("order-4"));
    }
    let first = sealed
        .iter()
        .find(|r| r.stream == stream("order-3"))
        .expect("bob's order");
    let envelope = &payload(first)["email"]["annals.sealed"];
    assert_eq!(envelope["subject"], "bob");
    assert_eq!(payload(first)["total"], 4, "fields not marked stay in the clear");

    assert_eq!(every_read(&store).await, written);
    let keys = store.keys_since(0, 100).await.expect("keys");
    let subjects: Vec<&str> = keys.iter().map(|key| key.subject.as_str()).collect();
    assert_eq!(subjects, ["ada", "bob"], "one key per subject, in the order created");
    assert!(keys.iter().all(|key| key.key.is_some()));
    assert!(keys[0].seq < keys[1].seq);
}

async fn an_erased_subject_reads_as_erased_on_every_read(t: TestStore) {
    let store = t.open().await;
    let mut expected = write_orders(&store).await;
    let before = whole_log(&store, true).await;

    let erasure = store.erase_subject(&subject("ada")).await.expect("erase");
    assert!(erasure.had_key);
    assert_eq!(erasure.streams, 3, "order-1, order-2 and trade-1 hold ada's fields");

    for id in ["order-1", "order-2"] {
        for value in expected.get_mut(&stream(id)).expect("stream") {
            *value = erased(value.clone(), "ada", &["/email", "/address/street"]);
        }
    }
    let trade = &mut expected.get_mut(&stream("trade-1")).expect("trade")[0];
    *trade = erased(trade.clone(), "ada", &["/seller"]);
    assert_eq!(every_read(&store).await, expected, "after the erasure");

    // Typed readers see the field as erased, and the rest as it was.
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Placed {
        email: Erasable<String>,
        total: u64,
    }
    let read: Placed = store.read_stream(&stream("order-2"), 1, 1).await.expect("read")[0]
        .decode()
        .expect("decode");
    assert_eq!(
        read,
        Placed {
            email: Erasable::Erased(subject("ada")),
            total: 3
        }
    );
    let read: Placed = store.read_stream(&stream("order-3"), 1, 1).await.expect("read")[0]
        .decode()
        .expect("decode");
    assert_eq!(
        read.email.value().map(String::as_str),
        Some(&*format!("{SECRET}-bob-4@example.com"))
    );

    // The log did not change: it only gained the erasure record.
    let after = whole_log(&store, true).await;
    let (erasures, rest): (Vec<_>, Vec<_>) = after.into_iter().partition(|r| r.stream == stream(ERASURES_STREAM));
    assert_eq!(rest, before, "erasing changed the log");
    assert_eq!(erasures.len(), 1);
    assert_eq!(
        (erasures[0].event_type.as_str(), payload(&erasures[0])),
        (SUBJECT_ERASED, json!({"subject": "ada"}))
    );

    // Ada can never be written again; refused appends write nothing.
    let marks = store.high_watermarks().await.expect("hw");
    for event in [placed("ada", 9), traded("bob", "ada").0, traded("dave", "ada").0] {
        let refused = append(&store, &stream("order-5"), event).await;
        assert!(
            matches!(&refused, Err(Error::SubjectErased { subject }) if subject.as_str() == "ada"),
            "{refused:?}"
        );
    }
    assert_eq!(store.high_watermarks().await.expect("hw"), marks);
    append(&store, &stream("order-5"), placed("bob", 10))
        .await
        .expect("bob still writes");
    // The refusals left no trace: no key for dave, and order-5 is not taken for a stream
    // holding ada's fields (it would never be snapshotted again).
    let keyed = store.keys_since(0, 100).await.expect("keys");
    assert!(
        keyed.iter().all(|k| k.subject.as_str() != "dave"),
        "a refused append created a key"
    );
    snapshot::save(&store, &stream("order-5"), 1, 1, "{}")
        .await
        .expect("save");
    assert!(
        snapshot::newest(&store, &stream("order-5"))
            .await
            .expect("newest")
            .is_some(),
        "order-5 no longer snapshots"
    );

    // Erasing again, or a subject never seen, succeeds; the latter can never be written.
    let again = store.erase_subject(&subject("ada")).await.expect("erase again");
    assert!(!again.had_key);
    let carol = store.erase_subject(&subject("carol")).await.expect("erase carol");
    assert_eq!((carol.had_key, carol.streams), (false, 0));
    let refused = append(&store, &stream("order-6"), placed("carol", 1)).await;
    assert!(matches!(refused, Err(Error::SubjectErased { .. })), "{refused:?}");
    let keys = store.keys_since(0, 100).await.expect("keys");
    let state: Vec<(&str, bool)> = keys.iter().map(|k| (k.subject.as_str(), k.key.is_some())).collect();
    assert_eq!(
        state,
        [("bob", true), ("ada", false), ("carol", false)],
        "in the order of their last change"
    );
}

async fn bad_personal_data_is_refused_and_changes_nothing(t: TestStore) {
    let store = t.open().await;
    for bad in ["", "a\nb", &"x".repeat(201)] {
        let refused = Subject::new(bad);
        assert!(
            matches!(refused, Err(Error::InvalidSubject { .. })),
            "{bad:?}: {refused:?}"
        );
    }
    let event = || NewEvent::json("OrderPlaced", &order("ada", 1)).expect("event");
    let forged =
        NewEvent::json("OrderPlaced", &json!({"email": {"annals.sealed": {"subject": "ada"}}})).expect("event");
    let cases = [
        (
            "a field the payload lacks",
            event().personal(subject("ada"), ["/email", "/phone"]),
        ),
        ("the whole payload", event().personal(subject("ada"), [""])),
        (
            "a pointer without its slash",
            event().personal(subject("ada"), ["email"]),
        ),
        ("no fields", event().personal(subject("ada"), Vec::<String>::new())),
        ("a forged envelope", forged),
        (
            "a forged envelope spelled with an escape",
            NewEvent::from_json_text("OrderPlaced", r#"{"email":"x","annals\u002esealed":{"subject":"ada"}}"#)
                .expect("event")
                .personal(subject("ada"), ["/email"]),
        ),
        (
            "fields of two subjects, one inside the other",
            event()
                .personal(subject("ada"), ["/address"])
                .personal(subject("bob"), ["/address/street"]),
        ),
    ];
    for (what, event) in cases {
        let refused = append(&store, &stream("order-1"), event).await;
        assert!(
            matches!(refused, Err(Error::InvalidPersonalData { .. })),
            "{what}: {refused:?}"
        );
        assert_eq!(refused.expect_err("refused").code(), "bad_request");
    }
    // Refusals of the store's other checks come before any key is made too.
    for (what, event) in [
        (
            "a reserved type",
            NewEvent::json("annals.Placed", &order("ada", 1))
                .expect("event")
                .personal(subject("ada"), ["/email"]),
        ),
        (
            "a payload too large",
            NewEvent::json("OrderPlaced", &json!({"email": "x".repeat(2 << 20)}))
                .expect("event")
                .personal(subject("ada"), ["/email"]),
        ),
    ] {
        assert!(append(&store, &stream("order-1"), event).await.is_err(), "{what}");
    }
    // One bad event refuses the whole append, good events with it included.
    let request = AppendRequest::new(stream("order-1"), ExpectedVersion::Any)
        .event(placed("ada", 1))
        .event(event().personal(subject("bob"), ["/nope"]));
    assert!(store.append(request).await.is_err());
    assert_eq!(
        store.record_count().await.expect("count"),
        0,
        "a refused append wrote records"
    );
    assert!(
        store.keys_since(0, 10).await.expect("keys").is_empty(),
        "a refused append created keys"
    );
}

async fn snapshots_of_personal_streams_are_sealed_and_die_with_the_key(t: TestStore) {
    let store = t.open().await;
    write_orders(&store).await;
    let state = json!({"email": format!("{SECRET}-ada@example.com"), "orders": 2}).to_string();
    snapshot::save(&store, &stream("order-1"), 2, 1, &state)
        .await
        .expect("save");
    snapshot::save(&store, &stream("order-4"), 1, 1, r#"{"orders":1}"#)
        .await
        .expect("save");
    // A stream with two subjects' data is sealed under both keys.
    snapshot::save(&store, &stream("trade-1"), 1, 1, &state)
        .await
        .expect("save");

    if let Ok(db) = store.read_models() {
        let rows = db
            .query(
                "SELECT stream_id, state FROM annals_snapshots ORDER BY stream_id",
                vec![],
            )
            .await
            .expect("snapshots");
        let stored: Vec<(String, String)> = rows
            .iter()
            .map(|row| (row.get(0).expect("id"), row.get(1).expect("state")))
            .collect();
        assert_eq!(stored.len(), 3);
        for (id, state) in &stored {
            assert!(!state.contains(SECRET), "snapshot of {id} in the clear: {state}");
        }
        assert_eq!(stored[1], ("order-4".to_owned(), r#"{"orders":1}"#.to_owned()));
    }
    for id in ["order-1", "trade-1"] {
        let newest = snapshot::newest(&store, &stream(id))
            .await
            .expect("newest")
            .expect("a snapshot");
        assert_eq!(newest.state, state, "{id} revealed");
    }

    store.erase_subject(&subject("bob")).await.expect("erase");
    assert!(
        snapshot::newest(&store, &stream("trade-1"))
            .await
            .expect("newest")
            .is_none(),
        "sealed under bob too"
    );
    assert!(
        snapshot::newest(&store, &stream("order-1"))
            .await
            .expect("newest")
            .is_some(),
        "ada's alone"
    );
    store.erase_subject(&subject("ada")).await.expect("erase");
    assert!(snapshot::newest(&store, &stream("order-1"))
        .await
        .expect("newest")
        .is_none());
    // A state folded before the erasure may hold what it removed: it is not written.
    snapshot::save(&store, &stream("order-1"), 2, 1, &state)
        .await
        .expect("save");
    assert!(snapshot::newest(&store, &stream("order-1"))
        .await
        .expect("newest")
        .is_none());
    let plain = snapshot::newest(&store, &stream("order-4"))
        .await
        .expect("newest")
        .expect("kept");
    assert_eq!(plain.state, r#"{"orders":1}"#);
}

use annals_testkit::tally::replay;

async fn a_replayed_group_sees_erased_fields(t: TestStore) {
    let store = t.open().await;
    let mut expected = write_orders(&store).await;
    assert_eq!(
        by_stream(&replay(&store, "before").await),
        expected,
        "a group reads revealed fields"
    );
    store.erase_subject(&subject("bob")).await.expect("erase");
    let bobs = &mut expected.get_mut(&stream("order-3")).expect("bob's")[0];
    *bobs = erased(bobs.clone(), "bob", &["/email", "/address/street"]);
    let trade = &mut expected.get_mut(&stream("trade-1")).expect("trade")[0];
    *trade = erased(trade.clone(), "bob", &["/buyer"]);
    let replayed = replay(&store, "after").await;
    assert_eq!(by_stream(&replayed), expected, "a replay after the erasure");
    let erasure = replayed
        .iter()
        .find(|r| r.event_type == SUBJECT_ERASED)
        .expect("the erasure record");
    assert_eq!(payload(erasure), json!({"subject": "bob"}));
}

async fn keys_can_live_in_another_database(t: TestStore) {
    if !t.is_durable() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let keys_url = format!("sqlite://{}", dir.path().join("keys.db").display());
    let store = t.open_with(|options| options.keys(&keys_url)).await.expect("open");
    let written = write_orders(&store).await;
    assert_eq!(every_read(&store).await, written);
    let own: i64 = store
        .read_models()
        .expect("sql")
        .query("SELECT count(*) FROM annals_subject_keys", vec![])
        .await
        .expect("count")[0]
        .get(0)
        .expect("count");
    assert_eq!(own, 0, "keys were written to the store's own database");
    let keys = Store::open(&keys_url).await.expect("keys database");
    assert_eq!(keys.keys_since(0, 10).await.expect("keys").len(), 2);
    // Opened without the key database, the store cannot reveal: its fields read erased.
    let blind = t.open().await;
    let read = blind.read_stream(&stream("order-3"), 1, 1).await.expect("read");
    assert_eq!(payload(&read[0])["email"], json!({"annals.erased": {"subject": "bob"}}));
}

/// A process that sealed with a key keeps it for `key_cache_ttl`: an erasure made by
/// another process refuses its appends once that passed, and what it wrote meanwhile
/// reads as erased at once, everywhere. Its reads never use the cached key.
async fn another_process_caches_a_key_briefly_and_never_reveals_with_it(t: TestStore) {
    if !t.is_durable() {
        return;
    }
    let ttl = Duration::from_millis(400);
    let (eraser, writer) = (
        t.open().await,
        t.open_with(|options| options.key_cache_ttl(ttl)).await.expect("open"),
    );
    // The cached key's time runs from the append that asked the key store for it.
    let started = std::time::Instant::now();
    append(&writer, &stream("order-1"), placed("ada", 1))
        .await
        .expect("append");
    eraser.erase_subject(&subject("ada")).await.expect("erase");
    let late = append(&writer, &stream("order-1"), placed("ada", 2)).await;
    if started.elapsed() < ttl {
        late.expect("the cached key still seals");
        for store in [&writer, &eraser] {
            let read = store.read_stream(&stream("order-1"), 1, 10).await.expect("read");
            assert_eq!(read.len(), 2);
            for record in &read {
                assert_eq!(
                    payload(record)["email"],
                    json!({"annals.erased": {"subject": "ada"}}),
                    "revealed after the erasure"
                );
            }
        }
    }
    tokio::time::sleep(ttl).await;
    let refused = append(&writer, &stream("order-1"), placed("ada", 3)).await;
    assert!(matches!(refused, Err(Error::SubjectErased { .. })), "{refused:?}");
    let uncached = t
        .open_with(|options| options.key_cache_ttl(Duration::ZERO))
        .await
        .expect("open");
    let refused = append(&uncached, &stream("order-1"), placed("ada", 4)).await;
    assert!(matches!(refused, Err(Error::SubjectErased { .. })), "{refused:?}");
}

/// A follower copies records sealed and its leader's key table beside them; it reveals
/// what its leader reveals, an erasure reaches it with the erasure record, and once
/// promoted it refuses erased subjects.
async fn a_follower_copies_sealed_records_and_erasures(leader: TestStore, follower: TestStore) {
    let (leader, follower) = (leader.open().await, follower.open().await);
    follower.follow("http://leader.example:7070", 0).await.expect("follow");
    // As `annals follow` does: the keys first whenever copied records need them.
    let ship = async || {
        let changes = leader.keys_since(0, 1_000).await.expect("keys");
        follower.import_keys(&changes).await.expect("import");
        for p in Partition::all(leader.partition_count()) {
            let from = follower.high_watermark(p).await.expect("hw");
            let records = leader.read_partition_sealed(p, from, 100_000).await.expect("read");
            follower.apply_replicated(records).await.expect("apply");
        }
    };
    let written = write_orders(&leader).await;
    ship().await;
    assert_eq!(
        whole_log(&follower, true).await,
        whole_log(&leader, true).await,
        "copied as stored"
    );
    assert!(whole_log(&follower, true)
        .await
        .iter()
        .all(|r| !r.payload.get().contains(SECRET)));
    assert_eq!(every_read(&follower).await, written, "the follower reveals");

    let before_erasure = leader.keys_since(0, 10).await.expect("keys");
    leader.erase_subject(&subject("ada")).await.expect("erase");
    ship().await;
    assert_eq!(
        every_read(&follower).await,
        every_read(&leader).await,
        "the follower sees the erasure"
    );
    let read = follower.read_stream(&stream("order-1"), 1, 1).await.expect("read");
    assert_eq!(payload(&read[0])["email"], json!({"annals.erased": {"subject": "ada"}}));
    // Ada's key copied again from before the erasure (a stale copy) does not bring her
    // back.
    let stale: Vec<_> = before_erasure
        .into_iter()
        .filter(|change| change.subject.as_str() == "ada")
        .collect();
    assert!(stale[0].key.is_some());
    follower.import_keys(&stale).await.expect("import");
    assert_eq!(every_read(&follower).await, every_read(&leader).await);

    follower.promote().await.expect("promote");
    let refused = append(&follower, &stream("order-9"), placed("ada", 9)).await;
    assert!(matches!(refused, Err(Error::SubjectErased { .. })), "{refused:?}");
    append(&follower, &stream("order-9"), placed("bob", 9))
        .await
        .expect("bob on the promoted follower");
    // Snapshots on the promoted follower are sealed under the copied keys.
    let state = json!({"email": format!("{SECRET}-bob")}).to_string();
    snapshot::save(&follower, &stream("order-3"), 1, 1, &state)
        .await
        .expect("save");
    if let Ok(db) = follower.read_models() {
        let rows = db
            .query("SELECT state FROM annals_snapshots", vec![])
            .await
            .expect("snapshots");
        let stored: String = rows[0].get(0).expect("state");
        assert!(
            !stored.contains(SECRET),
            "the promoted follower's snapshot is in the clear: {stored}"
        );
    }
    assert_eq!(
        snapshot::newest(&follower, &stream("order-3"))
            .await
            .expect("newest")
            .expect("snapshot")
            .state,
        state
    );
}

macro_rules! pair {
    ($name:ident, $leader:ident, $follower:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (Some(leader), Some(follower)) = (TestStore::$leader().await, TestStore::$follower().await) else {
                return;
            };
            a_follower_copies_sealed_records_and_erasures(leader, follower).await;
        }
    };
}

pair!(erasure_replicates_memory_to_memory, memory, memory);
pair!(erasure_replicates_sqlite_to_sqlite, sqlite, sqlite);
pair!(erasure_replicates_sqlite_to_postgres, sqlite, postgres);
pair!(erasure_replicates_postgres_to_postgres, postgres, postgres);
pair!(erasure_replicates_postgres_to_sqlite, postgres, sqlite);

/// The files of the SQLite database `name` in `dir` (and its WAL) that hold `needle`.
fn files_holding(dir: &std::path::Path, name: &str, needle: &[u8]) -> Vec<String> {
    [name.to_owned(), format!("{name}-wal")]
        .into_iter()
        .filter(|file| {
            std::fs::read(dir.join(file)).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

/// On SQLite, personal data never reaches the files in the clear, and an erased key's
/// bytes are gone from the database and its WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_hold_no_personal_data_and_no_erased_key() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(&format!("sqlite://{}", dir.path().join("store.db").display()))
        .await
        .expect("open");
    for n in 0..50 {
        append(&store, &stream(&format!("order-{n}")), placed("ada", n))
            .await
            .expect("append");
    }
    append(&store, &stream("order-x"), placed("bob", 1))
        .await
        .expect("append");
    assert!(
        files_holding(dir.path(), "store.db", SECRET.as_bytes()).is_empty(),
        "personal data in the clear"
    );
    let keys = store.keys_since(0, 10).await.expect("keys");
    let key_of = |who: &str| {
        let key = keys.iter().find(|k| k.subject.as_str() == who).expect("key");
        let json = serde_json::to_value(key).expect("json");
        base64_decode(json["key"].as_str().expect("key"))
    };
    let (ada, bob) = (key_of("ada"), key_of("bob"));
    assert!(
        !files_holding(dir.path(), "store.db", &ada).is_empty(),
        "the test never wrote the key to disk"
    );

    store.erase_subject(&subject("ada")).await.expect("erase");
    assert_eq!(
        files_holding(dir.path(), "store.db", &ada),
        Vec::<String>::new(),
        "files still holding the key"
    );
    assert!(
        !files_holding(dir.path(), "store.db", &bob).is_empty(),
        "bob's key went too"
    );
    store.close().await;
}

/// A backup of the store's database taken before an erasure reads the subject as erased
/// once restored, when the keys live in a database of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_before_the_erasure_reads_erased() {
    let dir = tempfile::tempdir().expect("dir");
    let keys_url = format!("sqlite://{}", dir.path().join("keys.db").display());
    let open = |name: &str| {
        let url = format!("sqlite://{}", dir.path().join(name).display());
        let keys_url = keys_url.clone();
        async move {
            annals::StoreOptions::from_url(&url)
                .expect("url")
                .keys(keys_url)
                .open()
                .await
                .expect("open")
        }
    };
    let store = open("store.db").await;
    let written = write_orders(&store).await;
    store.close().await;
    std::fs::copy(dir.path().join("store.db"), dir.path().join("backup.db")).expect("backup");
    let _ = std::fs::copy(dir.path().join("store.db-wal"), dir.path().join("backup.db-wal"));

    let store = open("store.db").await;
    store.erase_subject(&subject("bob")).await.expect("erase");
    store.close().await;

    let restored = open("backup.db").await;
    let read = restored.read_stream(&stream("order-3"), 1, 1).await.expect("read");
    assert_eq!(payload(&read[0])["email"], json!({"annals.erased": {"subject": "bob"}}));
    let read = restored.read_stream(&stream("order-1"), 1, 10).await.expect("read");
    assert_eq!(
        by_stream(&read)[&stream("order-1")],
        written[&stream("order-1")],
        "ada is intact"
    );
    assert!(files_holding(dir.path(), "backup.db", SECRET.as_bytes()).is_empty());
    restored.close().await;
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).expect("base64")
}
