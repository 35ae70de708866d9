//! The sink: the store's partition *p* shipped to partition *p* of a topic, each record
//! once, in offset order.
//!
//! Exactly once without Kafka transactions:
//! - the producer is idempotent, so its own retries never write a message twice;
//! - when a member takes a partition, it reads the last message of the Kafka partition
//!   and resumes after the annals offset in its header (the topic holds the truth, and
//!   the group's committed offset follows it); after a failed batch it does the same, so
//!   what reached Kafka before the failure is not shipped again;
//! - a batch starts only while the member owns the partition (a fenced read), and a
//!   member taking a partition from a live one waits out the delivery timeout first, so
//!   the previous owner's last batch has landed or failed before the tail is read.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::group::{BatchConsumer, Filter, GroupMember, GroupOptions};
use annals::{Offset, Partition, RecordedEvent, Store};
use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::headers;
use crate::topic::{ensure_topic, tail, Tail};

/// How a sink runs.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// The brokers to bootstrap from (`host:port[,host:port…]`).
    pub brokers: String,
    /// The topic; made with the store's partition count if missing.
    pub topic: String,
    /// The annals consumer group the sinks of this topic share (default
    /// `kafka-sink.TOPIC`).
    pub group: String,
    /// The records shipped (default: all); the others are skipped.
    pub filter: Filter,
    /// The group's settings (batch size, session timeout, …).
    pub group_options: GroupOptions,
    /// How long the producer tries to deliver a message before the batch fails (default
    /// 10 s, librdkafka's `message.timeout.ms`). A member taking a partition from a live
    /// one waits this long first.
    pub delivery_timeout: Duration,
    /// The replication factor of a topic the sink makes (default 1).
    pub replication: i32,
    /// More librdkafka settings, for the producer and the readers alike.
    pub kafka: Vec<(String, String)>,
}

impl SinkOptions {
    /// A sink of the whole store to `topic` on `brokers`.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        let topic = topic.into();
        SinkOptions {
            brokers: brokers.into(),
            group: format!("kafka-sink.{topic}"),
            topic,
            filter: Filter::all(),
            group_options: GroupOptions {
                retry_backoff: Duration::from_millis(500),
                ..GroupOptions::default()
            },
            delivery_timeout: Duration::from_secs(10),
            replication: 1,
            kafka: Vec::new(),
        }
    }

    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.kafka {
            config.set(key, value);
        }
        config
    }
}

/// A running sink: a member of its annals consumer group that ships the partitions it
/// owns.
pub struct Sink {
    member: GroupMember,
    fatal: Arc<Fatal>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("member", &self.member).finish()
    }
}

impl Sink {
    /// Makes or checks the topic, then joins the group and starts shipping.
    pub async fn start(store: &Store, options: SinkOptions) -> Result<Sink> {
        if options.topic.is_empty() || options.brokers.is_empty() {
            return Err(Error::InvalidSetting("a sink needs brokers and a topic".into()));
        }
        let config = options.client();
        ensure_topic(&config, &options.topic, store.partition_count(), options.replication).await?;
        let member_id = options.group_options.member_id.clone().unwrap_or_else(|| {
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            format!("kafka-sink-{}-{}", std::process::id(), &suffix[..8])
        });
        let fatal = Arc::new(Fatal::default());
        let shipper = Shipper {
            store: store.clone(),
            topic: options.topic.clone(),
            group: options.group.clone(),
            member_id: member_id.clone(),
            filter: options.filter.clone(),
            producer: Mutex::new(Arc::new(producer(&config, options.delivery_timeout)?)),
            config,
            delivery_timeout: options.delivery_timeout,
            fatal: fatal.clone(),
        };
        let group_options = GroupOptions {
            member_id: Some(member_id),
            ..options.group_options
        };
        let member = GroupMember::batch_consumer(store, &options.group, shipper, group_options).await?;
        Ok(Sink { member, fatal })
    }

    /// The annals partitions this sink ships now.
    pub fn assignment(&self) -> Vec<Partition> {
        self.member.assignment()
    }

    /// Stops: each partition finishes the batch in hand, then the member leaves the
    /// group.
    pub async fn shutdown(self) -> Result<()> {
        self.member.shutdown().await?;
        Ok(())
    }

    /// Waits until the sink meets a failure it cannot pass (the topic's partitions
    /// changed, the topic holds another history, a gap) and returns it; the sink then
    /// ships nothing more, and only [`shutdown`](Sink::shutdown) remains. Failures that
    /// pass (the broker or the store unreachable for a while) are retried.
    pub async fn failure(&self) -> Error {
        let mut failed = self.fatal.signal.subscribe();
        let _ = failed.wait_for(|failed| *failed).await;
        self.fatal.take()
    }

