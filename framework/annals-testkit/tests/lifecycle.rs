//! The data lifecycle: a deleted stream's records are redacted in place (offsets
//! gapless, versions contiguous), a soft-deleted stream reads as absent until written
//! again, a hard-deleted one is closed for good; retention rules let the scavenger
//! redact what expired; a follower redacts what its leader did, and a consumer group
//! replaying the log sees every redacted record in its place.

use std::time::Duration;

use annals::{
    AppendRequest, Deletion, Error, ExpectedVersion, Metadata, NewEvent, Offset, Partition, RecordedEvent, Retention,
    RetentionScope, ScavengeOptions, Scavenged, Store, StreamId, Version, STREAM_DELETED, STREAM_TRUNCATED,
};
use annals_testkit::TestStore;
use serde_json::json;
use uuid::Uuid;

annals_testkit::on_every_engine!(
    a_soft_deleted_stream_is_redacted_and_reads_as_absent,
    a_hard_deleted_stream_is_closed_for_good,
    reserved_types_and_absent_streams_are_refused_and_change_nothing,
    the_scavenger_redacts_what_expired_and_nothing_else,
    bad_retention_rules_are_refused_and_change_nothing,
    a_replayed_group_sees_redacted_records_in_place,
    retention_never_softens_a_hard_deletion,
    a_long_backlog_is_truncated_in_steps,
    a_follower_redacts_records_that_arrive_after_their_truncation,
);

fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("stream id")
}

fn personal(n: u64) -> NewEvent {
    NewEvent::json("AddressGiven", &json!({"street": format!("Secret Lane {n}")}))
        .expect("event")
        .with_metadata(Metadata {
            correlation_id: Some(Uuid::now_v7()),
            ..Metadata::default()
        })
}

/// Appends `count` events to `id` under a new command id; returns the request, which
/// a retry sends again.
async fn write(store: &Store, id: &StreamId, count: u64) -> AppendRequest {
    let mut request = AppendRequest::new(id.clone(), ExpectedVersion::Any).command_id(Uuid::now_v7());
    for n in 0..count {
        request = request.event(personal(n));
    }
    store.append(request.clone()).await.expect("append");
    request
}

/// Every record of every partition, in order.
async fn whole_log(store: &Store) -> Vec<RecordedEvent> {
    let mut records = Vec::new();
    for p in Partition::all(store.partition_count()) {
        records.extend(store.read_partition(p, Offset(0), 100_000).await.expect("read"));
    }
    records
}

fn of<'r>(records: &'r [RecordedEvent], id: &StreamId) -> Vec<&'r RecordedEvent> {
    records.iter().filter(|record| record.stream == *id).collect()
}

