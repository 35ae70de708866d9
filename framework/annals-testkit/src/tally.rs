//! A projection to test consumer groups with: per stream, how many records and the sum
//! of their amounts, checked to arrive in version order. A record handled twice, lost,
//! or out of order makes the read model differ from [`fold_log`] (or the handler fail).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use annals::group::Projection;
use annals::readmodel::{Param, Tx};
use annals::{params, AppendRequest, Error, ExpectedVersion, NewEvent, Offset, RecordedEvent, Store, StreamId};
use async_trait::async_trait;

/// The read model: stream → (records, sum of amounts).
pub type Totals = BTreeMap<String, (i64, i64)>;

/// Counts records and sums `amount` per stream into a table of its own.
#[derive(Clone)]
pub struct Tally {
    table: String,
    /// Whether whole batches are written together ([`Tally::batched`]).
    batched: bool,
    /// While set, records whose payload has `"poison": true` fail.
    pub poison: Arc<AtomicBool>,
    /// How many times the handler ran on one record (attempts included).
    pub calls: Arc<AtomicU64>,
    /// How many batches the batched handler ran on.
    pub batches: Arc<AtomicU64>,
}

impl Tally {
    /// A tally into `table` (created on setup), one record at a time.
    pub fn new(table: &str) -> Self {
        Tally {
            table: table.to_owned(),
            batched: false,
            poison: Arc::new(AtomicBool::new(true)),
            calls: Arc::new(AtomicU64::new(0)),
            batches: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A tally that writes each batch's rows with one [`Tx::execute_many`], keeping
    /// the stream counts of the batch in memory to check the order.
    pub fn batched(table: &str) -> Self {
        Tally {
            batched: true,
            ..Self::new(table)
        }
    }

    /// The read model as it stands.
    pub async fn totals(&self, store: &Store) -> Totals {
        let sql = format!("SELECT stream, n, total FROM {} ORDER BY stream", self.table);
        let rows = store
            .read_models()
            .expect("a SQL store")
            .transaction(move |tx| Box::pin(async move { tx.query(&sql, &[]).await }))
            .await
            .expect("read the tally");
        rows.iter()
            .map(|row| {
                let (stream, n, total) = (row.get(0), row.get(1), row.get(2));
                (stream.expect("stream"), (n.expect("n"), total.expect("total")))
            })
            .collect()
    }

    /// The record's amount; an error for a poison record while poison is on.
    fn amount(&self, record: &RecordedEvent) -> annals::Result<i64> {
        let payload: serde_json::Value = record.decode()?;
        if payload["poison"] == true && self.poison.load(Ordering::Relaxed) {
            return Err(Error::handler(format!(
                "poison at {}@{}",
                record.stream, record.version
            )));
        }
        Ok(payload["amount"].as_i64().unwrap_or(0))
    }

    /// How many records of `stream` the table holds.
    async fn seen(&self, tx: &mut Tx, stream: &str) -> annals::Result<i64> {
        tx.query_opt(
            &format!("SELECT n FROM {} WHERE stream = $1", self.table),
            params![stream],
        )
        .await?
        .map_or(Ok(0), |row| row.get(0))
    }

    /// Fails unless `record` is the next of its stream after `seen` records.
    fn in_order(record: &RecordedEvent, seen: i64) -> annals::Result<()> {
        if seen + 1 == record.version.0 as i64 {
            return Ok(());
        }
        Err(Error::handler(format!(
            "{} version {} arrived after {seen} records",
            record.stream, record.version
        )))
    }

    /// `$1` stream, `$2` amount: one more record.
    fn upsert(&self) -> String {
        format!(
            "INSERT INTO {t} (stream, n, total) VALUES ($1, 1, $2) \
             ON CONFLICT (stream) DO UPDATE SET n = {t}.n + 1, total = {t}.total + excluded.total",
            t = self.table
        )
    }
}

#[async_trait]
impl Projection for Tally {
    async fn setup(&self, tx: &mut Tx) -> annals::Result<()> {
        tx.execute(
            &format!(
                "CREATE TABLE IF NOT EXISTS {} (stream TEXT PRIMARY KEY, n BIGINT NOT NULL, total BIGINT NOT NULL)",
                self.table
            ),
            &[],
        )
        .await
        .map(drop)
    }

    async fn handle(&self, record: &RecordedEvent, tx: &mut Tx) -> annals::Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let amount = self.amount(record)?;
        Self::in_order(record, self.seen(tx, record.stream.as_str()).await?)?;
        tx.execute(&self.upsert(), params![record.stream.as_str(), amount])
            .await
            .map(drop)
    }

    async fn handle_batch(&self, records: &[&RecordedEvent], tx: &mut Tx) -> annals::Result<()> {
        if !self.batched {
            for record in records {
                self.handle(record, tx).await?;
            }
            return Ok(());
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        let mut seen: HashMap<&str, i64> = HashMap::new();
        let mut rows = Vec::with_capacity(records.len());
        for record in records {
            let amount = self.amount(record)?;
            let stream = record.stream.as_str();
            let count = match seen.get_mut(stream) {
                Some(count) => count,
                None => seen.entry(stream).or_insert(self.seen(tx, stream).await?),
            };
            Self::in_order(record, *count)?;
            *count += 1;
            rows.push([Param::from(stream), Param::from(amount)]);
        }
        tx.execute_many(&self.upsert(), &rows).await.map(drop)
    }
}

/// What the tally must hold: the fold of every record in the log.
pub async fn fold_log(store: &Store) -> Totals {
    let mut totals = Totals::new();
    for partition in 0..store.partition_count() {
        let mut next = Offset(0);
        loop {
            let records = store.read_partition(partition, next, 1_000).await.expect("read");
            for record in &records {
                let payload: serde_json::Value = record.decode().expect("payload");
                let entry = totals.entry(record.stream.to_string()).or_default();
                entry.0 += 1;
                entry.1 += payload["amount"].as_i64().unwrap_or(0);
                next = record.offset + 1;
            }
            if records.is_empty() {
                break;
            }
        }
    }
    totals
}

/// Appends one `Added` record with `amount` to `stream`.
pub async fn add(store: &Store, stream: &str, amount: i64) {
    let request = AppendRequest::new(StreamId::new(stream).expect("stream id"), ExpectedVersion::Any)
        .event(NewEvent::json("Added", &serde_json::json!({ "amount": amount })).expect("payload"));
    store.append(request).await.expect("append");
}

/// Appends a record the tally fails on while its poison flag is set.
pub async fn add_poison(store: &Store, stream: &str) {
    let request = AppendRequest::new(StreamId::new(stream).expect("stream id"), ExpectedVersion::Any)
        .event(NewEvent::json("Added", &serde_json::json!({ "amount": 1000, "poison": true })).expect("payload"));
    store.append(request).await.expect("append");
}

/// Waits until consumer group `group` has committed everything written so far (its
/// lag is 0); fails the test after 30 s.
pub async fn caught_up(store: &Store, group: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let described = annals::group::admin::describe(store, group).await.expect("describe");
        if described.lag == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "group {group} stuck: {described:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Hands every record to a store, keeping each once by position.
#[derive(Clone, Default)]
struct Collect {
    seen: Arc<std::sync::Mutex<BTreeMap<(annals::Partition, Offset), RecordedEvent>>>,
}

#[async_trait]
impl annals::group::Consumer for Collect {
    async fn handle(&self, record: &RecordedEvent, _: &annals::group::Processed) -> annals::Result<()> {
        self.seen
            .lock()
            .expect("lock")
            .insert((record.partition, record.offset), record.clone());
        Ok(())
    }
}

/// Every record a new consumer group `group` is handed from the start of the log, once
/// each, in partition and offset order: what a replay sees.
pub async fn replay(store: &Store, group: &str) -> Vec<RecordedEvent> {
    let collect = Collect::default();
    let options = annals::group::GroupOptions {
        heartbeat_interval: std::time::Duration::from_millis(100),
        ..annals::group::GroupOptions::default()
    };
    let member = annals::group::GroupMember::consumer(store, group, collect.clone(), options)
        .await
        .expect("join");
    caught_up(store, group).await;
    member.shutdown().await.expect("leave");
    let seen = collect.seen.lock().expect("lock").values().cloned().collect();
    seen
}
