//! The metrics the library records, through the `metrics` facade: an application that
//! installs any recorder (a Prometheus exporter, say) gets them from the stores and
//! group members it runs, with no server in the process. Without a recorder they cost
//! an atomic load each. Every name is here; `book/src/operations/observability.md`
//! lists them with what to alert on.

use std::time::Instant;

use metrics::{counter, gauge, histogram};

use crate::error::Result;
use crate::log::AppendOutcome;
use crate::position::Partition;

/// One append answered: its latency, and its events if it wrote any.
pub(crate) fn append(engine: &'static str, started: Instant, result: &Result<AppendOutcome>, events: usize) {
    histogram!("annals_append_seconds", "engine" => engine).record(started.elapsed().as_secs_f64());
    let outcome = match result {
        Ok(outcome) if outcome.duplicate => "duplicate",
        Ok(_) => "written",
        Err(_) => "refused",
    };
    counter!("annals_appends_total", "engine" => engine, "outcome" => outcome).increment(1);
    if matches!(result, Ok(outcome) if !outcome.duplicate) {
        counter!("annals_appended_events_total", "engine" => engine).increment(events as u64);
    }
}

/// One group commit of a writer: how many appends shared it.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn batch(appends: usize) {
    histogram!("annals_append_batch_appends").record(appends as f64);
}

/// A group member committed past `handled` records of `partition`; `lag` records are
/// known to follow.
pub(crate) fn group_progress(group: &str, partition: Partition, handled: usize, lag: u64) {
    let (group, partition) = (group.to_owned(), partition.to_string());
    counter!("annals_group_records_total", "group" => group.clone()).increment(handled as u64);
    gauge!("annals_group_lag", "group" => group, "partition" => partition).set(lag as f64);
}

/// A record of `group` was dead-lettered after its handler failed.
pub(crate) fn dead_lettered(group: &str) {
    counter!("annals_group_dead_letters_total", "group" => group.to_owned()).increment(1);
}

/// A member of timer group `group` fired `count` timers.
pub(crate) fn timers_fired(group: &str, count: usize) {
    counter!("annals_timers_fired_total", "group" => group.to_owned()).increment(count as u64);
}

/// A stream was deleted, soft or hard.
pub(crate) fn stream_deleted(hard: bool) {
    counter!("annals_streams_deleted_total", "mode" => if hard { "hard" } else { "soft" }).increment(1);
}

/// `count` records were redacted.
pub(crate) fn records_redacted(count: u64) {
    counter!("annals_records_redacted_total").increment(count);
}

/// A subject was erased (its key deleted).
pub(crate) fn subject_erased() {
    counter!("annals_subjects_erased_total").increment(1);
}

/// A snapshot was written to the snapshot log.
pub(crate) fn snapshot_written() {
    counter!("annals_snapshot_writes_total").increment(1);
}
