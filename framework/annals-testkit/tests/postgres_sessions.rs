//! PostgreSQL's long-lived sessions: each writer, the two notification senders (new
//! records, group commits) and the `LISTEN` connection keep a pooled connection of
//! their own. The pool must leave room for everything else however small
//! `max_connections` is set, and notifications must still wake other processes.

use std::time::Duration;

use annals::group::{GroupMember, GroupOptions};
use annals::{AppendRequest, ExpectedVersion, NewEvent, Offset, Partition, StreamId, Version};
use annals_testkit::postgres::PartitionLock;
use annals_testkit::tally::{add, caught_up, fold_log, Tally};
use annals_testkit::TestStore;
use futures::StreamExt;

/// Runs `future`, or fails the test after 20 s: a starved pool, or a subscriber no
/// notification reaches, waits forever.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 20 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fewest_connections_leave_room_for_reads_and_groups() {
    let Some(t) = TestStore::postgres().await else {
        return;
    };
    let store = t.open_with(|options| options.max_connections(2)).await.expect("opens");
    // Another process's store: its listener hears the first store's notifications.
    let other = t.open().await;
    // The writer's session and the record notifier's.
    for i in 0..50 {
        within("an append", add(&store, &format!("acct-{}", i % 7), i)).await;
    }
    // A group commits through the store with few connections: the commit notifier
    // takes its session too.
    let tally = Tally::new("tally");
    let options = GroupOptions {
        heartbeat_interval: Duration::from_millis(100),
        ..GroupOptions::default()
    };
    let member = within(
        "joining a group",
        GroupMember::projection(&store, "tally", tally.clone(), options),
    )
    .await
    .expect("joins");
    within("the group catching up", caught_up(&store, "tally")).await;
    within("leaving", member.shutdown()).await.expect("leaves");
    // Every long-lived session is taken now; reads still get a connection.
    assert_eq!(
        within("the totals", tally.totals(&store)).await,
        within("a fold of the log", fold_log(&store)).await
    );
    within("a read", store.read_partition(Partition(0), Offset(0), 10))
        .await
        .expect("reads");
    store.close().await;
    other.close().await;
}

/// Notifications are coalesced, at most one per channel every few milliseconds, so
/// appends in quick succession are announced together: the last must still go out.
/// The subscribing store never polls (an hour between looks), so only notifications
/// can bring it the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_in_quick_succession_wake_a_subscriber_in_another_process() {
    let Some(t) = TestStore::postgres().await else {
        return;
    };
    let writer = t.open().await;
    let reader = t
        .open_with(|options| options.poll_interval(Duration::from_secs(3600)))
        .await
        .expect("opens");
    let mut records =
        futures::stream::select_all((0..reader.partition_count()).map(|p| reader.subscribe(Partition(p), Offset(0))));
    // Let every subscription make its first (empty) read and start waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Rounds of a few appends in quick succession: the last of a round usually commits
    // within the gap after the notification of the ones before it, and reaches the
    // subscriber only if the notifier sends what it was handed during the gap.
    for round in 0..20 {
        for i in 0..5 {
            add(&writer, &format!("acct-{}", (round * 5 + i) % 11), i).await;
        }
        within("a round's records to reach the other process", async {
            for _ in 0..5 {
                records.next().await.expect("a record").expect("readable");
            }
        })
        .await;
    }
    drop(records);
    writer.close().await;
    reader.close().await;
}

