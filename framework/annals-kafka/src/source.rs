//! The source: a topic's messages appended to annals streams, each once.
//!
//! Exactly once: each message is appended with a command id derived from its topic,
//! partition and offset ([`command_id`]), and the Kafka offsets are committed after the
//! appends. A crash before the commit delivers the messages again, and the store answers
//! each repeated command id as a duplicate without applying it (I5).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use annals::{AppendRequest, ExpectedVersion, Metadata, NewEvent, Store, StreamId};
use futures::StreamExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::headers;

/// Where the source finds the stream of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFrom {
    /// The message's key (`key`).
    Key,
    /// A header of the message (`header:NAME`).
    Header(String),
}

impl FromStr for StreamFrom {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text.split_once(':') {
            None if text == "key" => Ok(StreamFrom::Key),
            Some(("header", name)) if !name.is_empty() => Ok(StreamFrom::Header(name.to_owned())),
            _ => Err(Error::InvalidSetting(format!(
                "stream from {text:?}: expected `key` or `header:NAME`"
            ))),
        }
    }
}

/// What the source does with a message it cannot append (no stream, a value that is not
/// JSON, a payload the store refuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadMessages {
    /// Stop before it, with [`Error::BadMessage`]; nothing after it in its partition is
    /// committed (the default, as Kafka Connect's `errors.tolerance=none`).
    #[default]
    Stop,
    /// Log it, count it and go on.
    Skip,
}

impl FromStr for BadMessages {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "stop" => Ok(BadMessages::Stop),
            "skip" => Ok(BadMessages::Skip),
            _ => Err(Error::InvalidSetting(format!(
                "bad messages {text:?}: expected `stop` or `skip`"
            ))),
        }
    }
}

/// How a source runs.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// The brokers to bootstrap from (`host:port[,host:port…]`).
    pub brokers: String,
    /// The topic consumed.
    pub topic: String,
    /// The Kafka consumer group (default `annals-source.TOPIC`).
    pub group: String,
    /// Where each message's stream comes from (default: its key).
    pub stream_from: StreamFrom,
    /// The event type of the appended events, unless a message carries an
    /// `annals-type` header (default `kafka.Message`).
    pub event_type: String,
    /// What a message that cannot be appended does.
    pub bad_messages: BadMessages,
    /// Most messages appended between two offset commits (default 500).
    pub batch: usize,
    /// Where a new consumer group starts: `earliest` (the default) or `latest`.
    pub start: String,
    /// More librdkafka settings for the consumer.
    pub kafka: Vec<(String, String)>,
}

impl SourceOptions {
    /// A source of `topic` on `brokers`, streams from message keys.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        let topic = topic.into();
        SourceOptions {
            brokers: brokers.into(),
            group: format!("annals-source.{topic}"),
            topic,
            stream_from: StreamFrom::Key,
            event_type: "kafka.Message".into(),
            bad_messages: BadMessages::Stop,
            batch: 500,
            start: "earliest".into(),
            kafka: Vec::new(),
        }
    }
}

/// The command id of the append of message `offset` of `partition` of `topic`: a UUID
/// v5 of `"annals-kafka-source/TOPIC/PARTITION/OFFSET"`, the same in every process.
pub fn command_id(topic: &str, partition: i32, offset: i64) -> Uuid {
    let name = format!("annals-kafka-source/{topic}/{partition}/{offset}");
    Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes())
}

/// A running source.
pub struct Source {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<()>>>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").finish_non_exhaustive()
    }
}

impl Source {
    /// Joins the Kafka consumer group and starts appending.
    pub async fn start(store: &Store, options: SourceOptions) -> Result<Source> {
        if options.topic.is_empty() || options.brokers.is_empty() || options.group.is_empty() {
            return Err(Error::InvalidSetting(
                "a source needs brokers, a topic and a group".into(),
            ));
        }
        if !matches!(options.start.as_str(), "earliest" | "latest") {
            return Err(Error::InvalidSetting(format!(
                "start {:?}: expected `earliest` or `latest`",
                options.start
            )));
        }
        let event_type = &options.event_type;
        if event_type.is_empty() || event_type.len() > annals::MAX_EVENT_TYPE_LEN || event_type.starts_with("annals.") {
            return Err(Error::InvalidSetting(format!(
                "event type {event_type:?}: 1 to {} bytes, not starting with \"annals.\"",
                annals::MAX_EVENT_TYPE_LEN
            )));
        }
        let mut config = ClientConfig::new();
        for (key, value) in &options.kafka {
            config.set(key, value);
        }
        // Set last, so that no extra setting turns off what exactly-once relies on.
        config
            .set("bootstrap.servers", &options.brokers)
            .set("group.id", &options.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", &options.start)
            .set("enable.partition.eof", "false");
        let consumer: StreamConsumer = config.create()?;
        consumer.subscribe(&[&options.topic])?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(consumer, store.clone(), options, stopped));
        Ok(Source { stop, task: Some(task) })
    }

