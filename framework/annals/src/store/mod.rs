//! The store users open: the [`EventStore`] API, and the [`Store`] handle that checks
//! every append once before any engine sees it. `Store` has the API's methods itself,
//! so a program that holds one needs no trait in scope; `Arc<dyn EventStore>` serves
//! code that takes any store.
//!
//! ```
//! use annals::{AppendRequest, ExpectedVersion, NewEvent, Offset, Partition, Store, StreamId, Version};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> annals::Result<()> {
//! let store = Store::open("memory:").await?;
//! let order = StreamId::new("order-42")?;
//! let outcome = store
//!     .append(AppendRequest::new(order.clone(), ExpectedVersion::NoStream)
//!         .event(NewEvent::json("OrderPlaced", &serde_json::json!({"lines": 2}))?))
//!     .await?;
//! assert_eq!((outcome.partition, outcome.first_offset, outcome.last_version), (Partition(0), Offset(0), Version(1)));
//! assert_eq!(store.read_stream(&order, 1, 100).await?.len(), 1);
//! # Ok(()) }
//! ```

mod browse;
pub(crate) mod lifecycle;
mod personal;
mod replica;
mod retention;
mod subscribe;

pub use browse::TypedRecords;
pub(crate) use lifecycle::starts_over;
pub use lifecycle::{Deletion, STREAM_DELETED};
pub(crate) use retention::truncation_of;
pub use retention::{
    Retention, RetentionScope, ScavengeOptions, Scavenged, Scavenger, RETENTION_SET, STREAM_TRUNCATED,
};

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use uuid::Uuid;

use crate::backend::{Backend, PreparedAppend, PreparedEvent};
use crate::error::{Error, Result};
use crate::log::{AppendOutcome, Replica, StreamInfo, Visitor};
use crate::options::{Limits, StoreOptions};
use crate::partitioner::partition_for;
use crate::position::{ExpectedVersion, Offset, Partition, Version};
use crate::record::{Metadata, NewEvent, RecordedEvent, MAX_EVENT_TYPE_LEN, SCHEMA_VERSION_KEY};
use crate::stream::{is_category, StreamId};

/// One append: events for one stream, checked against an expected version and,
/// with a command id, applied at most once.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// The stream to append to.
    pub stream: StreamId,
    /// The version the stream must be at.
    pub expected: ExpectedVersion,
    /// Idempotency key: an append with a known command id is not applied again.
    pub command_id: Option<Uuid>,
    /// The events, stored contiguously in this order.
    pub events: Vec<NewEvent>,
}

impl AppendRequest {
    /// An append to `stream` with no events yet.
    pub fn new(stream: StreamId, expected: ExpectedVersion) -> Self {
        AppendRequest {
            stream,
            expected,
            command_id: None,
            events: Vec::new(),
        }
    }

    /// Sets the command id.
    pub fn command_id(mut self, command_id: Uuid) -> Self {
        self.command_id = Some(command_id);
        self
    }

    /// Adds one event.
    pub fn event(mut self, event: NewEvent) -> Self {
        self.events.push(event);
        self
    }
}

