//! `shop`: the e-commerce order app on annals.
//!
//! - `shop demo [--db URL]`: a whole scenario, end to end, with the views printed.
//! - `shop serve [--db URL] [--listen ADDR] [--tls-cert PEM --tls-key PEM]`: the HTTP
//!   API and the web page, over HTTPS with a certificate.
//! - `shop load --orders N [--db URL]`: concurrent orders, then commands/s and lag.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use annals::group::admin;
use clap::{Parser, Subcommand};
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::Table;
use shop::{scenario, Shop, ShopError, SAGA_GROUP, VIEWS_GROUP};

#[derive(Parser)]
#[command(name = "shop", version, about = "An e-commerce order app on annals")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a whole scenario: catalogue, customers, orders (some declined, some out of
    /// stock), the saga, shipping; then prints the views.
    Demo {
        /// The store (default: a new SQLite file in a temporary directory).
        #[arg(long)]
        db: Option<String>,
        /// Orders to place.
        #[arg(long, default_value_t = 300)]
        orders: u64,
    },
    /// Serves the shop's HTTP API and web page.
    Serve {
        /// The store.
        #[arg(long, default_value = "sqlite://shop.db")]
        db: String,
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Serve HTTPS with this certificate chain (PEM).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// The private key (PEM) of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
        /// Seconds a placed order waits for its payment before it is cancelled.
        #[arg(long, default_value_t = 900.0, value_parser = seconds)]
        payment_timeout: f64,
    },
    /// Places orders from concurrent customers and reports commands/s and lag.
    Load {
        /// The store.
        #[arg(long, default_value = "sqlite://shop.db")]
        db: String,
        /// Orders to place.
        #[arg(long, default_value_t = 1_000)]
        orders: u64,
        /// Concurrent customers.
        #[arg(long, default_value_t = 8)]
        tasks: u64,
    },
}

/// A number of seconds, positive and finite.
fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 && value < 1e9 => Ok(value),
        _ => Err(format!("{text:?} is not a number of seconds above 0")),
    }
}

fn table<const N: usize>(header: [&str; N], rows: impl IntoIterator<Item = [String; N]>) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header(header);
    for row in rows {
        table.add_row(row);
    }
    table.to_string()
}

fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

