//! Group commit: how a writer gathers the appends waiting for it into one batch.
//!
//! A writer takes everything queued. With many concurrent appenders that alone splits
//! them into two alternating halves (one half is being committed while the other
//! queues), so the writer also *lingers*, as Kafka's producers do: the appenders the
//! last batch answered are likely about to send again, so it waits up to [`LINGER`]
//! until the batch holds as many appends as the last one answered plus those that
//! queued while it was being committed. A lone appender never waits. Appends that come
//! from outside, each once (requests, say), do not come back: when a linger runs out
//! although the batch held as many as the last one, the writer stops counting the
//! queued ones for a while. Nor does it wait for a command that began waiting for its
//! aggregate's turn ([`TurnWaits`]) after the last batch was answered: the command ahead
//! of it appends first, and its own append cannot come before that one is answered.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{PreparedAppend, Wakeups};
use crate::error::{Error, Result};
use crate::log::AppendOutcome;

/// How many batches do not count the queued ones after a linger ran out waiting only
/// for them (see `Batching::formed`).
const MERGE_BACKOFF: u32 = 64;

/// The longest a writer waits for a batch to fill up.
pub(crate) const LINGER: Duration = Duration::from_micros(300);
/// Appends that may wait for a writer before appenders are slowed down.
pub(crate) const QUEUE_DEPTH: usize = 4096;

/// How many of a writer's batches in a row held a single append. After
/// [`Singles::LONE_AFTER`] of them appends are coming one at a time and there is
/// nothing to gather into a group commit, so an appender that finds the writer's
/// connection free commits on its own (SQLite on its thread, PostgreSQL on its task)
/// instead of handing its append to the writer and waiting for the answer.
pub(crate) struct Singles(AtomicU32);

impl Singles {
    /// Single-append batches in a row after which appenders commit on their own.
    const LONE_AFTER: u32 = 4;

    /// A writer's count, as if appends had come one at a time: the first append of a
    /// store commits on its own.
    pub(crate) fn new() -> Self {
        Singles(AtomicU32::new(Self::LONE_AFTER))
    }

    /// The writer took a batch of `appends`.
    pub(crate) fn batch(&self, appends: usize) {
        if appends == 1 {
            let _ = self
                .0
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_add(1)));
        } else {
            self.0.store(0, Ordering::Relaxed);
        }
    }

    /// An appender found the writer's connection busy: appends no longer come one at
    /// a time.
    pub(crate) fn contended(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// Whether appends have come one at a time.
    pub(crate) fn lone(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= Self::LONE_AFTER
    }
}

/// The commands of one store that began to wait for their aggregate's turn (single
/// flight) behind a command on the same aggregate. Until that command's append is
/// committed and answered, theirs cannot come: a writer does not linger for a command
/// that began to wait after it answered its last batch, and hears when one begins
/// while it lingers. An append it answers whose aggregate has commands waiting hands
/// the turn to one of them, which is about to append and is waited for.
pub(crate) struct TurnWaits {
    /// Waits begun since the store opened.
    begun: AtomicU64,
    /// One per writer, holding at most one nudge.
    nudges: Vec<flume::Sender<()>>,
}

impl TurnWaits {
    /// The count for a store with `writers` writers, and what each writer watches.
    pub(crate) fn new(writers: usize) -> (Arc<Self>, Vec<TurnWaitsWatch>) {
        let (nudges, heard): (Vec<_>, Vec<_>) = (0..writers).map(|_| flume::bounded(1)).unzip();
        let waits = Arc::new(TurnWaits {
            begun: AtomicU64::new(0),
            nudges,
        });
        let watches = heard
            .into_iter()
            .map(|nudged| TurnWaitsWatch {
                waits: waits.clone(),
                nudged,
            })
            .collect();
        (waits, watches)
    }

    /// A command begins to wait, and the writers hear of it.
    pub(crate) fn begin(&self) {
        self.begun.fetch_add(1, Ordering::SeqCst);
        for nudge in &self.nudges {
            // A full channel already holds a nudge the writer has not heard.
            let _ = nudge.try_send(());
        }
    }
}

/// A writer's view of its store's [`TurnWaits`].
pub(crate) struct TurnWaitsWatch {
    waits: Arc<TurnWaits>,
    nudged: flume::Receiver<()>,
}

impl TurnWaitsWatch {
    /// How many waits have begun. Nudges heard before are spent: one that comes after
    /// may be of a wait this count did not see.
    fn begun(&self) -> u64 {
        while self.nudged.try_recv().is_ok() {}
        self.waits.begun.load(Ordering::SeqCst)
    }
}