/// The event store API, the same for every engine and object-safe: an
/// `Arc<dyn EventStore>` works wherever a store is needed.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// How many partitions the store has (fixed at creation).
    fn partition_count(&self) -> u32;

    /// Appends events to one stream, atomically (all or none, contiguous in one
    /// partition), checked against the expected version, at most once per command id.
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome>;

    /// Up to `limit` events of `stream` from version `from_version` (1-based) on.
    /// An unknown stream reads as empty; a deleted one from after its deletion record
    /// on, and a hard-deleted one answers [`Error::StreamDeleted`].
    async fn read_stream(&self, stream: &StreamId, from_version: Version, limit: usize) -> Result<Vec<RecordedEvent>>;

    /// Calls `visit` with each event of `stream` from version `from_version` on, in
    /// order: the aggregate load path, which builds no records. An error from `visit`
    /// stops the read and is returned.
    ///
    /// The default reads pages with [`read_stream`](EventStore::read_stream); the
    /// engines override it (PostgreSQL shows the rows as they arrive, putting the few
    /// that come early back in order; SQLite reads pages of 1,000 rows on its C API).
    async fn fold_stream(&self, stream: &StreamId, from_version: Version, visit: &mut Visitor<'_>) -> Result<()> {
        const PAGE: usize = 1_000;
        let mut next = from_version.max(Version(1));
        loop {
            let records = self.read_stream(stream, next, PAGE).await?;
            for record in &records {
                record.view(&mut *visit)?;
                next = record.version + 1;
            }
            if records.len() < PAGE {
                return Ok(());
            }
        }
    }

    /// The stream's version: its number of events, 0 when it does not exist.
    async fn stream_version(&self, stream: &StreamId) -> Result<Version>;

    /// Up to `limit` records of `partition` from `from_offset` on, in offset order.
    async fn read_partition(
        &self,
        partition: Partition,
        from_offset: Offset,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// The next offset of every partition, indexed by partition.
    async fn high_watermarks(&self) -> Result<Vec<Offset>>;

    /// Every record of `partition` from `from_offset` on, then new ones as they are
    /// appended; the stream ends only on an error.
    fn subscribe(&self, partition: Partition, from_offset: Offset) -> BoxStream<'static, Result<RecordedEvent>>;

    /// The stream and original outcome (marked duplicate) of the append made with
    /// `command_id`, if there was one: lets a caller skip work a retry would discard.
    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<(StreamId, AppendOutcome)>>;

    /// Streams in id order, optionally of one category, starting after `after`.
    async fn list_streams(
        &self,
        category: Option<&str>,
        limit: usize,
        after: Option<&StreamId>,
    ) -> Result<Vec<StreamInfo>>;

    /// Tells the store that a command begins to wait for its aggregate's turn behind
    /// another command on the same aggregate. Until that command's append is answered
    /// this one cannot append, so a store whose writers gather appends into group
    /// commits does not wait for it meanwhile (see the book's Group commit).
    /// [`Repository`](crate::aggregate::Repository) calls this. A wrapper around another
    /// store should forward it; other implementations keep the default, which does
    /// nothing.
    fn waiting_for_turn(&self) {}
}

