//! Read-your-writes: `admin::wait_until` returns once a group has committed past a
//! position, woken by the commit; it times out with a clear answer; and it sees the
//! commit of a member that replaced one that died.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::group::admin;
use annals::group::{Consumer, GroupMember, GroupOptions, Processed};
use annals::{async_trait, AppendRequest, ExpectedVersion, NewEvent, Offset, Position, RecordedEvent, StreamId};
use annals_testkit::TestStore;

annals_testkit::on_every_engine!(
    a_wait_returns_once_the_group_has_handled_the_write,
    a_wait_with_no_member_working_times_out,
    a_wait_sees_the_member_that_replaced_a_dead_one,
);

fn fast() -> GroupOptions {
    GroupOptions {
        session_timeout: Duration::from_secs(3),
        heartbeat_interval: Duration::from_millis(100),
        ..GroupOptions::default()
    }
}

/// The offsets handled; hangs for good on every record while `hang` is set.
#[derive(Clone, Default)]
struct Handled {
    offsets: Arc<Mutex<Vec<Offset>>>,
    hang: bool,
}

#[async_trait]
impl Consumer for Handled {
    async fn handle(&self, record: &RecordedEvent, _: &Processed) -> annals::Result<()> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        self.offsets.lock().expect("lock").push(record.offset);
        Ok(())
    }
}

async fn append(store: &annals::Store) -> Position {
    let request = AppendRequest::new(StreamId::new("order-7").expect("id"), ExpectedVersion::Any)
        .event(NewEvent::json("Placed", &serde_json::json!({})).expect("event"));
    store.append(request).await.expect("append").position()
}

async fn a_wait_returns_once_the_group_has_handled_the_write(t: TestStore) {
    let store = t.open().await;
    let handled = Handled::default();
    let member = GroupMember::consumer(&store, "views", handled.clone(), fast())
        .await
        .expect("join");
    for _ in 0..3 {
        let position = append(&store).await;
        let waited = admin::wait_until(&store, "views", position, Duration::from_secs(30))
            .await
            .expect("wait");
        assert!(waited.reached, "{waited:?}");
        assert!(waited.committed > position.offset);
        // What the caller reads next reflects its write.
        assert!(handled.offsets.lock().expect("lock").contains(&position.offset));
    }
    let unknown = admin::wait_until(
        &store,
        "nobody",
        Position {
            partition: 0.into(),
            offset: 0.into(),
        },
        Duration::ZERO,
    )
    .await;
    assert!(
        matches!(unknown, Err(annals::Error::GroupNotFound { .. })),
        "{unknown:?}"
    );
    let outside = Position {
        partition: store.partition_count().into(),
        offset: 0.into(),
    };
    let refused = admin::wait_until(&store, "views", outside, Duration::ZERO).await;
    assert!(
        matches!(refused, Err(annals::Error::PartitionOutOfRange { .. })),
        "{refused:?}"
    );
    member.shutdown().await.expect("leave");
}

async fn a_wait_with_no_member_working_times_out(t: TestStore) {
    let store = t.open().await;
    let member = GroupMember::consumer(&store, "views", Handled::default(), fast())
        .await
        .expect("join");
    member.shutdown().await.expect("leave");
    let position = append(&store).await;
    let waited = admin::wait_until(&store, "views", position, Duration::from_millis(300))
        .await
        .expect("wait");
    assert!(!waited.reached, "{waited:?}");
    assert!(waited.committed <= position.offset, "{waited:?}");
}

async fn a_wait_sees_the_member_that_replaced_a_dead_one(t: TestStore) {
    let store = t.open().await;
    // A member that hangs on every record and stops heartbeating: dead as far as the
    // group is concerned once its session runs out.
    let dead_options = GroupOptions {
        session_timeout: Duration::from_millis(500),
        heartbeat_interval: Duration::from_secs(3600),
        ..fast()
    };
    let dead = Handled {
        hang: true,
        ..Handled::default()
    };
    let dying = GroupMember::consumer(&store, "views", dead, dead_options)
        .await
        .expect("join");
    let position = append(&store).await;
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { admin::wait_until(&store, "views", position, Duration::from_secs(30)).await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiting.is_finished(), "the wait returned while the member hung");
    let live = Handled::default();
    let replacement = GroupMember::consumer(&store, "views", live.clone(), fast())
        .await
        .expect("join");
    let waited = waiting.await.expect("join").expect("wait");
    assert!(waited.reached, "{waited:?}");
    assert!(live.offsets.lock().expect("lock").contains(&position.offset));
    replacement.shutdown().await.expect("leave");
    drop(dying);
}

/// Lets each record through only when told.
#[derive(Clone)]
struct Gated {
    gate: Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl Consumer for Gated {
    async fn handle(&self, _: &RecordedEvent, _: &Processed) -> annals::Result<()> {
        self.gate.acquire().await.expect("gate").forget();
        Ok(())
    }
}

/// On PostgreSQL a commit made by a member in another process wakes the wait: the
/// waiting store here never polls (an hour between looks), so only the commit's
/// notification can end the wait before its timeout. Checked by removing the
/// notification: the wait then ran to its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_commit_in_another_process_wakes_the_wait() {
    let Some(t) = TestStore::postgres().await else { return };
    let members_side = t.open().await;
    let readers_side = t
        .open_with(|options| options.poll_interval(Duration::from_secs(3600)))
        .await
        .expect("open");
    let gated = Gated {
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
    };
    let member = GroupMember::consumer(&members_side, "views", gated.clone(), fast())
        .await
        .expect("join");
    let position = append(&members_side).await;
    let waiting = tokio::spawn({
        let store = readers_side.clone();
        async move { admin::wait_until(&store, "views", position, Duration::from_secs(120)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the wait ended before the record was handled");
    gated.gate.add_permits(1);
    // Woken by the notification, the wait ends within moments of the commit; without
    // it, it would look again only at its two-minute timeout.
    let waited = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the other process's commit did not wake the wait")
        .expect("join")
        .expect("wait");
    assert!(
        waited.reached,
        "the other process's commit did not wake the wait: {waited:?}"
    );
    member.shutdown().await.expect("leave");
}
