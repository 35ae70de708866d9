//! `annals stats`: the store's role, its partitions with their high watermarks, the
//! record count, and (through a follower's server) the replication lag.

use serde_json::json;

use crate::output::{table, CliResult, Output};
use crate::target::Target;

pub(crate) async fn run(target: Target, out: &Output) -> CliResult {
    let partitions = target.partitions().await;
    target.close().await;
    let p = partitions?;
    let records: u64 = p.next_offsets.iter().map(|next| next.0).sum();
    let entries: Vec<_> = p
        .next_offsets
        .iter()
        .enumerate()
        .map(|(partition, next)| {
            let mut entry = json!({"partition": partition, "next_offset": next});
            if let Some(lag) = p.replication_lag.as_ref().and_then(|lags| lags.get(partition)) {
                entry["replication_lag"] = json!(lag);
            }
            entry
        })
        .collect();
    let stats = json!({
        "backend": p.backend,
        "role": p.role,
        "leader_epoch": p.leader_epoch,
        "partition_count": p.next_offsets.len(),
        "records": records,
        "partitions": entries,
    });
    out.print(&stats, |_| {
        let heading = format!(
            "{} store ({}, leader epoch {}), {} partitions, {records} records",
            p.backend,
            p.role,
            p.leader_epoch,
            p.next_offsets.len()
        );
        match &p.replication_lag {
            Some(lags) => {
                let rows = p
                    .next_offsets
                    .iter()
                    .zip(lags)
                    .enumerate()
                    .map(|(i, (next, lag))| [i.to_string(), next.to_string(), lag.to_string()]);
                format!(
                    "{heading}\n{}",
                    table(["partition", "next offset", "replication lag"], rows)
                )
            }
            None => {
                let rows = p
                    .next_offsets
                    .iter()
                    .enumerate()
                    .map(|(i, next)| [i.to_string(), next.to_string()]);
                format!("{heading}\n{}", table(["partition", "next offset"], rows))
            }
        }
    });
    Ok(())
}
