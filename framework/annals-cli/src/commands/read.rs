//! `annals read`: a stream's events.

use annals::{StreamId, Version};

use super::records_table;
use crate::output::{CliResult, Output};
use crate::target::Target;

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

pub(crate) async fn run(target: Target, args: Args, out: &Output) -> CliResult {
    let stream = StreamId::new(args.stream)?;
    let read = target
        .read_stream(&stream, Version(args.from_version), args.limit)
        .await;
    target.close().await;
    let (version, events) = read?;
    if out.is_json() {
        out.print(
            &super::StreamEvents {
                stream: &stream,
                version,
                events: &events,
            },
            |_| String::new(),
        );
    } else {
        println!("{stream}: version {version}");
        println!("{}", records_table(&events));
    }
    Ok(())
}