async fn a_soft_deleted_stream_is_redacted_and_reads_as_absent(t: TestStore) {
    let store = t.open().await;
    let (customer, other) = (stream("customer-ann"), stream("customer-bob"));
    write(&store, &customer, 3).await;
    write(&store, &other, 2).await;
    let before = whole_log(&store).await;

    let deleted = store.delete_stream(&customer, Deletion::Soft).await.expect("delete");
    assert_eq!(
        deleted.first_version,
        Version(4),
        "the deletion record takes the next version"
    );

    // The log keeps its shape: same positions, ids and types; the records of the
    // deleted stream lost their data and metadata (but for the command id).
    let after = whole_log(&store).await;
    assert_eq!(after.len(), before.len() + 1);
    let kept = after.iter().filter(|record| record.event_type != STREAM_DELETED);
    for (old, new) in before.iter().zip(kept) {
        assert_eq!(
            (
                old.partition,
                old.offset,
                &old.stream,
                old.version,
                old.event_id,
                &old.event_type,
                old.recorded_at
            ),
            (
                new.partition,
                new.offset,
                &new.stream,
                new.version,
                new.event_id,
                &new.event_type,
                new.recorded_at
            )
        );
        if old.stream == customer {
            assert!(new.redacted, "{new:?}");
            assert_eq!(new.payload.get(), "null");
            assert_eq!(new.metadata.correlation_id, None);
            assert_eq!(new.metadata.command_id, old.metadata.command_id);
        } else {
            assert_eq!(new, old, "another stream's record changed");
        }
    }
    let record = of(&after, &customer).last().copied().cloned().expect("deletion record");
    assert_eq!((record.event_type.as_str(), record.redacted), (STREAM_DELETED, false));
    let json = serde_json::to_value(after.iter().find(|r| r.redacted).expect("one redacted")).expect("json");
    assert_eq!(
        (json["redacted"].clone(), json["data"].clone()),
        (json!(true), json!(null))
    );

    // It reads as absent, but keeps its version.
    assert!(store.read_stream(&customer, 1, 100).await.expect("read").is_empty());
    assert!(!store.stream_exists(&customer).await.expect("exists"));
    assert_eq!(store.stream_version(&customer).await.expect("version"), Version(4));
    let listed = store.list_streams(Some("customer"), 10, None).await.expect("list");
    assert_eq!(
        listed.iter().map(|s| s.stream.clone()).collect::<Vec<_>>(),
        vec![other.clone()]
    );
    let mut folded = Vec::new();
    store
        .fold_stream(&customer, 1, &mut |event| {
            folded.push(event.event_type.to_owned());
            Ok(())
        })
        .await
        .expect("fold");
    assert_eq!(
        folded,
        vec![STREAM_DELETED.to_owned()],
        "a fold sees no redacted record"
    );

    // Written again, its versions go on.
    let refused = store
        .append(AppendRequest::new(customer.clone(), ExpectedVersion::NoStream).event(personal(9)))
        .await;
    assert!(
        matches!(refused, Err(Error::WrongExpectedVersion { actual: Version(4), .. })),
        "{refused:?}"
    );
    write(&store, &customer, 1).await;
    let again = store.read_stream(&customer, 1, 100).await.expect("read");
    assert_eq!(again.iter().map(|r| r.version).collect::<Vec<_>>(), vec![Version(5)]);
    assert!(store.stream_exists(&customer).await.expect("exists"));
    assert_eq!(
        store
            .list_streams(Some("customer"), 10, None)
            .await
            .expect("list")
            .len(),
        2
    );

    // A second deletion redacts what came since, the first deletion record included.
    store
        .delete_stream(&customer, Deletion::Soft)
        .await
        .expect("delete again");
    let records = whole_log(&store).await;
    let redacted: Vec<bool> = of(&records, &customer).iter().map(|r| r.redacted).collect();
    assert_eq!(redacted, vec![true, true, true, true, true, false]);
}

async fn a_hard_deleted_stream_is_closed_for_good(t: TestStore) {
    let store = t.open().await;
    let id = stream("customer-cid");
    let command = Uuid::now_v7();
    let first = store
        .append(
            AppendRequest::new(id.clone(), ExpectedVersion::NoStream)
                .command_id(command)
                .event(personal(1)),
        )
        .await
        .expect("append");
    store.delete_stream(&id, Deletion::Hard).await.expect("hard delete");

    let closed = |error: Option<Error>| matches!(error, Some(Error::StreamDeleted { stream }) if stream == id);
    let append = store
        .append(AppendRequest::new(id.clone(), ExpectedVersion::Any).event(personal(2)))
        .await;
    assert!(closed(append.err()));
    assert!(closed(store.read_stream(&id, 1, 10).await.err()));
    assert!(closed(store.stream_exists(&id).await.err()));
    assert!(closed(store.delete_stream(&id, Deletion::Soft).await.err()));
    assert!(closed(store.delete_stream(&id, Deletion::Hard).await.err()));
    // I5: the command applied before the deletion still answers its outcome.
    let retried = store
        .append(
            AppendRequest::new(id.clone(), ExpectedVersion::NoStream)
                .command_id(command)
                .event(personal(1)),
        )
        .await
        .expect("duplicate");
    assert!(retried.duplicate);
    assert_eq!(retried.first_offset, first.first_offset);

    // Appends racing a hard deletion land before it or not at all, also when they
    // share its group commit.
    let raced = stream("customer-race");
    write(&store, &raced, 1).await;
    let appends = (0..24).map(|n| {
        let store = store.clone();
        let request = AppendRequest::new(raced.clone(), ExpectedVersion::Any).event(personal(n));
        tokio::spawn(async move { store.append(request).await })
    });
    let deletion = {
        let (store, raced) = (store.clone(), raced.clone());
        tokio::spawn(async move { store.delete_stream(&raced, Deletion::Hard).await })
    };
    let results = futures::future::join_all(appends).await;
    deletion.await.expect("join").expect("hard delete");
    for result in results {
        let result = result.expect("join");
        assert!(
            result.is_ok() || matches!(result, Err(Error::StreamDeleted { .. })),
            "{result:?}"
        );
    }
    let records = whole_log(&store).await;
    let records = of(&records, &raced);
    let last = records.last().expect("records");
    assert_eq!(
        last.event_type, STREAM_DELETED,
        "a record landed after the hard deletion"
    );
    assert!(records[..records.len() - 1].iter().all(|r| r.redacted));
}