/// An append dropped while its call waits in the server (a cancelled request), after
/// appends that came one at a time and so commit on their callers' tasks with the
/// writer's session: the server finishes the call, and the store goes on appending
/// through the same writer and closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_cancelled_in_the_server_leaves_the_writer_working() {
    let Some(t) = TestStore::postgres().await else {
        return;
    };
    let store = t.open().await;
    let id = StreamId::new("acct-1").expect("stream id");
    let append = |version| deposit(&id, version);
    let append_in_time = async |version| within("an append", store.append(append(version))).await;
    for version in 0..5 {
        append_in_time(version).await.expect("appends");
    }

    // Another session holds the partition's lock, so the next call waits in the server.
    let mut other = PartitionLock::new(t.url().expect("url"), &store, &id).await;
    other.take().await;
    let cancelled = tokio::time::timeout(Duration::from_millis(300), store.append(append(5))).await;
    assert!(cancelled.is_err(), "the append waited for the lock: {cancelled:?}");
    other.release().await;

    // The server ran the call to its end: its event is the stream's sixth.
    annals_testkit::wait_for("the cancelled append's commit", async || {
        store.stream_version(&id).await.expect("version") == 6
    })
    .await;
    for version in 6..10 {
        append_in_time(version).await.expect("appends after the cancelled one");
    }
    let versions: Vec<u64> = store
        .read_stream(&id, Version(1), 100)
        .await
        .expect("reads")
        .iter()
        .map(|record| record.version.0)
        .collect();
    assert_eq!(versions, (1..=10).collect::<Vec<_>>());
    within("closing", store.close()).await;
}

fn deposit(stream: &StreamId, version: u64) -> AppendRequest {
    AppendRequest::new(stream.clone(), ExpectedVersion::Exact(Version(version)))
        .event(NewEvent::from_json_text("Deposited", "{}").expect("event"))
}

/// An append dropped while it queued for the writer (a request cancelled before its
/// call was sent) is not written, as on SQLite. One append waits in the server on its
/// partition's lock with the writer's session; a second queues behind it and is
/// dropped; once the lock is released the first commits, and the second never lands:
/// an append sent after it finds its stream empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_cancelled_while_it_queues_is_not_written() {
    let Some(t) = TestStore::postgres().await else {
        return;
    };
    let store = t.open().await;
    let (held, queued) = (
        StreamId::new("acct-1").expect("stream id"),
        StreamId::new("acct-2").expect("stream id"),
    );
    let (mut other, waiting) = PartitionLock::hold_writer(t.url().expect("url"), &store, &held).await;
    let cancelled = tokio::time::timeout(Duration::from_millis(300), store.append(deposit(&queued, 0))).await;
    assert!(
        cancelled.is_err(),
        "the second append waited for the writer: {cancelled:?}"
    );
    other.release().await;

    let first = within("the first append", waiting)
        .await
        .expect("task")
        .expect("appends");
    assert_eq!(first.last_version, 1);
    let after = within("an append after the cancelled one", store.append(deposit(&queued, 0)))
        .await
        .expect("the cancelled append was not written");
    assert_eq!(after.first_version, 1);
    assert_eq!(
        store.read_stream(&queued, Version(1), 10).await.expect("reads").len(),
        1
    );
    within("closing", store.close()).await;
}

