//! What consumer groups keep in a store, whatever the engine: the group protocol's
//! messages (a member joining, the partitions it owns), how a group commits and where
//! it starts, its dead letters, what an operator reads back, and the assignment of
//! partitions to members. The engines store these ([`Groups`](crate::backend::Groups));
//! [`group`](crate::group) runs members on top.

mod assign;
mod commits;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub(crate) use assign::assign;
pub(crate) use commits::Commits;

use crate::error::{Error, Result};
use crate::position::{Offset, Partition};

/// Where a new group starts reading the log (Kafka's `auto.offset.reset`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StartAt {
    /// At the first record: the group's view is built from the whole log.
    #[default]
    Earliest,
    /// At the end of the log as it stands when the group is created: only records
    /// appended from then on are handled (a mailer that must not mail the past).
    Latest,
}

/// How a group commits its offsets, as its members last said: a
/// [`Projection`](crate::group::Projection)'s writes and offset commits share one transaction; a [`Consumer`](crate::group::Consumer)
/// commits after its handler. In JSON, `"transactional"` or `"at_least_once"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitMode {
    /// A projection's read model lives in the store's database and commits with the
    /// offsets (exactly-once effect).
    Transactional,
    /// A consumer's effects live elsewhere; records may be handled again after a
    /// crash (at least once).
    AtLeastOnce,
}

impl CommitMode {
    /// `"transactional"` or `"at_least_once"`, as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            CommitMode::Transactional => "transactional",
            CommitMode::AtLeastOnce => "at_least_once",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<CommitMode> {
        match text {
            "transactional" => Some(CommitMode::Transactional),
            "at_least_once" => Some(CommitMode::AtLeastOnce),
            _ => None,
        }
    }
}

/// A record a group gave up on, or one parked behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its id (for retry and skip).
    pub id: i64,
    /// The group.
    pub group: String,
    /// Where the record is.
    pub partition: Partition,
    /// Where the record is.
    pub offset: Offset,
    /// The record's stream.
    pub stream: String,
    /// The record's event id.
    pub event_id: String,
    /// The record's type.
    pub event_type: String,
    /// Where it stands.
    pub status: DeadLetterStatus,
    /// The handler's last error (empty when parked).
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was dead-lettered.
    pub created_at: DateTime<Utc>,
}

/// Where a dead letter stands. In JSON and in the store: `"failed"`, `"parked"` or
/// `"retry"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterStatus {
    /// The handler gave up on it.
    Failed,
    /// Waiting behind an earlier dead letter of its stream.
    Parked,
    /// To be handled again by the owner of its partition.
    Retry,
}

impl DeadLetterStatus {
    /// `"failed"`, `"parked"` or `"retry"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterStatus::Failed => "failed",
            DeadLetterStatus::Parked => "parked",
            DeadLetterStatus::Retry => "retry",
        }
    }

    /// The status stored as `text`, read from column `index`.
    pub(crate) fn parse(text: &str, index: usize) -> Result<Self> {
        match text {
            "failed" => Ok(DeadLetterStatus::Failed),
            "parked" => Ok(DeadLetterStatus::Parked),
            "retry" => Ok(DeadLetterStatus::Retry),
            _ => Err(Error::ColumnType {
                index,
                expected: "a dead-letter status (failed, parked or retry)",
                found: "other text",
            }),
        }
    }
}

impl std::fmt::Display for DeadLetterStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A group name: 1–200 bytes of `[A-Za-z0-9_.:@-]`, as a stream id.
pub(crate) fn validate_group(name: &str) -> Result<()> {
    match crate::stream::invalid_reason(name) {
        None => Ok(()),
        Some(_) => Err(Error::InvalidGroupName { name: name.to_owned() }),
    }
}

/// A partition this member owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owned {
    pub(crate) partition: Partition,
    /// The generation the member was given it in; commits are fenced on it.
    pub(crate) generation: i64,
    pub(crate) paused: bool,
}

