//! Snapshots from a compacted, keyed log: aggregate loading that does not grow with
//! history.
//!
//! The snapshot log (`annals_snapshots`, in the store's database) is keyed by stream
//! id; each entry holds an aggregate's state at a version, with the schema version of
//! its JSON. A [`Snapshotter`] consumer group folds each stream's events and appends a
//! snapshot every N events, off the command path; a repository can also snapshot on
//! the command path ([`SnapshotOptions::on_command_every`]). A [`Repository`] with
//! snapshots loads the newest snapshot whose schema matches and then only the events
//! after it. [`compact`] keeps one snapshot per live key; a [`tombstone`] removes a
//! key.
//!
//! [`Repository`]: crate::aggregate::Repository

mod snapshotter;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use snapshotter::Snapshotter;

use crate::aggregate::Aggregate;
use crate::error::{Error, Result};
use crate::params;
use crate::position::Version;
use crate::readmodel::{Db, Param, Tx};
use crate::store::Store;
use crate::stream::StreamId;

/// An aggregate whose state can be snapshotted: serde JSON, with a schema version.
pub trait Snapshottable: Aggregate + Serialize + DeserializeOwned {
    /// The version of the state's JSON shape. Bump it when the state changes
    /// incompatibly: older snapshots are then ignored (the aggregate is folded from its
    /// events and snapshotted again).
    const SNAPSHOT_VERSION: u32 = 1;
}

/// How a repository uses snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotOptions {
    /// Also snapshot on the command path, whenever a command takes the stream past a
    /// multiple of this many events (`None`: only the snapshotter writes them).
    pub on_command_every: Option<u64>,
}

/// One snapshot as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSnapshot {
    /// Its position in the snapshot log.
    pub seq: i64,
    /// The stream (key).
    pub stream: String,
    /// The stream version the state is at.
    pub version: Version,
    /// The schema version of the state's JSON.
    pub schema_version: u32,
    /// The state, as JSON text.
    pub state: String,
}

fn micros_now() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Appends a snapshot of `stream` at `version` (within `tx`).
pub async fn write(tx: &mut Tx, stream: &StreamId, version: Version, schema_version: u32, state: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO annals_snapshots (stream_id, version, schema_version, state, taken_at) VALUES ($1, $2, $3, $4, $5)",
        params![stream.as_str(), version as i64, schema_version, state, micros_now()],
    )
    .await
    .map(drop)
}

/// Removes `stream`'s snapshots: loads fold its events from the start again. The
/// tombstone itself stays for compaction's retention period.
pub async fn tombstone(store: &Store, stream: &StreamId) -> Result<()> {
    let stream = stream.as_str().to_owned();
    store
        .read_models()?
        .transaction(move |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO annals_snapshots (stream_id, version, schema_version, state, taken_at) \
                     VALUES ($1, 0, 0, NULL, $2)",
                    params![stream, micros_now()],
                )
                .await
                .map(drop)
            })
        })
        .await
}

/// The rows after the key's last tombstone, as a SQL condition on alias `s`.
const LIVE: &str = "s.state IS NOT NULL AND NOT EXISTS (SELECT 1 FROM annals_snapshots t \
     WHERE t.stream_id = s.stream_id AND t.state IS NULL AND t.seq > s.seq)";

/// The newest live snapshot of `stream` (highest version, then latest written).
pub async fn newest(db: &Db, stream: &StreamId) -> Result<Option<StoredSnapshot>> {
    newest_ordered(db, stream, "", vec![stream.as_str().into()]).await
}

/// The newest live snapshot of `stream` of schema version `schema` if there is one,
/// else the newest of any schema: one query tells a load what to start from and
/// whether the stream has snapshots of another shape.
pub(crate) async fn newest_preferring(db: &Db, stream: &StreamId, schema: u32) -> Result<Option<StoredSnapshot>> {
    let params = vec![stream.as_str().into(), schema.into()];
    newest_ordered(db, stream, "(s.schema_version = $2) DESC, ", params).await
}

