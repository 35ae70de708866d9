//! The schema each engine creates, snapshotted: a change to `migrations/` shows up in
//! review as a change to these files.

use annals::Store;
use sqlx::{Connection, PgConnection, SqliteConnection};

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
