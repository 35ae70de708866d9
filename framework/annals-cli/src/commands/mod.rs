//! One module per `annals` command.

pub(crate) mod append;
pub(crate) mod bench;
pub(crate) mod compact;
pub(crate) mod erase;
pub(crate) mod follow;
pub(crate) mod groups;
pub(crate) mod indexes;
pub(crate) mod init;
pub(crate) mod kafka;
pub(crate) mod read;
pub(crate) mod retention;
pub(crate) mod serve;
pub(crate) mod stats;
pub(crate) mod streams;
pub(crate) mod tail;
pub(crate) mod timers;

use annals::{RecordedEvent, Store, StoreOptions};

use crate::output::{clip, table};

/// The key database `--keys` names, for every store this process opens.
static KEYS: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Sets the key database (`--keys`), once, before any store is opened.
pub(crate) fn use_keys(keys: Option<String>) {
    let _ = KEYS.set(keys);
}

/// The options of the store at `db`, with the key database `--keys` names.
pub(crate) fn store_options(db: &str) -> annals::Result<StoreOptions> {
    let options = StoreOptions::from_url(db)?;
    Ok(match KEYS.get().and_then(Option::as_deref) {
        Some(keys) => options.keys(keys),
        None => options,
    })
}

/// Opens the store at `db`, which must exist: only `init` (and `bench`) create one, so
/// a mistyped path is an error rather than a new empty store.
pub(crate) async fn open_existing(db: &str) -> annals::Result<Store> {
    store_options(db)?.create_if_missing(false).open().await
}

/// A stream's events as `--json` prints them. Records are serialised as they are, not
/// through a `Value`, so payloads keep the exact JSON text they were appended with.
#[derive(serde::Serialize)]
pub(crate) struct StreamEvents<'a> {
    pub(crate) stream: &'a annals::StreamId,
    pub(crate) version: annals::Version,
    pub(crate) events: &'a [RecordedEvent],
}

/// A partition's records as `--json` prints them.
#[derive(serde::Serialize)]
pub(crate) struct Fetched<'a> {
    pub(crate) partition: annals::Partition,
    pub(crate) events: &'a [RecordedEvent],
    pub(crate) next_offset: annals::Offset,
    pub(crate) high_watermark: annals::Offset,
}

/// Records as a human table.
pub(crate) fn records_table(records: &[RecordedEvent]) -> String {
    table(
        [
            "partition",
            "offset",
            "stream",
            "version",
            "type",
            "recorded at",
            "data",
        ],
        records.iter().map(|r| {
            [
                r.partition.to_string(),
                r.offset.to_string(),
                r.stream.to_string(),
                r.version.to_string(),
                r.event_type.clone(),
                r.recorded_at.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
                clip(r.payload.get(), 60),
            ]
        }),
    )
}