/// A store opened from a URL: `memory:`, `sqlite://path` or `postgres://…`.
///
/// Cloning is cheap; clones share the connections and the writer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Box<dyn Backend>,
    /// Where subjects' keys are kept (see [`personal`](crate::personal)).
    keys: Arc<dyn crate::personal::Keys>,
    /// The store whose database holds the keys, when it is not this one.
    keys_home: Option<Store>,
    /// Keys this process sealed with lately.
    write_keys: crate::personal::WriteCache,
    limits: Limits,
    partition_count: u32,
    replica: std::sync::RwLock<Replica>,
    /// `StoreOptions::poll_interval`, if set.
    poll_interval: Option<std::time::Duration>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend_name())
            .field("partition_count", &self.inner.partition_count)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `url` with default options.
    pub async fn open(url: &str) -> Result<Store> {
        StoreOptions::from_url(url)?.open().await
    }

    pub(crate) fn from_backend(
        backend: Box<dyn Backend>,
        limits: Limits,
        poll_interval: Option<std::time::Duration>,
        keys_home: Option<Store>,
        key_cache_ttl: std::time::Duration,
    ) -> Store {
        let partition_count = backend.partition_count();
        let keys = crate::personal::open_keys(match &keys_home {
            Some(home) => home.inner.backend.read_models(),
            None => backend.read_models(),
        });
        Store {
            inner: Arc::new(Inner {
                backend,
                keys,
                keys_home,
                write_keys: crate::personal::WriteCache::new(key_cache_ttl),
                limits,
                partition_count,
                replica: std::sync::RwLock::new(Replica::default()),
                poll_interval,
            }),
        }
    }

    /// Up to `limit` records of `partition` from `from_offset` on; when there are none
    /// yet, waits up to `wait` for the first to be appended (a long poll, woken by the
    /// append itself: in-process, or by `LISTEN/NOTIFY` on PostgreSQL).
    pub async fn fetch(
        &self,
        partition: impl Into<Partition>,
        from_offset: impl Into<Offset>,
        limit: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<RecordedEvent>> {
        let mut records = self.fetch_sealed(partition, from_offset, limit, wait).await?;
        self.reveal(&mut records).await?;
        Ok(records)
    }

    /// [`fetch`](Store::fetch) without revealing personal data: records exactly as
    /// stored, their marked fields sealed. What a follower copies.
    pub async fn fetch_sealed(
        &self,
        partition: impl Into<Partition>,
        from_offset: impl Into<Offset>,
        limit: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<RecordedEvent>> {
        let (partition, from_offset) = (partition.into(), from_offset.into());
        self.check_partition(partition)?;
        subscribe::fetch(self, partition, from_offset, limit, wait).await
    }

    /// Up to `limit` records of `partition` from `from_offset` on that pass `read`'s
    /// filter, and the offset the read covered (see `subscribe::fetch_filtered`).
    pub(crate) async fn fetch_filtered(
        &self,
        partition: Partition,
        from_offset: Offset,
        limit: usize,
        read: &crate::backend::FilteredRead,
        wait: std::time::Duration,
    ) -> Result<(Vec<RecordedEvent>, Offset)> {
        self.check_partition(partition)?;
        let (mut records, covered) = subscribe::fetch_filtered(self, partition, from_offset, limit, read, wait).await?;
        self.reveal(&mut records).await?;
        Ok((records, covered))
    }

    /// Builds a filter index, so that groups filtered by category (or by event type)
    /// read only the records that pass instead of the whole log. Each index costs
    /// every append one more index entry (about a fifth of SQLite's append throughput
    /// for both, measured), so only enable what groups use. Groups pick it up when
    /// their partitions are next assigned.
    ///
    /// Building reads the whole log once. On SQLite appends wait while it builds; on
    /// PostgreSQL it is built `CONCURRENTLY`, and appends go on. Indexes are a store's
    /// own: a follower needs its own, enabled there.
    pub async fn enable_filter_index(&self, index: crate::group::FilterIndex) -> Result<()> {
        self.inner.backend.set_filter_index(index, true).await
    }

    /// Drops a filter index: groups filtered by it read the whole log again from their
    /// next assignment.
    pub async fn disable_filter_index(&self, index: crate::group::FilterIndex) -> Result<()> {
        self.inner.backend.set_filter_index(index, false).await
    }

    /// The filter indexes the store has. The memory engine reads what passes in any
    /// case and reports both.
    pub async fn filter_indexes(&self) -> Result<Vec<crate::group::FilterIndex>> {
        self.inner.backend.filter_indexes().await
    }

    /// The next offset of `partition`: what [`EventStore::high_watermarks`] gives for
    /// it, read alone.
    pub async fn high_watermark(&self, partition: impl Into<Partition>) -> Result<Offset> {
        let partition = partition.into();
        self.check_partition(partition)?;
        self.inner.backend.high_watermark(partition).await
    }

    /// Transactions on the store's database, for SQL read models (see
    /// [`readmodel`](crate::readmodel)). `memory:` stores have none.
    pub fn read_models(&self) -> Result<crate::readmodel::Db> {
        self.inner.backend.read_models().ok_or(Error::Unsupported {
            what: "SQL read models",
        })
    }

    /// The store's consumer groups; `Unsupported` on an engine without them.
    pub(crate) fn groups(&self) -> Result<&dyn crate::backend::Groups> {
        self.inner.backend.groups().ok_or(Error::Unsupported {
            what: "consumer groups",
        })
    }

    /// The snapshot log (see [`snapshot`](crate::snapshot)).
    pub(crate) fn snapshot_log(&self) -> &dyn crate::backend::SnapshotLog {
        self.inner.backend.snapshots()
    }

    /// The engine behind the store: `"memory"`, `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// The limits appends are checked against.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Finishes in-flight appends and closes the store's connections.
    ///
    /// If its future is dropped before it completes (a shutdown deadline, a
    /// `select!`), calling it again finishes the work: the appends queued before the
    /// first call are answered (committed, unless their own checks refuse them) before
    /// the second returns.
    pub async fn close(&self) {
        self.inner.backend.close().await;
    }

    /// Group commits made in this process, and those the engine hears of from others.
    pub(crate) fn commits(&self) -> &crate::coordination::Commits {
        self.inner.backend.commits()
    }

    /// How often a wait on something another process writes looks again.
    pub(crate) fn poll_interval(&self) -> std::time::Duration {
        self.inner
            .poll_interval
            .unwrap_or_else(|| self.inner.backend.poll_interval())
    }

    /// The pending timers of `partition` due by `until` (µs), soonest first.
    pub(crate) async fn due_timers(
        &self,
        partition: Partition,
        until: i64,
        limit: usize,
    ) -> Result<Vec<(StreamId, i64)>> {
        self.check_partition(partition)?;
        self.inner.backend.due_timers(partition, until, limit).await
    }

    /// When the soonest pending timer of `partition` is due (µs).
    pub(crate) async fn next_timer(&self, partition: Partition) -> Result<Option<i64>> {
        self.check_partition(partition)?;
        self.inner.backend.next_timer(partition).await
    }

    /// The end of `partition` as this process last heard of it, without asking the
    /// engine: what its writers committed, or a notification or poll reported.
    pub(crate) fn known_end(&self, partition: Partition) -> Offset {
        self.inner.backend.wakeups().latest(partition)
    }

    fn check_partition(&self, partition: Partition) -> Result<()> {
        if partition >= self.inner.partition_count {
            return Err(Error::PartitionOutOfRange {
                partition,
                partition_count: self.inner.partition_count,
            });
        }
        Ok(())
    }

    /// Checks an append against the limits and turns it into what engines store:
    /// partition chosen, event ids assigned, metadata encoded once.
    fn prepare(&self, request: AppendRequest, own: bool) -> Result<PreparedAppend> {
        let limits = &self.inner.limits;
        let count = request.events.len();
        if count == 0 {
            return Err(Error::EmptyAppend);
        }
        if count > limits.max_events_per_append {
            return Err(Error::TooManyEvents {
                count,
                limit: limits.max_events_per_append,
            });
        }
        let mut events = Vec::with_capacity(count);
        let mut total = 0;
        for (index, event) in request.events.into_iter().enumerate() {
            if event.event_type.is_empty() || event.event_type.len() > MAX_EVENT_TYPE_LEN {
                return Err(Error::InvalidEventType {
                    event_type: event.event_type,
                });
            }
            if !own && event.event_type.starts_with(lifecycle::RESERVED_TYPE_PREFIX) {
                return Err(Error::ReservedEventType {
                    event_type: event.event_type,
                });
            }
            let size = event.payload.get().len();
            if size > limits.max_event_bytes {
                return Err(Error::PayloadTooLarge {
                    index,
                    size,
                    limit: limits.max_event_bytes,
                });
            }
            // The store owns command_id: it names the append's command id, or nothing,
            // so a record never claims an idempotency key the store did not record.
            let mut metadata = event.metadata;
            metadata.command_id = request.command_id;
            if let Some(key) = Metadata::RESERVED_KEYS
                .iter()
                .find(|key| metadata.extra.contains_key(**key))
            {
                return Err(Error::ReservedMetadataKey { key: (*key).to_owned() });
            }
            let schema_version = crate::record::schema_version(metadata.extra.get(SCHEMA_VERSION_KEY));
            let metadata = serde_json::to_string(&metadata).map_err(Error::InvalidJson)?;
            for (what, text) in [("payload", event.payload.get()), ("metadata", metadata.as_str())] {
                if nesting_exceeds(text, limits.max_json_depth) {
                    return Err(Error::JsonTooDeep {
                        index,
                        what,
                        limit: limits.max_json_depth,
                    });
                }
            }
            total += size + metadata.len();
            if let Some(id) = event.id {
                if events.iter().any(|e: &PreparedEvent| e.event_id == id) {
                    return Err(Error::DuplicateEventId { event_id: id });
                }
            }
            events.push(PreparedEvent {
                event_id: event.id.unwrap_or_else(Uuid::now_v7),
                client_id: event.id.is_some(),
                event_type: event.event_type,
                payload: event.payload,
                metadata,
                schema_version,
            });
        }
        if total > limits.max_append_bytes {
            return Err(Error::AppendTooLarge {
                size: total,
                limit: limits.max_append_bytes,
            });
        }
        Ok(PreparedAppend {
            partition: partition_for(&request.stream, self.inner.partition_count),
            stream: request.stream,
            expected: request.expected,
            command_id: request.command_id,
            events,
            waiters: crate::backend::APPENDING_FOR.try_with(Arc::clone).ok(),
        })
    }
}

/// Whether the JSON `text` nests arrays and objects `limit` deep or deeper (serde_json's
/// recursion limit of 128 lets a reader decode at most 127 levels). The text is
/// valid JSON, so brackets count unless inside a string, whose end is the first quote
/// not escaped by a backslash.
fn nesting_exceeds(text: &str, limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0_usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth >= limit {
                    return true;
                }
            }
            b']' | b'}' => depth -= 1,
            _ => {}
        }
    }
    false
}

