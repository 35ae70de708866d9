//! The `annals` command as scripts use it: a real binary on a real SQLite file (and,
//! for aggregate loads, on PostgreSQL), its `--json` output snapshotted (ids and
//! timestamps redacted), its exit codes and its errors.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

struct Cli {
    db: String,
    _dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = format!("sqlite://{}", dir.path().join("cli.db").display());
        Cli { db, _dir: dir }
    }

    /// On a fresh PostgreSQL schema; `None` when PostgreSQL is not there and not
    /// required.
    fn postgres() -> Option<Cli> {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let db = runtime.block_on(annals_testkit::postgres::fresh_schema_url())?;
        Some(Cli {
            db,
            _dir: tempfile::tempdir().expect("temp dir"),
        })
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_annals"))
            .arg("--db")
            .arg(&self.db)
            .args(args)
            .output()
            .expect("run annals")
    }

    /// Runs with `--json`, expects success, returns the document.
    fn json(&self, args: &[&str]) -> Value {
        let output = self.run(&[args, &["--json"]].concat());
        assert!(
            output.status.success(),
            "annals {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("one JSON document")
    }

    /// Runs with `--json`, expects failure, returns the error document.
    fn json_error(&self, args: &[&str]) -> Value {
        let output = self.run(&[args, &["--json"]].concat());
        assert_eq!(output.status.code(), Some(1), "annals {args:?} should fail");
        serde_json::from_slice(&output.stdout).expect("a JSON error")
    }
}

/// Runs W1 as the spec defines it (every command loads its order): `commands` commands
/// from 4 tasks on 10 orders, without the raw baseline.
fn cold_w1(cli: &Cli, commands: u64) {
    let count = commands.to_string();
    let args = ["bench", "commands", "--cold", "--tasks", "4", "--commands", &count];
    let cold = cli.json(&[&args[..], &["--aggregates", "10", "--no-baseline"]].concat());
    assert_eq!(
        (cold["workload"].as_str(), cold["commands"].as_u64()),
        (Some("w1"), Some(commands))
    );
}

/// Starts `annals serve` (or `follow`) and returns it with the URL it printed.
fn serve(command: &mut Command) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};

    let mut server = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("annals serve");
    let mut line = String::new();
    BufReader::new(server.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("the address line")
        .to_owned();
    (server, url)
}

impl Cli {
    /// Starts `annals serve` on this store, on a free loopback port, with one token and
    /// the `extra` arguments.
    fn serve_with_token(&self, token: &str, extra: &[&str]) -> (std::process::Child, String) {
        serve(
            Command::new(env!("CARGO_BIN_EXE_annals"))
                .args(["--db", &self.db, "serve", "--listen", "127.0.0.1:0", "--token", token])
                .args(extra),
        )
    }
}

/// Runs `annals --server URL --token TOKEN --json ARGS`: its exit code and document.
fn through(url: &str, token: &str, args: &[&str]) -> (Option<i32>, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_annals"))
        .args(["--server", url, "--token", token, "--json"])
        .args(args)
        .output()
        .expect("run annals");
    let body: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    (output.status.code(), body)
}

const COMMAND: &str = "0193a4d2-7c1e-7000-8000-00000000c0de";

