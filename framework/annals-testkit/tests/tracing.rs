//! W3C trace context from a command to its events, into the spans of the group members
//! that handle them, and on through a saga's next command: read back from the spans a
//! tracing subscriber saw.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use annals::aggregate::{Aggregate, CommandContext, DomainEvent, Repository};
use annals::group::{Consumer, Filter, GroupMember, GroupOptions, Processed, Projection};
use annals::readmodel::Tx;
use annals::{async_trait, params, RecordedEvent, StreamId, TraceParent};
use annals_testkit::tally::caught_up;
use annals_testkit::TestStore;
use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// A span's name and fields.
type Seen = (String, BTreeMap<String, String>);

/// Every span seen, by span id.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<BTreeMap<u64, Seen>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let name = attrs.metadata().name().to_owned();
        self.0.lock().expect("lock").insert(id.into_u64(), (name, fields));
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some((_, fields)) = self.0.lock().expect("lock").get_mut(&id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
}

impl Spans {
    /// The traceparents of the `annals.handle` spans of `stream`.
    fn handled(&self, stream: &str) -> Vec<String> {
        self.0
            .lock()
            .expect("lock")
            .values()
            .filter(|(name, fields)| name == "annals.handle" && fields.get("stream").is_some_and(|s| s == stream))
            .map(|(_, fields)| fields.get("traceparent").cloned().unwrap_or_default())
            .collect()
    }
}

#[derive(Debug, Default)]
struct Order;

#[derive(Debug, Clone, Serialize, Deserialize, DomainEvent)]
#[serde(tag = "type", content = "data")]
enum OrderEvent {
    Placed,
}

impl Aggregate for Order {
    const CATEGORY: &'static str = "order";
    type Command = ();
    type Event = OrderEvent;
    type Error = std::convert::Infallible;
    fn handle(&self, (): ()) -> Result<Vec<OrderEvent>, Self::Error> {
        Ok(vec![OrderEvent::Placed])
    }
    fn apply(&mut self, _: &OrderEvent) {}
}

#[derive(Debug, Default)]
struct Invoice;

#[derive(Debug, Clone, Serialize, Deserialize, DomainEvent)]
#[serde(tag = "type", content = "data")]
enum InvoiceEvent {
    Issued,
}

impl Aggregate for Invoice {
    const CATEGORY: &'static str = "invoice";
    type Command = ();
    type Event = InvoiceEvent;
    type Error = std::convert::Infallible;
    fn handle(&self, (): ()) -> Result<Vec<InvoiceEvent>, Self::Error> {
        Ok(vec![InvoiceEvent::Issued])
    }
    fn apply(&mut self, _: &InvoiceEvent) {}
}

/// The saga: an invoice for each order placed.
struct Billing(Repository<Invoice>);

#[async_trait]
impl Consumer for Billing {
    fn filter(&self) -> Filter {
        Filter::aggregate::<Order>()
    }
    async fn handle(&self, record: &RecordedEvent, _: &Processed) -> annals::Result<()> {
        let id = record.stream.id().to_owned();
        let context = CommandContext::caused_by(record, "invoice");
        self.0
            .execute(&id, (), &context)
            .await
            .map_err(annals::Error::handler)?;
        Ok(())
    }
}

/// A read model of everything.
struct Everything;

#[async_trait]
impl Projection for Everything {
    async fn setup(&self, tx: &mut Tx) -> annals::Result<()> {
        tx.execute("CREATE TABLE IF NOT EXISTS seen (stream TEXT NOT NULL)", &[])
            .await?;
        Ok(())
    }
    async fn handle(&self, record: &RecordedEvent, tx: &mut Tx) -> annals::Result<()> {
        tx.execute("INSERT INTO seen VALUES ($1)", params![record.stream.as_str()])
            .await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_runs_from_a_command_through_a_saga_into_the_handlers() {
    let spans = Spans::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(spans.clone())).expect("subscriber");
    let Some(t) = TestStore::sqlite().await else { return };
    let store = t.open().await;
    let saga = GroupMember::consumer(
        &store,
        "billing",
        Billing(Repository::new(store.clone())),
        GroupOptions::default(),
    )
    .await
    .expect("saga");
    let views = GroupMember::projection(&store, "views", Everything, GroupOptions::default())
        .await
        .expect("views");

    let incoming: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        .parse()
        .expect("traceparent");
    let context = CommandContext::new().with_traceparent(incoming);
    Repository::<Order>::new(store.clone())
        .execute("42", (), &context)
        .await
        .expect("place");
    caught_up(&store, "billing").await;
    caught_up(&store, "views").await;

    // The command's events carry its trace; the saga's command continues it.
    let order = store
        .read_stream(&StreamId::new("order-42").expect("id"), 1, 10)
        .await
        .expect("read");
    assert_eq!(order[0].metadata.traceparent, Some(incoming));
    let invoice = store
        .read_stream(&StreamId::new("invoice-42").expect("id"), 1, 10)
        .await
        .expect("read");
    let continued = invoice[0]
        .metadata
        .traceparent
        .expect("the saga's command carried the trace");
    assert_eq!(continued.trace_id(), incoming.trace_id());
    assert_ne!(
        continued.span_id(),
        incoming.span_id(),
        "the saga's command has a span of its own"
    );

    // Each record was handled in a span naming the trace it was written in: by the
    // saga and by the projection for the order, by the projection for the invoice.
    let order_spans = spans.handled("order-42");
    assert!(
        order_spans.len() >= 2 && order_spans.iter().all(|tp| *tp == incoming.to_string()),
        "{order_spans:?}"
    );
    let invoice_spans = spans.handled("invoice-42");
    assert!(
        !invoice_spans.is_empty() && invoice_spans.iter().all(|tp| *tp == continued.to_string()),
        "{invoice_spans:?}"
    );
    saga.shutdown().await.expect("saga");
    views.shutdown().await.expect("views");
}
