//! `annals erase --subject`: crypto-shredding of one subject's personal data.

use annals::personal::Subject;

use crate::output::{CliResult, Output};
use crate::target::Target;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The subject whose key to delete, e.g. customer-7.
    #[arg(long)]
    subject: String,
}

pub(crate) async fn run(target: Target, args: Args, out: &Output) -> CliResult {
    let subject = Subject::new(args.subject)?;
    let erasure = target.erase_subject(&subject).await;
    target.close().await;
    let erasure = erasure?;
    out.print(&erasure, |erasure| {
        let what = if erasure.had_key {
            format!(
                "its key is deleted: its fields in {} stream(s) read as erased",
                erasure.streams
            )
        } else {
            "it had no key here (never written, or erased before); it stays erased".to_owned()
        };
        format!(
            "erased {}: {what}; the erasure record is at partition {} offset {}",
            erasure.subject, erasure.outcome.partition, erasure.outcome.first_offset
        )
    });
    Ok(())
}
