//! Aggregates: the consistency boundary of a domain, rebuilt from its stream.
//!
//! An [`Aggregate`] decides (`handle`: command → events, or a domain error) and
//! evolves (`apply`: event → new state). Its events are one enum that implements
//! [`DomainEvent`]: serde's adjacently tagged form gives every variant a stable type
//! name with no code per event. A [`Repository`] loads an aggregate from the store,
//! runs a command, and appends the events with optimistic concurrency, retrying on
//! conflict; a command that writes events does so at most once per command id.
//! [`Upcasters`] turn events written with an older schema version into the current
//! shape as they are read.
//!
//! ```
//! use annals::aggregate::{Aggregate, CommandContext, DomainEvent, Repository};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default)]
//! struct Account { balance: i64 }
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
//! #[serde(tag = "type", content = "data")]
//! enum AccountEvent { Deposited { amount: i64 }, Withdrawn { amount: i64 } }
//!
//! #[derive(Clone)]
//! enum AccountCommand { Deposit(i64), Withdraw(i64) }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("insufficient funds")]
//! struct InsufficientFunds;
//!
//! impl Aggregate for Account {
//!     const CATEGORY: &'static str = "account";
//!     type Command = AccountCommand;
//!     type Event = AccountEvent;
//!     type Error = InsufficientFunds;
//!     fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, InsufficientFunds> {
//!         match command {
//!             AccountCommand::Deposit(amount) => Ok(vec![AccountEvent::Deposited { amount }]),
//!             AccountCommand::Withdraw(amount) if amount > self.balance => Err(InsufficientFunds),
//!             AccountCommand::Withdraw(amount) => Ok(vec![AccountEvent::Withdrawn { amount }]),
//!         }
//!     }
//!     fn apply(&mut self, event: &AccountEvent) {
//!         match event {
//!             AccountEvent::Deposited { amount } => self.balance += amount,
//!             AccountEvent::Withdrawn { amount } => self.balance -= amount,
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = annals::Store::open("memory:").await?;
//! let accounts = Repository::<Account>::new(store);
//! accounts.execute("alice", AccountCommand::Deposit(100), &CommandContext::new()).await?;
//! assert_eq!(accounts.load("alice").await?.state.balance, 100);
//! # Ok(()) }
//! ```

mod cache;
mod context;
pub(crate) mod event;
mod repository;
mod upcast;

pub use annals_derive::DomainEvent;
pub use cache::CacheOptions;
pub use context::CommandContext;
pub use event::{decode_event, DomainEvent, SCHEMA_VERSION_KEY};
pub use repository::{CommandError, Executed, Loaded, Repository, RetryPolicy};
pub use upcast::Upcasters;

/// A consistency boundary: decides on commands from its current state, and evolves by
/// applying its own events. Pure: no I/O, so it is tested without a store.
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The category of its streams: aggregate `id` lives in stream `CATEGORY-id`.
    const CATEGORY: &'static str;
    /// What it can be asked to do.
    type Command: Send;
    /// What it records.
    type Event: DomainEvent;
    /// Why it refuses a command.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides: the events a command produces in the current state, or a refusal.
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Evolves: the state after one event. Never fails; events are facts.
    fn apply(&mut self, event: &Self::Event);
}