#[test]
fn a_session_from_init_to_stats() {
    let cli = Cli::new();
    insta::assert_json_snapshot!("init", cli.json(&["init", "--partitions", "16"]));

    let placed = [
        "append",
        "order-1",
        "--type",
        "OrderPlaced",
        "--data",
        r#"{"total": 2599}"#,
    ];
    let first = cli.json(&[&placed[..], &["--expected", "no_stream", "--command-id", COMMAND]].concat());
    insta::assert_json_snapshot!("append", first);
    let retry = cli.json(&[&placed[..], &["--expected", "no_stream", "--command-id", COMMAND]].concat());
    assert_eq!(retry["duplicate"], true);
    assert_eq!(retry["first_offset"], first["first_offset"]);
    // A retry that the stream's version would admit finds its command id taken when
    // the store records it: still the original outcome, nothing written.
    let admitted = cli.json(&[&placed[..], &["--command-id", COMMAND]].concat());
    assert_eq!(admitted["duplicate"], true);
    assert_eq!(admitted["first_offset"], first["first_offset"]);

    insta::assert_json_snapshot!(
        "wrong_expected_version",
        cli.json_error(&[&placed[..], &["--expected", "no_stream"]].concat())
    );
    cli.json(&[
        "append",
        "order-1",
        "--type",
        "OrderPaid",
        "--data",
        r#"{"amount":2599}"#,
        "--expected",
        "1",
        "--metadata",
        r#"{"channel":"web"}"#,
    ]);
    cli.json(&[
        "append",
        "customer-alice",
        "--type",
        "CustomerRegistered",
        "--data",
        "{}",
    ]);

    insta::assert_json_snapshot!("read", cli.json(&["read", "order-1"]), {
        ".events[].id" => "[event id]",
        ".events[].recorded_at" => "[recorded at]",
    });
    insta::assert_json_snapshot!("streams", cli.json(&["streams"]));
    insta::assert_json_snapshot!("streams_of_a_category", cli.json(&["streams", "--category", "order"]));
    let tail = cli.json(&["tail", "--partition", "6", "--from", "1"]);
    // customer-alice shares partition 6 with order-1 (Kafka places both there).
    assert_eq!(
        (tail["next_offset"].as_u64(), tail["high_watermark"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(tail["events"][0]["type"], "OrderPaid");
    let stats = cli.json(&["stats"]);
    assert_eq!(
        (stats["records"].as_u64(), stats["partition_count"].as_u64()),
        (Some(3), Some(16))
    );
    assert_eq!(stats["partitions"][6]["next_offset"], 3);
}

#[test]
fn human_output_is_a_table() {
    let cli = Cli::new();
    assert!(cli.run(&["init"]).status.success());
    assert!(cli
        .run(&["append", "order-1", "--type", "OrderPlaced", "--data", "{}"])
        .status
        .success());
    let out = cli.run(&["streams"]);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.contains("stream") && text.contains("order-1"), "{text}");
}

#[test]
fn bad_input_is_refused_with_a_typed_error_and_changes_nothing() {
    let cli = Cli::new();
    cli.json(&["init"]);
    for (args, code) in [
        (vec!["append", "bad id", "--type", "T", "--data", "{}"], "bad_request"),
        (
            vec!["append", "order-1", "--type", "T", "--data", "{not json"],
            "bad_request",
        ),
        (vec!["append", "order-1", "--type", "", "--data", "{}"], "bad_request"),
        (
            vec!["append", "order-1", "--type", "T", "--data", "{}", "--metadata", "[1]"],
            "bad_request",
        ),
        (vec!["tail", "--partition", "16"], "not_found"),
        (vec!["streams", "--category", "a-b"], "bad_request"),
        (vec!["init", "--partitions", "8"], "bad_request"),
    ] {
        let error = cli.json_error(&args);
        assert_eq!(error["error"], code, "{args:?}: {error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(cli.json(&["stats"])["records"], 0, "a refused command wrote something");
    let human = cli.run(&[
        "append",
        "order-1",
        "--type",
        "T",
        "--data",
        "{",
        "--expected",
        "exists",
    ]);
    assert_eq!(human.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&human.stderr).starts_with("error[bad_request]"));
}

#[test]
fn read_commands_never_create_a_store() {
    let cli = Cli::new();
    for args in [
        &["stats"][..],
        &["read", "order-1"],
        &["streams"],
        &["tail", "--partition", "0"],
    ] {
        let error = cli.json_error(args);
        assert_eq!(error["error"], "not_found", "{args:?}");
    }
    let path = cli.db.trim_start_matches("sqlite://");
    assert!(!Path::new(path).exists(), "a read command created the store");
}

#[test]
fn workloads_w1_and_w2_run_and_report() {
    let cli = Cli::new();
    let w1 = cli.json(&[
        "bench",
        "commands",
        "--tasks",
        "4",
        "--commands",
        "300",
        "--aggregates",
        "10",
    ]);
    assert_eq!(
        (w1["workload"].as_str(), w1["commands"].as_u64()),
        (Some("w1-warm"), Some(300)),
        "the repository as users get it, its cache on"
    );
    assert!(w1["commands_per_sec"].as_f64().is_some_and(|rate| rate > 0.0));
    // Commands on one order take turns inside the process: no conflicts.
    assert_eq!(w1["conflicts"].as_u64(), Some(0));
    // The raw engine ran the same commands beside it, in its own table.
    assert!(w1["baseline_events_per_sec"].as_f64().is_some_and(|rate| rate > 0.0));
    assert!(w1["ratio_to_baseline"].as_f64().is_some_and(|ratio| ratio > 0.0));
    assert!(w1["baseline_conflicts"].as_u64().is_some());
    // And once more writing by hand what the store writes for a command (SQLite).
    assert!(w1["log_baseline_commands_per_sec"]
        .as_f64()
        .is_some_and(|rate| rate > 0.0));
    assert!(w1["ratio_to_log_baseline"].as_f64().is_some_and(|ratio| ratio > 0.0));
    assert_eq!(
        cli.json(&["stats"])["records"],
        300,
        "every command wrote exactly one event"
    );
    let streams = cli.json(&["streams", "--category", "order"]);
    let versions: u64 = streams["streams"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["version"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(versions, 300);

    cold_w1(&cli, 100);
    assert_eq!(cli.json(&["stats"])["records"], 400);

    let w2 = cli.json(&["bench", "load", "--events", "120", "--loads", "5"]);
    assert_eq!(
        (w2["workload"].as_str(), w2["events"].as_u64()),
        (Some("w2"), Some(120))
    );
    assert!(w2["load_min_ms"].as_f64() <= w2["load_median_ms"].as_f64());
}

/// Aggregates loaded by the binary on PostgreSQL, whose folds put rows in version
/// order themselves: `bench load` folds one order of 300 events five times (and fails
/// if a load misses an event), and `bench commands --cold` loads its order for every
/// command.
#[test]
fn the_binary_folds_aggregates_on_postgres() {
    let Some(cli) = Cli::postgres() else {
        return;
    };
    let w2 = cli.json(&["bench", "load", "--events", "300", "--loads", "5"]);
    assert_eq!(
        (w2["backend"].as_str(), w2["events"].as_u64()),
        (Some("postgres"), Some(300))
    );
    cold_w1(&cli, 200);
    assert_eq!(cli.json(&["stats"])["records"], 500);
}

/// The timer and filtered-group benchmarks run and report what they measured.
#[test]
fn timer_and_filter_benchmarks_run_and_report() {
    let cli = Cli::new();
    let timers = cli.json(&["bench", "timers", "--timers", "300", "--schedulers", "8"]);
    assert_eq!(
        (timers["workload"].as_str(), timers["timers"].as_u64()),
        (Some("timers"), Some(300))
    );
    assert!(timers["fired_per_sec"].as_f64().is_some_and(|rate| rate > 0.0));
    // Each timer: its schedule and its firing, and the one command it ran.
    assert_eq!(cli.json(&["stats"])["records"], 900);

    let other = Cli::new();
    let filtered = other.json(&["bench", "project", "--filter", "--events", "20000"]);
    assert_eq!(filtered["workload"], "project-filter");
    assert_eq!(
        filtered["records_read"], 200,
        "the group read the refunds only: {filtered}"
    );
    assert_eq!(filtered["refunds"], 200);
    assert_eq!(
        other.json(&["indexes", "list"])["filter_indexes"],
        serde_json::json!(["category"])
    );
}

#[test]
fn the_scavenge_benchmark_runs_and_checks_the_log() {
    let cli = Cli::new();
    let args = [
        "bench",
        "scavenge",
        "--records",
        "5000",
        "--streams",
        "100",
        "--keep",
        "5",
    ];
    let report = cli.json(&[&args[..], &["--alone-seconds", "1", "--writers", "2"]].concat());
    assert_eq!(
        (report["workload"].as_str(), report["records_redacted"].as_u64()),
        (Some("scavenge"), Some(4_500)),
        "{report}"
    );
    assert!(
        report["live_records_checked"].as_u64().is_some_and(|n| n > 0),
        "{report}"
    );
}

#[test]
fn the_personal_data_benchmark_runs_and_reports() {
    let cli = Cli::new();
    let args = [
        "bench",
        "personal",
        "--events",
        "400",
        "--writers",
        "2",
        "--customers",
        "20",
    ];
    let report = cli.json(&[&args[..], &["--erasures", "5"]].concat());
    assert_eq!(
        (
            report["workload"].as_str(),
            report["events"].as_u64(),
            report["erasures"].as_u64()
        ),
        (Some("personal"), Some(400), Some(5)),
        "{report}"
    );
    for ratio in ["append_ratio", "read_ratio"] {
        assert!(report[ratio].as_f64().is_some_and(|r| r > 0.0), "{ratio}: {report}");
    }
    let refused = cli.json_error(&["bench", "personal", "--customers", "3", "--erasures", "4"]);
    assert!(refused.to_string().contains("--erasures"), "{refused}");
}

/// Builds a group's state with a real member, then operates it from the CLI.
#[test]
fn groups_and_dead_letters_from_the_command_line() {
    use annals::group::{GroupMember, GroupOptions};
    use annals_testkit::tally::{add, add_poison, Tally};

    let cli = Cli::new();
    cli.json(&["init"]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = annals::Store::open(&cli.db).await.expect("open");
        add(&store, "acct-1", 5).await;
        add_poison(&store, "acct-1").await;
        add(&store, "acct-1", 7).await;
        add(&store, "acct-2", 9).await;
        let options = GroupOptions {
            max_attempts: 1,
            heartbeat_interval: std::time::Duration::from_millis(50),
            ..GroupOptions::default()
        };
        let member = GroupMember::projection(&store, "tally", Tally::new("tally"), options)
            .await
            .expect("join");
        annals_testkit::tally::caught_up(&store, "tally").await;
        member.shutdown().await.expect("leave");
        store.close().await;
    });

    let listed = cli.json(&["groups", "list"]);
    assert_eq!(listed[0]["group"], "tally");
    assert_eq!(
        (listed[0]["members"].as_u64(), listed[0]["lag"].as_u64()),
        (Some(0), Some(0))
    );
    let described = cli.json(&["groups", "describe", "tally"]);
    insta::assert_json_snapshot!("groups_describe", described, {".generation" => "[generation]"});

    let letters = cli.json(&["dlq", "list", "--group", "tally"]);
    insta::assert_json_snapshot!("dlq_list", letters, {"[].created_at" => "[time]", "[].event_id" => "[id]", "[].id" => "[id]"});
    let id = letters[0]["id"].as_i64().expect("id").to_string();
    assert_eq!(cli.json(&["dlq", "retry", &id])["retry"]["status"], "retry");
    assert_eq!(
        cli.json(&["dlq", "skip", &id])["skipped"]["offset"],
        letters[0]["offset"]
    );
    let after = cli.json(&["dlq", "list"]);
    assert_eq!(
        after.as_array().map(Vec::len),
        Some(1),
        "the parked record is left, to be handled"
    );
    assert_eq!(after[0]["status"], "retry");

    let reset = cli.json(&["groups", "reset", "tally", "--to", "earliest"]);
    assert_eq!(reset["lag"], 4);
    let reset = cli.json(&["groups", "reset", "tally", "--to", "latest"]);
    assert_eq!(reset["lag"], 0);
    let paused = cli.json(&["groups", "pause", "tally", "--partition", "3"]);
    assert_eq!(paused["partitions"][3]["paused"], true);
    assert_eq!(paused["partitions"][4]["paused"], false);
    let resumed = cli.json(&["groups", "resume", "tally"]);
    assert_eq!(resumed["partitions"][3]["paused"], false);

    assert_eq!(cli.json_error(&["groups", "describe", "nobody"])["error"], "not_found");
    assert_eq!(cli.json_error(&["dlq", "retry", "999"])["error"], "not_found");
    assert_eq!(
        cli.json_error(&["groups", "reset", "tally", "--to", "3:999"])["error"],
        "bad_request"
    );
    assert_eq!(
        cli.json_error(&["groups", "reset", "tally", "--to", "soon"])["error"],
        "bad_request"
    );
    assert_eq!(
        cli.json_error(&["groups", "pause", "tally", "--partition", "16"])["error"],
        "not_found"
    );
}

#[test]
fn compact_keeps_the_newest_snapshot_per_stream() {
    use annals::snapshot;

    let cli = Cli::new();
    cli.json(&["init"]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = annals::Store::open(&cli.db).await.expect("open");
        let db = store.read_models().expect("sql");
        for version in 1..=3u64 {
            for key in ["order-1", "order-2"] {
                let key = annals::StreamId::new(key).expect("id");
                db.transaction(move |tx| {
                    Box::pin(async move { snapshot::write(tx, &key, annals::Version(version), 1, "{}").await })
                })
                .await
                .expect("write");
            }
        }
        store.close().await;
    });
    let done = cli.json(&["compact"]);
    insta::assert_json_snapshot!("compact", done);
    assert_eq!(cli.json(&["compact"])["snapshot_log"]["rows_before"], 2);
    let refused = cli.run(&["compact", "--retention-seconds", "soon"]);
    assert_eq!(refused.status.code(), Some(2), "clap refuses a bad number");
}

#[test]
fn filter_indexes_from_the_command_line() {
    let cli = Cli::new();
    cli.json(&["init"]);
    assert_eq!(cli.json(&["indexes", "list"])["filter_indexes"], serde_json::json!([]));
    assert_eq!(
        cli.json(&["indexes", "enable", "category"])["filter_indexes"],
        serde_json::json!(["category"])
    );
    assert_eq!(
        cli.json(&["indexes", "enable", "event-type"])["filter_indexes"],
        serde_json::json!(["category", "event-type"])
    );
    assert_eq!(
        cli.json(&["indexes", "disable", "category"])["filter_indexes"],
        serde_json::json!(["event-type"])
    );
    let refused = cli.json_error(&["indexes", "enable", "colour"]);
    assert_eq!(refused["error"], "bad_request", "{refused}");
    assert_eq!(
        cli.json(&["indexes", "list"])["filter_indexes"],
        serde_json::json!(["event-type"])
    );
}

#[test]
fn timers_from_the_command_line() {
    let cli = Cli::new();
    cli.json(&["init"]);
    let id = "0192f0c4-0000-7000-8000-000000000001";
    let schedule = [
        "timers",
        "schedule",
        "--at",
        "2030-01-01T00:00:00Z",
        "--target",
        "order.expire",
        "--payload",
        r#"{"order": "o-1"}"#,
        "--command-id",
        id,
    ];
    assert_eq!(cli.json(&schedule)["duplicate"], false);
    assert_eq!(cli.json(&schedule)["duplicate"], true, "a command id schedules once");
    let listed = cli.json(&["timers", "list"]);
    assert_eq!(listed["timers"][0]["command_id"], id, "{listed}");
    assert_eq!(listed["timers"][0]["due_at"], "2030-01-01T00:00:00Z");
    let earlier = cli.json(&["timers", "list", "--until", "2029-12-31T23:59:59Z"]);
    assert_eq!(earlier["timers"], serde_json::json!([]));
    let status = cli.json(&["timers", "status", id]);
    assert_eq!(
        (status["status"].as_str(), status["target"].as_str()),
        (Some("pending"), Some("order.expire"))
    );
    assert_eq!(cli.json(&["timers", "cancel", id])["cancel"], "cancelled");
    assert_eq!(cli.json(&["timers", "status", id])["status"], "cancelled");
    assert_eq!(cli.json(&["timers", "list"])["timers"], serde_json::json!([]));
    let unknown = "0192f0c4-0000-7000-8000-000000000002";
    assert_eq!(cli.json(&["timers", "cancel", unknown])["cancel"], "unknown");

    // Bad input: a clear error, nothing written.
    let records = cli.json(&["stats"])["records"].clone();
    let no_target = ["timers", "schedule", "--at", "2030-01-01T00:00:00Z", "--target", ""];
    assert_eq!(cli.json_error(&no_target)["error"], "bad_request");
    let bad_payload = [&no_target[..5], &["x", "--payload", "{nope"]].concat();
    assert_eq!(cli.json_error(&bad_payload)["error"], "bad_request");
    let refused = cli.run(&["timers", "schedule", "--at", "tomorrow", "--target", "x"]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "clap refuses a time that is not RFC 3339"
    );
    assert_eq!(cli.json(&["stats"])["records"], records);
}

/// A certificate that cannot be used stops `annals serve` before it announces an
/// address, and says which files.
#[test]
fn serve_refuses_a_certificate_it_cannot_use() {
    let cli = Cli::new();
    cli.json(&["init"]);
    let missing = std::env::temp_dir().join("annals-no-such-certificate.pem");
    let missing = missing.to_str().expect("path");
    let refused = cli.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        missing,
        "--tls-key",
        missing,
    ]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!said.contains("listening"), "announced an address: {said}");
    assert!(said.contains("annals-no-such-certificate.pem"), "{said}");
}

/// `annals serve` as a process, and every command that reads or writes the log run
/// through it with `--server`: the same answers as with `--db`.
#[test]
fn commands_through_a_server_answer_as_the_store_does() {
    let cli = Cli::new();
    cli.json(&["init"]);
    let (mut server, url) = cli.serve_with_token("t0ken", &[]);
    let remote = |args: &[&str]| through(&url, "t0ken", args);

    let (code, appended) = remote(&[
        "append",
        "order-1",
        "--type",
        "Placed",
        "--data",
        r#"{"n":1}"#,
        "--expected",
        "no_stream",
    ]);
    assert_eq!(
        (code, appended["first_version"].as_u64()),
        (Some(0), Some(1)),
        "{appended}"
    );
    let (code, refused) = remote(&[
        "append",
        "order-1",
        "--type",
        "Placed",
        "--data",
        "{}",
        "--expected",
        "no_stream",
    ]);
    assert_eq!(
        (code, refused["error"].as_str()),
        (Some(1), Some("wrong_expected_version"))
    );
    assert_eq!(refused["actual"], 1);

    for args in [
        vec!["read", "order-1"],
        vec!["read", "order-404"],
        vec!["streams"],
        vec!["stats"],
        vec!["tail", "--partition", "6"],
        vec!["groups", "list"],
        vec!["dlq", "list"],
    ] {
        let (code, through_server) = remote(&args);
        assert_eq!(code, Some(0), "{args:?}: {through_server}");
        assert_eq!(through_server, cli.json(&args), "{args:?} differs through the server");
    }
    // A payload appended through the server is stored as the text given, as `--db`
    // stores it: keys in their order, a number too big for an f64 exact.
    let odd = r#"{"z":1,"a":12345678901234567890123,"f":1.50}"#;
    let (code, appended) = remote(&["append", "order-2", "--type", "Odd", "--data", odd]);
    assert_eq!(code, Some(0), "{appended}");
    for through in [
        vec!["--server", url.as_str(), "--token", "t0ken"],
        vec!["--db", cli.db.as_str()],
    ] {
        let read = Command::new(env!("CARGO_BIN_EXE_annals"))
            .args(&through)
            .args(["--json", "read", "order-2"])
            .output()
            .expect("run annals");
        let text = String::from_utf8(read.stdout).expect("utf-8");
        assert!(text.contains(odd), "{through:?} changed the payload: {text}");
    }
    let (code, missing) = remote(&["groups", "describe", "nobody"]);
    assert_eq!((code, missing["error"].as_str()), (Some(1), Some("not_found")));

    let anonymous = Command::new(env!("CARGO_BIN_EXE_annals"))
        .args(["--server", &url, "--json", "stats"])
        .output()
        .expect("run annals");
    let body: Value = serde_json::from_slice(&anonymous.stdout).expect("JSON");
    assert_eq!(body["error"], "unauthorized");
    let direct_only = Command::new(env!("CARGO_BIN_EXE_annals"))
        .args(["--server", &url, "--json", "compact"])
        .output()
        .expect("run annals");
    assert_eq!(direct_only.status.code(), Some(1));

    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(
        server.wait().expect("wait").success(),
        "annals serve did not stop cleanly on SIGTERM"
    );
}

/// `annals serve` with tokens from a file and from `ANNALS_TOKENS`: each command
/// through the server gets what its token's role allows, and a bad token list stops
/// the server before it listens.
#[test]
fn served_tokens_carry_roles() {
    let cli = Cli::new();
    cli.json(&["init"]);
    let file = cli._dir.path().join("tokens");
    std::fs::write(&file, "# the dashboard\nread r3ad\n").expect("write the tokens file");
    let (mut server, url) = serve(
        Command::new(env!("CARGO_BIN_EXE_annals"))
            .args(["--db", &cli.db, "serve", "--listen", "127.0.0.1:0", "--tokens-file"])
            .arg(&file)
            .env("ANNALS_TOKENS", "write:wr1te"),
    );
    let remote = |token: &str, args: &[&str]| through(&url, token, args);
    let append = ["append", "order-1", "--type", "Placed", "--data", "{}"];
    let (code, refused) = remote("r3ad", &append);
    assert_eq!(
        (code, refused["error"].as_str()),
        (Some(1), Some("forbidden")),
        "{refused}"
    );
    assert_eq!(refused["role_needed"], "write");
    let (code, stats) = remote("r3ad", &["stats"]);
    assert_eq!(code, Some(0), "{stats}");
    assert_eq!(stats["records"], 0, "the refused append landed: {stats}");
    let (code, appended) = remote("wr1te", &append);
    assert_eq!(code, Some(0), "{appended}");
    let (code, reset) = remote("wr1te", &["groups", "reset", "tally", "--to", "earliest"]);
    assert_eq!((code, reset["error"].as_str()), (Some(1), Some("forbidden")), "{reset}");
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(server.wait().expect("wait").success());

    let bad = Command::new(env!("CARGO_BIN_EXE_annals"))
        .args(["--db", &cli.db, "serve", "--listen", "127.0.0.1:0"])
        .env("ANNALS_TOKENS", "owner:s3cret")
        .output()
        .expect("annals serve");
    assert_eq!(bad.status.code(), Some(1), "a bad token list must stop the server");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&bad.stdout),
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(said.contains("unknown role") && !said.contains("listening"), "{said}");
    assert!(!said.contains("s3cret"), "the error shows the token: {said}");
}

