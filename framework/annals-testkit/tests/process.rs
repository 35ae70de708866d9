//! Process managers keep state of their own, per correlation key, from records of
//! several aggregates in any order; the commands they send are caused by the records
//! and applied once, however often records are redelivered; they schedule and cancel
//! deadlines.

use std::time::Duration;

use annals::aggregate::DomainEvent;
use annals::group::{admin, Filter, GroupOptions};
use annals::process::{self, ProcessManager, ProcessState, Step};
use annals::schedule::{Scheduler, TimerStatus};
use annals::{async_trait, AppendRequest, ExpectedVersion, NewEvent, RecordedEvent, Store, StreamId, Version};
use annals_testkit::tally::caught_up;
use annals_testkit::TestStore;
use serde::{Deserialize, Serialize};
use serde_json::json;

annals_testkit::on_every_engine!(a_process_remembers_what_it_saw_and_acts_once);

/// What the shipping process records.
#[derive(Debug, Serialize, Deserialize, DomainEvent)]
#[serde(tag = "type", content = "data")]
enum ShippingEvent {
    OrderSeen { deadline: uuid::Uuid },
    PaymentSeen,
    ShipmentRequested,
}

/// One order's shipping: it ships once the order is placed *and* paid, whichever came
/// first, and gives up waiting for the payment at a deadline.
#[derive(Default)]
struct Shipping {
    deadline: Option<uuid::Uuid>,
    paid: bool,
    requested: bool,
}

impl ProcessState for Shipping {
    const CATEGORY: &'static str = "shipping";
    type Event = ShippingEvent;

    fn apply(&mut self, event: &ShippingEvent) {
        match event {
            ShippingEvent::OrderSeen { deadline } => self.deadline = Some(*deadline),
            ShippingEvent::PaymentSeen => self.paid = true,
            ShippingEvent::ShipmentRequested => self.requested = true,
        }
    }
}

struct ShippingProcess {
    store: Store,
}

#[async_trait]
impl ProcessManager for ShippingProcess {
    type State = Shipping;

    fn filter(&self) -> Filter {
        Filter::categories(["order", "payment"]).expect("categories")
    }

    fn key(&self, record: &RecordedEvent) -> Option<String> {
        match record.stream.category() {
            "order" => Some(record.stream.id().to_owned()),
            _ => record.decode::<serde_json::Value>().ok()?["order"]
                .as_str()
                .map(str::to_owned),
        }
    }

    async fn react(&self, state: &Shipping, step: &Step<'_>) -> annals::Result<Vec<ShippingEvent>> {
        let record = step.record();
        let mut events = Vec::new();
        let mut next = Shipping {
            deadline: state.deadline,
            paid: state.paid,
            requested: state.requested,
        };
        match record.event_type.as_str() {
            "OrderPlaced" if state.deadline.is_none() => {
                let due = record.recorded_at + chrono::Duration::hours(1);
                let order = record.stream.id();
                let deadline = step
                    .schedule(due, "payment-due", "order.expire", &json!({"order": order}))
                    .await?;
                next.deadline = Some(deadline);
                events.push(ShippingEvent::OrderSeen { deadline });
            }
            "PaymentCaptured" if !state.paid => {
                next.paid = true;
                events.push(ShippingEvent::PaymentSeen);
            }
            _ => {}
        }
        if next.deadline.is_some() && next.paid && !next.requested {
            let order = self.key(record).expect("a key");
            let context = step.command("ship");
            let request = AppendRequest::new(StreamId::new(format!("shipment-{order}"))?, ExpectedVersion::Any)
                .command_id(context.command_id)
                .event(
                    NewEvent::json("ShipmentRequested", &json!({"order": order}))?.with_metadata(
                        annals::Metadata::default()
                            .with_correlation_id(context.correlation_id)
                            .with_causation_id(record.event_id),
                    ),
                );
            self.store.append(request).await?;
            if let Some(deadline) = next.deadline {
                step.cancel(deadline).await?;
            }
            events.push(ShippingEvent::ShipmentRequested);
        }
        Ok(events)
    }
}

async fn append(store: &Store, stream: &str, event_type: &str, data: serde_json::Value) {
    let request = AppendRequest::new(StreamId::new(stream).expect("id"), ExpectedVersion::Any)
        .event(NewEvent::json(event_type, &data).expect("event"));
    store.append(request).await.expect("append");
}