async fn reserved_types_and_absent_streams_are_refused_and_change_nothing(t: TestStore) {
    let store = t.open().await;
    let id = stream("customer-dee");
    let reserved = store
        .append(
            AppendRequest::new(id.clone(), ExpectedVersion::Any)
                .event(NewEvent::json(STREAM_DELETED, &json!({"hard": true})).expect("event")),
        )
        .await;
    assert!(matches!(reserved, Err(Error::ReservedEventType { .. })), "{reserved:?}");
    let absent = store.delete_stream(&id, Deletion::Soft).await;
    assert!(matches!(absent, Err(Error::StreamNotFound { .. })), "{absent:?}");
    assert!(whole_log(&store).await.is_empty(), "a refused call wrote something");
    // A hard deletion of a never-written stream reserves the id.
    store.delete_stream(&id, Deletion::Hard).await.expect("reserve");
    let append = store
        .append(AppendRequest::new(id.clone(), ExpectedVersion::NoStream).event(personal(1)))
        .await;
    assert!(matches!(append, Err(Error::StreamDeleted { .. })), "{append:?}");
}

/// A follower redacts what its leader redacted: records it copied before the deletion
/// when the deletion record arrives, and records it copies afterwards as they come.
async fn a_follower_redacts_what_its_leader_did(leader: TestStore, early: TestStore, late: TestStore) {
    let (leader, early, late) = (leader.open().await, early.open().await, late.open().await);
    let ids: Vec<StreamId> = (0..12).map(|i| stream(&format!("customer-{i}"))).collect();
    let mut commands = Vec::new();
    for id in &ids {
        commands.push(write(&leader, id, 2).await);
    }
    let readings: Vec<StreamId> = (0..6).map(|i| stream(&format!("reading-{i}"))).collect();
    for id in &readings {
        write(&leader, id, 4).await;
    }
    let ship = async |follower: &Store| {
        for p in Partition::all(leader.partition_count()) {
            let from = follower.high_watermark(p).await.expect("hw");
            let records = leader.read_partition(p, from, 100_000).await.expect("read");
            if !records.is_empty() {
                follower.apply_replicated(records).await.expect("apply");
            }
        }
    };
    early.follow("http://leader.example:7070", 0).await.expect("follow");
    late.follow("http://leader.example:7070", 0).await.expect("follow");
    ship(&early).await;
    for (i, id) in ids.iter().enumerate() {
        let deletion = if i % 3 == 0 { Deletion::Hard } else { Deletion::Soft };
        if i % 2 == 0 {
            leader.delete_stream(id, deletion).await.expect("delete");
        }
    }
    write(&leader, &ids[1], 1).await;
    keep_newest(&leader, "reading", 1).await;
    scavenge(&leader, false).await;
    ship(&early).await;
    ship(&late).await;
    let expected = whole_log(&leader).await;
    let redacted = |category: &str| {
        (expected.iter())
            .filter(|r| r.redacted && r.stream.category() == category)
            .count()
    };
    assert_eq!(redacted("customer"), 12, "six streams of two records");
    assert_eq!(redacted("reading"), 18, "six streams of four records, one kept");
    assert_eq!(
        whole_log(&early).await,
        expected,
        "the follower that copied before the deletions"
    );
    assert_eq!(whole_log(&late).await, expected, "the follower that copied after them");
    // Promoted, the follower keeps the hard deletions.
    late.promote().await.expect("promote");
    let append = late
        .append(AppendRequest::new(ids[0].clone(), ExpectedVersion::Any).event(personal(1)))
        .await;
    assert!(matches!(append, Err(Error::StreamDeleted { .. })), "{append:?}");
    assert!(late.read_stream(&ids[2], 1, 10).await.expect("read").is_empty());
    // I5 after the failover: the follower copied the deleted streams' records redacted,
    // and still knows the commands that wrote them.
    for retry in commands {
        let outcome = late.append(retry).await.expect("retry");
        assert!(
            outcome.duplicate,
            "a command on {} was applied twice",
            outcome.partition
        );
    }
}

