//! `annals groups list|describe|reset|pause|resume`: consumer groups, their members,
//! committed offsets and lag.

use std::collections::BTreeMap;

use annals::group::admin::{GroupDescription, ResetTo};
use annals::Partition;
use serde_json::json;

use crate::output::{table, CliError, CliResult, Output};
use crate::target::Target;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Groups {
    /// Every group with its generation, live members and total lag.
    List,
    /// One group: members, and per partition the committed offset, lag and owner.
    Describe {
        /// The group.
        group: String,
    },
    /// Moves the group's committed offsets (only while no member runs).
    Reset {
        /// The group.
        group: String,
        /// `earliest`, `latest`, an RFC 3339 time, or `P:O,P:O` explicit offsets.
        #[arg(long)]
        to: String,
    },
    /// Pauses partitions of the group (all unless --partition is given).
    Pause {
        /// The group.
        group: String,
        /// A partition (repeatable).
        #[arg(long)]
        partition: Vec<Partition>,
    },
    /// Resumes paused or stopped partitions (all unless --partition is given).
    Resume {
        /// The group.
        group: String,
        /// A partition (repeatable).
        #[arg(long)]
        partition: Vec<Partition>,
    },
}

/// `earliest`, `latest`, an RFC 3339 timestamp, or `P:O,P:O`.
fn parse_target(text: &str) -> CliResult<ResetTo> {
    match text {
        "earliest" => return Ok(ResetTo::Earliest),
        "latest" => return Ok(ResetTo::Latest),
        _ => {}
    }
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(ResetTo::Timestamp(at.with_timezone(&chrono::Utc)));
    }
    let mut offsets = BTreeMap::new();
    for pair in text.split(',') {
        let parsed = pair
            .split_once(':')
            .and_then(|(p, o)| Some((p.trim().parse().ok()?, o.trim().parse().ok()?)));
        let Some((partition, offset)) = parsed else {
            return Err(CliError::Usage(format!(
                "--to {text:?}: expected earliest, latest, an RFC 3339 time or P:O,P:O"
            )));
        };
        offsets.insert(partition, offset);
    }
    Ok(ResetTo::Offsets(offsets))
}

fn some(partitions: Vec<Partition>) -> Option<Vec<Partition>> {
    (!partitions.is_empty()).then_some(partitions)
}

pub(crate) async fn run(target: Target, command: Groups, out: &Output) -> CliResult {
    let result = groups(&target, command, out).await;
    target.close().await;
    result
}

async fn groups(target: &Target, command: Groups, out: &Output) -> CliResult {
    let described = match command {
        Groups::List => {
            let groups = target.groups().await?;
            out.print(&groups, |groups| {
                table(
                    ["group", "commits", "generation", "members", "lag"],
                    groups.iter().map(|g| {
                        [
                            g.group.clone(),
                            committing(g.commit_mode, g.mirrored_from.as_deref()),
                            g.generation.to_string(),
                            g.members.to_string(),
                            g.lag.to_string(),
                        ]
                    }),
                )
            });
            return Ok(());
        }
        Groups::Describe { group } => target.describe(&group).await?,
        Groups::Reset { group, to } => target.reset(&group, parse_target(&to)?).await?,
        Groups::Pause { group, partition } => target.set_paused(&group, some(partition), true).await?,
        Groups::Resume { group, partition } => target.set_paused(&group, some(partition), false).await?,
    };
    describe(&described, out);
    Ok(())
}

fn describe(described: &GroupDescription, out: &Output) {
    out.print(described, |d| {
        let members = table(
            ["member", "host", "partitions", "last heartbeat"],
            d.members.iter().map(|m| {
                let partitions: Vec<String> = m.partitions.iter().map(ToString::to_string).collect();
                [
                    m.member_id.clone(),
                    m.host.clone(),
                    partitions.join(","),
                    m.heartbeat_at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                ]
            }),
        );
        let partitions = table(
            ["partition", "committed", "high watermark", "lag", "owner", "state"],
            d.partitions.iter().map(|p| {
                let state = match (&p.stopped_reason, p.paused) {
                    (Some(reason), _) => format!("stopped: {reason}"),
                    (None, true) => "paused".to_owned(),
                    (None, false) => "running".to_owned(),
                };
                [
                    p.partition.to_string(),
                    p.committed.to_string(),
                    p.high_watermark.to_string(),
                    p.lag.to_string(),
                    p.owner.clone().unwrap_or_else(|| "-".into()),
                    state,
                ]
            }),
        );
        format!(
            "group {} ({}), generation {}, {} member(s), lag {}, {} dead letter(s)\n{members}\n{partitions}",
            d.group,
            committing(d.commit_mode, d.mirrored_from.as_deref()),
            d.generation,
            d.members.len(),
            d.lag,
            d.dead_letters
        )
    });
}

/// How a group commits, and whence it is copied: "at_least_once, copied from URL".
fn committing(mode: Option<annals::group::CommitMode>, mirrored_from: Option<&str>) -> String {
    let mode = mode.map_or("-", annals::group::CommitMode::as_str);
    match mirrored_from {
        Some(leader) => format!("{mode}, copied from {leader}"),
        None => mode.to_owned(),
    }
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Dlq {
    /// Dead letters, of one group or all.
    List {
        /// Only this group's.
        #[arg(long)]
        group: Option<String>,
    },
    /// Hands a dead letter (and what is parked behind it) to its group again.
    Retry {
        /// The dead letter's id.
        id: i64,
    },
    /// Gives up on a dead letter; what is parked behind it is handled.
    Skip {
        /// The dead letter's id.
        id: i64,
    },
}

pub(crate) async fn dlq(target: Target, command: Dlq, out: &Output) -> CliResult {
    let result = dead_letters(&target, command, out).await;
    target.close().await;
    result
}

async fn dead_letters(target: &Target, command: Dlq, out: &Output) -> CliResult {
    match command {
        Dlq::List { group } => {
            let letters = target.dead_letters(group.as_deref()).await?;
            out.print(&letters, |letters| {
                table(
                    [
                        "id",
                        "group",
                        "partition",
                        "offset",
                        "stream",
                        "type",
                        "status",
                        "attempts",
                        "error",
                    ],
                    letters.iter().map(|l| {
                        [
                            l.id.to_string(),
                            l.group.clone(),
                            l.partition.to_string(),
                            l.offset.to_string(),
                            l.stream.clone(),
                            l.event_type.clone(),
                            l.status.to_string(),
                            l.attempts.to_string(),
                            crate::output::clip(&l.error, 60),
                        ]
                    }),
                )
            });
        }
        Dlq::Retry { id } => {
            let letter = target.dead_letter(id, true).await?;
            out.print(&json!({"retry": letter}), |_| {
                format!(
                    "dead letter {id} ({}@{}) will be retried by group {}",
                    letter.stream, letter.offset, letter.group
                )
            });
        }
        Dlq::Skip { id } => {
            let letter = target.dead_letter(id, false).await?;
            out.print(&json!({"skipped": letter}), |_| {
                format!(
                    "dead letter {id} ({}@{}) skipped in group {}",
                    letter.stream, letter.offset, letter.group
                )
            });
        }
    }
    Ok(())
}
