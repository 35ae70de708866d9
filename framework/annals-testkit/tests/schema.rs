//! The schema each engine creates, snapshotted: a change to `migrations/` shows up in
//! review as a change to these files.

use annals::{EventStore, Store};
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
    let mut text = String::new();
    for (table, column, kind, nullable) in columns {
        text.push_str(&format!(
            "{table}.{column} {kind}{}\n",
            if nullable == "NO" { " not null" } else { "" }
        ));
    }
    text.push('\n');
    for index in indexes.into_iter().chain(functions) {
        text.push_str(&index);
        text.push('\n');
    }
    insta::assert_snapshot!("postgres_schema", text);
}