macro_rules! pair {
    ($name:ident, $leader:ident, $follower:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (Some(leader), Some(early), Some(late)) = (
                TestStore::$leader().await,
                TestStore::$follower().await,
                TestStore::$follower().await,
            ) else {
                return;
            };
            a_follower_redacts_what_its_leader_did(leader, early, late).await;
        }
    };
}

pair!(deletions_replicate_memory_to_memory, memory, memory);
pair!(deletions_replicate_sqlite_to_sqlite, sqlite, sqlite);
pair!(deletions_replicate_sqlite_to_postgres, sqlite, postgres);
pair!(deletions_replicate_postgres_to_postgres, postgres, postgres);
pair!(deletions_replicate_postgres_to_sqlite, postgres, sqlite);

const SECRET: &str = "Zanzibar-Quokka-7731";

/// The files of the SQLite store in `dir` (`store.db` and its WAL) that hold [`SECRET`].
fn files_holding_the_secret(dir: &std::path::Path) -> Vec<&'static str> {
    ["store.db", "store.db-wal"]
        .into_iter()
        .filter(|name| {
            std::fs::read(dir.join(name)).is_ok_and(|bytes| bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()))
        })
        .collect()
}

async fn write_secrets(store: &Store, id: &StreamId) {
    for n in 0..50 {
        let event = NewEvent::json("AddressGiven", &json!({"street": format!("{SECRET} #{n}")})).expect("event");
        store
            .append(AppendRequest::new(id.clone(), ExpectedVersion::Any).event(event))
            .await
            .expect("append");
    }
}

async fn open_sqlite(dir: &std::path::Path) -> Store {
    Store::open(&format!("sqlite://{}", dir.join("store.db").display()))
        .await
        .expect("open")
}

/// On SQLite the deleted text is gone from the files: the database and the WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_text_is_not_in_the_sqlite_files() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open_sqlite(dir.path()).await;
    let id = stream("customer-zed");
    write_secrets(&store, &id).await;
    write(&store, &stream("customer-keep"), 3).await;
    assert!(
        !files_holding_the_secret(dir.path()).is_empty(),
        "the test never wrote the secret to disk"
    );
    store.delete_stream(&id, Deletion::Soft).await.expect("delete");
    assert_eq!(
        files_holding_the_secret(dir.path()),
        Vec::<&str>::new(),
        "files still holding the deleted text"
    );
    let kept = store.read_stream(&stream("customer-keep"), 1, 10).await.expect("read");
    assert_eq!(kept.len(), 3);
    store.close().await;
}

/// A SQLite follower that copied the text before the deletion holds it in none of its
/// files once it has copied the deletion record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_text_is_not_in_a_sqlite_followers_files() {
    let leader = TestStore::memory().await.expect("memory").open().await;
    let dir = tempfile::tempdir().expect("dir");
    let follower = open_sqlite(dir.path()).await;
    follower.follow("http://leader.example:7070", 0).await.expect("follow");
    let id = stream("customer-zed");
    write_secrets(&leader, &id).await;
    let partition = annals::partition_for(&id, leader.partition_count());
    let ship = async || {
        let from = follower.high_watermark(partition).await.expect("hw");
        let records = leader.read_partition(partition, from, 1_000).await.expect("read");
        follower.apply_replicated(records).await.expect("apply");
    };
    ship().await;
    assert!(
        !files_holding_the_secret(dir.path()).is_empty(),
        "the follower never wrote the secret to disk"
    );
    leader.delete_stream(&id, Deletion::Soft).await.expect("delete");
    ship().await;
    assert_eq!(
        files_holding_the_secret(dir.path()),
        Vec::<&str>::new(),
        "the follower's files still hold it"
    );
    follower.close().await;
}

