//! The load driver shared by every benchmark phase: concurrent writers run an
//! operation in a loop until a deadline or an event budget, timing each call.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use crate::output::{CliError, CliResult};

/// How a phase runs.
pub(super) struct Load {
    pub(super) writers: usize,
    pub(super) events_per_op: u64,
    pub(super) seconds: f64,
    /// Stop after this many events instead of after `seconds`.
    pub(super) events: Option<u64>,
    /// No progress bar (JSON output goes to scripts).
    pub(super) quiet: bool,
}

/// What a phase measured.
pub(super) struct Measured {
    pub(super) events: u64,
    pub(super) elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Measured {
    pub(super) fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(super) fn quantile_ms(&self, quantile: f64) -> f64 {
        quantile_ms(&self.latency_us, quantile)
    }
}

/// A latency quantile of a histogram of microseconds, in milliseconds.
pub(super) fn quantile_ms(latency_us: &Histogram<u64>, quantile: f64) -> f64 {
    latency_us.value_at_quantile(quantile) as f64 / 1_000.0
}

/// A histogram of latencies in microseconds, up to ten minutes, 3 significant digits.
pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Runs `op(writer, sequence)` from `load.writers` tasks. Memory stays bounded by the
/// histograms, whatever the number of operations.
pub(super) async fn drive<F, Fut>(load: &Load, label: &str, op: F) -> CliResult<Measured>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = CliResult> + Send,
{
    let deadline = Instant::now() + Duration::from_secs_f64(load.seconds);
    let budget = load.events.map(|events| events.div_ceil(load.events_per_op));
    let next_op = Arc::new(AtomicU64::new(0));
    let done_ops = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = progress_bar(load, label, budget);
    let started = Instant::now();
    let ticker = {
        let (progress, done_ops, stop) = (progress.clone(), done_ops.clone(), stop.clone());
        let per_op = load.events_per_op;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let done = done_ops.load(Ordering::Relaxed);
                match budget {
                    Some(_) => progress.set_position(done * per_op),
                    None => progress.set_position(started.elapsed().as_secs()),
                }
                progress.set_message(format!("{} events", done * per_op));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let tasks: Vec<_> = (0..load.writers)
        .map(|writer| {
            let (op, next_op, done_ops, stop) = (op.clone(), next_op.clone(), done_ops.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latency = histogram();
                loop {
                    if stop.load(Ordering::Relaxed) || (budget.is_none() && Instant::now() >= deadline) {
                        break;
                    }
                    let seq = next_op.fetch_add(1, Ordering::Relaxed);
                    if budget.is_some_and(|budget| seq >= budget) {
                        break;
                    }
                    let began = Instant::now();
                    if let Err(error) = op(writer, seq).await {
                        stop.store(true, Ordering::Relaxed);
                        return Err(error);
                    }
                    latency.saturating_record(began.elapsed().as_micros() as u64);
                    done_ops.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, CliError>(latency)
            })
        })
        .collect();
    let mut latency_us = histogram();
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok(histogram)) => latency_us.add(histogram).expect("same histogram bounds"),
            Ok(Err(error)) => failure = failure.or(Some(error)),
            Err(panic) => failure = failure.or(Some(CliError::Usage(format!("a writer panicked: {panic}")))),
        }
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = ticker.await;
    progress.finish_and_clear();
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(Measured {
        events: done_ops.load(Ordering::Relaxed) * load.events_per_op,
        elapsed,
        latency_us,
    })
}

fn progress_bar(load: &Load, label: &str, budget: Option<u64>) -> ProgressBar {
    if load.quiet {
        return ProgressBar::hidden();
    }
    let (length, template) = match budget {
        Some(ops) => (
            ops * load.events_per_op,
            "{prefix:>8} [{bar:30}] {pos}/{len} events {per_sec} eta {eta}",
        ),
        None => (
            load.seconds.ceil() as u64,
            "{prefix:>8} [{bar:30}] {elapsed} of {len} s, {msg}",
        ),
    };
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// Resident memory of this process, sampled while a phase runs.
pub(super) struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<RssFigures>,
}

/// Resident set size in MB at the start, at the peak and at the end of a phase.
#[derive(Debug, Clone, Copy)]
pub(super) struct RssFigures {
    pub(super) start_mb: f64,
    pub(super) peak_mb: f64,
    pub(super) end_mb: f64,
}

impl RssSampler {
    pub(super) fn start(every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let start_mb = rss_mb();
                let mut peak_mb = start_mb;
                while !stop.load(Ordering::Relaxed) {
                    peak_mb = peak_mb.max(rss_mb());
                    tokio::time::sleep(every).await;
                }
                let end_mb = rss_mb();
                RssFigures {
                    start_mb,
                    peak_mb: peak_mb.max(end_mb),
                    end_mb,
                }
            })
        };
        RssSampler { stop, task }
    }

    pub(super) async fn stop(self) -> RssFigures {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or(RssFigures {
            start_mb: 0.0,
            peak_mb: 0.0,
            end_mb: 0.0,
        })
    }
}

/// `VmRSS` from `/proc/self/status`, in MB (0 where there is no procfs).
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