async fn demo(db: Option<String>, orders: u64) -> Result<(), ShopError> {
    let started = Instant::now();
    let dir = tempfile::tempdir().map_err(annals::Error::Io)?;
    let url = db.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("shop.db").display()));
    println!("shop demo on {}", annals::StoreOptions::from_url(&url)?.backend_name());
    let shop = Shop::open(&url).await?;
    let workers = shop.start_workers().await?;
    scenario::catalogue(&shop).await?;
    let run = scenario::run_id();
    let ran = scenario::place_orders(&shop, &run, orders, 60, 8, true).await?;
    println!(
        "placed {} orders ({} refused) in {:.1} s; the saga reserves stock and takes payment…",
        ran.placed, ran.refused, ran.seconds
    );
    shop.settle(Duration::from_secs(120)).await?;
    let shipped = scenario::ship_some(&shop, &run, 2).await?;
    shop.settle(Duration::from_secs(60)).await?;
    println!("shipped {shipped} paid orders\n");

    let summaries: Vec<_> = shop
        .views
        .orders(&shop.db, None)
        .await?
        .into_iter()
        .filter(|o| o.order_id.starts_with(&run))
        .collect();
    let mut statuses = std::collections::BTreeMap::<String, (u64, u64)>::new();
    for order in &summaries {
        let entry = statuses.entry(order.status.clone()).or_default();
        entry.0 += 1;
        entry.1 += order.total;
    }
    println!("Orders by status");
    println!(
        "{}",
        table(
            ["status", "orders", "value"],
            statuses.iter().map(|(s, (n, v))| [s.clone(), n.to_string(), money(*v)])
        )
    );
    let mut reasons = std::collections::BTreeMap::<String, u64>::new();
    for order in summaries.iter().filter_map(|o| o.reason.as_ref()) {
        *reasons.entry(order.clone()).or_default() += 1;
    }
    println!("Cancellations");
    println!(
        "{}",
        table(
            ["reason", "orders"],
            reasons.iter().map(|(r, n)| [r.clone(), n.to_string()])
        )
    );
    println!("Sales per product");
    println!(
        "{}",
        table(
            ["product", "units", "revenue"],
            shop.views
                .sales(&shop.db)
                .await?
                .iter()
                .map(|s| [s.sku.clone(), s.units.to_string(), money(s.revenue)])
        )
    );
    println!("Stock levels");
    println!(
        "{}",
        table(
            ["product", "name", "available", "reserved"],
            shop.views.stock(&shop.db).await?.iter().map(|s| [
                s.sku.clone(),
                s.name.clone(),
                s.available.to_string(),
                s.reserved.to_string()
            ])
        )
    );
    if let Some(first) = summaries.first() {
        println!("Order history of {}", first.customer);
        println!(
            "{}",
            table(
                ["order", "status", "total"],
                shop.views
                    .orders(&shop.db, Some(&first.customer))
                    .await?
                    .iter()
                    .map(|o| [o.order_id.clone(), o.status.clone(), money(o.total)])
            )
        );
    }
    let written: u64 = shop.store.record_count().await?;
    let projected: u64 = admin::describe(&shop.store, VIEWS_GROUP)
        .await?
        .partitions
        .iter()
        .map(|p| p.committed.0)
        .sum();
    let saga = admin::describe(&shop.store, SAGA_GROUP).await?;
    workers.shutdown().await?;
    shop.store.close().await;
    println!(
        "{written} events written, {projected} projected into the views, saga lag {}; done in {:.1} s",
        saga.lag,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn load(db: String, orders: u64, tasks: u64) -> Result<(), ShopError> {
    let shop = Shop::open(&db).await?;
    let workers = shop.start_workers().await?;
    scenario::catalogue(&shop).await?;
    let before: u64 = shop.store.record_count().await?;
    let ran = scenario::place_orders(&shop, &scenario::run_id(), orders, 500, tasks, true).await?;
    let lag_at_end =
        admin::describe(&shop.store, SAGA_GROUP).await?.lag + admin::describe(&shop.store, VIEWS_GROUP).await?.lag;
    let settling = Instant::now();
    shop.settle(Duration::from_secs(600)).await?;
    let written = shop.store.record_count().await? - before;
    workers.shutdown().await?;
    shop.store.close().await;
    println!(
        "{} orders ({} refused) by {tasks} customers in {:.1} s: {:.0} commands/s; \
         lag when the last order was placed {lag_at_end} events, caught up {:.2} s later; {written} events written",
        ran.placed,
        ran.refused,
        ran.seconds,
        ran.commands as f64 / ran.seconds,
        settling.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn serve(
    db: String,
    listen: SocketAddr,
    tls: Option<annals_server::TlsFiles>,
    payment_timeout: Duration,
) -> Result<(), ShopError> {
    let shop = Shop::open(&db).await?.with_payment_timeout(payment_timeout);
    // The saga and the timer group are filtered to a few categories: with the index by
    // category they read those, not the whole log.
    shop.store
        .enable_filter_index(annals::group::FilterIndex::Category)
        .await?;
    let workers = shop.start_workers().await?;
    scenario::catalogue(&shop).await?;
    let transport = annals_server::Transport {
        tls,
        ..annals_server::Transport::default()
    };
    // Before the address is announced: a certificate that cannot be used stops here.
    transport.check().await.map_err(annals::Error::Io)?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(annals::Error::Io)?;
    println!(
        "listening on {}://{}",
        transport.scheme(),
        listener.local_addr().map_err(annals::Error::Io)?
    );
    annals_server::serve_router(
        shop::http::router(shop.clone()),
        listener,
        &transport,
        annals_server::shutdown_signal(),
    )
    .await
    .map_err(annals::Error::Io)?;
    workers.shutdown().await?;
    shop.store.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("SHOP_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Demo { db, orders } => demo(db, orders).await,
        Command::Serve {
            db,
            listen,
            tls_cert,
            tls_key,
            payment_timeout,
        } => {
            let tls = tls_cert
                .zip(tls_key)
                .map(|(cert, key)| annals_server::TlsFiles { cert, key });
            serve(db, listen, tls, Duration::from_secs_f64(payment_timeout)).await
        }
        Command::Load { db, orders, tasks } => load(db, orders, tasks).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shop: {error}");
            ExitCode::FAILURE
        }
    }
}
