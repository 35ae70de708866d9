//! `annals timers`: the store's timers (deadlines and scheduled commands): list the
//! pending ones, look one up, schedule one, cancel one.

use annals::aggregate::CommandContext;
use annals::schedule::{Cancel, Scheduler, TimerStatus};
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::output::{table, CliError, CliResult, Output};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Timers {
    /// Lists pending timers due by a time (default: any time), soonest first.
    List {
        /// Only timers due by this time (RFC 3339).
        #[arg(long)]
        until: Option<DateTime<Utc>>,
        /// Most timers per partition.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Where one timer stands: pending, fired or cancelled.
    Status {
        /// The timer's command id.
        command_id: Uuid,
    },
    /// Schedules a timer; a timer group's handler runs it when it is due.
    Schedule {
        /// When it is due (RFC 3339).
        #[arg(long)]
        at: DateTime<Utc>,
        /// What the handler dispatches on.
        #[arg(long)]
        target: String,
        /// Its payload (JSON).
        #[arg(long, default_value = "{}")]
        payload: String,
        /// Its command id (default: a new one); scheduling one again changes nothing.
        #[arg(long)]
        command_id: Option<Uuid>,
    },
    /// Cancels a timer unless it has fired.
    Cancel {
        /// The timer's command id.
        command_id: Uuid,
    },
}

pub(crate) async fn run(db: &str, command: Timers, out: &Output) -> CliResult {
    let store = super::open_existing(db).await?;
    let result = answer(&Scheduler::new(&store), command, out).await;
    store.close().await;
    result
}

async fn answer(scheduler: &Scheduler, command: Timers, out: &Output) -> CliResult {
    match command {
        Timers::List { until, limit } => {
            let due = scheduler.due(until.unwrap_or(DateTime::<Utc>::MAX_UTC), limit).await?;
            let listed: Vec<_> = due
                .iter()
                .map(|(id, at)| json!({"command_id": id, "due_at": at}))
                .collect();
            out.print(&json!({ "timers": listed }), |_| {
                table(
                    ["command id", "due at"],
                    due.iter().map(|(id, at)| [id.to_string(), at.to_rfc3339()]),
                )
            });
        }
        Timers::Status { command_id } => {
            let status = scheduler.status(command_id).await?;
            let (state, at, target) = match &status {
                None => ("unknown", None, None),
                Some(TimerStatus::Pending { due_at, target }) => ("pending", Some(*due_at), Some(target.as_str())),
                Some(TimerStatus::Fired { at }) => ("fired", Some(*at), None),
                Some(TimerStatus::Cancelled { at }) => ("cancelled", Some(*at), None),
            };
            let document = json!({"command_id": command_id, "status": state, "at": at, "target": target});
            out.print(&document, |_| match at {
                Some(at) => format!("{command_id}: {state} ({})", at.to_rfc3339()),
                None => format!("{command_id}: {state}"),
            });
        }
        Timers::Schedule {
            at,
            target,
            payload,
            command_id,
        } => {
            let payload: serde_json::Value =
                serde_json::from_str(&payload).map_err(|error| CliError::from(annals::Error::InvalidJson(error)))?;
            let context = command_id.map_or_else(CommandContext::new, CommandContext::with_command_id);
            let scheduled = scheduler.schedule(at, &context, &target, &payload).await?;
            let document = json!({
                "command_id": scheduled.command_id, "partition": scheduled.position.partition,
                "offset": scheduled.position.offset, "duplicate": scheduled.duplicate,
            });
            out.print(&document, |_| {
                let again = if scheduled.duplicate {
                    " (already scheduled: nothing changed)"
                } else {
                    ""
                };
                format!("timer {} due at {}{again}", scheduled.command_id, at.to_rfc3339())
            });
        }
        Timers::Cancel { command_id } => {
            let cancel = scheduler.cancel(command_id).await?;
            let state = match cancel {
                Cancel::Cancelled => "cancelled",
                Cancel::AlreadyFired => "already_fired",
                Cancel::Unknown => "unknown",
            };
            out.print(&json!({"command_id": command_id, "cancel": state}), |_| {
                format!("{command_id}: {state}")
            });
        }
    }
    Ok(())
}
