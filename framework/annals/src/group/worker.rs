//! A member at work: the heartbeat loop that follows the assignment, and one task per
//! owned partition that fetches batches, hands them to the handler and commits.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use super::{FailurePolicy, GroupOptions, Handler};
use crate::backend::Groups;
use crate::coordination::{DeadLetterStatus, Fence, Joining, Membership, Owned};
use crate::error::{Error, Result};
use crate::position::{Offset, Partition};
use crate::readmodel::{Db, Tx};
use crate::record::RecordedEvent;
use crate::store::{EventStore, Store};

pub(super) struct Member {
    pub(super) store: Store,
    pub(super) db: Db,
    pub(super) group: Arc<str>,
    pub(super) member_id: String,
    pub(super) host: String,
    pub(super) handler: Handler,
    pub(super) options: GroupOptions,
}

struct Running {
    generation: i64,
    stop: watch::Sender<bool>,
    retry: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Member {
    pub(super) async fn heartbeat(&self) -> Result<Membership> {
        let (group, member, host) = (self.group.clone(), self.member_id.clone(), self.host.clone());
        let timeout = i64::try_from(self.options.session_timeout.as_millis()).unwrap_or(i64::MAX);
        let (partitions, start_at) = (self.store.partition_count(), self.options.start_at);
        let (mode, store) = (self.handler.commit_mode(), self.store.clone());
        self.db
            .transaction(move |tx| {
                Box::pin(async move {
                    let joining = Joining {
                        group: &group,
                        member: &member,
                        host: &host,
                        session_timeout_ms: timeout,
                        start_at,
                        mode,
                    };
                    store.groups()?.heartbeat(tx, &joining, partitions).await
                })
            })
            .await
    }

    async fn leave(&self) -> Result<()> {
        let (group, member) = (self.group.clone(), self.member_id.clone());
        let (partitions, store) = (self.store.partition_count(), self.store.clone());
        self.db
            .transaction(move |tx| {
                Box::pin(async move { store.groups()?.leave(tx, &group, &member, partitions).await })
            })
            .await
    }

    pub(super) async fn run(
        self,
        mut membership: Membership,
        mut stop: watch::Receiver<bool>,
        assigned: watch::Sender<Vec<Partition>>,
    ) -> Result<()> {
        let me = Arc::new(self);
        let mut running: BTreeMap<Partition, Running> = BTreeMap::new();
        let (exits, mut exited) = mpsc::unbounded_channel::<Partition>();
        loop {
            let wanted: HashMap<Partition, i64> = membership
                .owned
                .iter()
                .filter(|owned| !owned.paused)
                .map(|owned| (owned.partition, owned.generation))
                .collect();
            running.retain(|partition, worker| {
                let keep = wanted.get(partition) == Some(&worker.generation) && !worker.task.is_finished();
                if !keep {
                    let _ = worker.stop.send(true);
                }
                keep
            });
            for owned in membership.owned.iter().filter(|owned| !owned.paused) {
                running
                    .entry(owned.partition)
                    .or_insert_with(|| me.spawn(*owned, exits.clone()));
            }
            for partition in &membership.retries {
                if let Some(worker) = running.get(partition) {
                    worker.retry.notify_one();
                }
            }
            let now: Vec<Partition> = running.keys().copied().collect();
            assigned.send_if_modified(|current| {
                let changed = *current != now;
                *current = now;
                changed
            });

            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(me.options.heartbeat_interval) => {}
                Some(partition) = exited.recv() => {
                    // A partition stopped (fenced, paused, or failing): ask where things stand.
                    if running.get(&partition).is_some_and(|worker| worker.task.is_finished()) {
                        running.remove(&partition);
                    }
                    tokio::time::sleep(me.options.retry_backoff).await;
                }
            }
            match me.heartbeat().await {
                Ok(next) => membership = next,
                Err(error) => tracing::warn!(group = %me.group, %error, "heartbeat failed"),
            }
        }
        for worker in running.values() {
            let _ = worker.stop.send(true);
        }
        for (_, worker) in running {
            let _ = worker.task.await;
        }
        assigned.send_replace(Vec::new());
        me.leave().await
    }

    fn spawn(self: &Arc<Self>, owned: Owned, exits: mpsc::UnboundedSender<Partition>) -> Running {
        let (stop, stopped) = watch::channel(false);
        let retry = Arc::new(Notify::new());
        let (me, wake) = (self.clone(), retry.clone());
        let task = tokio::spawn(async move {
            let partition = owned.partition;
            match me.work(owned, stopped, wake).await {
                Ok(()) => {}
                Err(error @ Error::Fenced { .. }) => tracing::info!(group = %me.group, %error, "partition lost"),
                Err(error) => tracing::warn!(group = %me.group, partition, %error, "partition worker failed"),
            }
            let _ = exits.send(partition);
        });
        Running {
            generation: owned.generation,
            stop,
            retry,
            task,
        }
    }

