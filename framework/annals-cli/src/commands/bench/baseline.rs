//! The raw engine under the same load: plain INSERTs into a table shaped like
//! `annals_events` (same columns, same unique indexes), from the same number of
//! writers, each on its own connection, with the same durability and connection
//! settings as the store, one multi-row INSERT (one transaction) per append, through
//! each engine's fastest path: prepared statements over sqlx for PostgreSQL, SQLite's
//! C API (rusqlite) with cached statements for SQLite.

use std::str::FromStr;
use std::sync::{Arc, Mutex};

use annals::StoreOptions;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use uuid::Uuid;

use super::load::{drive, Load, Measured};
use super::payload;
use crate::output::CliResult;

const TABLE: &str = "annals_bench_baseline";

/// The connection and durability settings both phases ran with.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Settings {
    /// Whether connections use TLS (PostgreSQL: as the server reports the connection,
    /// from the URL's `sslmode`, by default `prefer`).
    tls: bool,
    /// Whether statements are prepared once per connection and reused.
    prepared_statements: bool,
    /// SQLite's `synchronous`, or the server's `synchronous_commit` for PostgreSQL.
    synchronous: String,
}

impl Settings {
    /// The settings the store at `db` runs with, asking the server where it decides.
    pub(crate) async fn detect(db: &str, options: &StoreOptions) -> CliResult<Self> {
        let (synchronous, tls) = match options.backend_name() {
            "sqlite" => (options.synchronous_setting().pragma().to_ascii_lowercase(), false),
            "postgres" => {
                let mut conn = PgConnectOptions::from_str(db)?.connect().await?;
                let value: String = sqlx::query_scalar("SHOW synchronous_commit")
                    .fetch_one(&mut conn)
                    .await?;
                let tls: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                    .fetch_one(&mut conn)
                    .await?;
                let _ = conn.close().await;
                (value, tls)
            }
            _ => ("none (in memory)".to_owned(), false),
        };
        Ok(Settings {
            tls,
            prepared_statements: true,
            synchronous,
        })
    }
}

/// Runs the baseline for the store at `db`; `None` for engines without one (memory).
pub(crate) async fn run(db: &str, options: &StoreOptions, load: &Load) -> CliResult<Option<Measured>> {
    match options.backend_name() {
        "postgres" => postgres(db, load).await.map(Some),
        "sqlite" => sqlite(db, options, load).await.map(Some),
        _ => Ok(None),
    }
}

/// `INSERT INTO … VALUES (…), (…)` with `rows` tuples of numbered placeholders.
fn insert_sql(rows: u64, placeholder: impl Fn(u64) -> String, payload_cast: &str) -> String {
    let tuples: Vec<String> = (0..rows)
        .map(|row| {
            let p = |column: u64| placeholder(row * 8 + column + 1);
            format!(
                "({}, {}, {}, {}, {}, {}, {}{payload_cast}, '{{}}'{payload_cast}, {})",
                p(0),
                p(1),
                p(2),
                p(3),
                p(4),
                p(5),
                p(6),
                p(7)
            )
        })
        .collect();
    format!(
        r#"INSERT INTO {TABLE} (partition, "offset", stream_id, version, event_id, event_type, payload, metadata, recorded_at) VALUES {}"#,
        tuples.join(", ")
    )
}

/// A pool of `connections` to the PostgreSQL database at `db` holding a fresh scratch
/// table `table` with `columns` (one left by an earlier run is dropped first). Drop it
/// again with [`drop_scratch`].
pub(super) async fn scratch_table(db: &str, connections: u32, table: &str, columns: &str) -> CliResult<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(connections.max(1))
        .connect_with(PgConnectOptions::from_str(db)?)
        .await?;
    sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(&pool)
        .await?;
    sqlx::query(&format!("CREATE TABLE {table} ({columns})"))
        .execute(&pool)
        .await?;
    Ok(pool)
}

/// Drops the scratch table made by [`scratch_table`] and closes its pool.
pub(super) async fn drop_scratch(pool: PgPool, table: &str) -> CliResult {
    sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(())
}

