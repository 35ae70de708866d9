//! The Kafka bridge: annals' partitions on a Kafka topic, and a Kafka topic's messages
//! in annals, each exactly once.
//!
//! annals places every stream in the partition Kafka's default partitioner would choose
//! for its id (murmur2), so the bridge maps partition *p* to partition *p* and keeps each
//! stream's order on both sides.
//!
//! - [`Sink`] ships the store's records to a topic with the store's partition count. It
//!   runs as an annals consumer group, so sinks in several processes share the
//!   partitions. Its producer is idempotent, and when it takes a partition it reads the
//!   last message of the Kafka partition and resumes after the annals offset in its
//!   header: the topic, not the group's offset, says what was shipped, so a crash between
//!   a produce and the commit neither loses nor repeats a record.
//! - [`Source`] consumes a topic in a Kafka consumer group and appends each message to
//!   the stream named by its key (or a header), with a command id derived from the
//!   message's topic, partition and offset: a message delivered again after a crash is a
//!   duplicate the store refuses to apply twice (I5). It commits Kafka offsets after the
//!   appends.
//!
//! The client is librdkafka (through `rdkafka`, built from source with the crate).

mod error;
mod headers;
mod sink;
mod source;
mod topic;

pub use error::{Error, Result};
pub use headers::{EVENT_ID, EVENT_TYPE, METADATA, OFFSET, VERSION};
pub use sink::{Sink, SinkOptions};
pub use source::{command_id, BadMessages, Source, SourceOptions, StreamFrom};
pub use topic::{ensure_topic, topic_partitions};
