//! Projections and consumer groups: Kafka's consumer group, done for read models.
//!
//! Members of a group share the store's partitions: each partition has one owner per
//! generation, every membership change bumps the generation and reassigns partitions
//! (deterministically, keeping owners where it can), and a member that stops
//! heartbeating is removed after its session timeout. Coordination goes through the
//! store's database, so members may run in any process on any machine that reaches it.
//!
//! Two commit modes:
//! - a [`Projection`] writes a SQL read model in the store's database, and its writes
//!   and the offset commit share one transaction: a record's effect is applied exactly
//!   once, and a member that lost its partition cannot commit (I6);
//! - a [`Consumer`] does anything (send mail, call a service) and commits after; a record
//!   may be handled again after a crash, and [`Processed`] helps it notice;
//! - a [`BatchConsumer`] writes to a destination that remembers how far it got (a Kafka
//!   topic): it says where each partition resumes, so a crash between its write and the
//!   commit neither loses nor repeats a record.
//!
//! Records of a partition are handed over in offset order, in batches; a record that
//! keeps failing goes to the group's dead letters and the stream it belongs to waits
//! behind it (see [`admin`]).

pub mod admin;
mod rebuild;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::aggregate::{Aggregate, DomainEvent};
use crate::coordination::validate_group;
use crate::error::{Error, Result};
use crate::position::{Offset, Partition};
use crate::readmodel::Tx;
use crate::record::RecordedEvent;
use crate::store::validate_category;
use crate::store::Store;

pub use crate::coordination::{CommitMode, StartAt};
pub use rebuild::rebuild;

/// Which records a group handles; the others are skipped (their offsets still advance).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    categories: Vec<String>,
    event_types: Vec<String>,
}

impl Filter {
    /// Every record.
    pub fn all() -> Self {
        Filter::default()
    }

    /// Only records of these stream categories (`order` for `order-42`).
    pub fn categories<I: IntoIterator<Item = S>, S: Into<String>>(categories: I) -> Result<Self> {
        let categories = distinct(categories);
        for category in &categories {
            validate_category(category)?;
        }
        Ok(Filter {
            categories,
            ..Filter::default()
        })
    }

    /// Also require one of these event types.
    pub fn event_types<I: IntoIterator<Item = S>, S: Into<String>>(mut self, types: I) -> Self {
        self.event_types = distinct(types);
        self
    }

    /// Also require one of the event types of `E` (see
    /// [`DomainEvent::EVENT_TYPES`], which
    /// `#[derive(DomainEvent)]` fills; an enum that lists none puts no restriction).
    /// Records of a type the enum no longer has (renamed, and upcast when read) are
    /// skipped: a handler that folds whole streams filters by category alone.
    pub fn events<E: DomainEvent>(self) -> Self {
        self.event_types(E::EVENT_TYPES.iter().copied())
    }

    /// The records of aggregate `A`: its category, and its events' types when the
    /// event enum lists them.
    ///
    /// ```
    /// use annals::aggregate::{Aggregate, DomainEvent};
    /// use annals::group::Filter;
    /// # use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize, DomainEvent)]
    /// #[serde(tag = "type", content = "data")]
    /// enum OrderEvent {
    ///     Placed { lines: u32 },
    ///     Cancelled,
    /// }
    ///
    /// #[derive(Default)]
    /// struct Order;
    ///
    /// impl Aggregate for Order {
    ///     const CATEGORY: &'static str = "order";
    ///     # type Command = ();
    ///     type Event = OrderEvent;
    ///     # type Error = std::convert::Infallible;
    ///     # fn handle(&self, _: ()) -> Result<Vec<OrderEvent>, Self::Error> { Ok(vec![]) }
    ///     # fn apply(&mut self, _: &OrderEvent) {}
    /// }
    ///
    /// assert_eq!(
    ///     Filter::aggregate::<Order>(),
    ///     Filter::categories(["order"])?.event_types(["Placed", "Cancelled"])
    /// );
    /// # Ok::<(), annals::Error>(())
    /// ```
    pub fn aggregate<A: Aggregate>() -> Self {
        Filter {
            categories: vec![crate::aggregate::Repository::<A>::CATEGORY.to_owned()],
            event_types: Vec::new(),
        }
        .events::<A::Event>()
    }

    /// Whether every record passes.
    pub fn is_all(&self) -> bool {
        self.categories.is_empty() && self.event_types.is_empty()
    }

