//! PostgreSQL's long-lived sessions: each writer, the two notification senders (new
//! records, group commits) and the `LISTEN` connection keep a pooled connection of
//! their own. The pool must leave room for everything else however small
//! `max_connections` is set, and notifications must still wake other processes.

use std::time::Duration;

use annals::group::{GroupMember, GroupOptions};
use annals::{Offset, Partition};
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