/// An append waiting for a writer, and where to send its outcome.
pub(crate) struct Pending {
    pub(crate) append: PreparedAppend,
    pub(crate) reply: oneshot::Sender<Result<AppendOutcome>>,
}

impl Pending {
    /// Whether the caller went away before the writer began the append (a cancelled
    /// request, or an append made inside a read-model transaction that was rolled
    /// back). Writers skip such appends: they must not land afterwards.
    pub(crate) fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// Work a writer's queue holds: it counts toward a batch's bound by its events.
pub(crate) trait Queued {
    fn events(&self) -> usize;
}

impl Queued for Pending {
    fn events(&self) -> usize {
        self.append.events.len()
    }
}

/// Hands `append` to the writer behind `queue` and waits for its outcome.
pub(crate) async fn submit<T: From<Pending>>(queue: flume::Sender<T>, append: PreparedAppend) -> Result<AppendOutcome> {
    let (reply, outcome) = oneshot::channel();
    queue
        .send_async(Pending { append, reply }.into())
        .await
        .map_err(|_| Error::Closed)?;
    outcome.await.map_err(|_| Error::Closed)?
}

/// Splits a batch into its appends and where their outcomes go.
#[cfg(feature = "postgres")]
pub(crate) fn split(batch: Vec<Pending>) -> (Vec<PreparedAppend>, Vec<oneshot::Sender<Result<AppendOutcome>>>) {
    batch.into_iter().map(|pending| (pending.append, pending.reply)).unzip()
}

/// What follows every commit of appends, a writer's batch or a lone appender's own:
/// this process's subscribers of the partitions written are woken, and the number of
/// appends that shared the commit is recorded.
pub(crate) fn committed(results: &[Result<AppendOutcome>], wakeups: &Wakeups) {
    wakeups.publish_outcomes(results.iter().filter_map(|result| result.as_ref().ok()));
    crate::telemetry::batch(results.len());
}

/// The bounds of a batch, and what the last one held.
pub(crate) struct Batching {
    max_appends: usize,
    max_events: usize,
    last_size: usize,
    /// Jobs that queued while the last batch was being committed.
    queued: usize,
    /// Batches to go before the queued ones count again.
    backoff: u32,
    waits: TurnWaitsWatch,
    /// Commands that waited behind the last batch's appends, whose turn comes now.
    released: usize,
    /// Waits begun before the last batch was answered.
    begun_before: u64,
    /// The longest a batch waits to fill up ([`LINGER`]).
    linger: Duration,
}

impl Batching {
    pub(crate) fn new(max_appends: usize, max_events: usize, waits: TurnWaitsWatch) -> Self {
        Batching {
            max_appends,
            max_events,
            last_size: 0,
            queued: 0,
            backoff: 0,
            waits,
            released: 0,
            begun_before: 0,
            linger: LINGER,
        }
    }

    /// Answers the batch of `appends` the writer took from `queue` and committed:
    /// wakes subscribers of the partitions written, then every appender. What has
    /// queued by then was sent by others than the batch's appenders, who have had no
    /// answer yet; it is counted for the next batch first, with the commands that the
    /// answers hand their aggregate's turn to.
    pub(crate) fn answer<T>(
        &mut self,
        queue: &flume::Receiver<T>,
        appends: &[PreparedAppend],
        replies: Vec<oneshot::Sender<Result<AppendOutcome>>>,
        results: Vec<Result<AppendOutcome>>,
        wakeups: &Wakeups,
    ) {
        let handing_over = appends.iter().filter(|append| append.hands_over()).count();
        self.answering(queue.len(), handing_over);
        committed(&results, wakeups);
        for (reply, result) in replies.into_iter().zip(results) {
            // The appender may have gone away; its append is committed either way.
            let _ = reply.send(result);
        }
    }

    /// `queued` jobs came while the last batch was being committed, and `handing_over`
    /// of its appends hand their aggregate's turn to a waiting command.
    fn answering(&mut self, queued: usize, handing_over: usize) {
        self.queued = queued;
        self.released = handing_over;
        self.begun_before = self.waits.begun();
    }

    fn full_at(&self, taken: usize, events: usize) -> bool {
        taken >= self.max_appends || events >= self.max_events
    }

