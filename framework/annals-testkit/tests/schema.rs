//! The schema each engine creates, snapshotted: a change to `migrations/` shows up in
//! review as a change to these files.

use annals::{AppendRequest, Deletion, ExpectedVersion, NewEvent, Store, StreamId};
use sqlx::{Connection, PgConnection, SqliteConnection};
use uuid::Uuid;

#[tokio::test]
async fn sqlite_schema() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("schema.db");
    Store::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open")
        .close()
        .await;
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect");
    let schema: Vec<String> = sqlx::query_scalar(
        "SELECT sql FROM sqlite_master WHERE name LIKE 'annals%' AND sql IS NOT NULL ORDER BY type DESC, name",
    )
    .fetch_all(&mut conn)
    .await
    .expect("schema");
    insta::assert_snapshot!("sqlite_schema", schema.join(";\n\n"));
}

#[tokio::test]
async fn postgres_schema() {
    let Some(url) = annals_testkit::postgres::fresh_schema_url().await else {
        return;
    };
    let store = Store::open(&url).await.expect("open");
    assert_eq!(store.partition_count(), 16);
    store.close().await;
    let mut conn = PgConnection::connect(&url).await.expect("connect");
    let columns: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text
         FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name LIKE 'annals%'
         ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&mut conn)
    .await
    .expect("columns");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT regexp_replace(indexdef, ' ON [^ ]+\\.', ' ON ') FROM pg_indexes
         WHERE schemaname = current_schema() AND tablename LIKE 'annals%' ORDER BY indexname",
    )
    .fetch_all(&mut conn)
    .await
    .expect("indexes");
    let functions: Vec<String> = sqlx::query_scalar(
        "SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' FROM pg_proc p
         WHERE p.pronamespace = current_schema()::regnamespace ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .expect("functions");
    let triggers: Vec<String> = sqlx::query_scalar(
        "SELECT regexp_replace(regexp_replace(pg_get_triggerdef(t.oid), ' ON [^ ]+\\.', ' ON '),
                               'FUNCTION [^ ]+\\.', 'FUNCTION ')
         FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace ORDER BY t.tgname",
    )
    .fetch_all(&mut conn)
    .await
    .expect("triggers");
    let mut text = String::new();
    for (table, column, kind, nullable) in columns {
        text.push_str(&format!(
            "{table}.{column} {kind}{}\n",
            if nullable == "NO" { " not null" } else { "" }
        ));
    }
    text.push('\n');
    for index in indexes.into_iter().chain(functions).chain(triggers) {
        text.push_str(&index);
        text.push('\n');
    }
    insta::assert_snapshot!("postgres_schema", text);
}

/// The log written before migration 0006 has no append boundaries. The migration marks
/// a record as an append's last unless the next record of its partition is of the
/// same stream and has the same `recorded_at`; it may join two appends of one stream
/// that shared a group commit, and never splits one.
#[tokio::test]
async fn migration_0006_marks_where_older_appends_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!("sqlite://{}", dir.path().join("old.db").display());
    let mut conn = SqliteConnection::connect(&format!("{sqlite}?mode=rwc"))
        .await
        .expect("connect");
    before_0006(sqlx::migrate!("../../migrations/sqlite"))
        .run_direct(&mut conn)
        .await
        .expect("migrations 0001-0005");
    for sql in older_records("randomblob(16)", |second| (second * 1_000_000).to_string()) {
        sqlx::query(&sql).execute(&mut conn).await.expect("an older record");
    }
    conn.close().await.expect("close");
    assert_eq!(boundaries_after_migration(&sqlite).await, MARKED);

    let Some(postgres) = annals_testkit::postgres::fresh_schema_url().await else {
        return;
    };
    let mut conn = PgConnection::connect(&postgres).await.expect("connect");
    before_0006(sqlx::migrate!("../../migrations/postgres"))
        .run_direct(&mut conn)
        .await
        .expect("migrations 0001-0005");
    for sql in older_records("gen_random_uuid()", |second| format!("to_timestamp({second})")) {
        sqlx::query(&sql).execute(&mut conn).await.expect("an older record");
    }
    conn.close().await.expect("close");
    assert_eq!(boundaries_after_migration(&postgres).await, MARKED);
}

