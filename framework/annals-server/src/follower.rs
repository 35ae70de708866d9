//! The log-shipping follower: one fetch loop per partition, long-polling the leader's
//! fetch route from the follower's own next offset and applying what comes back
//! verbatim. The position is the follower's log itself, so a follower killed at any
//! point resumes without gap or duplicate (I8).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use annals::{EventStore, Partition, RecordedEvent, Store};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::routes::MAX_LIMIT;

/// Records asked for per fetch: twice the most events one append may hold by default,
/// so a batch cut short to end on a whole append still moves forward. A batch that is
/// all one run of records committed together is fetched again with a larger limit, up
/// to the most one fetch may return.
const FETCH: usize = 2_000;
/// How long one fetch may wait at the leader for a record.
const WAIT_MS: u64 = 5_000;

/// What went wrong with the leader.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The store failed (or refused the records).
    #[error(transparent)]
    Store(#[from] annals::Error),
    /// The leader could not be reached or answered something unexpected.
    #[error("leader {leader}: {message}")]
    Leader {
        /// The leader's URL.
        leader: String,
        /// What happened.
        message: String,
    },
    /// The leader has a lower epoch than this store: it was replaced, and following it
    /// would take records from a deposed leader.
    #[error("leader {leader} is at epoch {theirs}, below this store's {ours}: refusing its records")]
    StaleLeader {
        /// The leader's URL.
        leader: String,
        /// The leader's epoch.
        theirs: u64,
        /// This store's epoch.
        ours: u64,
    },
    /// This store holds records the leader does not have (it was a leader that kept
    /// writing after another was promoted, or it followed another leader): following
    /// would fork the log. Nothing is truncated automatically.
    #[error("partition {partition}: this store's record at offset {offset} is not the leader's; the logs diverged")]
    Diverged {
        /// The partition.
        partition: Partition,
        /// The offset where they differ (or that the leader lacks).
        offset: u64,
    },
    /// The partition counts differ.
    #[error("leader {leader} has {theirs} partitions, this store {ours}")]
    PartitionCount {
        /// The leader's URL.
        leader: String,
        /// The leader's count.
        theirs: u32,
        /// This store's count.
        ours: u32,
    },
}

/// How to reach the leader.
#[derive(Debug, Clone)]
pub struct Leader {
    /// Its base URL.
    pub url: String,
    /// Its bearer token, if it needs one.
    pub token: Option<String>,
}

#[derive(Deserialize)]
struct Partitions {
    partition_count: u32,
    leader_epoch: u64,
}

#[derive(Deserialize)]
struct Fetched {
    events: Vec<RecordedEvent>,
    high_watermark: u64,
}

impl Leader {
    /// A fetch waits at most `WAIT_MS` at the leader; a leader that stops answering
    /// (packets dropped, not refused) is given up on well after that.
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_millis(WAIT_MS) + Duration::from_secs(10))
            .build()
            .unwrap_or_default()
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, http: &reqwest::Client, path: &str) -> Result<T, FollowError> {
        let leader_error = |message: String| FollowError::Leader {
            leader: self.url.clone(),
            message,
        };
        let mut request = http.get(format!("{}{path}", self.url.trim_end_matches('/')));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| leader_error(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(leader_error(format!("answered {status}: {body}")));
        }
        response.json().await.map_err(|e| leader_error(e.to_string()))
    }

    /// The leader's partition count, which a new follower's store is created with.
    pub async fn partition_count(&self) -> Result<u32, FollowError> {
        let partitions: Partitions = self.get(&self.client(), "/v1/partitions").await?;
        Ok(partitions.partition_count)
    }

    /// Checks the leader's epoch and partition count against `store`.
    async fn check(&self, http: &reqwest::Client, store: &Store) -> Result<(), FollowError> {
        let partitions: Partitions = self.get(http, "/v1/partitions").await?;
        let ours = store.replica().epoch;
        if partitions.leader_epoch < ours {
            return Err(FollowError::StaleLeader {
                leader: self.url.clone(),
                theirs: partitions.leader_epoch,
                ours,
            });
        }
        if partitions.partition_count != store.partition_count() {
            return Err(FollowError::PartitionCount {
                leader: self.url.clone(),
                theirs: partitions.partition_count,
                ours: store.partition_count(),
            });
        }
        Ok(())
    }
}

/// A running follower: its fetch loops, and the replication lag they last saw.
pub struct Follower {
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<(), FollowError>>,
    lag: Arc<Vec<AtomicU64>>,
}

