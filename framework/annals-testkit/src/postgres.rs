//! A throwaway PostgreSQL schema per test.
//!
//! The server comes from `ANNALS_TEST_POSTGRES_URL` (default
//! `postgres://annals:annals@127.0.0.1:5432/annals_test`). Each call makes a new schema
//! and returns a store URL whose connections use it (`options=-c search_path=…`), so
//! tests never see each other's data. When no server answers, tests skip, unless
//! `ANNALS_REQUIRE_POSTGRES=1` (CI), where that is a failure.

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// The variable naming the test server.
pub const URL_VAR: &str = "ANNALS_TEST_POSTGRES_URL";
/// The server used when [`URL_VAR`] is not set.
pub const DEFAULT_URL: &str = "postgres://annals:annals@127.0.0.1:5432/annals_test";
/// Set to `1` to make an unreachable server fail the tests instead of skipping them.
pub const REQUIRE_VAR: &str = "ANNALS_REQUIRE_POSTGRES";

/// The test server's URL.
pub fn server_url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Whether PostgreSQL tests must run (`ANNALS_REQUIRE_POSTGRES=1`).
pub fn required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|value| value == "1")
}

/// Creates a fresh schema and returns a store URL bound to it, or `None` when the
/// server cannot be reached and PostgreSQL is not required.
///
/// # Panics
/// When the server cannot be reached and [`required`] is true.
pub async fn fresh_schema_url() -> Option<String> {
    let server = server_url();
    let connected = tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(&server)).await;
    let mut conn = match connected {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => return unreachable(&server, &error.to_string()),
        Err(_) => return unreachable(&server, "timed out"),
    };
    let schema = format!("test_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .expect("create a test schema");
    let _ = conn.close().await;
    let separator = if server.contains('?') { '&' } else { '?' };
    Some(format!("{server}{separator}options=-c%20search_path%3D{schema}"))
}

fn unreachable(server: &str, why: &str) -> Option<String> {
    assert!(
        !required(),
        "PostgreSQL is required ({REQUIRE_VAR}=1) but {server} cannot be reached: {why}"
    );
    eprintln!("skipping PostgreSQL test: {server} cannot be reached ({why}); set {REQUIRE_VAR}=1 to fail instead");
    None
}