/// What a heartbeat tells a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    pub(crate) generation: i64,
    pub(crate) owned: Vec<Owned>,
    /// Partitions with dead letters waiting to be retried.
    pub(crate) retries: Vec<Partition>,
}

impl Membership {
    /// The partitions to work on: owned and not paused.
    pub(crate) fn working(&self) -> Vec<Partition> {
        self.owned.iter().filter(|o| !o.paused).map(|o| o.partition).collect()
    }
}

/// A member as it heartbeats.
pub(crate) struct Joining<'a> {
    pub(crate) group: &'a str,
    pub(crate) member: &'a str,
    pub(crate) host: &'a str,
    pub(crate) session_timeout_ms: i64,
    /// Where the group starts, if this member is its first.
    pub(crate) start_at: StartAt,
    pub(crate) mode: CommitMode,
}

/// Who may move a partition's committed offset: the member that owns it, since the
/// generation it was given it in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fence<'a> {
    pub(crate) group: &'a str,
    pub(crate) partition: Partition,
    pub(crate) member: &'a str,
    pub(crate) generation: i64,
}

impl Fence<'_> {
    /// The error of a member that does not own the partition (any more).
    pub(crate) fn fenced(&self) -> Error {
        Error::Fenced {
            group: self.group.to_owned(),
            partition: self.partition,
        }
    }
}

/// A leader's at-least-once group as a follower copies it (see
/// [`admin::mirror`](crate::group::admin::mirror)): offsets already capped at what the
/// follower holds, dead letters of records it holds.
#[derive(Debug, Clone)]
pub(crate) struct Mirrored {
    pub(crate) group: String,
    pub(crate) leader: String,
    pub(crate) generation: i64,
    pub(crate) partitions: Vec<PartitionRow>,
    pub(crate) dead_letters: Vec<DeadLetter>,
}

/// A group's row as [`admin::list`](crate::group::admin::list) reads it.
#[derive(Debug, Clone)]
pub(crate) struct GroupRow {
    pub(crate) group: String,
    pub(crate) generation: i64,
    pub(crate) live_members: u64,
    pub(crate) commit_mode: Option<CommitMode>,
    pub(crate) mirrored_from: Option<String>,
    pub(crate) committed: BTreeMap<Partition, Offset>,
}

/// One group as [`admin::describe`](crate::group::admin::describe) reads it, before
/// the log's high watermarks are put beside it.
#[derive(Debug, Clone)]
pub(crate) struct GroupRecord {
    pub(crate) generation: i64,
    pub(crate) commit_mode: Option<CommitMode>,
    pub(crate) mirrored_from: Option<String>,
    /// Live members, by id.
    pub(crate) members: Vec<MemberRow>,
    /// Per partition, in order.
    pub(crate) partitions: Vec<PartitionRow>,
    pub(crate) dead_letters: u64,
}

/// A live member's row.
#[derive(Debug, Clone)]
pub(crate) struct MemberRow {
    pub(crate) member_id: String,
    pub(crate) host: String,
    pub(crate) joined_at: DateTime<Utc>,
    pub(crate) heartbeat_at: DateTime<Utc>,
}

/// A group's row for one partition.
#[derive(Debug, Clone)]
pub(crate) struct PartitionRow {
    pub(crate) partition: Partition,
    pub(crate) committed: Offset,
    pub(crate) owner: Option<String>,
    pub(crate) paused: bool,
    pub(crate) stopped_reason: Option<String>,
}

/// Where a reset moves a group's committed offsets, resolved against the log: offsets
/// per partition, or the first record at or after a time (the high watermark where
/// there is none).
#[derive(Debug, Clone)]
pub(crate) enum ResetTargets {
    Offsets(BTreeMap<Partition, Offset>),
    Since {
        at: DateTime<Utc>,
        high_watermarks: Vec<Offset>,
    },
}
