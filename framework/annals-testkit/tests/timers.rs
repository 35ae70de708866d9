//! Deadlines and scheduled commands: timers fire when the clock reaches them, once
//! per command id however many workers run, never after a cancel that came first, and
//! the engine's index of pending timers follows the log on a follower (replication,
//! truncation) so that a promoted follower fires what its leader had not.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::aggregate::CommandContext;
use annals::group::GroupOptions;
use annals::schedule::{
    timer_stream, Cancel, ManualClock, Scheduler, Timer, TimerHandler, TimerOptions, TimerStatus, TimerWorker,
};
use annals::{
    async_trait, AppendRequest, Error, ExpectedVersion, Metadata, NewEvent, Offset, Partition, Store, StreamId, Version,
};
use annals_testkit::{wait_for, TestStore};
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

annals_testkit::on_every_engine!(
    a_timer_fires_when_the_clock_reaches_it,
    a_cancel_that_comes_first_wins,
    two_workers_fire_each_timer_once,
    bad_timers_are_refused_and_change_nothing,
);

/// Runs each timer's command: an append under the timer's command id to `effects`,
/// and a note of each delivery (a timer may be delivered more than once).
#[derive(Clone)]
struct Effects {
    store: Store,
    delivered: Arc<Mutex<Vec<Uuid>>>,
}

impl Effects {
    fn new(store: &Store) -> Self {
        Effects {
            store: store.clone(),
            delivered: Arc::default(),
        }
    }

    fn delivered(&self) -> Vec<Uuid> {
        self.delivered.lock().expect("lock").clone()
    }

    /// The command ids of the effects in the log, in order.
    async fn applied(&self) -> Vec<Uuid> {
        let records = self
            .store
            .read_stream(&StreamId::new("effects").expect("id"), Version(1), usize::MAX)
            .await
            .expect("read");
        records
            .iter()
            .map(|record| record.metadata.command_id.expect("a command id"))
            .collect()
    }
}

#[async_trait]
impl TimerHandler for Effects {
    async fn fire(&self, timer: &Timer) -> annals::Result<()> {
        self.delivered.lock().expect("lock").push(timer.command_id);
        let context = timer.context();
        let metadata = Metadata::default()
            .with_correlation_id(context.correlation_id)
            .with_causation_id(context.causation_id.expect("a fired timer causes its command"));
        let event =
            NewEvent::json("Done", &json!({"target": timer.target, "payload": timer.payload}))?.with_metadata(metadata);
        let request = AppendRequest::new(StreamId::new("effects")?, ExpectedVersion::Any)
            .command_id(context.command_id)
            .event(event);
        self.store.append(request).await.map(drop)
    }
}

fn options(clock: &ManualClock) -> TimerOptions {
    TimerOptions {
        group: GroupOptions {
            session_timeout: Duration::from_secs(3),
            heartbeat_interval: Duration::from_millis(100),
            ..GroupOptions::default()
        },
        clock: Arc::new(clock.clone()),
        idle_poll: Duration::from_millis(200),
        ..TimerOptions::default()
    }
}

fn start_of_2030() -> DateTime<Utc> {
    "2030-01-01T00:00:00Z".parse().expect("time")
}

async fn schedule(scheduler: &Scheduler, at: DateTime<Utc>, target: &str) -> Uuid {
    let context = CommandContext::new();
    let scheduled = scheduler
        .schedule(at, &context, target, &json!({"n": target}))
        .await
        .expect("schedule");
    assert!(!scheduled.duplicate);
    context.command_id
}

async fn a_timer_fires_when_the_clock_reaches_it(t: TestStore) {
    let store = t.open().await;
    let clock = ManualClock::starting_at(start_of_2030());
    let scheduler = Scheduler::new(&store);
    let soon = schedule(&scheduler, start_of_2030() + chrono::Duration::seconds(10), "soon").await;
    let later = schedule(&scheduler, start_of_2030() + chrono::Duration::seconds(60), "later").await;
    let effects = Effects::new(&store);
    let worker = TimerWorker::start(&store, "timers", effects.clone(), options(&clock))
        .await
        .expect("start");

    // Nothing is due yet: a second of real time passes and nothing fires.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(effects.applied().await.is_empty(), "fired before its time");

    clock.advance(Duration::from_secs(10));
    wait_for("the first timer", async || effects.applied().await == vec![soon]).await;
    assert!(matches!(
        scheduler.status(soon).await.expect("status"),
        Some(TimerStatus::Fired { .. })
    ));
    assert!(matches!(
        scheduler.status(later).await.expect("status"),
        Some(TimerStatus::Pending { ref target, .. }) if target == "later"
    ));
    assert_eq!(
        scheduler.due(DateTime::<Utc>::MAX_UTC, 10).await.expect("due"),
        vec![(later, start_of_2030() + chrono::Duration::seconds(60))],
        "only the later timer is pending"
    );

    // A timer scheduled while the worker sleeps, due sooner than what it sleeps for,
    // wakes it.
    let sooner = schedule(&scheduler, start_of_2030() + chrono::Duration::seconds(20), "sooner").await;
    clock.advance(Duration::from_secs(15));
    wait_for("the timer scheduled later", async || {
        effects.applied().await == vec![soon, sooner]
    })
    .await;

    clock.advance(Duration::from_secs(3600));
    wait_for("the last timer", async || effects.applied().await.len() == 3).await;
    assert_eq!(effects.applied().await, vec![soon, sooner, later]);

    // The fired command continues the schedule's conversation.
    let fired = store
        .read_stream(&timer_stream(soon), Version(1), 10)
        .await
        .expect("read");
    assert_eq!(
        fired.iter().map(|r| r.event_type.as_str()).collect::<Vec<_>>(),
        ["TimerScheduled", "TimerFired"]
    );
    let effect = &store
        .read_stream(&StreamId::new("effects").expect("id"), Version(1), 1)
        .await
        .expect("read")[0];
    assert_eq!(effect.metadata.causation_id, Some(fired[1].event_id));
    assert_eq!(effect.metadata.correlation_id, Some(soon));
    worker.shutdown().await.expect("shutdown");
}

