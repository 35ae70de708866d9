//! `annals streams`: browse streams in id order; `annals streams delete`.

use annals::StreamId;
use serde_json::json;

use crate::output::{table, CliResult, Output};
use crate::target::Target;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    list: List,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Delete a stream: its records are redacted (they keep their offsets and versions
    /// but lose their data and metadata) and its snapshots dropped. Soft by default: the
    /// stream reads as absent and may be written again, its versions going on.
    Delete {
        /// The stream id.
        stream: String,
        /// Delete for good: the stream id can never be written or read again.
        #[arg(long)]
        hard: bool,
    },
}

#[derive(Debug, clap::Args)]
struct List {
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
    match args.command {
        Some(Command::Delete { stream, hard }) => delete(target, &StreamId::new(stream)?, hard, out).await,
        None => list(target, args.list, out).await,
    }
}

async fn delete(target: Target, stream: &StreamId, hard: bool, out: &Output) -> CliResult {
    let deleted = target.delete_stream(stream, hard).await;
    target.close().await;
    let deleted = deleted?;
    out.print(&deleted, |deleted| {
        format!(
            "deleted {} ({}): its records up to version {} are redacted; the deletion record is at partition {} offset {}",
            deleted.stream,
            if deleted.hard { "hard: it can never be written again" } else { "soft" },
            deleted.version.0.saturating_sub(1),
            deleted.partition,
            deleted.offset
        )
    });
    Ok(())
}

async fn list(target: Target, args: List, out: &Output) -> CliResult {
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