/// The boundaries 0006 marks on the records of [`older_records`].
const MARKED: [bool; 4] = [false, true, true, true];

fn before_0006(mut migrator: sqlx::migrate::Migrator) -> sqlx::migrate::Migrator {
    let before: Vec<_> = migrator.iter().filter(|m| m.version < 6).cloned().collect();
    migrator.migrations = before.into();
    migrator
}

/// Records of partition 0 as written before 0006: two appends committed together
/// (`acct-1` two events, `acct-2` one) at second 1, then one `acct-1` event at second 2.
fn older_records(new_id: &str, at_second: impl Fn(i64) -> String) -> Vec<String> {
    [("acct-1", 1, 1), ("acct-1", 2, 1), ("acct-2", 1, 1), ("acct-1", 3, 2)]
        .iter()
        .enumerate()
        .map(|(offset, (stream, version, second))| {
            format!(
                r#"INSERT INTO annals_events
                     (partition, "offset", stream_id, version, event_id, event_type, payload, metadata, recorded_at)
                   VALUES (0, {offset}, '{stream}', {version}, {new_id}, 'T', '{{}}', '{{}}', {})"#,
                at_second(*second)
            )
        })
        .collect()
}

async fn boundaries_after_migration(url: &str) -> Vec<bool> {
    let store = Store::open(url).await.expect("open, running 0006");
    let records = store.read_partition(0, 0, 10).await.expect("read");
    store.close().await;
    records.iter().map(|record| record.last_in_append).collect()
}

