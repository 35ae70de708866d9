//! W1 on the raw engine: the same commands, aggregates and tasks as the framework's
//! run, written by hand against one table with no framework, as an application would
//! without annals. Each command reads its order's events in version order, folds
//! them, handles the command, and inserts the event at the next version; the primary
//! key `(stream_id, version)` refuses a lost race, and the command starts over.
//!
//! One statement per read and one per write (the INSERT commits on its own), prepared
//! once per connection, as many connections as tasks: what an application writes by
//! hand. It does not batch across commands, which is what the framework adds.

use std::sync::{Arc, Mutex};

use annals::aggregate::Aggregate;
use annals::StoreOptions;
use serde::{Deserialize, Serialize};

use super::baseline::{drop_scratch, scratch_table, sqlite_connector};
use super::workloads::{run_w1, AddLine, CommandsArgs, Order, OrderEvent, W1Run};
use crate::output::{CliError, CliResult};

const TABLE: &str = "annals_bench_w1_raw";

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
    let id = uuid::Uuid::now_v7();
    format!(r#"{{"correlation_id":"{id}","command_id":"{id}","schema_version":1}}"#)
}

/// Runs W1 on the raw engine behind `db`; `None` for engines without one (memory).
pub(super) async fn run(db: &str, options: &StoreOptions, args: &CommandsArgs) -> CliResult<Option<W1Run>> {
    match options.backend_name() {
        "postgres" => postgres(db, args).await.map(Some),
        "sqlite" => sqlite(db, options, args).await.map(Some),
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

async fn sqlite(db: &str, options: &StoreOptions, args: &CommandsArgs) -> CliResult<W1Run> {
    let connect = sqlite_connector(db, options);
    let setup = connect()?;
    setup.execute_batch(&format!(
        "DROP TABLE IF EXISTS {TABLE};
         CREATE TABLE {TABLE} (stream_id TEXT NOT NULL, version INTEGER NOT NULL, event_type TEXT NOT NULL,
             payload TEXT NOT NULL, metadata TEXT NOT NULL, recorded_at INTEGER NOT NULL,
             PRIMARY KEY (stream_id, version));"
    ))?;
    let connections: Arc<Vec<Mutex<rusqlite::Connection>>> = Arc::new(
        (0..args.tasks)
            .map(|_| connect().map(Mutex::new))
            .collect::<CliResult<_>>()?,
    );
    let read: Arc<str> = format!("SELECT payload FROM {TABLE} WHERE stream_id = ?1 ORDER BY version").into();
    let write: Arc<str> =
        format!("INSERT INTO {TABLE} VALUES (?1, ?2, 'LineAdded', ?3, ?4, unixepoch('subsec') * 1000000)").into();
    let run = run_w1(args, move |task, order, command| {
        let (connections, read, write) = (connections.clone(), read.clone(), write.clone());
        async move {
            // The C API blocks; let the runtime move other tasks off this thread.
            tokio::task::block_in_place(|| {
                let conn = connections[task as usize].lock().unwrap_or_else(|p| p.into_inner());
                let stream = format!("order-{order}");
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let payloads: Vec<String> = conn
                        .prepare_cached(&read)?
                        .query_map([&stream], |row| row.get(0))?
                        .collect::<Result<_, _>>()?;
                    let (version, payload) = decide(payloads.iter().map(String::as_str), command.clone())?;
                    let inserted =
                        conn.prepare_cached(&write)?
                            .execute(rusqlite::params![stream, version, payload, metadata()]);
                    match inserted {
                        Ok(_) => return Ok(attempts),
                        Err(rusqlite::Error::SqliteFailure(error, _))
                            if error.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
                        {
                            continue
                        }
                        Err(error) => return Err(error.into()),
                    }
                }
            })
        }
    })
    .await;
    setup.execute_batch(&format!("DROP TABLE IF EXISTS {TABLE}"))?;
    run
}
