//! Aggregate caches in two processes at once: two `command-runner` processes run
//! deposits and withdrawals on the same five accounts, each through a repository that
//! keeps the accounts in memory between commands. A cache that was trusted for an
//! append (one written without the kept version as its expected version) would let a
//! withdrawal overdraw an account. The log must show every accepted command exactly
//! once, at the version it was acknowledged with, no refused one, and no balance below
//! zero at any version. (Refusals given on a kept state that was behind are checked in
//! process, by `the_cache_keeps_up_with_other_writers` in the testkit.)

use std::collections::HashMap;
use std::process::{Command, Stdio};

use annals::{Store, StreamId};

use crate::crash::tempfile_dir;

/// One line a runner printed.
struct Line {
    accepted: bool,
    command: uuid::Uuid,
    account: String,
    withdrawal: bool,
    amount: u64,
    version: Option<annals::Version>,
}

fn run_two(url: &str) -> Vec<Line> {
    let runners: Vec<_> = [11, 29]
        .map(|seed| {
            Command::new(env!("CARGO_BIN_EXE_command-runner"))
                .args([url, &seed.to_string(), "400"])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start command-runner")
        })
        .into_iter()
        .collect();
    let mut lines = Vec::new();
    for runner in runners {
        let output = runner.wait_with_output().expect("runner");
        assert!(output.status.success(), "a runner failed");
        for line in String::from_utf8(output.stdout).expect("utf-8").lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            lines.push(Line {
                accepted: fields[0] == "ok",
                command: fields[1].parse().expect("command id"),
                account: fields[2].to_owned(),
                withdrawal: fields[3] == "withdraw",
                amount: fields[4].parse().expect("amount"),
                version: fields.get(5).map(|v| v.parse().expect("version")),
            });
        }
    }
    assert_eq!(lines.len(), 800, "every command printed its result");
    lines
}

async fn caches_in_two_processes(url: &str) {
    // The store exists before the runners open it at once.
    Store::open(url).await.expect("open").close().await;
    let lines = run_two(url);
    let store = Store::open(url).await.expect("open");
    let by_command: HashMap<_, _> = lines.iter().map(|line| (line.command, line)).collect();
    assert!(lines.iter().any(|line| !line.accepted), "no withdrawal was refused");
    let mut applied = 0;
    for account in 0..5 {
        let stream = StreamId::new(format!("account-{account}")).expect("id");
        let records = store.read_stream(&stream, 1, 10_000).await.expect("read");
        let mut balance: i64 = 0;
        for record in &records {
            let command = record.metadata.command_id.expect("every append has a command id");
            let line = by_command.get(&command).expect("a record no runner acknowledged");
            assert!(line.accepted, "a refused command is in the log");
            assert_eq!(line.account, stream.as_str());
            assert_eq!(line.version, Some(record.version), "acknowledged at another version");
            let amount = line.amount as i64;
            balance += if line.withdrawal { -amount } else { amount };
            assert!(balance >= 0, "{stream} overdrawn at version {}", record.version);
            applied += 1;
        }
    }
    let accepted = lines.iter().filter(|line| line.accepted).count();
    assert_eq!(
        applied, accepted,
        "an accepted command is missing from the log, or is there twice"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_in_two_processes_on_sqlite() {
    let dir = tempfile_dir();
    caches_in_two_processes(&format!("sqlite://{}", dir.join("accounts.db").display())).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_in_two_processes_on_postgres() {
    if let Some(url) = annals_testkit::postgres::fresh_schema_url().await {
        caches_in_two_processes(&url).await;
    }
}
