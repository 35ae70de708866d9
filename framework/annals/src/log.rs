//! What the log answers, whatever the engine: where an append went, a stream's
//! summary, the store's place in replication, the visitor a fold shows events to, and
//! a snapshot as the snapshot log holds it.
//! Engines return these; the store hands them on.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::position::{Offset, Partition, Version};
use crate::record::EventView;
use crate::stream::StreamId;

/// Where an append's events were stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    /// The stream's partition.
    pub partition: Partition,
    /// Offset of the first event.
    pub first_offset: Offset,
    /// Offset of the last event.
    pub last_offset: Offset,
    /// Stream version of the first event.
    pub first_version: Version,
    /// Stream version of the last event (the stream's version after the append).
    pub last_version: Version,
    /// True when the command id was already applied: this is the original outcome and
    /// nothing was written.
    pub duplicate: bool,
}

impl AppendOutcome {
    /// Where the append's last event is: a group has seen the whole append once it has
    /// committed past this position.
    pub fn position(&self) -> crate::position::Position {
        crate::position::Position {
            partition: self.partition,
            offset: self.last_offset,
        }
    }
}

/// A stream as listed by [`EventStore::list_streams`](crate::EventStore::list_streams).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The stream id.
    pub stream: StreamId,
    /// Its partition.
    pub partition: Partition,
    /// Its version (number of events).
    pub version: Version,
}

/// What [`EventStore::fold_stream`](crate::EventStore::fold_stream) calls with each event.
pub type Visitor<'v> = dyn FnMut(EventView<'_>) -> Result<()> + Send + 'v;

/// Whom a store follows, and its leader epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// The leader's URL when this store is a follower; `None` on a leader.
    pub leader: Option<String>,
    /// The leader epoch: 0 for a store never promoted, bumped by each promotion.
    pub epoch: u64,
}

impl Replica {
    /// As stored: the leader's URL (none on a leader) and the epoch, an SQL integer.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn stored(leader: Option<String>, epoch: i64) -> Self {
        Replica {
            leader,
            epoch: u64::try_from(epoch).unwrap_or(0),
        }
    }

    /// `"leader"` or `"follower"`.
    pub fn role(&self) -> &'static str {
        if self.leader.is_some() {
            "follower"
        } else {
            "leader"
        }
    }
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
