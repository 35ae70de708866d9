//! The snapshot log in memory: the rows `annals_snapshots` would hold, in the order
//! they were written, with the same reads and the same compaction.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::backend::{NewSnapshot, SnapshotLog};
use crate::error::Result;
use crate::log::StoredSnapshot;
use crate::position::Version;
use crate::stream::StreamId;

#[derive(Default)]
pub(super) struct MemorySnapshots {
    rows: Mutex<Rows>,
}

#[derive(Default)]
struct Rows {
    next_seq: i64,
    /// In `seq` order.
    rows: Vec<Row>,
}

struct Row {
    seq: i64,
    stream: StreamId,
    version: Version,
    schema_version: u32,
    /// `None`: a tombstone.
    state: Option<String>,
    taken_at: i64,
}

impl Rows {
    /// The `seq` of each key's last tombstone.
    fn last_tombstones(&self) -> HashMap<&StreamId, i64> {
        let mut last = HashMap::new();
        for row in self.rows.iter().filter(|row| row.state.is_none()) {
            last.insert(&row.stream, row.seq);
        }
        last
    }
}

impl MemorySnapshots {
    fn rows(&self) -> std::sync::MutexGuard<'_, Rows> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops every snapshot of `stream` (it was deleted).
    pub(super) fn forget(&self, stream: &StreamId) {
        self.rows().rows.retain(|row| row.stream != *stream);
    }

    /// Removes the snapshots of each stream at or after the version given for it: they
    /// folded records a truncation removed.
    pub(super) fn forget_from(&self, first_removed: &HashMap<&StreamId, Version>) {
        self.rows().rows.retain(|row| {
            first_removed
                .get(&row.stream)
                .is_none_or(|&first| row.state.is_none() || row.version < first)
        });
    }
}

#[async_trait]
impl SnapshotLog for MemorySnapshots {
    async fn newest(&self, stream: &StreamId, preferring: Option<u32>) -> Result<Option<StoredSnapshot>> {
        let rows = self.rows();
        let after = rows
            .rows
            .iter()
            .filter(|row| row.stream == *stream && row.state.is_none())
            .map(|row| row.seq)
            .max()
            .unwrap_or(0);
        let newest = rows
            .rows
            .iter()
            .filter(|row| row.stream == *stream && row.state.is_some() && row.seq > after)
            .max_by_key(|row| (Some(row.schema_version) == preferring, row.version, row.seq));
        Ok(newest.map(|row| StoredSnapshot {
            seq: row.seq,
            stream: row.stream.as_str().to_owned(),
            version: row.version,
            schema_version: row.schema_version,
            state: row.state.clone().unwrap_or_default(),
        }))
    }

    async fn write(&self, snapshot: NewSnapshot<'_>) -> Result<()> {
        let mut rows = self.rows();
        rows.next_seq += 1;
        let seq = rows.next_seq;
        rows.rows.push(Row {
            seq,
            stream: snapshot.stream.clone(),
            version: snapshot.version,
            schema_version: snapshot.schema_version,
            state: snapshot.state.map(str::to_owned),
            taken_at: chrono::Utc::now().timestamp_micros(),
        });
        Ok(())
    }

    async fn size(&self) -> Result<(u64, u64)> {
        let rows = self.rows();
        let bytes = rows
            .rows
            .iter()
            .filter_map(|row| row.state.as_ref())
            .map(String::len)
            .sum::<usize>();
        Ok((rows.rows.len() as u64, bytes as u64))
    }

    async fn compact(&self, tombstones_before: i64) -> Result<()> {
        let mut guard = self.rows();
        let rows = &mut *guard;
        // Anything before a tombstone of its key (older tombstones included)...
        let last: HashMap<StreamId, i64> = rows
            .last_tombstones()
            .into_iter()
            .map(|(stream, seq)| (stream.clone(), seq))
            .collect();
        rows.rows
            .retain(|row| last.get(&row.stream).is_none_or(|&tombstone| row.seq >= tombstone));
        // ...then every snapshot a newer one of its key supersedes...
        let mut newest: HashMap<StreamId, (Version, i64)> = HashMap::new();
        for row in rows.rows.iter().filter(|row| row.state.is_some()) {
            let key = (row.version, row.seq);
            newest
                .entry(row.stream.clone())
                .and_modify(|kept| *kept = (*kept).max(key))
                .or_insert(key);
        }
        rows.rows
            .retain(|row| row.state.is_none() || newest.get(&row.stream) == Some(&(row.version, row.seq)));
        // ...and tombstones past their retention.
        rows.rows
            .retain(|row| row.state.is_some() || row.taken_at >= tombstones_before);
        Ok(())
    }
}
