//! `annals streams`: browse streams in id order.

use annals::StreamId;
use serde_json::json;

use crate::output::{table, CliResult, Output};
use crate::target::Target;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Only streams of this category (the text before the first '-').
    #[arg(long)]
    category: Option<String>,
    /// Start after this stream id (for paging).
    #[arg(long)]
    after: Option<String>,
    /// Most streams to list.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

pub(crate) async fn run(target: Target, args: Args, out: &Output) -> CliResult {
    let after = args.after.map(StreamId::new).transpose()?;
    let streams = target
        .list_streams(args.category.as_deref(), args.limit, after.as_ref())
        .await;
    target.close().await;
    let streams = streams?;
    out.print(&json!({"streams": streams}), |_| {
        table(
            ["stream", "partition", "version"],
            streams
                .iter()
                .map(|s| [s.stream.to_string(), s.partition.to_string(), s.version.to_string()]),
        )
    });
    Ok(())
}