fn options() -> GroupOptions {
    GroupOptions {
        heartbeat_interval: Duration::from_millis(100),
        session_timeout: Duration::from_secs(3),
        retry_backoff: Duration::from_millis(5),
        ..GroupOptions::default()
    }
}

async fn types(store: &Store, stream: &str) -> Vec<String> {
    store
        .read_stream(&StreamId::new(stream).expect("id"), Version(1), 100)
        .await
        .expect("read")
        .into_iter()
        .map(|record| record.event_type)
        .collect()
}

async fn a_process_remembers_what_it_saw_and_acts_once(t: TestStore) {
    let store = t.open().await;
    let process = |store: &Store| ShippingProcess { store: store.clone() };
    // Orders placed then paid, paid before placed (their records are in different
    // partitions, so the process may see them in either order), and placed only.
    let pay = async |order: &str| {
        append(
            &store,
            &format!("payment-{order}"),
            "PaymentCaptured",
            json!({"order": order}),
        )
        .await;
    };
    for n in 0..12 {
        let order = format!("o{n}");
        if n % 3 == 1 {
            pay(&order).await;
        }
        append(&store, &format!("order-{order}"), "OrderPlaced", json!({})).await;
        if n % 3 == 0 {
            pay(&order).await;
        }
    }
    let member = process::start(&store, "shipping", process(&store), options())
        .await
        .expect("start");
    caught_up(&store, "shipping").await;
    member.shutdown().await.expect("stop");

    let scheduler = Scheduler::new(&store);
    for n in 0..12 {
        let order = format!("o{n}");
        let (state, _) = process::load::<Shipping>(&store, &order).await.expect("load");
        let paid = n % 3 != 2;
        assert_eq!((state.paid, state.requested), (paid, paid), "order {order}");
        let shipments = types(&store, &format!("shipment-{order}")).await;
        assert_eq!(shipments.len(), usize::from(paid), "order {order}: {shipments:?}");
        let deadline = scheduler
            .status(state.deadline.expect("a deadline"))
            .await
            .expect("status");
        if paid {
            assert!(
                matches!(deadline, Some(TimerStatus::Cancelled { .. })),
                "{order}: {deadline:?}"
            );
        } else {
            assert!(
                matches!(deadline, Some(TimerStatus::Pending { .. })),
                "{order}: {deadline:?}"
            );
        }
    }
    // The shipment was caused by the record that completed the picture (placed or
    // paid, whichever the process saw last), as the process recorded it.
    let first = |stream: &str| {
        let store = store.clone();
        let stream = StreamId::new(stream).expect("id");
        async move { store.read_stream(&stream, Version(1), 10).await.expect("read") }
    };
    let shipment = &first("shipment-o0").await[0];
    let requested = first("shipping-o0").await.pop().expect("recorded");
    assert_eq!(requested.event_type, "ShipmentRequested");
    assert_eq!(shipment.metadata.causation_id, requested.metadata.causation_id);
    let causes = [&first("order-o0").await[0], &first("payment-o0").await[0]].map(|r| Some(r.event_id));
    assert!(causes.contains(&shipment.metadata.causation_id), "{shipment:?}");

    // Everything handed over again: nothing is recorded or sent twice.
    let before = store.record_count().await.expect("count");
    admin::reset(&store, "shipping", admin::ResetTo::Earliest)
        .await
        .expect("reset");
    let member = process::start(&store, "shipping", process(&store), options())
        .await
        .expect("start again");
    caught_up(&store, "shipping").await;
    member.shutdown().await.expect("stop");
    assert_eq!(
        store.record_count().await.expect("count"),
        before,
        "a redelivery wrote something"
    );
    // Paid before placed or after, each instance recorded what it saw once, and asked
    // for the shipment last.
    for order in ["o0", "o1"] {
        let mut recorded = types(&store, &format!("shipping-{order}")).await;
        assert_eq!(recorded.pop().as_deref(), Some("ShipmentRequested"), "{order}");
        recorded.sort();
        assert_eq!(recorded, ["OrderSeen", "PaymentSeen"], "{order}");
    }
}
