//! Records shipped from a leader, written by `annals_replicate` (migration 0009) in one
//! round trip: the records and the command ids they carry go as arrays, and the
//! function checks the role and the partition's next offset under the lock appends take.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use uuid::Uuid;

use crate::backend::{sql_int, Replicated};
use crate::error::{Error, Result};

/// Calls `annals_replicate`; returns its status and the partition's next offset.
pub(super) async fn call(pool: &PgPool, lock_space: i32, replicated: &Replicated) -> Result<(i16, i64)> {
    let records = &replicated.records;
    let mut stream = Vec::with_capacity(records.len());
    let mut version = Vec::with_capacity(records.len());
    let mut id: Vec<Uuid> = Vec::with_capacity(records.len());
    let mut event_type = Vec::with_capacity(records.len());
    let mut payload = Vec::with_capacity(records.len());
    let mut metadata = Vec::with_capacity(records.len());
    let mut recorded_at: Vec<DateTime<Utc>> = Vec::with_capacity(records.len());
    let mut last = Vec::with_capacity(records.len());
    let mut schema = Vec::with_capacity(records.len());
    let mut redacted = Vec::with_capacity(records.len());
    for record in records {
        stream.push(record.stream.as_str());
        version.push(sql_int(record.version));
        id.push(record.event_id);
        event_type.push(record.event_type.as_str());
        payload.push(record.payload.get());
        metadata.push(serde_json::to_string(&record.metadata).map_err(Error::InvalidJson)?);
        recorded_at.push(record.recorded_at);
        last.push(record.last_in_append);
        schema.push(record.schema_version().map(i64::from));
        redacted.push(record.redacted);
    }
    let commands = &replicated.commands;
    let command_id: Vec<Uuid> = commands.iter().map(|(id, _)| *id).collect();
    let command_stream: Vec<&str> = commands.iter().map(|(_, c)| c.stream.as_str()).collect();
    let outcome = |field: fn(&crate::log::AppendOutcome) -> u64| -> Vec<i64> {
        commands.iter().map(|(_, c)| sql_int(field(&c.outcome))).collect()
    };
    let row = sqlx::query_as(include_str!("sql/replicate.sql"))
        .bind(lock_space)
        .bind(replicated.partition.0 as i32)
        .bind(sql_int(replicated.first_offset))
        .bind(&stream)
        .bind(&version)
        .bind(&id)
        .bind(&event_type)
        .bind(&payload)
        .bind(&metadata)
        .bind(&recorded_at)
        .bind(&last)
        .bind(&schema)
        .bind(&redacted)
        .bind(&command_id)
        .bind(&command_stream)
        .bind(outcome(|o| o.first_offset.0))
        .bind(outcome(|o| o.last_offset.0))
        .bind(outcome(|o| o.first_version.0))
        .bind(outcome(|o| o.last_version.0))
        .fetch_one(pool)
        .await?;
    Ok(row)
}
