//! Finding records as an operator does, in the console or a script: a record by its
//! event id, where a partition or a stream stands at a time, streams by id prefix, and a
//! partition's records filtered by event type.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Store;
use crate::backend::FilteredRead;
use crate::error::Result;
use crate::group::Filter;
use crate::log::StreamInfo;
use crate::position::{Offset, Partition, Version};
use crate::record::RecordedEvent;
use crate::stream::StreamId;

/// Records a read by event type looks through without an event-type index, per call.
const TYPE_SCAN: usize = 10_000;

/// Records of a partition with some event types: those found, and the offset the read
/// covered (every record below it that passes is in `records`; read on from there).
#[derive(Debug, Clone)]
pub struct TypedRecords {
    /// The records found, in offset order.
    pub records: Vec<RecordedEvent>,
    /// Where the next read starts.
    pub next_offset: Offset,
}

impl Store {
    /// The record whose event id is `id`, revealed, if the store holds one.
    pub async fn read_event(&self, id: Uuid) -> Result<Option<RecordedEvent>> {
        let Some((partition, offset)) = self.inner.backend.position_of_event(id).await? else {
            return Ok(None);
        };
        let record = self.read_partition(partition, offset, 1).await?.pop();
        Ok(record.filter(|record| record.event_id == id))
    }

    /// The first offset of `partition` written at or after `time`, or the partition's
    /// end when none was. Offsets are handed out in the order of their times (a
    /// partition's `recorded_at` never goes back), so this is a binary search of a few
    /// single-record reads.
    pub async fn offset_at(&self, partition: impl Into<Partition>, time: DateTime<Utc>) -> Result<Offset> {
        let partition = partition.into();
        let (mut low, mut high) = (0, self.high_watermark(partition).await?.0);
        while low < high {
            let middle = low + (high - low) / 2;
            match self.read_partition_sealed(partition, middle, 1).await?.first() {
                Some(record) if record.recorded_at < time => low = middle + 1,
                _ => high = middle,
            }
        }
        Ok(Offset(low))
    }

    /// The first version of `stream` written at or after `time`, if there is one.
    pub async fn version_at(&self, stream: &StreamId, time: DateTime<Utc>) -> Result<Option<Version>> {
        self.inner
            .backend
            .first_version_since(stream, time.timestamp_micros())
            .await
    }

    /// Streams whose id starts with `prefix`, in id order, after `after` if given, at
    /// most `limit`: [`list_streams`](Store::list_streams) for a prefix rather than a
    /// category.
    pub async fn streams_with_prefix(
        &self,
        prefix: &str,
        limit: usize,
        after: Option<&StreamId>,
    ) -> Result<Vec<StreamInfo>> {
        if prefix.is_empty() {
            return self.list_streams(None, limit, after).await;
        }
        // No stream id holds a character a prefix that is not itself an id holds.
        let Ok(start) = StreamId::new(prefix) else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        // An `after` below the prefix (a page of another search) starts at the prefix.
        let mut after = match after.filter(|after| after.as_str() >= prefix) {
            Some(after) => after.clone(),
            None => {
                // A hard-deleted stream is not listed, nor is the prefix's own id then.
                if matches!(self.stream_exists(&start).await, Ok(true)) {
                    found.push(StreamInfo {
                        partition: crate::partitioner::partition_for(&start, self.partition_count()),
                        version: self.stream_version(&start).await?,
                        stream: start.clone(),
                    });
                }
                start
            }
        };
        while found.len() < limit {
            let page = self.list_streams(None, limit - found.len(), Some(&after)).await?;
            let Some(last) = page.last() else { break };
            after = last.stream.clone();
            let (read, before) = (page.len(), found.len());
            found.extend(
                page.into_iter()
                    .take_while(|info| info.stream.as_str().starts_with(prefix)),
            );
            // Ids are in order: once one does not start with the prefix, none after does.
            if found.len() - before < read {
                break;
            }
        }
        Ok(found)
    }

    /// Up to `limit` records of `partition` from `from_offset` on whose type is one of
    /// `event_types`, revealed. With the event-type filter index the read goes through
    /// it; without, it looks through at most 10,000 records per call, and
    /// [`TypedRecords::next_offset`] says where to go on.
    pub async fn read_partition_of_types(
        &self,
        partition: impl Into<Partition>,
        from_offset: impl Into<Offset>,
        limit: usize,
        event_types: &[String],
    ) -> Result<TypedRecords> {
        let (partition, from_offset) = (partition.into(), from_offset.into());
        self.check_partition(partition)?;
        let filter = Filter::default().event_types(event_types.iter().cloned());
        let indexes = self.filter_indexes().await?;
        if let Some(read) = FilteredRead::plan(&filter, &indexes) {
            let (records, next_offset) = self
                .fetch_filtered(partition, from_offset, limit, &read, std::time::Duration::ZERO)
                .await?;
            return Ok(TypedRecords { records, next_offset });
        }
        let (mut records, mut next_offset) = (Vec::new(), from_offset);
        let mut scanned = 0;
        while records.len() < limit && scanned < TYPE_SCAN {
            let page = self.read_partition_sealed(partition, next_offset, 1_000).await?;
            let Some(last) = page.last() else { break };
            scanned += page.len();
            next_offset = last.offset + 1;
            for record in page.into_iter().filter(|record| filter.matches(record)) {
                if records.len() == limit {
                    next_offset = record.offset;
                    break;
                }
                records.push(record);
            }
        }
        self.reveal(&mut records).await?;
        Ok(TypedRecords { records, next_offset })
    }
}