async fn a_cancel_that_comes_first_wins(t: TestStore) {
    let store = t.open().await;
    let clock = ManualClock::starting_at(start_of_2030());
    let scheduler = Scheduler::new(&store);
    let at = start_of_2030() + chrono::Duration::seconds(5);
    let cancelled = schedule(&scheduler, at, "cancelled").await;
    let kept = schedule(&scheduler, at, "kept").await;
    assert_eq!(scheduler.cancel(cancelled).await.expect("cancel"), Cancel::Cancelled);
    assert_eq!(
        scheduler.cancel(cancelled).await.expect("cancel again"),
        Cancel::Cancelled,
        "a cancel is idempotent"
    );
    assert_eq!(scheduler.cancel(Uuid::now_v7()).await.expect("cancel"), Cancel::Unknown);

    let effects = Effects::new(&store);
    let worker = TimerWorker::start(&store, "timers", effects.clone(), options(&clock))
        .await
        .expect("start");
    clock.advance(Duration::from_secs(60));
    wait_for("the kept timer", async || effects.applied().await == vec![kept]).await;
    assert_eq!(scheduler.cancel(kept).await.expect("cancel"), Cancel::AlreadyFired);
    assert!(matches!(
        scheduler.status(cancelled).await.expect("status"),
        Some(TimerStatus::Cancelled { .. })
    ));

    // Scheduling a command id again changes nothing, fired or cancelled.
    for id in [kept, cancelled] {
        let again = scheduler
            .schedule(at, &CommandContext::with_command_id(id), "again", &json!({}))
            .await
            .expect("schedule again");
        assert!(again.duplicate);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(effects.applied().await, vec![kept]);
    assert_eq!(
        effects.delivered(),
        vec![kept],
        "the cancelled timer reached the handler"
    );
    worker.shutdown().await.expect("shutdown");
}

async fn two_workers_fire_each_timer_once(t: TestStore) {
    let store = t.open().await;
    let clock = ManualClock::starting_at(start_of_2030());
    let scheduler = Scheduler::new(&store);
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(schedule(&scheduler, start_of_2030() + chrono::Duration::milliseconds(i), "many").await);
    }
    let effects = Effects::new(&store);
    let first = TimerWorker::start(&store, "timers", effects.clone(), options(&clock))
        .await
        .expect("start");
    let second = TimerWorker::start(&store, "timers", effects.clone(), options(&clock))
        .await
        .expect("start");
    clock.advance(Duration::from_secs(1));
    wait_for("every timer", async || effects.applied().await.len() >= ids.len()).await;
    // The rebalance that the second member caused may hand a timer over twice; the
    // store applied each once.
    let mut applied = effects.applied().await;
    applied.sort();
    ids.sort();
    assert_eq!(applied, ids, "each timer's command applied exactly once");
    let mut delivered = effects.delivered();
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered, ids);
    assert!(scheduler
        .due(DateTime::<Utc>::MAX_UTC, 10)
        .await
        .expect("due")
        .is_empty());
    first.shutdown().await.expect("shutdown");
    second.shutdown().await.expect("shutdown");
}

async fn bad_timers_are_refused_and_change_nothing(t: TestStore) {
    let store = t.open().await;
    let scheduler = Scheduler::new(&store);
    let context = CommandContext::new();
    for target in ["", &"x".repeat(201)] {
        let refused = scheduler.schedule(Utc::now(), &context, target, &json!({})).await;
        assert!(matches!(refused, Err(Error::InvalidTimer { .. })), "{refused:?}");
    }
    let deep = (0..200).fold(json!(1), |inner, _| json!([inner]));
    let refused = scheduler.schedule(Utc::now(), &context, "deep", &deep).await;
    assert!(matches!(refused, Err(Error::JsonTooDeep { .. })), "{refused:?}");
    assert_eq!(scheduler.status(context.command_id).await.expect("status"), None);
    assert_eq!(store.record_count().await.expect("count"), 0);

    // A follower schedules nothing and runs no worker.
    store.follow("http://leader.example:7070", 0).await.expect("follow");
    let refused = scheduler.schedule(Utc::now(), &context, "t", &json!({})).await;
    assert!(matches!(refused, Err(Error::ReadOnlyReplica { .. })), "{refused:?}");
    let refused = TimerWorker::start(&store, "timers", Effects::new(&store), TimerOptions::default()).await;
    assert!(matches!(refused, Err(Error::ReadOnlyReplica { .. })), "{refused:?}");
}