    pub(crate) fn category_list(&self) -> &[String] {
        &self.categories
    }

    pub(crate) fn event_type_list(&self) -> &[String] {
        &self.event_types
    }

    /// Whether `record` passes.
    pub fn matches(&self, record: &RecordedEvent) -> bool {
        (self.categories.is_empty() || self.categories.iter().any(|c| c == record.stream.category()))
            && (self.event_types.is_empty() || self.event_types.contains(&record.event_type))
    }
}

/// An index of the log that groups filtered by category or by event type read
/// through, instead of reading the whole log: the records of one partition with one
/// category (or one event type) in offset order. Like EventStoreDB's `$by_category`
/// and `$by_event_type`, they are off until enabled, because each costs every append
/// one more index entry (see [`Store::enable_filter_index`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilterIndex {
    /// By stream category.
    Category,
    /// By event type.
    EventType,
}

impl FilterIndex {
    /// Both indexes.
    pub const ALL: [FilterIndex; 2] = [FilterIndex::Category, FilterIndex::EventType];

    /// `category` or `event-type`.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterIndex::Category => "category",
            FilterIndex::EventType => "event-type",
        }
    }

    /// The index's name in the database.
    pub(crate) fn table_index(self) -> &'static str {
        match self {
            FilterIndex::Category => "annals_events_by_category",
            FilterIndex::EventType => "annals_events_by_type",
        }
    }

    /// The columns the index is built on, given the engine's category expression.
    pub(crate) fn columns(self, category: &str) -> String {
        match self {
            FilterIndex::Category => format!("partition, {category}, \"offset\""),
            FilterIndex::EventType => "partition, event_type, \"offset\"".to_owned(),
        }
    }
}

impl std::fmt::Display for FilterIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FilterIndex {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        FilterIndex::ALL
            .into_iter()
            .find(|index| index.as_str() == text)
            .ok_or(Error::InvalidFilterIndex { name: text.to_owned() })
    }
}

/// `names` in their first order, each once: a filtered read queries each name's index
/// entries, and a name given twice must not hand its records over twice.
fn distinct<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Vec<String> {
    let mut distinct: Vec<String> = Vec::new();
    for name in names.into_iter().map(Into::into) {
        if !distinct.contains(&name) {
            distinct.push(name);
        }
    }
    distinct
}

/// A SQL read model built in the store's database. Its writes in [`handle`] and the
/// group's offset commit share one transaction.
///
/// [`handle`]: Projection::handle
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// The records it handles (default: all).
    fn filter(&self) -> Filter {
        Filter::all()
    }

    /// Creates its tables (idempotently), once when a member starts.
    async fn setup(&self, _tx: &mut Tx) -> Result<()> {
        Ok(())
    }

    /// Applies one record to the read model, inside the batch's transaction. An error
    /// rolls back this record's writes; it is retried, then dead-lettered.
    async fn handle(&self, record: &RecordedEvent, tx: &mut Tx) -> Result<()>;

    /// Applies a batch of records of one partition, in offset order, inside the
    /// batch's transaction. The default hands them to [`handle`] one at a time.
    ///
    /// Override it to write a batch's rows together, with [`Tx::execute_many`] or one
    /// multi-row statement. It must have the same effect as [`handle`] on each record in
    /// turn: when it fails, its writes roll back and the batch is handled again
    /// record by record through [`handle`], to retry and dead-letter just the record
    /// that fails.
    ///
    /// [`handle`]: Projection::handle
    async fn handle_batch(&self, records: &[&RecordedEvent], tx: &mut Tx) -> Result<()> {
        for record in records {
            tracing::Instrument::instrument(self.handle(record, tx), handling_span(None, record)).await?;
        }
        Ok(())
    }
}

/// The span a record is handled in: `annals.handle`, naming the group (when known
/// here), the record's position and type, and the W3C trace the record was written in
/// (`traceparent`, and its `trace_id` and `parent_span_id`), so that a tracing layer
/// exporting to OpenTelemetry can join the handler to the command's trace.
pub(crate) fn handling_span(group: Option<&str>, record: &RecordedEvent) -> tracing::Span {
    let span = tracing::info_span!(
        "annals.handle",
        group = tracing::field::Empty,
        stream = %record.stream,
        partition = %record.partition,
        offset = %record.offset,
        event_type = %record.event_type,
        traceparent = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
    );
    if let Some(group) = group {
        span.record("group", group);
    }
    if let Some(parent) = record.metadata.traceparent {
        span.record("traceparent", parent.to_string());
        span.record("trace_id", parent.trace_id());
        span.record("parent_span_id", parent.span_id());
    }
    span
}

