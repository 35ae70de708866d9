//! Snapshots from a compacted, keyed log: aggregate loading that does not grow with
//! history.
//!
//! The snapshot log (in the store's database; in memory for `memory:` stores) is keyed
//! by stream id; each entry holds an aggregate's state at a version, with the schema version of
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
use crate::backend::{sql, NewSnapshot};
use crate::error::{Error, Result};
pub use crate::log::StoredSnapshot;
use crate::position::Version;
use crate::readmodel::Tx;
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

/// Appends a snapshot of `stream` at `version` within `tx`, a transaction of the
/// store's read models: it commits with whatever else `tx` writes (a snapshotter's
/// group offsets, say). The state is written as given: for a stream that holds
/// personal data, seal it first with [`seal()`] (the [`Snapshotter`] does).
pub async fn write(
    tx: &mut Tx,
    stream: &StreamId,
    version: impl Into<Version>,
    schema_version: u32,
    state: &str,
) -> Result<()> {
    let snapshot = NewSnapshot {
        stream,
        version: version.into(),
        schema_version,
        state: Some(state),
    };
    sql::snapshots::write_in(tx, snapshot).await?;
    crate::telemetry::snapshot_written();
    Ok(())
}

/// Appends a snapshot of `stream` at `version` in a transaction of its own. When the
/// stream holds personal data (see [`personal`](crate::personal)), the state is sealed
/// under its subjects' keys, and not written at all once one of them was erased.
pub async fn save(
    store: &Store,
    stream: &StreamId,
    version: impl Into<Version>,
    schema_version: u32,
    state: &str,
) -> Result<()> {
    let Some(state) = store.seal_snapshot(stream, state).await? else {
        return Ok(());
    };
    let snapshot = NewSnapshot {
        stream,
        version: version.into(),
        schema_version,
        state: Some(&state),
    };
    store.snapshot_log().write(snapshot).await?;
    crate::telemetry::snapshot_written();
    Ok(())
}

/// Removes `stream`'s snapshots: loads fold its events from the start again. The
/// tombstone itself stays for compaction's retention period.
pub async fn tombstone(store: &Store, stream: &StreamId) -> Result<()> {
    let tombstone = NewSnapshot {
        stream,
        version: Version(0),
        schema_version: 0,
        state: None,
    };
    store.snapshot_log().write(tombstone).await
}

/// The newest live snapshot of `stream` (highest version, then latest written), its
/// state revealed; `None` also when it was sealed under a key since erased.
pub async fn newest(store: &Store, stream: &StreamId) -> Result<Option<StoredSnapshot>> {
    store.newest_snapshot(stream, None).await
}

/// `state`, a snapshot of `stream`, as [`write()`] should store it: sealed under the keys
/// of the subjects whose personal data the stream holds (as is when it holds none), or
/// `None` when one of them was erased, and the snapshot should not be written.
pub async fn seal(store: &Store, stream: &StreamId, state: &str) -> Result<Option<String>> {
    store.seal_snapshot(stream, state).await
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
    store.snapshot_log().size().await
}

/// Compacts the snapshot log: per key, only the newest snapshot after its last
/// tombstone stays; older snapshots and tombstones go, and a tombstone itself goes once
/// it is older than `retention`. The event log is never touched. Safe while snapshots
/// are being written: a row is removed only when a newer row of its key is visible, so
/// the newest snapshot of a key always survives.
pub async fn compact(store: &Store, retention: Duration) -> Result<Compaction> {
    let (rows_before, bytes_before) = size(store).await?;
    let cutoff = chrono::Utc::now().timestamp_micros() - i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
    store.snapshot_log().compact(cutoff).await?;
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
