//! `annals init`: create a store, or check an existing one's partition count.

use serde_json::json;

use crate::output::{CliResult, Output};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Partitions of a new store (default 16); an existing store must have this many.
    #[arg(long)]
    partitions: Option<u32>,
}

pub(crate) async fn run(db: &str, args: Args, out: &Output) -> CliResult {
    let mut options = super::store_options(db)?;
    if let Some(partitions) = args.partitions {
        options = options.partitions(partitions);
    }
    let store = options.open().await?;
    let info = json!({"backend": store.backend_name(), "partition_count": store.partition_count()});
    store.close().await;
    out.print(&info, |info| {
        format!(
            "store ready: {} with {} partitions",
            info["backend"].as_str().unwrap_or_default(),
            info["partition_count"]
        )
    });
    Ok(())
}
