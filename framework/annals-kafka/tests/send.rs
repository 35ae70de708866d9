//! Every public future of the bridge can be spawned on a multi-threaded runtime, and
//! awaited inside an `#[async_trait]` method, where users start a sink or a source.

use std::future::Future;

use annals::{async_trait, Store};
use annals_kafka::{ensure_topic, topic_partitions, Sink, SinkOptions, Source, SourceOptions};

/// Compiles only if `future` could be handed to `tokio::spawn`. Never polls it.
fn spawnable<F: Future + Send + 'static>(future: F) {
    drop(future);
}

#[async_trait]
trait Bridges {
    async fn bridge(&self, store: &Store) -> annals_kafka::Result<()>;
}

struct Both;

#[async_trait]
impl Bridges for Both {
    async fn bridge(&self, store: &Store) -> annals_kafka::Result<()> {
        let sink = Sink::start(store, SinkOptions::new("127.0.0.1:9092", "t")).await?;
        let source = Source::start(store, SourceOptions::new("127.0.0.1:9092", "t")).await?;
        source.shutdown().await?;
        sink.shutdown().await
    }
}

#[tokio::test]
async fn public_futures_are_send() {
    let store = Store::open("memory:").await.expect("store");
    spawnable({
        let store = store.clone();
        async move { Sink::start(&store, SinkOptions::new("b", "t")).await?.wait().await }
    });
    spawnable({
        let store = store.clone();
        async move {
            let sink = Sink::start(&store, SinkOptions::new("b", "t")).await?;
            let failure = sink.failure().await;
            sink.shutdown().await?;
            Err::<(), _>(failure)
        }
    });
    spawnable({
        let store = store.clone();
        async move { Source::start(&store, SourceOptions::new("b", "t")).await?.wait().await }
    });
    spawnable(async {
        let config = rdkafka::ClientConfig::new();
        ensure_topic(&config, "t", 16, 1).await?;
        topic_partitions(&config, "t").await.map(drop)
    });
    spawnable(async move { Both.bridge(&store).await });
}
