//! `annals bench project`: a consumer group catching up a SQL read model (one upsert per
//! event, transactional commits), beside the same upserts run in batches with no
//! framework; then the latency from append to handled under a steady append rate.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals::group::{admin, FilterIndex, GroupMember, GroupOptions, Projection, StartAt};
use annals::readmodel::{Engine, Param, Tx};
use annals::{async_trait, AppendRequest, ExpectedVersion, NewEvent, RecordedEvent, Store, StreamId};
use hdrhistogram::Histogram;
use serde_json::json;

use super::load::{histogram, quantile_ms, RssSampler};
use crate::output::{CliError, CliResult, Output};

#[derive(Debug, clap::Args)]
pub(crate) struct ProjectArgs {
    /// Events to catch up.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Records per transaction.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Append rate of the latency phase (events/s).
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Length of the latency phase, in seconds.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Instead: a group filtered to one category that is 1% of the log (`refund`, one
    /// append of ten events in a hundred), catching up before and after the store's
    /// filter index by category is enabled.
    #[arg(long)]
    filter: bool,
}

/// Distinct read-model rows the upserts spread over.
const SKUS: u64 = 10_000;

/// The read model: quantity sold per SKU, one upsert per event.
struct Sales {
    table: &'static str,
    upsert: String,
    latency_us: Option<Arc<Mutex<Histogram<u64>>>>,
}

impl Sales {
    fn new(table: &'static str, latency_us: Option<Arc<Mutex<Histogram<u64>>>>) -> Self {
        Sales {
            table,
            upsert: upsert(table),
            latency_us,
        }
    }
}

fn upsert(table: &str) -> String {
    format!(
        "INSERT INTO {table} (sku, qty, sales) VALUES ($1, $2, 1) \
         ON CONFLICT (sku) DO UPDATE SET qty = {table}.qty + excluded.qty, sales = {table}.sales + 1"
    )
}

fn create(table: &str) -> String {
    format!("CREATE TABLE IF NOT EXISTS {table} (sku TEXT PRIMARY KEY, qty BIGINT NOT NULL, sales BIGINT NOT NULL)")
}

impl Sales {
    /// The upsert's parameters for one sale.
    fn row(&self, record: &RecordedEvent) -> annals::Result<[Param; 2]> {
        #[derive(serde::Deserialize)]
        struct Sold<'a> {
            sku: &'a str,
            qty: i64,
        }
        let sold: Sold = serde_json::from_str(record.payload.get()).map_err(annals::Error::InvalidJson)?;
        if let Some(latency) = &self.latency_us {
            let waited = (chrono::Utc::now() - record.recorded_at)
                .num_microseconds()
                .unwrap_or(0);
            latency
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .saturating_record(waited.max(0) as u64);
        }
        Ok([Param::from(sold.sku), Param::from(sold.qty)])
    }
}

#[async_trait]
impl Projection for Sales {
    async fn setup(&self, tx: &mut Tx) -> annals::Result<()> {
        tx.execute(&create(self.table), &[]).await.map(drop)
    }

    async fn handle(&self, record: &RecordedEvent, tx: &mut Tx) -> annals::Result<()> {
        tx.execute(&self.upsert, &self.row(record)?).await.map(drop)
    }

    async fn handle_batch(&self, records: &[&RecordedEvent], tx: &mut Tx) -> annals::Result<()> {
        let mut rows = records
            .iter()
            .map(|record| self.row(record))
            .collect::<annals::Result<Vec<_>>>()?;
        // In key order: the partitions' transactions then lock the rows they share in
        // the same order, and PostgreSQL has no deadlock to break between them.
        rows.sort_by(|a, b| match (&a[0], &b[0]) {
            (Param::Text(a), Param::Text(b)) => a.cmp(b),
            _ => std::cmp::Ordering::Equal,
        });
        tx.execute_many(&self.upsert, &rows).await.map(drop)
    }
}

fn sale(i: u64) -> (String, NewEvent) {
    let sku = format!("sku-{:05}", i % SKUS);
    let event = NewEvent::json("Sold", &json!({"sku": sku, "qty": i % 5 + 1, "order": i})).expect("payload");
    (sku, event)
}