/// The [`EventStore`] API on the handle itself, so that a program holding a `Store`
/// calls it without importing the trait.
impl Store {
    /// How many partitions the store has (fixed at creation).
    pub fn partition_count(&self) -> u32 {
        self.inner.partition_count
    }

    /// See [`EventStore::append`].
    pub async fn append(&self, request: AppendRequest) -> Result<AppendOutcome> {
        self.append_checked(request, false).await
    }

    /// An append of the store's own records (types `annals.…`).
    pub(crate) async fn append_own(&self, request: AppendRequest) -> Result<AppendOutcome> {
        self.append_checked(request, true).await
    }

    async fn append_checked(&self, request: AppendRequest, own: bool) -> Result<AppendOutcome> {
        if let Some(leader) = self.replica().leader {
            return Err(Error::ReadOnlyReplica { leader });
        }
        let started = std::time::Instant::now();
        let mut request = request;
        if request.events.iter().any(|event| !event.personal.is_empty()) {
            // Every check that needs no key first, so that an append refused by one
            // creates no key (the engine's own refusals come after: a key may stay).
            self.prepare(request.clone(), own)?;
        }
        self.seal(&mut request).await?;
        let prepared = self.prepare(request, own)?;
        let events = prepared.events.len();
        let result = self.inner.backend.append(prepared).await;
        crate::telemetry::append(self.inner.backend.name(), started, &result, events);
        result
    }

