//! Aggregates end to end: given/when/then on a bank account, the events' wire format
//! (snapshotted), and the repository (optimistic concurrency with retries, command ids,
//! refusals, metadata) on every engine.

use annals::aggregate::{Aggregate, CommandContext, CommandError, DomainEvent, Repository, RetryPolicy};
use annals::{Error, Store, Version};
use annals_testkit::given::AggregateTest;
use annals_testkit::TestStore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// ANCHOR: aggregate
#[derive(Debug, Default)]
struct Account {
    opened: bool,
    balance: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[serde(tag = "type", content = "data")]
enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: i64 },
    Withdrawn { amount: i64 },
    Closed,
}

#[derive(Debug, Clone)]
enum AccountCommand {
    Open { owner: String },
    Deposit { amount: i64 },
    Withdraw { amount: i64 },
    Close,
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum AccountError {
    #[error("the account is not open")]
    NotOpen,
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    InsufficientFunds { balance: i64, asked: i64 },
    #[error("amounts must be positive")]
    NotPositive,
}

impl Aggregate for Account {
    const CATEGORY: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        use AccountCommand::*;
        match command {
            Open { .. } if self.opened => Ok(vec![]),
            Open { owner } => Ok(vec![AccountEvent::Opened { owner }]),
            _ if !self.opened => Err(AccountError::NotOpen),
            Deposit { amount } | Withdraw { amount } if amount <= 0 => Err(AccountError::NotPositive),
            Deposit { amount } => Ok(vec![AccountEvent::Deposited { amount }]),
            Withdraw { amount } if amount > self.balance => Err(AccountError::InsufficientFunds {
                balance: self.balance,
                asked: amount,
            }),
            Withdraw { amount } => Ok(vec![AccountEvent::Withdrawn { amount }]),
            Close => Ok(vec![AccountEvent::Closed]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { .. } => self.opened = true,
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
            AccountEvent::Closed => self.opened = false,
        }
    }
}

// ANCHOR_END: aggregate

fn opened() -> AccountEvent {
    AccountEvent::Opened { owner: "alice".into() }
}

// ANCHOR: given_when_then
#[test]
fn given_when_then() {
    AggregateTest::<Account>::given_nothing()
        .when(AccountCommand::Open { owner: "alice".into() })
        .then_events([opened()]);
    AggregateTest::<Account>::given([opened(), AccountEvent::Deposited { amount: 50 }])
        .when(AccountCommand::Withdraw { amount: 20 })
        .then_events([AccountEvent::Withdrawn { amount: 20 }]);
    AggregateTest::<Account>::given([opened(), AccountEvent::Deposited { amount: 50 }])
        .when(AccountCommand::Withdraw { amount: 80 })
        .then_error(|e| *e == AccountError::InsufficientFunds { balance: 50, asked: 80 });
    AggregateTest::<Account>::given_nothing()
        .when(AccountCommand::Deposit { amount: 5 })
        .then_error(|e| *e == AccountError::NotOpen);
    AggregateTest::<Account>::given([opened()])
        .when(AccountCommand::Deposit { amount: 0 })
        .then_error(|e| *e == AccountError::NotPositive);
    AggregateTest::<Account>::given([opened()])
        .when(AccountCommand::Open { owner: "bob".into() })
        .then_events([]);
    let events = AggregateTest::<Account>::given([opened()])
        .when(AccountCommand::Close)
        .events();
    insta::assert_json_snapshot!("closing_events", events);
}
// ANCHOR_END: given_when_then

/// The stored form of each event: type name, payload, metadata. Changing it breaks
/// every stored stream, so it is pinned here.
#[tokio::test]
async fn wire_format_is_stable() {
    let store = Store::open("memory:").await.expect("store");
    let accounts = Repository::<Account>::new(store.clone());
    let context = CommandContext::with_command_id(Uuid::from_u128(1)).with("user", "teller-7");
    accounts
        .execute("w", AccountCommand::Open { owner: "alice".into() }, &context)
        .await
        .expect("open");
    let context = CommandContext::with_command_id(Uuid::from_u128(2));
    accounts
        .execute("w", AccountCommand::Deposit { amount: 25 }, &context)
        .await
        .expect("deposit");
    accounts
        .execute(
            "w",
            AccountCommand::Close,
            &CommandContext::with_command_id(Uuid::from_u128(3)),
        )
        .await
        .expect("close");
    let records = store
        .read_stream(&Repository::<Account>::stream_id("w").expect("id"), 1, 10)
        .await
        .expect("read");
    let stored: Vec<_> = records
        .iter()
        .map(|r| serde_json::json!({"type": r.event_type, "data": r.payload, "metadata": r.metadata}))
        .collect();
    insta::assert_json_snapshot!("account_events_as_stored", stored);
    let loaded = accounts.load("w").await.expect("load back, unit variant included");
    assert_eq!(
        (loaded.state.opened, loaded.state.balance, loaded.version),
        (false, 25, Version(3))
    );
}

async fn repository_on(t: &TestStore) {
    let store = t.open().await;
    let accounts = Repository::<Account>::new(store.clone());
    let stream = Repository::<Account>::stream_id("acc-1").expect("id");

    // ANCHOR: execute
    let open = CommandContext::new().with("user", "teller-7");
    let executed = accounts
        .execute("acc-1", AccountCommand::Open { owner: "alice".into() }, &open)
        .await
        .expect("open");
    assert_eq!(
        (executed.attempts, executed.outcome.map(|o| o.last_version)),
        (1, Some(Version(1)))
    );
    // ANCHOR_END: execute

    // A retry of the same command id returns the original outcome: the handler, run on
    // the account as it now is (open), produces nothing, and the repository then finds
    // the command id applied before.
    let again = accounts
        .execute("acc-1", AccountCommand::Open { owner: "alice".into() }, &open)
        .await
        .expect("retry");
    assert_eq!(again.attempts, 0);
    assert_eq!(
        again.outcome.map(|o| (o.duplicate, o.first_offset)),
        executed.outcome.map(|o| (true, o.first_offset))
    );
    // The same command id on another aggregate is refused.
    let elsewhere = accounts
        .execute("acc-2", AccountCommand::Open { owner: "bob".into() }, &open)
        .await;
    assert!(
        matches!(elsewhere, Err(CommandError::Store(Error::CommandIdConflict { .. }))),
        "{elsewhere:?}"
    );

    // A refusal writes nothing.
    let refused = accounts
        .execute("acc-1", AccountCommand::Withdraw { amount: 1 }, &CommandContext::new())
        .await;
    assert!(matches!(
        refused,
        Err(CommandError::Rejected(AccountError::InsufficientFunds { .. }))
    ));
    assert_eq!(store.stream_version(&stream).await.expect("version"), 1);

    // Eight tasks deposit at once: every deposit lands once, conflicts are retried.
    let tasks: Vec<_> = (1..=8)
        .map(|amount| {
            let accounts = accounts.clone().with_retry(RetryPolicy {
                max_attempts: 50,
                ..RetryPolicy::default()
            });
            tokio::spawn(async move {
                accounts
                    .execute("acc-1", AccountCommand::Deposit { amount }, &CommandContext::new())
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("deposit");
    }
    let loaded = accounts.load("acc-1").await.expect("load");
    assert_eq!((loaded.state.balance, loaded.version), (36, Version(9)));

    // Context flows into metadata.
    let records = store.read_stream(&stream, 1, 1).await.expect("read");
    let metadata = &records[0].metadata;
    assert_eq!(metadata.command_id, Some(open.command_id));
    assert_eq!(metadata.correlation_id, Some(open.correlation_id));
    assert_eq!(metadata.extra.get("user"), Some(&serde_json::json!("teller-7")));
    assert_eq!(metadata.extra.get("schema_version"), Some(&serde_json::json!(1)));

    // A follow-up command derived from an event has a stable id: a redelivered event
    // issues the same command, which is applied once.
    let follow = CommandContext::caused_by(&records[0], "welcome-bonus");
    assert_eq!(follow, CommandContext::caused_by(&records[0], "welcome-bonus"));
    assert_eq!(
        (follow.causation_id, follow.correlation_id),
        (Some(records[0].event_id), open.correlation_id)
    );
    accounts
        .execute("acc-1", AccountCommand::Deposit { amount: 10 }, &follow)
        .await
        .expect("bonus");
    let redelivered = accounts
        .execute("acc-1", AccountCommand::Deposit { amount: 10 }, &follow)
        .await
        .expect("again");
    assert!(redelivered.outcome.is_some_and(|o| o.duplicate));
    assert_eq!(accounts.load("acc-1").await.expect("load").state.balance, 46);

    // With no retries allowed, a lost race is reported as a conflict.
    let strict = accounts.clone().with_retry(RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    });
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let strict = strict.clone();
            tokio::spawn(async move {
                strict
                    .execute("acc-1", AccountCommand::Deposit { amount: 1 }, &CommandContext::new())
                    .await
            })
        })
        .collect();
    let mut conflicts = 0;
    for racer in racers {
        match racer.await.expect("racer") {
            Ok(_) => {}
            Err(CommandError::Conflict { attempts: 1, .. }) => conflicts += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    let balance = accounts.load("acc-1").await.expect("load").state.balance;
    assert_eq!(
        balance,
        46 + 8 - conflicts,
        "every deposit either landed once or was reported as a conflict"
    );
}

/// The cache is never trusted: two repositories with caches of their own (as two
/// processes would have) run commands on one account. A command on a kept state that
/// another writer moved on appends after reading only what it missed; a refusal is
/// given only on the latest state; a duplicate command id is found by the store;
/// every command is applied once and the kept states end equal to the log's fold.
async fn the_cache_keeps_up_with_other_writers(t: &TestStore) {
    let store = t.open().await;
    let mine = Repository::<Account>::new(store.clone());
    let theirs = Repository::<Account>::new(store.clone());
    let ctx = CommandContext::new;
    let stream = Repository::<Account>::stream_id("shared").expect("id");
    let version = || async { store.stream_version(&stream).await.expect("version") };
    mine.execute("shared", AccountCommand::Open { owner: "alice".into() }, &ctx())
        .await
        .expect("open");
    mine.execute("shared", AccountCommand::Deposit { amount: 10 }, &ctx())
        .await
        .expect("deposit");
    // `mine` keeps the account at version 2, balance 10; `theirs` moves it on.
    theirs
        .execute("shared", AccountCommand::Deposit { amount: 5 }, &ctx())
        .await
        .expect("their deposit");
    assert_eq!(version().await, 3);

    // A withdrawal the kept state would refuse goes through on the latest one.
    let withdrawn = mine
        .execute("shared", AccountCommand::Withdraw { amount: 15 }, &ctx())
        .await
        .expect("a refusal from a state another writer had moved on");
    assert_eq!(withdrawn.outcome.map(|o| o.last_version), Some(Version(4)));

    // A command on a kept state that is behind conflicts, reads what it missed, and
    // appends after it; finding a kept state behind is not a lost race, so it costs
    // no attempt.
    theirs
        .execute("shared", AccountCommand::Deposit { amount: 7 }, &ctx())
        .await
        .expect("their deposit");
    let deposit = ctx();
    let deposited = mine
        .execute("shared", AccountCommand::Deposit { amount: 1 }, &deposit)
        .await
        .expect("deposit after a conflict");
    assert_eq!(
        (deposited.attempts, deposited.outcome.map(|o| o.last_version)),
        (1, Some(Version(6)))
    );
    // With one attempt allowed, a command on a kept state that another writer moved
    // on still goes through: catching up is not a lost race.
    theirs
        .execute("shared", AccountCommand::Deposit { amount: 2 }, &ctx())
        .await
        .expect("their deposit");
    let strict = mine.clone().with_retry(RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    });
    strict
        .execute("shared", AccountCommand::Withdraw { amount: 2 }, &ctx())
        .await
        .expect("one attempt, after catching up");
    // Retried through the other repository, it is the store's duplicate.
    let retried = theirs
        .execute("shared", AccountCommand::Deposit { amount: 1 }, &deposit)
        .await
        .expect("retry");
    assert!(retried.outcome.is_some_and(|o| o.duplicate && o.last_version == 6));

    // A refusal on the latest state stands, and writes nothing.
    let refused = mine
        .execute("shared", AccountCommand::Withdraw { amount: 100 }, &ctx())
        .await;
    assert!(
        matches!(
            refused,
            Err(CommandError::Rejected(AccountError::InsufficientFunds {
                balance: 8,
                ..
            }))
        ),
        "{refused:?}"
    );
    assert_eq!(version().await, 8);

    // Both kept states are the fold of the log: a command that needs exactly the
    // balance goes through on either, the other then refuses.
    let fold = mine.load("shared").await.expect("load");
    assert_eq!((fold.state.balance, fold.version), (8, Version(8)));
    mine.execute("shared", AccountCommand::Withdraw { amount: 8 }, &ctx())
        .await
        .expect("exactly the balance");
    let overdraw = theirs
        .execute("shared", AccountCommand::Withdraw { amount: 8 }, &ctx())
        .await;
    assert!(matches!(overdraw, Err(CommandError::Rejected(_))), "{overdraw:?}");
    assert_eq!(theirs.load("shared").await.expect("load").state.balance, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_keeps_up_with_other_writers_on_memory() {
    the_cache_keeps_up_with_other_writers(&TestStore::memory().await.expect("memory")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_keeps_up_with_other_writers_on_sqlite() {
    the_cache_keeps_up_with_other_writers(&TestStore::sqlite().await.expect("sqlite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_keeps_up_with_other_writers_on_postgres() {
    if let Some(store) = TestStore::postgres().await {
        the_cache_keeps_up_with_other_writers(&store).await;
    }
}

/// Commands on one aggregate through one repository take turns instead of racing:
/// 32 deposits at once on each of two accounts, with no retries allowed, all go
/// through. The commands waiting for their account's turn are parked while the store
/// group-commits the two accounts' appends.
async fn commands_on_one_aggregate_take_turns(t: &TestStore) {
    let store = t.open().await;
    let accounts = Repository::<Account>::new(store.clone()).with_retry(RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    });
    let ids = ["turns", "turns-too"];
    for id in ids {
        accounts
            .execute(id, AccountCommand::Open { owner: "bob".into() }, &CommandContext::new())
            .await
            .expect("open");
    }
    let deposits: Vec<_> = (1..=32)
        .flat_map(|amount| ids.map(|id| (id, amount)))
        .map(|(id, amount)| {
            let accounts = accounts.clone();
            tokio::spawn(async move {
                accounts
                    .execute(id, AccountCommand::Deposit { amount }, &CommandContext::new())
                    .await
            })
        })
        .collect();
    for deposit in deposits {
        deposit.await.expect("task").expect("no conflict inside one repository");
    }
    for id in ids {
        let loaded = accounts.load(id).await.expect("load");
        assert_eq!(
            (loaded.state.balance, loaded.version),
            ((1..=32).sum::<i64>(), Version(33))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_on_one_aggregate_take_turns_on_memory() {
    commands_on_one_aggregate_take_turns(&TestStore::memory().await.expect("memory")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_on_one_aggregate_take_turns_on_sqlite() {
    commands_on_one_aggregate_take_turns(&TestStore::sqlite().await.expect("sqlite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_on_one_aggregate_take_turns_on_postgres() {
    if let Some(store) = TestStore::postgres().await {
        commands_on_one_aggregate_take_turns(&store).await;
    }
}

/// A cache too small for the aggregates in use, and no cache at all, give the same
/// answers as the default: evicted aggregates are loaded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eviction_and_no_cache_give_the_same_answers() {
    use annals::aggregate::CacheOptions;

    let t = TestStore::sqlite().await.expect("sqlite");
    let store = t.open().await;
    let tiny = Repository::<Account>::new(store.clone()).with_cache(CacheOptions {
        max_entries: 1,
        max_bytes: usize::MAX,
    });
    let none = Repository::<Account>::new(store.clone()).without_cache();
    for (i, repository) in [&tiny, &none, &tiny, &none].into_iter().enumerate() {
        for id in ["e-1", "e-2", "e-3"] {
            if i == 0 {
                repository
                    .execute(id, AccountCommand::Open { owner: id.into() }, &CommandContext::new())
                    .await
                    .expect("open");
            }
            repository
                .execute(id, AccountCommand::Deposit { amount: 10 }, &CommandContext::new())
                .await
                .expect("deposit");
            let refused = repository
                .execute(id, AccountCommand::Withdraw { amount: 1_000 }, &CommandContext::new())
                .await;
            assert!(matches!(refused, Err(CommandError::Rejected(_))), "{refused:?}");
        }
    }
    for id in ["e-1", "e-2", "e-3"] {
        let loaded = tiny.load(id).await.expect("load");
        assert_eq!((loaded.state.balance, loaded.version), (40, Version(5)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repository_on_memory() {
    repository_on(&TestStore::memory().await.expect("memory")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repository_on_sqlite() {
    repository_on(&TestStore::sqlite().await.expect("sqlite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repository_on_postgres() {
    if let Some(store) = TestStore::postgres().await {
        repository_on(&store).await;
    }
}

/// Version 2 of the account's events: amounts in cents, and `Credited` (v1) merged
/// into `Deposited`.
mod v2 {
    use super::*;

    #[derive(Debug, Default)]
    pub(super) struct Account {
        pub(super) cents: i64,
        pub(super) events: usize,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type", content = "data")]
    pub(super) enum AccountEvent {
        Opened { owner: String },
        Deposited { cents: i64 },
        Withdrawn { cents: i64 },
        Closed,
    }

    impl DomainEvent for AccountEvent {
        const SCHEMA_VERSION: u32 = 2;
    }

    impl Aggregate for Account {
        const CATEGORY: &'static str = "account";
        type Command = ();
        type Event = AccountEvent;
        type Error = std::convert::Infallible;
        fn handle(&self, _: ()) -> Result<Vec<AccountEvent>, Self::Error> {
            Ok(vec![AccountEvent::Deposited { cents: 1 }])
        }
        fn apply(&mut self, event: &AccountEvent) {
            self.events += 1;
            match event {
                AccountEvent::Deposited { cents } => self.cents += cents,
                AccountEvent::Withdrawn { cents } => self.cents -= cents,
                AccountEvent::Opened { .. } | AccountEvent::Closed => {}
            }
        }
    }

    // ANCHOR: upcasters
    pub(super) fn upcasters() -> annals::aggregate::Upcasters {
        let to_cents =
            |data: serde_json::Value| serde_json::json!({"cents": data["amount"].as_i64().unwrap_or(0) * 100});
        annals::aggregate::Upcasters::new()
            .register("Deposited", 1, to_cents)
            .register("Withdrawn", 1, to_cents)
            .rename_with("Credited", 1, "Deposited", to_cents)
    }
    // ANCHOR_END: upcasters
}

/// Records written in the v1 shape (the fixture), some with `schema_version: 1` in
/// their metadata and some with none (which means 1), load into the v2 enum.
#[tokio::test]
async fn old_events_are_upcast_on_read() {
    let store = Store::open("memory:").await.expect("store");
    let stream = Repository::<v2::Account>::stream_id("old").expect("id");
    let fixture: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("fixtures/account_v1.json")).expect("fixture");
    for (i, event) in fixture.iter().enumerate() {
        let mut metadata = annals::Metadata::new();
        if i % 2 == 0 {
            metadata = metadata.with("schema_version", 1);
        }
        let event = annals::NewEvent::json(event["type"].as_str().expect("type"), &event["data"])
            .expect("json")
            .with_metadata(metadata);
        store
            .append(annals::AppendRequest::new(stream.clone(), annals::ExpectedVersion::Any).event(event))
            .await
            .expect("append v1");
    }

    let without = Repository::<v2::Account>::new(store.clone()).load("old").await;
    assert!(
        matches!(without, Err(Error::InvalidJson(_))),
        "v1 JSON does not fit v2 without upcasters"
    );

    let accounts = Repository::<v2::Account>::new(store.clone()).with_upcasters(v2::upcasters());
    let loaded = accounts.load("old").await.expect("load with upcasters");
    assert_eq!(
        (loaded.state.cents, loaded.state.events, loaded.version),
        (400, 5, Version(5))
    );

    // New events are written as v2 and read back as they are.
    accounts
        .execute("old", (), &CommandContext::new())
        .await
        .expect("v2 append");
    assert_eq!(accounts.load("old").await.expect("load").state.cents, 401);
    // Records, as projections read them, decode the same way, upcasts included.
    let mut folded = v2::Account::default();
    for record in store.read_stream(&stream, 1, 100).await.expect("read") {
        folded.apply(&annals::aggregate::decode_event(&record, &v2::upcasters()).expect("decode"));
    }
    assert_eq!((folded.cents, folded.events), (401, 6));
    let newest = store.read_stream(&stream, 6, 1).await.expect("read");
    assert_eq!(
        newest[0].metadata.extra.get("schema_version"),
        Some(&serde_json::json!(2))
    );

    // A v2 record is newer than v1 code knows: a clear error, not a wrong state.
    accounts
        .execute("new", (), &CommandContext::new())
        .await
        .expect("v2 append");
    let old_code = Repository::<Account>::new(store).load("new").await;
    assert!(
        matches!(old_code, Err(Error::InvalidDomainEvent { .. })),
        "{old_code:?}"
    );
}