impl Follower {
    /// Starts following `leader` into `store`, which becomes (or stays) its follower.
    pub async fn start(store: Store, leader: Leader) -> Result<Follower, FollowError> {
        let http = leader.client();
        leader.check(&http, &store).await?;
        check_prefix(&store, &leader, &http).await?;
        if store.replica().leader.as_deref() != Some(leader.url.as_str()) {
            store.follow(&leader.url).await?;
        }
        let (stop, stopped) = watch::channel(false);
        // How this follower names itself to the leader, which counts it for acks.
        let id: Arc<str> = format!("follower-{}", uuid::Uuid::new_v4().simple()).into();
        let lag: Arc<Vec<AtomicU64>> = Arc::new((0..store.partition_count()).map(|_| AtomicU64::new(0)).collect());
        let mut tasks = JoinSet::new();
        for partition in 0..store.partition_count() {
            let (store, leader, http, stopped, lag, id) = (
                store.clone(),
                leader.clone(),
                http.clone(),
                stopped.clone(),
                lag.clone(),
                id.clone(),
            );
            tasks.spawn(async move { follow_partition(store, leader, http, partition, stopped, lag, id).await });
        }
        Ok(Follower { stop, tasks, lag })
    }

    /// Records the follower lacked at its last fetch, per partition.
    pub fn lag(&self) -> Vec<u64> {
        self.lag.iter().map(|l| l.load(Ordering::Relaxed)).collect()
    }

    /// The counters behind [`lag`](Follower::lag), to read from another task.
    pub fn lag_handle(&self) -> Arc<Vec<AtomicU64>> {
        self.lag.clone()
    }

    /// Stops the fetch loops; returns the first error one of them stopped on.
    pub async fn stop(mut self) -> Result<(), FollowError> {
        let _ = self.stop.send(true);
        let mut first = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(error) = ended(joined) {
                if first.is_ok() {
                    first = Err(error);
                }
            }
        }
        first
    }

    /// Waits until a loop stops on its own (promotion, or an error it cannot get past).
    pub async fn wait(&mut self) -> Result<(), FollowError> {
        match self.tasks.join_next().await {
            Some(joined) => ended(joined),
            None => std::future::pending().await,
        }
    }
}

/// How a fetch loop ended; a loop that panicked passes its panic on.
fn ended(joined: Result<Result<(), FollowError>, tokio::task::JoinError>) -> Result<(), FollowError> {
    match joined {
        Ok(result) => result,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(_) => Ok(()),
    }
}

/// A fetched batch, cut to end on a whole append.
#[derive(Debug)]
enum Cut {
    /// The records up to the last whole append.
    Whole(Vec<RecordedEvent>),
    /// A full batch that is one run of records of one stream committed together: it
    /// cannot be cut, and the run may go on past it.
    OneRun(Vec<RecordedEvent>),
}

/// The records of a fetched batch that end on a whole append, so a follower never
/// holds part of one (I3 on the follower, and on it once promoted).
///
/// A batch that is not full reached the leader's high watermark, and the leader commits
/// an append whole, so it ends on a whole append. A full batch may stop inside one: its
/// trailing run of records of one stream committed together (same stream, same
/// `recorded_at`) is left for the next fetch, which starts at it.
fn whole_appends(mut batch: Vec<RecordedEvent>, full: bool) -> Cut {
    let Some(last) = batch.last().filter(|_| full) else {
        return Cut::Whole(batch);
    };
    let (stream, at) = (last.stream.clone(), last.recorded_at);
    match batch.iter().rposition(|r| r.stream != stream || r.recorded_at != at) {
        Some(keep) => {
            batch.truncate(keep + 1);
            Cut::Whole(batch)
        }
        None => Cut::OneRun(batch),
    }
}

/// Checks that this store's log is a prefix of the leader's (I8): in every partition,
/// its last record must be the leader's record at that offset.
async fn check_prefix(store: &Store, leader: &Leader, http: &reqwest::Client) -> Result<(), FollowError> {
    let ours = store.high_watermarks().await?;
    for (partition, next) in ours.into_iter().enumerate() {
        let Some(last) = next.checked_sub(1) else { continue };
        let partition = partition as Partition;
        let mine = store.read_partition(partition, last, 1).await?;
        let theirs: Fetched = leader
            .get(
                http,
                &format!("/v1/partitions/{partition}/events?from_offset={last}&limit=1"),
            )
            .await?;
        let same = match (mine.first(), theirs.events.first()) {
            (Some(mine), Some(theirs)) => mine.event_id == theirs.event_id && mine.offset == theirs.offset,
            _ => false,
        };
        if !same {
            return Err(FollowError::Diverged {
                partition,
                offset: last,
            });
        }
    }
    Ok(())
}