async fn newest_ordered(db: &Db, stream: &StreamId, first: &str, params: Vec<Param>) -> Result<Option<StoredSnapshot>> {
    let rows = db
        .query(
            &format!(
                "SELECT s.seq, s.version, s.schema_version, s.state FROM annals_snapshots s \
                 WHERE s.stream_id = $1 AND {LIVE} ORDER BY {first}s.version DESC, s.seq DESC LIMIT 1"
            ),
            params,
        )
        .await?;
    rows.first()
        .map(|row| {
            Ok(StoredSnapshot {
                seq: row.get(0)?,
                stream: stream.as_str().to_owned(),
                version: row.get(1)?,
                schema_version: row.get(2)?,
                state: row.get(3)?,
            })
        })
        .transpose()
}

/// What compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Compaction {
    /// Rows (snapshots and tombstones) before.
    pub rows_before: u64,
    /// Bytes of state before.
    pub bytes_before: u64,
    /// Rows after.
    pub rows_after: u64,
    /// Bytes of state after.
    pub bytes_after: u64,
}

/// The snapshot log's size: rows and bytes of state.
pub async fn size(store: &Store) -> Result<(u64, u64)> {
    let row = store
        .read_models()?
        .query(
            "SELECT count(*), coalesce(sum(length(state)), 0) FROM annals_snapshots",
            vec![],
        )
        .await?;
    let row = row.first().ok_or(Error::Closed)?;
    Ok((row.get(0)?, row.get(1)?))
}

/// Compacts the snapshot log: per key, only the newest snapshot after its last
/// tombstone stays; older snapshots and tombstones go, and a tombstone itself goes once
/// it is older than `retention`. The event log is never touched. Safe while snapshots
/// are being written: a row is removed only when a newer row of its key is visible, so
/// the newest snapshot of a key always survives.
pub async fn compact(store: &Store, retention: Duration) -> Result<Compaction> {
    let (rows_before, bytes_before) = size(store).await?;
    let cutoff = micros_now() - i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
    store
        .read_models()?
        .transaction(move |tx| {
            Box::pin(async move {
                // Anything before a tombstone of its key (older tombstones included)...
                tx.execute(
                    "DELETE FROM annals_snapshots WHERE EXISTS ( \
                         SELECT 1 FROM annals_snapshots t WHERE t.stream_id = annals_snapshots.stream_id \
                           AND t.state IS NULL AND t.seq > annals_snapshots.seq)",
                    &[],
                )
                .await?;
                // ...then, of what is left (all after the key's last tombstone), every
                // snapshot a newer one of its key supersedes.
                tx.execute(
                    "DELETE FROM annals_snapshots WHERE state IS NOT NULL AND EXISTS ( \
                         SELECT 1 FROM annals_snapshots n WHERE n.stream_id = annals_snapshots.stream_id \
                           AND n.state IS NOT NULL \
                           AND (n.version > annals_snapshots.version \
                             OR (n.version = annals_snapshots.version AND n.seq > annals_snapshots.seq)))",
                    &[],
                )
                .await?;
                // Tombstones past their retention.
                tx.execute(
                    "DELETE FROM annals_snapshots WHERE state IS NULL AND taken_at < $1",
                    params![cutoff],
                )
                .await
                .map(drop)
            })
        })
        .await?;
    let (rows_after, bytes_after) = size(store).await?;
    Ok(Compaction {
        rows_before,
        bytes_before,
        rows_after,
        bytes_after,
    })
}

/// Compacts the snapshot log every `every` until the returned task is aborted (or the
/// store closes): the background policy.
pub fn spawn_compaction(store: Store, every: Duration, retention: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            match compact(&store, retention).await {
                Ok(done) => tracing::debug!(?done, "snapshot log compacted"),
                Err(Error::Closed | Error::Unsupported { .. }) => return,
                Err(error) => tracing::warn!(%error, "snapshot compaction failed"),
            }
        }
    })
}