    /// How many appends the next batch lingers for: the last batch's appenders, who are
    /// likely to send again, the ones that queued while it was being committed, and
    /// the commands its answers handed their aggregate's turn to.
    ///
    /// Counting the queued ones is what merges two halves that took turns: appenders
    /// that each sent while the other's batch was being committed would otherwise go on
    /// committing a batch each, never smaller than the one before.
    fn target(&mut self) -> usize {
        let (queued, released) = (std::mem::take(&mut self.queued), std::mem::take(&mut self.released));
        if self.backoff > 0 {
            self.backoff -= 1;
            return self.last_size + released;
        }
        self.last_size + queued + released
    }

    /// Whether a batch of `taken` appends, gathered for `target`, waits for more: not
    /// for the commands that began to wait for their turn since the last answers
    /// (behind an append this batch holds or awaits, which is answered after it is
    /// committed).
    fn short(&self, taken: usize, target: usize) -> bool {
        let waiting_since = usize::try_from(self.waits.begun() - self.begun_before).unwrap_or(usize::MAX);
        taken < target.saturating_sub(waiting_since)
    }

    /// A batch of `taken` appends formed. When its linger ran out (`ran_out`) although
    /// it held as many as the last batch, it waited only for the queued ones' share, in
    /// vain: their senders are not taking turns with the last batch's (appends from
    /// outside, each sent once, or a sender slower than a linger), and the queued ones
    /// are not counted for the next [`MERGE_BACKOFF`] batches.
    fn formed(&mut self, taken: usize, ran_out: bool) {
        if ran_out && taken >= self.last_size {
            self.backoff = MERGE_BACKOFF;
        }
        self.last_size = taken;
    }

    /// Takes the next batch job by job, handing each to `take` as it is taken, so a
    /// writer can start on the first while the others are still on their way: waits
    /// (on a thread) for the first, takes what is queued, and lingers as the module
    /// says. `false` once every sender is gone.
    #[cfg(feature = "sqlite")]
    pub(crate) fn gather_blocking<T: Queued>(&mut self, queue: &flume::Receiver<T>, mut take: impl FnMut(T)) -> bool {
        let Ok(first) = queue.recv() else { return false };
        let target = self.target();
        let (mut taken, mut events, mut ran_out) = (1, first.events(), false);
        take(first);
        let deadline = std::time::Instant::now() + self.linger;
        while !self.full_at(taken, events) {
            let next = match queue.try_recv() {
                Ok(next) => next,
                Err(_) if self.short(taken, target) => {
                    let woken = flume::Selector::new()
                        .recv(queue, |job| job.ok().map_or(Woken::Closed, Woken::Job))
                        // Never disconnected: the watch holds the senders' owner.
                        .recv(&self.waits.nudged, |_| Woken::Waiting)
                        .wait_deadline(deadline);
                    match woken {
                        Ok(Woken::Job(next)) => next,
                        Ok(Woken::Waiting) => continue,
                        Ok(Woken::Closed) => break,
                        Err(flume::select::SelectError::Timeout) => {
                            ran_out = true;
                            break;
                        }
                    }
                }
                Err(_) => break,
            };
            taken += 1;
            events += next.events();
            take(next);
        }
        self.formed(taken, ran_out);
        true
    }

    /// The next batch, for a writer that is an async task: waits for its first append,
    /// takes what is queued and lingers as the module says; `None` once every sender
    /// is gone.
    #[cfg(feature = "postgres")]
    pub(crate) async fn next<T: Queued>(&mut self, queue: &flume::Receiver<T>) -> Option<Vec<T>> {
        let first = queue.recv_async().await.ok()?;
        let target = self.target();
        let (mut events, mut ran_out) = (first.events(), false);
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + self.linger;
        while !self.full_at(batch.len(), events) {
            let next = match queue.try_recv() {
                Ok(next) => next,
                Err(_) if self.short(batch.len(), target) => tokio::select! {
                    // A job that came by the deadline is taken.
                    biased;
                    job = queue.recv_async() => match job {
                        Ok(next) => next,
                        Err(_) => break,
                    },
                    // Never disconnected: the watch holds the senders' owner.
                    Ok(()) = self.waits.nudged.recv_async() => continue,
                    () = tokio::time::sleep_until(deadline) => {
                        ran_out = true;
                        break;
                    }
                },
                Err(_) => break,
            };
            events += next.events();
            batch.push(next);
        }
        self.formed(batch.len(), ran_out);
        Some(batch)
    }
}

/// What ends a blocking linger's wait.
#[cfg(feature = "sqlite")]
enum Woken<T> {
    Job(T),
    Waiting,
    Closed,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    struct Job;

