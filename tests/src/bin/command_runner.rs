//! A process that runs commands on bank accounts through a `Repository` and its
//! aggregate cache, for the integration test that runs two of them at once on the same
//! accounts.
//!
//! `command-runner STORE_URL SEED COMMANDS`: 4 tasks run COMMANDS commands in all on
//! accounts `account-0` … `account-4`, deposits and withdrawals picked from SEED, each
//! with a fresh command id; a withdrawal larger than the balance is refused. Each
//! command's result is printed, and flushed, as one line:
//!
//! `ok COMMAND_ID ACCOUNT deposit|withdraw AMOUNT LAST_VERSION` or
//! `refused COMMAND_ID ACCOUNT withdraw AMOUNT`

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use annals::aggregate::{Aggregate, CommandContext, CommandError, DomainEvent, Repository, RetryPolicy};
use annals::Store;
use serde::{Deserialize, Serialize};

/// A bank account whose balance never goes below zero.
#[derive(Debug, Default)]
struct Account {
    balance: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, DomainEvent)]
#[serde(tag = "type", content = "data")]
enum Moved {
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
}

#[derive(Debug, Clone)]
enum Move {
    Deposit(u64),
    Withdraw(u64),
}

#[derive(Debug, thiserror::Error)]
#[error("insufficient funds")]
struct InsufficientFunds;

impl Aggregate for Account {
    const CATEGORY: &'static str = "account";
    type Command = Move;
    type Event = Moved;
    type Error = InsufficientFunds;

    fn handle(&self, command: Move) -> Result<Vec<Moved>, InsufficientFunds> {
        match command {
            Move::Deposit(amount) => Ok(vec![Moved::Deposited { amount }]),
            Move::Withdraw(amount) if amount > self.balance => Err(InsufficientFunds),
            Move::Withdraw(amount) => Ok(vec![Moved::Withdrawn { amount }]),
        }
    }

    fn apply(&mut self, event: &Moved) {
        match event {
            Moved::Deposited { amount } => self.balance += amount,
            Moved::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: command-runner STORE_URL SEED COMMANDS";
    let url = args.next().ok_or(usage)?;
    let seed: u64 = args.next().ok_or(usage)?.parse()?;
    let commands: u64 = args.next().ok_or(usage)?.parse()?;
    let store = Store::open(&url).await?;
    let accounts = Repository::<Account>::new(store).with_retry(RetryPolicy {
        max_attempts: u32::MAX,
        ..RetryPolicy::default()
    });
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..4u64)
        .map(|task| {
            let (accounts, next) = (accounts.clone(), next.clone());
            tokio::spawn(async move {
                let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (task + 1);
                while next.fetch_add(1, Ordering::Relaxed) < commands {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let account = format!("{}", state % 5);
                    let amount = 1 + (state >> 8) % 60;
                    let (kind, command) = if (state >> 20) % 5 < 3 {
                        ("deposit", Move::Deposit(amount))
                    } else {
                        ("withdraw", Move::Withdraw(amount))
                    };
                    let context = CommandContext::new();
                    let line = match accounts.execute(&account, command, &context).await {
                        Ok(executed) => {
                            let outcome = executed.outcome.ok_or("a command produced no events")?;
                            format!(
                                "ok {} account-{account} {kind} {amount} {}\n",
                                context.command_id, outcome.last_version
                            )
                        }
                        Err(CommandError::Rejected(InsufficientFunds)) => {
                            format!("refused {} account-{account} {kind} {amount}\n", context.command_id)
                        }
                        Err(error) => return Err(error.to_string()),
                    };
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
                    stdout.flush().map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}