async fn postgres(db: &str, load: &Load) -> CliResult<Measured> {
    let pool = scratch_table(
        db,
        load.writers as u32,
        TABLE,
        r#"partition integer NOT NULL, "offset" bigint NOT NULL, stream_id text COLLATE "C" NOT NULL,
           version bigint NOT NULL, event_id uuid NOT NULL, event_type text NOT NULL,
           payload json NOT NULL, metadata json NOT NULL, recorded_at timestamptz NOT NULL,
           PRIMARY KEY (partition, "offset"), UNIQUE (stream_id, version), UNIQUE (event_id)"#,
    )
    .await?;
    let sql: Arc<str> = insert_sql(load.events_per_op, |n| format!("${n}"), "::json").into();
    let per_op = load.events_per_op;
    let measured = {
        let pool = pool.clone();
        drive(load, "raw pg", move |writer, seq| {
            let (pool, sql) = (pool.clone(), sql.clone());
            async move {
                let mut query = sqlx::query(&sql);
                for i in 0..per_op {
                    query = query
                        .bind(writer as i32)
                        .bind((seq * per_op + i) as i64)
                        .bind(format!("bench-{writer}-{seq}"))
                        .bind(i as i64 + 1)
                        .bind(Uuid::now_v7())
                        .bind("LineAdded")
                        .bind(payload(seq * per_op + i))
                        .bind(chrono::Utc::now());
                }
                query.execute(&pool).await?;
                Ok(())
            }
        })
        .await
    };
    drop_scratch(pool, TABLE).await?;
    measured
}

/// Opens connections to the SQLite file of the store at `db` as the raw baselines use
/// them: SQLite's C API, WAL, the store's `synchronous`, the default automatic
/// checkpoints, and SQLite's own busy handler for up to 30 s. (Waiting for the write
/// lock in short steps instead, as the store's writers do, made these baselines
/// two to three times slower: with one connection per writer, the waiting ones keep
/// waking up and taking the cores from the one that holds the lock.)
pub(super) fn sqlite_connector(db: &str, options: &StoreOptions) -> impl Fn() -> CliResult<rusqlite::Connection> {
    let path = db
        .strip_prefix("sqlite://")
        .or_else(|| db.strip_prefix("sqlite:"))
        .and_then(|rest| rest.split('?').next())
        .unwrap_or_default()
        .to_owned();
    let pragmas = format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {};",
        options.synchronous_setting().pragma()
    );
    move || {
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute_batch(&pragmas)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        Ok(conn)
    }
}

async fn sqlite(db: &str, options: &StoreOptions, load: &Load) -> CliResult<Measured> {
    // SQLite's C API at its best: one connection per writer, a cached prepared
    // statement.
    let connect = sqlite_connector(db, options);
    let setup = connect()?;
    setup.execute_batch(&format!(
        r#"DROP TABLE IF EXISTS {TABLE};
               CREATE TABLE {TABLE} (partition INTEGER NOT NULL, "offset" INTEGER NOT NULL, stream_id TEXT NOT NULL,
                   version INTEGER NOT NULL, event_id BLOB NOT NULL, event_type TEXT NOT NULL, payload TEXT NOT NULL,
                   metadata TEXT NOT NULL, recorded_at INTEGER NOT NULL);
               CREATE UNIQUE INDEX {TABLE}_position ON {TABLE} (partition, "offset");
               CREATE UNIQUE INDEX {TABLE}_stream_version ON {TABLE} (stream_id, version);
               CREATE UNIQUE INDEX {TABLE}_event_id ON {TABLE} (event_id);"#
    ))?;
    let writers: Arc<Vec<Mutex<rusqlite::Connection>>> = Arc::new(
        (0..load.writers)
            .map(|_| connect().map(Mutex::new))
            .collect::<CliResult<_>>()?,
    );
    let sql: Arc<str> = insert_sql(load.events_per_op, |_| "?".to_owned(), "").into();
    let per_op = load.events_per_op;
    let measured = drive(load, "raw sqlite", move |writer, seq| {
        let (writers, sql) = (writers.clone(), sql.clone());
        async move {
            // The C API blocks; let the runtime move other tasks off this thread.
            tokio::task::block_in_place(|| {
                let conn = writers[writer].lock().unwrap_or_else(|p| p.into_inner());
                let mut insert = conn.prepare_cached(&sql)?;
                let mut values: Vec<Box<dyn rusqlite::ToSql>> = Vec::with_capacity(per_op as usize * 8);
                for i in 0..per_op {
                    values.push(Box::new(writer as i64));
                    values.push(Box::new((seq * per_op + i) as i64));
                    values.push(Box::new(format!("bench-{writer}-{seq}")));
                    values.push(Box::new(i as i64 + 1));
                    values.push(Box::new(Uuid::now_v7().as_bytes().to_vec()));
                    values.push(Box::new("LineAdded"));
                    values.push(Box::new(payload(seq * per_op + i)));
                    values.push(Box::new(chrono::Utc::now().timestamp_micros()));
                }
                insert.execute(rusqlite::params_from_iter(values.iter()))?;
                Ok(())
            })
        }
    })
    .await;
    setup.execute_batch(&format!("DROP TABLE IF EXISTS {TABLE}"))?;
    measured
}
