//! `annals bench timers`: a backlog of due timers fired by a timer group, each running
//! one command (an append under the timer's command id), from the first `TimerFired`
//! to the last command applied; and the scheduling that built the backlog.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::aggregate::CommandContext;
use annals::group::GroupOptions;
use annals::schedule::{Scheduler, Timer, TimerHandler, TimerOptions, TimerWorker};
use annals::{async_trait, AppendRequest, ExpectedVersion, NewEvent, Store, StreamId};
use serde_json::json;

use super::load::RssSampler;
use crate::output::{CliError, CliResult, Output};

#[derive(Debug, clap::Args)]
pub(crate) struct TimersArgs {
    /// Timers in the backlog, all due when the workers start.
    #[arg(long, default_value_t = 100_000)]
    timers: u64,
    /// Timer workers (group members) in this process.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// `TimerFired` appends in flight per worker.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Concurrent schedulers building the backlog.
    #[arg(long, default_value_t = 64)]
    schedulers: usize,
}

/// The command a timer runs: an append under its command id.
struct Expire {
    store: Store,
    applied: Arc<AtomicU64>,
}

#[async_trait]
impl TimerHandler for Expire {
    async fn fire(&self, timer: &Timer) -> annals::Result<()> {
        let n = timer.payload["n"].as_u64().unwrap_or(0);
        let request = AppendRequest::new(
            StreamId::new(format!("bench-expiry-{}", n % 1_000))?,
            ExpectedVersion::Any,
        )
        .command_id(timer.context().command_id)
        .event(NewEvent::json("Expired", &json!({ "n": n }))?);
        if !self.store.append(request).await?.duplicate {
            self.applied.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

pub(crate) async fn timers(db: &str, args: TimersArgs, out: &Output) -> CliResult {
    if args.timers == 0 || args.workers == 0 || args.in_flight == 0 || args.schedulers == 0 {
        return Err(CliError::Usage(
            "--timers, --workers, --in-flight and --schedulers must be positive".into(),
        ));
    }
    let store = annals::StoreOptions::from_url(db)?.open().await?;
    let backend = store.backend_name();
    if !out.is_json() {
        eprintln!("scheduling {} timers", args.timers);
    }
    let scheduler = Scheduler::new(&store);
    let due = chrono::Utc::now() - chrono::Duration::minutes(1);
    let started = Instant::now();
    // Each scheduler a task of its own, as concurrent requests would be.
    let next = Arc::new(AtomicU64::new(0));
    let mut schedulers = tokio::task::JoinSet::new();
    for _ in 0..args.schedulers {
        let (scheduler, next, total) = (scheduler.clone(), next.clone(), args.timers);
        schedulers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return Ok::<_, annals::Error>(());
                }
                let context = CommandContext::new();
                scheduler
                    .schedule(due, &context, "bench.expire", &json!({ "n": n }))
                    .await?;
            }
        });
    }
    while let Some(done) = schedulers.join_next().await {
        done.map_err(|e| CliError::Usage(e.to_string()))??;
    }
    let schedule_seconds = started.elapsed().as_secs_f64();

    let applied = Arc::new(AtomicU64::new(0));
    let options = TimerOptions {
        group: GroupOptions {
            heartbeat_interval: Duration::from_millis(200),
            ..GroupOptions::default()
        },
        in_flight: args.in_flight,
        ..TimerOptions::default()
    };
    let rss = RssSampler::start(Duration::from_millis(50));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.workers {
        let handler = Expire {
            store: store.clone(),
            applied: applied.clone(),
        };
        workers.push(TimerWorker::start(&store, "bench-timers", handler, options.clone()).await?);
    }
    // Bounded: a handler that keeps failing (dead-lettered timers) would never finish.
    let give_up = Instant::now() + Duration::from_secs(600);
    while applied.load(Ordering::Relaxed) < args.timers {
        if Instant::now() > give_up {
            return Err(CliError::Usage(format!(
                "only {} of {} timers fired within 600 s",
                applied.load(Ordering::Relaxed),
                args.timers
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let memory = rss.stop().await;
    for worker in workers {
        worker.shutdown().await?;
    }
    store.close().await;

    let rate = args.timers as f64 / seconds;
    let schedule_rate = args.timers as f64 / schedule_seconds;
    let report = json!({
        "workload": "timers", "backend": backend, "timers": args.timers, "workers": args.workers,
        "in_flight": args.in_flight, "seconds": seconds, "fired_per_sec": rate,
        "schedulers": args.schedulers, "schedule_seconds": schedule_seconds, "scheduled_per_sec": schedule_rate,
        "rss_start_mb": memory.start_mb, "rss_peak_mb": memory.peak_mb,
    });
    out.print(&report, |_| {
        format!(
            "{backend}: {} due timers fired, each running one command, in {seconds:.1} s = {rate:.0} timers/s \
             ({} worker(s)); scheduled at {schedule_rate:.0}/s by {} tasks; RSS {:.0} MB → peak {:.0} MB",
            args.timers, args.workers, args.schedulers, memory.start_mb, memory.peak_mb
        )
    });
    Ok(())
}
