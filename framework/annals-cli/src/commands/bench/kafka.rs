//! `annals bench kafka`: the bridge beside a raw Kafka client on the same broker, in
//! the same run.
//!
//! - Sink: the store's records shipped to a topic, beside the same messages produced
//!   by a bare idempotent producer (same keys, payloads and partitions).
//! - Source: a topic's messages appended to the store, beside a bare consumer reading
//!   the same topic.
//! - Latency at a steady rate: an annals append to the moment a Kafka consumer holds it
//!   (through the sink), beside a produce to the moment the same consumer holds it.

use std::time::{Duration, Instant};

use annals::{partition_for, AppendRequest, ExpectedVersion, NewEvent, Offset, Partition, Store, StreamId};
use annals_kafka::{ensure_topic, Sink, SinkOptions, Source, SourceOptions};
use futures::StreamExt;
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;

use super::load::{histogram, quantile_ms};
use crate::output::{CliError, CliResult, Output};

#[derive(Debug, clap::Args)]
pub(crate) struct KafkaArgs {
    /// The brokers: HOST:PORT[,HOST:PORT…].
    #[arg(long, env = "ANNALS_KAFKA_BROKERS")]
    brokers: String,
    /// Records shipped by the sink and messages appended by the source.
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// Append (and produce) rate of the latency phases, per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Length of each latency phase, in seconds.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
}

/// Streams the records spread over.
const STREAMS: u64 = 1_000;

fn key(n: u64) -> String {
    format!("order-{}", n % STREAMS)
}

fn kafka(error: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("kafka: {error}"))
}

pub(crate) async fn kafka_bench(db: &str, args: KafkaArgs, out: &Output) -> CliResult {
    if args.events == 0 || args.rate == 0 || args.latency_seconds == 0 {
        return Err(CliError::Usage(
            "--events, --rate and --latency-seconds must be positive".into(),
        ));
    }
    let store = annals::StoreOptions::from_url(db)?.open().await?;
    let backend = store.backend_name();
    let partitions = store.partition_count();
    let run = chrono::Utc::now().timestamp_millis();
    let topic = |what: &str| format!("annals-bench-{run}-{what}");
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &args.brokers);
    for what in ["raw", "sink", "latency", "raw-latency"] {
        ensure_topic(&config, &topic(what), partitions, 1)
            .await
            .map_err(kafka)?;
    }

    // The store's records (not timed), then the same messages by a bare producer.
    let requests = (0..args.events).map(|n| {
        let event = NewEvent::from_json_text("Sold", super::payload(n))?;
        Ok(AppendRequest::new(StreamId::new(key(n))?, ExpectedVersion::Any).event(event))
    });
    super::project::append_all(&store, requests).await?;
    // The bare producer: idempotent with the sink's linger and delivery timeout.
    let producer: FutureProducer = {
        let mut config = config.clone();
        config
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "120000");
        config.create().map_err(kafka)?
    };
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(args.events as usize);
    for n in 0..args.events {
        let (key, payload) = (key(n), super::payload(n));
        let partition = partition_for(&StreamId::new(key.as_str())?, partitions).0 as i32;
        deliveries.push(send(&producer, &topic("raw"), partition, &key, &payload).await?);
    }
    for delivery in deliveries {
        delivery.await.map_err(kafka)?.map_err(|(error, _)| kafka(error))?;
    }
    let raw_produce = args.events as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let sink = Sink::start(&store, sink_options(&args.brokers, topic("sink")))
        .await
        .map_err(CliError::Kafka)?;
    wait_for_messages(&config, &topic("sink"), partitions, args.events).await?;
    let sink_rate = args.events as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let consumed = consume_all(&config, &topic("raw"), partitions, args.events).await?;
    let raw_consume = consumed as f64 / started.elapsed().as_secs_f64();

    let before = total(&store).await?;
    let started = Instant::now();
    let source = Source::start(&store, SourceOptions::new(&args.brokers, topic("raw")))
        .await
        .map_err(CliError::Kafka)?;
    while total(&store).await? < before + args.events {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let source_rate = args.events as f64 / started.elapsed().as_secs_f64();
    source.shutdown().await.map_err(CliError::Kafka)?;
    sink.shutdown().await.map_err(CliError::Kafka)?;

    // Latency: the sink again (on a topic of its own), an append every 1/rate s.
    let sink = Sink::start(&store, sink_options(&args.brokers, topic("latency")))
        .await
        .map_err(CliError::Kafka)?;
    let count = args.rate * args.latency_seconds;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let watching = tokio::spawn(latencies(config.clone(), topic("latency"), count));
    let mut tick = tokio::time::interval(interval);
    for n in 0..count {
        tick.tick().await;
        let event = NewEvent::json("Sent", &json!({ "sent_us": now_us(), "n": n }))?;
        store
            .append(AppendRequest::new(StreamId::new(key(n))?, ExpectedVersion::Any).event(event))
            .await?;
    }
    let sink_latency = watching.await.map_err(kafka)??;
    sink.shutdown().await.map_err(CliError::Kafka)?;

    // The same rate of sends, none waiting for the one before (as the appends above do
    // not wait for the sink).
    let watching = tokio::spawn(latencies(config.clone(), topic("raw-latency"), count));
    let mut tick = tokio::time::interval(interval);
    let mut deliveries = Vec::with_capacity(count as usize);
    for n in 0..count {
        tick.tick().await;
        let (key, payload) = (key(n), json!({ "sent_us": now_us(), "n": n }).to_string());
        let partition = partition_for(&StreamId::new(key.as_str())?, partitions).0 as i32;
        deliveries.push(send(&producer, &topic("raw-latency"), partition, &key, &payload).await?);
    }
    for delivery in deliveries {
        delivery.await.map_err(kafka)?.map_err(|(error, _)| kafka(error))?;
    }
    let raw_latency = watching.await.map_err(kafka)??;
    store.close().await;

    let (sink_p50, sink_p99) = (quantile_ms(&sink_latency, 0.5), quantile_ms(&sink_latency, 0.99));
    let (raw_p50, raw_p99) = (quantile_ms(&raw_latency, 0.5), quantile_ms(&raw_latency, 0.99));
    let report = json!({
        "workload": "kafka", "backend": backend, "events": args.events, "partitions": partitions,
        "raw_produce_per_sec": raw_produce, "sink_per_sec": sink_rate,
        "sink_ratio_to_raw": sink_rate / raw_produce,
        "raw_consume_per_sec": raw_consume, "source_per_sec": source_rate,
        "source_ratio_to_raw": source_rate / raw_consume,
        "latency_rate": args.rate, "latency_events": count,
        "sink_latency_p50_ms": sink_p50, "sink_latency_p99_ms": sink_p99,
        "raw_latency_p50_ms": raw_p50, "raw_latency_p99_ms": raw_p99,
    });
    out.print(&report, |_| {
        format!(
            "{backend}: sink {sink_rate:.0}/s beside a bare producer's {raw_produce:.0}/s ({:.2}); \
             source {source_rate:.0}/s beside a bare consumer's {raw_consume:.0}/s ({:.2}); \
             append → Kafka consumer at {}/s: p50 {sink_p50:.2} ms, p99 {sink_p99:.2} ms \
             (produce → consumer: p50 {raw_p50:.2} ms, p99 {raw_p99:.2} ms)",
            sink_rate / raw_produce,
            source_rate / raw_consume,
            args.rate
        )
    });
    Ok(())
}

