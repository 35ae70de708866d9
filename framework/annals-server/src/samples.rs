//! What the console's charts draw: a sample of the store every
//! [`ServerOptions::sample_every`](crate::ServerOptions::sample_every) (every partition's
//! next offset, every consumer group's lag per partition, a follower's replication lag),
//! the last [`WINDOW`] of them kept in memory, pushed to browsers as server-sent events
//! by `GET /v1/samples`: first the samples kept (`event: history`), then each new one
//! (`event: sample`). Appends per second are the differences of next offsets.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use annals::group::admin;
use annals::Store;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt as _};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::follower::FollowerHandle;
use crate::AppState;

/// Samples kept: at one a second, 15 minutes.
pub(crate) const WINDOW: usize = 900;

/// The store at one moment.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    /// When, in milliseconds since the Unix epoch.
    t: i64,
    /// Every partition's next offset.
    offsets: Vec<u64>,
    /// Every consumer group's lag, per partition.
    groups: BTreeMap<String, Vec<u64>>,
    /// On a follower, its lag behind the leader per partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    replication: Option<Vec<u64>>,
}

/// The samples kept, and the browsers watching.
pub(crate) struct Sampler {
    kept: Mutex<VecDeque<Arc<Sample>>>,
    watchers: broadcast::Sender<Arc<Sample>>,
}

impl Sampler {
    /// Starts sampling `store` every `every`, for as long as the returned sampler lives.
    pub(crate) fn start(store: Store, follower: Option<FollowerHandle>, every: Duration) -> Arc<Sampler> {
        let sampler = Arc::new(Sampler {
            kept: Mutex::new(VecDeque::with_capacity(WINDOW)),
            watchers: broadcast::channel(16).0,
        });
        // Zero samples nothing: the charts stay empty.
        if !every.is_zero() {
            tokio::spawn(run(Arc::downgrade(&sampler), store, follower, every));
        }
        sampler
    }

    fn kept(&self) -> Vec<Arc<Sample>> {
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn keep(&self, sample: Sample) {
        let sample = Arc::new(sample);
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == WINDOW {
            kept.pop_front();
        }
        kept.push_back(sample.clone());
        drop(kept);
        // No watcher is no error.
        let _ = self.watchers.send(sample);
    }
}

/// Samples until the sampler is dropped (its server's router is gone).
async fn run(sampler: Weak<Sampler>, store: Store, follower: Option<FollowerHandle>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(sampler) = sampler.upgrade() else { return };
        match sample(&store, follower.as_ref()).await {
            Ok(sample) => sampler.keep(sample),
            Err(error) => tracing::debug!(%error, "sampling the store failed; trying again next time"),
        }
    }
}

async fn sample(store: &Store, follower: Option<&FollowerHandle>) -> annals::Result<Sample> {
    let offsets = store.high_watermarks().await?.iter().map(|offset| offset.0).collect();
    let mut groups = BTreeMap::new();
    // A store without groups (none kept by its engine) has none to chart.
    if let Ok(summaries) = admin::list(store).await {
        for summary in summaries {
            let described = admin::describe(store, &summary.group).await?;
            let lag = described.partitions.iter().map(|partition| partition.lag).collect();
            groups.insert(summary.group, lag);
        }
    }
    Ok(Sample {
        t: chrono::Utc::now().timestamp_millis(),
        offsets,
        groups,
        replication: follower.map(|follower| follower.status().lag),
    })
}

fn event(name: &'static str, data: &impl Serialize) -> Result<Event, Infallible> {
    Ok(Event::default()
        .event(name)
        .data(serde_json::to_string(data).unwrap_or_default()))
}

/// How long one `GET /v1/samples` streams before it ends (the page connects again), so
/// that a server embedded with [`router`](crate::router), which cannot tell its streams
/// that it stops, waits at most this long for them in a graceful shutdown.
const STREAM_FOR: Duration = Duration::from_secs(300);

/// `GET /v1/samples`: the samples kept, then each new one, as server-sent events, until
/// the client leaves, the server stops, or [`STREAM_FOR`] has passed.
pub(crate) async fn stream(State(state): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let watching = state.sampler.watchers.subscribe();
    let history = event("history", &state.sampler.kept());
    let stopping = state.stopping.subscribe();
    let until = tokio::time::Instant::now() + STREAM_FOR;
    let next = futures::stream::unfold((watching, stopping), move |(mut watching, mut stopping)| async move {
        loop {
            let received = tokio::select! {
                received = watching.recv() => received,
                _ = stopping.wait_for(|stopping| *stopping) => return None,
                () = tokio::time::sleep_until(until) => return None,
            };
            match received {
                Ok(sample) => return Some((event("sample", &*sample), (watching, stopping))),
                // A browser too slow for some samples misses them; the chart goes on.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(futures::stream::once(async { history }).chain(next)).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_window_keeps_the_newest_samples() {
        let store = Store::open("memory:").await.expect("store");
        let sampler = Sampler::start(store, None, Duration::from_secs(3600));
        for t in 0..(WINDOW as i64 + 100) {
            sampler.keep(Sample {
                t,
                offsets: Vec::new(),
                groups: BTreeMap::new(),
                replication: None,
            });
        }
        let kept = sampler.kept();
        let times: Vec<i64> = kept.iter().map(|sample| sample.t).collect();
        assert_eq!(times.len(), WINDOW);
        assert_eq!(
            (times[0], times[WINDOW - 1]),
            (100, WINDOW as i64 + 99),
            "the oldest went first"
        );
    }
}
