//! `annals bench scavenge`: a store of N records under a retention rule that expires
//! most of them, scavenged while writers append to other streams. Reports the records
//! redacted per second, and the writers' appends per second alone and during the
//! scavenge; then checks that no live record was touched and that every partition is
//! still gapless (I1) and every stream's versions contiguous (I2).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::{
    AppendRequest, ExpectedVersion, NewEvent, Offset, Partition, Retention, RetentionScope, ScavengeOptions, Store,
    StreamId, Version,
};
use serde_json::json;

use crate::output::{CliError, CliResult, Output};

#[derive(Debug, clap::Args)]
pub(crate) struct ScavengeArgs {
    /// Records in the store before the scavenge, spread over --streams streams.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Streams holding them (category `bench.kept`).
    #[arg(long, default_value_t = 10_000)]
    streams: u64,
    /// The retention rule keeps the newest this many records of each stream.
    #[arg(long, default_value_t = 10)]
    keep: u64,
    /// Concurrent writers appending one event at a time to other streams, throughout.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Seconds the writers run alone, for the baseline.
    #[arg(long, default_value_t = 10)]
    alone_seconds: u64,
    /// Throttle the scavenger to this many records per second.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_records_per_sec: Option<u64>,
}

/// Writers appending to `bench.live` streams until told to stop, counting their appends.
struct Writers {
    stop: Arc<AtomicBool>,
    appended: Arc<AtomicU64>,
    tasks: tokio::task::JoinSet<annals::Result<HashMap<StreamId, u64>>>,
}

impl Writers {
    fn start(store: &Store, writers: usize) -> Writers {
        let (stop, appended) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let mut tasks = tokio::task::JoinSet::new();
        for writer in 0..writers {
            let (store, stop, appended) = (store.clone(), stop.clone(), appended.clone());
            tasks.spawn(async move {
                let mut written: HashMap<StreamId, u64> = HashMap::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let stream = StreamId::new(format!("bench.live-{writer}-{}", n % 100))?;
                    let event = NewEvent::json("Measured", &json!({ "writer": writer, "n": n }))?;
                    store
                        .append(AppendRequest::new(stream.clone(), ExpectedVersion::Any).event(event))
                        .await?;
                    *written.entry(stream).or_default() += 1;
                    appended.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                Ok(written)
            });
        }
        Writers { stop, appended, tasks }
    }

    /// Appends so far.
    fn count(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    /// Stops them; what each stream was acknowledged.
    async fn stop(mut self) -> CliResult<HashMap<StreamId, u64>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = HashMap::new();
        while let Some(done) = self.tasks.join_next().await {
            all.extend(done.map_err(|e| CliError::Usage(e.to_string()))??);
        }
        Ok(all)
    }
}

pub(crate) async fn scavenge(db: &str, args: ScavengeArgs, out: &Output) -> CliResult {
    if args.streams == 0 || args.records < args.streams || args.writers == 0 || args.alone_seconds == 0 {
        return Err(CliError::Usage(
            "--streams, --writers and --alone-seconds must be positive, and --records at least --streams".into(),
        ));
    }
    let store = annals::StoreOptions::from_url(db)?.open().await?;
    let backend = store.backend_name();
    let per_stream = args.records / args.streams;
    if !out.is_json() {
        eprintln!(
            "writing {} records to {} streams",
            per_stream * args.streams,
            args.streams
        );
    }
    fill(&store, args.streams, per_stream).await?;
    let rule = Retention {
        max_count: Some(args.keep),
        ..Retention::default()
    };
    store
        .set_retention(&RetentionScope::Category("bench.kept".into()), rule)
        .await?;

    let writers = Writers::start(&store, args.writers);
    let started = (Instant::now(), writers.count());
    tokio::time::sleep(Duration::from_secs(args.alone_seconds)).await;
    let alone = (writers.count() - started.1) as f64 / started.0.elapsed().as_secs_f64();

    if !out.is_json() {
        eprintln!("scavenging while {} writers append", args.writers);
    }
    let started = (Instant::now(), writers.count());
    let options = ScavengeOptions {
        max_records_per_sec: args.max_records_per_sec,
        ..ScavengeOptions::default()
    };
    let done = store.scavenge(options, &mut |_| {}).await?;
    let seconds = started.0.elapsed().as_secs_f64();
    let during = (writers.count() - started.1) as f64 / seconds;
    let acknowledged = writers.stop().await?;

    let checked = check(&store, &acknowledged, per_stream, args.keep).await?;
    store.close().await;
    let redacted_per_sec = done.records_redacted as f64 / seconds;
    let ratio = during / alone;
    let report = json!({
        "workload": "scavenge", "backend": backend, "records": per_stream * args.streams,
        "streams": args.streams, "keep": args.keep, "writers": args.writers,
        "records_redacted": done.records_redacted, "streams_truncated": done.streams_truncated,
        "seconds": seconds, "redacted_per_sec": redacted_per_sec, "max_records_per_sec": args.max_records_per_sec,
        "appends_per_sec_alone": alone, "appends_per_sec_during": during, "append_ratio": ratio,
        "live_records_checked": checked,
    });
    out.print(&report, |_| {
        format!(
            "{backend}: {} of {} records redacted in {seconds:.1} s = {redacted_per_sec:.0} records/s; \
             {} writers appended {alone:.0}/s alone and {during:.0}/s during the scavenge ({ratio:.2}); \
             {checked} live records intact, every partition gapless, every stream contiguous",
            done.records_redacted,
            per_stream * args.streams,
            args.writers
        )
    });
    Ok(())
}

