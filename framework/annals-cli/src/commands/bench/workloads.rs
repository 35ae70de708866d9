//! W1 (command throughput) and W2 (rehydration) of the shared workload spec, implemented
//! exactly as every compared system implements them: the `Order` aggregate with one
//! `AddLine` command, command `i`'s fields derived from `i`, each task choosing its
//! aggregate with its own xorshift64 generator, conflicts retried until they succeed.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::aggregate::{Aggregate, CommandContext, DomainEvent, Repository, RetryPolicy};
use annals::{Store, StoreOptions};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::load::{histogram, quantile_ms};
use crate::output::{CliError, CliResult, Output};

#[derive(Debug, clap::Args)]
pub(crate) struct CommandsArgs {
    /// Concurrent tasks (C).
    #[arg(long, default_value_t = 8)]
    tasks: u64,
    /// Commands in all.
    #[arg(long, default_value_t = 20_000)]
    commands: u64,
    /// Aggregates the commands spread over (order-0 …).
    #[arg(long, default_value_t = 1_000)]
    aggregates: u64,
}

#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// Events in the aggregate's history.
    #[arg(long, default_value_t = 2_000)]
    events: u64,
    /// How many times it is loaded.
    #[arg(long, default_value_t = 50)]
    pub(super) loads: usize,
    /// Instead: load orders of 10, 1,000 and 100,000 events with and without snapshots.
    #[arg(long)]
    pub(super) snapshots: bool,
    /// With --snapshots: the snapshotter's interval, in events.
    #[arg(long, default_value_t = 100)]
    pub(super) snapshot_every: u64,
}

/// The workload's aggregate: an order that only ever gains lines.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Order {
    pub(super) lines: u64,
    total: u64,
}

impl annals::snapshot::Snapshottable for Order {}

#[derive(Debug, Clone)]
pub(super) struct AddLine {
    pub(super) sku: String,
    pub(super) qty: u32,
    pub(super) price: u64,
    pub(super) note: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub(super) enum OrderEvent {
    LineAdded {
        sku: String,
        qty: u32,
        price: u64,
        note: String,
    },
}

impl DomainEvent for OrderEvent {}

impl Aggregate for Order {
    const CATEGORY: &'static str = "order";
    type Command = AddLine;
    type Event = OrderEvent;
    type Error = Infallible;

    fn handle(&self, c: AddLine) -> Result<Vec<OrderEvent>, Infallible> {
        Ok(vec![OrderEvent::LineAdded {
            sku: c.sku,
            qty: c.qty,
            price: c.price,
            note: c.note,
        }])
    }