/// The binary's transport flags and the wait route: `annals serve
/// --header-timeout-ms` closes a connection that stays silent, and
/// `GET /v1/groups/{group}/wait` answers through it.
#[test]
fn served_timeouts_and_the_wait_route() {
    use std::io::{Read, Write};

    let cli = Cli::new();
    cli.json(&["init"]);
    let (mut server, url) = serve(Command::new(env!("CARGO_BIN_EXE_annals")).args([
        "--db",
        &cli.db,
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--header-timeout-ms",
        "300",
    ]));
    let address = url.trim_start_matches("http://");
    let mut silent = std::net::TcpStream::connect(address).expect("connect");
    silent
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let mut answer = Vec::new();
    let closed = silent.read_to_end(&mut answer);
    assert!(closed.is_ok(), "a silent connection was kept open: {closed:?}");

    let mut wait = std::net::TcpStream::connect(address).expect("connect");
    wait.write_all(b"GET /v1/groups/nobody/wait?partition=0&offset=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    wait.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("not_found"), "{answer}");

    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(server.wait().expect("wait").success());
}

#[test]
fn streams_are_deleted_from_the_command_line_and_through_a_server() {
    let cli = Cli::new();
    cli.json(&["init"]);
    for stream in ["customer-1", "customer-1", "customer-2", "customer-3"] {
        cli.json(&["append", stream, "--type", "Named", "--data", r#"{"name":"Ann"}"#]);
    }
    let deleted = cli.json(&["streams", "delete", "customer-1"]);
    assert_eq!(
        (deleted["version"].as_u64(), deleted["hard"].as_bool()),
        (Some(3), Some(false)),
        "{deleted}"
    );
    let listed = cli.json(&["streams", "--category", "customer"]);
    let names: Vec<&str> = (listed["streams"].as_array().expect("streams").iter())
        .filter_map(|s| s["stream"].as_str())
        .collect();
    assert_eq!(names, ["customer-2", "customer-3"]);
    let absent = cli.json_error(&["streams", "delete", "customer-1"]);
    assert_eq!(absent["error"], "not_found", "{absent}");

    let (mut server, url) = cli.serve_with_token("t0ken", &[]);
    let remote = |args: &[&str]| through(&url, "t0ken", args);
    let (code, deleted) = remote(&["streams", "delete", "customer-2", "--hard"]);
    assert_eq!((code, deleted["hard"].as_bool()), (Some(0), Some(true)), "{deleted}");
    let (code, refused) = remote(&["append", "customer-2", "--type", "Named", "--data", "{}"]);
    assert_eq!(
        (code, refused["error"].as_str()),
        (Some(1), Some("stream_deleted")),
        "{refused}"
    );
    let (code, reserved) = remote(&["append", "customer-3", "--type", "annals.StreamDeleted", "--data", "{}"]);
    assert_eq!(
        (code, reserved["error"].as_str()),
        (Some(1), Some("bad_request")),
        "{reserved}"
    );
    // The redacted records read in place, marked, through the fetch route.
    let partition = annals::partition_for(&annals::StreamId::new("customer-1").expect("id"), 16);
    let (code, fetched) = remote(&["tail", "--partition", &partition.0.to_string()]);
    assert_eq!(code, Some(0), "{fetched}");
    let records: Vec<&Value> = (fetched["events"].as_array().expect("events").iter())
        .filter(|record| record["stream"] == "customer-1")
        .collect();
    let shape: Vec<(u64, bool, bool)> = (records.iter())
        .map(|r| {
            (
                r["version"].as_u64().unwrap_or(0),
                r["redacted"] == true,
                r["data"].is_null(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [(1, true, true), (2, true, true), (3, false, false)],
        "{fetched}"
    );
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn personal_data_is_sealed_and_erased_from_the_command_line() {
    let cli = Cli::new();
    cli.json(&["init"]);
    let keys_dir = tempfile::tempdir().expect("dir");
    let keys = format!("sqlite://{}", keys_dir.path().join("keys.db").display());
    let with_keys = |args: &[&str]| cli.json(&[&["--keys", keys.as_str()], args].concat());
    let data = r#"{"email":"ada@example.com","address":{"street":"1 Lane"},"total":3}"#;
    with_keys(&[
        "append",
        "order-1",
        "--type",
        "OrderPlaced",
        "--data",
        data,
        "--personal",
        "customer-7=/email,/address/street",
    ]);
    with_keys(&[
        "append",
        "order-2",
        "--type",
        "OrderPlaced",
        "--data",
        r#"{"email":"bob@example.com"}"#,
        "--personal",
        "customer-8=/email",
    ]);
    let read = with_keys(&["read", "order-1"]);
    assert_eq!(read["events"][0]["data"]["address"]["street"], "1 Lane", "{read}");
    // Without the key database the fields cannot be revealed.
    let blind = cli.json(&["read", "order-1"]);
    assert_eq!(
        blind["events"][0]["data"]["email"]["annals.erased"]["subject"], "customer-7",
        "{blind}"
    );
    assert_eq!(blind["events"][0]["data"]["total"], 3);

    let bad = cli.json_error(&[
        "append",
        "order-3",
        "--type",
        "T",
        "--data",
        "{}",
        "--personal",
        "customer-7=/nope",
    ]);
    assert_eq!(bad["error"], "bad_request", "{bad}");
    let usage = cli.run(&[
        "append",
        "order-3",
        "--type",
        "T",
        "--data",
        "{}",
        "--personal",
        "customer-7",
    ]);
    assert_eq!(usage.status.code(), Some(2), "a malformed --personal is a usage error");

    let erased = with_keys(&["erase", "--subject", "customer-7"]);
    assert_eq!(
        (erased["had_key"].as_bool(), erased["streams"].as_u64()),
        (Some(true), Some(1)),
        "{erased}"
    );
    let read = with_keys(&["read", "order-1"]);
    assert_eq!(
        read["events"][0]["data"]["email"],
        serde_json::json!({"annals.erased": {"subject": "customer-7"}})
    );
    assert_eq!(
        with_keys(&["read", "order-2"])["events"][0]["data"]["email"],
        "bob@example.com"
    );

    // Through a server started with the same keys.
    let (mut server, url) = serve(Command::new(env!("CARGO_BIN_EXE_annals")).args([
        "--db",
        &cli.db,
        "--keys",
        &keys,
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--token",
        "t0ken",
    ]));
    let remote = |args: &[&str]| through(&url, "t0ken", args);
    let (code, erased) = remote(&["erase", "--subject", "customer-8"]);
    assert_eq!((code, erased["had_key"].as_bool()), (Some(0), Some(true)), "{erased}");
    let (code, refused) = remote(&[
        "append",
        "order-9",
        "--type",
        "T",
        "--data",
        r#"{"e":1}"#,
        "--personal",
        "customer-8=/e",
    ]);
    assert_eq!(
        (code, refused["error"].as_str()),
        (Some(1), Some("subject_erased")),
        "{refused}"
    );
    let (code, invalid) = remote(&["erase", "--subject", "\u{7}"]);
    assert_eq!(code, Some(1), "{invalid}");
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn retention_and_the_scavenger_from_the_command_line() {
    let cli = Cli::new();
    cli.json(&["init"]);
    for _ in 0..4 {
        for stream in ["reading-1", "reading-2"] {
            cli.json(&["append", stream, "--type", "Measured", "--data", r#"{"c":21}"#]);
        }
    }
    let set = cli.json(&["retention", "set", "--category", "reading", "--max-count", "1"]);
    assert_eq!(set["retention"]["max_count"], 1, "{set}");
    let refused = cli.json_error(&["retention", "set", "--category", "reading", "--truncate-before", "2"]);
    assert_eq!(refused["error"], "bad_request", "{refused}");
    let listed = cli.json(&["retention", "list"]);
    assert_eq!(listed["rules"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed["rules"][0]["scope"], serde_json::json!({"category": "reading"}));

    let dry = cli.json(&["scavenge", "--dry-run"]);
    assert_eq!(dry["scavenged"]["records_redacted"], 6, "{dry}");
    let done = cli.json(&["scavenge"]);
    assert_eq!(done["scavenged"], dry["scavenged"], "{done}");
    assert_eq!(cli.json(&["scavenge"])["scavenged"]["streams_truncated"], 0);
    let read = cli.json(&["read", "reading-1"]);
    let flags: Vec<bool> = (read["events"].as_array().expect("events").iter())
        .map(|r| r["redacted"] == true)
        .collect();
    assert_eq!(flags, [true, true, true, false], "{read}");

    // `serve --scavenge-every` applies a rule in the background.
    cli.json(&["retention", "set", "--stream", "reading-2", "--max-count", "1"]);
    for _ in 0..2 {
        cli.json(&["append", "reading-2", "--type", "Measured", "--data", "{}"]);
    }
    let (mut server, url) = cli.serve_with_token("t0ken", &["--scavenge-every", "1"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (code, read) = through(&url, "t0ken", &["read", "reading-2"]);
        assert_eq!(code, Some(0), "{read}");
        let redacted = (read["events"].as_array().expect("events").iter())
            .filter(|r| r["redacted"] == true)
            .count();
        if redacted == 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server never scavenged: {read}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = server.kill();
    let _ = server.wait();
}