/// A handler with side effects outside the store's database, committed after it runs:
/// at-least-once delivery.
#[async_trait]
pub trait Consumer: Send + Sync + 'static {
    /// The records it handles (default: all).
    fn filter(&self) -> Filter {
        Filter::all()
    }

    /// Handles one record. `processed` remembers event ids across redeliveries.
    async fn handle(&self, record: &RecordedEvent, processed: &Processed) -> Result<()>;
}

/// The dedup helper of at-least-once consumers: event ids marked as done, per group.
#[derive(Debug, Clone)]
pub struct Processed {
    store: Store,
    group: Arc<str>,
}

impl Processed {
    /// Whether `event_id` was marked as done.
    pub async fn contains(&self, event_id: uuid::Uuid) -> Result<bool> {
        self.store.groups()?.processed(&self.group, event_id).await
    }

    /// Marks `event_id` as done; `false` if it already was.
    pub async fn insert(&self, event_id: uuid::Uuid) -> Result<bool> {
        self.store.groups()?.mark_processed(&self.group, event_id).await
    }
}

/// A handler whose destination records its own position: Kafka Connect's sink task.
///
/// When the member takes a partition, [`open`](BatchConsumer::open) says where to start,
/// from what the destination holds (the committed offset follows it). Each batch starts
/// only while the member owns the partition (a fenced read just before it). A batch
/// that fails is never skipped nor dead-lettered: the partition is opened again after
/// the group's retry back-off, so the consumer learns from its destination how far the
/// failed attempt got, and goes on from there.
#[async_trait]
pub trait BatchConsumer: Send + Sync + 'static {
    /// The records it handles (default: all); the others are skipped.
    fn filter(&self) -> Filter {
        Filter::all()
    }

    /// This member takes `partition`, whose committed offset is `committed`: returns the
    /// offset to start from (default: `committed`).
    async fn open(&self, partition: Partition, committed: Offset) -> Result<Offset> {
        let _ = partition;
        Ok(committed)
    }

    /// Handles the records of `partition` that the filter passes, in offset order (never
    /// empty).
    async fn handle_batch(&self, partition: Partition, records: &[RecordedEvent]) -> Result<()>;
}

/// What happens to a partition when a record still fails after every attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Dead-letter the record, park later records of its stream behind it, move on.
    #[default]
    DeadLetter,
    /// Stop the partition (it shows as paused with the error) until resumed.
    Stop,
}

/// How a member runs.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// Most records handled per transaction (default 500).
    pub batch_size: usize,
    /// A member that has not heartbeated for this long is removed (default 10 s).
    pub session_timeout: Duration,
    /// How often a member heartbeats (default 1 s; keep it well under the timeout).
    pub heartbeat_interval: Duration,
    /// Attempts per record before the failure policy applies (default 3).
    pub max_attempts: u32,
    /// Back-off after the first failed attempt; doubles each time (default 50 ms).
    pub retry_backoff: Duration,
    /// What a record that keeps failing does to its partition.
    pub on_failure: FailurePolicy,
    /// The member id (default: host, process id and a random suffix).
    pub member_id: Option<String>,
    /// Where the group starts if this member creates it (default: the first record).
    /// Once a group exists its committed offsets rule; move them with
    /// [`admin::reset`].
    pub start_at: StartAt,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            batch_size: 500,
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            max_attempts: 3,
            retry_backoff: Duration::from_millis(50),
            on_failure: FailurePolicy::DeadLetter,
            member_id: None,
            start_at: StartAt::Earliest,
        }
    }
}

/// The handler of a member, in either commit mode.
#[derive(Clone)]
pub(crate) enum Handler {
    Transactional(Arc<dyn Projection>),
    AtLeastOnce(Arc<dyn Consumer>, Processed),
    Batch(Arc<dyn BatchConsumer>),
}

impl Handler {
    fn filter(&self) -> Filter {
        match self {
            Handler::Transactional(projection) => projection.filter(),
            Handler::AtLeastOnce(consumer, _) => consumer.filter(),
            Handler::Batch(consumer) => consumer.filter(),
        }
    }

