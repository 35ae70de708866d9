//! `annals bench`: throughput and latency of the framework, set beside the raw engine
//! measured in the same run with the same writers, durability and connection settings.
//!
//! The baseline is the engine at its best for the same shape: prepared statements, one
//! multi-row INSERT per append into a table with the same columns and indexes as
//! `annals_events`, one transaction per append, no framework.

mod baseline;
mod follow;
mod http;
mod kafka;
mod load;
mod personal;
mod project;
mod raw_commands;
mod scavenge;
mod snapshots;
mod timers;
mod workloads;

use std::time::Duration;

use annals::{AppendRequest, ExpectedVersion, NewEvent, StoreOptions, StreamId};
use serde::Serialize;

use crate::output::{CliError, CliResult, Output};
use load::{Load, Measured};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Bench {
    /// Appends of N events to random streams by concurrent writers.
    Append(AppendArgs),
    /// W1: commands against 1,000 aggregates from concurrent tasks (load, handle, append, retry).
    Commands(workloads::CommandsArgs),
    /// W2: rehydrating one aggregate with a long history.
    Load(workloads::LoadArgs),
    /// A follower shipping the log from offset 0, and replication lag at a steady rate.
    Follow(follow::FollowArgs),
    /// Appends over HTTP to `annals serve` beside the same appends in-process.
    Http(http::HttpArgs),
    /// A consumer group catching up a SQL read model, beside the raw upserts; then
    /// append → handled latency at a steady rate.
    Project(project::ProjectArgs),
    /// A backlog of due timers fired by a timer group, each running one command.
    Timers(timers::TimersArgs),
    /// Scavenging a store whose retention rule expires most records, while writers
    /// append to other streams; then the log is checked whole.
    Scavenge(scavenge::ScavengeArgs),
    /// Appends and reads with personal data sealed beside the same without, and erasures.
    Personal(personal::PersonalArgs),
    /// The Kafka bridge (sink and source) beside a bare producer and consumer on the
    /// same broker, and append → Kafka consumer latency at a steady rate.
    Kafka(kafka::KafkaArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct AppendArgs {
    /// Concurrent writers (tasks), each appending in a loop.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Events in each append.
    #[arg(long, default_value_t = 1)]
    events_per_append: u64,
    /// How long each phase runs.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Stop each phase after this many events instead (e.g. 1000000 to watch memory).
    #[arg(long)]
    events: Option<u64>,
    /// How many streams the appends spread over.
    #[arg(long, default_value_t = 10_000)]
    streams: u64,
    /// Skip the raw baseline.
    #[arg(long)]
    no_baseline: bool,
}

/// The report: the fields every `annals bench` prints, then this workload's own.
#[derive(Debug, Serialize)]
struct Report {
    workload: &'static str,
    backend: &'static str,
    writers: usize,
    events_per_append: u64,
    events: u64,
    seconds: f64,
    events_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    baseline_events_per_sec: Option<f64>,
    ratio_to_baseline: Option<f64>,
    baseline_p50_ms: Option<f64>,
    baseline_p99_ms: Option<f64>,
    rss_start_mb: f64,
    rss_peak_mb: f64,
    rss_end_mb: f64,
    settings: baseline::Settings,
}

pub(crate) async fn run(db: &str, bench: Bench, out: &Output) -> CliResult {
    match bench {
        Bench::Append(args) => append(db, args, out).await,
        Bench::Commands(args) => workloads::commands(db, args, out).await,
        Bench::Load(args) => workloads::load(db, args, out).await,
        Bench::Follow(args) => follow::follow(db, args, out).await,
        Bench::Http(args) => http::http(db, args, out).await,
        Bench::Project(args) => project::project(db, args, out).await,
        Bench::Timers(args) => timers::timers(db, args, out).await,
        Bench::Scavenge(args) => scavenge::scavenge(db, args, out).await,
        Bench::Personal(args) => personal::personal(db, args, out).await,
        Bench::Kafka(args) => kafka::kafka_bench(db, args, out).await,
    }
}

/// A payload of about 200 bytes, shaped like an order line.
pub(crate) fn payload(n: u64) -> String {
    format!(
        r#"{{"sku":"sku-{:06}","qty":{},"price":{},"note":"{}"}}"#,
        n % 5000,
        n % 7 + 1,
        1999 + n % 300,
        "n".repeat(130)
    )
}

async fn append(db: &str, args: AppendArgs, out: &Output) -> CliResult {
    if args.writers == 0 || args.events_per_append == 0 || args.streams == 0 {
        return Err(CliError::Usage(
            "--writers, --events-per-append and --streams must be positive".into(),
        ));
    }
    let options = StoreOptions::from_url(db)?;
    let settings = baseline::Settings::detect(db, &options).await?;
    let store = options.clone().open().await?;
    let load = Load {
        writers: args.writers,
        events_per_op: args.events_per_append,
        seconds: args.seconds,
        events: args.events,
        quiet: out.is_json(),
    };

    let rss = load::RssSampler::start(Duration::from_millis(100));
    let framework = {
        let store = store.clone();
        let streams = args.streams;
        let per_append = args.events_per_append;
        load::drive(&load, "annals", move |writer, seq| {
            let store = store.clone();
            async move {
                // Spread writers over the streams without coordination.
                let n = (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ writer as u64) % streams;
                let stream = StreamId::new(format!("bench-{n}"))?;
                let mut request = AppendRequest::new(stream, ExpectedVersion::Any);
                for i in 0..per_append {
                    request = request.event(NewEvent::from_json_text("LineAdded", payload(seq * per_append + i))?);
                }
                store.append(request).await?;
                Ok(())
            }
        })
        .await?
    };
    let rss = rss.stop().await;
    store.close().await;

    let raw: Option<Measured> = if args.no_baseline {
        None
    } else {
        baseline::run(db, &options, &load).await?
    };
    let ratio = raw
        .as_ref()
        .map(|raw| framework.events_per_sec() / raw.events_per_sec());
    let report = Report {
        workload: "append",
        backend: options.backend_name(),
        writers: args.writers,
        events_per_append: args.events_per_append,
        events: framework.events,
        seconds: framework.elapsed.as_secs_f64(),
        events_per_sec: framework.events_per_sec(),
        p50_ms: framework.quantile_ms(0.50),
        p99_ms: framework.quantile_ms(0.99),
        baseline_events_per_sec: raw.as_ref().map(Measured::events_per_sec),
        ratio_to_baseline: ratio,
        baseline_p50_ms: raw.as_ref().map(|raw| raw.quantile_ms(0.50)),
        baseline_p99_ms: raw.as_ref().map(|raw| raw.quantile_ms(0.99)),
        rss_start_mb: rss.start_mb,
        rss_peak_mb: rss.peak_mb,
        rss_end_mb: rss.end_mb,
        settings,
    };
    out.print(&report, human);
    Ok(())
}

fn human(r: &Report) -> String {
    let baseline = match (r.baseline_events_per_sec, r.ratio_to_baseline) {
        (Some(raw), Some(ratio)) => format!(
            "\nraw engine: {raw:.0} events/s (p50 {:.2} ms, p99 {:.2} ms)\nratio to the raw engine: {ratio:.2}",
            r.baseline_p50_ms.unwrap_or_default(),
            r.baseline_p99_ms.unwrap_or_default()
        ),
        _ => String::new(),
    };
    format!(
        "{} append, {} writers x {} events per append: {} events in {:.1} s\n\
         annals: {:.0} events/s (p50 {:.2} ms, p99 {:.2} ms){baseline}\n\
         memory: {:.1} MB at start, {:.1} MB peak, {:.1} MB at end",
        r.backend,
        r.writers,
        r.events_per_append,
        r.events,
        r.seconds,
        r.events_per_sec,
        r.p50_ms,
        r.p99_ms,
        r.rss_start_mb,
        r.rss_peak_mb,
        r.rss_end_mb
    )
}
