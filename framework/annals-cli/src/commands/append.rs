//! `annals append`: append one event to a stream.

use annals::personal::{PersonalData, Subject};
use annals::{ExpectedVersion, Metadata, StreamId};
use uuid::Uuid;

use crate::output::{CliError, CliResult, Output};
use crate::target::{Append, Target};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The stream, e.g. order-42.
    stream: String,
    /// The event type, e.g. OrderPlaced.
    #[arg(long = "type")]
    event_type: String,
    /// The payload, as JSON.
    #[arg(long)]
    data: String,
    /// Metadata, as a JSON object (correlation_id, causation_id and your own keys).
    #[arg(long)]
    metadata: Option<String>,
    /// The version the stream must be at: any, no_stream, exists or a number.
    #[arg(long, default_value = "any")]
    expected: ExpectedVersion,
    /// Idempotency key: appending again with the same id writes nothing.
    #[arg(long)]
    command_id: Option<Uuid>,
    /// The event's own id (default: a new UUID v7).
    #[arg(long)]
    id: Option<Uuid>,
    /// Payload fields holding a subject's personal data, sealed with the subject's key:
    /// SUBJECT=/pointer[,/pointer…], e.g. customer-7=/email,/address. Repeat for more
    /// subjects.
    #[arg(long, value_parser = parse_personal)]
    personal: Vec<PersonalData>,
}

/// `SUBJECT=/pointer,/pointer`: the subject is the text before the first `=/`.
fn parse_personal(text: &str) -> Result<PersonalData, String> {
    let (subject, fields) = text
        .split_once("=/")
        .ok_or_else(|| format!("expected SUBJECT=/pointer[,/pointer…], not {text:?}"))?;
    let subject = Subject::new(subject).map_err(|error| error.to_string())?;
    let fields = format!("/{fields}").split(',').map(str::to_owned).collect();
    Ok(PersonalData { subject, fields })
}

pub(crate) async fn run(target: Target, args: Args, out: &Output) -> CliResult {
    let stream = StreamId::new(args.stream)?;
    let metadata = args
        .metadata
        .map(|metadata| {
            serde_json::from_str::<Metadata>(&metadata)
                .map_err(|error| CliError::Usage(format!("--metadata must be a JSON object: {error}")))
        })
        .transpose()?;
    let append = Append {
        stream: stream.clone(),
        expected: args.expected,
        command_id: args.command_id,
        event_type: args.event_type,
        data: args.data,
        metadata,
        id: args.id,
        personal: args.personal,
    };
    let outcome = target.append(append).await;
    target.close().await;
    let outcome = outcome?;
    out.print(&outcome, |o| {
        let what = if o.duplicate {
            "already appended (duplicate command id)"
        } else {
            "appended"
        };
        format!(
            "{what}: {stream} version {} at partition {} offset {}",
            o.last_version, o.partition, o.last_offset
        )
    });
    Ok(())
}
