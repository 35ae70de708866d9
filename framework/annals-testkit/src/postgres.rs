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

/// `url` (one [`fresh_schema_url`] made) with every session it opens named `name`
/// (`application_name`), so that a test finds the store's server processes in
/// `pg_stat_activity`.
pub fn named_url(url: &str, name: &str) -> String {
    format!("{url}%20-c%20application_name%3D{name}")
}

fn unreachable(server: &str, why: &str) -> Option<String> {
    assert!(
        !required(),
        "PostgreSQL is required ({REQUIRE_VAR}=1) but {server} cannot be reached: {why}"
    );
    eprintln!("skipping PostgreSQL test: {server} cannot be reached ({why}); set {REQUIRE_VAR}=1 to fail instead");
    None
}

/// Another session holding the advisory lock of a stream's partition, as another
/// process's writer committing there would: the store's calls on that partition wait
/// in the server until it is released.
pub struct PartitionLock {
    /// The session holding the lock, free for other statements.
    pub conn: PgConnection,
    key: (i32, i32),
}

impl PartitionLock {
    /// A session of its own on `store`'s database (`url`), for `stream`'s partition.
    pub async fn new(url: &str, store: &annals::Store, stream: &annals::StreamId) -> Self {
        let mut conn = PgConnection::connect(url).await.expect("connects");
        let store_id: uuid::Uuid = sqlx::query_scalar("SELECT store_id FROM annals_store")
            .fetch_one(&mut conn)
            .await
            .expect("store id");
        let partition = annals::partition_for(stream, store.partition_count()).0 as i32;
        PartitionLock {
            conn,
            key: (store_id.as_u128() as i32, partition),
        }
    }

    /// Takes the lock, waiting for it if need be.
    pub async fn take(&mut self) {
        self.call("pg_advisory_lock").await;
    }

    /// Releases it.
    pub async fn release(&mut self) {
        self.call("pg_advisory_unlock").await;
    }

    /// Takes the lock of `stream`'s partition and starts a first append to `stream`
    /// (at `Exact(0)`), which waits for it in the server; returns once it waits. The
    /// store's writer session is then busy until [`PartitionLock::release`], so the
    /// store's next appends queue for its writer.
    pub async fn hold_writer(
        url: &str,
        store: &annals::Store,
        stream: &annals::StreamId,
    ) -> (Self, tokio::task::JoinHandle<annals::Result<annals::AppendOutcome>>) {
        let mut lock = PartitionLock::new(url, store, stream).await;
        lock.take().await;
        let waiting = tokio::spawn({
            let store = store.clone();
            let append = annals::AppendRequest::new(stream.clone(), annals::ExpectedVersion::Exact(annals::Version(0)))
                .event(annals::NewEvent::from_json_text("Deposited", "{}").expect("event"));
            async move { store.append(append).await }
        });
        lock.waited_for().await;
        (lock, waiting)
    }

    /// Returns once some session waits for an advisory lock (the store's call, behind
    /// this one).
    pub async fn waited_for(&mut self) {
        let conn = &mut self.conn;
        crate::wait_for("a call to wait for the partition's lock", async || {
            let waiting: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                    .fetch_one(&mut *conn)
                    .await
                    .expect("locks");
            waiting > 0
        })
        .await;
    }

    async fn call(&mut self, function: &str) {
        sqlx::query(&format!("SELECT {function}($1, $2)"))
            .bind(self.key.0)
            .bind(self.key.1)
            .execute(&mut self.conn)
            .await
            .unwrap_or_else(|error| panic!("{function}: {error}"));
    }
}