    impl Queued for Job {
        fn events(&self) -> usize {
            1
        }
    }

    /// A writer's batching, and its store's waits for turns.
    fn batching() -> (Batching, Arc<TurnWaits>) {
        let (waits, mut watches) = TurnWaits::new(1);
        (Batching::new(64, 1024, watches.remove(0)), waits)
    }

    #[cfg(feature = "postgres")]
    mod gathering {
        use tokio::time::Instant;

        use super::*;

        /// A writer whose last batch held `size` appends, answered after `queued`
        /// others came (and are on its queue).
        async fn after_a_batch_of(
            size: usize,
            queued: usize,
            queue: &flume::Receiver<Job>,
            send: &flume::Sender<Job>,
        ) -> (Batching, Arc<TurnWaits>) {
            let (mut batching, waits) = batching();
            (0..size).for_each(|_| send.send(Job).expect("queue"));
            assert_eq!(batching.next(queue).await.expect("batch").len(), size);
            (0..queued).for_each(|_| send.send(Job).expect("queue"));
            batching.answering(queue.len(), 0);
            (batching, waits)
        }

        /// The appender the last batch answered sends again in its own time (on the
        /// test's single thread: once the writer waits).
        fn sends_again(send: &flume::Sender<Job>) {
            let send = send.clone();
            tokio::spawn(async move { send.send_async(Job).await.expect("queue") });
        }

        /// Two appenders that took turns, each sending while the other's batch was
        /// being committed, are merged: the writer takes the one that queued and
        /// lingers for the one it just answered, instead of committing a batch of one
        /// again.
        #[tokio::test(start_paused = true)]
        async fn appenders_taking_turns_share_the_next_batch() {
            let (send, queue) = flume::unbounded();
            let (mut batching, _waits) = after_a_batch_of(1, 1, &queue, &send).await;
            sends_again(&send);
            assert_eq!(batching.next(&queue).await.expect("batch").len(), 2);
        }

        /// Appenders answered together are waited for together.
        #[tokio::test(start_paused = true)]
        async fn the_last_batch_is_waited_for() {
            let (send, queue) = flume::unbounded();
            let (mut batching, _waits) = after_a_batch_of(8, 0, &queue, &send).await;
            (0..8).for_each(|_| sends_again(&send));
            assert_eq!(batching.next(&queue).await.expect("batch").len(), 8);
        }

        /// A lone appender's batch is committed at once.
        #[tokio::test(start_paused = true)]
        async fn a_lone_appender_never_waits() {
            let (send, queue) = flume::unbounded();
            let (mut batching, _waits) = after_a_batch_of(1, 0, &queue, &send).await;
            send.send(Job).expect("queue");
            let started = Instant::now();
            assert_eq!(batching.next(&queue).await.expect("batch").len(), 1);
            assert_eq!(started.elapsed(), Duration::ZERO);
        }

        /// Appends from outside, each sent once, do not come back: after a linger for
        /// the queued one runs out, the writer stops waiting for such appends.
        #[tokio::test(start_paused = true)]
        async fn a_merge_that_runs_out_backs_off() {
            let (send, queue) = flume::unbounded();
            let (mut batching, _waits) = after_a_batch_of(1, 1, &queue, &send).await;
            let started = Instant::now();
            assert_eq!(batching.next(&queue).await.expect("batch").len(), 1);
            assert!(started.elapsed() >= LINGER, "{:?}", started.elapsed());
            send.send(Job).expect("queue");
            batching.answering(queue.len(), 0);
            let started = Instant::now();
            assert_eq!(batching.next(&queue).await.expect("batch").len(), 1);
            assert_eq!(started.elapsed(), Duration::ZERO);
        }

        /// Of two appenders answered together, one waits for its aggregate's turn
        /// behind the other's next command: the writer commits the other's append at
        /// once instead of lingering for one that cannot come.
        #[tokio::test(start_paused = true)]
        async fn a_waiting_command_is_not_waited_for() {
            let (send, queue) = flume::unbounded();
            let (mut batching, waits) = after_a_batch_of(2, 0, &queue, &send).await;
            waits.begin();
            send.send(Job).expect("queue");
            let started = Instant::now();
            assert_eq!(batching.next(&queue).await.expect("batch").len(), 1);
            assert_eq!(started.elapsed(), Duration::ZERO);
        }

