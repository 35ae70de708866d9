//! # annals
//!
//! Event sourcing and CQRS on a partitioned, append-only log, built the way Kafka builds
//! one. Aggregates write events into streams; each stream lives in one partition chosen
//! by Kafka's partitioner, so a stream is totally ordered and partitions give
//! parallelism.
//!
//! | piece | where |
//! |---|---|
//! | open a store from a URL | [`Store::open`], [`StoreOptions`] |
//! | append with optimistic concurrency and command ids | [`EventStore::append`], [`AppendRequest`], [`ExpectedVersion`] |
//! | read a stream, a partition, watermarks; subscribe | [`EventStore`] |
//! | stream ids and the partitioner | [`StreamId`], [`partition_for`] |
//! | events in and out | [`NewEvent`], [`RecordedEvent`], [`Metadata`] |
//! | errors | [`Error`] |
//! | aggregates, commands, repositories | [`aggregate`] |
//!
//! | feature | default | engine |
//! |---|---|---|
//! | — | always | `memory:`, in-process, for tests and examples |
//! | `sqlite` | yes | `sqlite://path`, embedded, WAL, group commit |
//! | `postgres` | yes | `postgres://…`, production engine |
//!
//! ```
//! use annals::prelude::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> annals::Result<()> {
//! let store = Store::open("memory:").await?;
//! let cart = StreamId::new("cart-1")?;
//! let first = store
//!     .append(AppendRequest::new(cart.clone(), ExpectedVersion::NoStream)
//!         .command_id(uuid::Uuid::now_v7())
//!         .event(NewEvent::json("ItemAdded", &serde_json::json!({"sku": "A-1"}))?))
//!     .await?;
//! // Optimistic concurrency: the next writer must know the stream is at version 1.
//! let stale = store
//!     .append(AppendRequest::new(cart.clone(), ExpectedVersion::NoStream)
//!         .event(NewEvent::json("ItemAdded", &serde_json::json!({"sku": "B-2"}))?))
//!     .await;
//! assert!(matches!(stale, Err(Error::WrongExpectedVersion { actual: Version(1), .. })));
//! assert_eq!(store.high_watermarks().await?[first.partition.index()], 1);
//! # Ok(()) }
//! ```

pub mod aggregate;
mod backend;
mod coordination;
mod error;
pub mod group;
mod log;
mod options;
mod partitioner;
pub mod personal;
mod position;
pub mod process;
pub mod readmodel;
mod record;
pub mod schedule;
pub mod snapshot;
mod store;
mod stream;
mod telemetry;
pub mod trace;

/// The attribute the [`group::Projection`] and [`group::Consumer`] traits are written with.
pub use async_trait::async_trait;
pub use error::{EngineFailure, Error, Result};
pub use log::{AppendOutcome, Replica, StreamInfo, Visitor};
pub use options::{
    Limits, StoreOptions, Synchronous, DEFAULT_KEY_CACHE_TTL, DEFAULT_PARTITIONS, DEFAULT_TRANSACTION_AWAIT_LIMIT,
};
pub use partitioner::{murmur2, partition_for};
pub use position::{ExpectedVersion, Offset, ParseExpectedVersionError, Partition, Position, Version};
pub use record::{EventView, Metadata, NewEvent, RecordedEvent, MAX_EVENT_TYPE_LEN};
pub use store::{
    AppendRequest, Deletion, EventStore, Retention, RetentionScope, ScavengeOptions, Scavenged, Scavenger, Store,
    TypedRecords, RETENTION_SET, STREAM_DELETED, STREAM_TRUNCATED,
};
pub use stream::{InvalidStreamId, StreamId, MAX_STREAM_ID_LEN};
pub use trace::{InvalidTraceParent, TraceParent};

/// The names most programs need: `use annals::prelude::*;`.
pub mod prelude {
    pub use crate::{
        AppendOutcome, AppendRequest, Error, EventStore, ExpectedVersion, Metadata, NewEvent, Offset, Partition,
        RecordedEvent, Store, StreamId, Version,
    };
}
