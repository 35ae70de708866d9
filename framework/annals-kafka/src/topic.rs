//! The topic a sink writes: made with the store's partition count, or checked; and the
//! last message of one of its partitions, which says where the sink resumes.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::error::{Error, Result};
use crate::headers;

/// How long a metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes `topic` with `partitions` partitions if it is missing, and checks its count
/// otherwise ([`Error::PartitionCountMismatch`] when it differs).
pub async fn ensure_topic(config: &ClientConfig, topic: &str, partitions: u32, replication: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let new = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(replication));
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    for created in admin.create_topics([&new], &options).await? {
        match created {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::Kafka(KafkaError::AdminOp(code))).inspect_err(|error| {
                    tracing::warn!(%topic, %error, "creating the topic failed");
                })
            }
        }
    }
    let found = topic_partitions(config, topic).await?;
    if found != partitions as usize {
        return Err(Error::PartitionCountMismatch {
            topic: topic.to_owned(),
            kafka: found,
            annals: partitions,
        });
    }
    Ok(())
}

/// How many partitions `topic` has (0 if the broker does not know it).
pub async fn topic_partitions(config: &ClientConfig, topic: &str) -> Result<usize> {
    let (config, topic) = (config.clone(), topic.to_owned());
    blocking(move || {
        let client: BaseConsumer = config.create()?;
        let metadata = client.fetch_metadata(Some(&topic), REQUEST_TIMEOUT)?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        Ok(count)
    })
    .await
}

/// What the last message of a Kafka partition says about the record it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tail {
    /// The record's annals offset.
    pub(crate) offset: u64,
    /// Its event id.
    pub(crate) event_id: uuid::Uuid,
}

/// The last message of `partition` of `topic`, read back: `None` when the partition
/// holds no message (never written, or all of it expired).
pub(crate) async fn tail(config: &ClientConfig, topic: &str, partition: i32) -> Result<Option<Tail>> {
    let mut config = config.clone();
    // Assigned, never subscribed: the group id is only the client's, and nothing commits.
    config
        .set("group.id", "annals-kafka-tail")
        .set("enable.auto.commit", "false");
    let topic = topic.to_owned();
    blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let (low, high) = consumer.fetch_watermarks(&topic, partition, REQUEST_TIMEOUT)?;
        if high <= low {
            return Ok(None);
        }
        let last = high - 1;
        let mut position = TopicPartitionList::new();
        position.add_partition_offset(&topic, partition, Offset::Offset(last))?;
        consumer.assign(&position)?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        while Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message?;
            if message.partition() != partition || message.offset() != last {
                continue;
            }
            let foreign = |reason: &str| Error::ForeignMessage {
                topic: topic.clone(),
                partition,
                offset: last,
                reason: reason.to_owned(),
            };
            let headers = message.headers();
            let offset = headers::text(headers, headers::OFFSET)
                .ok_or_else(|| foreign("it has no annals-offset header"))?
                .parse()
                .map_err(|_| foreign("its annals-offset header is not a number"))?;
            let event_id = headers::text(headers, headers::EVENT_ID)
                .ok_or_else(|| foreign("it has no annals-event-id header"))?
                .parse()
                .map_err(|_| foreign("its annals-event-id header is not a UUID"))?;
            return Ok(Some(Tail { offset, event_id }));
        }
        Err(Error::Kafka(KafkaError::MessageConsumption(
            RDKafkaErrorCode::RequestTimedOut,
        )))
    })
    .await
}

/// Runs a blocking client call off the async workers.
async fn blocking<T: Send + 'static>(call: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(call).await.map_err(|_| Error::Stopped)?
}
