//! The read queries, written once for both SQL engines. They use only what SQLite and
//! PostgreSQL share: `$n` placeholders (SQLite binds them by position), `CAST(… AS
//! text)`, quoted `"offset"`. Each engine decodes rows into its own types.

/// The columns of a record, in the order the engines' row decoders read them.
const RECORD_COLUMNS: &str = r#"partition, "offset", stream_id, version, event_id, event_type,
    CAST(payload AS text), CAST(metadata AS text), recorded_at"#;

/// `$1` stream, `$2` first version, `$3` limit.
pub(crate) fn read_stream() -> String {
    format!(
        "SELECT {RECORD_COLUMNS} FROM annals_events WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3"
    )
}

/// `$1` stream, `$2` first version: the columns of an `EventView`, in version order,
/// with the metadata to find the schema version in.
pub(crate) const FOLD_STREAM: &str = "SELECT version, event_type, CAST(payload AS text), CAST(metadata AS text) \
    FROM annals_events WHERE stream_id = $1 AND version >= $2 ORDER BY version";

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
