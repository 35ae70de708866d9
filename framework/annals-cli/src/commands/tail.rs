//! `annals tail`: a partition from an offset; with `--follow`, new records as they come.

use annals::EventStore;
use futures::StreamExt;
use serde_json::json;

use super::records_table;
use crate::output::{CliResult, Output};

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

pub(crate) async fn run(db: &str, args: Args, out: &Output) -> CliResult {
    let store = super::open_existing(db).await?;
    if !args.follow {
        let records = store
            .read_partition(args.partition, args.from, args.limit.unwrap_or(100))
            .await?;
        let next_offset = records.last().map_or(args.from, |r| r.offset + 1);
        let high_watermark = store.high_watermarks().await?[args.partition as usize];
        store.close().await;
        out.print(
            &json!({"partition": args.partition, "events": records, "next_offset": next_offset, "high_watermark": high_watermark}),
            |_| format!("{}\npartition {}: next offset {next_offset}, high watermark {high_watermark}", records_table(&records), args.partition),
        );
        return Ok(());
    }
    let mut feed = store
        .subscribe(args.partition, args.from)
        .take(args.limit.unwrap_or(usize::MAX));
    while let Some(record) = feed.next().await {
        let record = record?;
        if out.is_json() {
            println!("{}", serde_json::to_string(&record).expect("serialisable record"));
        } else {
            println!(
                "{}:{} {} v{} {} {}",
                record.partition, record.offset, record.stream, record.version, record.event_type, record.payload
            );
        }
    }
    Ok(())
}
