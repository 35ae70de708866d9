//! W1 on the raw engine: the same commands, aggregates and tasks as the framework's
//! run, written by hand against one table with no framework, as an application would
//! without annals. Each command reads its order's events in version order, folds
//! them, handles the command, and inserts the event at the next version; the primary
//! key `(stream_id, version)` refuses a lost race, and the command starts over.
//!
//! One statement per read and one per write (the INSERT commits on its own), prepared
//! once per connection, as many connections as tasks: what an application writes by
//! hand. It does not batch across commands, which is what the framework adds.
//!
//! On SQLite a second loop writes by hand what the store writes for a command
//! ([`Shape::Log`]): the price of the log's structures, which a command pays whoever
//! writes it, apart from what the framework adds.

use std::sync::{Arc, Mutex};

use annals::aggregate::Aggregate;
use annals::{partition_for, StoreOptions, StreamId};
use serde::{Deserialize, Serialize};

use super::baseline::{drop_scratch, scratch_table, sqlite_connector};
use super::workloads::{run_w1, AddLine, CommandsArgs, Order, OrderEvent, W1Run};
use crate::output::{CliError, CliResult};

/// The raw loops' table, created and dropped in the store's database.
macro_rules! raw_table {
    () => {
        "annals_bench_w1_raw"
    };
}
const TABLE: &str = raw_table!();
const READ_ROWS: &str = concat!(
    "SELECT payload FROM ",
    raw_table!(),
    " WHERE stream_id = ?1 ORDER BY version"
);
/// Drops both loops' tables: run before creating them and after the run.
const DROP_TABLES: &str = concat!(
    "DROP TABLE IF EXISTS ",
    raw_table!(),
    "; DROP TABLE IF EXISTS ",
    raw_table!(),
    "_commands;"
);
const INSERT_ROW: &str = concat!(
    "INSERT INTO ",
    raw_table!(),
    " VALUES (?1, ?2, 'LineAdded', ?3, ?4, unixepoch('subsec') * 1000000)"
);
const NEXT_OFFSET: &str = concat!(
    r#"SELECT coalesce(max("offset") + 1, 0) FROM "#,
    raw_table!(),
    " WHERE partition = ?1"
);
const INSERT_RECORD: &str = concat!(
    "INSERT INTO ",
    raw_table!(),
    " VALUES (?1, ?2, ?3, ?4, ?5, 'LineAdded', ?6, ?7, unixepoch('subsec') * 1000000, 1, 0)"
);
const INSERT_COMMAND: &str = concat!(
    "INSERT INTO ",
    raw_table!(),
    "_commands VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?5)"
);

/// What a raw SQLite loop writes for a command.
#[derive(Clone, Copy)]
pub(super) enum Shape {
    /// One table keyed by `(stream_id, version)`: what an application writes by hand.
    Table,
    /// What the store writes for an append of one event with a command id (the
    /// tables and indexes of `migrations/sqlite`, without its triggers): the event in
    /// a table with unique indexes on its position (I1), its stream and version (I2)
    /// and its event id, and on the first event of each stream, and the command id
    /// with its outcome (I5), in one transaction that takes the partition's next
    /// offset. Partitions as the store's partitioner assigns them.
    Log { partitions: u32 },
}