/// Two stores on one database, as two processes would open it, each with one appender
/// at a time, so that both commit on their callers' tasks through
/// `annals_append_one`, at once and on the same partitions and streams. Every
/// partition's offsets are 0, 1, 2, … (I1); every stream's versions 1, 2, 3, … (I2);
/// a command id both stores send to the same stream is written once, and the other
/// store is answered with the same outcome, marked duplicate (I5).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lone_appenders_of_two_stores_write_one_log() {
    use std::collections::BTreeMap;

    use annals::AppendOutcome;

    let Some(t) = TestStore::postgres().await else {
        return;
    };
    let stores = [t.open().await, t.open().await];
    const APPENDS: usize = 200;
    let shared: Vec<uuid::Uuid> = (0..APPENDS / 10).map(|_| uuid::Uuid::now_v7()).collect();
    let appenders = stores.iter().map(|store| {
        let (store, shared) = (store.clone(), shared.clone());
        tokio::spawn(async move {
            let mut outcomes = Vec::with_capacity(APPENDS);
            for n in 0..APPENDS {
                let command = if n % 10 == 0 {
                    shared[n / 10]
                } else {
                    uuid::Uuid::now_v7()
                };
                let stream = StreamId::new(format!("two-{}", n % 7)).expect("stream id");
                let request = AppendRequest::new(stream, ExpectedVersion::Any)
                    .command_id(command)
                    .event(NewEvent::from_json_text("Noted", format!("{{\"n\":{n}}}")).expect("event"));
                let outcome = within("an append", store.append(request)).await.expect("appends");
                outcomes.push((command, outcome));
            }
            outcomes
        })
    });
    let mut outcomes: Vec<(uuid::Uuid, AppendOutcome)> = Vec::new();
    for appender in appenders.collect::<Vec<_>>() {
        outcomes.extend(appender.await.expect("the appender's task"));
    }

    let records = annals_testkit::every_record(&stores[0]).await;
    let written = outcomes.iter().filter(|(_, outcome)| !outcome.duplicate).count();
    assert_eq!(records.len(), written, "one record per append written");
    assert_eq!(
        written,
        2 * APPENDS - shared.len(),
        "each shared command id written once"
    );
    let mut offsets: BTreeMap<_, Vec<u64>> = BTreeMap::new();
    let mut versions: BTreeMap<_, Vec<u64>> = BTreeMap::new();
    for record in &records {
        offsets.entry(record.partition).or_default().push(record.offset.0);
        versions
            .entry(record.stream.clone())
            .or_default()
            .push(record.version.0);
    }
    for (partition, offsets) in offsets {
        assert_eq!(
            offsets,
            (0..offsets.len() as u64).collect::<Vec<_>>(),
            "I1: partition {partition}"
        );
    }
    for (stream, mut versions) in versions {
        versions.sort_unstable();
        assert_eq!(
            versions,
            (1..=versions.len() as u64).collect::<Vec<_>>(),
            "I2: {stream}"
        );
    }
    for command in &shared {
        let mut answers: Vec<_> = outcomes.iter().filter(|(c, _)| c == command).map(|(_, o)| o).collect();
        answers.sort_by_key(|outcome| outcome.duplicate);
        assert_eq!(answers.len(), 2);
        assert_eq!(
            (answers[0].duplicate, answers[1].duplicate),
            (false, true),
            "I5: {command} written once"
        );
        assert_eq!(
            AppendOutcome {
                duplicate: false,
                ..*answers[1]
            },
            *answers[0],
            "I5: the duplicate answers the original outcome"
        );
    }
    for store in stores {
        within("closing", store.close()).await;
    }
}