/// An answer row of the append functions: status, first and last offset, first and
/// last version, the stream's actual version, the other stream or event id.
type Answer = (
    i16,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

/// A record the append functions' tests wrote: partition, offset, stream, version,
/// event id, type, payload, metadata, whether it ends its append, schema version.
type Written = (i32, i64, String, i64, Uuid, String, String, String, bool, Option<i64>);

/// The records the append functions' tests wrote (event types `T…`), in log order,
/// and how many distinct `recorded_at` they carry.
async fn records_written(conn: &mut PgConnection) -> (Vec<Written>, i64) {
    let records = sqlx::query_as(
        r#"SELECT partition, "offset", stream_id, version, event_id, event_type, payload::text, metadata::text,
                  last_in_append, schema_version
           FROM annals_events WHERE event_type LIKE 'T%' ORDER BY partition, "offset""#,
    )
    .fetch_all(&mut *conn)
    .await
    .expect("records");
    let stamps = sqlx::query_scalar("SELECT count(DISTINCT recorded_at) FROM annals_events WHERE event_type LIKE 'T%'")
        .fetch_one(&mut *conn)
        .await
        .expect("stamps");
    (records, stamps)
}

/// `annals_append_one`, which writers call for a batch of one append, decides it as
/// `annals_append` decides a batch holding only that append: for every outcome the
/// same answer row and the same records and command id written (each case runs both
/// functions on the same log, rolling each back).
#[tokio::test]
async fn postgres_append_one_decides_as_annals_append() {
    let Some(url) = annals_testkit::postgres::fresh_schema_url().await else {
        return;
    };
    let store = Store::open(&url).await.expect("open");
    let id = |name: &str| StreamId::new(name).expect("stream id");
    let command = Uuid::now_v7();
    let held = Uuid::now_v7();
    store
        .append(
            AppendRequest::new(id("acct-1"), ExpectedVersion::NoStream)
                .command_id(command)
                .event(NewEvent::from_json_text("Opened", "{}").expect("event"))
                .event(
                    NewEvent::from_json_text("Deposited", "{}")
                        .expect("event")
                        .with_id(held),
                ),
        )
        .await
        .expect("acct-1");
    let gone = AppendRequest::new(id("gone"), ExpectedVersion::NoStream)
        .event(NewEvent::from_json_text("Opened", "{}").expect("event"));
    store.append(gone).await.expect("gone");
    store
        .delete_stream(&id("gone"), Deletion::Hard)
        .await
        .expect("hard delete");
    store.close().await;

    struct Case {
        name: &'static str,
        stream: &'static str,
        expected: i64,
        command: Option<Uuid>,
        /// Event ids, and whether the client chose each (checked for clashes).
        events: Vec<(Uuid, bool)>,
    }
    let fresh = || (Uuid::now_v7(), false);
    let cases = [
        Case {
            name: "a new stream, two events",
            stream: "acct-2",
            expected: 0,
            command: Some(Uuid::now_v7()),
            events: vec![fresh(), fresh()],
        },
        Case {
            name: "exact version",
            stream: "acct-1",
            expected: 2,
            command: None,
            events: vec![fresh()],
        },
        Case {
            name: "any version",
            stream: "acct-1",
            expected: -1,
            command: None,
            events: vec![fresh()],
        },
        Case {
            name: "stream exists",
            stream: "acct-1",
            expected: -2,
            command: None,
            events: vec![fresh()],
        },
        Case {
            name: "stream does not exist",
            stream: "acct-3",
            expected: -2,
            command: None,
            events: vec![fresh()],
        },
        Case {
            name: "wrong expected version",
            stream: "acct-1",
            expected: 1,
            command: Some(Uuid::now_v7()),
            events: vec![fresh()],
        },
        Case {
            name: "duplicate command id",
            stream: "acct-1",
            expected: 0,
            command: Some(command),
            events: vec![fresh()],
        },
        Case {
            name: "command id of another stream",
            stream: "acct-2",
            expected: 0,
            command: Some(command),
            events: vec![fresh()],
        },
        Case {
            name: "client id held by the log",
            stream: "acct-2",
            expected: 0,
            command: None,
            events: vec![fresh(), (held, true)],
        },
        Case {
            name: "client id not held",
            stream: "acct-2",
            expected: 0,
            command: None,
            events: vec![(Uuid::now_v7(), true)],
        },
        Case {
            name: "hard-deleted stream",
            stream: "gone",
            expected: -1,
            command: None,
            events: vec![fresh()],
        },
        Case {
            name: "hard-deleted stream, wrong version",
            stream: "gone",
            expected: 0,
            command: None,
            events: vec![fresh()],
        },
    ];

    let mut conn = PgConnection::connect(&url).await.expect("connect");
    let mut statuses = Vec::new();
    for case in &cases {
        let ids: Vec<Uuid> = case.events.iter().map(|(id, _)| *id).collect();
        let checks: Vec<bool> = case.events.iter().map(|(_, check)| *check).collect();
        let count = ids.len();
        let types: Vec<String> = (0..count).map(|n| format!("T{n}")).collect();
        let payloads: Vec<String> = (0..count).map(|n| format!("{{\"n\":{n}}}")).collect();
        let metadata: Vec<String> = (0..count).map(|n| format!("{{\"m\":{n}}}")).collect();
        let schemas: Vec<Option<i64>> = (0..count).map(|n| (n > 0).then_some(2)).collect();
        let mut answers = Vec::new();
        for function in ["annals_append", "annals_append_one"] {
            let mut tx = conn.begin().await.expect("begin");
            let sql = if function == "annals_append" {
                "SELECT * FROM annals_append(7, ARRAY[$1], ARRAY[$2], ARRAY[$3::bigint], ARRAY[$4::uuid], ARRAY[$5::integer],
                                             $6, $7, $8, $9, $10, $11)"
            } else {
                "SELECT * FROM annals_append_one(7, $1, $2, $3, $4, $6, $7, $8, $9, $10, $11)"
            };
            let answer: Answer = sqlx::query_as(sql)
                .bind(case.stream)
                .bind(3_i32)
                .bind(case.expected)
                .bind(case.command)
                .bind(count as i32)
                .bind(&ids)
                .bind(&checks)
                .bind(&types)
                .bind(&payloads)
                .bind(&metadata)
                .bind(&schemas)
                .fetch_one(&mut *tx)
                .await
                .unwrap_or_else(|error| panic!("{}: {function}: {error}", case.name));
            let (written, stamps) = records_written(&mut tx).await;
            let remembered: Option<(String, i64, i64, i64, i64)> = sqlx::query_as(
                "SELECT stream_id, first_offset, last_offset, first_version, last_version
                 FROM annals_command_ids WHERE command_id = $1 AND command_id <> $2",
            )
            .bind(case.command)
            .bind(command)
            .fetch_optional(&mut *tx)
            .await
            .expect("command id");
            tx.rollback().await.expect("rollback");
            assert!(
                stamps <= 1,
                "{}: {function} stamped one append's records differently",
                case.name
            );
            answers.push((answer, written, remembered));
        }
        assert_eq!(answers[0], answers[1], "{}", case.name);
        statuses.push(answers[0].0 .0);
    }
    // Every outcome is among the cases: written, wrong version, duplicate command id,
    // command id of another stream, clashing event id, deleted stream.
    assert_eq!(statuses, [0, 0, 0, 0, 2, 2, 1, 3, 4, 0, 5, 5]);
}

