//! `annals`: create, inspect and benchmark annals event stores from the terminal.
//!
//! Every command works on any store URL (`--db sqlite://…`, `postgres://…`, `memory:`),
//! prints human tables by default and one JSON document with `--json`.

mod commands;
mod output;
mod target;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use output::Output;

/// Operate an annals event store.
#[derive(Debug, Parser)]
#[command(name = "annals", version, about, propagate_version = true)]
struct Cli {
    /// The store: sqlite://path, postgres://user:pass@host/db or memory:.
    #[arg(
        long,
        global = true,
        env = "ANNALS_DB",
        hide_env_values = true,
        default_value = "sqlite://annals.db"
    )]
    db: String,
    /// Keep subjects' keys (personal data) in this annals database instead of --db's
    /// own; every process that opens the store must name the same one.
    #[arg(long, global = true, env = "ANNALS_KEYS", hide_env_values = true)]
    keys: Option<String>,
    /// Print one JSON document instead of human tables.
    #[arg(long, global = true)]
    json: bool,
    /// Work through an `annals serve` at this URL instead of opening --db.
    #[arg(long, global = true, env = "ANNALS_SERVER")]
    server: Option<String>,
    /// The server's bearer token (with --server).
    #[arg(long, global = true, env = "ANNALS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// With an https:// --server whose certificate comes from a private authority: that
    /// authority's certificate (PEM), the only one trusted.
    #[arg(long, global = true, env = "ANNALS_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
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
    /// Consumer groups: list, describe, reset offsets, pause and resume.
    #[command(subcommand)]
    Groups(commands::groups::Groups),
    /// Dead letters of consumer groups: list, retry, skip.
    #[command(subcommand)]
    Dlq(commands::groups::Dlq),
    /// Serves the HTTP API v1, /metrics and the web console.
    Serve(commands::serve::Args),
    /// Follows a leader: copies its partitions record by record and serves reads.
    Follow(commands::follow::Args),
    /// Makes a follower the leader, with the next leader epoch.
    Promote,
    /// Compacts the snapshot log: the newest snapshot per stream stays.
    Compact(commands::compact::Args),
    /// Filter indexes, which groups filtered by category or event type read through.
    #[command(subcommand)]
    Indexes(commands::indexes::Indexes),
    /// Retention rules per category or stream, which `annals scavenge` applies.
    #[command(subcommand)]
    Retention(commands::retention::Rules),
    /// Redacts the records that retention rules expire (they keep their offsets and
    /// versions), once.
    Scavenge(commands::retention::ScavengeArgs),
    /// Erases a subject's personal data: deletes its key, so that every field sealed
    /// under it reads as erased, everywhere the log was copied.
    Erase(commands::erase::Args),
    /// Timers (deadlines and scheduled commands): list, status, schedule, cancel.
    #[command(subcommand)]
    Timers(commands::timers::Timers),
    /// The Kafka bridge: ship the store's partitions to a topic, or append a topic's
    /// messages, each exactly once.
    #[command(subcommand)]
    Kafka(commands::kafka::Kafka),
    /// Measure throughput and latency against the raw engine.
    #[command(subcommand)]
    Bench(commands::bench::Bench),
}

async fn run(cli: Cli, out: &Output) -> output::CliResult {
    commands::use_keys(cli.keys.clone());
    let direct = |command: &str| match &cli.server {
        Some(_) => Err(output::CliError::Usage(format!(
            "`annals {command}` works on --db only, not --server"
        ))),
        None => Ok(()),
    };
    let target = || {
        target::Target::open(
            &cli.db,
            cli.server.as_deref(),
            cli.token.clone(),
            cli.ca_file.as_deref(),
        )
    };
    match cli.command {
        Command::Init(args) => {
            direct("init")?;
            commands::init::run(&cli.db, args, out).await
        }
        Command::Serve(args) => {
            direct("serve")?;
            commands::serve::run(&cli.db, args).await
        }
        Command::Follow(args) => {
            direct("follow")?;
            commands::follow::run(&cli.db, args).await
        }
        Command::Promote => {
            direct("promote")?;
            commands::follow::promote(&cli.db, out).await
        }
        Command::Compact(args) => {
            direct("compact")?;
            commands::compact::run(&cli.db, args, out).await
        }
        Command::Indexes(command) => {
            direct("indexes")?;
            commands::indexes::run(&cli.db, command, out).await
        }
        Command::Retention(command) => {
            direct("retention")?;
            commands::retention::rules(&cli.db, command, out).await
        }
        Command::Scavenge(args) => {
            direct("scavenge")?;
            commands::retention::scavenge(&cli.db, args, out).await
        }
        Command::Timers(command) => {
            direct("timers")?;
            commands::timers::run(&cli.db, command, out).await
        }
        Command::Kafka(command) => {
            direct("kafka")?;
            commands::kafka::run(&cli.db, command).await
        }
        Command::Bench(bench) => {
            direct("bench")?;
            commands::bench::run(&cli.db, bench, out).await
        }
        Command::Append(args) => commands::append::run(target().await?, args, out).await,
        Command::Read(args) => commands::read::run(target().await?, args, out).await,
        Command::Tail(args) => commands::tail::run(target().await?, args, out).await,
        Command::Streams(args) => commands::streams::run(target().await?, args, out).await,
        Command::Erase(args) => commands::erase::run(target().await?, args, out).await,
        Command::Stats => commands::stats::run(target().await?, out).await,
        Command::Groups(command) => commands::groups::run(target().await?, command, out).await,
        Command::Dlq(command) => commands::groups::dlq(target().await?, command, out).await,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("ANNALS_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let out = Output::new(cli.json);
    let result = run(cli, &out).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            out.error(&error);
            ExitCode::from(error.exit_code())
        }
    }
}