/// The sink's settings, but for a delivery timeout long enough for a whole backlog in
/// flight at once (a failed delivery would only make the sink resend, and the broker
/// under test, tansu 0.6, stops serving idempotent producers whose epoch was bumped).
fn sink_options(brokers: &str, topic: String) -> SinkOptions {
    let mut options = SinkOptions::new(brokers, topic);
    options.delivery_timeout = Duration::from_secs(120);
    options
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    payload: &str,
) -> CliResult<rdkafka::producer::DeliveryFuture> {
    let mut record = FutureRecord::to(topic).partition(partition).key(key).payload(payload);
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((error, _)) => return Err(kafka(error)),
        }
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// How many records the store holds.
async fn total(store: &Store) -> CliResult<u64> {
    Ok(store.high_watermarks().await?.iter().map(|Offset(end)| end).sum())
}

/// Waits until `topic` holds `count` messages.
async fn wait_for_messages(config: &ClientConfig, topic: &str, partitions: u32, count: u64) -> CliResult {
    let reader: BaseConsumer = config.create().map_err(kafka)?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || loop {
        let mut held = 0;
        for partition in Partition::all(partitions) {
            let (_, high) = reader
                .fetch_watermarks(&topic, partition.0 as i32, Duration::from_secs(10))
                .map_err(kafka)?;
            held += high.max(0) as u64;
        }
        if held >= count {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    })
    .await
    .map_err(kafka)?
}

/// A consumer of every partition of `topic` from `start`.
fn assigned(config: &ClientConfig, topic: &str, partitions: u32, start: rdkafka::Offset) -> CliResult<StreamConsumer> {
    let consumer: StreamConsumer = config
        .clone()
        .set("group.id", "annals-bench")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(kafka)?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in Partition::all(partitions) {
        assignment
            .add_partition_offset(topic, partition.0 as i32, start)
            .map_err(kafka)?;
    }
    consumer.assign(&assignment).map_err(kafka)?;
    Ok(consumer)
}

/// Reads `count` messages of `topic` from the start; returns how many it read.
async fn consume_all(config: &ClientConfig, topic: &str, partitions: u32, count: u64) -> CliResult<u64> {
    let consumer = assigned(config, topic, partitions, rdkafka::Offset::Beginning)?;
    let mut messages = consumer.stream();
    let mut read = 0;
    while read < count {
        match messages.next().await {
            Some(Ok(_)) => read += 1,
            Some(Err(error)) => tracing::warn!(%error, "consuming"),
            None => break,
        }
    }
    Ok(read)
}

/// The latencies of the first `count` messages of `topic`: now minus their `sent_us`.
async fn latencies(config: ClientConfig, topic: String, count: u64) -> CliResult<Histogram<u64>> {
    let partitions = annals_kafka::topic_partitions(&config, &topic).await.map_err(kafka)? as u32;
    // The topic is new and empty: from its start, no message slips by while the
    // assignment settles.
    let consumer = assigned(&config, &topic, partitions, rdkafka::Offset::Beginning)?;
    let mut latency_us = histogram();
    let mut messages = consumer.stream();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(count / 100 + 120);
    while latency_us.len() < count {
        let message = tokio::select! {
            message = messages.next() => message,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        let Some(Ok(message)) = message else { continue };
        let sent = message
            .payload()
            .and_then(|value| serde_json::from_slice::<serde_json::Value>(value).ok())
            .and_then(|value| value["sent_us"].as_i64());
        if let Some(sent) = sent {
            latency_us.saturating_record((now_us() - sent).max(0) as u64);
        }
    }
    Ok(latency_us)
}