async fn scavenge(store: &Store, dry_run: bool) -> Scavenged {
    scavenge_at(store, dry_run, chrono::Utc::now()).await
}

async fn scavenge_at(store: &Store, dry_run: bool, now: chrono::DateTime<chrono::Utc>) -> Scavenged {
    let mut reports = Vec::new();
    let done = store
        .scavenge(
            ScavengeOptions {
                dry_run,
                now,
                max_records_per_sec: None,
            },
            &mut |so_far| reports.push(*so_far),
        )
        .await
        .expect("scavenge");
    assert_eq!(reports.last(), Some(&done), "the last progress report is the result");
    done
}

/// The redaction flags of `id`'s records, in version order.
fn redacted_of(records: &[RecordedEvent], id: &str) -> Vec<bool> {
    of(records, &stream(id)).iter().map(|record| record.redacted).collect()
}

async fn the_scavenger_redacts_what_expired_and_nothing_else(t: TestStore) {
    let store = t.open().await;
    for id in ["reading-a", "reading-b", "reading-c", "other-x"] {
        write(&store, &stream(id), 5).await;
    }
    let count = |n| Retention {
        max_count: Some(n),
        ..Retention::default()
    };
    store
        .set_retention(&RetentionScope::Category("reading".into()), count(2))
        .await
        .expect("category rule");
    // A stream's own rule replaces its category's.
    store
        .set_retention(&RetentionScope::Stream(stream("reading-b")), count(4))
        .await
        .expect("stream rule");
    let before = Retention {
        truncate_before: Some(Version(3)),
        ..Retention::default()
    };
    store
        .set_retention(&RetentionScope::Stream(stream("reading-c")), before)
        .await
        .expect("truncate-before rule");
    let rules = store.retention_rules().await.expect("rules");
    assert_eq!(rules.len(), 3, "{rules:?}");
    assert_eq!(rules[0], (RetentionScope::Category("reading".into()), count(2)));

    let untouched = whole_log(&store).await;
    let expected = Scavenged {
        streams_examined: 3,
        streams_truncated: 3,
        records_redacted: 3 + 1 + 2,
    };
    assert_eq!(scavenge(&store, true).await, expected, "the dry run's report");
    assert_eq!(whole_log(&store).await, untouched, "a dry run wrote something");

    assert_eq!(scavenge(&store, false).await, expected);
    let after = whole_log(&store).await;
    assert_eq!(redacted_of(&after, "reading-a"), [true, true, true, false, false]);
    assert_eq!(redacted_of(&after, "reading-b"), [true, false, false, false, false]);
    assert_eq!(redacted_of(&after, "reading-c"), [true, true, false, false, false]);
    assert_eq!(redacted_of(&after, "other-x"), [false; 5]);
    // The log keeps its shape: every record before is at its place, with its id.
    let kept = after.iter().filter(|r| !r.stream.as_str().starts_with("annals."));
    for (old, new) in untouched
        .iter()
        .filter(|r| !r.stream.as_str().starts_with("annals."))
        .zip(kept)
    {
        assert_eq!(
            (old.partition, old.offset, old.event_id),
            (new.partition, new.offset, new.event_id)
        );
    }
    let truncations = after.iter().filter(|r| r.event_type == STREAM_TRUNCATED).count();
    assert_eq!(truncations, 3, "one truncation record per stream");

    // Nothing more to do until more is written.
    assert_eq!(scavenge(&store, false).await.streams_truncated, 0);
    assert_eq!(whole_log(&store).await, after);
    write(&store, &stream("reading-a"), 2).await;
    assert_eq!(scavenge(&store, false).await.records_redacted, 2);
    assert_eq!(
        redacted_of(&whole_log(&store).await, "reading-a"),
        [true, true, true, true, true, false, false]
    );

    // Ages: an hour's limit expires nothing now, and everything two hours later.
    let hour = Retention {
        max_age: Some(Duration::from_secs(3_600)),
        ..Retention::default()
    };
    store
        .set_retention(&RetentionScope::Category("other".into()), hour)
        .await
        .expect("age rule");
    let now = chrono::Utc::now();
    assert_eq!(scavenge_at(&store, false, now).await.streams_truncated, 0);
    let later = now + chrono::Duration::hours(2);
    assert_eq!(scavenge_at(&store, false, later).await.records_redacted, 5);
    assert_eq!(redacted_of(&whole_log(&store).await, "other-x"), [true; 5]);

    // A rule with no limit removes the rule.
    store
        .set_retention(&RetentionScope::Category("other".into()), Retention::default())
        .await
        .expect("remove");
    assert_eq!(store.retention_rules().await.expect("rules").len(), 3);
}