    fn apply(&mut self, event: &OrderEvent) {
        let OrderEvent::LineAdded { qty, price, .. } = event;
        self.lines += 1;
        self.total += u64::from(*qty) * price;
    }
}

/// Command `i` of the spec.
pub(super) fn command(i: u64) -> AddLine {
    AddLine {
        sku: format!("sku-{:06}", i % 5000),
        qty: (i % 7) as u32 + 1,
        price: 1999 + i % 300,
        note: "gift wrap please, deliver to the back door after six pm, thanks!".repeat(2),
    }
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The spec retries a conflict at once until it succeeds.
fn until_success() -> RetryPolicy {
    RetryPolicy {
        max_attempts: u32::MAX,
        base_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
    }
}

async fn open(db: &str) -> CliResult<(Store, &'static str)> {
    let options = StoreOptions::from_url(db)?;
    let backend = options.backend_name();
    Ok((options.open().await?, backend))
}

/// W1: `tasks` tasks run `commands` commands against `aggregates` orders.
pub(crate) async fn commands(db: &str, args: CommandsArgs, out: &Output) -> CliResult {
    if args.tasks == 0 || args.aggregates == 0 {
        return Err(CliError::Usage("--tasks and --aggregates must be positive".into()));
    }
    let (store, backend) = open(db).await?;
    let orders = Repository::<Order>::new(store.clone()).with_retry(until_success());
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.tasks)
        .map(|task| {
            let (orders, next) = (orders.clone(), next.clone());
            let (total, aggregates) = (args.commands, args.aggregates);
            tokio::spawn(async move {
                let mut latency = histogram();
                let mut conflicts = 0u64;
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (task + 1);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return Ok::<_, CliError>((latency, conflicts));
                    }
                    let id = (xorshift(&mut rng) % aggregates).to_string();
                    let began = Instant::now();
                    let executed = orders
                        .execute(&id, command(i), &CommandContext::new())
                        .await
                        .map_err(|error| CliError::Usage(format!("command {i} failed: {error}")))?;
                    conflicts += u64::from(executed.attempts.saturating_sub(1));
                    latency.saturating_record(began.elapsed().as_micros() as u64);
                }
            })
        })
        .collect();
    let mut latency = histogram();
    let mut conflicts = 0;
    for task in tasks {
        let (histogram, lost) = task
            .await
            .map_err(|panic| CliError::Usage(format!("a task panicked: {panic}")))??;
        latency.add(histogram).expect("same bounds");
        conflicts += lost;
    }
    let seconds = started.elapsed().as_secs_f64();
    store.close().await;
    let rate = args.commands as f64 / seconds;
    let report = json!({
        "workload": "w1", "backend": backend, "writers": args.tasks, "events_per_append": 1,
        "events": args.commands, "seconds": seconds, "events_per_sec": rate,
        "p50_ms": quantile_ms(&latency, 0.5), "p99_ms": quantile_ms(&latency, 0.99),
        "baseline_events_per_sec": null, "ratio_to_baseline": null,
        "concurrency": args.tasks, "commands": args.commands, "commands_per_sec": rate, "conflicts": conflicts,
    });
    out.print(&report, |r| {
        format!(
            "{backend} W1, {} tasks: {} commands in {seconds:.1} s = {rate:.0} commands/s (p50 {} ms, p99 {} ms), {conflicts} conflicts",
            args.tasks, args.commands, r["p50_ms"], r["p99_ms"]
        )
    });
    Ok(())
}

/// W2: one order with `events` events, loaded `loads` times.
pub(crate) async fn load(db: &str, args: LoadArgs, out: &Output) -> CliResult {
    if args.snapshots {
        return super::snapshots::load(db, args, out).await;
    }
    if args.loads == 0 {
        return Err(CliError::Usage("--loads must be positive".into()));
    }
    let (store, backend) = open(db).await?;
    let orders = Repository::<Order>::new(store.clone()).with_retry(until_success());
    let id = format!("big{}", uuid::Uuid::now_v7().simple());
    for i in 0..args.events {
        orders
            .execute(&id, command(i), &CommandContext::new())
            .await
            .map_err(|error| CliError::Usage(format!("command {i} failed: {error}")))?;
    }
    let mut times = Vec::with_capacity(args.loads);
    let started = Instant::now();
    for _ in 0..args.loads {
        let began = Instant::now();
        let loaded = orders.load(&id).await?;
        times.push(began.elapsed().as_secs_f64() * 1_000.0);
        assert_eq!(loaded.state.lines, args.events, "the order lost events");
    }
    let seconds = started.elapsed().as_secs_f64();
    store.close().await;
    times.sort_by(f64::total_cmp);
    let median = times[(times.len() - 1) / 2];
    let p99 = times[((times.len() - 1) as f64 * 0.99).round() as usize];
    let report = json!({
        "workload": "w2", "backend": backend, "writers": 1, "events_per_append": 1,
        "events": args.events, "seconds": seconds, "events_per_sec": args.events as f64 / (median / 1_000.0),
        "p50_ms": median, "p99_ms": p99, "baseline_events_per_sec": null, "ratio_to_baseline": null,
        "loads": args.loads, "load_median_ms": median, "load_min_ms": times[0],
    });
    out.print(&report, |_| {
        format!(
            "{backend} W2: an order of {} events loaded {} times: median {median:.2} ms, min {:.2} ms",
            args.events, args.loads, times[0]
        )
    });
    Ok(())
}