    /// Runs until the sink meets a failure it cannot pass, then leaves the group and
    /// returns it.
    pub async fn wait(self) -> Result<()> {
        let failure = self.failure().await;
        self.member.shutdown().await?;
        Err(failure)
    }
}

/// The first failure that stops the sink.
#[derive(Default)]
struct Fatal {
    error: Mutex<Option<Error>>,
    signal: watch::Sender<bool>,
}

impl Fatal {
    fn set(&self, error: Error) {
        let mut slot = self.error.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        slot.get_or_insert(error);
        self.signal.send_replace(true);
    }

    fn take(&self) -> Error {
        let mut slot = self.error.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        slot.take().unwrap_or(Error::Stopped)
    }
}

fn producer(config: &ClientConfig, delivery_timeout: Duration) -> Result<FutureProducer> {
    let mut config = config.clone();
    config
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", delivery_timeout.as_millis().max(1).to_string())
        // A request in flight counts too: none outlives the delivery timeout.
        .set(
            "request.timeout.ms",
            delivery_timeout.as_millis().clamp(1, 900_000).to_string(),
        );
    if config.get("linger.ms").is_none() {
        config.set("linger.ms", "5");
    }
    Ok(config.create()?)
}

/// The group's handler: ships batches, and finds where each partition resumes.
struct Shipper {
    store: Store,
    topic: String,
    group: String,
    member_id: String,
    filter: Filter,
    config: ClientConfig,
    producer: Mutex<Arc<FutureProducer>>,
    delivery_timeout: Duration,
    fatal: Arc<Fatal>,
}

#[async_trait]
impl BatchConsumer for Shipper {
    fn filter(&self) -> Filter {
        self.filter.clone()
    }

    async fn open(&self, partition: Partition, committed: Offset) -> annals::Result<Offset> {
        self.halted()?;
        let resumed = self.resume(partition, committed).await;
        self.report(partition, resumed).await
    }

    async fn handle_batch(&self, partition: Partition, records: &[RecordedEvent]) -> annals::Result<()> {
        self.halted()?;
        let shipped = self.ship(partition, records).await;
        self.report(partition, shipped).await
    }
}

impl Shipper {
    /// Where `partition` resumes: after the record the Kafka partition ends with, or at
    /// the committed offset when it holds nothing.
    async fn resume(&self, partition: Partition, committed: Offset) -> Result<Offset> {
        if self.others_live().await? {
            // The previous owner may still be delivering its last batch.
            tokio::time::sleep(self.delivery_timeout + Duration::from_secs(1)).await;
        }
        let Some(last) = tail(&self.config, &self.topic, partition.0 as i32).await? else {
            return Ok(committed);
        };
        self.check_holds(partition, last).await?;
        tracing::info!(topic = %self.topic, %partition, offset = last.offset, "resuming after the topic's last record");
        Ok(Offset(last.offset + 1))
    }

    /// Whether other members of the group are alive.
    async fn others_live(&self) -> Result<bool> {
        let group = annals::group::admin::describe(&self.store, &self.group).await?;
        Ok(group.members.iter().any(|member| member.member_id != self.member_id))
    }

    /// Checks that the store holds the record the Kafka partition ends with.
    async fn check_holds(&self, partition: Partition, last: Tail) -> Result<()> {
        let end = self.store.high_watermark(partition).await?;
        if end.0 <= last.offset {
            // Not yet (a follower catching up) or never (another history): retried, and
            // told apart once the store holds that offset.
            return Err(Error::Store(annals::Error::handler(format!(
                "partition {partition} ends at offset {end} here, but topic {:?} holds its record at offset {}: waiting for the store to catch up",
                self.topic, last.offset
            ))));
        }
        let held = self.store.read_partition(partition, Offset(last.offset), 1).await?;
        match held.first() {
            Some(record) if record.event_id == last.event_id => Ok(()),
            found => Err(Error::Diverged {
                topic: self.topic.clone(),
                partition: partition.0 as i32,
                offset: last.offset,
                event_id: last.event_id,
                found: found.map_or("nothing".into(), |record| format!("event {}", record.event_id)),
            }),
        }
    }

    /// The producer, a new one if the last one met a fatal error.
    fn producer(&self) -> Result<Arc<FutureProducer>> {
        let mut current = self.producer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((code, reason)) = current.client().fatal_error() {
            tracing::warn!(topic = %self.topic, ?code, %reason, "the producer failed; making a new one");
            *current = Arc::new(producer(&self.config, self.delivery_timeout)?);
        }
        Ok(current.clone())
    }