/// `streams` streams of `per_stream` records each, written 100 events per append by
/// 8 tasks.
async fn fill(store: &Store, streams: u64, per_stream: u64) -> CliResult {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (store, next) = (store.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let stream = next.fetch_add(1, Ordering::Relaxed);
                if stream >= streams {
                    return Ok::<_, annals::Error>(());
                }
                let id = StreamId::new(format!("bench.kept-{stream}"))?;
                let mut written = 0;
                while written < per_stream {
                    let count = (per_stream - written).min(100);
                    let mut request = AppendRequest::new(id.clone(), ExpectedVersion::Any);
                    for n in written..written + count {
                        request = request.event(NewEvent::json("Measured", &json!({ "n": n }))?);
                    }
                    store.append(request).await?;
                    written += count;
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| CliError::Usage(e.to_string()))??;
    }
    Ok(())
}

/// Reads the whole log: every partition gapless (I1), every stream's versions 1..v in
/// order (I2), each writer's acknowledged records there and not redacted, and each
/// kept stream redacted below its newest `keep`. Returns the live records checked.
async fn check(store: &Store, acknowledged: &HashMap<StreamId, u64>, per_stream: u64, keep: u64) -> CliResult<u64> {
    let broken = |what: String| Err(CliError::Usage(format!("the scavenge broke the log: {what}")));
    let mut versions: HashMap<StreamId, Version> = HashMap::new();
    let mut live: HashMap<StreamId, u64> = HashMap::new();
    for partition in Partition::all(store.partition_count()) {
        let mut next = Offset(0);
        loop {
            let records = store.read_partition(partition, next, 10_000).await?;
            if records.is_empty() {
                break;
            }
            for record in records {
                if record.offset != next {
                    return broken(format!("partition {partition} has {} where {next} was", record.offset));
                }
                next += 1;
                let version = versions.entry(record.stream.clone()).or_default();
                if record.version != *version + 1 {
                    return broken(format!(
                        "{} has version {} after {version}",
                        record.stream, record.version
                    ));
                }
                *version = record.version;
                match record.stream.category() {
                    "bench.live" if record.redacted => {
                        return broken(format!("a live record of {} was redacted", record.stream));
                    }
                    "bench.live" => *live.entry(record.stream.clone()).or_default() += 1,
                    "bench.kept" if record.redacted != (record.version.0 <= per_stream.saturating_sub(keep)) => {
                        return broken(format!(
                            "{} version {} redacted: {}",
                            record.stream, record.version, record.redacted
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    for (stream, count) in acknowledged {
        if live.get(stream) != Some(count) {
            return broken(format!(
                "{stream} holds {:?} of its {count} acknowledged records",
                live.get(stream)
            ));
        }
    }
    Ok(live.values().sum())
}
