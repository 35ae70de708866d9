//! `annals bench http`: appends over HTTP to `annals serve` (in this process, on
//! loopback) against the same appends made in-process on the same store, one event of
//! about 200 bytes each, by the same number of concurrent clients.

use annals::{AppendRequest, ExpectedVersion, NewEvent, StoreOptions, StreamId};
use serde_json::json;

use super::load::{self, Load};
use super::payload;
use crate::output::{CliError, CliResult, Output};

#[derive(Debug, clap::Args)]
pub(crate) struct HttpArgs {
    /// Concurrent clients (and in-process writers).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// How long each phase runs.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Streams the appends spread over.
    #[arg(long, default_value_t = 10_000)]
    streams: u64,
}

fn stream_of(writer: usize, seq: u64, streams: u64) -> String {
    format!(
        "bench-{}",
        (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ writer as u64) % streams
    )
}

pub(crate) async fn http(db: &str, args: HttpArgs, out: &Output) -> CliResult {
    if args.clients == 0 || args.streams == 0 {
        return Err(CliError::Usage("--clients and --streams must be positive".into()));
    }
    let options = StoreOptions::from_url(db)?;
    let backend = options.backend_name();
    let store = options.open().await?;
    let server = annals_server::Spawned::start(store.clone(), annals_server::ServerOptions::default())
        .await
        .map_err(annals::Error::Io)?;
    let base = server.url().to_owned();
    let load = Load {
        writers: args.clients,
        events_per_op: 1,
        seconds: args.seconds,
        events: None,
        quiet: out.is_json(),
    };

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()
        .map_err(|error| CliError::Usage(error.to_string()))?;
    let streams = args.streams;
    let over_http = load::drive(&load, "HTTP", move |writer, seq| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let stream = stream_of(writer, seq, streams);
            let body = format!(
                r#"{{"expected_version":"any","events":[{{"type":"LineAdded","data":{}}}]}}"#,
                payload(seq)
            );
            let response = client
                .post(format!("{base}/v1/streams/{stream}/events"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|error| CliError::Usage(format!("HTTP append failed: {error}")))?;
            if response.status() != reqwest::StatusCode::CREATED {
                return Err(CliError::Usage(format!("HTTP append answered {}", response.status())));
            }
            Ok(())
        }
    })
    .await?;
    server.stop().await.map_err(annals::Error::Io)?;

    let in_process = {
        let store = store.clone();
        load::drive(&load, "in-process", move |writer, seq| {
            let store = store.clone();
            async move {
                let stream = StreamId::new(stream_of(writer, seq, streams))?;
                let request = AppendRequest::new(stream, ExpectedVersion::Any)
                    .event(NewEvent::from_json_text("LineAdded", payload(seq))?);
                store.append(request).await?;
                Ok(())
            }
        })
        .await?
    };
    store.close().await;
    let (rate, raw) = (over_http.events_per_sec(), in_process.events_per_sec());
    let report = json!({
        "workload": "http_append", "backend": backend, "writers": args.clients, "events_per_append": 1,
        "events": over_http.events, "seconds": over_http.elapsed.as_secs_f64(), "events_per_sec": rate,
        "p50_ms": over_http.quantile_ms(0.5), "p99_ms": over_http.quantile_ms(0.99),
        "baseline_events_per_sec": raw, "ratio_to_baseline": rate / raw,
        "baseline_p50_ms": in_process.quantile_ms(0.5), "baseline_p99_ms": in_process.quantile_ms(0.99),
        "baseline": "the same appends in-process on the same store",
    });
    out.print(&report, |r| {
        format!(
            "{backend}, {} clients: HTTP {rate:.0} appends/s (p50 {} ms, p99 {} ms); in-process {raw:.0}/s (p50 {} ms, p99 {} ms); ratio {:.2}",
            args.clients,
            r["p50_ms"],
            r["p99_ms"],
            r["baseline_p50_ms"],
            r["baseline_p99_ms"],
            rate / raw
        )
    });
    Ok(())
}
