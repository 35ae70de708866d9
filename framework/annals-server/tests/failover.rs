//! After a failover the old leader may only come back as a follower of the new one: if
//! it wrote nothing more, it follows; if it kept writing, it refuses to, and says so.

use annals::{AppendRequest, EventStore, ExpectedVersion, NewEvent, Store, StreamId};
use annals_server::follower::{FollowError, Follower, Leader};
use annals_server::ServerOptions;
use annals_testkit::TestStore;
use serde_json::json;

async fn serve(store: Store) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(annals_server::serve(store, listener, ServerOptions::default(), async {
        let _ = stopped.await;
    }));
    (url, stop)
}

async fn add(store: &Store, stream: &str) {
    let request = AppendRequest::new(StreamId::new(stream).expect("id"), ExpectedVersion::Any)
        .event(NewEvent::json("Posted", &json!({"at": stream})).expect("event"));
    store.append(request).await.expect("append");
}

async fn caught_up(leader: &Store, follower: &Store) {
    let target = leader.high_watermarks().await.expect("hw");
    for _ in 0..500 {
        if follower.high_watermarks().await.expect("hw") == target {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the follower never caught up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_leader_follows_the_new_one_or_refuses_when_it_diverged() {
    let stores: Vec<TestStore> = vec![
        TestStore::sqlite().await.expect("s"),
        TestStore::sqlite().await.expect("s"),
    ];
    let old = stores[0].open_with(|o| o.partitions(16)).await.expect("open");
    let new = stores[1].open_with(|o| o.partitions(16)).await.expect("open");
    for i in 0..40 {
        add(&old, &format!("acct-{}", i % 7)).await;
    }
    let (old_url, stop_old) = serve(old.clone()).await;
    let follower = Follower::start(
        new.clone(),
        Leader {
            url: old_url,
            token: None,
        },
    )
    .await
    .expect("follow");
    caught_up(&old, &new).await;
    follower.stop().await.expect("stop");

    // Failover: the follower is promoted and takes writes.
    let _ = stop_old.send(());
    assert_eq!(new.promote().await.expect("promote").epoch, 1);
    add(&new, "acct-1").await;
    let (new_url, stop_new) = serve(new.clone()).await;

    // The old leader, unchanged since, comes back as a follower: it catches up.
    let rejoined = Follower::start(
        old.clone(),
        Leader {
            url: new_url.clone(),
            token: None,
        },
    )
    .await
    .expect("the old leader follows the new one");
    caught_up(&new, &old).await;
    rejoined.stop().await.expect("stop");
    assert_eq!(old.replica().leader.as_deref(), Some(new_url.as_str()));

    // Had it written after the failover, it would refuse, and say where.
    old.promote().await.expect("promote the old one back, wrongly");
    add(&old, "acct-1").await; // a write the new leader never had
    add(&new, "acct-2").await;
    let refused = Follower::start(
        old.clone(),
        Leader {
            url: new_url,
            token: None,
        },
    )
    .await;
    let Err(FollowError::Diverged { partition, .. }) = refused else {
        panic!("a diverged log was followed: {:?}", refused.err());
    };
    assert_eq!(
        partition,
        annals::partition_for(&StreamId::new("acct-1").expect("id"), 16)
    );
    let _ = stop_new.send(());

    // A store never promoted is at epoch 0: the promoted one (epoch 1) refuses to
    // take records from it.
    let deposed = TestStore::sqlite().await.expect("s");
    let deposed = deposed.open_with(|o| o.partitions(16)).await.expect("open");
    let (deposed_url, stop_deposed) = serve(deposed).await;
    let refused = Follower::start(
        new.clone(),
        Leader {
            url: deposed_url,
            token: None,
        },
    )
    .await;
    assert!(
        matches!(refused, Err(FollowError::StaleLeader { theirs: 0, ours: 1, .. })),
        "{:?}",
        refused.err()
    );
    let _ = stop_deposed.send(());
}
