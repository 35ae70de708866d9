//! The bodies of the HTTP API, as the server writes and reads them and the client
//! sends and receives them: one definition for both sides. Records travel as
//! [`RecordedEvent`]s, whose payloads keep the exact JSON text they were appended with.

use annals::group::admin::{DeadLetter, GroupSummary};
use annals::personal::{PersonalData, SubjectKey};
use annals::{ExpectedVersion, Metadata, Offset, Partition, RecordedEvent, StreamId, StreamInfo, Version};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The body of `POST /v1/streams/{stream}/events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendBody {
    /// The version the stream must be at.
    pub expected_version: ExpectedVersion,
    /// The command id the append is made with, if any (I5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
    /// The events, in order.
    pub events: Vec<EventBody>,
}

/// One event of an [`AppendBody`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The payload, as JSON text.
    pub data: Box<RawValue>,
    /// The metadata, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// A client-chosen event id (one is assigned otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// Fields of the payload holding personal data, sealed by the store (see
    /// [`annals::personal`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub personal: Vec<PersonalData>,
}

/// The answer of `GET /v1/keys`: changes of the key table, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyChanges {
    /// Keys created and erased, in `seq` order.
    pub keys: Vec<SubjectKey>,
    /// The leader's epoch: `seq`s count in one leader's key table, so a follower whose
    /// leader changed copies the table from the start.
    #[serde(default)]
    pub leader_epoch: u64,
}

/// The answer of `GET /v1/streams/{stream}/events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamEvents {
    /// The stream.
    pub stream: StreamId,
    /// Its version.
    pub version: Version,
    /// The events asked for.
    pub events: Vec<RecordedEvent>,
}

/// The answer of `GET /v1/partitions/{partition}/events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionEvents {
    /// The partition.
    pub partition: Partition,
    /// Whole appends from the offset asked for.
    pub events: Vec<RecordedEvent>,
    /// The offset to read from next.
    pub next_offset: Offset,
    /// The partition's next offset when the answer was made.
    pub high_watermark: Offset,
}

/// The answer of `GET /v1/partitions`. Fields in name order, as the server writes them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionsInfo {
    /// The store records where its appends end, and a fetch answers whole appends
    /// (`false` from a server that predates it).
    #[serde(default)]
    pub append_boundaries: bool,
    /// The engine: `memory`, `sqlite` or `postgres`.
    pub backend: String,
    /// The leader epoch.
    pub leader_epoch: u64,
    /// The partition count.
    pub partition_count: u32,
    /// Every partition, in order.
    pub partitions: Vec<PartitionInfo>,
    /// On a follower's server: how its replication goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Value>,
    /// `leader` or `follower`.
    pub role: String,
}

/// One partition of [`PartitionsInfo`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Its next offset.
    pub next_offset: Offset,
    /// The partition.
    pub partition: Partition,
    /// On a follower's server: records the leader has that the follower lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_lag: Option<u64>,
}

/// The answer of `DELETE /v1/streams/{stream}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamDeleted {
    /// The stream.
    pub stream: StreamId,
    /// The partition holding it.
    pub partition: Partition,
    /// The deletion record's offset.
    pub offset: Offset,
    /// The deletion record's version.
    pub version: Version,
    /// Whether the deletion was hard.
    pub hard: bool,
}

/// The answer of `GET /v1/streams`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamsPage {
    /// Streams in id order.
    pub streams: Vec<StreamInfo>,
}

/// The answer of `GET /v1/groups`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupsPage {
    /// Every group, by name.
    pub groups: Vec<GroupSummary>,
}

/// The answer of `GET /v1/dead-letters`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLettersPage {
    /// In group, partition and offset order.
    pub dead_letters: Vec<DeadLetter>,
}

/// The answer of `GET /v1/groups/{group}/wait`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupWait {
    /// The group.
    pub group: String,
    /// The position waited for.
    pub partition: Partition,
    /// The position waited for.
    pub offset: Offset,
    /// Whether the group committed past it in time.
    pub reached: bool,
    /// Where the group's commit on the partition stood when the wait ended.
    pub committed: Offset,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error's code (`wrong_expected_version`, `not_found`, …).
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
    /// What the code carries besides (`actual_version`, `leader`, …).
    #[serde(flatten)]
    pub details: Map<String, Value>,
}
