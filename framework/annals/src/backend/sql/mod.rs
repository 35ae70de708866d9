//! What both SQL engines share: the log's statements (`log/*.sql`), the snapshot log
//! ([`snapshots`]) and consumer groups ([`groups`]), each written once. They use only what SQLite and
//! PostgreSQL share: `$n` placeholders (SQLite binds them by position), `CAST(… AS
//! text)`, quoted `"offset"`. Each engine decodes rows into its own types.

// Without a SQL engine only the snapshot statements are reachable (through read-model
// transactions, which such a build cannot open).
#![cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]

pub(crate) mod groups;
pub(crate) mod snapshots;

macro_rules! statement {
    ($name:literal) => {
        include_str!(concat!("log/", $name, ".sql"))
    };
}

/// `$1` stream, `$2` first version, `$3` limit: records.
pub(crate) const READ_STREAM: &str = statement!("read_stream");
/// `$1` partition, `$2` first offset, `$3` limit: records.
pub(crate) const READ_PARTITION: &str = statement!("read_partition");
/// `$1` stream, `$2` first version, `$3` limit: the columns of an `EventView`.
#[cfg(feature = "sqlite")]
pub(crate) const FOLD_STREAM: &str = statement!("fold_stream");
/// The same on PostgreSQL, which keeps the schema version in a column of its own,
/// without a limit, and in no particular order.
#[cfg(feature = "postgres")]
pub(crate) const FOLD_STREAM_VERSIONED: &str = statement!("fold_stream_versioned");
/// As `FOLD_STREAM_VERSIONED`, in version order.
#[cfg(feature = "postgres")]
pub(crate) const FOLD_STREAM_IN_ORDER: &str = statement!("fold_stream_in_order");
/// `$1` stream: its version.
pub(crate) const STREAM_VERSION: &str = statement!("stream_version");
/// The next offset of partition `p.partition`, as an expression over
/// `annals_partitions p`: NULL when it is empty.
pub(crate) const NEXT_OFFSET_OF_P: &str = statement!("next_offset_of_p");
/// `$1` partition: its next offset, NULL when it is empty.
pub(crate) const HIGH_WATERMARK: &str = statement!("high_watermark");
/// Every partition's next offset, in partition order.
pub(crate) const HIGH_WATERMARKS: &str = statement!("high_watermarks");
/// `$1` command id: the outcome of the append made with it.
pub(crate) const COMMAND_OUTCOME: &str = statement!("command_outcome");
/// `$1` partition, `$2` due by (µs), `$3` limit: pending timers, soonest first.
const DUE_TIMERS: &str = statement!("due_timers");
/// `$1` partition: when its soonest pending timer is due.
const NEXT_TIMER: &str = statement!("next_timer");

/// The pending timers of `partition` due by `until` (µs), soonest first, as the
/// engine's index `annals_timers` holds them (see `Backend::due_timers`).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) async fn due_timers(
    db: &crate::readmodel::Db,
    partition: crate::position::Partition,
    until: i64,
    limit: usize,
) -> crate::error::Result<Vec<(crate::stream::StreamId, i64)>> {
    let params = vec![
        i64::from(partition.0).into(),
        until.into(),
        super::sql_int(limit).into(),
    ];
    let rows = db.query(DUE_TIMERS, params).await?;
    rows.iter()
        .map(|row| Ok((crate::stream::StreamId::trusted(row.get(0)?), row.get(1)?)))
        .collect()
}

/// When the soonest pending timer of `partition` is due (µs).
pub(crate) async fn next_timer(
    db: &crate::readmodel::Db,
    partition: crate::position::Partition,
) -> crate::error::Result<Option<i64>> {
    let rows = db.query(NEXT_TIMER, vec![i64::from(partition.0).into()]).await?;
    Ok(rows.first().map(|row| row.get::<Option<i64>>(0)).transpose()?.flatten())
}

/// Where the record with event id `id` is, if the store holds one.
pub(crate) async fn position_of_event(
    db: &crate::readmodel::Db,
    id: uuid::Uuid,
) -> crate::error::Result<Option<(crate::position::Partition, crate::position::Offset)>> {
    // SQLite keeps event ids as 16 bytes, PostgreSQL as uuid.
    let (sql, param) = match db.engine() {
        crate::readmodel::Engine::Postgres => (
            "SELECT partition, \"offset\" FROM annals_events WHERE event_id = CAST($1 AS uuid)",
            id.to_string().into(),
        ),
        _ => (
            "SELECT partition, \"offset\" FROM annals_events WHERE event_id = $1",
            id.as_bytes().to_vec().into(),
        ),
    };
    let rows = db.query(sql, vec![param]).await?;
    let Some(row) = rows.first() else { return Ok(None) };
    Ok(Some((
        crate::position::Partition(row.get::<u32>(0)?),
        crate::position::Offset(row.get::<u64>(1)?),
    )))
}