    /// See [`EventStore::read_stream`].
    pub async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: impl Into<Version>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let from_version = self.readable_from(stream, from_version.into().max(Version(1))).await?;
        let mut records = self.inner.backend.read_stream(stream, from_version, limit).await?;
        self.reveal(&mut records).await?;
        Ok(records)
    }

    /// See [`EventStore::fold_stream`].
    pub async fn fold_stream(
        &self,
        stream: &StreamId,
        from_version: impl Into<Version>,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        let from_version = from_version.into().max(Version(1));
        self.fold_revealed(stream, from_version, visit).await
    }

    /// See [`EventStore::stream_version`].
    pub async fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        self.inner.backend.stream_version(stream).await
    }

    /// See [`EventStore::read_partition`].
    pub async fn read_partition(
        &self,
        partition: impl Into<Partition>,
        from_offset: impl Into<Offset>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let mut records = self.read_partition_sealed(partition, from_offset, limit).await?;
        self.reveal(&mut records).await?;
        Ok(records)
    }

    /// [`read_partition`](Store::read_partition) without revealing personal data:
    /// records exactly as stored, their marked fields sealed.
    pub async fn read_partition_sealed(
        &self,
        partition: impl Into<Partition>,
        from_offset: impl Into<Offset>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let partition = partition.into();
        self.check_partition(partition)?;
        self.inner
            .backend
            .read_partition(partition, from_offset.into(), limit)
            .await
    }

    /// See [`EventStore::high_watermarks`].
    pub async fn high_watermarks(&self) -> Result<Vec<Offset>> {
        self.inner.backend.high_watermarks().await
    }

    /// How many records the store holds: the sum of its partitions' next offsets.
    pub async fn record_count(&self) -> Result<u64> {
        Ok(self.high_watermarks().await?.iter().map(|next| next.0).sum())
    }

    /// See [`EventStore::subscribe`].
    pub fn subscribe(
        &self,
        partition: impl Into<Partition>,
        from_offset: impl Into<Offset>,
    ) -> BoxStream<'static, Result<RecordedEvent>> {
        let partition = partition.into();
        match self.check_partition(partition) {
            Ok(()) => subscribe::records(self.clone(), partition, from_offset.into()),
            Err(error) => Box::pin(futures::stream::once(async { Err(error) })),
        }
    }

    /// See [`EventStore::command_outcome`].
    pub async fn command_outcome(&self, command_id: Uuid) -> Result<Option<(StreamId, AppendOutcome)>> {
        self.inner.backend.command_outcome(command_id).await
    }

    /// See [`EventStore::list_streams`].
    pub async fn list_streams(
        &self,
        category: Option<&str>,
        limit: usize,
        after: Option<&StreamId>,
    ) -> Result<Vec<StreamInfo>> {
        if let Some(category) = category {
            validate_category(category)?;
        }
        self.inner.backend.list_streams(category, limit, after).await
    }
}