/// What a store's index holds: the pending timers' command ids.
async fn indexed(store: &Store) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = Scheduler::new(store)
        .due(DateTime::<Utc>::MAX_UTC, 1_000)
        .await
        .expect("due")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    ids
}

/// Which of `ids` the log says are pending: their stream's only record schedules them.
async fn pending_by_the_log(store: &Store, ids: &[Uuid]) -> Vec<Uuid> {
    let mut pending = Vec::new();
    for &id in ids {
        let records = store
            .read_stream(&timer_stream(id), Version(1), 10)
            .await
            .expect("read");
        if records.len() == 1 && records[0].event_type == "TimerScheduled" {
            pending.push(id);
        }
    }
    pending.sort();
    pending
}

/// Timers replicate with the log: a follower's index of pending timers follows what it
/// applies and what a truncation removes, and once promoted it fires exactly the
/// timers its leader had not ended.
async fn a_promoted_follower_fires_what_the_leader_had_not(leader: TestStore, follower: TestStore) {
    let (leader, follower) = (leader.open().await, follower.open().await);
    let scheduler = Scheduler::new(&leader);
    let at = start_of_2030();
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(schedule(&scheduler, at, &format!("t{i}")).await);
    }
    // A quarter cancelled, a quarter fired (by hand, as a worker would), the rest pending.
    for (i, &id) in ids.iter().enumerate() {
        if i % 4 == 0 {
            assert_eq!(scheduler.cancel(id).await.expect("cancel"), Cancel::Cancelled);
        } else if i % 4 == 1 {
            let fire = AppendRequest::new(timer_stream(id), ExpectedVersion::Exact(Version(1)))
                .event(NewEvent::json("TimerFired", &json!({"at": at})).expect("event"));
            leader.append(fire).await.expect("fire");
        }
    }
    assert_eq!(indexed(&leader).await, pending_by_the_log(&leader, &ids).await);
    assert_eq!(indexed(&leader).await.len(), 20);

    follower.follow("http://leader.example:7070", 0).await.expect("follow");
    for p in Partition::all(leader.partition_count()) {
        let records = leader.read_partition(p, Offset(0), 10_000).await.expect("read");
        if !records.is_empty() {
            follower.apply_replicated(records).await.expect("apply");
        }
    }
    assert_eq!(indexed(&follower).await, indexed(&leader).await, "the follower's index");

    // Truncations: the second half of every partition goes. A timer whose end is
    // removed is pending again; one whose schedule is removed is forgotten.
    for p in Partition::all(follower.partition_count()) {
        let end = follower.high_watermark(p).await.expect("hw");
        if end.0 > 1 {
            follower
                .truncate_replica(p, Offset(end.0 / 2), end)
                .await
                .expect("truncate");
        }
    }
    let expected = pending_by_the_log(&follower, &ids).await;
    assert_eq!(indexed(&follower).await, expected, "the index after truncations");
    assert_ne!(expected, indexed(&leader).await, "the truncations changed nothing");

    // Promoted, it fires them.
    follower.promote().await.expect("promote");
    let effects = Effects::new(&follower);
    let clock = ManualClock::starting_at(at);
    let worker = TimerWorker::start(&follower, "timers", effects.clone(), options(&clock))
        .await
        .expect("start");
    wait_for("the pending timers", async || {
        effects.applied().await.len() == expected.len()
    })
    .await;
    let mut applied = effects.applied().await;
    applied.sort();
    assert_eq!(applied, expected);
    assert!(indexed(&follower).await.is_empty());
    worker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fail_over_sqlite_to_sqlite() {
    a_promoted_follower_fires_what_the_leader_had_not(
        TestStore::sqlite().await.expect("s"),
        TestStore::sqlite().await.expect("s"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fail_over_sqlite_to_postgres() {
    if let Some(pg) = TestStore::postgres().await {
        a_promoted_follower_fires_what_the_leader_had_not(TestStore::sqlite().await.expect("s"), pg).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fail_over_postgres_to_postgres() {
    if let (Some(leader), Some(follower)) = (TestStore::postgres().await, TestStore::postgres().await) {
        a_promoted_follower_fires_what_the_leader_had_not(leader, follower).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fail_over_postgres_to_sqlite() {
    if let Some(pg) = TestStore::postgres().await {
        a_promoted_follower_fires_what_the_leader_had_not(pg, TestStore::sqlite().await.expect("s")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fail_over_memory_to_memory() {
    a_promoted_follower_fires_what_the_leader_had_not(
        TestStore::memory().await.expect("m"),
        TestStore::memory().await.expect("m"),
    )
    .await;
}
