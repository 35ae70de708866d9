//! `annals stats`: partitions, their high watermarks and the record count.

use annals::EventStore;
use serde_json::json;

use crate::output::{table, CliResult, Output};

pub(crate) async fn run(db: &str, out: &Output) -> CliResult {
    let store = super::open_existing(db).await?;
    let watermarks = store.high_watermarks().await?;
    store.close().await;
    let records: u64 = watermarks.iter().sum();
    let partitions: Vec<_> = watermarks
        .iter()
        .enumerate()
        .map(|(partition, next)| json!({"partition": partition, "next_offset": next}))
        .collect();
    let stats = json!({
        "backend": store.backend_name(),
        "partition_count": store.partition_count(),
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
            store.backend_name(),
            store.partition_count(),
            table(["partition", "next offset"], rows)
        )
    });
    Ok(())
}
