//! Running `log-writer` processes and auditing a store against what they acknowledged.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;

use annals::{AppendOutcome, AppendRequest, ExpectedVersion, NewEvent, Offset, Partition, Store, StreamId, Version};
use annals_testkit::conformance::read_whole_partition;
use uuid::Uuid;

/// One acknowledged append, as `log-writer` printed it.
#[derive(Debug, Clone)]
pub(crate) struct Ack {
    pub(crate) command: Uuid,
    pub(crate) stream: StreamId,
    pub(crate) outcome: AppendOutcome,
    pub(crate) events: u64,
}

impl Ack {
    fn parse(line: &str) -> Ack {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 9, "malformed ack line {line:?}");
        let number = |i: usize| fields[i].parse::<u64>().expect("number in ack line");
        Ack {
            command: fields[1].parse().expect("command id"),
            stream: StreamId::new(fields[2]).expect("stream id"),
            outcome: AppendOutcome {
                partition: Partition(number(3) as u32),
                first_offset: Offset(number(4)),
                last_offset: Offset(number(5)),
                first_version: Version(number(6)),
                last_version: Version(number(7)),
                duplicate: false,
            },
            events: number(8),
        }
    }
}

/// A running `log-writer` whose acknowledgements are collected as they are printed.
pub(crate) struct Writer {
    child: Child,
    reader: Option<JoinHandle<Vec<Ack>>>,
    pub(crate) first_ack: mpsc::Receiver<()>,
}

impl Writer {
    pub(crate) fn spawn(url: &str, tasks: u32, appends_per_task: Option<u32>) -> Writer {
        let mut command = Command::new(env!("CARGO_BIN_EXE_log-writer"));
        command.arg(url).arg(tasks.to_string());
        if let Some(limit) = appends_per_task {
            command.arg(limit.to_string());
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start log-writer");
        let stdout = child.stdout.take().expect("piped stdout");
        let (first_tx, first_ack) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            // Lines cut by the kill are not acknowledgements; whole lines are.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("ack ") && line.split(' ').count() == 9 {
                    acks.push(Ack::parse(&line));
                    let _ = first_tx.send(());
                }
            }
            acks
        });
        Writer {
            child,
            reader: Some(reader),
            first_ack,
        }
    }

    /// SIGKILLs the process and returns every append it acknowledged before dying.
    pub(crate) fn kill(mut self) -> Vec<Ack> {
        self.child.kill().expect("SIGKILL log-writer");
        self.child.wait().expect("reap log-writer");
        self.reader.take().expect("reader").join().expect("reader thread")
    }

    /// Whether the process has exited (without reaping its output).
    pub(crate) fn has_exited(&mut self) -> bool {
        self.child.try_wait().expect("poll log-writer").is_some()
    }

    /// Waits for the process to finish its appends and returns them.
    pub(crate) fn finish(mut self) -> Vec<Ack> {
        let status = self.child.wait().expect("wait for log-writer");
        assert!(status.success(), "log-writer failed: {status}");
        self.reader.take().expect("reader").join().expect("reader thread")
    }
}

/// Checks I1–I3 and I5 on the whole store against the acknowledged appends:
/// partitions gapless, every acknowledged append present where it was acknowledged,
/// every append (acknowledged or not) whole and contiguous, stream versions 1..v, and
/// every acknowledged command a duplicate when retried.
pub(crate) async fn audit(store: &Store, acks: &[Ack]) {
    let mut partitions = Vec::new();
    for partition in 0..store.partition_count() {
        partitions.push(read_whole_partition(store, partition).await);
    }

    for ack in acks {
        let records = &partitions[ack.outcome.partition.index()];
        let range = ack.outcome.first_offset.0 as usize..=ack.outcome.last_offset.0 as usize;
        let stored = records
            .get(range)
            .unwrap_or_else(|| panic!("I4: acknowledged append {ack:?} is missing"));
        assert_eq!(
            stored.len() as u64,
            ack.events,
            "I4: acknowledged append {} lost events",
            ack.command
        );
        for (i, record) in stored.iter().enumerate() {
            assert_eq!(record.stream, ack.stream);
            assert_eq!(record.version, ack.outcome.first_version + i as u64);
            assert_eq!(
                record.metadata.command_id,
                Some(ack.command),
                "I4: another append sits where {} was acknowledged",
                ack.command
            );
        }
    }

    let mut versions: HashMap<StreamId, u64> = HashMap::new();
    for records in &partitions {
        let mut i = 0;
        while i < records.len() {
            let head: serde_json::Value = records[i].decode().expect("payload");
            let of = head["of"].as_u64().expect("event count") as usize;
            assert_eq!(
                head["i"], 0,
                "I3: an append starts mid-way at offset {}",
                records[i].offset
            );
            assert!(i + of <= records.len(), "I3: append {} is cut short", head["command"]);
            for (j, record) in records[i..i + of].iter().enumerate() {
                let part: serde_json::Value = record.decode().expect("payload");
                assert_eq!(
                    (&part["command"], part["i"].as_u64()),
                    (&head["command"], Some(j as u64)),
                    "I3: append {} is not contiguous",
                    head["command"]
                );
                let version = versions.entry(record.stream.clone()).or_default();
                *version += 1;
                assert_eq!(record.version, *version, "I2: {} skips a version", record.stream);
            }
            i += of;
        }
    }

    for ack in acks {
        let mut retry = AppendRequest::new(ack.stream.clone(), ExpectedVersion::Any).command_id(ack.command);
        retry = retry.event(NewEvent::json("Tick", &serde_json::json!({"retry": true})).expect("json"));
        let outcome = store.append(retry).await.expect("retry");
        assert_eq!(
            outcome,
            AppendOutcome {
                duplicate: true,
                ..ack.outcome
            },
            "I5: retry of {}",
            ack.command
        );
    }
}