async fn bad_retention_rules_are_refused_and_change_nothing(t: TestStore) {
    let store = t.open().await;
    let category = RetentionScope::Category("reading".into());
    let refusals = [
        (
            category.clone(),
            Retention {
                truncate_before: Some(Version(2)),
                ..Retention::default()
            },
        ),
        (
            category.clone(),
            Retention {
                max_count: Some(0),
                ..Retention::default()
            },
        ),
        (
            RetentionScope::Category("not-a-category".into()),
            Retention {
                max_count: Some(1),
                ..Retention::default()
            },
        ),
        (
            RetentionScope::Stream(stream(&format!("reading-{}", "x".repeat(190)))),
            Retention {
                max_count: Some(1),
                ..Retention::default()
            },
        ),
        (
            RetentionScope::Category("annals.timer".into()),
            Retention {
                max_count: Some(1),
                ..Retention::default()
            },
        ),
        (
            RetentionScope::Stream(stream("annals.scavenge-1")),
            Retention {
                max_count: Some(1),
                ..Retention::default()
            },
        ),
    ];
    for (scope, rule) in refusals {
        let refused = store.set_retention(&scope, rule).await;
        assert!(
            matches!(
                refused,
                Err(Error::InvalidRetention { .. } | Error::InvalidCategory { .. })
            ),
            "{scope}: {refused:?}"
        );
    }
    assert!(whole_log(&store).await.is_empty(), "a refused rule wrote something");
    assert!(store.retention_rules().await.expect("rules").is_empty());
    // The streams that tell followers what to redact cannot be deleted.
    for id in ["annals.scavenge-1", "annals.retention-c:reading"] {
        let refused = store.delete_stream(&stream(id), Deletion::Hard).await;
        assert!(
            matches!(refused, Err(Error::InvalidStreamId { .. })),
            "{id}: {refused:?}"
        );
    }
    assert!(whole_log(&store).await.is_empty(), "a refused deletion wrote something");
}

async fn a_replayed_group_sees_redacted_records_in_place(t: TestStore) {
    let store = t.open().await;
    for i in 0..8 {
        write(&store, &stream(&format!("reading-{i}")), 3).await;
    }
    store
        .delete_stream(&stream("reading-0"), Deletion::Soft)
        .await
        .expect("delete");
    keep_newest(&store, "reading", 1).await;
    scavenge(&store, false).await;
    let log = whole_log(&store).await;

    let mut seen: Vec<(Partition, Offset, bool)> = annals_testkit::tally::replay(&store, "replay")
        .await
        .iter()
        .map(|r| (r.partition, r.offset, r.redacted))
        .collect();
    seen.sort();
    seen.dedup();
    let mut expected: Vec<(Partition, Offset, bool)> =
        log.iter().map(|r| (r.partition, r.offset, r.redacted)).collect();
    expected.sort();
    assert_eq!(seen, expected, "the replay missed a record or saw one differently");
    assert_eq!(expected.iter().filter(|(.., redacted)| *redacted).count(), 3 + 7 * 2);
}

