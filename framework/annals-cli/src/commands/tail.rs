//! `annals tail`: a partition from an offset; with `--follow`, new records as they come.

use annals::{Offset, Partition};

use super::records_table;
use crate::output::{CliResult, Output};
use crate::target::Target;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The partition to read.
    #[arg(long)]
    partition: u32,
    /// The first offset to read.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Most records to print (default 100; with --follow, no limit).
    #[arg(long)]
    limit: Option<usize>,
    /// Keep waiting for new records (one line, or one JSON object, per record).
    #[arg(long)]
    follow: bool,
}

pub(crate) async fn run(target: Target, args: Args, out: &Output) -> CliResult {
    let result = tail(&target, args, out).await;
    target.close().await;
    result
}

async fn tail(target: &Target, args: Args, out: &Output) -> CliResult {
    let (partition, from) = (Partition(args.partition), Offset(args.from));
    if !args.follow {
        let (records, high_watermark) = target.fetch(partition, from, args.limit.unwrap_or(100), 0).await?;
        let next_offset = records.last().map_or(from, |r| r.offset + 1);
        out.print(
            &super::Fetched {
                partition,
                events: &records,
                next_offset,
                high_watermark,
            },
            |_| {
                format!(
                    "{}\npartition {}: next offset {next_offset}, high watermark {high_watermark}",
                    records_table(&records),
                    args.partition
                )
            },
        );
        return Ok(());
    }
    let (mut next, mut left) = (from, args.limit.unwrap_or(usize::MAX));
    while left > 0 {
        // A long poll: it returns as soon as a record is appended.
        let (records, _) = target.fetch(partition, next, left.min(500), 10_000).await?;
        for record in records.iter().take(left) {
            if out.is_json() {
                println!("{}", serde_json::to_string(record).expect("serialisable record"));
            } else {
                println!(
                    "{}:{} {} v{} {} {}",
                    record.partition, record.offset, record.stream, record.version, record.event_type, record.payload
                );
            }
            next = record.offset + 1;
            left -= 1;
        }
    }
    Ok(())
}
