//! The snapshotter: a projection that writes a snapshot of every stream of one
//! aggregate type each time the stream reaches a multiple of N events.

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;

use super::Snapshottable;
use crate::aggregate::event::Decoder;
use crate::aggregate::Upcasters;
use crate::backend::sql;
use crate::error::{Error, Result};
use crate::group::{Filter, Projection};
use crate::position::Version;
use crate::readmodel::Tx;
use crate::record::RecordedEvent;
use crate::store::Store;

/// Writes a snapshot of each `A` stream every `every` events. Run it as a consumer
/// group (`GroupMember::projection`): snapshots are written in the same transaction
/// as the group's offsets, off the command path.
pub struct Snapshotter<A> {
    store: Store,
    every: u64,
    upcasters: Arc<Upcasters>,
    aggregate: PhantomData<fn() -> A>,
}

impl<A: Snapshottable> Snapshotter<A> {
    /// A snapshotter of `A` streams on `store`, every `every` events (at least 1).
    pub fn new(store: &Store, every: u64) -> Self {
        Snapshotter {
            store: store.clone(),
            every: every.max(1),
            upcasters: Arc::new(Upcasters::new()),
            aggregate: PhantomData,
        }
    }

    /// Converts events written with older schema versions, as the repository does.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = Arc::new(upcasters);
        self
    }

    /// The state of `record`'s stream at `record.version`: its newest snapshot at or
    /// before that version (one written earlier in this transaction included), then
    /// the events up to it, read in pages.
    async fn state_at(&self, tx: &mut Tx, record: &RecordedEvent) -> Result<A> {
        let stream = &record.stream;
        let mut state = A::default();
        let mut version = Version(0);
        let newest = sql::snapshots::newest_at(tx, stream, record.version, A::SNAPSHOT_VERSION).await?;
        let newest = match newest {
            Some(snapshot) => self.store.reveal_snapshot(snapshot).await?,
            None => None,
        };
        if let Some(snapshot) = newest {
            version = snapshot.version;
            state = serde_json::from_str(&snapshot.state).map_err(Error::InvalidJson)?;
        }
        let mut decoder = Decoder::new(&self.upcasters);
        while version < record.version {
            let page = (record.version - version).min(1_000) as usize;
            let events = self.store.read_stream(stream, version + 1, page).await?;
            if events.is_empty() {
                break;
            }
            for event in &events {
                state.apply(&decoder.decode_record::<A::Event>(event)?);
                version = event.version;
            }
        }
        Ok(state)
    }
}

#[async_trait]
impl<A: Snapshottable> Projection for Snapshotter<A> {
    fn filter(&self) -> Filter {
        Filter::categories([A::CATEGORY]).unwrap_or_default()
    }

    async fn handle(&self, record: &RecordedEvent, tx: &mut Tx) -> Result<()> {
        if record.version.0 % self.every != 0 {
            return Ok(());
        }
        let state = self.state_at(tx, record).await?;
        let json = serde_json::to_string(&state).map_err(Error::InvalidJson)?;
        match super::seal(&self.store, &record.stream, &json).await? {
            Some(json) => super::write(tx, &record.stream, record.version, A::SNAPSHOT_VERSION, &json).await,
            None => Ok(()),
        }
    }
}
