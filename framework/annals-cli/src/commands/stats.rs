//! `annals stats`: partitions, their high watermarks and the record count.

use serde_json::json;

use crate::output::{table, CliResult, Output};
use crate::target::Target;

pub(crate) async fn run(target: Target, out: &Output) -> CliResult {
    let partitions = target.partitions().await;
    target.close().await;
    let (backend, watermarks) = partitions?;
    let records: u64 = watermarks.iter().sum();
    let partitions: Vec<_> = watermarks
        .iter()
        .enumerate()
        .map(|(partition, next)| json!({"partition": partition, "next_offset": next}))
        .collect();
    let stats = json!({
        "backend": backend,
        "partition_count": watermarks.len(),
        "records": records,
        "partitions": partitions,
    });
    out.print(&stats, |_| {
        let rows = watermarks
            .iter()
            .enumerate()
            .map(|(p, next)| [p.to_string(), next.to_string()]);
        format!(
            "{} store, {} partitions, {records} records\n{}",
            backend,
            watermarks.len(),
            table(["partition", "next offset"], rows)
        )
    });
    Ok(())
}