    /// Works on one partition until told to stop, fenced, or stopped by the failure policy.
    async fn work(&self, owned: Owned, mut stop: watch::Receiver<bool>, retry: Arc<Notify>) -> Result<()> {
        let commit = self.commit_info(owned);
        let mut next: Offset = self
            .db
            .read_transaction(move |tx| Box::pin(async move { commit.owned_offset(tx).await }))
            .await?;
        let mut parked = self.retry_dead_letters(owned).await?;
        let filter = self.handler.filter();
        // The next batch is fetched while this one is handled: reading and writing
        // overlap, and at most three batches per partition are in memory (this one,
        // one waiting in the channel, one being read).
        let mut records = Prefetch::start(&self.store, owned.partition, next, self.options.batch_size.max(1));
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
            let batch = batch?;
            match self.process(owned, next, batch, &filter, &mut parked).await? {
                Some(committed) => next = committed,
                None => return Ok(()), // stopped by the failure policy
            }
        }
    }

    /// Handles one fetched batch and commits past it; `None` when the failure policy
    /// stopped the partition.
    async fn process(
        &self,
        owned: Owned,
        from: Offset,
        batch: Vec<RecordedEvent>,
        filter: &super::Filter,
        parked: &mut HashSet<String>,
    ) -> Result<Option<Offset>> {
        let Some(last) = batch.last() else {
            return Ok(Some(from));
        };
        let to = last.offset + 1;
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
                                projection.handle_batch(&handled, tx).await?;
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
                self.one_by_one(owned, from, &plan, parked).await
            }
            Handler::AtLeastOnce(..) => self.one_by_one(owned, from, &plan, parked).await,
        }
    }

    /// Handles records one at a time, each with its retries. A transactional handler
    /// commits each record with its writes; dead letters, parked and skipped records
    /// are committed in between, and an at-least-once batch is committed at the end.
    async fn one_by_one(
        &self,
        owned: Owned,
        from: Offset,
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
                    tracing::warn!(group = %self.group, stream = %record.stream, offset = record.offset, %error, "dead-lettered");
                    parked.insert(record.stream.as_str().to_owned());
                    rows.push((
                        record.clone(),
                        DeadLetterStatus::Failed,
                        error,
                        self.options.max_attempts,
                    ));
                }
                FailurePolicy::Stop => {
                    tracing::warn!(group = %self.group, partition = owned.partition, offset = record.offset, %error, "partition stopped");
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
        let end = plan.last().map_or(cursor, |(record, _)| record.offset + 1);
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
                    self.db
                        .transaction(move |tx| {
                            Box::pin(async move {
                                projection.handle(&record, tx).await?;
                                commit.commit(tx, cursor, record.offset + 1).await
                            })
                        })
                        .await
                }
                Handler::AtLeastOnce(consumer, processed) => consumer.handle(record, processed).await,
            }
        })
        .await
    }

    /// Runs `once` up to `max_attempts` times, backing off exponentially (from
    /// `retry_backoff`, at most 30 s) between tries. `Fenced` ends it at once. Returns
    /// the last error when every attempt failed.
    async fn with_retries<F, Fut>(&self, mut once: F) -> Result<Option<String>>
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

    fn commit_info(&self, owned: Owned) -> Commit {
        Commit {
            store: self.store.clone(),
            group: self.group.clone(),
            member: self.member_id.clone().into(),
            partition: owned.partition,
            generation: owned.generation,
        }
    }

    /// Handles the partition's dead letters that nothing blocks any more (marked for
    /// retry, or parked with no failed record of their stream before them), stream by
    /// stream in offset order, stopping a stream at its first failure. Returns the streams that
    /// still have dead letters.
    async fn retry_dead_letters(&self, owned: Owned) -> Result<HashSet<String>> {
        let commit = self.commit_info(owned);
        let rows = self
            .db
            .read_transaction(move |tx| Box::pin(async move { commit.dead_letters(tx).await }))
            .await?;
        let mut blocked: HashSet<String> = HashSet::new();
        for (id, offset, stream, status) in rows {
            if blocked.contains(&stream) {
                continue;
            }
            // A failed record blocks its stream; a parked or retried one with no failed
            // record before it is handled now.
            if status == DeadLetterStatus::Failed {
                blocked.insert(stream);
                continue;
            }
            let record = self
                .store
                .read_partition(owned.partition, offset, 1)
                .await?
                .into_iter()
                .next();
            let Some(record) = record.filter(|r| r.offset == offset) else {
                continue;
            };
            if self.retry_one(owned, id, &record).await? {
                continue;
            }
            blocked.insert(stream.clone());
            let commit = self.commit_info(owned);
            self.db
                .transaction(move |tx| {
                    Box::pin(async move {
                        commit.check_owner(tx).await?;
                        commit.groups()?.park_behind(tx, &commit.group, &stream, offset).await
                    })
                })
                .await?;
        }
        Ok(blocked)
    }

    /// One retried dead letter: handled and removed (`true`), or back to failed.
    async fn retry_one(&self, owned: Owned, id: i64, record: &RecordedEvent) -> Result<bool> {
        let failed = self
            .with_retries(|| async {
                let commit = self.commit_info(owned);
                match &self.handler {
                    Handler::Transactional(projection) => {
                        let (projection, record) = (projection.clone(), record.clone());
                        self.db
                            .transaction(move |tx| {
                                Box::pin(async move {
                                    commit.check_owner(tx).await?;
                                    projection.handle(&record, tx).await?;
                                    commit.resolve(tx, id).await
                                })
                            })
                            .await
                    }
                    Handler::AtLeastOnce(consumer, processed) => match consumer.handle(record, processed).await {
                        Ok(()) => {
                            self.db
                                .transaction(move |tx| {
                                    Box::pin(async move {
                                        commit.check_owner(tx).await?;
                                        commit.resolve(tx, id).await
                                    })
                                })
                                .await
                        }
                        Err(error) => Err(error),
                    },
                }
            })
            .await?;
        let Some(last_error) = failed else { return Ok(true) };
        let (commit, attempts) = (self.commit_info(owned), self.options.max_attempts.max(1));
        self.db
            .transaction(move |tx| {
                Box::pin(async move {
                    commit.check_owner(tx).await?;
                    commit
                        .groups()?
                        .fail_dead_letter(tx, &commit.group, id, &last_error, attempts)
                        .await
                })
            })
            .await?;
        Ok(false)
    }
}

