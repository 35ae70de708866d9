//! One owned partition: fetch a batch ahead, hand records to the handler in offset
//! order, retry what fails, dead-letter or stop as the failure policy says, and commit
//! past the batch, fenced.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use super::commit::Commit;
use super::Member;
use crate::coordination::{DeadLetterStatus, Owned};
use tracing::Instrument;

use crate::backend::FilteredRead;
use crate::error::{Error, Result};
use crate::group::handling_span;
use crate::group::{FailurePolicy, Filter, Handler};
use crate::position::{Offset, Partition};
use crate::record::RecordedEvent;
use crate::store::Store;

impl Member {
    /// Works on one partition until told to stop, fenced, or stopped by the failure policy.
    pub(super) async fn work(&self, owned: Owned, mut stop: watch::Receiver<bool>, retry: Arc<Notify>) -> Result<()> {
        let commit = self.commit_info(owned);
        let mut next: Offset = self
            .db
            .read_transaction(move |tx| Box::pin(async move { commit.owned_offset(tx).await }))
            .await?;
        if let Handler::Batch(consumer) = &self.handler {
            // The destination says where this partition resumes; the offset follows it.
            let start = consumer.open(owned.partition, next).await?;
            next = self.flush(owned, Vec::new(), next, start).await?;
        }
        let mut parked = self.retry_dead_letters(owned).await?;
        let filter = self.handler.filter();
        // The next batch is fetched while this one is handled: reading and writing
        // overlap, and at most three batches per partition are in memory (this one,
        // one waiting in the channel, one being read).
        // A filtered group reads through a filter index when the store has one for it.
        let indexes = if filter.is_all() {
            Vec::new()
        } else {
            self.store.filter_indexes().await?
        };
        let read = FilteredRead::plan(&filter, &indexes);
        let mut records = Prefetch::start(&self.store, owned.partition, next, self.options.batch_size.max(1), read);
        loop {
            let batch = tokio::select! {
                biased;
                _ = stop.changed() => return Ok(()),
                _ = retry.notified() => {
                    parked = self.retry_dead_letters(owned).await?;
                    continue;
                }
                batch = records.next() => batch,
            };
            let Some(batch) = batch else { return Err(Error::Closed) };
            let (batch, covered) = batch?;
            match self.process(owned, next, batch, covered, &filter, &mut parked).await? {
                Some(committed) => {
                    let known_end = self.store.known_end(owned.partition);
                    let lag = known_end.0.saturating_sub(committed.0);
                    crate::telemetry::group_progress(&self.group, owned.partition, (committed - next) as usize, lag);
                    self.store.commits().publish(&self.group, owned.partition, committed);
                    next = committed;
                }
                None => return Ok(()), // stopped by the failure policy
            }
        }
    }

    /// Handles one fetched batch, which covers the offsets up to `to`, and commits
    /// past it; `None` when the failure policy stopped the partition.
    async fn process(
        &self,
        owned: Owned,
        from: Offset,
        batch: Vec<RecordedEvent>,
        to: Offset,
        filter: &Filter,
        parked: &mut HashSet<String>,
    ) -> Result<Option<Offset>> {
        if batch.is_empty() {
            // Nothing the group handles up to `to`: only the offset moves.
            return self.flush(owned, Vec::new(), from, to).await.map(Some);
        }
        let mut plan = Vec::with_capacity(batch.len());
        for record in batch {
            let step = if parked.contains(record.stream.as_str()) {
                Step::Park
            } else if filter.matches(&record) {
                Step::Handle
            } else {
                Step::Skip
            };
            plan.push((record, step));
        }
        let plan = Arc::new(plan);
        match &self.handler {
            Handler::Transactional(projection) => {
                let (projection, commit) = (projection.clone(), self.commit_info(owned));
                let all = plan.clone();
                let batch_span = tracing::info_span!("annals.batch", group = %self.group, partition = %owned.partition, from = %from, to = %to);
                let fast = self
                    .db
                    .transaction(move |tx| {
                        Box::pin(async move {
                            let mut handled = Vec::with_capacity(all.len());
                            for (record, step) in all.iter() {
                                match step {
                                    Step::Handle => handled.push(record),
                                    Step::Park => {
                                        commit.dead_letter(tx, record, DeadLetterStatus::Parked, "", 0).await?
                                    }
                                    Step::Skip => {}
                                }
                            }
                            if !handled.is_empty() {
                                projection.handle_batch(&handled, tx).instrument(batch_span).await?;
                            }
                            commit.commit(tx, from, to).await
                        })
                    })
                    .await;
                match fast {
                    Ok(()) => return Ok(Some(to)),
                    Err(error @ Error::Fenced { .. }) => return Err(error),
                    Err(error) => {
                        tracing::debug!(group = %self.group, %error, "batch failed; handling it record by record");
                    }
                }
                self.one_by_one(owned, from, to, &plan, parked).await
            }
            Handler::AtLeastOnce(..) => self.one_by_one(owned, from, to, &plan, parked).await,
            Handler::Batch(consumer) => {
                let records: Vec<RecordedEvent> = Arc::unwrap_or_clone(plan)
                    .into_iter()
                    .filter(|(_, step)| matches!(step, Step::Handle))
                    .map(|(record, _)| record)
                    .collect();
                if !records.is_empty() {
                    // Fenced before it starts: a member that lost the partition writes nothing more.
                    let commit = self.commit_info(owned);
                    self.db
                        .read_transaction(move |tx| Box::pin(async move { commit.check_owner(tx).await }))
                        .await?;
                    let span = tracing::info_span!("annals.batch", group = %self.group, partition = %owned.partition, from = %from, to = %to);
                    consumer
                        .handle_batch(owned.partition, &records)
                        .instrument(span)
                        .await?;
                }
                self.flush(owned, Vec::new(), from, to).await.map(Some)
            }
        }
    }

