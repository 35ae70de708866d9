//! `annals compact`: compacts the snapshot log, keeping the newest snapshot per live
//! stream and dropping tombstones older than the retention.

use std::time::Duration;

use annals::snapshot;
use serde_json::json;

use crate::output::{CliError, CliResult, Output};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// How long tombstones are kept, in seconds, so every reader sees them.
    #[arg(long, default_value_t = 86_400)]
    retention_seconds: u64,
}

pub(crate) async fn run(db: &str, args: Args, out: &Output) -> CliResult {
    let store = super::open_existing(db).await?;
    let done = snapshot::compact(&store, Duration::from_secs(args.retention_seconds)).await;
    store.close().await;
    let done = done.map_err(CliError::from)?;
    out.print(&json!({"snapshot_log": done}), |_| {
        format!(
            "snapshot log: {} rows ({} bytes of state) before, {} rows ({} bytes) after",
            done.rows_before, done.bytes_before, done.rows_after, done.bytes_after
        )
    });
    Ok(())
}
