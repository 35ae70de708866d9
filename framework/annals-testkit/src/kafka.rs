//! A Kafka-protocol broker on loopback for tests: `tansu`, started in a temporary
//! directory with its SQLite storage, so a restart keeps what it held.
//!
//! The broker comes from `ANNALS_TEST_TANSU` (a path), else `tansu` on `PATH`, else the
//! copy the test command installs under `target/tools`. Without one, tests skip (they get
//! `None`), unless `ANNALS_REQUIRE_KAFKA=1`, which makes that a failure.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A running broker; killed when dropped.
pub struct Broker {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// Where the broker binary is, if anywhere.
pub fn tansu() -> Option<PathBuf> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let found = std::env::var_os("ANNALS_TEST_TANSU")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join("tansu"))
                    .find(|candidate| candidate.is_file())
            })
        })
        .or_else(|| Some(workspace.join("target/tools/tansu/bin/tansu")))
        .filter(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var("ANNALS_REQUIRE_KAFKA").as_deref() != Ok("1"),
            "ANNALS_REQUIRE_KAFKA=1 but no tansu broker (set ANNALS_TEST_TANSU or run scripts/tansu.sh)"
        );
        eprintln!("skipped: no tansu broker");
    }
    found
}

impl Broker {
    /// Starts a broker on a free loopback port; `None` when there is no broker binary.
    pub async fn start() -> Option<Broker> {
        let binary = tansu()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut broker = Broker {
            binary,
            port,
            dir: tempfile::tempdir().expect("broker directory"),
            child: None,
        };
        broker.spawn().await;
        Some(broker)
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (SIGKILL) and starts it again on the same port and storage.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// Kills the broker with SIGKILL.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the broker again after [`kill`](Broker::kill).
    pub async fn spawn(&mut self) {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.path().join("broker.log")).expect("broker log");
        let child = Command::new(&self.binary)
            .current_dir(self.dir.path())
            .arg("broker")
            .args(["--listener-url", &listener, "--advertised-listener-url", &listener])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("tansu did not listen on {}: {}", self.port, self.log());
    }

    /// What the broker wrote to its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }
}

/// One message of a topic, as a test reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its partition.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// Its key, as text.
    pub key: Option<String>,
    /// Its value, as text.
    pub value: Option<String>,
    /// Its headers, in order, values as text.
    pub headers: Vec<(String, String)>,
}

impl Message {
    /// The value of header `name`, if it has one.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Every message of `topic` up to its high watermarks now, partition by partition in
/// offset order.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<Message> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message as _};

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.partition.eof", "false")
        .set("group.id", "annals-testkit-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a reader");
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout).expect("metadata");
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut position = rdkafka::TopicPartitionList::new();
    let mut next = std::collections::HashMap::new();
    let mut ends = std::collections::HashMap::new();
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .expect("watermarks");
        if high > low {
            position
                .add_partition_offset(topic, partition, rdkafka::Offset::Offset(low))
                .expect("position");
            next.insert(partition, low);
            ends.insert(partition, high);
        }
    }
    let mut messages = Vec::new();
    if next.is_empty() {
        return messages;
    }
    consumer.assign(&position).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while next.iter().any(|(partition, offset)| *offset < ends[partition]) {
        assert!(
            std::time::Instant::now() < deadline,
            "reading {topic} timed out: {next:?} of {ends:?}"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("a message");
        let partition = message.partition();
        let Some(expected) = next.get_mut(&partition) else {
            continue;
        };
        if message.offset() < *expected || message.offset() >= ends[&partition] {
            continue;
        }
        let text = |bytes: Option<&[u8]>| bytes.map(|b| String::from_utf8_lossy(b).into_owned());
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), text(h.value).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        messages.push(Message {
            partition,
            offset: message.offset(),
            key: text(message.key()),
            value: text(message.payload()),
            headers,
        });
        *expected = message.offset() + 1;
    }
    messages.sort_by_key(|m| (m.partition, m.offset));
    messages
}

/// Makes `topic` with `partitions` partitions.
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("an admin client");
    let results = admin
        .create_topics(
            [&NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create topics");
    for result in results {
        result.expect("topic made");
    }
}

/// An idempotent producer on `brokers`, partitioning keys as Kafka's Java client does
/// (murmur2) unless a message names its partition.
pub fn producer(brokers: &str) -> rdkafka::producer::FutureProducer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "2")
        .create()
        .expect("a producer")
}

/// Produces `value` under `key` to `topic` and waits for the broker's acknowledgement;
/// returns the partition and offset it landed at.
pub async fn produce(producer: &rdkafka::producer::FutureProducer, topic: &str, key: &str, value: &str) -> (i32, i64) {
    produce_with_headers(producer, topic, key, value, &[]).await
}

/// [`produce`], with headers.
pub async fn produce_with_headers(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    key: &str,
    value: &str,
    headers: &[(&str, &str)],
) -> (i32, i64) {
    use rdkafka::message::{Header, OwnedHeaders};
    let headers = headers.iter().fold(OwnedHeaders::new(), |all, (key, value)| {
        all.insert(Header {
            key,
            value: Some(*value),
        })
    });
    let record = rdkafka::producer::FutureRecord::to(topic)
        .key(key)
        .payload(value)
        .headers(headers);
    let delivery = producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(error, _)| error)
        .expect("delivered");
    (delivery.partition, delivery.offset)
}
