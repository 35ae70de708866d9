//! Every public future of the library can be spawned on a multi-threaded runtime and
//! awaited inside an `#[async_trait]` method.
//!
//! The bug this guards: `Store::open`'s future held a borrow whose `Send` held only for
//! one lifetime (sqlx's migrator, generic over `Acquire<'a>`), so
//! `tokio::spawn(async { Store::open(url).await })` and an `#[async_trait]` method that
//! opened a store failed to compile with "implementation of `Send` is not general
//! enough". A future that is `Send` only when awaited directly slips past tests that
//! never spawn it; this file spawns or boxes each one, so the check happens where users
//! hit it: at compile time.

use std::future::Future;
use std::time::Duration;

use annals::aggregate::{Aggregate, CommandContext, DomainEvent, Repository};
use annals::group::{self, Consumer, GroupMember, GroupOptions, Processed, Projection};
use annals::readmodel::Tx;
use annals::snapshot;
use annals::{async_trait, RecordedEvent, Store, StoreOptions, StreamId};
use annals_testkit::TestStore;
use serde::{Deserialize, Serialize};

/// Compiles only if `future` could be handed to `tokio::spawn`. Never polls it.
fn spawnable<F: Future + Send + 'static>(future: F) {
    drop(future);
}

#[derive(Default)]
struct Counter;

#[derive(Debug, Clone, Serialize, Deserialize, DomainEvent)]
#[serde(tag = "type", content = "data")]
enum Counted {
    Added,
}
impl Aggregate for Counter {
    const CATEGORY: &'static str = "counter";
    type Command = ();
    type Event = Counted;
    type Error = std::convert::Infallible;
    fn handle(&self, (): ()) -> Result<Vec<Counted>, Self::Error> {
        Ok(vec![Counted::Added])
    }
    fn apply(&mut self, _: &Counted) {}
}

struct Nothing;

#[async_trait]
impl Projection for Nothing {
    async fn handle(&self, _: &RecordedEvent, _: &mut Tx) -> annals::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl Consumer for Nothing {
    async fn handle(&self, _: &RecordedEvent, _: &Processed) -> annals::Result<()> {
        Ok(())
    }
}

/// What users write: a trait of their own whose async method opens a store.
#[async_trait]
trait Opens {
    async fn open_store(&self, url: &str) -> annals::Result<Store>;
}

struct Opener;

#[async_trait]
impl Opens for Opener {
    async fn open_store(&self, url: &str) -> annals::Result<Store> {
        let store = Store::open(url).await?;
        store.refresh_replica().await?;
        Ok(store)
    }
}

#[test]
fn public_futures_are_send() {
    let url = String::from("memory:");
    spawnable(async move { Store::open(&url).await });
    spawnable(async { StoreOptions::from_url("memory:")?.partitions(4).open().await });

    let store = || futures_store();
    let stream = StreamId::new("counter-1").expect("valid");
    spawnable({
        let (store, stream) = (store(), stream.clone());
        async move { store.read_stream(&stream, 1, 10).await }
    });
    spawnable({
        let store = store();
        async move { store.fetch(0, 0, 10, Duration::ZERO).await }
    });
    spawnable({
        let store = store();
        async move { store.high_watermark(0).await }
    });
    spawnable({
        let store = store();
        async move { store.refresh_replica().await }
    });
    spawnable({
        let store = store();
        async move { store.follow("http://leader", 0).await }
    });
    spawnable({
        let store = store();
        async move { store.promote().await }
    });
    spawnable({
        let store = store();
        async move { store.apply_replicated(Vec::new()).await }
    });
    spawnable({
        let store = store();
        async move { store.close().await }
    });
    spawnable({
        let store = store();
        async move {
            let subject = annals::personal::Subject::new("customer-1")?;
            store.fetch_sealed(0, 0, 10, Duration::ZERO).await?;
            store.read_partition_sealed(0, 0, 10).await?;
            let changes = store.keys_since(0, 10).await?;
            store.import_keys(&changes).await?;
            store.erase_subject(&subject).await?;
            snapshot::seal(&store, &StreamId::new("counter-1")?, "{}")
                .await
                .map(drop)
        }
    });
    spawnable({
        let store = store();
        async move {
            let stream = StreamId::new("counter-1")?;
            store.read_event(uuid::Uuid::nil()).await?;
            store.offset_at(0, chrono::Utc::now()).await?;
            store.version_at(&stream, chrono::Utc::now()).await?;
            store.streams_with_prefix("counter", 10, None).await?;
            store
                .read_partition_of_types(0, 0, 10, &["Added".to_owned()])
                .await
                .map(drop)
        }
    });

    let repository = Repository::<Counter>::new(store());
    spawnable({
        let repository = repository.clone();
        async move { repository.load("1").await }
    });
    spawnable(async move { repository.execute("1", (), &CommandContext::new()).await });

    spawnable({
        let store = store();
        async move { GroupMember::projection(&store, "g", Nothing, GroupOptions::default()).await }
    });
    spawnable({
        let store = store();
        async move {
            let member = GroupMember::consumer(&store, "g", Nothing, GroupOptions::default()).await?;
            member.shutdown().await
        }
    });
    spawnable({
        let store = store();
        async move { group::rebuild(&store, "g", Nothing, Vec::new(), GroupOptions::default()).await }
    });
    spawnable({
        let store = store();
        async move {
            group::admin::list(&store).await?;
            group::admin::describe(&store, "g").await?;
            group::admin::reset(&store, "g", group::admin::ResetTo::Earliest).await?;
            group::admin::pause(&store, "g", None).await?;
            group::admin::resume(&store, "g", None).await?;
            group::admin::dead_letters(&store, Some("g")).await?;
            group::admin::retry_dead_letter(&store, 1).await?;
            group::admin::skip_dead_letter(&store, 1).await.map(drop)
        }
    });
    spawnable({
        let (store, stream) = (store(), stream.clone());
        async move {
            snapshot::tombstone(&store, &stream).await?;
            snapshot::newest(&store, &stream).await?;
            snapshot::save(&store, &stream, 1, 1, "{}").await?;
            snapshot::size(&store).await?;
            snapshot::compact(&store, Duration::ZERO).await.map(drop)
        }
    });
    spawnable({
        let store = store();
        async move {
            store
                .read_models()?
                .transaction(|tx| Box::pin(async move { tx.execute("SELECT 1", &[]).await }))
                .await
        }
    });
    spawnable(async { Opener.open_store("memory:").await });
}

/// A store for futures that are built and dropped, never run.
fn futures_store() -> Store {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(Store::open("memory:")).expect("memory store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_runs_on_a_spawned_task_on_every_engine() {
    let engines = [TestStore::sqlite().await, TestStore::postgres().await];
    for test in engines.iter().flatten() {
        let url = test.url().expect("a durable store has a URL").to_owned();
        let store = tokio::spawn(async move { Store::open(&url).await })
            .await
            .expect("the task finishes")
            .expect("the store opens on a spawned task");
        let again = Opener
            .open_store(test.url().expect("url"))
            .await
            .expect("the store opens inside an async_trait method");
        assert_eq!(store.partition_count(), again.partition_count());
        store.close().await;
        again.close().await;
    }
}
