//! The store contract as tests: each function checks one invariant of the design
//! (DESIGN.md §2) or one documented behaviour, on whatever engine the [`TestStore`]
//! opens. [`conformance_suite!`](crate::conformance_suite) runs them all.
//!
//! The tests panic with a message naming the broken rule. Each invariant of the log
//! has a file of its own (`i1_offsets.rs` … `i9_bad_input.rs`); `appends.rs`,
//! `reads.rs` and `store.rs` hold the documented behaviours. The consumer-group
//! invariants I6 and I7 run through members of groups, in the testkit's `groups.rs`
//! (SQL projections) and `consumers.rs` (every engine) tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use annals::{
    partition_for, AppendOutcome, AppendRequest, Error, ExpectedVersion, Metadata, NewEvent, Offset, Partition, Store,
    StreamId, Version,
};
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

use crate::TestStore;

fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("valid test stream id")
}

fn event(kind: &str, payload: serde_json::Value) -> NewEvent {
    NewEvent::json(kind, &payload).expect("serialisable payload")
}

/// An append of `count` events whose payloads say which append and position they are.
fn tagged_append(stream_id: &StreamId, expected: ExpectedVersion, tag: u64, count: u64) -> AppendRequest {
    let mut request = AppendRequest::new(stream_id.clone(), expected);
    for i in 0..count {
        request = request.event(event("Tagged", json!({"append": tag, "i": i, "of": count})));
    }
    request
}

async fn append_one(store: &Store, id: &StreamId, expected: ExpectedVersion) -> AppendOutcome {
    store
        .append(AppendRequest::new(id.clone(), expected).event(event("Noted", json!({"n": 1}))))
        .await
        .expect("append succeeds")
}

/// A tiny deterministic generator, so failures reproduce.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Reads every record of `partition`, checking offsets are exactly 0, 1, 2, ….
pub async fn read_whole_partition(
    store: &Store,
    partition: impl Into<annals::Partition>,
) -> Vec<annals::RecordedEvent> {
    let partition = partition.into();
    let mut records = Vec::new();
    loop {
        let batch = store
            .read_partition(partition, records.len() as u64, 1_000)
            .await
            .expect("read partition");
        if batch.is_empty() {
            return records;
        }
        for record in batch {
            assert_eq!(
                record.offset,
                records.len() as u64,
                "I1: partition {partition} has a gap or a duplicate"
            );
            records.push(record);
        }
    }
}

mod appends;
mod i1_offsets;
mod i2_versions;
mod i3_atomic_appends;
mod i5_command_ids;
mod i8_replication;
mod i9_bad_input;
mod reads;
mod store;

pub use appends::{concurrent_appends_fail_alone, expected_version_semantics};
pub use i1_offsets::i1_offsets_gapless_under_concurrent_writers;
pub use i2_versions::i2_stream_versions_contiguous;
pub use i3_atomic_appends::i3_appends_are_atomic;
pub use i5_command_ids::{
    i5_command_id_answers_before_refusals, i5_command_id_applied_once, i5_command_id_survives_reopen,
};
pub use i8_replication::i8_replicated_records_continue_the_log;
pub use i9_bad_input::i9_bad_input_changes_nothing;
pub use reads::{
    fold_stream_sees_what_read_stream_returns, list_streams_by_category_and_page, reads_respect_from_and_limit,
    records_round_trip, subscribe_catches_up_then_waits,
};
pub use store::{
    a_cancelled_close_is_finished_by_the_next, missing_store_is_not_created, partition_count_is_fixed,
    streams_land_in_kafka_partitions,
};
