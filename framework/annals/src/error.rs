//! The one error type of annals. Every failure a caller can act on has its own variant
//! with structured fields; engine detail travels as the `source`.

use uuid::Uuid;

use crate::position::{ExpectedVersion, Offset, Partition, Version};
use crate::stream::StreamId;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in annals.
///
/// Match on the variants to act on a failure; [`Error::code`] gives the stable short code
/// used on the HTTP API and in `--json` output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A stream id outside the allowed alphabet or length.
    #[error("invalid stream id {id:?}: {reason}")]
    InvalidStreamId {
        /// The rejected text.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A category filter that no stream id could have.
    #[error("invalid category {category:?}: a category is a stream id prefix without '-'")]
    InvalidCategory {
        /// The rejected text.
        category: String,
    },
    /// The stream was not at the version the append expected; nothing was written.
    #[error("wrong expected version on {stream}: expected {expected}, stream is at {actual}")]
    WrongExpectedVersion {
        /// The stream appended to.
        stream: StreamId,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was checked.
        actual: Version,
    },
    /// The command id was already used for an append to another stream.
    #[error("command id {command_id} was already used on {existing_stream}, not {stream}")]
    CommandIdConflict {
        /// The command id.
        command_id: Uuid,
        /// The stream of the rejected append.
        stream: StreamId,
        /// The stream the command id was applied to.
        existing_stream: StreamId,
    },
    /// The stream was hard-deleted: it can never be read or written again.
    #[error("stream {stream} was deleted for good")]
    StreamDeleted {
        /// The stream.
        stream: StreamId,
    },
    /// The stream has no records to read or delete (it was never written, or it was
    /// deleted and not written since).
    #[error("stream {stream} does not exist")]
    StreamNotFound {
        /// The stream.
        stream: StreamId,
    },
    /// An event type the store keeps for its own records (`annals.…`).
    #[error("event type {event_type:?} is reserved: types starting with \"annals.\" are the store's own")]
    ReservedEventType {
        /// The rejected type.
        event_type: String,
    },
    /// A subject id that is empty, longer than 200 bytes or holds a control character.
    #[error("invalid subject {subject:?}: {reason}")]
    InvalidSubject {
        /// The text.
        subject: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Personal data marked on an event that the store cannot seal: a field the payload
    /// does not have, the whole payload, or a payload holding the store's own
    /// `"annals.sealed"` key.
    #[error("invalid personal data: {reason}")]
    InvalidPersonalData {
        /// What is wrong with it.
        reason: String,
    },
    /// The subject was erased: its data can never be written again.
    #[error("subject {subject} was erased")]
    SubjectErased {
        /// The subject.
        subject: crate::personal::Subject,
    },
    /// Sealing or opening personal data failed in the crypto library.
    #[error("crypto failure while {what}")]
    Crypto {
        /// What the store was doing.
        what: &'static str,
    },
    /// A retention rule the store cannot apply.
    #[error("invalid retention rule: {reason}")]
    InvalidRetention {
        /// What is wrong with it.
        reason: String,
    },
    /// An event id that the store (or the same append) already holds.
    #[error("duplicate event id {event_id}")]
    DuplicateEventId {
        /// The repeated id.
        event_id: Uuid,
    },
    /// An append with no events.
    #[error("an append needs at least one event")]
    EmptyAppend,
    /// More events in one append than the limit allows.
    #[error("{count} events in one append, the limit is {limit}")]
    TooManyEvents {
        /// Events in the append.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// One event's payload is larger than the limit.
    #[error("event {index} has a {size}-byte payload, the limit is {limit} bytes")]
    PayloadTooLarge {
        /// Position of the event in the append.
        index: usize,
        /// Its payload size in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// One event's payload or metadata nests arrays and objects deeper than the limit.
    #[error("event {index} has {what} nested {limit} or more levels deep; it must stay below {limit}")]
    JsonTooDeep {
        /// Position of the event in the append.
        index: usize,
        /// `"payload"` or `"metadata"`.
        what: &'static str,
        /// The configured limit.
        limit: usize,
    },
    /// The whole append (payloads and metadata) is larger than the limit.
    #[error("the append holds {size} bytes, the limit is {limit} bytes")]
    AppendTooLarge {
        /// Bytes of payload and metadata in the append.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// An event type that is empty or longer than 200 bytes.
    #[error("invalid event type {event_type:?}: it must be 1 to 200 bytes")]
    InvalidEventType {
        /// The rejected type.
        event_type: String,
    },
    /// Metadata whose user keys include one the store owns (`command_id`,
    /// `correlation_id`, `causation_id`): set those through their fields.
    #[error("metadata key {key:?} is reserved: set it through its field")]
    ReservedMetadataKey {
        /// The key.
        key: String,
    },
    /// A `DomainEvent` type that does not serialise in the adjacently tagged form
    /// (`#[serde(tag = "type", content = "data")]`): storing it would lose data.
    #[error("{type_name} is not a storable DomainEvent: {reason}")]
    InvalidDomainEvent {
        /// The Rust type.
        type_name: &'static str,
        /// What its serialisation looked like.
        reason: &'static str,
    },
    /// Text that should have been JSON (a payload, metadata) was not.
    #[error("invalid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
    /// A partition number outside `0..partition_count`.
    #[error("partition {partition} does not exist: the store has {partition_count}")]
    PartitionOutOfRange {
        /// The requested partition.
        partition: Partition,
        /// How many the store has.
        partition_count: u32,
    },
    /// The store was created with another partition count than the one asked for.
    #[error("the store has {stored} partitions, not {requested}: the count is fixed at creation")]
    PartitionCountMismatch {
        /// The count recorded in the store.
        stored: u32,
        /// The count asked for when opening.
        requested: u32,
    },
    /// A partition count of zero.
    #[error("a store needs at least one partition")]
    InvalidPartitionCount,
    /// No store exists at the URL, and the options did not allow creating one.
    #[error("no store at {url}: create it first (annals init)")]
    StoreNotFound {
        /// The URL (with any password removed).
        url: String,
    },
    /// A store URL that annals cannot open.
    #[error("cannot open {url:?}: {reason}")]
    InvalidUrl {
        /// The URL (with any password removed).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A consumer group name that is empty, longer than 200 bytes, or holds characters
    /// other than `[A-Za-z0-9_.:@-]`.
    #[error("invalid group name {name:?}: 1-200 bytes of [A-Za-z0-9_.:@-]")]
    InvalidGroupName {
        /// The name given.
        name: String,
    },
    /// No consumer group of that name has ever joined.
    #[error("no consumer group {group:?}")]
    GroupNotFound {
        /// The group.
        group: String,
    },
    /// An operation that needs an empty group (resetting offsets) while members are live.
    #[error("group {group:?} has {members} live member(s): stop them first")]
    GroupHasMembers {
        /// The group.
        group: String,
        /// Live members.
        members: u64,
    },
    /// A member lost a partition (a rebalance gave it to another member, or its session
    /// expired) and tried to commit it: the commit and its read-model writes rolled back.
    #[error("group {group:?}: this member no longer owns partition {partition} (fenced)")]
    Fenced {
        /// The group.
        group: String,
        /// The partition.
        partition: Partition,
    },
    /// An explicit offset past a partition's high watermark.
    #[error("offset {offset} is past the end of partition {partition} (next offset {high_watermark})")]
    OffsetOutOfRange {
        /// The partition.
        partition: Partition,
        /// The offset asked for.
        offset: Offset,
        /// The partition's next offset.
        high_watermark: Offset,
    },
    /// No dead letter with that id.
    #[error("no dead letter {id}")]
    DeadLetterNotFound {
        /// The id asked for.
        id: i64,
    },
    /// A read-model column read as a type it does not hold.
    #[error("column {index}: expected {expected}, found {found}")]
    ColumnType {
        /// The column's index (0-based).
        index: usize,
        /// The Rust type asked for.
        expected: &'static str,
        /// What the column held.
        found: &'static str,
    },
    /// A feature this store's engine does not have (SQL read models, and so
    /// projections, need SQLite or PostgreSQL, not `memory:`).
    #[error("{what} needs a SQLite or PostgreSQL store")]
    Unsupported {
        /// The feature.
        what: &'static str,
    },
    /// A filter index name that is not `category` or `event-type`.
    #[error("no filter index is named {name:?}: `category` or `event-type`")]
    InvalidFilterIndex {
        /// The name given.
        name: String,
    },
    /// A timer that cannot be scheduled (see [`schedule`](crate::schedule)).
    #[error("invalid timer: {reason}")]
    InvalidTimer {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An append to a follower: only its leader takes writes.
    #[error("this store is a read-only replica of {leader}: append there")]
    ReadOnlyReplica {
        /// The leader's URL.
        leader: String,
    },
    /// Replicated records for a store that is not a follower (any more): promoted, it
    /// takes appends, and records shipped from its old leader would fork its log.
    #[error("this store is a leader: it takes appends, not records shipped from another store")]
    NotAReplica,
    /// Replicated records that do not continue the follower's log exactly (a gap, an
    /// overlap, or records of several partitions).
    #[error(
        "replicated records for partition {partition} start at offset {first}, but the log's next offset is {next}"
    )]
    ReplicationGap {
        /// The partition.
        partition: Partition,
        /// The first offset received.
        first: Offset,
        /// The follower's next offset.
        next: Offset,
    },
    /// Replicated records that cannot be the leader's log as shipped: they end inside
    /// an append, or name a stream of another partition.
    #[error("replicated records for partition {partition} at offset {offset}: {reason}")]
    InvalidReplicatedRecords {
        /// The partition.
        partition: Partition,
        /// The offset of the record at fault.
        offset: Offset,
        /// What is wrong.
        reason: &'static str,
    },
    /// A partition ended elsewhere than a truncation expected: it changed while the
    /// truncation was being prepared. Nothing was removed.
    #[error(
        "partition {partition} ends at offset {actual}, not {expected}: it changed meanwhile; nothing was removed"
    )]
    PartitionMoved {
        /// The partition.
        partition: Partition,
        /// Where the truncation expected it to end.
        expected: Offset,
        /// Where it ends.
        actual: Offset,
    },
    /// A handler (a projection's, a consumer's, a saga's) failed; the error it gave is
    /// the source. Build one with [`Error::handler`].
    #[error("handler failed: {0}")]
    Handler(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A read-model transaction's SQL ended the transaction it ran in (`COMMIT` or
    /// `ROLLBACK`): [`Db::transaction`](crate::readmodel::Db::transaction) commits and
    /// rolls back itself.
    #[error("a read-model transaction ended itself with COMMIT or ROLLBACK; return Ok or an error instead")]
    TransactionEnded,
    /// A read-model write transaction on SQLite awaited something other than its own
    /// statements for longer than the store allows
    /// ([`StoreOptions::transaction_await_limit`](crate::StoreOptions::transaction_await_limit)),
    /// holding up every other writer of the store; it was rolled back.
    #[error("a write transaction awaited something other than its statements for more than {limit:?} and was rolled back, so that the store's other writers could go on; do slow work outside it (an at-least-once consumer)")]
    TransactionAwaited {
        /// The store's limit.
        limit: std::time::Duration,
    },
    /// The store's schema is newer than this build of annals, or was changed by hand;
    /// the migrator's error is the source.
    #[error("cannot migrate the store's schema: {0}")]
    Migration(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database engine failed: `kind` says how, and the driver's own error is the
    /// source.
    #[error("{kind}: {source}")]
    Engine {
        /// What kind of failure it was.
        kind: EngineFailure,
        /// The driver's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The operating system refused something outside the database (starting a
    /// writer thread).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The store was closed while the operation was in flight.
    #[error("the store is closed")]
    Closed,
}

impl From<crate::stream::InvalidStreamId> for Error {
    fn from(invalid: crate::stream::InvalidStreamId) -> Self {
        Error::InvalidStreamId {
            id: invalid.id,
            reason: invalid.reason,
        }
    }
}

impl Error {
    /// A handler's failure, keeping `error` as its source: anything that converts into
    /// a boxed error, so a user's own error type or just a message.
    ///
    /// ```
    /// let failed = annals::Error::handler("the mail server refused");
    /// assert_eq!(failed.to_string(), "handler failed: the mail server refused");
    /// ```
    pub fn handler(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Handler(error.into())
    }

    /// Whether the failure may pass by itself, so that the same call can succeed
    /// later: the database could not be reached, a connection broke, the disk or the
    /// database was busy. Bad input, a refused append, a constraint the data breaks, a
    /// missing store, a schema newer than this build or a closed store are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Engine { kind, .. } => matches!(kind, EngineFailure::Unavailable | EngineFailure::Busy),
            Error::Io(_) => true,
            _ => false,
        }
    }

    /// The driver's error of an engine failure, if it is an `E`.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn driver<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            Error::Engine { source, .. } => source.downcast_ref(),
            _ => None,
        }
    }

    /// A short, stable code for this error (`wrong_expected_version`, `bad_request`, …),
    /// the one the HTTP API and `--json` output carry.
    pub fn code(&self) -> &'static str {
        match self {
            Error::WrongExpectedVersion { .. } => "wrong_expected_version",
            Error::CommandIdConflict { .. } => "command_id_conflict",
            Error::StreamDeleted { .. } => "stream_deleted",
            Error::SubjectErased { .. } => "subject_erased",
            Error::PayloadTooLarge { .. } | Error::AppendTooLarge { .. } => "payload_too_large",
            Error::JsonTooDeep { .. } => "json_too_deep",
            Error::PartitionOutOfRange { .. }
            | Error::StoreNotFound { .. }
            | Error::StreamNotFound { .. }
            | Error::GroupNotFound { .. }
            | Error::DeadLetterNotFound { .. } => "not_found",
            Error::GroupHasMembers { .. } => "group_has_members",
            Error::ReadOnlyReplica { .. } => "read_only_replica",
            Error::ReplicationGap { .. } | Error::InvalidReplicatedRecords { .. } | Error::PartitionMoved { .. } => {
                "replication_gap"
            }
            Error::NotAReplica => "not_a_replica",
            Error::Fenced { .. } => "fenced",
            Error::Unsupported { .. } => "unsupported",
            Error::ColumnType { .. }
            | Error::Crypto { .. }
            | Error::Handler(_)
            | Error::TransactionEnded
            | Error::TransactionAwaited { .. } => "internal",
            Error::InvalidStreamId { .. }
            | Error::InvalidCategory { .. }
            | Error::DuplicateEventId { .. }
            | Error::EmptyAppend
            | Error::TooManyEvents { .. }
            | Error::InvalidEventType { .. }
            | Error::ReservedEventType { .. }
            | Error::InvalidSubject { .. }
            | Error::InvalidPersonalData { .. }
            | Error::InvalidRetention { .. }
            | Error::ReservedMetadataKey { .. }
            | Error::InvalidDomainEvent { .. }
            | Error::InvalidJson(_)
            | Error::PartitionCountMismatch { .. }
            | Error::InvalidPartitionCount
            | Error::InvalidUrl { .. }
            | Error::InvalidGroupName { .. }
            | Error::InvalidTimer { .. }
            | Error::InvalidFilterIndex { .. }
            | Error::OffsetOutOfRange { .. } => "bad_request",
            Error::Migration(_) | Error::Engine { .. } | Error::Io(_) => "internal",
            Error::Closed => "unavailable",
        }
    }
}

