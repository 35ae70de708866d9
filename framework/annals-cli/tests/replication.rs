//! Replication as users run it: `annals serve` and `annals follow` as real processes, on
//! every pair of engines (SQLite → SQLite, SQLite → PostgreSQL, PostgreSQL →
//! PostgreSQL, PostgreSQL → SQLite).
//!
//! The bug these guard: every `annals follow` whose own store was PostgreSQL died at the
//! first record it received ("incorrect binary data format in bind parameter 1"), while
//! the in-process tests, which call the library directly, passed; the process tests
//! ran SQLite → SQLite only.
//!
//! - [`kills_on_both_sides`]: under load from 8 HTTP clients with command ids, the
//!   follower and then the leader are killed with SIGKILL and restarted; the follower
//!   ends with the leader's log, record for record, and every client's command applied
//!   once; promoted while it runs, it goes on serving as the leader.
//! - [`failover_with_acks`]: the leader waits for the follower (`--min-insync-followers
//!   1`); it is killed under load, the follower is stopped, promoted and served. Every
//!   append answered 201 is on the new leader at its partition and offset and is a
//!   duplicate on retry; the log has no gap; the old leader, which holds a record the
//!   new one lacks, refuses to follow it (exit code 3) until allowed to cut that record
//!   back, within a bound, and then follows.
//! - [`deletions_reach_the_follower`]: streams deleted on the leader over HTTP are
//!   redacted on the follower, which reads them as its leader does.
//! - [`erasures_reach_the_follower`]: personal data reaches the follower sealed, with
//!   the keys to reveal it; a subject erased on the leader reads as erased there too.
//! - [`a_kafka_sink_beside_the_follower`]: `annals kafka sink` run on the follower's
//!   database ships the leader's records, each once, to their partitions.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals::RecordedEvent;
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Clone, Copy, Debug)]
enum Engine {
    Sqlite,
    Postgres,
}

/// A place for a store: a fresh SQLite file or a fresh PostgreSQL schema. `None` when
/// PostgreSQL is not there and not required.
async fn store_url(engine: Engine, dir: &std::path::Path, name: &str) -> Option<String> {
    match engine {
        Engine::Sqlite => Some(format!("sqlite://{}", dir.join(format!("{name}.db")).display())),
        Engine::Postgres => annals_testkit::postgres::fresh_schema_url().await,
    }
}

fn annals() -> Command {
    Command::new(env!("CARGO_BIN_EXE_annals"))
}

