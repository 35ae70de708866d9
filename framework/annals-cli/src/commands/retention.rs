//! `annals retention set|list` and `annals scavenge [--dry-run]`.

use std::time::Duration;

use annals::{Retention, RetentionScope, ScavengeOptions, StreamId, Version};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::output::{table, CliError, CliResult, Output};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Rules {
    /// Set the retention rule of a category or of one stream, replacing its earlier
    /// one. With no limit, removes it. The scavenger applies the rules.
    Set(SetArgs),
    /// List the rules in force.
    List,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("scope").required(true).args(["category", "stream"])))]
pub(crate) struct SetArgs {
    /// Every stream of this category (but those with a rule of their own).
    #[arg(long)]
    category: Option<String>,
    /// This stream.
    #[arg(long)]
    stream: Option<String>,
    /// Records older than this expire: seconds, or a number with s, m, h or d.
    #[arg(long, value_parser = parse_age)]
    max_age: Option<Duration>,
    /// Only the newest N records of each stream are kept.
    #[arg(long)]
    max_count: Option<u64>,
    /// The records below this version expire (with --stream only).
    #[arg(long)]
    truncate_before: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ScavengeArgs {
    /// Report what would be redacted, and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Redact at most this many records per second, to leave the store to appenders.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_records_per_sec: Option<u64>,
}

/// `90`, `90s`, `15m`, `12h`, `30d`.
fn parse_age(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is one of s, m, h, d")),
    };
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration"))?;
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

pub(crate) async fn rules(db: &str, command: Rules, out: &Output) -> CliResult {
    let store = super::open_existing(db).await?;
    let result = match command {
        Rules::Set(args) => set(&store, args, out).await,
        Rules::List => list(&store, out).await,
    };
    store.close().await;
    result
}

async fn set(store: &annals::Store, args: SetArgs, out: &Output) -> CliResult {
    let scope = match (args.category, args.stream) {
        (Some(category), None) => RetentionScope::Category(category),
        (None, Some(stream)) => RetentionScope::Stream(StreamId::new(stream)?),
        _ => return Err(CliError::Usage("give --category or --stream".into())),
    };
    let rule = Retention {
        max_age: args.max_age,
        max_count: args.max_count,
        truncate_before: args.truncate_before.map(Version),
    };
    store.set_retention(&scope, rule).await?;
    out.print(&json!({"scope": scope, "retention": rule}), |_| {
        format!("{scope}: {}", describe(&rule))
    });
    Ok(())
}

async fn list(store: &annals::Store, out: &Output) -> CliResult {
    let rules = store.retention_rules().await?;
    let rows: Vec<_> = (rules.iter())
        .map(|(scope, rule)| json!({"scope": scope, "retention": rule}))
        .collect();
    out.print(&json!({"rules": rows}), |_| {
        table(
            ["scope", "retention"],
            rules.iter().map(|(scope, rule)| [scope.to_string(), describe(rule)]),
        )
    });
    Ok(())
}

fn describe(rule: &Retention) -> String {
    let mut limits = Vec::new();
    if let Some(age) = rule.max_age {
        limits.push(format!("max age {} s", age.as_secs()));
    }
    if let Some(count) = rule.max_count {
        limits.push(format!("max count {count}"));
    }
    if let Some(before) = rule.truncate_before {
        limits.push(format!("truncate before version {before}"));
    }
    if limits.is_empty() {
        "kept for good (rule removed)".into()
    } else {
        limits.join(", ")
    }
}

pub(crate) async fn scavenge(db: &str, args: ScavengeArgs, out: &Output) -> CliResult {
    let store = super::open_existing(db).await?;
    // Drawn on standard error, and only when it is a terminal.
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("valid template"));
    bar.enable_steady_tick(Duration::from_millis(200));
    let options = ScavengeOptions {
        dry_run: args.dry_run,
        max_records_per_sec: args.max_records_per_sec,
        ..ScavengeOptions::default()
    };
    let done = store
        .scavenge(options, &mut |so_far| {
            bar.set_message(format!(
                "{} streams examined, {} truncated, {} records",
                so_far.streams_examined, so_far.streams_truncated, so_far.records_redacted
            ))
        })
        .await;
    bar.finish_and_clear();
    store.close().await;
    let done = done?;
    out.print(&json!({"dry_run": args.dry_run, "scavenged": done}), |_| {
        format!(
            "{}{} streams examined, {} truncated, {} records redacted",
            if args.dry_run {
                "dry run (nothing written): "
            } else {
                ""
            },
            done.streams_examined,
            done.streams_truncated,
            done.records_redacted
        )
    });
    Ok(())
}
