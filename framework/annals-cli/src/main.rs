//! `annals`: create, inspect and benchmark annals event stores from the terminal.
//!
//! Every command works on any store URL (`--db sqlite://…`, `postgres://…`, `memory:`),
//! prints human tables by default and one JSON document with `--json`.

mod commands;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use output::Output;

/// Operate an annals event store.
#[derive(Debug, Parser)]
#[command(name = "annals", version, about, propagate_version = true)]
struct Cli {
    /// The store: sqlite://path, postgres://user:pass@host/db or memory:.
    #[arg(long, global = true, env = "ANNALS_DB", default_value = "sqlite://annals.db")]
    db: String,
    /// Print one JSON document instead of human tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the store (or check an existing one) with a partition count.
    Init(commands::init::Args),
    /// Append one event to a stream.
    Append(commands::append::Args),
    /// Read a stream's events.
    Read(commands::read::Args),
    /// Read a partition from an offset, optionally following new records.
    Tail(commands::tail::Args),
    /// List streams, optionally of one category.
    Streams(commands::streams::Args),
    /// Show partitions, watermarks and record counts.
    Stats,
    /// Measure throughput and latency against the raw engine.
    /// Consumer groups: list, describe, reset offsets, pause and resume.
    #[command(subcommand)]
    Groups(commands::groups::Groups),
    /// Dead letters of consumer groups: list, retry, skip.
    #[command(subcommand)]
    Dlq(commands::groups::Dlq),
    /// Serves the HTTP API v1, /metrics and the web console.
    Serve(commands::serve::Args),
    /// Compacts the snapshot log: the newest snapshot per stream stays.
    Compact(commands::compact::Args),
    #[command(subcommand)]
    Bench(commands::bench::Bench),
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("ANNALS_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let out = Output::new(cli.json);
    let result = match cli.command {
        Command::Init(args) => commands::init::run(&cli.db, args, &out).await,
        Command::Append(args) => commands::append::run(&cli.db, args, &out).await,
        Command::Read(args) => commands::read::run(&cli.db, args, &out).await,
        Command::Tail(args) => commands::tail::run(&cli.db, args, &out).await,
        Command::Streams(args) => commands::streams::run(&cli.db, args, &out).await,
        Command::Stats => commands::stats::run(&cli.db, &out).await,
        Command::Groups(command) => commands::groups::run(&cli.db, command, &out).await,
        Command::Dlq(command) => commands::groups::dlq(&cli.db, command, &out).await,
        Command::Serve(args) => commands::serve::run(&cli.db, args).await,
        Command::Compact(args) => commands::compact::run(&cli.db, args, &out).await,
        Command::Bench(bench) => commands::bench::run(&cli.db, bench, &out).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            out.error(&error);
            ExitCode::FAILURE
        }
    }
}
