//! The follower's view of its leader over HTTP: the partitions route (epoch, partition
//! count) and the fetch route, with every failure sorted into what a retry can cure and
//! what it cannot.

use std::time::Duration;

use annals::{Partition, RecordedEvent};
use serde::Deserialize;

use super::FollowError;

/// How long one fetch may wait at the leader for a record.
pub(super) const WAIT_MS: u64 = 5_000;

/// How to reach the leader.
#[derive(Debug, Clone)]
pub struct Leader {
    /// Its base URL.
    pub url: String,
    /// Its bearer token, if it needs one.
    pub token: Option<String>,
}

/// How the message of a [`FollowError::Leader`] for an HTTP error starts.
const ANSWERED: &str = "answered ";
/// … for a `501 Not Implemented`.
const NOT_IMPLEMENTED: &str = "answered 501 ";

/// What `GET /v1/partitions` says of the leader.
#[derive(Debug, Deserialize)]
pub(super) struct Partitions {
    pub(super) partition_count: u32,
    pub(super) leader_epoch: u64,
    /// The leader records where its appends end (and answers fetches with whole ones).
    #[serde(default)]
    pub(super) append_boundaries: bool,
}

/// A fetch's answer.
#[derive(Debug, Deserialize)]
pub(super) struct Fetched {
    pub(super) events: Vec<RecordedEvent>,
    pub(super) high_watermark: u64,
}

impl Leader {
    /// A client for this leader. A fetch waits at most [`WAIT_MS`] at the leader; a
    /// leader that stops answering (packets dropped, not refused) is given up on well
    /// after that.
    pub(super) fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_millis(WAIT_MS) + Duration::from_secs(10))
            .build()
            .unwrap_or_default()
    }

    pub(super) async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        http: &reqwest::Client,
        path: &str,
    ) -> Result<T, FollowError> {
        let failed = |message: String| FollowError::Leader {
            leader: self.url.clone(),
            message,
        };
        let mut request = http.get(format!("{}{path}", self.url.trim_end_matches('/')));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(FollowError::Unauthorized {
                leader: self.url.clone(),
            });
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(failed(format!("{ANSWERED}{status}: {body}")));
        }
        response.json().await.map_err(|e| failed(e.to_string()))
    }

    /// As [`get`](Leader::get), but `None` when the leader answers `501`: its store
    /// does not have what `path` asks for (consumer groups on a `memory:` store).
    pub(super) async fn get_unless_unsupported<T: for<'de> Deserialize<'de>>(
        &self,
        http: &reqwest::Client,
        path: &str,
    ) -> Result<Option<T>, FollowError> {
        match self.get(http, path).await {
            Err(FollowError::Leader { message, .. }) if message.starts_with(NOT_IMPLEMENTED) => Ok(None),
            answered => answered.map(Some),
        }
    }

    /// The leader's partition count, which a new follower's store is created with.
    pub async fn partition_count(&self) -> Result<u32, FollowError> {
        Ok(self.partitions(&self.client()).await?.partition_count)
    }

    pub(super) async fn partitions(&self, http: &reqwest::Client) -> Result<Partitions, FollowError> {
        self.get(http, "/v1/partitions").await
    }

    /// The leader's records of `partition` from `from`, whole appends, at most about
    /// `limit`; waits up to `wait_ms` for one. `follower` names this follower so the
    /// leader counts what it holds (for `min_insync_followers`).
    pub(super) async fn fetch(
        &self,
        http: &reqwest::Client,
        partition: Partition,
        from: u64,
        limit: usize,
        wait_ms: u64,
        follower: Option<&str>,
    ) -> Result<Fetched, FollowError> {
        let mut path = format!("/v1/partitions/{partition}/events?from_offset={from}&limit={limit}&wait_ms={wait_ms}");
        if let Some(follower) = follower {
            path.push_str("&follower=");
            path.push_str(follower);
        }
        self.get(http, &path).await
    }

    /// The leader's record at `offset` of `partition`, if it has one.
    pub(super) async fn record_at(
        &self,
        http: &reqwest::Client,
        partition: Partition,
        offset: u64,
    ) -> Result<Option<RecordedEvent>, FollowError> {
        let fetched = self.fetch(http, partition, offset, 1, 0, None).await?;
        Ok(fetched
            .events
            .into_iter()
            .next()
            .filter(|record| record.offset == offset))
    }
}
