//! A leader (`annals serve`) and a follower (`annals follow`) as real processes, under
//! load, each killed with SIGKILL and restarted; afterwards the follower's partitions
//! equal the leader's record for record. Then the follower refuses appends, is
//! promoted, takes appends, and treats a command id applied on the old leader as a
//! duplicate.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use annals::{AppendRequest, EventStore, ExpectedVersion, NewEvent, RecordedEvent, Store, StoreOptions, StreamId};
use serde_json::{json, Value};

/// A running `annals` process that printed its address.
struct Node {
    child: Child,
    url: String,
}

impl Node {
    fn start(args: &[&str]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_annals"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start annals");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read the address");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("no address: {line:?}"))
            .to_owned();
        Node { child, url }
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then at most 30 s for a clean exit.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                assert!(exit.success(), "a node failed on SIGTERM: {exit}");
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("a node did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn follower_args<'a>(db: &'a str, leader: &'a str, listen: &'a str) -> Vec<&'a str> {
    vec!["--db", db, "follow", "--leader", leader, "--listen", listen]
}

async fn everything(store: &Store) -> Vec<Vec<RecordedEvent>> {
    let mut partitions = Vec::new();
    for p in 0..store.partition_count() {
        let mut all = Vec::new();
        loop {
            let page = store.read_partition(p, all.len() as u64, 1_000).await.expect("read");
            if page.is_empty() {
                break;
            }
            all.extend(page);
        }
        partitions.push(all);
    }
    partitions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_survives_kills_on_both_sides_and_takes_over() {
    let dir = tempfile::tempdir().expect("dir");
    let leader_db = format!("sqlite://{}", dir.path().join("leader.db").display());
    let follower_db = format!("sqlite://{}", dir.path().join("follower.db").display());
    let status = Command::new(env!("CARGO_BIN_EXE_annals"))
        .args(["--db", &leader_db, "init"])
        .output()
        .expect("init");
    assert!(status.status.success());

    // The leader listens on a fixed port of its own choosing, so it can come back there.
    let leader = Node::start(&["--db", &leader_db, "serve", "--listen", "127.0.0.1:0"]);
    let leader_url = leader.url.clone();
    let leader_listen = leader_url.trim_start_matches("http://").to_owned();
    let mut follower = Node::start(&follower_args(&follower_db, &leader_url, "127.0.0.1:0"));

    // Load: appends straight into the leader's store (a second writer process on the
    // same SQLite file), with command ids.
    let store = StoreOptions::from_url(&leader_db)
        .expect("url")
        .open()
        .await
        .expect("open");
    let appender = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut commands = Vec::new();
            let started = Instant::now();
            let mut i = 0u64;
            while started.elapsed() < Duration::from_secs(5) {
                let command = uuid::Uuid::now_v7();
                let request = AppendRequest::new(
                    StreamId::new(format!("acct-{}", i % 31)).expect("id"),
                    ExpectedVersion::Any,
                )
                .command_id(command)
                .event(NewEvent::json("Posted", &json!({"i": i})).expect("event"))
                .event(NewEvent::json("Noted", &json!({"i": i, "note": "x"})).expect("event"));
                store.append(request).await.expect("append");
                commands.push(command);
                i += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            commands
        })
    };
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    follower.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    follower = Node::start(&follower_args(&follower_db, &leader_url, "127.0.0.1:0"));
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    leader.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leader = Node::start(&["--db", &leader_db, "serve", "--listen", &leader_listen]);
    let commands = appender.await.expect("appender");

    // The follower catches up, and holds exactly the leader's records.
    let replica = StoreOptions::from_url(&follower_db)
        .expect("url")
        .open()
        .await
        .expect("open follower db");
    let deadline = Instant::now() + Duration::from_secs(60);
    let expected = store.high_watermarks().await.expect("hw");
    while replica.high_watermarks().await.expect("hw") != expected {
        assert!(Instant::now() < deadline, "the follower never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        everything(&replica).await,
        everything(&store).await,
        "the follower's log differs"
    );
    assert!(expected.iter().sum::<u64>() > 200, "too little load");

    let http = reqwest::Client::new();
    let append = |url: String, command: Option<uuid::Uuid>| {
        let http = http.clone();
        async move {
            let mut body = json!({"expected_version": "any", "events": [{"type": "Posted", "data": {}}]});
            if let Some(command) = command {
                body["command_id"] = json!(command);
            }
            let response = http.post(url).json(&body).send().await.expect("POST");
            (
                response.status().as_u16(),
                response.json::<Value>().await.expect("JSON"),
            )
        }
    };
    let (status, refused) = append(format!("{}/v1/streams/acct-1/events", follower.url), None).await;
    assert_eq!((status, refused["error"].as_str()), (403, Some("read_only_replica")));
    assert_eq!(refused["leader"], leader_url.as_str());
    let health: Value = http
        .get(format!("{}/health", follower.url))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert_eq!(health["role"], "follower");
    let metrics = http
        .get(format!("{}/metrics", follower.url))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("annals_replication_lag"), "{metrics}");
    let stats = Command::new(env!("CARGO_BIN_EXE_annals"))
        .args(["--server", &follower.url, "--json", "stats"])
        .output()
        .expect("stats");
    let stats: Value = serde_json::from_slice(&stats.stdout).expect("JSON");
    assert_eq!(
        (stats["role"].as_str(), stats["leader_epoch"].as_u64()),
        (Some("follower"), Some(0))
    );
    assert_eq!(stats["partitions"][0]["replication_lag"], 0, "{stats}");

    // Failover: the old leader goes away for good; the follower is promoted.
    leader.kill();
    let promoted = Command::new(env!("CARGO_BIN_EXE_annals"))
        .args(["--db", &follower_db, "--json", "promote"])
        .output()
        .expect("promote");
    let promoted: Value = serde_json::from_slice(&promoted.stdout).expect("JSON");
    assert_eq!(
        (promoted["role"].as_str(), promoted["leader_epoch"].as_u64()),
        (Some("leader"), Some(1))
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = append(format!("{}/v1/streams/acct-1/events", follower.url), None).await;
        if status == 201 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the promoted follower still refuses appends: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Command 5 went to acct-5 (acct-{i % 31}).
    let stream = format!("{}/v1/streams/acct-5/events", follower.url);
    let (status, retried) = append(stream, Some(commands[5])).await;
    assert_eq!((status, retried["duplicate"].as_bool()), (200, Some(true)), "{retried}");
    follower.stop();
    store.close().await;
    replica.close().await;
}