/// A store closed while its writer and notification senders are busy leaves no
/// session on the server, though the closed store is still held: every connection it
/// kept is closed, none left idle in the closed pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_closed_under_load_keeps_no_session() {
    let Some(t) = TestStore::postgres().await else {
        return;
    };
    let url = t.url().expect("a PostgreSQL URL");
    let pool = sqlx::PgPool::connect(url).await.expect("connects");
    // Unique, so that runs sharing a server do not see each other's sessions.
    let run = &uuid::Uuid::new_v4().simple().to_string()[..12];
    for round in 0..25_u64 {
        let name = format!("annals_closing_busy_{round}_{run}");
        // Four writers, each with a session to close.
        let store = annals::StoreOptions::from_url(&annals_testkit::postgres::named_url(url, &name))
            .expect("a store URL")
            .writers(4)
            .open()
            .await
            .expect("opens");
        let appenders: Vec<_> = (0..8)
            .map(|task| {
                let store = store.clone();
                tokio::spawn(async move {
                    let stream = StreamId::new(format!("busy-{task}")).expect("stream id");
                    let event = || NewEvent::json("Noted", &serde_json::json!({ "task": task })).expect("event");
                    // Until the store closes under it.
                    while store
                        .append(AppendRequest::new(stream.clone(), ExpectedVersion::Any).event(event()))
                        .await
                        .is_ok()
                    {}
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20 + 3 * round)).await;
        within("the close", store.close()).await;
        for appender in appenders {
            within("an appender", appender).await.expect("an appender");
        }
        no_session_left(&pool, &name).await;
        drop(store);
    }
    pool.close().await;
}

/// A notification sender whose statement waits on the server when the store closes
/// does not leave its session open: the close waits for it and closes its connection.
/// (Given back to the pool while it closed, the connection stayed open until the store
/// was dropped.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_closed_while_a_notification_waits_keeps_no_session() {
    let Some(mut stopped) = StoppedSender::start().await else {
        return;
    };
    let closing = tokio::spawn({
        let store = stopped.store.clone();
        async move { store.close().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!closing.is_finished(), "the close waits for the sender's statement");
    stopped.resume();
    within("the close", closing).await.expect("the close's task");
    no_session_left(&stopped.pool, &stopped.name).await;
}

/// A sender whose server does not answer holds the close up for 2 s at most, and is
/// stopped with its connection closed, not given back to the closing pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_the_server_does_not_answer_is_stopped_when_the_store_closes() {
    let Some(mut stopped) = StoppedSender::start().await else {
        return;
    };
    // The close ends while the sender's server process is still stopped.
    within("the close", stopped.store.close()).await;
    stopped.resume();
    no_session_left(&stopped.pool, &stopped.name).await;
}

/// A store whose record notification sender is in the middle of a statement its
/// server process cannot answer: the process is stopped with SIGSTOP (and continued
/// when this is dropped, whatever happened). `None`, with a message, when the server
/// does not run on this machine or its processes cannot be signalled, or there is no
/// PostgreSQL to test against.
struct StoppedSender {
    /// The test's schema, kept while the store uses it.
    _schema: TestStore,
    store: annals::Store,
    pool: sqlx::PgPool,
    name: String,
    sender: Option<i32>,
}

impl StoppedSender {
    async fn start() -> Option<Self> {
        let t = TestStore::postgres().await?;
        let url = t.url().expect("a PostgreSQL URL");
        let pool = sqlx::PgPool::connect(url).await.expect("connects");
        // Unique, so that runs sharing a server do not see each other's sessions.
        let name = format!("annals_stopped_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let store = annals::Store::open(&annals_testkit::postgres::named_url(url, &name))
            .await
            .expect("opens");
        let noted = || {
            AppendRequest::new(StreamId::new("noted-1").expect("stream id"), ExpectedVersion::Any)
                .event(NewEvent::json("Noted", &serde_json::json!({})).expect("event"))
        };
        // The first append's announcement shows which server process is the sender's.
        store.append(noted()).await.expect("an append");
        let mut sender = None;
        annals_testkit::wait_for("the notification sender's session", async || {
            sender = sqlx::query_scalar(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query LIKE '%pg_notify%'",
            )
            .bind(&name)
            .fetch_optional(&pool)
            .await
            .expect("pg_stat_activity");
            sender.is_some()
        })
        .await;
        let sender: i32 = sender.expect("found");
        let local = std::fs::read_to_string(format!("/proc/{sender}/comm")).is_ok_and(|comm| comm.trim() == "postgres");
        if !local || !signal(sender, "STOP") {
            eprintln!("skipping: cannot stop the server process {sender} (the server is not on this machine, or runs as another user)");
            store.close().await;
            return None;
        }
        let stopped = StoppedSender {
            _schema: t,
            store,
            pool,
            name,
            sender: Some(sender),
        };
        // The sender announces this append within a few milliseconds, and waits.
        stopped.store.append(noted()).await.expect("an append");
        tokio::time::sleep(Duration::from_millis(200)).await;
        Some(stopped)
    }

    /// Lets the sender's server process run again.
    fn resume(&mut self) {
        if let Some(sender) = self.sender.take() {
            assert!(signal(sender, "CONT"), "kill -CONT {sender}");
        }
    }
}

impl Drop for StoppedSender {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            signal(sender, "CONT");
        }
    }
}

/// Sends `signal` to process `pid`; whether it could.
fn signal(pid: i32, signal: &str) -> bool {
    std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Waits up to 5 s (a server process ends a moment after its connection closes) for
/// no session named `name` to be left.
async fn no_session_left(pool: &sqlx::PgPool, name: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let open: Vec<String> = sqlx::query_scalar("SELECT query FROM pg_stat_activity WHERE application_name = $1")
            .bind(name)
            .fetch_all(pool)
            .await
            .expect("pg_stat_activity");
        if open.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: sessions of the closed store still open after 5 s, last statements {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