/// A rule that expires every record of a hard-deleted stream leaves its deletion record
/// whole, so the stream stays closed, here and on any follower that copies the log.
async fn retention_never_softens_a_hard_deletion(t: TestStore) {
    let store = t.open().await;
    let id = stream("reading-gone");
    write(&store, &id, 3).await;
    store.delete_stream(&id, Deletion::Hard).await.expect("hard delete");
    let everything = Retention {
        max_age: Some(Duration::from_secs(60)),
        ..Retention::default()
    };
    store
        .set_retention(&RetentionScope::Stream(id.clone()), everything)
        .await
        .expect("rule");
    scavenge_at(&store, false, chrono::Utc::now() + chrono::Duration::hours(1)).await;
    let log = whole_log(&store).await;
    let records = of(&log, &id);
    let last = records.last().expect("records");
    assert_eq!((last.event_type.as_str(), last.redacted), (STREAM_DELETED, false));
    let append = store
        .append(AppendRequest::new(id.clone(), ExpectedVersion::Any).event(personal(1)))
        .await;
    assert!(matches!(append, Err(Error::StreamDeleted { .. })), "{append:?}");
}

/// A stream with a long backlog is truncated in steps, each a record of its own.
async fn a_long_backlog_is_truncated_in_steps(t: TestStore) {
    let store = t.open().await;
    let id = stream("reading-long");
    for _ in 0..11 {
        let mut request = AppendRequest::new(id.clone(), ExpectedVersion::Any);
        for n in 0..1_000 {
            request = request.event(NewEvent::json("Measured", &json!({ "n": n })).expect("event"));
        }
        store.append(request).await.expect("append");
    }
    let rule = Retention {
        max_count: Some(500),
        ..Retention::default()
    };
    store
        .set_retention(&RetentionScope::Stream(id.clone()), rule)
        .await
        .expect("rule");
    assert_eq!(scavenge(&store, false).await.records_redacted, 10_500);
    let log = whole_log(&store).await;
    let steps = log.iter().filter(|r| r.event_type == STREAM_TRUNCATED).count();
    assert_eq!(steps, 2, "10,500 records in steps of at most 10,000");
    let redacted = redacted_of(&log, "reading-long");
    assert!(redacted[..10_500].iter().all(|r| *r) && !redacted[10_500..].iter().any(|r| *r));
}

/// A follower copies partitions independently: a truncation in one partition may
/// arrive before the records it expires, which another partition ships later as they
/// were read before it. They are redacted as they arrive, so the follower ends with
/// its leader's log.
async fn a_follower_redacts_records_that_arrive_after_their_truncation(t: TestStore) {
    let leader = TestStore::memory().await.expect("memory").open().await;
    let follower = t.open().await;
    follower.follow("http://leader.example:7070", 0).await.expect("follow");
    for i in 0..16 {
        write(&leader, &stream(&format!("reading-{i}")), 3).await;
    }
    // What a follower's fetch read before the scavenge, partition by partition.
    let mut stale = Vec::new();
    for p in Partition::all(leader.partition_count()) {
        stale.push(leader.read_partition(p, Offset(0), 1_000).await.expect("read"));
    }
    keep_newest(&leader, "reading", 1).await;
    scavenge(&leader, false).await;
    let log = whole_log(&leader).await;
    let truncations: Vec<Partition> = (log.iter())
        .filter(|r| r.event_type == STREAM_TRUNCATED)
        .map(|r| r.partition)
        .collect();
    // The partitions holding truncations first, whole; then the others as read before.
    let ship = async |p: Partition, records: Vec<RecordedEvent>| {
        if !records.is_empty() {
            follower.apply_replicated(records).await.expect("apply");
        }
        let from = follower.high_watermark(p).await.expect("hw");
        let rest = leader.read_partition(p, from, 1_000).await.expect("read");
        if !rest.is_empty() {
            follower.apply_replicated(rest).await.expect("apply");
        }
    };
    for p in Partition::all(leader.partition_count()) {
        if truncations.contains(&p) {
            ship(p, Vec::new()).await;
        }
    }
    for p in Partition::all(leader.partition_count()) {
        if !truncations.contains(&p) {
            ship(p, stale[p.0 as usize].clone()).await;
        }
    }
    assert_eq!(
        whole_log(&follower).await,
        log,
        "the follower's log is not its leader's"
    );
    assert_eq!(log.iter().filter(|r| r.redacted).count(), 32);
}

/// Sets the rule of `category`: keep the newest `count` records of each stream.
async fn keep_newest(store: &Store, category: &str, count: u64) {
    let rule = Retention {
        max_count: Some(count),
        ..Retention::default()
    };
    store
        .set_retention(&RetentionScope::Category(category.into()), rule)
        .await
        .expect("rule");
}