    /// Stops after the batch in hand is appended and committed.
    pub async fn shutdown(mut self) -> Result<()> {
        self.stop.send_replace(true);
        match self.task.take() {
            Some(task) => task.await.map_err(|_| Error::Stopped)?,
            None => Ok(()),
        }
    }

    /// Runs until the source stops by itself: a bad message (with
    /// [`BadMessages::Stop`]) or a failure that does not pass. Once it returned, the
    /// source is stopped.
    pub async fn wait(&mut self) -> Result<()> {
        match self.task.as_mut() {
            Some(task) => {
                let result = task.await.map_err(|_| Error::Stopped);
                self.task = None;
                result?
            }
            None => Ok(()),
        }
    }
}

/// One message, read into an append (or why it cannot be one).
struct Incoming {
    partition: i32,
    offset: i64,
    append: std::result::Result<AppendRequest, String>,
}

impl Incoming {
    fn read(message: &BorrowedMessage<'_>, options: &SourceOptions) -> Incoming {
        let (partition, offset) = (message.partition(), message.offset());
        Incoming {
            partition,
            offset,
            append: Self::append(message, options),
        }
    }

    fn append(message: &BorrowedMessage<'_>, options: &SourceOptions) -> std::result::Result<AppendRequest, String> {
        let stream = match &options.stream_from {
            StreamFrom::Key => match message.key() {
                None => return Err("it has no key".into()),
                Some(key) => std::str::from_utf8(key).map_err(|_| "its key is not UTF-8".to_owned())?,
            },
            StreamFrom::Header(name) => {
                headers::text(message.headers(), name).ok_or_else(|| format!("it has no UTF-8 header {name:?}"))?
            }
        };
        let stream = StreamId::new(stream).map_err(|error| error.to_string())?;
        let payload = message.payload().ok_or("its value is null (a tombstone)")?;
        let payload = std::str::from_utf8(payload).map_err(|_| "its value is not UTF-8 JSON".to_owned())?;
        let event_type = headers::text(message.headers(), headers::EVENT_TYPE).unwrap_or(&options.event_type);
        let kafka = serde_json::json!({
            "topic": message.topic(),
            "partition": message.partition(),
            "offset": message.offset(),
        });
        let event = NewEvent::from_json_text(event_type, payload)
            .map_err(|error| error.to_string())?
            .with_metadata(Metadata::new().with("kafka", kafka));
        Ok(AppendRequest::new(stream, ExpectedVersion::Any)
            .command_id(command_id(message.topic(), message.partition(), message.offset()))
            .event(event))
    }
}

async fn run(
    consumer: StreamConsumer,
    store: Store,
    options: SourceOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut messages = consumer.stream().ready_chunks(options.batch.max(1));
    loop {
        let chunk = tokio::select! {
            biased;
            _ = stop.changed() => return Ok(()),
            chunk = messages.next() => chunk,
        };
        let Some(chunk) = chunk else { return Err(Error::Stopped) };
        let mut batch = Vec::with_capacity(chunk.len());
        for message in chunk {
            match message {
                Ok(message) => batch.push(Incoming::read(&message, &options)),
                // The client reports and recovers (a broker restarting, a rebalance).
                Err(error) => tracing::warn!(topic = %options.topic, %error, "consuming"),
            }
        }
        let (commits, bad) = append_all(&store, &options, batch, &mut stop).await?;
        let mut offsets = TopicPartitionList::new();
        for (partition, next) in commits {
            offsets.add_partition_offset(&options.topic, partition, Offset::Offset(next))?;
        }
        if offsets.count() > 0 {
            // A lost commit only means messages delivered again, which append nothing.
            if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
                tracing::warn!(topic = %options.topic, %error, "committing offsets");
            }
        }
        if let Some(bad) = bad {
            return Err(bad);
        }
    }
}

