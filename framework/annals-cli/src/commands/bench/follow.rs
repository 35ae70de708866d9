//! `annals bench follow`: a follower catching up from offset 0 over HTTP, beside the
//! leader's own 8-writer append rate measured in the same run; then the replication
//! lag (leader commit → follower holds it) under a steady append rate.

use std::time::{Duration, Instant};

use annals::{AppendRequest, ExpectedVersion, NewEvent, StoreOptions, StreamId};
use annals_server::follower::{FollowError, FollowOptions, Follower, FollowerState, Leader};
use futures::StreamExt;
use serde_json::json;

use super::load::{self, histogram, quantile_ms, Load};
use super::payload;
use crate::output::{CliError, CliResult, Output};

#[derive(Debug, clap::Args)]
pub(crate) struct FollowArgs {
    /// The follower's store (a fresh one; the leader is --db).
    #[arg(long)]
    follower_db: String,
    /// Events the leader's 8 writers append, then the follower ships.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Append rate of the lag phase (events/s).
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// Length of the lag phase, in seconds.
    #[arg(long, default_value_t = 10)]
    lag_seconds: u64,
}

pub(crate) async fn follow(db: &str, args: FollowArgs, out: &Output) -> CliResult {
    let options = StoreOptions::from_url(db)?;
    let backend = options.backend_name();
    let leader = options.open().await?;
    let follower_options = StoreOptions::from_url(&args.follower_db)?;
    let follower_backend = follower_options.backend_name();
    let replica = follower_options.partitions(leader.partition_count()).open().await?;

    // The leader's own rate: 8 writers, one event per append.
    let load = Load {
        writers: 8,
        events_per_op: 1,
        seconds: 3_600.0,
        events: Some(args.events),
        quiet: out.is_json(),
    };
    let appended = {
        let leader = leader.clone();
        load::drive(&load, "leader", move |writer, seq| {
            let leader = leader.clone();
            async move {
                let stream = StreamId::new(format!(
                    "bench-{}",
                    (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ writer as u64) % 10_000
                ))?;
                let request = AppendRequest::new(stream, ExpectedVersion::Any)
                    .event(NewEvent::from_json_text("LineAdded", payload(seq))?);
                leader.append(request).await?;
                Ok(())
            }
        })
        .await?
    };

    let server = annals_server::Spawned::start(leader.clone(), annals_server::ServerOptions::default())
        .await
        .map_err(annals::Error::Io)?;
    let url = server.url().to_owned();
    let follow_error = |error: annals_server::follower::FollowError| CliError::Usage(error.to_string());

    // Shipping: from offset 0 until the follower holds everything.
    let target = leader.high_watermarks().await?;
    let started = Instant::now();
    let follower = Follower::start(replica.clone(), Leader::at(url), FollowOptions::default());
    caught_up(&replica, &follower, &target).await.map_err(follow_error)?;
    let shipping = started.elapsed().as_secs_f64();
    let shipped: u64 = target.iter().map(|next| next.0).sum();

    // Lag: each record's wait from its commit on the leader to the follower holding it.
    let lag_us = std::sync::Arc::new(std::sync::Mutex::new(histogram()));
    let watchers: Vec<_> = (0..replica.partition_count())
        .map(|p| {
            let (replica, lag_us, from) = (replica.clone(), lag_us.clone(), target[p as usize]);
            tokio::spawn(async move {
                let mut records = replica.subscribe(p, from);
                while let Some(Ok(record)) = records.next().await {
                    let waited = (chrono::Utc::now() - record.recorded_at)
                        .num_microseconds()
                        .unwrap_or(0);
                    lag_us
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .saturating_record(waited.max(0) as u64);
                }
            })
        })
        .collect();
    let total = args.rate * args.lag_seconds;
    let began = Instant::now();
    let mut appends = Vec::new();
    for i in 0..total {
        tokio::time::sleep_until((began + Duration::from_secs_f64(i as f64 / args.rate as f64)).into()).await;
        let leader = leader.clone();
        appends.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("lag-{}", i % 1_000)).expect("valid stream id");
            let request = AppendRequest::new(stream, ExpectedVersion::Any)
                .event(NewEvent::from_json_text("LineAdded", payload(i)).expect("valid payload"));
            leader.append(request).await
        }));
    }
    // A failed append fails the run (rather than leaving it waiting for a record that
    // will never come).
    for append in appends {
        append.await.map_err(|error| CliError::Usage(error.to_string()))??;
    }
    let final_target = leader.high_watermarks().await?;
    caught_up(&replica, &follower, &final_target)
        .await
        .map_err(follow_error)?;
    // The subscribers see the last records a moment after the follower holds them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lag_us.lock().unwrap_or_else(|e| e.into_inner()).len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for watcher in watchers {
        watcher.abort();
    }
    follower.stop().await.map_err(follow_error)?;
    let _ = server.stop().await;
    leader.close().await;
    replica.close().await;

    let lag = lag_us.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (rate, raw) = (shipped as f64 / shipping, appended.events_per_sec());
    let report = json!({
        "workload": "follow", "backend": backend, "follower_backend": follower_backend,
        "writers": 8, "events_per_append": 1,
        "events": shipped, "seconds": shipping, "events_per_sec": rate,
        "p50_ms": quantile_ms(&lag, 0.5), "p99_ms": quantile_ms(&lag, 0.99),
        "baseline_events_per_sec": raw, "ratio_to_baseline": rate / raw,
        "baseline": "the leader's own appends by 8 writers, one event each, in the same run",
        "lag_rate": args.rate, "lag_events": lag.len(),
    });
    out.print(&report, |r| {
        format!(
            "{backend} -> {follower_backend}: the follower shipped {shipped} events in {shipping:.1} s = {rate:.0} events/s; \
             the leader appended {raw:.0}/s; ratio {:.2}\nlag at {} events/s: p50 {} ms, p99 {} ms",
            rate / raw,
            args.rate,
            r["p50_ms"],
            r["p99_ms"]
        )
    });
    Ok(())
}

/// Waits until `replica` holds `target`; a follower that stopped on an error ends the
/// run with it.
async fn caught_up(replica: &annals::Store, follower: &Follower, target: &[annals::Offset]) -> Result<(), FollowError> {
    while replica.high_watermarks().await? != target {
        let status = follower.status();
        if status.state == FollowerState::Failed {
            return Err(FollowError::Leader {
                leader: status.leader,
                message: status.last_error.unwrap_or_default(),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