/// The version of `stream`'s latest deletion record, and whether it was hard.
pub(crate) async fn deletion(
    db: &crate::readmodel::Db,
    stream: &crate::stream::StreamId,
) -> crate::error::Result<Option<(crate::position::Version, bool)>> {
    let rows = db.query(statement!("deletion"), vec![stream.as_str().into()]).await?;
    let Some(row) = rows.first() else { return Ok(None) };
    Ok(Some((
        crate::position::Version(row.get::<u64>(0)?),
        row.get::<bool>(1)?,
    )))
}

/// The version below which the scavenger truncated `stream`.
pub(crate) async fn truncated_before(
    db: &crate::readmodel::Db,
    stream: &crate::stream::StreamId,
) -> crate::error::Result<Option<crate::position::Version>> {
    let rows = db
        .query(statement!("truncated_before"), vec![stream.as_str().into()])
        .await?;
    rows.first()
        .map(|row| row.get::<u64>(0).map(crate::position::Version))
        .transpose()
}

/// The first version of `stream` written at or after `since_us` (µs since the epoch).
pub(crate) async fn first_version_since(
    db: &crate::readmodel::Db,
    dialect: &groups::Dialect,
    stream: &crate::stream::StreamId,
    since_us: i64,
) -> crate::error::Result<Option<crate::position::Version>> {
    let statement = dialect.fill(statement!("first_version_since"));
    let rows = db
        .query(statement, vec![stream.as_str().into(), since_us.into()])
        .await?;
    let first = rows.first().map(|row| row.get::<Option<u64>>(0)).transpose()?.flatten();
    Ok(first.map(crate::position::Version))
}

/// The store's role.
pub(crate) const REPLICA: &str = statement!("replica");
/// `$1` leader URL, `$2` the leader's epoch.
pub(crate) const FOLLOW: &str = statement!("follow");
/// Become a leader at the next epoch.
pub(crate) const PROMOTE: &str = statement!("promote");

/// Streams in id order: stream id, partition, version. The bounds of `range` come
/// first (`$1` …), the limit last.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn list_streams(range: &super::StreamRange) -> String {
    statement!("list_streams")
        .replace("{range}", &range.sql_conditions("e.stream_id"))
        .replace("{limit}", &(range.len() + 1).to_string())
}

/// Records of one partition in an offset range with one category (`by_category`) or
/// one event type, read through the index on that key: `$1` partition, `$2` the
/// category or event type, `$3` first offset, `$4` end offset (not included), then,
/// for a category, `$5 …` the event types allowed (`types` of them, any when none),
/// and the limit last. `category` is the engine's expression for a stream id's
/// category, the one its index is built on.
pub(crate) fn read_filtered(category: &str, by_category: bool, types: usize) -> String {
    let key = if by_category { category } else { "event_type" };
    let types = if by_category { types } else { 0 };
    let allowed = if types == 0 {
        String::new()
    } else {
        let placeholders: Vec<String> = (5..5 + types).map(|i| format!("${i}")).collect();
        format!(" AND event_type IN ({})", placeholders.join(", "))
    };
    statement!("read_filtered")
        .replace("{key}", key)
        .replace("{types}", &allowed)
        .replace("{limit}", &(5 + types).to_string())
}

/// Builds a filter index (SQLite; PostgreSQL adds `CONCURRENTLY`).
pub(crate) fn create_filter_index(index: crate::group::FilterIndex, category: &str, concurrently: bool) -> String {
    format!(
        "CREATE INDEX {}IF NOT EXISTS {} ON annals_events ({})",
        if concurrently { "CONCURRENTLY " } else { "" },
        index.table_index(),
        index.columns(category)
    )
}

/// Drops a filter index.
pub(crate) fn drop_filter_index(index: crate::group::FilterIndex, concurrently: bool) -> String {
    format!(
        "DROP INDEX {}IF EXISTS {}",
        if concurrently { "CONCURRENTLY " } else { "" },
        index.table_index()
    )
}

/// `$1` partition, `$2` offset: the statements of a follower's truncation, in order, to
/// run in one transaction (see `log/truncate.sql`).
pub(crate) fn truncate() -> impl Iterator<Item = &'static str> {
    statement!("truncate").split(";\n")
}