/// How the database engine failed (see [`Error::Engine`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineFailure {
    /// The database could not be reached, or the connection or the disk failed; it
    /// may pass.
    Unavailable,
    /// The database was busy or locked, or a transaction was rolled back to let
    /// another through; it may pass.
    Busy,
    /// A constraint the store did not expect refused the data.
    Constraint,
    /// Anything else: a bug, a schema changed by hand, data the store cannot read.
    Other,
}

impl std::fmt::Display for EngineFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineFailure::Unavailable => "database unavailable",
            EngineFailure::Busy => "database busy",
            EngineFailure::Constraint => "database constraint violated",
            EngineFailure::Other => "database error",
        })
    }
}

/// How a database error code fails: PostgreSQL's SQLSTATE classes 08 (connection), 57
/// (operator intervention: a shutdown, a terminated connection) and 58 (system error)
/// are `Unavailable`, 40 (serialization failure, deadlock) and 53 (insufficient
/// resources) `Busy`; SQLite's results as [`sqlite_failure`] sorts them.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn failure_of(error: &dyn sqlx::error::DatabaseError) -> EngineFailure {
    if !matches!(error.kind(), sqlx::error::ErrorKind::Other) {
        return EngineFailure::Constraint;
    }
    let Some(code) = error.code() else {
        return EngineFailure::Other;
    };
    #[cfg(feature = "postgres")]
    if error.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() {
        return match code.get(..2) {
            Some("08" | "57" | "58") => EngineFailure::Unavailable,
            Some("40" | "53") => EngineFailure::Busy,
            _ => EngineFailure::Other,
        };
    }
    code.parse::<i32>().map_or(EngineFailure::Other, sqlite_failure)
}

