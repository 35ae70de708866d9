//! `annals bench personal`: what sealing personal data costs. Writers append the same
//! order events twice, once plain and once with the buyer's email and address marked as
//! personal data (so sealed, under one key per customer); then every stream of each half
//! is read back (revealed, for the sealed half); then customers are erased one by one.
//! Reports appends and reads per second for both halves and their ratios, and the time
//! an erasure takes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use annals::personal::Subject;
use annals::{AppendRequest, ExpectedVersion, NewEvent, Store, StreamId};
use serde_json::json;

use crate::output::{CliError, CliResult, Output};

#[derive(Debug, clap::Args)]
pub(crate) struct PersonalArgs {
    /// Events appended in each half.
    #[arg(long, default_value_t = 50_000)]
    events: u64,
    /// Concurrent writers, each appending one event at a time.
    #[arg(long, default_value_t = 8)]
    writers: u64,
    /// Customers (subjects, one key each); each has a stream of its orders.
    #[arg(long, default_value_t = 1_000)]
    customers: u64,
    /// Customers erased at the end, one at a time.
    #[arg(long, default_value_t = 100)]
    erasures: u64,
}

/// One order of `customer`: about 200 bytes, its email and address personal data.
fn order(customer: u64, n: u64, sealed: bool) -> annals::Result<NewEvent> {
    let payload = json!({
        "email": format!("customer{customer}@example.com"),
        "address": {"street": format!("{n} Long Street"), "city": "Paris", "zip": "75001"},
        "sku": format!("sku-{:06}", n % 5000), "qty": n % 7 + 1, "price": 1999 + n % 300,
    });
    let event = NewEvent::json("OrderPlaced", &payload)?;
    Ok(match sealed {
        true => event.personal(Subject::new(format!("customer-{customer}"))?, ["/email", "/address"]),
        false => event,
    })
}

fn stream(customer: u64, sealed: bool) -> annals::Result<StreamId> {
    let category = if sealed { "sealed" } else { "plain" };
    Ok(StreamId::new(format!("{category}-{customer}"))?)
}

/// Appends `events` orders from `writers` tasks; events per second.
async fn append_half(store: &Store, args: &PersonalArgs, sealed: bool) -> CliResult<f64> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.writers {
        let (store, next, events, customers) = (store.clone(), next.clone(), args.events, args.customers);
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= events {
                    return Ok::<_, annals::Error>(());
                }
                let customer = n % customers;
                let request = AppendRequest::new(stream(customer, sealed)?, ExpectedVersion::Any)
                    .event(order(customer, n, sealed)?);
                store.append(request).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| CliError::Usage(e.to_string()))??;
    }
    Ok(args.events as f64 / started.elapsed().as_secs_f64())
}

/// Reads every customer's stream of one half; events per second.
async fn read_half(store: &Store, args: &PersonalArgs, sealed: bool) -> CliResult<f64> {
    let started = Instant::now();
    let mut read = 0;
    for customer in 0..args.customers {
        read += store.read_stream(&stream(customer, sealed)?, 1, 100_000).await?.len();
    }
    if read as u64 != args.events {
        return Err(CliError::Usage(format!("read {read} events of {}", args.events)));
    }
    Ok(read as f64 / started.elapsed().as_secs_f64())
}

pub(crate) async fn personal(db: &str, args: PersonalArgs, out: &Output) -> CliResult {
    if args.events == 0 || args.writers == 0 || args.customers == 0 || args.erasures > args.customers {
        return Err(CliError::Usage(
            "--events, --writers and --customers must be positive, and --erasures at most --customers".into(),
        ));
    }
    let store = annals::StoreOptions::from_url(db)?.open().await?;
    let backend = store.backend_name();
    let plain_appends = append_half(&store, &args, false).await?;
    let sealed_appends = append_half(&store, &args, true).await?;
    let plain_reads = read_half(&store, &args, false).await?;
    let sealed_reads = read_half(&store, &args, true).await?;
    let started = Instant::now();
    for customer in 0..args.erasures {
        store
            .erase_subject(&Subject::new(format!("customer-{customer}"))?)
            .await?;
    }
    let erase_ms = started.elapsed().as_secs_f64() * 1e3 / args.erasures.max(1) as f64;
    store.close().await;
    let (append_ratio, read_ratio) = (sealed_appends / plain_appends, sealed_reads / plain_reads);
    let report = json!({
        "workload": "personal", "backend": backend, "events": args.events, "writers": args.writers,
        "customers": args.customers, "plain_appends_per_sec": plain_appends,
        "sealed_appends_per_sec": sealed_appends, "append_ratio": append_ratio,
        "plain_reads_per_sec": plain_reads, "sealed_reads_per_sec": sealed_reads, "read_ratio": read_ratio,
        "erasures": args.erasures, "erase_ms": erase_ms,
    });
    out.print(&report, |_| {
        format!(
            "{backend}: appends {plain_appends:.0}/s plain, {sealed_appends:.0}/s with two sealed fields ({append_ratio:.2}); \
             reads {plain_reads:.0}/s plain, {sealed_reads:.0}/s revealed ({read_ratio:.2}); an erasure {erase_ms:.2} ms"
        )
    });
    Ok(())
}
