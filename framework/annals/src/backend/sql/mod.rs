//! What both SQL engines share: the snapshot log ([`snapshots`]) and the read queries,
//! written once. They use only what SQLite and
//! PostgreSQL share: `$n` placeholders (SQLite binds them by position), `CAST(… AS
//! text)`, quoted `"offset"`. Each engine decodes rows into its own types.

// Without a SQL engine only the snapshot statements are reachable (through read-model
// transactions, which such a build cannot open).
#![cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]

pub(crate) mod groups;
pub(crate) mod snapshots;

/// The columns of a record, in the order the engines' row decoders read them.
const RECORD_COLUMNS: &str = r#"partition, "offset", stream_id, version, event_id, event_type,
    CAST(payload AS text), CAST(metadata AS text), recorded_at, last_in_append"#;

/// `$1` stream, `$2` first version, `$3` limit.
pub(crate) fn read_stream() -> String {
    format!(
        "SELECT {RECORD_COLUMNS} FROM annals_events WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3"
    )
}

/// `$1` stream, `$2` first version, `$3` limit: the columns of an `EventView`, in
/// version order, with the metadata to find the schema version in.
pub(crate) const FOLD_STREAM: &str = "SELECT version, event_type, CAST(payload AS text), CAST(metadata AS text) \
    FROM annals_events WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3";

/// The same on PostgreSQL, which keeps the schema version in a column of its own.
pub(crate) const FOLD_STREAM_VERSIONED: &str = "SELECT version, event_type, CAST(payload AS text), schema_version \
    FROM annals_events WHERE stream_id = $1 AND version >= $2 ORDER BY version";

/// `$1` partition, `$2` first offset, `$3` limit.
pub(crate) fn read_partition() -> String {
    format!(
        r#"SELECT {RECORD_COLUMNS} FROM annals_events WHERE partition = $1 AND "offset" >= $2 ORDER BY "offset" LIMIT $3"#
    )
}

/// `$1` stream.
pub(crate) const STREAM_VERSION: &str = "SELECT max(version) FROM annals_events WHERE stream_id = $1";

/// One row per partition, in order: its next offset, NULL when it is empty. Each is
/// one index seek, whatever the log's size.
pub(crate) const HIGH_WATERMARKS: &str = concat!(
    "SELECT ",
    next_offset_of_p!(),
    " FROM annals_partitions p ORDER BY p.partition"
);

/// Streams in id order: stream id, partition, version. The bounds of `range` come
/// first (`$1` …), the limit last.
pub(crate) fn list_streams(range: &super::StreamRange) -> String {
    format!(
        "SELECT e.stream_id, e.partition, \
                (SELECT max(v.version) FROM annals_events v WHERE v.stream_id = e.stream_id) \
         FROM annals_events e WHERE e.version = 1{} ORDER BY e.stream_id LIMIT ${}",
        range.sql_conditions("e.stream_id"),
        range.len() + 1
    )
}

/// `$1` command id: stream id, partition, first and last offset, first and last version.
pub(crate) const COMMAND_OUTCOME: &str =
    "SELECT stream_id, partition, first_offset, last_offset, first_version, last_version
    FROM annals_command_ids WHERE command_id = $1";

/// The store's role: the leader's URL (NULL on a leader) and the leader epoch.
pub(crate) const REPLICA: &str = "SELECT leader_url, leader_epoch FROM annals_store";

/// `$1` leader URL, `$2` the leader's epoch: follow it, the epoch rising to its.
pub(crate) const FOLLOW: &str = "UPDATE annals_store SET leader_url = $1, \
    leader_epoch = CASE WHEN leader_epoch > $2 THEN leader_epoch ELSE $2 END \
    RETURNING leader_url, leader_epoch";

/// Become a leader at the next epoch.
pub(crate) const PROMOTE: &str = "UPDATE annals_store SET leader_url = NULL, leader_epoch = leader_epoch + 1 \
    RETURNING leader_url, leader_epoch";

/// `$1` partition, `$2` offset (bound by name on SQLite, where `$2` comes first in
/// one): what a follower's truncation removes or moves back, in one transaction, in
/// this order. Snapshots that folded a removed record go first,
/// while the records still say which they are.
///
/// A transactional group (a projection, or a group whose commit mode is unknown) that
/// had handled removed records has their effects in its read model: its partition stops,
/// for an operator to rebuild the group, rather than apply the records shipped in their
/// place on top. Other groups handle those records at least once.
pub(crate) const TRUNCATE: [&str; 6] = [
    r#"DELETE FROM annals_snapshots WHERE EXISTS (
        SELECT 1 FROM annals_events e
        WHERE e.partition = $1 AND e."offset" >= $2
          AND e.stream_id = annals_snapshots.stream_id AND e.version <= annals_snapshots.version)"#,
    "DELETE FROM annals_command_ids WHERE partition = $1 AND first_offset >= $2",
    r#"DELETE FROM annals_dead_letters WHERE partition = $1 AND "offset" >= $2"#,
    "UPDATE annals_group_offsets SET paused = 1, \
         stopped_reason = 'records this group had handled were removed by a truncation: rebuild the group' \
     WHERE partition = $1 AND committed > $2 AND EXISTS (SELECT 1 FROM annals_groups g \
         WHERE g.group_name = annals_group_offsets.group_name \
           AND coalesce(g.commit_mode, 'transactional') = 'transactional')",
    "UPDATE annals_group_offsets SET committed = $2 WHERE partition = $1 AND committed > $2",
    r#"DELETE FROM annals_events WHERE partition = $1 AND "offset" >= $2"#,
];