    fn commit_mode(&self) -> CommitMode {
        match self {
            Handler::Transactional(_) => CommitMode::Transactional,
            Handler::AtLeastOnce(..) | Handler::Batch(_) => CommitMode::AtLeastOnce,
        }
    }
}

/// A running member of a consumer group. Call [`shutdown`](GroupMember::shutdown) to
/// stop it and wait until it has left; dropping it stops it the same way, in the
/// background, with nothing waiting for it.
pub struct GroupMember {
    member_id: String,
    stop: watch::Sender<bool>,
    assignment: watch::Receiver<Vec<Partition>>,
    task: JoinHandle<Result<()>>,
}

impl std::fmt::Debug for GroupMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMember")
            .field("member_id", &self.member_id)
            .finish()
    }
}

impl GroupMember {
    /// Starts a member of `group` that builds `projection` (transactional commits).
    pub async fn projection(
        store: &Store,
        group: &str,
        projection: impl Projection,
        options: GroupOptions,
    ) -> Result<GroupMember> {
        validate_group(group)?;
        let projection: Arc<dyn Projection> = Arc::new(projection);
        let setup = projection.clone();
        store
            .groups()?
            .db()
            .transaction(move |tx| Box::pin(async move { setup.setup(tx).await }))
            .await?;
        Self::start(store, group, Handler::Transactional(projection), options).await
    }

    /// Starts a member of `group` that runs `consumer` (at-least-once commits).
    pub async fn consumer(
        store: &Store,
        group: &str,
        consumer: impl Consumer,
        options: GroupOptions,
    ) -> Result<GroupMember> {
        validate_group(group)?;
        let processed = Processed {
            store: store.clone(),
            group: group.into(),
        };
        Self::start(
            store,
            group,
            Handler::AtLeastOnce(Arc::new(consumer), processed),
            options,
        )
        .await
    }

    /// Starts a member of `group` that runs `consumer`, a batch at a time, from where
    /// its destination says each partition resumes. Its offsets commit after each batch,
    /// as an at-least-once group's do (and followers copy them the same way).
    pub async fn batch_consumer(
        store: &Store,
        group: &str,
        consumer: impl BatchConsumer,
        options: GroupOptions,
    ) -> Result<GroupMember> {
        Self::start(store, group, Handler::Batch(Arc::new(consumer)), options).await
    }

    async fn start(store: &Store, group: &str, handler: Handler, options: GroupOptions) -> Result<GroupMember> {
        validate_group(group)?;
        let db = store.groups()?.db();
        let host = hostname();
        let member_id = options.member_id.clone().unwrap_or_else(|| {
            format!(
                "{host}-{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            )
        });
        let member = worker::Member {
            store: store.clone(),
            db,
            group: group.into(),
            member_id: member_id.clone(),
            host,
            handler,
            options,
        };
        // Join before returning, so a caller sees bad settings and an unreachable database.
        let first = member.heartbeat().await?;
        let (stop, stopped) = watch::channel(false);
        let (assigned, assignment) = watch::channel(first.working());
        let task = tokio::spawn(member.run(first, stopped, assigned));
        Ok(GroupMember {
            member_id,
            stop,
            assignment,
            task,
        })
    }

    /// This member's id.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The partitions this member works on now.
    pub fn assignment(&self) -> Vec<Partition> {
        self.assignment.borrow().clone()
    }

    /// The partitions this member works on, as they change.
    pub(crate) fn watch_assignment(&self) -> watch::Receiver<Vec<Partition>> {
        self.assignment.clone()
    }

    /// Waits until the assignment changes.
    pub async fn assignment_changed(&mut self) -> Result<Vec<Partition>> {
        self.assignment.changed().await.map_err(|_| Error::Closed)?;
        Ok(self.assignment.borrow_and_update().clone())
    }

    /// Stops gracefully: every partition finishes and commits the batch in hand, then
    /// the member leaves the group at once so others take its partitions.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.task.await.map_err(|_| Error::Closed)?
    }

    /// Waits until the member stops by itself (it only does so on an error it cannot
    /// recover from).
    pub async fn wait(self) -> Result<()> {
        let result = (&mut { self.task }).await.map_err(|_| Error::Closed)?;
        drop(self.stop);
        result
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