/// How a SQLite result code fails. `Busy`: busy, locked, aborted (a transaction rolled
/// back to let another through), the locking protocol, a schema that changed under a
/// statement, and a read-only database that could not yet recover or lock its WAL
/// (primary codes 4, 5, 6, 15, 17; extended 264 and 520). `Unavailable`: out of
/// memory, interrupted, I/O, a full disk, a file that cannot be opened (7, 9, 10, 13,
/// 14). A constraint (19) is `Constraint`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn sqlite_failure(extended: i32) -> EngineFailure {
    match (extended & 0xff, extended) {
        (4 | 5 | 6 | 15 | 17, _) | (8, 264 | 520) => EngineFailure::Busy,
        (7 | 9 | 10 | 13 | 14, _) => EngineFailure::Unavailable,
        (19, _) => EngineFailure::Constraint,
        _ => EngineFailure::Other,
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        let kind = match &error {
            sqlx::Error::Database(database) => failure_of(database.as_ref()),
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => EngineFailure::Unavailable,
            _ => EngineFailure::Other,
        };
        Error::Engine {
            kind,
            source: Box::new(error),
        }
    }
}

#[cfg(feature = "sqlite")]
impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Self {
        let kind = match &error {
            rusqlite::Error::SqliteFailure(failure, _) => sqlite_failure(failure.extended_code),
            _ => EngineFailure::Other,
        };
        Error::Engine {
            kind,
            source: Box::new(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "sqlite")]
    fn sqlite(code: std::ffi::c_int) -> Error {
        Error::from(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None))
    }

    #[test]
    #[cfg(feature = "sqlite")]
    fn sqlite_failures_say_whether_they_pass() {
        use rusqlite::ffi;
        let kind = |error: &Error| match error {
            Error::Engine { kind, .. } => *kind,
            other => panic!("not an engine error: {other:?}"),
        };
        for (code, expected, transient) in [
            (ffi::SQLITE_BUSY, EngineFailure::Busy, true),
            (ffi::SQLITE_LOCKED, EngineFailure::Busy, true),
            (ffi::SQLITE_IOERR, EngineFailure::Unavailable, true),
            (ffi::SQLITE_FULL, EngineFailure::Unavailable, true),
            (ffi::SQLITE_CANTOPEN, EngineFailure::Unavailable, true),
            (ffi::SQLITE_ABORT, EngineFailure::Busy, true),
            (ffi::SQLITE_PROTOCOL, EngineFailure::Busy, true),
            (ffi::SQLITE_SCHEMA, EngineFailure::Busy, true),
            (ffi::SQLITE_READONLY_CANTLOCK, EngineFailure::Busy, true),
            (ffi::SQLITE_NOMEM, EngineFailure::Unavailable, true),
            (ffi::SQLITE_INTERRUPT, EngineFailure::Unavailable, true),
            (ffi::SQLITE_CONSTRAINT, EngineFailure::Constraint, false),
            (ffi::SQLITE_CONSTRAINT_UNIQUE, EngineFailure::Constraint, false),
            (ffi::SQLITE_READONLY, EngineFailure::Other, false),
            (ffi::SQLITE_CORRUPT, EngineFailure::Other, false),
        ] {
            let error = sqlite(code);
            assert_eq!((kind(&error), error.is_transient()), (expected, transient), "{code}");
            assert_eq!(error.code(), "internal");
            assert!(
                error.driver::<rusqlite::Error>().is_some(),
                "the driver's error is the source"
            );
        }
        let not_a_column = Error::from(rusqlite::Error::InvalidColumnIndex(3));
        assert!(!not_a_column.is_transient());
    }

    #[test]
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    fn a_lost_connection_passes_and_a_bad_configuration_does_not() {
        assert!(Error::from(sqlx::Error::PoolTimedOut).is_transient());
        assert!(Error::from(sqlx::Error::Io(std::io::Error::other("reset"))).is_transient());
        assert!(!Error::from(sqlx::Error::RowNotFound).is_transient());
        assert!(!Error::from(sqlx::Error::Configuration("bad".into())).is_transient());
    }
}
