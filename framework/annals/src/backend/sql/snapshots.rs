//! The snapshot log on the SQL engines: rows of `annals_snapshots`, with one set of
//! statements (`snapshots/*.sql`) that SQLite and PostgreSQL both run, through the
//! store's read-model transactions so that a snapshotter's snapshots commit with its
//! group's offsets.

use async_trait::async_trait;

use crate::backend::{NewSnapshot, SnapshotLog};
use crate::error::{Error, Result};
use crate::log::StoredSnapshot;
use crate::params;
use crate::position::Version;
use crate::readmodel::{Db, Param, Row, Tx};
use crate::stream::StreamId;

const WRITE: &str = include_str!("snapshots/write.sql");
const NEWEST: &str = include_str!("snapshots/newest.sql");
const NEWEST_AT: &str = include_str!("snapshots/newest_at.sql");
const SIZE: &str = include_str!("snapshots/size.sql");
/// Three statements, each ending with `;` and a line break but the last.
const COMPACT: &str = include_str!("snapshots/compact.sql");

/// The snapshot log in the store's database.
pub(crate) struct SqlSnapshots {
    db: Db,
}

impl SqlSnapshots {
    pub(crate) fn new(db: Db) -> Self {
        SqlSnapshots { db }
    }
}

#[async_trait]
impl SnapshotLog for SqlSnapshots {
    async fn newest(&self, stream: &StreamId, preferring: Option<u32>) -> Result<Option<StoredSnapshot>> {
        let rows = self
            .db
            .query(NEWEST, vec![stream.as_str().into(), preferring.into()])
            .await?;
        rows.first().map(|row| stored(stream, row)).transpose()
    }

    async fn write(&self, snapshot: NewSnapshot<'_>) -> Result<()> {
        let params = write_params(snapshot);
        self.db
            .transaction(move |tx| Box::pin(async move { tx.execute(WRITE, &params).await.map(drop) }))
            .await
    }

    async fn size(&self) -> Result<(u64, u64)> {
        let rows = self.db.query(SIZE, vec![]).await?;
        let row = rows.first().ok_or(Error::Closed)?;
        Ok((row.get(0)?, row.get(1)?))
    }

    async fn compact(&self, tombstones_before: i64) -> Result<()> {
        self.db
            .transaction(move |tx| {
                Box::pin(async move {
                    for statement in COMPACT.split(";\n") {
                        // Only the last statement has a parameter; SQLite and
                        // PostgreSQL both take a spare one.
                        let params = if statement.contains("$1") {
                            params![tombstones_before]
                        } else {
                            &[][..]
                        };
                        tx.execute(statement, params).await?;
                    }
                    Ok(())
                })
            })
            .await
    }
}

/// Appends a snapshot within `tx`: it commits with whatever else `tx` writes.
pub(crate) async fn write_in(tx: &mut Tx, snapshot: NewSnapshot<'_>) -> Result<()> {
    tx.execute(WRITE, &write_params(snapshot)).await.map(drop)
}

/// The newest live snapshot of `stream` at or before `version` in schema `schema`, as
/// `tx` sees the log (one written earlier in `tx` included).
pub(crate) async fn newest_at(
    tx: &mut Tx,
    stream: &StreamId,
    version: Version,
    schema: u32,
) -> Result<Option<StoredSnapshot>> {
    let row = tx
        .query_opt(NEWEST_AT, params![stream.as_str(), version.0 as i64, schema])
        .await?;
    row.map(|row| stored(stream, &row)).transpose()
}

fn write_params(snapshot: NewSnapshot<'_>) -> Vec<Param> {
    vec![
        snapshot.stream.as_str().into(),
        (snapshot.version.0 as i64).into(),
        snapshot.schema_version.into(),
        snapshot.state.into(),
        chrono::Utc::now().timestamp_micros().into(),
    ]
}

fn stored(stream: &StreamId, row: &Row) -> Result<StoredSnapshot> {
    Ok(StoredSnapshot {
        seq: row.get(0)?,
        stream: stream.as_str().to_owned(),
        version: row.get(1)?,
        schema_version: row.get(2)?,
        state: row.get(3)?,
    })
}