        /// Six commands wait behind two appends on two aggregates. Once the two are
        /// answered, a command behind each has its turn, and the two appenders' next
        /// commands wait behind those: the writer waits for the two whose turn came,
        /// not for the two that began to wait since.
        #[tokio::test(start_paused = true)]
        async fn commands_whose_turn_came_are_waited_for() {
            let (send, queue) = flume::unbounded();
            let (mut batching, waits) = batching();
            (0..2).for_each(|_| send.send(Job).expect("queue"));
            assert_eq!(batching.next(&queue).await.expect("batch").len(), 2);
            (0..6).for_each(|_| waits.begin());
            batching.answering(0, 2);
            (0..2).for_each(|_| waits.begin());
            send.send(Job).expect("queue");
            sends_again(&send);
            assert_eq!(batching.next(&queue).await.expect("batch").len(), 2);
        }

        /// An appender that begins to wait for its turn while the writer lingers for
        /// it ends the linger. The linger is set to a second here: Tokio's timer counts
        /// milliseconds, and the wait begins after ten of them.
        #[tokio::test(start_paused = true)]
        async fn a_wait_that_begins_ends_the_linger() {
            let (send, queue) = flume::unbounded();
            let (mut batching, waits) = after_a_batch_of(2, 0, &queue, &send).await;
            batching.linger = Duration::from_secs(1);
            send.send(Job).expect("queue");
            let begins_after = Duration::from_millis(10);
            let waiting = waits.clone();
            tokio::spawn(async move {
                tokio::time::sleep(begins_after).await;
                waiting.begin();
            });
            let started = Instant::now();
            assert_eq!(batching.next(&queue).await.expect("batch").len(), 1);
            assert_eq!(started.elapsed(), begins_after);
        }
    }

    /// The blocking gathering of the SQLite writer, on real threads and clocks, with
    /// a linger long enough that a batch that waited it out shows in any schedule.
    #[cfg(feature = "sqlite")]
    mod blocking {
        use std::time::Instant;

        use super::*;

        const LONG: Duration = Duration::from_secs(5);

        /// As the async writer's, on a thread: a writer whose last batch held `size`
        /// appends and lingers up to [`LONG`].
        fn after_a_batch_of(
            size: usize,
            queue: &flume::Receiver<Job>,
            send: &flume::Sender<Job>,
        ) -> (Batching, Arc<TurnWaits>) {
            let (mut batching, waits) = batching();
            batching.linger = LONG;
            (0..size).for_each(|_| send.send(Job).expect("queue"));
            let mut taken = 0;
            assert!(batching.gather_blocking(queue, |_| taken += 1));
            assert_eq!(taken, size);
            batching.answering(0, 0);
            (batching, waits)
        }

        /// Runs `then` on a thread of its own after a moment, while the test gathers.
        fn in_a_moment(then: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                then();
            })
        }

        fn gather(batching: &mut Batching, queue: &flume::Receiver<Job>) -> (usize, Duration) {
            let started = Instant::now();
            let mut taken = 0;
            assert!(batching.gather_blocking(queue, |_| taken += 1));
            (taken, started.elapsed())
        }

        /// Appenders answered together are waited for together.
        #[test]
        fn the_last_batch_is_waited_for() {
            let (send, queue) = flume::unbounded();
            let (mut batching, _waits) = after_a_batch_of(2, &queue, &send);
            send.send(Job).expect("queue");
            let late = send.clone();
            let sender = in_a_moment(move || late.send(Job).expect("queue"));
            let (taken, _) = gather(&mut batching, &queue);
            sender.join().expect("sender");
            assert_eq!(taken, 2);
        }

        /// A command waiting for its turn is not waited for.
        #[test]
        fn a_waiting_command_is_not_waited_for() {
            let (send, queue) = flume::unbounded();
            let (mut batching, waits) = after_a_batch_of(2, &queue, &send);
            waits.begin();
            send.send(Job).expect("queue");
            let (taken, waited) = gather(&mut batching, &queue);
            assert_eq!(taken, 1);
            assert!(waited < LONG / 2, "{waited:?}");
        }

        /// An appender that begins to wait for its turn while the writer lingers for it
        /// ends the linger.
        #[test]
        fn a_wait_that_begins_ends_the_linger() {
            let (send, queue) = flume::unbounded();
            let (mut batching, waits) = after_a_batch_of(2, &queue, &send);
            send.send(Job).expect("queue");
            let waiting = waits.clone();
            let waiter = in_a_moment(move || waiting.begin());
            let (taken, waited) = gather(&mut batching, &queue);
            waiter.join().expect("waiter");
            assert_eq!(taken, 1);
            assert!(waited < LONG / 2, "{waited:?}");
        }
    }
}
