//! `annals kafka sink` and `annals kafka source` as users run them: real processes,
//! killed with SIGKILL at random points under load, beside a real broker that is itself
//! killed and restarted; every record must cross exactly once, in order.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use annals::{AppendRequest, ExpectedVersion, NewEvent, StreamId};
use annals_testkit::kafka::{create_topic, produce, producer, read_topic, Broker};
use annals_testkit::{every_record, TestStore};
use rand::Rng;
use tokio::process::{Child, Command};

/// Where the processes' stderr goes, shown when a test fails.
fn log_file() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("annals-kafka-test-{}.log", std::process::id()))
}

fn annals(url: &str, args: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file())
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_annals"))
        .args(["--db", url, "kafka"])
        .args(args)
        .env("ANNALS_LOG", "warn,librdkafka=off,rdkafka=off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("annals runs")
}

/// The last lines the processes wrote.
fn log_tail() -> String {
    let log = std::fs::read_to_string(log_file()).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Runs `start` and kills what it started with SIGKILL after a random while, `rounds`
/// times; in round 2 the broker is killed and restarted under it as well. Each round
/// starts `settle` after the last kill.
async fn kill_at_random(broker: &mut Broker, rounds: usize, settle: Duration, mut start: impl FnMut() -> Child) {
    for round in 0..rounds {
        tokio::time::sleep(settle).await;
        let mut child = start();
        let run = rand::thread_rng().gen_range(300..2500);
        tokio::time::sleep(Duration::from_millis(run)).await;
        if round == 2 {
            broker.restart().await;
            tokio::time::sleep(Duration::from_millis(rand::thread_rng().gen_range(200..1500))).await;
        }
        child.start_kill().expect("SIGKILL");
        let status = child.wait().await.expect("reaped");
        assert!(!status.success(), "killed, not exited: {status}");
    }
}

async fn sink_survives_kills(test: TestStore) {
    let Some(mut broker) = Broker::start().await else {
        return;
    };
    let store = test.open().await;
    let url = test.url().expect("a database").to_owned();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 0..2500u64 {
                let stream = StreamId::new(format!("order-{}", n % 61)).expect("stream");
                let event = NewEvent::json("Added", &serde_json::json!({ "n": n })).expect("event");
                let request = AppendRequest::new(stream, ExpectedVersion::Any).event(event);
                store.append(request).await.expect("append");
                if n % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        })
    };
    let brokers = broker.address();
    let sink_args = [
        "sink",
        "--brokers",
        &brokers,
        "--topic",
        "orders",
        "--batch",
        "40",
        "--session-timeout-ms",
        "1500",
        "--delivery-timeout-ms",
        "2000",
    ];
    kill_at_random(&mut broker, 6, Duration::ZERO, || annals(&url, &sink_args)).await;
    writer.await.expect("writer");

    let records = every_record(&store).await;
    let mut last = annals(&url, &sink_args);
    for _ in 0..900 {
        if read_topic(&broker.address(), "orders").len() >= records.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    last.start_kill().expect("SIGKILL");
    let messages = read_topic(&broker.address(), "orders");

    // Per partition: the records in offset order, each once, nothing else.
    let mut shipped: HashMap<i32, Vec<(u64, String)>> = HashMap::new();
    for message in &messages {
        let offset = message
            .header("annals-offset")
            .expect("offset")
            .parse()
            .expect("number");
        let id = message.header("annals-event-id").expect("id").to_owned();
        shipped.entry(message.partition).or_default().push((offset, id));
    }
    let mut expected: HashMap<i32, Vec<(u64, String)>> = HashMap::new();
    for record in &records {
        expected
            .entry(record.partition.0 as i32)
            .or_default()
            .push((record.offset.0, record.event_id.to_string()));
    }
    assert_eq!(
        messages.len(),
        records.len(),
        "one message per record; the sinks said:\n{}",
        log_tail()
    );
    assert_eq!(shipped, expected, "each partition shipped whole, once, in order");
}

#[tokio::test]
async fn a_sink_killed_at_random_ships_each_record_once_sqlite() {
    sink_survives_kills(TestStore::sqlite().await.expect("sqlite")).await;
}

#[tokio::test]
async fn a_sink_killed_at_random_ships_each_record_once_postgres() {
    let Some(test) = TestStore::postgres().await else {
        return;
    };
    sink_survives_kills(test).await;
}

