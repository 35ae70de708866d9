//! A consumer group across processes: three `projection-worker` processes share 16
//! partitions while this process appends; one is killed with SIGKILL, another joins,
//! and after the group catches up the tally read model equals the fold of the whole
//! log exactly. A lost record, a record applied twice (a fenced commit that landed),
//! or one applied out of order shows as a difference or a dead letter.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use annals::group::admin;
use annals::StoreOptions;
use annals_testkit::tally::{add, fold_log, Tally};

use crate::crash::tempfile_dir;

struct Worker(Child);

impl Worker {
    /// Starts a member and waits until it has joined.
    fn spawn(url: &str, member: &str) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_projection-worker"))
            .args([url, member])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start projection-worker");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line.trim(), "joined", "{member} did not join");
        Worker(child)
    }

    fn kill(mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reap");
    }

    /// SIGTERM: the member commits what it handled and leaves.
    fn stop(mut self) {
        let pid = self.0.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
        assert!(status.success());
        let exit = self.0.wait().expect("wait");
        assert!(exit.success(), "a worker failed: {exit}");
    }
}

async fn members_killed_and_added_under_load(url: &str) {
    let store = StoreOptions::from_url(url)
        .expect("url")
        .partitions(16)
        .open()
        .await
        .expect("open");
    let mut workers: Vec<Worker> = ["w1", "w2", "w3"].iter().map(|m| Worker::spawn(url, m)).collect();

    let appender = {
        let store = store.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut i = 0i64;
            while started.elapsed() < Duration::from_secs(5) {
                add(&store, &format!("acct-{}", i % 97), i).await;
                i += 1;
            }
            i
        })
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    workers.remove(0).kill();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    workers.push(Worker::spawn(url, "w4"));
    let appended = appender.await.expect("appender");
    assert!(appended > 500, "too little load: {appended} appends");

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let described = admin::describe(&store, "tally").await.expect("describe");
        if described.lag == 0 && described.members.len() == 3 {
            let owned: Vec<usize> = described.members.iter().map(|m| m.partitions.len()).collect();
            assert_eq!(owned.iter().sum::<usize>(), 16, "{described:#?}");
            assert!(
                !described.members.iter().any(|m| m.member_id == "w1"),
                "w1 was not removed"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the group never caught up: {described:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for worker in workers {
        worker.stop();
    }
    let letters = admin::dead_letters(&store, Some("tally")).await.expect("dead letters");
    assert!(letters.is_empty(), "records failed: {letters:#?}");
    assert_eq!(Tally::new("tally").totals(&store).await, fold_log(&store).await);
    assert!(admin::describe(&store, "tally")
        .await
        .expect("describe")
        .members
        .is_empty());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_group_survives_kills_and_joins() {
    let dir = tempfile_dir();
    let url = format!("sqlite://{}", dir.join("group.db").display());
    members_killed_and_added_under_load(&url).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_group_survives_kills_and_joins() {
    if let Some(url) = annals_testkit::postgres::fresh_schema_url().await {
        members_killed_and_added_under_load(&url).await;
    }
}
