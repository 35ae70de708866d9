//! `annals read`: a stream's events.

use annals::{EventStore, StreamId};
use serde_json::json;

use super::records_table;
use crate::output::{CliResult, Output};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The stream, e.g. order-42.
    stream: String,
    /// The first version to read (1-based).
    #[arg(long, default_value_t = 1)]
    from_version: u64,
    /// Most events to read.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

pub(crate) async fn run(db: &str, args: Args, out: &Output) -> CliResult {
    let stream = StreamId::new(args.stream)?;
    let store = super::open_existing(db).await?;
    let version = store.stream_version(&stream).await?;
    let events = store.read_stream(&stream, args.from_version, args.limit).await?;
    store.close().await;
    if out.is_json() {
        out.print(&json!({"stream": stream, "version": version, "events": events}), |_| {
            String::new()
        });
    } else {
        println!("{stream}: version {version}");
        println!("{}", records_table(&events));
    }
    Ok(())
}
