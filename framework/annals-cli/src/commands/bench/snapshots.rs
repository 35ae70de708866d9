//! `annals bench load --snapshots`: how long loading an order takes with 10, 1,000 and
//! 100,000 events of history, folded from the events and from snapshots written by the
//! snapshotter group; and the snapshot log's size before and after compaction.

use std::time::{Duration, Instant};

use annals::aggregate::Repository;
use annals::group::{admin, GroupMember, GroupOptions};
use annals::snapshot::{self, SnapshotOptions, Snapshotter};
use annals::{AppendRequest, ExpectedVersion, NewEvent, Store, StoreOptions};
use serde_json::json;

use super::workloads::{command, LoadArgs, Order};
use crate::output::{table, CliError, CliResult, Output};

/// History lengths measured.
const SIZES: [u64; 3] = [10, 1_000, 100_000];

/// Writes `events` `LineAdded` events to order `id`, 1,000 per append.
async fn history(store: &Store, id: &str, events: u64) -> CliResult {
    let stream = Repository::<Order>::stream_id(id)?;
    let mut written = annals::Version(0);
    while written < events {
        let mut request = AppendRequest::new(stream.clone(), ExpectedVersion::Exact(written));
        for i in written.0..(written.0 + 1_000).min(events) {
            let line = command(i);
            let data = json!({"sku": line.sku, "qty": line.qty, "price": line.price, "note": line.note});
            request = request.event(NewEvent::json("LineAdded", &data)?);
        }
        written = store.append(request).await?.last_version;
    }
    Ok(())
}

/// The median of `loads` loads of `id`, in milliseconds.
async fn median_ms(repo: &Repository<Order>, id: &str, loads: usize, events: u64) -> CliResult<f64> {
    let mut times = Vec::with_capacity(loads);
    for _ in 0..loads {
        let began = Instant::now();
        let loaded = repo.load(id).await?;
        times.push(began.elapsed().as_secs_f64() * 1_000.0);
        if loaded.state.lines != events {
            return Err(CliError::Usage(format!(
                "order {id} loaded {} lines of {events}",
                loaded.state.lines
            )));
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[(times.len() - 1) / 2])
}

pub(crate) async fn load(db: &str, args: LoadArgs, out: &Output) -> CliResult {
    if args.loads == 0 {
        return Err(CliError::Usage("--loads must be positive".into()));
    }
    let options = StoreOptions::from_url(db)?;
    let backend = options.backend_name();
    let store = options.open().await?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    for size in SIZES {
        history(&store, &format!("s{size}x{run}"), size).await?;
    }

    let group = format!("bench-snapshots-{}", &run[run.len() - 8..]);
    let snapshotter = Snapshotter::<Order>::new(&store, args.snapshot_every);
    let member = GroupMember::projection(
        &store,
        &group,
        snapshotter,
        GroupOptions {
            heartbeat_interval: Duration::from_millis(200),
            ..GroupOptions::default()
        },
    )
    .await?;
    while admin::describe(&store, &group).await?.lag > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    member.shutdown().await?;
    let compaction = snapshot::compact(&store, Duration::from_secs(3600)).await?;

    let plain = Repository::<Order>::new(store.clone());
    let snapshotting = Repository::<Order>::new(store.clone()).with_snapshots(&store, SnapshotOptions::default());
    let mut results = Vec::new();
    for size in SIZES {
        let id = format!("s{size}x{run}");
        let without = median_ms(&plain, &id, args.loads, size).await?;
        let with = median_ms(&snapshotting, &id, args.loads, size).await?;
        results.push(json!({"events": size, "without_snapshots_ms": without, "with_snapshots_ms": with}));
    }
    store.close().await;
    let smallest = results[0]["with_snapshots_ms"].as_f64().unwrap_or(f64::NAN);
    let largest = results[2]["with_snapshots_ms"].as_f64().unwrap_or(f64::NAN);
    let report = json!({
        "workload": "load_snapshots", "backend": backend, "loads": args.loads,
        "snapshot_every": args.snapshot_every, "streams": results,
        "largest_to_smallest_with_snapshots": largest / smallest,
        "snapshot_log": compaction,
    });
    out.print(&report, |r| {
        let rows = r["streams"].as_array().into_iter().flatten().map(|s| {
            [
                s["events"].to_string(),
                format!("{:.2} ms", s["without_snapshots_ms"].as_f64().unwrap_or(f64::NAN)),
                format!("{:.2} ms", s["with_snapshots_ms"].as_f64().unwrap_or(f64::NAN)),
            ]
        });
        format!(
            "{backend}: median of {} loads, snapshots every {} events\n{}\n100,000-event load with snapshots = {:.2}× the 10-event load\n\
             snapshot log: {} rows, {} bytes before compaction; {} rows, {} bytes after",
            args.loads,
            args.snapshot_every,
            table(["events", "without snapshots", "with snapshots"], rows),
            largest / smallest,
            compaction.rows_before,
            compaction.bytes_before,
            compaction.rows_after,
            compaction.bytes_after
        )
    });
    Ok(())
}