impl Shape {
    fn create_sql(self) -> String {
        match self {
            Shape::Table => format!(
                "CREATE TABLE {TABLE} (stream_id TEXT NOT NULL, version INTEGER NOT NULL, event_type TEXT NOT NULL,
                     payload TEXT NOT NULL, metadata TEXT NOT NULL, recorded_at INTEGER NOT NULL,
                     PRIMARY KEY (stream_id, version));"
            ),
            Shape::Log { .. } => format!(
                r#"CREATE TABLE {TABLE} (partition INTEGER NOT NULL, "offset" INTEGER NOT NULL,
                     stream_id TEXT NOT NULL, version INTEGER NOT NULL, event_id BLOB NOT NULL,
                     event_type TEXT NOT NULL, payload TEXT NOT NULL, metadata TEXT NOT NULL,
                     recorded_at INTEGER NOT NULL, last_in_append INTEGER NOT NULL, redacted INTEGER NOT NULL);
                 CREATE UNIQUE INDEX {TABLE}_position ON {TABLE} (partition, "offset");
                 CREATE UNIQUE INDEX {TABLE}_stream_version ON {TABLE} (stream_id, version);
                 CREATE UNIQUE INDEX {TABLE}_event_id ON {TABLE} (event_id);
                 CREATE INDEX {TABLE}_stream_starts ON {TABLE} (stream_id) WHERE version = 1;
                 CREATE TABLE {TABLE}_commands (command_id BLOB PRIMARY KEY, stream_id TEXT NOT NULL,
                     partition INTEGER NOT NULL, first_offset INTEGER NOT NULL, last_offset INTEGER NOT NULL,
                     first_version INTEGER NOT NULL, last_version INTEGER NOT NULL) WITHOUT ROWID;"#
            ),
        }
    }

    /// Writes the event at `version`: `Ok(false)` when another task took the version.
    fn write(self, conn: &rusqlite::Connection, stream: &str, version: i64, payload: &str) -> CliResult<bool> {
        let written = match self {
            Shape::Table => conn
                .prepare_cached(INSERT_ROW)?
                .execute(rusqlite::params![stream, version, payload, metadata()])
                .map(drop),
            Shape::Log { partitions } => {
                let partition = partition_for(&StreamId::new(stream)?, partitions).0;
                conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
                let written = write_record(conn, partition, stream, version, payload)
                    .and_then(|()| conn.prepare_cached("COMMIT")?.execute([]).map(drop));
                if written.is_err() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                written
            }
        };
        match written {
            Ok(()) => Ok(true),
            Err(rusqlite::Error::SqliteFailure(error, _))
                if matches!(
                    error.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                ) =>
            {
                Ok(false)
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// The writes of [`Shape::Log`], inside its transaction: the partition's next offset,
/// the event there, and the command id's outcome.
fn write_record(
    conn: &rusqlite::Connection,
    partition: u32,
    stream: &str,
    version: i64,
    payload: &str,
) -> rusqlite::Result<()> {
    let offset: i64 = conn
        .prepare_cached(NEXT_OFFSET)?
        .query_row([partition], |row| row.get(0))?;
    let (event_id, command_id) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    conn.prepare_cached(INSERT_RECORD)?.execute(rusqlite::params![
        partition,
        offset,
        stream,
        version,
        event_id.as_bytes().as_slice(),
        payload,
        metadata_of(command_id)
    ])?;
    let outcome = rusqlite::params![command_id.as_bytes().as_slice(), stream, partition, offset, version];
    conn.prepare_cached(INSERT_COMMAND)?.execute(outcome)?;
    Ok(())
}

/// One `LineAdded` event as the raw table stores it: the event's fields as JSON.
#[derive(Serialize, Deserialize)]
struct Line {
    sku: String,
    qty: u32,
    price: u64,
    note: String,
}

impl From<Line> for OrderEvent {
    fn from(line: Line) -> Self {
        OrderEvent::LineAdded {
            sku: line.sku,
            qty: line.qty,
            price: line.price,
            note: line.note,
        }
    }
}

/// Folds an order's payloads (in version order), handles `command`, and returns the
/// version the new event takes and its payload.
fn decide<'p>(payloads: impl Iterator<Item = &'p str>, command: AddLine) -> CliResult<(i64, String)> {
    let mut order = Order::default();
    let mut version = 0;
    for payload in payloads {
        let line: Line = serde_json::from_str(payload).map_err(|e| CliError::Usage(e.to_string()))?;
        order.apply(&line.into());
        version += 1;
    }
    let Ok(events) = order.handle(command);
    let Some(OrderEvent::LineAdded { sku, qty, price, note }) = events.into_iter().next() else {
        return Err(CliError::Usage("AddLine makes one event".into()));
    };
    let payload = serde_json::to_string(&Line { sku, qty, price, note }).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok((version + 1, payload))
}

/// Metadata of the size the framework writes with an event: correlation and command
/// ids and the schema version.
fn metadata() -> String {
    metadata_of(uuid::Uuid::now_v7())
}

/// The same for the command `id`.
fn metadata_of(id: uuid::Uuid) -> String {
    format!(r#"{{"correlation_id":"{id}","command_id":"{id}","schema_version":1}}"#)
}

/// Runs W1 on the raw engine behind `db`; `None` for engines without one (memory).
pub(super) async fn run(db: &str, options: &StoreOptions, args: &CommandsArgs) -> CliResult<Option<W1Run>> {
    match options.backend_name() {
        "postgres" => postgres(db, args).await.map(Some),
        "sqlite" => sqlite(db, options, args, Shape::Table).await.map(Some),
        _ => Ok(None),
    }
}

/// Runs W1 on SQLite writing by hand what the store writes (see [`Shape::Log`]);
/// `None` for the other engines.
pub(super) async fn run_log(
    db: &str,
    options: &StoreOptions,
    args: &CommandsArgs,
    partitions: u32,
) -> CliResult<Option<W1Run>> {
    match options.backend_name() {
        "sqlite" => sqlite(db, options, args, Shape::Log { partitions }).await.map(Some),
        _ => Ok(None),
    }
}

async fn postgres(db: &str, args: &CommandsArgs) -> CliResult<W1Run> {
    let pool = scratch_table(
        db,
        args.tasks as u32,
        TABLE,
        r#"stream_id text COLLATE "C" NOT NULL, version bigint NOT NULL, event_type text NOT NULL,
           payload json NOT NULL, metadata json NOT NULL, recorded_at timestamptz NOT NULL,
           PRIMARY KEY (stream_id, version)"#,
    )
    .await?;
    let read: Arc<str> =
        format!("SELECT CAST(payload AS text) FROM {TABLE} WHERE stream_id = $1 ORDER BY version").into();
    let write: Arc<str> = format!("INSERT INTO {TABLE} VALUES ($1, $2, 'LineAdded', $3::json, $4::json, now())").into();
    let run = run_w1(args, {
        let pool = pool.clone();
        move |_, order, command| {
            let (pool, read, write) = (pool.clone(), read.clone(), write.clone());
            async move {
                let stream = format!("order-{order}");
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let payloads: Vec<String> = sqlx::query_scalar(&read).bind(&stream).fetch_all(&pool).await?;
                    let (version, payload) = decide(payloads.iter().map(String::as_str), command.clone())?;
                    let inserted = sqlx::query(&write)
                        .bind(&stream)
                        .bind(version)
                        .bind(payload)
                        .bind(metadata())
                        .execute(&pool)
                        .await;
                    match inserted {
                        Ok(_) => return Ok(attempts),
                        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => continue,
                        Err(error) => return Err(error.into()),
                    }
                }
            }
        }
    })
    .await;
    drop_scratch(pool, TABLE).await?;
    run
}

async fn sqlite(db: &str, options: &StoreOptions, args: &CommandsArgs, shape: Shape) -> CliResult<W1Run> {
    let connect = sqlite_connector(db, options);
    let setup = connect()?;
    setup.execute_batch(DROP_TABLES)?;
    setup.execute_batch(&shape.create_sql())?;
    let connections: Arc<Vec<Mutex<rusqlite::Connection>>> = Arc::new(
        (0..args.tasks)
            .map(|_| connect().map(Mutex::new))
            .collect::<CliResult<_>>()?,
    );
    let run = run_w1(args, move |task, order, command| {
        let connections = connections.clone();
        async move {
            // The C API blocks; let the runtime move other tasks off this thread.
            tokio::task::block_in_place(|| {
                let conn = connections[task as usize].lock().unwrap_or_else(|p| p.into_inner());
                let stream = format!("order-{order}");
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let payloads: Vec<String> = conn
                        .prepare_cached(READ_ROWS)?
                        .query_map([&stream], |row| row.get(0))?
                        .collect::<Result<_, _>>()?;
                    let (version, payload) = decide(payloads.iter().map(String::as_str), command.clone())?;
                    if shape.write(&conn, &stream, version, &payload)? {
                        return Ok(attempts);
                    }
                }
            })
        }
    })
    .await;
    setup.execute_batch(DROP_TABLES)?;
    run
}
