//! W1 (command throughput) and W2 (rehydration) of the shared workload spec, implemented
//! exactly as every compared system implements them: the `Order` aggregate with one
//! `AddLine` command, command `i`'s fields derived from `i`, each task choosing its
//! aggregate with its own xorshift64 generator, conflicts retried until they succeed.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::aggregate::{Aggregate, CommandContext, DomainEvent, Repository, RetryPolicy};
use annals::{Store, StoreOptions};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::load::{histogram, quantile_ms};
use crate::output::{CliError, CliResult, Output};

#[derive(Debug, clap::Args)]
pub(crate) struct CommandsArgs {
    /// Concurrent tasks (C).
    #[arg(long, default_value_t = 8)]
    pub(super) tasks: u64,
    /// Commands in all.
    #[arg(long, default_value_t = 20_000)]
    pub(super) commands: u64,
    /// Aggregates the commands spread over (order-0 …).
    #[arg(long, default_value_t = 1_000)]
    pub(super) aggregates: u64,
    /// Skip the raw baseline.
    #[arg(long)]
    no_baseline: bool,
    /// W1 as the shared spec defines it: every command loads its aggregate (no cache,
    /// no snapshots). Without it, W1-warm: the repository as users get it, its cache on.
    #[arg(long)]
    cold: bool,
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

#[derive(Debug, Serialize, Deserialize, DomainEvent)]
#[serde(tag = "type", content = "data")]
pub(super) enum OrderEvent {
    LineAdded {
        sku: String,
        qty: u32,
        price: u64,
        note: String,
    },
}

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

async fn open(db: &str) -> CliResult<(Store, StoreOptions)> {
    let options = StoreOptions::from_url(db)?;
    Ok((options.clone().open().await?, options))
}

/// What one run of W1 measured.
pub(super) struct W1Run {
    seconds: f64,
    latency_us: Histogram<u64>,
    conflicts: u64,
}

impl W1Run {
    fn commands_per_sec(&self, commands: u64) -> f64 {
        commands as f64 / self.seconds
    }
}

/// W1's command stream: `tasks` tasks take command numbers from one shared counter and
/// each picks its aggregates with its own xorshift64 generator. `execute(task, order,
/// command)` runs one command until it succeeds and returns the attempts it took.
pub(super) async fn run_w1<F, Fut>(args: &CommandsArgs, execute: F) -> CliResult<W1Run>
where
    F: Fn(u64, u64, AddLine) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = CliResult<u32>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.tasks)
        .map(|task| {
            let (execute, next) = (execute.clone(), next.clone());
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
                    let order = xorshift(&mut rng) % aggregates;
                    let began = Instant::now();
                    let attempts = execute(task, order, command(i))
                        .await
                        .map_err(|error| CliError::Usage(format!("command {i} failed: {error}")))?;
                    conflicts += u64::from(attempts.saturating_sub(1));
                    latency.saturating_record(began.elapsed().as_micros() as u64);
                }
            })
        })
        .collect();
    let mut latency_us = histogram();
    let mut conflicts = 0;
    for task in tasks {
        let (histogram, lost) = task
            .await
            .map_err(|panic| CliError::Usage(format!("a task panicked: {panic}")))??;
        latency_us.add(histogram).expect("same bounds");
        conflicts += lost;
    }
    Ok(W1Run {
        seconds: started.elapsed().as_secs_f64(),
        latency_us,
        conflicts,
    })
}

/// W1: `tasks` tasks run `commands` commands against `aggregates` orders, through a
/// repository; then the same commands on the raw engine, and on SQLite once more
/// writing by hand what the store writes (see [`raw_commands`]).
///
/// [`raw_commands`]: super::raw_commands
pub(crate) async fn commands(db: &str, args: CommandsArgs, out: &Output) -> CliResult {
    if args.tasks == 0 || args.aggregates == 0 {
        return Err(CliError::Usage("--tasks and --aggregates must be positive".into()));
    }
    let (store, options) = open(db).await?;
    let backend = options.backend_name();
    let mut orders = Repository::<Order>::new(store.clone()).with_retry(until_success());
    if args.cold {
        orders = orders.without_cache();
    }
    let workload = if args.cold { "w1" } else { "w1-warm" };
    let run = run_w1(&args, move |_, order, command| {
        let orders = orders.clone();
        async move {
            let executed = orders
                .execute(&order.to_string(), command, &CommandContext::new())
                .await
                .map_err(|error| CliError::Usage(error.to_string()))?;
            Ok(executed.attempts)
        }
    })
    .await?;
    let partitions = store.partition_count();
    store.close().await;
    let (raw, raw_log) = if args.no_baseline {
        (None, None)
    } else {
        (
            super::raw_commands::run(db, &options, &args).await?,
            super::raw_commands::run_log(db, &options, &args, partitions).await?,
        )
    };

    let rate = run.commands_per_sec(args.commands);
    let raw_rate = raw.as_ref().map(|raw| raw.commands_per_sec(args.commands));
    let log_rate = raw_log.as_ref().map(|raw| raw.commands_per_sec(args.commands));
    let report = json!({
        "workload": workload, "backend": backend, "writers": args.tasks, "events_per_append": 1,
        "events": args.commands, "seconds": run.seconds, "events_per_sec": rate,
        "p50_ms": quantile_ms(&run.latency_us, 0.5), "p99_ms": quantile_ms(&run.latency_us, 0.99),
        "baseline_events_per_sec": raw_rate, "ratio_to_baseline": raw_rate.map(|raw| rate / raw),
        "baseline_p50_ms": raw.as_ref().map(|raw| quantile_ms(&raw.latency_us, 0.5)),
        "baseline_p99_ms": raw.as_ref().map(|raw| quantile_ms(&raw.latency_us, 0.99)),
        "baseline_conflicts": raw.as_ref().map(|raw| raw.conflicts),
        "log_baseline_commands_per_sec": log_rate, "ratio_to_log_baseline": log_rate.map(|raw| rate / raw),
        "log_baseline_p99_ms": raw_log.as_ref().map(|raw| quantile_ms(&raw.latency_us, 0.99)),
        "concurrency": args.tasks, "commands": args.commands, "commands_per_sec": rate, "conflicts": run.conflicts,
    });
    out.print(&report, |r| {
        let baseline = match raw_rate {
            Some(raw) => format!(
                "\nraw engine: {raw:.0} commands/s (p50 {} ms, p99 {} ms), {} conflicts\nratio to the raw engine: {:.2}",
                r["baseline_p50_ms"],
                r["baseline_p99_ms"],
                r["baseline_conflicts"],
                rate / raw
            ),
            None => String::new(),
        };
        let log_baseline = match log_rate {
            Some(raw) => format!(
                "\nraw engine writing what the store writes: {raw:.0} commands/s (p99 {} ms)\nratio to it: {:.2}",
                r["log_baseline_p99_ms"],
                rate / raw
            ),
            None => String::new(),
        };
        format!(
            "{backend} {}, {} tasks: {} commands in {:.1} s = {rate:.0} commands/s (p50 {} ms, p99 {} ms), {} conflicts{baseline}{log_baseline}",
            if args.cold { "W1" } else { "W1-warm" },
            args.tasks,
            args.commands,
            run.seconds,
            r["p50_ms"],
            r["p99_ms"],
            run.conflicts
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
    let (store, options) = open(db).await?;
    let backend = options.backend_name();
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
