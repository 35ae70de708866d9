//! `annals kafka sink` and `annals kafka source`: the bridge between the store's
//! partitions and a Kafka topic, run until a signal stops it.

use std::time::Duration;

use annals::group::Filter;
use annals_kafka::{BadMessages, Sink, SinkOptions, Source, SourceOptions, StreamFrom};

use crate::output::{CliError, CliResult};

/// The bridge's two directions.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Kafka {
    /// Ships the store's partition p to partition p of a topic, each record once, as a
    /// member of a consumer group (run several to share the partitions).
    Sink(SinkArgs),
    /// Appends a topic's messages to the streams their keys (or a header) name, each
    /// once, as a member of a Kafka consumer group.
    Source(SourceArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct Brokers {
    /// The brokers to bootstrap from: HOST:PORT[,HOST:PORT…].
    #[arg(long, env = "ANNALS_KAFKA_BROKERS")]
    brokers: String,
    /// The topic.
    #[arg(long)]
    topic: String,
    /// A librdkafka setting, KEY=VALUE (repeatable), e.g. linger.ms=20.
    #[arg(long = "kafka-config", value_name = "KEY=VALUE", value_parser = key_value)]
    kafka_config: Vec<(String, String)>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SinkArgs {
    #[command(flatten)]
    brokers: Brokers,
    /// Ship only streams of this category (repeatable; default: every record).
    #[arg(long = "category")]
    categories: Vec<String>,
    /// The annals consumer group of this topic's sinks (default kafka-sink.TOPIC).
    #[arg(long)]
    group: Option<String>,
    /// Most records per batch.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// How long the producer tries to deliver a message before the batch fails, in
    /// milliseconds.
    #[arg(long, default_value_t = 10_000)]
    delivery_timeout_ms: u64,
    /// The replication factor of a topic the sink makes.
    #[arg(long, default_value_t = 1)]
    replication: i32,
    /// A member that has not heartbeated for this long, in milliseconds, is removed
    /// from the group and its partitions move.
    #[arg(long, default_value_t = 10_000)]
    session_timeout_ms: u64,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SourceArgs {
    #[command(flatten)]
    brokers: Brokers,
    /// Where a message's stream comes from: `key`, or `header:NAME`.
    #[arg(long, default_value = "key", value_parser = |text: &str| text.parse::<StreamFrom>())]
    stream_from: StreamFrom,
    /// The Kafka consumer group (default annals-source.TOPIC).
    #[arg(long)]
    group: Option<String>,
    /// The event type of appended events, unless a message has an annals-type header.
    #[arg(long = "type", default_value = "kafka.Message")]
    event_type: String,
    /// What a message that cannot be appended does: `stop` (the source exits with an
    /// error, nothing after it committed) or `skip`.
    #[arg(long, default_value = "stop", value_parser = |text: &str| text.parse::<BadMessages>())]
    on_bad_message: BadMessages,
    /// Where a new consumer group starts: `earliest` or `latest`.
    #[arg(long, default_value = "earliest", value_parser = ["earliest", "latest"])]
    start: String,
    /// Most messages appended between two offset commits.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?}: expected KEY=VALUE")),
    }
}

pub(crate) async fn run(db: &str, command: Kafka) -> CliResult {
    let mut terminate = std::pin::pin!(annals_server::shutdown_signal());
    let store = super::open_existing(db).await?;
    match command {
        Kafka::Sink(args) => {
            let filter = if args.categories.is_empty() {
                Filter::all()
            } else {
                Filter::categories(args.categories)?
            };
            let mut options = SinkOptions::new(args.brokers.brokers, args.brokers.topic);
            if let Some(group) = args.group {
                options.group = group;
            }
            options.filter = filter;
            options.group_options.batch_size = args.batch.max(1);
            options.delivery_timeout = Duration::from_millis(args.delivery_timeout_ms.max(1));
            options.replication = args.replication;
            options.group_options.session_timeout = Duration::from_millis(args.session_timeout_ms.max(1));
            options.group_options.heartbeat_interval =
                (options.group_options.session_timeout / 5).min(options.group_options.heartbeat_interval);
            options.kafka = args.brokers.kafka_config;
            let sink = Sink::start(&store, options).await.map_err(CliError::Kafka)?;
            tracing::info!(member = ?sink, "sink started");
            let failure = tokio::select! {
                () = &mut terminate => None,
                failure = sink.failure() => Some(failure),
            };
            // Leaves the group, so that other sinks take its partitions at once.
            sink.shutdown().await.map_err(CliError::Kafka)?;
            failure.map_or(Ok(()), |failure| Err(CliError::Kafka(failure)))
        }
        Kafka::Source(args) => {
            let mut options = SourceOptions::new(args.brokers.brokers, args.brokers.topic);
            if let Some(group) = args.group {
                options.group = group;
            }
            options.stream_from = args.stream_from;
            options.event_type = args.event_type;
            options.bad_messages = args.on_bad_message;
            options.start = args.start;
            options.batch = args.batch.max(1);
            options.kafka = args.brokers.kafka_config;
            let mut source = Source::start(&store, options).await.map_err(CliError::Kafka)?;
            let stopped = tokio::select! {
                () = &mut terminate => None,
                stopped = source.wait() => Some(stopped),
            };
            match stopped {
                Some(stopped) => stopped.map_err(CliError::Kafka),
                None => source.shutdown().await.map_err(CliError::Kafka),
            }
        }
    }
}
