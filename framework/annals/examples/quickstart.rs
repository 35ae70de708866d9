//! Quickstart: open a store, append with optimistic concurrency and a command id,
//! read the stream back, and follow a partition.
//!
//! Run with `cargo run -p annals --example quickstart` (uses `sqlite://quickstart.db`
//! unless a store URL is given as the first argument).

use annals::prelude::*;
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

#[tokio::main]
async fn main() -> annals::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "sqlite://quickstart.db".into());
    let store = Store::open(&url).await?;

    // ANCHOR: append
    let order = StreamId::new(format!("order-{}", Uuid::new_v4().simple()))?;
    let command_id = Uuid::now_v7();
    let placed = AppendRequest::new(order.clone(), ExpectedVersion::NoStream)
        .command_id(command_id)
        .event(NewEvent::json(
            "OrderPlaced",
            &json!({"customer": "alice", "lines": 2}),
        )?);
    let outcome = store.append(placed.clone()).await?;
    println!(
        "stored in partition {} at offset {}",
        outcome.partition, outcome.first_offset
    );

    // Retrying the same command is safe: nothing is written twice.
    let retry = store.append(placed).await?;
    assert!(retry.duplicate && retry.first_offset == outcome.first_offset);
    // ANCHOR_END: append

    // ANCHOR: concurrency
    // A writer that believes the order is new loses against the one that wrote first.
    let stale = AppendRequest::new(order.clone(), ExpectedVersion::NoStream)
        .event(NewEvent::json("OrderPlaced", &json!({"customer": "bob"}))?);
    match store.append(stale).await {
        Err(Error::WrongExpectedVersion { actual, .. }) => println!("conflict: the order is at version {actual}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let paid = AppendRequest::new(order.clone(), ExpectedVersion::Exact(Version(1)))
        .event(NewEvent::json("OrderPaid", &json!({"amount": 2599}))?);
    store.append(paid).await?;
    // ANCHOR_END: concurrency

    // ANCHOR: read
    for record in store.read_stream(&order, Version(1), 100).await? {
        println!("v{} {} {}", record.version, record.event_type, record.payload);
    }
    let mut feed = store.subscribe(outcome.partition, outcome.first_offset);
    let first = feed.next().await.expect("the feed is endless")?;
    assert_eq!(first.stream, order);
    // ANCHOR_END: read

    store.close().await;
    Ok(())
}