    /// Handles records one at a time, each with its retries. A transactional handler
    /// commits each record with its writes; dead letters, parked and skipped records
    /// are committed in between, and an at-least-once batch is committed at the end.
    async fn one_by_one(
        &self,
        owned: Owned,
        from: Offset,
        end: Offset,
        plan: &Arc<Vec<(RecordedEvent, Step)>>,
        parked: &mut HashSet<String>,
    ) -> Result<Option<Offset>> {
        let transactional = matches!(self.handler, Handler::Transactional(_));
        let mut cursor = from;
        let mut rows: Vec<DeadLetterRow> = Vec::new();
        for (record, step) in plan.iter() {
            let step = match step {
                Step::Handle if parked.contains(record.stream.as_str()) => Step::Park,
                other => *other,
            };
            let failure = match step {
                Step::Skip => None,
                Step::Park => {
                    rows.push((record.clone(), DeadLetterStatus::Parked, String::new(), 0));
                    None
                }
                Step::Handle => {
                    if transactional {
                        cursor = self
                            .flush(owned, std::mem::take(&mut rows), cursor, record.offset)
                            .await?;
                    }
                    let failure = self.attempt(owned, record, cursor).await?;
                    if transactional && failure.is_none() {
                        cursor = record.offset + 1;
                    }
                    failure
                }
            };
            let Some(error) = failure else { continue };
            match self.options.on_failure {
                FailurePolicy::DeadLetter => {
                    crate::telemetry::dead_lettered(&self.group);
                    tracing::warn!(group = %self.group, stream = %record.stream, offset = %record.offset, %error, "dead-lettered");
                    parked.insert(record.stream.as_str().to_owned());
                    rows.push((
                        record.clone(),
                        DeadLetterStatus::Failed,
                        error,
                        self.options.max_attempts,
                    ));
                }
                FailurePolicy::Stop => {
                    tracing::warn!(group = %self.group, partition = %owned.partition, offset = %record.offset, %error, "partition stopped");
                    self.flush(owned, std::mem::take(&mut rows), cursor, record.offset)
                        .await?;
                    let (commit, reason) = (self.commit_info(owned), format!("offset {}: {error}", record.offset));
                    self.db
                        .transaction(move |tx| Box::pin(async move { commit.stop(tx, &reason).await }))
                        .await?;
                    return Ok(None);
                }
            }
        }
        self.flush(owned, rows, cursor, end).await.map(Some)
    }

    /// Writes dead-letter rows and commits `from..to` in one fenced transaction.
    async fn flush(&self, owned: Owned, rows: Vec<DeadLetterRow>, from: Offset, to: Offset) -> Result<Offset> {
        if rows.is_empty() && from == to {
            return Ok(to);
        }
        let commit = self.commit_info(owned);
        self.db
            .transaction(move |tx| {
                Box::pin(async move {
                    for (record, status, error, attempts) in &rows {
                        commit.dead_letter(tx, record, *status, error, *attempts).await?;
                    }
                    if from == to {
                        commit.check_owner(tx).await
                    } else {
                        commit.commit(tx, from, to).await
                    }
                })
            })
            .await?;
        Ok(to)
    }