/// `annals_append_set`, which writers call for a batch of independent appends
/// (distinct streams, distinct command ids, no client-chosen event ids), decides such a
/// batch as `annals_append` does: the same answer rows, records, command ids and one
/// recorded_at, for a batch holding every outcome it can have, with appends admitted
/// and refused in the same partitions (each function runs on the same log, rolled back).
#[tokio::test]
async fn postgres_append_set_decides_as_annals_append() {
    let Some(url) = annals_testkit::postgres::fresh_schema_url().await else {
        return;
    };
    let store = Store::open(&url).await.expect("open");
    let id = |name: &str| StreamId::new(name).expect("stream id");
    let event = || NewEvent::from_json_text("Opened", "{}").expect("event");
    let earlier = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
    let [elsewhere, again, _] = earlier;
    for (stream, command, events) in [("acct-1", elsewhere, 2), ("acct-6", again, 1), ("gone", earlier[2], 1)] {
        let mut request = AppendRequest::new(id(stream), ExpectedVersion::NoStream).command_id(command);
        for _ in 0..events {
            request = request.event(event());
        }
        store.append(request).await.expect(stream);
    }
    store
        .delete_stream(&id("gone"), Deletion::Hard)
        .await
        .expect("hard delete");
    store.close().await;

    // Partition 3 holds appends admitted and refused; partition 5 only refused ones,
    // behind a record stamped in the future that every record of the batch must
    // follow; `empty` holds no record yet.
    let mut conn = PgConnection::connect(&url).await.expect("connect");
    let empty: i32 = sqlx::query_scalar(
        "SELECT min(p) FROM generate_series(0, 15) AS p
         WHERE p NOT IN (3, 5) AND NOT EXISTS (SELECT 1 FROM annals_events e WHERE e.partition = p)",
    )
    .fetch_one(&mut conn)
    .await
    .expect("an empty partition");
    // (stream, partition, expected version, command id, events, outcome)
    let fresh = || Some(Uuid::now_v7());
    let batch = [
        ("acct-2", 3, 0_i64, fresh(), 2, 0_i16),
        ("acct-3", 3, -2, None, 1, 2),
        ("acct-1", 3, 2, None, 1, 0),
        ("acct-4", empty, -1, fresh(), 1, 0),
        ("acct-5", 3, 0, Some(elsewhere), 1, 3),
        ("acct-6", 5, 1, Some(again), 1, 1),
        ("gone", 3, -1, fresh(), 1, 5),
        ("acct-7", 5, 4, fresh(), 1, 2),
        ("acct-8", 3, -1, None, 3, 0),
    ];
    let events: usize = batch.iter().map(|append| append.4).sum();
    let ids: Vec<Uuid> = (0..events).map(|_| Uuid::now_v7()).collect();
    let types: Vec<String> = (0..events).map(|n| format!("T{n}")).collect();
    let payloads: Vec<String> = (0..events).map(|n| format!("{{\"n\":{n}}}")).collect();
    let metadata: Vec<String> = (0..events).map(|n| format!("{{\"m\":{n}}}")).collect();
    let schemas: Vec<Option<i64>> = (0..events).map(|n| (n % 2 == 1).then_some(2)).collect();

    let mut results = Vec::new();
    for function in ["annals_append", "annals_append_set"] {
        let mut tx = conn.begin().await.expect("begin");
        sqlx::query(
            r#"INSERT INTO annals_events
                   (partition, "offset", stream_id, version, event_id, event_type, payload, metadata, recorded_at)
               SELECT 5, coalesce(max("offset") + 1, 0), 'later-1', 1, gen_random_uuid(), 'Opened', '{}', '{}',
                      '2100-01-01T00:00:00Z'
               FROM annals_events WHERE partition = 5"#,
        )
        .execute(&mut *tx)
        .await
        .expect("a record from the future");
        let query = if function == "annals_append" {
            sqlx::query_as::<_, Answer>(
                "SELECT * FROM annals_append(7, $1, $2, $3, $4, $5, $6, array_fill(false, ARRAY[cardinality($6)]),
                                             $7, $8, $9, $10)",
            )
        } else {
            sqlx::query_as::<_, Answer>("SELECT * FROM annals_append_set(7, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
        };
        let answers = query
            .bind(batch.iter().map(|a| a.0).collect::<Vec<_>>())
            .bind(batch.iter().map(|a| a.1).collect::<Vec<i32>>())
            .bind(batch.iter().map(|a| a.2).collect::<Vec<_>>())
            .bind(batch.iter().map(|a| a.3).collect::<Vec<_>>())
            .bind(batch.iter().map(|a| a.4 as i32).collect::<Vec<_>>())
            .bind(&ids)
            .bind(&types)
            .bind(&payloads)
            .bind(&metadata)
            .bind(&schemas)
            .fetch_all(&mut *tx)
            .await
            .unwrap_or_else(|error| panic!("{function}: {error}"));
        let (written, stamps) = records_written(&mut tx).await;
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM annals_events WHERE event_type LIKE 'T%' AND recorded_at < '2100-01-01T00:00:00Z'",
        )
        .fetch_one(&mut *tx)
        .await
        .expect("stamps");
        let remembered: Vec<(Uuid, String, i32, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT * FROM annals_command_ids WHERE command_id <> ALL ($1) ORDER BY first_offset, partition",
        )
        .bind(earlier)
        .fetch_all(&mut *tx)
        .await
        .expect("command ids");
        tx.rollback().await.expect("rollback");
        assert_eq!(stamps, 1, "{function} stamped the batch's records differently");
        assert_eq!(
            behind, 0,
            "{function} stamped records before the newest of a partition of the batch"
        );
        results.push((answers, written, remembered));
    }
    assert_eq!(results[0], results[1]);
    let (answers, written, remembered) = &results[1];
    let statuses: Vec<i16> = answers.iter().map(|answer| answer.0).collect();
    assert_eq!(statuses, batch.map(|append| append.5));
    // Admitted appends follow each other in their partitions, in batch order; the
    // refused ones take no offsets.
    let placed: Vec<(i32, String, i64)> = written.iter().map(|w| (w.0, w.2.clone(), w.3)).collect();
    let after = |partition: i32| {
        written
            .iter()
            .filter(|w| w.0 == partition)
            .map(|w| w.1)
            .collect::<Vec<_>>()
    };
    assert!(after(3).windows(2).all(|pair| pair[1] == pair[0] + 1));
    assert_eq!(after(empty), [0], "the first record of a partition is at offset 0");
    let placed: Vec<String> = placed.iter().map(|(p, s, v)| format!("{p}:{s}@{v}")).collect();
    let mut expected: Vec<String> = ["acct-2@1", "acct-2@2", "acct-1@3", "acct-8@1", "acct-8@2", "acct-8@3"]
        .iter()
        .map(|record| format!("3:{record}"))
        .collect();
    let alone = format!("{empty}:acct-4@1");
    if empty < 3 {
        expected.insert(0, alone);
    } else {
        expected.push(alone);
    }
    assert_eq!(placed, expected);
    assert_eq!(remembered.len(), 2, "the admitted appends' command ids");
}