/// Appends `events` sales, 100 per append, to 1,000 order streams.
async fn load(store: &Store, events: u64) -> CliResult {
    let requests = (0..events.div_ceil(100)).map(|append| {
        let stream = StreamId::new(format!("order-{}", append % 1_000))?;
        Ok((append * 100..(append * 100 + 100).min(events))
            .fold(AppendRequest::new(stream, ExpectedVersion::Any), |request, i| {
                request.event(sale(i).1)
            }))
    });
    append_all(store, requests).await
}

/// Runs `requests`, 64 at a time, each in a task of its own.
pub(super) async fn append_all(store: &Store, requests: impl Iterator<Item = CliResult<AppendRequest>>) -> CliResult {
    let mut pending = tokio::task::JoinSet::new();
    for request in requests {
        if pending.len() == 64 {
            if let Some(done) = pending.join_next().await {
                done.map_err(|e| CliError::Usage(e.to_string()))??;
            }
        }
        let (store, request) = (store.clone(), request?);
        pending.spawn(async move { store.append(request).await });
    }
    while let Some(done) = pending.join_next().await {
        done.map_err(|e| CliError::Usage(e.to_string()))??;
    }
    Ok(())
}

async fn wait_caught_up(store: &Store, group: &str) -> CliResult {
    loop {
        if admin::describe(store, group).await?.lag == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The same upserts, in transactions of `batch`, through the engine's own API with no
/// framework (SQLite's C API; prepared statements on PostgreSQL).
async fn baseline(store: &Store, db: &str, events: u64, batch: usize) -> CliResult<f64> {
    let table = "bench_sales_raw";
    let rows: Vec<(String, i64)> = (0..events).map(|i| (sale(i).0, (i % 5 + 1) as i64)).collect();
    let engine = store.read_models()?.engine();
    let started = match engine {
        Engine::Sqlite => {
            let path = db
                .trim_start_matches("sqlite://")
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned();
            tokio::task::spawn_blocking(move || -> CliResult<Instant> {
                let mut conn = rusqlite::Connection::open(path)?;
                conn.busy_timeout(Duration::from_secs(10))?;
                conn.execute_batch(&create(table))?;
                let started = Instant::now();
                for chunk in rows.chunks(batch) {
                    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    {
                        let mut statement = tx.prepare_cached(&upsert(table))?;
                        for (sku, qty) in chunk {
                            statement.execute(rusqlite::params![sku, qty])?;
                        }
                    }
                    tx.commit()?;
                }
                Ok(started)
            })
            .await
            .map_err(|e| CliError::Usage(e.to_string()))??
        }
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(db).await?;
            sqlx::query(&create(table)).execute(&pool).await?;
            let started = Instant::now();
            let sql = upsert(table);
            for chunk in rows.chunks(batch) {
                let mut tx = pool.begin().await?;
                for (sku, qty) in chunk {
                    sqlx::query(&sql).bind(sku).bind(qty).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            pool.close().await;
            started
        }
        // `read_models` refuses a memory store before this.
        _ => return Err(CliError::Usage("this engine has no SQL read models".into())),
    };
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

pub(crate) async fn project(db: &str, args: ProjectArgs, out: &Output) -> CliResult {
    if args.filter {
        return filtered(db, args, out).await;
    }
    let store = annals::StoreOptions::from_url(db)?.open().await?;
    let backend = store.backend_name();
    store.read_models()?;
    if !out.is_json() {
        eprintln!("loading {} events", args.events);
    }
    load(&store, args.events).await?;

    // Catch-up: one member, every partition, from offset 0.
    let options = GroupOptions {
        batch_size: args.batch,
        heartbeat_interval: Duration::from_millis(200),
        ..GroupOptions::default()
    };
    let rss = RssSampler::start(Duration::from_millis(50));
    let started = Instant::now();
    let sales = Sales::new("bench_sales", None);
    let member = GroupMember::projection(&store, "bench-catch-up", sales, options.clone()).await?;
    wait_caught_up(&store, "bench-catch-up").await?;
    let seconds = started.elapsed().as_secs_f64();
    member.shutdown().await?;
    let memory = rss.stop().await;
    let rate = args.events as f64 / seconds;
    let raw = baseline(&store, db, args.events, args.batch).await?;

    // Latency: a member at the head; appends at a steady rate; append → handled.
    let latency = Arc::new(Mutex::new(histogram()));
    let live = Sales::new("bench_sales_live", Some(latency.clone()));
    let options = GroupOptions {
        start_at: StartAt::Latest,
        ..options
    };
    let member = GroupMember::projection(&store, "bench-live", live, options).await?;
    wait_caught_up(&store, "bench-live").await?;
    latency.lock().unwrap_or_else(|p| p.into_inner()).reset();
    let total = args.rate * args.latency_seconds;
    let began = Instant::now();
    for i in 0..total {
        let due = began + Duration::from_secs_f64(i as f64 / args.rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let (_, event) = sale(i);
        let stream = StreamId::new(format!("order-live-{}", i % 1_000))?;
        store
            .append(AppendRequest::new(stream, ExpectedVersion::Any).event(event))
            .await?;
    }
    wait_caught_up(&store, "bench-live").await?;
    member.shutdown().await?;
    store.close().await;
    let latency = latency.lock().unwrap_or_else(|p| p.into_inner()).clone();

    let report = json!({
        "workload": "project", "backend": backend, "writers": 1, "events_per_append": 100,
        "events": args.events, "seconds": seconds, "events_per_sec": rate,
        "p50_ms": quantile_ms(&latency, 0.5), "p99_ms": quantile_ms(&latency, 0.99),
        "baseline_events_per_sec": raw, "ratio_to_baseline": rate / raw,
        "batch": args.batch, "latency_rate": args.rate, "latency_events": latency.len(),
        "rss_start_mb": memory.start_mb, "rss_peak_mb": memory.peak_mb,
    });
    out.print(&report, |r| {
        format!(
            "{backend}: caught up {} events in {seconds:.1} s = {rate:.0} events/s; raw upserts {raw:.0}/s; ratio {:.2}\n\
             append → handled at {} events/s: p50 {} ms, p99 {} ms; RSS {:.0} MB → peak {:.0} MB",
            args.events,
            rate / raw,
            args.rate,
            r["p50_ms"],
            r["p99_ms"],
            memory.start_mb,
            memory.peak_mb
        )
    });
    Ok(())
}

/// The category of the filtered workload, 1% of the log.
const REFUNDS: &str = "refund";

/// Appends `events` sales, ten per append, to 1,000 order streams and, one append in a
/// hundred, to 100 refund streams; returns how many went to refunds.
async fn load_with_refunds(store: &Store, events: u64) -> CliResult<u64> {
    let appends = events.div_ceil(10);
    let refunds = (0..appends)
        .filter(|append| append % 100 == 99)
        .map(|append| (events - append * 10).min(10))
        .sum();
    let requests = (0..appends).map(|append| {
        let stream = if append % 100 == 99 {
            format!("{REFUNDS}-{}", append / 100 % 100)
        } else {
            format!("order-{}", append % 1_000)
        };
        Ok((append * 10..(append * 10 + 10).min(events)).fold(
            AppendRequest::new(StreamId::new(stream)?, ExpectedVersion::Any),
            |request, i| request.event(sale(i).1),
        ))
    });
    append_all(store, requests).await?;
    Ok(refunds)
}

/// The refund read model, built by a group filtered to refunds; counts the records it
/// is handed.
struct Refunds {
    sales: Sales,
    handed: Arc<std::sync::atomic::AtomicU64>,
}

#[async_trait]
impl Projection for Refunds {
    fn filter(&self) -> annals::group::Filter {
        annals::group::Filter::categories([REFUNDS]).expect("a valid category")
    }

    async fn setup(&self, tx: &mut Tx) -> annals::Result<()> {
        self.sales.setup(tx).await
    }

    async fn handle(&self, record: &RecordedEvent, tx: &mut Tx) -> annals::Result<()> {
        self.handle_batch(&[record], tx).await
    }

    /// One statement per batch: the batch's sales summed per SKU, upserted together,
    /// as a projection that cares about its speed writes them. What the group spends
    /// then is mostly reading the log, which is what this measures.
    async fn handle_batch(&self, records: &[&RecordedEvent], tx: &mut Tx) -> annals::Result<()> {
        self.handed
            .fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let mut totals: std::collections::BTreeMap<String, (i64, i64)> = std::collections::BTreeMap::new();
        for record in records {
            let [sku, qty] = self.sales.row(record)?;
            let (Param::Text(Some(sku)), Param::Int(Some(qty))) = (sku, qty) else {
                continue;
            };
            let total = totals.entry(sku).or_default();
            *total = (total.0 + qty, total.1 + 1);
        }
        if totals.is_empty() {
            return Ok(());
        }
        let table = self.sales.table;
        let mut values = Vec::with_capacity(totals.len());
        let mut params = Vec::with_capacity(totals.len() * 3);
        for (i, (sku, (qty, sales))) in totals.into_iter().enumerate() {
            values.push(format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3));
            params.extend([Param::from(sku), Param::from(qty), Param::from(sales)]);
        }
        let sql = format!(
            "INSERT INTO {table} (sku, qty, sales) VALUES {} ON CONFLICT (sku) DO UPDATE \
             SET qty = {table}.qty + excluded.qty, sales = {table}.sales + excluded.sales",
            values.join(", ")
        );
        tx.execute(&sql, &params).await.map(drop)
    }
}

/// Catches up the refund read model in table `table` with group `group`; returns the
/// seconds it took and the records the handler was handed.
async fn catch_up_refunds(store: &Store, group: &str, table: &'static str, batch: usize) -> CliResult<(f64, u64)> {
    let handed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let refunds = Refunds {
        sales: Sales::new(table, None),
        handed: handed.clone(),
    };
    let options = GroupOptions {
        batch_size: batch,
        heartbeat_interval: Duration::from_millis(200),
        ..GroupOptions::default()
    };
    let started = Instant::now();
    let member = GroupMember::projection(store, group, refunds, options).await?;
    wait_caught_up(store, group).await?;
    let seconds = started.elapsed().as_secs_f64();
    member.shutdown().await?;
    Ok((seconds, handed.load(std::sync::atomic::Ordering::Relaxed)))
}

async fn filtered(db: &str, args: ProjectArgs, out: &Output) -> CliResult {
    let store = annals::StoreOptions::from_url(db)?.open().await?;
    let backend = store.backend_name();
    store.read_models()?;
    if !out.is_json() {
        eprintln!("loading {} events, 1% of them refunds", args.events);
    }
    let refunds = load_with_refunds(&store, args.events).await?;
    // As before filter indexes: the group reads the whole log and skips what is not a
    // refund.
    let (scan_seconds, _) = catch_up_refunds(&store, "bench-refunds-scan", "bench_refunds_scan", args.batch).await?;
    let started = Instant::now();
    store.enable_filter_index(FilterIndex::Category).await?;
    let build_seconds = started.elapsed().as_secs_f64();
    let (seconds, handed) = catch_up_refunds(&store, "bench-refunds", "bench_refunds", args.batch).await?;
    store.close().await;
    let report = json!({
        "workload": "project-filter", "backend": backend, "events": args.events, "refunds": refunds,
        "batch": args.batch, "seconds": seconds, "records_read": handed,
        "read_fraction": handed as f64 / args.events as f64,
        "scan_seconds": scan_seconds, "scan_records_read": args.events,
        "speedup": scan_seconds / seconds, "index_build_seconds": build_seconds,
    });
    out.print(&report, |_| {
        format!(
            "{backend}: a group over refunds (1% of {} events) caught up in {seconds:.2} s through the category \
             index, reading {handed} records ({:.2}% of the log); without the index it read the whole log in \
             {scan_seconds:.2} s: {:.1}× faster. Building the index took {build_seconds:.2} s",
            args.events,
            100.0 * handed as f64 / args.events as f64,
            scan_seconds / seconds
        )
    });
    Ok(())
}