/// A running `annals serve` or `annals follow` that printed its address. Its stderr
/// goes to a file, shown when the test fails.
struct Node {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl Node {
    fn start(args: &[&str], log: std::path::PathBuf) -> Node {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut child = annals()
            .args(args)
            .env("ANNALS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start annals");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read the address");
        let url = match line.trim().strip_prefix("listening on ") {
            Some(url) => url.to_owned(),
            None => panic!(
                "no address: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        };
        Node { child, url, log }
    }

    fn address(&self) -> String {
        self.url.trim_start_matches("http://").to_owned()
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then at most 30 s for a clean exit.
    fn stop(mut self) {
        signal_term(&self.child);
        let status = wait_at_most(&mut self.child, Duration::from_secs(30));
        assert!(
            status.success(),
            "a node failed on SIGTERM: {status}\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for Node {
    /// A test that fails leaves no process behind (with its database connections).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal_term(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn wait_at_most(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve_args<'a>(db: &'a str, listen: &'a str) -> Vec<&'a str> {
    vec!["--db", db, "serve", "--listen", listen]
}

fn follow_args<'a>(db: &'a str, leader: &'a str) -> Vec<&'a str> {
    vec!["--db", db, "follow", "--leader", leader, "--listen", "127.0.0.1:0"]
}

fn init(db: &str) {
    let init = annals().args(["--db", db, "init"]).output().expect("init");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
}

/// One append acknowledged by a leader.
#[derive(Debug, Clone)]
struct Acked {
    stream: String,
    command: Uuid,
    outcome: Value,
}

/// An append of two events to `stream` with `command`: the HTTP status and body, or
/// `None` when the server could not be reached.
async fn append(http: &reqwest::Client, url: &str, stream: &str, command: Uuid) -> Option<(u16, Value)> {
    let body = json!({
        "expected_version": "any",
        "command_id": command,
        "events": [{"type": "Posted", "data": {"n": 1}}, {"type": "Noted", "data": {"n": 2}}],
    });
    let response = http
        .post(format!("{url}/v1/streams/{stream}/events"))
        .json(&body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// Every record of every partition, through the fetch route.
async fn everything(http: &reqwest::Client, url: &str) -> Vec<Vec<RecordedEvent>> {
    let partitions: Value = get(http, &format!("{url}/v1/partitions")).await;
    let mut all = Vec::new();
    for p in 0..partitions["partition_count"].as_u64().expect("count") {
        let mut records: Vec<RecordedEvent> = Vec::new();
        loop {
            let from = records.len();
            let page: Value = get(
                http,
                &format!("{url}/v1/partitions/{p}/events?from_offset={from}&limit=5000"),
            )
            .await;
            let page: Vec<RecordedEvent> = serde_json::from_value(page["events"].clone()).expect("records");
            if page.is_empty() {
                break;
            }
            records.extend(page);
        }
        all.push(records);
    }
    all
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    let response = http.get(url).send().await.expect("GET");
    assert!(response.status().is_success(), "{url}: {}", response.status());
    response.json().await.expect("JSON")
}

async fn next_offsets(http: &reqwest::Client, url: &str) -> Option<Vec<u64>> {
    let response = http.get(format!("{url}/v1/partitions")).send().await.ok()?;
    let body: Value = response.json().await.ok()?;
    Some(
        body["partitions"]
            .as_array()?
            .iter()
            .map(|p| p["next_offset"].as_u64().unwrap_or(0))
            .collect(),
    )
}

/// Waits until `follower` holds as much as `leader` in every partition.
async fn caught_up(http: &reqwest::Client, leader: &Node, follower: &Node) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (theirs, ours) = (
            next_offsets(http, &leader.url).await,
            next_offsets(http, &follower.url).await,
        );
        if theirs.is_some() && theirs == ours {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never caught up: {theirs:?} vs {ours:?}\n{}",
            std::fs::read_to_string(&follower.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The records at `acked`'s offsets in `log` are its append's: its stream, its
/// command id, in order.
fn holds(log: &[Vec<RecordedEvent>], acked: &Acked) -> bool {
    let partition = acked.outcome["partition"].as_u64().expect("partition") as usize;
    let first = acked.outcome["first_offset"].as_u64().expect("offset") as usize;
    let last = acked.outcome["last_offset"].as_u64().expect("offset") as usize;
    log.get(partition)
        .and_then(|records| records.get(first..=last))
        .is_some_and(|records| {
            records
                .iter()
                .all(|r| r.stream.as_str() == acked.stream && r.metadata.command_id == Some(acked.command))
        })
}

/// Each partition's offsets are 0, 1, 2, … (I1).
fn assert_gapless(log: &[Vec<RecordedEvent>]) {
    for (partition, records) in log.iter().enumerate() {
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.offset, i as u64, "partition {partition} has a gap");
        }
    }
}

/// Load from 8 HTTP clients: each picks a stream, appends with a fresh command id and,
/// when the leader cannot be reached or answers 5xx, sends the same command again
/// until it is answered. Runs until `until`; returns every acknowledged append.
async fn load_with_retries(url: &str, until: Instant) -> Vec<Acked> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (url, acked) = (url.to_owned(), acked.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut i = 0;
                while Instant::now() < until {
                    let stream = format!("acct-{}", (client * 1_000 + i) % 37);
                    let command = Uuid::now_v7();
                    loop {
                        match append(&http, &url, &stream, command).await {
                            Some((200 | 201, outcome)) => {
                                acked.lock().expect("lock").push(Acked {
                                    stream: stream.clone(),
                                    command,
                                    outcome,
                                });
                                break;
                            }
                            Some((status, body)) if status < 500 => panic!("append refused: {status} {body}"),
                            _ => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client");
    }
    let acked = acked.lock().expect("lock").clone();
    acked
}

/// A leader serving a fresh store and a follower of it, each logging to `NAME.log` in
/// `dir`, with their stores' URLs; `None` when PostgreSQL is wanted and not there.
async fn leader_and_follower(
    leader_engine: Engine,
    follower_engine: Engine,
    dir: &std::path::Path,
) -> Option<(Node, Node, String, String)> {
    let leader_db = store_url(leader_engine, dir, "leader").await?;
    let follower_db = store_url(follower_engine, dir, "follower").await?;
    init(&leader_db);
    let leader = Node::start(&serve_args(&leader_db, "127.0.0.1:0"), dir.join("leader.log"));
    let follower = Node::start(&follow_args(&follower_db, &leader.url), dir.join("follower.log"));
    Some((leader, follower, leader_db, follower_db))
}

async fn kills_on_both_sides(leader_engine: Engine, follower_engine: Engine) {
    let dir = tempfile::tempdir().expect("dir");
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let Some((leader, follower, leader_db, follower_db)) =
        leader_and_follower(leader_engine, follower_engine, dir.path()).await
    else {
        return;
    };
    let (leader_url, leader_listen) = (leader.url.clone(), leader.address());

    let started = Instant::now();
    let load = tokio::spawn({
        let url = leader_url.clone();
        async move { load_with_retries(&url, started + Duration::from_secs(4)).await }
    });
    tokio::time::sleep_until((started + Duration::from_millis(1_000)).into()).await;
    follower.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let follower = Node::start(&follow_args(&follower_db, &leader_url), log("follower"));
    tokio::time::sleep_until((started + Duration::from_millis(2_200)).into()).await;
    leader.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leader = Node::start(&serve_args(&leader_db, &leader_listen), log("leader"));
    let acked = load.await.expect("load");
    assert!(acked.len() > 100, "too little load: {} appends", acked.len());

    let http = reqwest::Client::new();
    caught_up(&http, &leader, &follower).await;
    let (theirs, ours) = (
        everything(&http, &leader.url).await,
        everything(&http, &follower.url).await,
    );
    assert!(
        ours == theirs,
        "the follower's log is not the leader's, record for record"
    );
    assert_gapless(&ours);
    assert!(
        acked.iter().all(|acked| holds(&ours, acked)),
        "an acknowledged append is missing"
    );
    let written: usize = ours.iter().map(Vec::len).sum();
    assert_eq!(written, acked.len() * 2, "a command was applied twice or not at all");

    // The follower serves reads, refuses appends, and says what it is.
    let (status, refused) = append(&http, &follower.url, "acct-1", Uuid::now_v7())
        .await
        .expect("answer");
    assert_eq!((status, refused["error"].as_str()), (403, Some("read_only_replica")));
    assert_eq!(refused["leader"], leader_url.as_str());
    // Every partition fetches again once the leader is back; the errors stay counted.
    let deadline = Instant::now() + Duration::from_secs(15);
    let partitions = loop {
        let partitions = get(&http, &format!("{}/v1/partitions", follower.url)).await;
        if partitions["replication"]["state"] == "following" {
            break partitions;
        }
        assert!(Instant::now() < deadline, "the follower is not following: {partitions}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(partitions["role"], "follower");
    assert_eq!(partitions["replication"]["leader"], leader_url.as_str());
    assert!(
        partitions["replication"]["errors"].as_u64() > Some(0),
        "the leader's restart was not counted"
    );
    let metrics = http
        .get(format!("{}/metrics", follower.url))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("annals_replication_lag"), "{metrics}");
    assert!(metrics.contains("annals_replication_errors_total"), "{metrics}");

    // Promoted by `annals promote` while `annals follow` runs: it goes on serving on its
    // address, now as the leader, and a command the old leader applied is a duplicate.
    leader.stop();
    let promoted = annals()
        .args(["--db", &follower_db, "--json", "promote"])
        .output()
        .expect("promote");
    let promoted: Value = serde_json::from_slice(&promoted.stdout).expect("JSON");
    assert_eq!(promoted["role"], "leader");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = append(&http, &follower.url, "after-1", Uuid::now_v7())
            .await
            .expect("answer");
        if status == 201 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the promoted follower still refuses appends: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = &acked[0];
    let (status, retried) = append(&http, &follower.url, &first.stream, first.command)
        .await
        .expect("answer");
    assert_eq!((status, retried["duplicate"].as_bool()), (200, Some(true)), "{retried}");
    follower.stop();
}

async fn failover_with_acks(leader_engine: Engine, follower_engine: Engine) {
    let dir = tempfile::tempdir().expect("dir");
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let (Some(old_db), Some(new_db)) = (
        store_url(leader_engine, dir.path(), "old").await,
        store_url(follower_engine, dir.path(), "new").await,
    ) else {
        return;
    };
    init(&old_db);
    let mut args = serve_args(&old_db, "127.0.0.1:0");
    args.extend(["--min-insync-followers", "1", "--ack-timeout-ms", "3000"]);
    let leader = Node::start(&args, log("old"));
    let follower = Node::start(&follow_args(&new_db, &leader.url), log("new"));

    // 8 clients append until the leader dies: a 201 is acknowledged by the follower too.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (url, acked) = (leader.url.clone(), acked.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for i in 0.. {
                    let stream = format!("acct-{}", (client * 1_000 + i) % 37);
                    let command = Uuid::now_v7();
                    match append(&http, &url, &stream, command).await {
                        Some((201, outcome)) => acked.lock().expect("lock").push(Acked {
                            stream,
                            command,
                            outcome,
                        }),
                        Some((503, body)) => assert_eq!(body["error"], "replication_timeout", "{body}"),
                        Some((status, body)) => panic!("append refused: {status} {body}"),
                        None => return,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    leader.kill();
    for client in clients {
        client.await.expect("client");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 50, "too little load: {} appends", acked.len());

    // Failover: stop the follower, promote it, serve it.
    follower.stop();
    let promoted = annals()
        .args(["--db", &new_db, "--json", "promote"])
        .output()
        .expect("promote");
    let promoted: Value = serde_json::from_slice(&promoted.stdout).expect("JSON");
    assert_eq!(
        (promoted["role"].as_str(), promoted["leader_epoch"].as_u64()),
        (Some("leader"), Some(1))
    );
    let new = Node::start(&serve_args(&new_db, "127.0.0.1:0"), log("new"));
    let http = reqwest::Client::new();
    let promoted_log = everything(&http, &new.url).await;
    assert_gapless(&promoted_log);
    for acked in &acked {
        assert!(
            holds(&promoted_log, acked),
            "acknowledged, then lost in the failover: {acked:?}"
        );
        let (status, retried) = append(&http, &new.url, &acked.stream, acked.command)
            .await
            .expect("answer");
        assert_eq!(status, 200, "a retried command was applied again: {retried}");
        let mut original = acked.outcome.clone();
        original["duplicate"] = json!(true);
        assert_eq!(retried, original, "a retry is answered with the original outcome");
    }

    // The old leader holds a record the new one never had (its last append, which no
    // follower received). Restarted as a follower of the new leader, it refuses.
    let lost = annals()
        .args(["--db", &old_db, "append", "lost-1", "--type", "Lost", "--data", "{}"])
        .output()
        .expect("append");
    assert!(lost.status.success(), "{}", String::from_utf8_lossy(&lost.stderr));
    let rejoin = |extra: &[&str]| {
        let mut args = follow_args(&old_db, &new.url);
        args.extend(extra);
        let mut child = annals()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("follow");
        let status = wait_at_most(&mut child, Duration::from_secs(60));
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
        (status, stderr)
    };
    let (status, said) = rejoin(&[]);
    assert_eq!(status.code(), Some(3), "a diverged follower went on: {said}");
    assert!(said.contains("diverged"), "{said}");
    let cut = dir.path().join("cut.jsonl");
    let cut_file = cut.display().to_string();
    let (status, said) = rejoin(&[
        "--truncate-diverged",
        "--max-truncate",
        "0",
        "--truncated-file",
        &cut_file,
    ]);
    assert_eq!(status.code(), Some(3), "a cut beyond the bound was made: {said}");
    assert!(!cut.exists(), "a refused cut wrote its file");

    // Allowed to cut that back, it follows the new leader.
    let args = [
        "--truncate-diverged",
        "--max-truncate",
        "100000",
        "--truncated-file",
        &cut_file,
    ];
    let mut rejoin_args = follow_args(&old_db, &new.url);
    rejoin_args.extend(args);
    let rejoined = Node::start(&rejoin_args, log("rejoined"));
    let (status, _) = append(&http, &new.url, "after-1", Uuid::now_v7())
        .await
        .expect("answer");
    assert_eq!(status, 201, "the promoted store takes appends");
    caught_up(&http, &new, &rejoined).await;
    assert!(
        everything(&http, &rejoined.url).await == everything(&http, &new.url).await,
        "the rejoined store's log is not the new leader's"
    );
    let removed: Vec<RecordedEvent> = std::fs::read_to_string(&cut)
        .expect("the removed records' file")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a record"))
        .collect();
    assert!(removed.iter().any(|r| r.stream.as_str() == "lost-1"), "{removed:?}");
    rejoined.stop();
    new.stop();
}

/// A deletion made on the leader reaches a running `annals follow`: the follower holds
/// the leader's log record for record, the deleted streams' records redacted, and reads
/// the soft-deleted stream as absent and the hard-deleted one as gone.
async fn deletions_reach_the_follower(leader_engine: Engine, follower_engine: Engine) {
    let dir = tempfile::tempdir().expect("dir");
    let Some((leader, follower, ..)) = leader_and_follower(leader_engine, follower_engine, dir.path()).await else {
        return;
    };
    let http = reqwest::Client::new();
    for stream in ["customer-1", "customer-2", "customer-3"] {
        let (status, _) = append(&http, &leader.url, stream, Uuid::now_v7())
            .await
            .expect("append");
        assert_eq!(status, 201);
    }
    caught_up(&http, &leader, &follower).await;
    for (stream, hard) in [("customer-1", false), ("customer-2", true)] {
        let response = http
            .delete(format!("{}/v1/streams/{stream}?hard={hard}", leader.url))
            .send()
            .await
            .expect("DELETE");
        assert_eq!(response.status().as_u16(), 200, "deleting {stream}");
    }
    caught_up(&http, &leader, &follower).await;
    let (ours, theirs) = (
        everything(&http, &follower.url).await,
        everything(&http, &leader.url).await,
    );
    assert!(ours == theirs, "the follower's log is not the leader's");
    let redacted: Vec<String> = (ours.iter().flatten())
        .filter(|record| record.redacted)
        .map(|record| record.stream.to_string())
        .collect();
    assert_eq!(
        redacted,
        ["customer-1", "customer-1", "customer-2", "customer-2"]
            .map(String::from)
            .to_vec()
    );
    for (stream, status) in [("customer-1", 404), ("customer-2", 410), ("customer-3", 200)] {
        let response = http
            .get(format!("{}/v1/streams/{stream}/events", follower.url))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status().as_u16(), status, "reading {stream} on the follower");
    }
    follower.stop();
    leader.stop();
}

/// Text that must reach no follower's files in the clear.
const SECRET: &str = "Wombat-Kilimanjaro-5521";

/// Personal data appended on the leader over HTTP reaches the follower sealed, and the
/// follower reveals it as the leader does; a subject erased with `annals erase` on the
/// leader reads as erased on the follower, which, promoted, refuses the subject.
async fn erasures_reach_the_follower(leader_engine: Engine, follower_engine: Engine) {
    let dir = tempfile::tempdir().expect("dir");
    let Some((leader, follower, _, follower_db)) =
        leader_and_follower(leader_engine, follower_engine, dir.path()).await
    else {
        return;
    };
    let http = reqwest::Client::new();
    for (stream, subject) in [
        ("order-1", "customer-7"),
        ("order-2", "customer-8"),
        ("order-3", "customer-7"),
    ] {
        let body = json!({
            "expected_version": "any",
            "events": [{
                "type": "OrderPlaced",
                "data": {"email": format!("{SECRET}@{subject}"), "total": 3},
                "personal": [{"subject": subject, "fields": ["/email"]}],
            }],
        });
        let response = http
            .post(format!("{}/v1/streams/{stream}/events", leader.url))
            .json(&body)
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status().as_u16(), 201, "appending to {stream}");
    }
    caught_up(&http, &leader, &follower).await;
    let sealed = |url: String| {
        let http = http.clone();
        async move {
            let mut all = Vec::new();
            for p in 0..16 {
                let page: Value = get(&http, &format!("{url}/v1/partitions/{p}/events?limit=5000&sealed=true")).await;
                all.push(page["events"].clone());
            }
            all
        }
    };
    let ours = sealed(follower.url.clone()).await;
    assert_eq!(
        ours,
        sealed(leader.url.clone()).await,
        "the follower holds the leader's records as stored"
    );
    assert!(!serde_json::to_string(&ours).expect("json").contains(SECRET));
    // The follower copied the keys before the records that need them.
    let revealed = everything(&http, &follower.url).await;
    assert!(
        revealed == everything(&http, &leader.url).await,
        "the follower does not reveal as the leader does"
    );
    let emails: Vec<String> = (revealed.iter().flatten())
        .map(|r| serde_json::from_str::<Value>(r.payload.get()).expect("json")["email"].to_string())
        .collect();
    assert_eq!(emails.len(), 3);
    assert!(emails.iter().all(|email| email.contains(SECRET)), "{emails:?}");

    let erased = annals()
        .args(["--server", &leader.url, "--json", "erase", "--subject", "customer-7"])
        .output()
        .expect("annals erase");
    assert!(erased.status.success(), "{}", String::from_utf8_lossy(&erased.stdout));
    let erasure: Value = serde_json::from_slice(&erased.stdout).expect("json");
    assert_eq!(
        (erasure["had_key"].as_bool(), erasure["streams"].as_u64()),
        (Some(true), Some(2)),
        "{erasure}"
    );
    caught_up(&http, &leader, &follower).await;
    for (stream, email) in [
        ("order-1", json!({"annals.erased": {"subject": "customer-7"}})),
        ("order-3", json!({"annals.erased": {"subject": "customer-7"}})),
        ("order-2", json!(format!("{SECRET}@customer-8"))),
    ] {
        let page: Value = get(&http, &format!("{}/v1/streams/{stream}/events", follower.url)).await;
        assert_eq!(page["events"][0]["data"]["email"], email, "{stream} on the follower");
    }
    follower.stop();
    if let Some(path) = follower_db.strip_prefix("sqlite://") {
        for file in [path.to_owned(), format!("{path}-wal")] {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "{file} holds personal data"
            );
        }
    }
    let promoted = annals()
        .args(["--db", &follower_db, "promote"])
        .output()
        .expect("promote");
    assert!(
        promoted.status.success(),
        "{}",
        String::from_utf8_lossy(&promoted.stderr)
    );
    let refused = annals()
        .args([
            "--db",
            &follower_db,
            "--json",
            "append",
            "order-4",
            "--type",
            "OrderPlaced",
        ])
        .args(["--data", r#"{"email":"x"}"#, "--personal", "customer-7=/email"])
        .output()
        .expect("append");
    let refused: Value = serde_json::from_slice(&refused.stdout).expect("json");
    assert_eq!(refused["error"], "subject_erased", "{refused}");
    leader.stop();
}

/// `annals kafka sink` on the follower's database: its group runs there, and it ships
/// every record the follower holds (the leader's), once, partition p to partition p.
async fn a_kafka_sink_beside_the_follower(leader_engine: Engine, follower_engine: Engine) {
    let Some(broker) = annals_testkit::kafka::Broker::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let Some((leader, follower, _, follower_db)) =
        leader_and_follower(leader_engine, follower_engine, dir.path()).await
    else {
        return;
    };
    let http = reqwest::Client::new();
    for n in 0..60 {
        let (status, _) = append(&http, &leader.url, &format!("order-{}", n % 9), Uuid::now_v7())
            .await
            .expect("append");
        assert_eq!(status, 201);
    }
    caught_up(&http, &leader, &follower).await;
    let mut sink = annals()
        .args([
            "--db",
            &follower_db,
            "kafka",
            "sink",
            "--brokers",
            &broker.address(),
            "--topic",
            "orders",
        ])
        .env("ANNALS_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("sink");
    let log = everything(&http, &follower.url).await;
    let held: usize = log.iter().map(Vec::len).sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut messages = Vec::new();
    while messages.len() < held && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        messages = annals_testkit::kafka::read_topic(&broker.address(), "orders");
    }
    signal_term(&sink);
    assert!(
        wait_at_most(&mut sink, Duration::from_secs(30)).success(),
        "the sink stops on SIGTERM"
    );
    let shipped: Vec<(u32, String)> = messages
        .iter()
        .map(|m| {
            (
                m.partition as u32,
                m.header("annals-event-id").unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(u32, String)> = log
        .iter()
        .flatten()
        .map(|r| (r.partition.0, r.event_id.to_string()))
        .collect();
    assert_eq!(shipped, expected, "the follower's records, each once, in order");
    follower.stop();
    leader.stop();
}

macro_rules! on_every_pair {
    ($($scenario:ident),*) => {$(
        mod $scenario {
            use super::Engine::{Postgres, Sqlite};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_to_sqlite() {
                super::$scenario(Sqlite, Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_to_postgres() {
                super::$scenario(Sqlite, Postgres).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_to_postgres() {
                super::$scenario(Postgres, Postgres).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_to_sqlite() {
                super::$scenario(Postgres, Sqlite).await;
            }
        }
    )*};
}

on_every_pair!(
    kills_on_both_sides,
    failover_with_acks,
    deletions_reach_the_follower,
    erasures_reach_the_follower,
    a_kafka_sink_beside_the_follower
);

/// A PostgreSQL store reached over TLS with `verify-full`: a fresh schema's URL, by the
/// name on the test cluster's certificate, trusting its authority.
async fn verified_postgres_url() -> Option<String> {
    let ca =
        std::env::var("ANNALS_TEST_POSTGRES_CA").unwrap_or_else(|_| "/var/lib/postgresql/annals-tls/ca.crt".to_owned());
    if !std::path::Path::new(&ca).exists() {
        assert!(
            !annals_testkit::postgres::required(),
            "PostgreSQL is required but its TLS authority {ca} is missing"
        );
        return None;
    }
    let url = annals_testkit::postgres::fresh_schema_url().await?;
    let (credentials, rest) = url.split_once('@').expect("credentials in the test URL");
    let (_, port_and_path) = rest.split_once(':').expect("a port in the test URL");
    Some(format!(
        "{credentials}@localhost:{port_and_path}&sslmode=verify-full&sslrootcert={ca}"
    ))
}

/// As deployed across machines: the leader serves HTTPS with a certificate from the
/// run's own authority and tokens with roles; the follower replicates with a read
/// token, trusting only that authority; both stores are PostgreSQL reached with
/// `verify-full`. Appends go through the CLI with a write token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_follower_with_a_read_token_on_verified_postgres() {
    let Some(leader_db) = verified_postgres_url().await else {
        return;
    };
    let Some(follower_db) = verified_postgres_url().await else {
        return;
    };
    let authority = annals_testkit::tls::Authority::new("annals test authority");
    let files = authority.issue("leader", &["localhost", "127.0.0.1"]);
    let (cert, key, ca) = (
        files.cert.display().to_string(),
        files.key.display().to_string(),
        authority.cert().display().to_string(),
    );
    let dir = tempfile::tempdir().expect("dir");
    init(&leader_db);
    let mut args = serve_args(&leader_db, "127.0.0.1:0");
    args.extend([
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tokens",
        "read:r3ad,write:wr1te",
    ]);
    let leader = Node::start(&args, dir.path().join("leader.log"));
    assert!(leader.url.starts_with("https://"), "{}", leader.url);
    let mut args = follow_args(&follower_db, &leader.url);
    args.extend(["--leader-token", "r3ad", "--leader-ca-file", &ca]);
    let follower = Node::start(&args, dir.path().join("follower.log"));

    let through_leader = |token: &str, ca_file: Option<&str>, args: &[&str]| {
        let mut command = annals();
        command.args(["--server", &leader.url, "--token", token, "--json"]);
        if let Some(ca_file) = ca_file {
            command.args(["--ca-file", ca_file]);
        }
        command.args(args).output().expect("annals")
    };
    for n in 0..5 {
        let stream = format!("order-{n}");
        let appended = through_leader(
            "wr1te",
            Some(&ca),
            &["append", &stream, "--type", "Placed", "--data", "{}"],
        );
        assert!(
            appended.status.success(),
            "{}",
            String::from_utf8_lossy(&appended.stdout)
        );
    }
    let untrusted = through_leader("wr1te", None, &["stats"]);
    assert_eq!(
        untrusted.status.code(),
        Some(1),
        "a client that does not trust the authority got an answer"
    );
    let forbidden = through_leader(
        "r3ad",
        Some(&ca),
        &["append", "order-9", "--type", "Placed", "--data", "{}"],
    );
    let body: Value = serde_json::from_slice(&forbidden.stdout).expect("JSON");
    assert_eq!(body["error"], "forbidden", "{body}");

    let records = |db: &str| -> u64 {
        let stats = annals().args(["--db", db, "--json", "stats"]).output().expect("stats");
        let stats: Value = serde_json::from_slice(&stats.stdout).expect("JSON");
        stats["records"].as_u64().unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while records(&follower_db) < 5 {
        assert!(
            Instant::now() < deadline,
            "the follower did not catch up over HTTPS:\n{}",
            std::fs::read_to_string(dir.path().join("follower.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(records(&leader_db), 5);
    follower.stop();
    leader.stop();
}