    /// Produces `records` to the Kafka partition of the same number and waits for every
    /// delivery report.
    async fn ship(&self, partition: Partition, records: &[RecordedEvent]) -> Result<()> {
        let producer = self.producer()?;
        let kafka_partition = partition.0 as i32;
        let mut pending = Vec::with_capacity(records.len());
        let mut refused = None;
        let mut permanent: Option<Error> = None;
        'records: for record in records {
            let mut message = FutureRecord::to(&self.topic)
                .partition(kafka_partition)
                .key(record.stream.as_str())
                .payload(record.payload.get())
                .timestamp(record.recorded_at.timestamp_millis())
                .headers(headers::of(record));
            loop {
                match producer.send_result(message) {
                    Ok(delivery) => {
                        pending.push((record.offset, delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        message = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((error, _)) => {
                        permanent = self.refused(partition, record.offset, &error);
                        refused = Some((record.offset, error.to_string()));
                        break 'records;
                    }
                }
            }
        }
        // Every report is awaited, so nothing of this batch is in flight once it returns.
        let mut failed: Option<(Offset, String)> = None;
        let mut delivered_after_failure = false;
        for (offset, delivery) in pending {
            let outcome = match delivery.await {
                Ok(Ok(_)) => None,
                Ok(Err((error, _))) => {
                    if let Some(refused) = self.refused(partition, offset, &error) {
                        permanent.get_or_insert(refused);
                    }
                    Some(error.to_string())
                }
                Err(_) => Some("the producer dropped the message".to_owned()),
            };
            match (outcome, &failed) {
                (Some(reason), None) => failed = Some((offset, reason)),
                (None, Some(_)) => delivered_after_failure = true,
                _ => {}
            }
        }
        if let Some(refused) = permanent {
            return Err(refused);
        }
        match (failed.or(refused), delivered_after_failure) {
            (None, _) => {
                tracing::debug!(topic = %self.topic, %partition, records = records.len(), "shipped");
                Ok(())
            }
            (Some((missing, reason)), true) => Err(Error::Gap {
                topic: self.topic.clone(),
                partition: kafka_partition,
                missing: missing.0,
                reason,
            }),
            (Some((offset, reason)), false) => Err(Error::Store(annals::Error::handler(format!(
                "shipping offset {offset} of partition {partition} to {:?} failed: {reason}",
                self.topic
            )))),
        }
    }

    /// Refuses all work once a failure ended the sink.
    fn halted(&self) -> annals::Result<()> {
        if *self.fatal.signal.borrow() {
            return Err(annals::Error::handler("the sink stopped on an earlier failure"));
        }
        Ok(())
    }

    /// A refusal that shipping the record again cannot get past (too large for the
    /// broker, a timestamp it refuses, no right to write the topic).
    fn refused(&self, partition: Partition, offset: Offset, error: &KafkaError) -> Option<Error> {
        use RDKafkaErrorCode::*;
        let code = error.rdkafka_error_code()?;
        matches!(
            code,
            MessageSizeTooLarge
                | InvalidMessageSize
                | InvalidRecord
                | InvalidTimestamp
                | TopicAuthorizationFailed
                | ClusterAuthorizationFailed
                | InvalidMessage
        )
        .then(|| Error::Refused {
            topic: self.topic.clone(),
            partition: partition.0 as i32,
            offset: offset.0,
            reason: error.to_string(),
        })
    }

    /// Hands a result to the group. A failure that ends the sink stops all its work
    /// first; a gap also pauses the partition in the group, so that no sink, in this
    /// process or another, resumes after the record that is missing from the topic.
    async fn report<T>(&self, partition: Partition, result: Result<T>) -> annals::Result<T> {
        match result {
            Ok(value) => Ok(value),
            Err(Error::Store(error)) => Err(error),
            Err(error) if error.is_fatal() => {
                tracing::error!(topic = %self.topic, %error, "the sink stops");
                let message = error.to_string();
                let gap = matches!(error, Error::Gap { .. });
                self.fatal.set(error);
                if gap {
                    if let Err(paused) =
                        annals::group::admin::pause(&self.store, &self.group, Some(vec![partition])).await
                    {
                        tracing::error!(topic = %self.topic, %partition, error = %paused, "pausing the partition after a gap");
                    }
                }
                Err(annals::Error::handler(message))
            }
            Err(error) => Err(annals::Error::handler(error)),
        }
    }
}
