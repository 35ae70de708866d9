//! What the bridge can fail with.

use rdkafka::error::KafkaError;

/// The bridge's errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Kafka client failed (the broker is unreachable, refused a request, …).
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] annals::Error),
    /// The topic exists with another partition count than the store's.
    #[error(
        "topic {topic:?} has {kafka} partitions and the store {annals}: the sink ships partition p to partition p, so the counts must be equal"
    )]
    PartitionCountMismatch {
        /// The topic.
        topic: String,
        /// Its partition count.
        kafka: usize,
        /// The store's.
        annals: u32,
    },
    /// The last message of a Kafka partition holds a record this store never had: the
    /// topic was filled from another history (another store, or a leader whose last
    /// records a promoted follower never received).
    #[error(
        "partition {partition} of topic {topic:?} ends with annals offset {offset} (event {event_id}), which this store holds as {found}: the topic was filled from another history; ship to a new topic or reset it"
    )]
    Diverged {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The annals offset of the partition's last message.
        offset: u64,
        /// Its event id.
        event_id: uuid::Uuid,
        /// What the store holds there.
        found: String,
    },
    /// A message in a topic the sink writes was not written by a sink.
    #[error(
        "message {offset} of partition {partition} of topic {topic:?} was not written by an annals sink: {reason}"
    )]
    ForeignMessage {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The message's Kafka offset.
        offset: i64,
        /// What it lacks.
        reason: String,
    },
    /// A delivery failed while a later one of the same partition succeeded: the topic
    /// holds a gap, which the sink never fills out of order.
    #[error(
        "partition {partition} of topic {topic:?}: annals offset {missing} failed to reach Kafka while a later record did ({reason}); the sink stopped rather than ship out of order"
    )]
    Gap {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The annals offset that is missing.
        missing: u64,
        /// Why it failed.
        reason: String,
    },
    /// The broker refused a record in a way that shipping it again cannot change (too
    /// large, a timestamp out of its range, no right to write the topic).
    #[error("partition {partition} of topic {topic:?}: the broker refused annals offset {offset} for good ({reason})")]
    Refused {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The annals offset of the record.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// A message the source cannot append, and the source stops on such messages.
    #[error("message {offset} of partition {partition} of topic {topic:?}: {reason}")]
    BadMessage {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The message's Kafka offset.
        offset: i64,
        /// Why it cannot be appended.
        reason: String,
    },
    /// A setting is out of range or malformed.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    /// The sink or source stopped.
    #[error("the bridge stopped")]
    Stopped,
}

/// The bridge's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, stable code for this error, as `annals kafka … --json` prints it.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Kafka(_) => "kafka",
            Error::Store(error) => error.code(),
            Error::PartitionCountMismatch { .. } => "partition_count_mismatch",
            Error::Diverged { .. } => "diverged",
            Error::ForeignMessage { .. } => "foreign_message",
            Error::Gap { .. } => "gap",
            Error::Refused { .. } => "refused",
            Error::BadMessage { .. } => "bad_message",
            Error::InvalidSetting(_) => "bad_request",
            Error::Stopped => "unavailable",
        }
    }

    /// Whether the failure ends the bridge rather than pass with a retry.
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::PartitionCountMismatch { .. }
                | Error::Diverged { .. }
                | Error::ForeignMessage { .. }
                | Error::Gap { .. }
                | Error::Refused { .. }
                | Error::InvalidSetting(_)
        )
    }
}
