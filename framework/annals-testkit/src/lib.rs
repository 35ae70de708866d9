//! # annals-testkit
//!
//! Test support for annals stores:
//!
//! - [`conformance`]: one async test per invariant of the store contract (I1–I5, I9 and
//!   the read/subscribe semantics), run against any engine through [`TestStore`];
//! - [`conformance_suite!`]: turns the whole suite into `#[tokio::test]`s in one line;
//! - [`given`]: given/when/then tests for aggregates, without a store;
//! - [`postgres`]: a throwaway PostgreSQL schema per test, which fails loudly when
//!   `ANNALS_REQUIRE_POSTGRES=1` and no server answers.
//!
//! ```no_run
//! mod sqlite {
//!     annals_testkit::conformance_suite!(annals_testkit::TestStore::sqlite());
//! }
//! ```

pub mod browser;
pub mod conformance;
pub mod given;
pub mod kafka;
pub mod postgres;
pub mod tally;
pub mod tls;

use annals::{Store, StoreOptions};
use tempfile::TempDir;

/// Waits until `check` holds, looking every 20 ms; fails the test, naming `what`, after
/// 30 seconds.
pub async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A store under test that can be opened again, as a restarted process would.
pub struct TestStore {
    kind: Kind,
}

enum Kind {
    Memory(Store),
    Url { url: String, _dir: Option<TempDir> },
}

impl TestStore {
    /// A fresh in-process store.
    pub async fn memory() -> Option<TestStore> {
        let store = Store::open("memory:").await.expect("memory store opens");
        Some(TestStore {
            kind: Kind::Memory(store),
        })
    }

    /// A fresh SQLite file in a temporary directory, removed when the value drops.
    pub async fn sqlite() -> Option<TestStore> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        Some(TestStore {
            kind: Kind::Url { url, _dir: Some(dir) },
        })
    }

    /// A fresh schema in the test PostgreSQL database; `None` (test skipped) when no
    /// server answers, unless `ANNALS_REQUIRE_POSTGRES=1`, which makes that a failure.
    pub async fn postgres() -> Option<TestStore> {
        let url = postgres::fresh_schema_url().await?;
        Some(TestStore {
            kind: Kind::Url { url, _dir: None },
        })
    }

    /// The store's URL, or `None` for the in-process store.
    pub fn url(&self) -> Option<&str> {
        match &self.kind {
            Kind::Memory(_) => None,
            Kind::Url { url, .. } => Some(url),
        }
    }

    /// Whether opening again sees what was written before (false for memory).
    pub fn is_durable(&self) -> bool {
        matches!(self.kind, Kind::Url { .. })
    }

    /// Opens the store (again) with default options; panics if it cannot.
    pub async fn open(&self) -> Store {
        self.open_with(|options| options).await.expect("store opens")
    }

    /// Opens the store (again) with adjusted options. The in-process store ignores them
    /// and returns the same store.
    pub async fn open_with(&self, adjust: impl FnOnce(StoreOptions) -> StoreOptions) -> annals::Result<Store> {
        match &self.kind {
            Kind::Memory(store) => Ok(store.clone()),
            Kind::Url { url, .. } => adjust(StoreOptions::from_url(url)?).open().await,
        }
    }
}

/// Expands to one `#[tokio::test]` per conformance test, each given a fresh store
/// from `$make` (an expression of type `impl Future<Output = Option<TestStore>>`;
/// `None` skips the test).
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@tests $make;
            i1_offsets_gapless_under_concurrent_writers,
            i2_stream_versions_contiguous,
            i3_appends_are_atomic,
            i5_command_id_applied_once,
            i5_command_id_survives_reopen,
            i5_command_id_answers_before_refusals,
            i9_bad_input_changes_nothing,
            expected_version_semantics,
            concurrent_appends_fail_alone,
            reads_respect_from_and_limit,
            fold_stream_sees_what_read_stream_returns,
            list_streams_by_category_and_page,
            subscribe_catches_up_then_waits,
            records_round_trip,
            partition_count_is_fixed,
            missing_store_is_not_created,
            streams_land_in_kafka_partitions,
            i8_replicated_records_continue_the_log,
            a_cancelled_close_is_finished_by_the_next,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                if let Some(store) = $make.await {
                    $crate::conformance::$name(&store).await;
                }
            }
        )*
    };
}

/// Expands to one `#[tokio::test]` per named async function, in a module named after
/// the engine (`memory`, `sqlite` or `postgres`), each given a fresh store of that
/// engine from the [`TestStore`] constructor of the same name. The functions take a
/// [`TestStore`] and sit beside the macro's call.
#[doc(hidden)]
#[macro_export]
macro_rules! on_engine {
    ($engine:ident; $($name:ident),* $(,)?) => {
        mod $engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(t) = $crate::TestStore::$engine().await {
                        super::$name(t).await;
                    }
                }
            )*
        }
    };
}

/// Expands to one `#[tokio::test]` per named async function, in a module `sqlite` and a
/// module `postgres`, each given a fresh store of that engine (the PostgreSQL ones
/// skip without a server, unless `ANNALS_REQUIRE_POSTGRES=1`). The functions take a
/// [`TestStore`] and sit beside the macro's call.
#[macro_export]
macro_rules! on_sql_engines {
    ($($name:ident),* $(,)?) => {
        $crate::on_engine!(sqlite; $($name),*);
        $crate::on_engine!(postgres; $($name),*);
    };
}

/// As [`on_sql_engines!`], and on the memory engine too (module `memory`).
#[macro_export]
macro_rules! on_every_engine {
    ($($name:ident),* $(,)?) => {
        $crate::on_engine!(memory; $($name),*);
        $crate::on_sql_engines!($($name),*);
    };
}

/// Every record of `store`, partition by partition in offset order.
pub async fn every_record(store: &Store) -> Vec<annals::RecordedEvent> {
    let mut all = Vec::new();
    for partition in annals::Partition::all(store.partition_count()) {
        let end = store.high_watermark(partition).await.expect("high watermark");
        all.extend(
            store
                .read_partition(partition, 0u64, end.0 as usize)
                .await
                .expect("read a partition"),
        );
    }
    all
}