/// Appends a batch: streams concurrently, each stream's messages in order. Returns the
/// offset to commit per partition (before its first message not done: neither appended
/// nor skipped) and, when bad messages stop the source, the first bad message.
async fn append_all(
    store: &Store,
    options: &SourceOptions,
    batch: Vec<Incoming>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(HashMap<i32, i64>, Option<Error>)> {
    let skip = options.bad_messages == BadMessages::Skip;
    let mut done: Vec<bool> = vec![false; batch.len()];
    // Where each message sits; the appends themselves move into their streams' queues.
    let mut positions: Vec<(i32, i64)> = Vec::with_capacity(batch.len());
    let mut streams: Vec<Vec<(usize, AppendRequest)>> = Vec::new();
    let mut index: HashMap<StreamId, usize> = HashMap::new();
    let mut bad: Vec<(usize, String)> = Vec::new();
    for (at, message) in batch.into_iter().enumerate() {
        positions.push((message.partition, message.offset));
        match message.append {
            Ok(request) => {
                let slot = *index.entry(request.stream.clone()).or_insert_with(|| {
                    streams.push(Vec::new());
                    streams.len() - 1
                });
                streams[slot].push((at, request));
            }
            Err(reason) => bad.push((at, reason)),
        }
    }
    let appended = futures::future::join_all(streams.into_iter().map(|appends| {
        let mut stop = stop.clone();
        async move {
            let (mut done, mut refused) = (Vec::new(), Vec::new());
            for (at, request) in appends {
                match append_one(store, request, &mut stop).await? {
                    Ok(()) => done.push(at),
                    Err(reason) => {
                        refused.push((at, reason));
                        // Stopping: nothing after a bad message of the stream is appended.
                        if !skip {
                            break;
                        }
                    }
                }
            }
            Ok::<_, Error>((done, refused))
        }
    }))
    .await;
    for outcome in appended {
        let (appended, refused) = outcome?;
        for at in appended {
            done[at] = true;
        }
        bad.extend(refused);
    }
    bad.sort();
    let mut first_bad = None;
    for (at, reason) in bad {
        let (partition, offset) = positions[at];
        let error = Error::BadMessage {
            topic: options.topic.clone(),
            partition,
            offset,
            reason,
        };
        if skip {
            tracing::warn!(%error, "skipped");
            done[at] = true;
        } else {
            first_bad.get_or_insert(error);
        }
    }
    let mut commits: HashMap<i32, i64> = HashMap::new();
    let mut blocked: HashMap<i32, bool> = HashMap::new();
    for ((partition, offset), done) in positions.into_iter().zip(done) {
        let stuck = blocked.entry(partition).or_insert(false);
        if *stuck {
            continue;
        }
        if done {
            commits.insert(partition, offset + 1);
        } else {
            *stuck = true;
        }
    }
    Ok((commits, first_bad))
}

/// Appends one message, retrying while the store is unreachable; the inner error is why
/// the store refused it.
async fn append_one(
    store: &Store,
    request: AppendRequest,
    stop: &mut watch::Receiver<bool>,
) -> Result<std::result::Result<(), String>> {
    let mut backoff = Duration::from_millis(50);
    loop {
        match store.append(request.clone()).await {
            Ok(_) => return Ok(Ok(())),
            Err(error) if error.is_transient() => {
                tracing::warn!(%error, "appending; retrying");
                tokio::select! {
                    _ = stop.changed() => return Err(Error::Stopped),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            // What the message holds is refused: bad input, a deleted stream, …
            Err(error) if refused_input(&error) => return Ok(Err(error.to_string())),
            // Anything else (a read-only replica, a broken store) stops the source,
            // with nothing from here on committed.
            Err(error) => return Err(error.into()),
        }
    }
}

/// Whether the store refused an append for what the message holds, so that appending it
/// again would be refused again.
fn refused_input(error: &annals::Error) -> bool {
    matches!(
        error.code(),
        "bad_request"
            | "payload_too_large"
            | "json_too_deep"
            | "stream_deleted"
            | "subject_erased"
            | "command_id_conflict"
    )
}