/// Batches of a partition's records, read one batch ahead by a task of their own.
struct Prefetch {
    batches: mpsc::Receiver<Result<Vec<RecordedEvent>>>,
    task: JoinHandle<()>,
}

impl Prefetch {
    /// How long one fetch waits at the head of the log before it asks again.
    const WAIT: Duration = Duration::from_secs(30);

    fn start(store: &Store, partition: Partition, from: Offset, batch: usize) -> Self {
        let (send, batches) = mpsc::channel(1);
        let store = store.clone();
        let task = tokio::spawn(async move {
            // One read per batch, of the batch's size, woken by appends at the head.
            let mut next = from;
            loop {
                let fetched = store.fetch(partition, next, batch, Self::WAIT).await;
                if let Ok(records) = &fetched {
                    let Some(last) = records.last() else { continue };
                    next = last.offset + 1;
                }
                let failed = fetched.is_err();
                if send.send(fetched).await.is_err() || failed {
                    return;
                }
            }
        });
        Prefetch { batches, task }
    }

    async fn next(&mut self) -> Option<Result<Vec<RecordedEvent>>> {
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

/// The fenced writes of one partition's owner.
#[derive(Clone)]
struct Commit {
    store: Store,
    group: Arc<str>,
    member: Arc<str>,
    partition: Partition,
    generation: i64,
}

impl Commit {
    fn groups(&self) -> Result<&dyn Groups> {
        self.store.groups()
    }

    fn fence(&self) -> Fence<'_> {
        Fence {
            group: &self.group,
            partition: self.partition,
            member: &self.member,
            generation: self.generation,
        }
    }

    async fn commit(&self, tx: &mut Tx, from: Offset, to: Offset) -> Result<()> {
        self.groups()?.commit(tx, &self.fence(), from, to).await
    }

    async fn owned_offset(&self, tx: &mut Tx) -> Result<Offset> {
        self.groups()?.owned_offset(tx, &self.fence()).await
    }

    async fn check_owner(&self, tx: &mut Tx) -> Result<()> {
        self.owned_offset(tx).await.map(drop)
    }

    async fn dead_letter(
        &self,
        tx: &mut Tx,
        record: &RecordedEvent,
        status: DeadLetterStatus,
        error: &str,
        attempts: u32,
    ) -> Result<()> {
        self.groups()?
            .add_dead_letter(tx, &self.group, record, status, error, attempts)
            .await
    }

    /// The partition's dead letters in offset order: id, offset, stream and status.
    async fn dead_letters(&self, tx: &mut Tx) -> Result<Vec<(i64, Offset, String, DeadLetterStatus)>> {
        self.groups()?
            .partition_dead_letters(tx, &self.group, self.partition)
            .await
    }

    async fn resolve(&self, tx: &mut Tx, id: i64) -> Result<()> {
        self.groups()?.resolve_dead_letter(tx, &self.group, id).await
    }

    /// Pauses the partition with `reason`, if this member still owns it.
    async fn stop(&self, tx: &mut Tx, reason: &str) -> Result<()> {
        self.check_owner(tx).await?;
        self.groups()?.stop(tx, &self.group, self.partition, reason).await
    }
}
