//! Subscriptions: read a partition from an offset, then wait for new records.
//!
//! Waiting is driven by wake-ups (in-process after every commit, PostgreSQL
//! `LISTEN/NOTIFY` across processes), with a slow poll as the fallback for writers
//! that cannot notify (another process on the same SQLite file, a lost notification).

use std::collections::VecDeque;

use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::watch;

use super::Store;
use crate::error::Result;
use crate::position::{Offset, Partition};
use crate::record::RecordedEvent;

/// Records fetched per read while catching up.
const BATCH: usize = 500;

struct Cursor {
    store: Store,
    partition: Partition,
    next: Offset,
    buffered: VecDeque<RecordedEvent>,
    wakeups: watch::Receiver<Offset>,
    failed: bool,
}

pub(super) fn records(store: Store, partition: Partition, from: Offset) -> BoxStream<'static, Result<RecordedEvent>> {
    let wakeups = store.inner.backend.wakeups().watch(partition);
    let cursor = Cursor {
        store,
        partition,
        next: from,
        buffered: VecDeque::new(),
        wakeups,
        failed: false,
    };
    stream::unfold(cursor, |mut cursor| async move {
        if cursor.failed {
            return None;
        }
        loop {
            if let Some(record) = cursor.buffered.pop_front() {
                cursor.next = record.offset + 1;
                return Some((Ok(record), cursor));
            }
            // Mark the current wake-up as seen *before* reading, so an append that
            // commits after the read below still wakes the wait that follows it.
            cursor.wakeups.borrow_and_update();
            match cursor.store.read_partition(cursor.partition, cursor.next, BATCH).await {
                Ok(records) if !records.is_empty() => cursor.buffered.extend(records),
                Ok(_) => {
                    let poll = cursor.store.poll_interval();
                    // Either a wake-up or the poll interval; both lead to a fresh read.
                    let _ = tokio::time::timeout(poll, cursor.wakeups.changed()).await;
                }
                Err(error) => {
                    cursor.failed = true;
                    return Some((Err(error), cursor));
                }
            }
        }
    })
    .boxed()
}

/// Records of `partition` from `from` on, as stored (sealed fields sealed), ending on an
/// append's last record; when there are none yet, waits up to `wait` for the first to
/// be appended (woken by the append, not by polling). At most `limit` of them, unless
/// the first append alone is longer: then all of it.
pub(super) async fn fetch(
    store: &Store,
    partition: Partition,
    from: Offset,
    limit: usize,
    wait: std::time::Duration,
) -> Result<Vec<RecordedEvent>> {
    let records = long_poll(store, partition, wait, Vec::new, || async move {
        let records = store.read_partition_sealed(partition, from, limit).await?;
        Ok((!records.is_empty()).then_some(records))
    })
    .await?;
    whole_appends(store, records, limit).await
}

/// Up to `limit` records of `partition` from `from` on that pass `read`'s filter, read
/// through the filter index it names, and the offset the read covered: every record
/// between `from` and it that passes is in the answer. When the partition holds
/// nothing at or after `from`, waits up to `wait` for an append, as [`fetch`] does.
pub(crate) async fn fetch_filtered(
    store: &Store,
    partition: Partition,
    from: Offset,
    limit: usize,
    read: &crate::backend::FilteredRead,
    wait: std::time::Duration,
) -> Result<(Vec<RecordedEvent>, Offset)> {
    let nothing = || (Vec::new(), from);
    long_poll(store, partition, wait, nothing, || async move {
        // The end first: every record below it is committed, and so in what the read
        // below sees; one appended meanwhile is past it, and read next time.
        let end = store.inner.backend.high_watermark(partition).await?;
        if end <= from {
            return Ok(None);
        }
        let filtered = store
            .inner
            .backend
            .read_filtered(partition, from..end, limit, read)
            .await?;
        Ok(Some(filtered))
    })
    .await
}

/// Runs `look` until it finds something, or for up to `wait` (then answers `nothing`):
/// again whenever `partition` is appended to in this process or heard of from others,
/// and at the store's poll interval in any case.
///
/// (`look` is a closure returning a future rather than an async closure: the futures
/// of async closures are not known to be `Send` for every lifetime, and a group's
/// fetches run on spawned tasks.)
async fn long_poll<T, F>(
    store: &Store,
    partition: Partition,
    wait: std::time::Duration,
    nothing: impl FnOnce() -> T,
    mut look: impl FnMut() -> F,
) -> Result<T>
where
    F: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    let mut wakeups = store.inner.backend.wakeups().watch(partition);
    loop {
        wakeups.borrow_and_update();
        if let Some(found) = look().await? {
            return Ok(found);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(nothing());
        }
        let poll = store.poll_interval().min(deadline - now);
        let _ = tokio::time::timeout(poll, wakeups.changed()).await;
    }
}

/// `records` cut after their last append's last record, or, when they hold none (one
/// append longer than `limit`), read on to it. An append commits whole (I3), so its
/// last record is in the log once any of its records is.
async fn whole_appends(store: &Store, mut records: Vec<RecordedEvent>, limit: usize) -> Result<Vec<RecordedEvent>> {
    if let Some(end) = records.iter().rposition(|record| record.last_in_append) {
        records.truncate(end + 1);
        return Ok(records);
    }
    while let Some(last) = records.last().filter(|record| !record.last_in_append) {
        let (partition, next) = (last.partition, last.offset + 1);
        let more = store.read_partition_sealed(partition, next, limit.max(1)).await?;
        let end = more.iter().position(|record| record.last_in_append);
        let read = more.len();
        records.extend(more.into_iter().take(end.map_or(read, |end| end + 1)));
        if read == 0 {
            break;
        }
    }
    Ok(records)
}