async fn follow_partition(
    store: Store,
    leader: Leader,
    http: reqwest::Client,
    partition: Partition,
    mut stopped: watch::Receiver<bool>,
    lag: Arc<Vec<AtomicU64>>,
    id: Arc<str>,
) -> Result<(), FollowError> {
    let mut failures = 0u32;
    let mut limit = FETCH;
    loop {
        if *stopped.borrow() {
            return Ok(());
        }
        // Promoted (here or by `annals promote` in another process): stop following.
        if store.refresh_replica().await?.leader.is_none() {
            tracing::info!(partition, "promoted: the follower stops");
            return Ok(());
        }
        let next = store.high_watermark(partition).await?;
        let path = format!(
            "/v1/partitions/{partition}/events?from_offset={next}&limit={limit}&wait_ms={WAIT_MS}&follower={id}"
        );
        let fetched = tokio::select! {
            _ = stopped.changed() => return Ok(()),
            fetched = leader.get::<Fetched>(&http, &path) => fetched,
        };
        match fetched {
            Ok(batch) => {
                failures = 0;
                let full = batch.events.len() >= limit;
                let events = match whole_appends(batch.events, full) {
                    Cut::Whole(events) => events,
                    // Fetch again with room for the run's end, which is its append's.
                    Cut::OneRun(_) if limit < MAX_LIMIT => {
                        limit = (limit * 2).min(MAX_LIMIT);
                        continue;
                    }
                    // A run longer than any fetch: applied as it is.
                    Cut::OneRun(events) => events,
                };
                limit = FETCH;
                let reached = events.last().map_or(next, |r| r.offset + 1);
                let idle = events.is_empty();
                match store.apply_replicated(events).await {
                    // Promoted while this fetch was in flight: its records are not taken.
                    Err(annals::Error::NotAReplica) => {
                        tracing::info!(partition, "promoted: the follower stops");
                        return Ok(());
                    }
                    applied => applied?,
                }
                lag[partition as usize].store(batch.high_watermark.saturating_sub(reached), Ordering::Relaxed);
                if idle {
                    // Caught up: a good moment to check the leader was not replaced.
                    leader.check(&http, &store).await?;
                }
            }
            Err(error @ FollowError::Leader { .. }) => {
                failures += 1;
                tracing::warn!(partition, %error, "fetch failed; retrying");
                let backoff = Duration::from_millis(100 * u64::from(failures.min(20)));
                tokio::select! {
                    _ = stopped.changed() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: u64, stream: &str, at: i64) -> RecordedEvent {
        RecordedEvent {
            partition: 0,
            offset,
            stream: annals::StreamId::new(stream).expect("id"),
            version: offset + 1,
            event_id: uuid::Uuid::new_v4(),
            event_type: "T".into(),
            payload: serde_json::value::RawValue::from_string("{}".into()).expect("json"),
            metadata: annals::Metadata::default(),
            recorded_at: chrono::DateTime::from_timestamp_micros(at).expect("time"),
        }
    }

    fn offsets(batch: &[RecordedEvent]) -> Vec<u64> {
        batch.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn a_full_batch_leaves_a_trailing_append_for_the_next_fetch() {
        let batch = vec![
            record(0, "a-1", 10),
            record(1, "b-1", 20),
            record(2, "c-1", 30),
            record(3, "c-1", 30),
        ];
        let whole = |batch, full| match whole_appends(batch, full) {
            Cut::Whole(records) => offsets(&records),
            other => panic!("{other:?}"),
        };
        assert_eq!(whole(batch.clone(), true), [0, 1]);
        assert_eq!(whole(batch, false), [0, 1, 2, 3], "a partial batch is whole");
        let one_run = vec![record(0, "c-1", 30), record(1, "c-1", 30)];
        assert!(
            matches!(whole_appends(one_run, true), Cut::OneRun(records) if offsets(&records) == [0, 1]),
            "a single run cannot be cut"
        );
        assert!(whole(Vec::new(), true).is_empty());
    }
}