async fn source_survives_kills(test: TestStore) {
    let Some(mut broker) = Broker::start().await else {
        return;
    };
    let store = test.open().await;
    let url = test.url().expect("a database").to_owned();
    create_topic(&broker.address(), "payments", 4).await;
    let total = 2000usize;
    let keys = 53;
    let producing = {
        let brokers = broker.address();
        tokio::spawn(async move {
            let kafka = producer(&brokers);
            let mut seq = vec![0u64; keys];
            for n in 0..total {
                let key = n % keys;
                let value = serde_json::json!({ "seq": seq[key] }).to_string();
                produce(&kafka, "payments", &format!("payment-{key}"), &value).await;
                seq[key] += 1;
                if n % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    let brokers = broker.address();
    let source_args = [
        "source",
        "--brokers",
        &brokers,
        "--topic",
        "payments",
        "--batch",
        "40",
        "--kafka-config",
        "session.timeout.ms=6000",
        "--kafka-config",
        "heartbeat.interval.ms=500",
        // A rebalance waits at most this long for members that will never rejoin.
        "--kafka-config",
        "max.poll.interval.ms=10000",
    ];
    // Each source starts once the broker has dropped the one killed before it from the
    // Kafka group (its session timeout, 6 s): the broker, tansu, can otherwise hand a
    // new member an empty assignment under the dead member's leadership for good. So
    // every incarnation owns every partition and is killed while it appends.
    let settle = Duration::from_millis(6_500);
    kill_at_random(&mut broker, 5, settle, || annals(&url, &source_args)).await;
    producing.await.expect("producer");
    let before = every_record(&store).await.len();
    assert!(before > 0, "the killed sources appended something:\n{}", log_tail());

    tokio::time::sleep(settle).await;
    let mut last = annals(&url, &source_args);
    for _ in 0..1200 {
        if every_record(&store).await.len() >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    last.start_kill().expect("SIGKILL");
    let records = every_record(&store).await;
    assert_eq!(
        records.len(),
        total,
        "each message appended once; the sources said:\n{}",
        log_tail()
    );
    for key in 0..keys {
        let stream = StreamId::new(format!("payment-{key}")).expect("stream");
        let seqs: Vec<u64> = store
            .read_stream(&stream, 1u64, 10_000)
            .await
            .expect("read")
            .iter()
            .map(|e| {
                serde_json::from_str::<serde_json::Value>(e.payload.get()).expect("json")["seq"]
                    .as_u64()
                    .expect("seq")
            })
            .collect();
        let expected: Vec<u64> = (0..seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "payment-{key}: every message once, in order");
    }
}

#[tokio::test]
async fn a_source_killed_at_random_appends_each_message_once_sqlite() {
    source_survives_kills(TestStore::sqlite().await.expect("sqlite")).await;
}

#[tokio::test]
async fn a_source_killed_at_random_appends_each_message_once_postgres() {
    let Some(test) = TestStore::postgres().await else {
        return;
    };
    source_survives_kills(test).await;
}

/// The refusals reach the command line as typed errors and exit codes.
#[tokio::test]
async fn the_commands_refuse_a_mismatched_topic_and_bad_flags() {
    let Some(broker) = Broker::start().await else { return };
    let test = TestStore::sqlite().await.expect("sqlite");
    let _store = test.open().await;
    let url = test.url().expect("a database");
    create_topic(&broker.address(), "three", 3).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_annals"))
        .args([
            "--json",
            "--db",
            url,
            "kafka",
            "sink",
            "--brokers",
            &broker.address(),
            "--topic",
            "three",
        ])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let body: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json error");
    assert_eq!(body["error"], "partition_count_mismatch", "{body}");

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_annals"))
        .args([
            "--db",
            url,
            "kafka",
            "source",
            "--brokers",
            &broker.address(),
            "--topic",
            "t",
        ])
        .args(["--stream-from", "value"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("header:NAME"));

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_annals"))
        .args([
            "--server",
            "http://127.0.0.1:1",
            "kafka",
            "sink",
            "--brokers",
            "b",
            "--topic",
            "t",
        ])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--db only"));
}

/// `annals bench kafka` runs small against a real broker and reports every figure.
#[tokio::test]
async fn the_kafka_benchmark_runs_and_reports() {
    let Some(broker) = Broker::start().await else { return };
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let bench = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_annals"))
            .args(["--json", "--db", &url, "bench", "kafka", "--brokers", &broker.address()])
            .args(extra)
            .output()
            .expect("runs")
    };
    let output = bench(&["--events", "100", "--rate", "100", "--latency-seconds", "1"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(
        (
            report["workload"].as_str(),
            report["events"].as_u64(),
            report["latency_events"].as_u64()
        ),
        (Some("kafka"), Some(100), Some(100)),
        "{report}"
    );
    for figure in [
        "sink_ratio_to_raw",
        "source_ratio_to_raw",
        "sink_latency_p50_ms",
        "raw_latency_p99_ms",
    ] {
        assert!(report[figure].as_f64().is_some_and(|f| f > 0.0), "{figure}: {report}");
    }
    let refused = bench(&["--events", "0"]);
    assert!(!refused.status.success());
    let body: serde_json::Value = serde_json::from_slice(&refused.stdout).expect("json error");
    assert_eq!(body["error"], "bad_request", "{body}");
}