    /// Runs the handler on `record` up to `max_attempts` times. Transactional handlers
    /// commit `record`'s offset in the same transaction on success. Returns the last
    /// error when every attempt failed.
    async fn attempt(&self, owned: Owned, record: &RecordedEvent, cursor: Offset) -> Result<Option<String>> {
        self.with_retries(|| async {
            match &self.handler {
                Handler::Transactional(projection) => {
                    let (projection, commit, record) = (projection.clone(), self.commit_info(owned), record.clone());
                    let span = handling_span(Some(&self.group), &record);
                    self.db
                        .transaction(move |tx| {
                            Box::pin(async move {
                                projection.handle(&record, tx).instrument(span).await?;
                                commit.commit(tx, cursor, record.offset + 1).await
                            })
                        })
                        .await
                }
                Handler::AtLeastOnce(consumer, processed) => {
                    let span = handling_span(Some(&self.group), record);
                    consumer.handle(record, processed).instrument(span).await
                }
                Handler::Batch(consumer) => {
                    consumer
                        .handle_batch(owned.partition, std::slice::from_ref(record))
                        .await
                }
            }
        })
        .await
    }

    /// Runs `once` up to `max_attempts` times, backing off exponentially (from
    /// `retry_backoff`, at most 30 s) between tries. `Fenced` ends it at once. Returns
    /// the last error when every attempt failed.
    pub(super) async fn with_retries<F, Fut>(&self, mut once: F) -> Result<Option<String>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let mut last_error = String::new();
        let attempts = self.options.max_attempts.max(1);
        for attempt in 1..=attempts {
            match once().await {
                Ok(()) => return Ok(None),
                Err(error @ Error::Fenced { .. }) => return Err(error),
                Err(error) => {
                    last_error = error.to_string();
                    if attempt < attempts {
                        let backoff = self.options.retry_backoff.saturating_mul(1 << (attempt - 1).min(10));
                        tokio::time::sleep(backoff.min(Duration::from_secs(30))).await;
                    }
                }
            }
        }
        Ok(Some(last_error))
    }

    pub(super) fn commit_info(&self, owned: Owned) -> Commit {
        Commit {
            store: self.store.clone(),
            group: self.group.clone(),
            member: self.member_id.clone().into(),
            partition: owned.partition,
            generation: owned.generation,
        }
    }
}

/// A batch of a partition's records, and the offset up to which it covers the
/// partition: past its last record when the records between were filtered out.
type Fetched = (Vec<RecordedEvent>, Offset);

/// Batches of a partition's records, read one batch ahead by a task of their own. A
/// group reads the log, unless it is filtered and the store has a filter index for it:
/// then it reads only the records that pass.
struct Prefetch {
    batches: mpsc::Receiver<Result<Fetched>>,
    task: JoinHandle<()>,
}

impl Prefetch {
    /// How long one fetch waits at the head of the log before it asks again.
    const WAIT: Duration = Duration::from_secs(30);

    fn start(store: &Store, partition: Partition, from: Offset, batch: usize, read: Option<FilteredRead>) -> Self {
        let (send, batches) = mpsc::channel(1);
        let store = store.clone();
        let task = tokio::spawn(async move {
            // One read per batch, of the batch's size, woken by appends at the head.
            let mut next = from;
            loop {
                let fetched = match &read {
                    Some(read) => store.fetch_filtered(partition, next, batch, read, Self::WAIT).await,
                    None => store.fetch(partition, next, batch, Self::WAIT).await.map(|records| {
                        let covered = records.last().map_or(next, |last| last.offset + 1);
                        (records, covered)
                    }),
                };
                if let Ok((_, covered)) = &fetched {
                    if *covered == next {
                        continue;
                    }
                    next = *covered;
                }
                let failed = fetched.is_err();
                if send.send(fetched).await.is_err() || failed {
                    return;
                }
            }
        });
        Prefetch { batches, task }
    }

    async fn next(&mut self) -> Option<Result<Fetched>> {
        self.batches.recv().await
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A dead letter to write: the record, its status, the error and the attempts made.
type DeadLetterRow = (RecordedEvent, DeadLetterStatus, String, u32);

/// What to do with one record of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Handle,
    Skip,
    Park,
}