#[async_trait]
impl EventStore for Store {
    fn partition_count(&self) -> u32 {
        Store::partition_count(self)
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome> {
        Store::append(self, request).await
    }

    async fn read_stream(&self, stream: &StreamId, from_version: Version, limit: usize) -> Result<Vec<RecordedEvent>> {
        Store::read_stream(self, stream, from_version, limit).await
    }

    async fn fold_stream(&self, stream: &StreamId, from_version: Version, visit: &mut Visitor<'_>) -> Result<()> {
        Store::fold_stream(self, stream, from_version, visit).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        Store::stream_version(self, stream).await
    }

    async fn read_partition(
        &self,
        partition: Partition,
        from_offset: Offset,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        Store::read_partition(self, partition, from_offset, limit).await
    }

    async fn high_watermarks(&self) -> Result<Vec<Offset>> {
        Store::high_watermarks(self).await
    }

    fn subscribe(&self, partition: Partition, from_offset: Offset) -> BoxStream<'static, Result<RecordedEvent>> {
        Store::subscribe(self, partition, from_offset)
    }

    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<(StreamId, AppendOutcome)>> {
        Store::command_outcome(self, command_id).await
    }

    async fn list_streams(
        &self,
        category: Option<&str>,
        limit: usize,
        after: Option<&StreamId>,
    ) -> Result<Vec<StreamInfo>> {
        Store::list_streams(self, category, limit, after).await
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    fn waiting_for_turn(&self) {
        if let Some(waits) = self.inner.backend.turn_waits() {
            waits.begin();
        }
    }
}

impl StoreOptions {
    /// Opens the store, creating it and running its migrations if needed.
    pub async fn open(self) -> Result<Store> {
        if self.partitions == Some(0) {
            return Err(Error::InvalidPartitionCount);
        }
        let keys_home = match &self.keys {
            // Boxed: an open within an open.
            Some(url) => Some(Box::pin(StoreOptions::from_url(url)?.open()).await?),
            None => None,
        };
        let backend = crate::backend::open(&self).await?;
        let store = Store::from_backend(backend, self.limits, self.poll_interval, keys_home, self.key_cache_ttl);
        store.refresh_replica().await?;
        Ok(store)
    }
}

/// Whether `category` could be the category of some stream id (for filters).
pub(crate) fn validate_category(category: &str) -> Result<()> {
    if !is_category(category) {
        return Err(Error::InvalidCategory {
            category: category.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::nesting_exceeds;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn nesting_counts_arrays_and_objects_outside_strings() {
        // What serde_json reads back, and where it stops.
        assert!(serde_json::from_str::<serde_json::Value>(&nested(127)).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&nested(128)).is_err());
        assert!(!nesting_exceeds(&nested(127), 128));
        assert!(nesting_exceeds(&nested(128), 128));
        assert!(!nesting_exceeds(r#"{"a": "[[[[[[", "b": {"c": "\"{{{{"}}"#, 3));
        assert!(nesting_exceeds(r#"{"a": "\\", "b": {"c": [1]}}"#, 3));
        assert!(!nesting_exceeds("12", 1));
        assert!(nesting_exceeds("{}", 1));
    }
}
