//! The follower's view of its leader over HTTP, through [`annals_client::Client`]: the
//! partitions route (epoch, partition count), the fetch route and the groups, with
//! every failure sorted into what a retry can cure and what it cannot.

use std::time::Duration;

use annals::group::admin::{DeadLetter, GroupDescription, GroupSummary};
use annals::personal::SubjectKey;
use annals::{Offset, Partition, RecordedEvent};
use annals_client::wire::{PartitionEvents, PartitionsInfo};
use annals_client::{Client, ClientError};

use super::FollowError;

/// How long one fetch may wait at the leader for a record.
pub(super) const WAIT_MS: u64 = 5_000;

/// How to reach the leader.
#[derive(Debug, Clone)]
pub struct Leader {
    /// Its base URL.
    pub url: String,
    /// Its bearer token, if it needs one (the `read` role is enough).
    pub token: Option<String>,
    /// For an `https://` leader with a certificate from a private authority: that
    /// authority's certificate (PEM), the only one trusted. `None`: the platform's.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Leader {
    /// The leader at `url`, with no token, trusting the platform's authorities.
    pub fn at(url: impl Into<String>) -> Leader {
        Leader {
            url: url.into(),
            token: None,
            ca_file: None,
        }
    }
}

impl Leader {
    /// A client for this leader. A fetch waits at most [`WAIT_MS`] at the leader; a
    /// leader that stops answering (packets dropped, not refused) is given up on well
    /// after that.
    pub(super) fn client(&self) -> Result<Client, FollowError> {
        let certificate = |reason: String| FollowError::Certificate {
            path: self.ca_file.clone().unwrap_or_default(),
            reason,
        };
        let http = annals_client::http_trusting(self.ca_file.as_deref())
            .map_err(|error| match error {
                // The client's error names the file too: only its reason is added.
                annals_client::ClientError::Certificate { reason, .. } => certificate(reason),
                other => certificate(other.to_string()),
            })?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_millis(WAIT_MS) + Duration::from_secs(10))
            .build()
            .map_err(|error| certificate(error.to_string()))?;
        Ok(Client::with_http(&self.url, self.token.clone(), http))
    }

    /// The follower's error for a failed call: a refused token is final, anything else
    /// is retried.
    fn failed(&self, error: ClientError) -> FollowError {
        if error.status() == Some(401) {
            return FollowError::Unauthorized {
                leader: self.url.clone(),
            };
        }
        FollowError::Leader {
            leader: self.url.clone(),
            message: error.to_string(),
        }
    }

    /// `None` when the leader answers `501`: its store does not have what was asked for.
    fn unless_unsupported<T>(&self, answered: Result<T, ClientError>) -> Result<Option<T>, FollowError> {
        match answered {
            Err(error) if error.status() == Some(501) => Ok(None),
            answered => answered.map(Some).map_err(|error| self.failed(error)),
        }
    }

    /// The leader's partition count, which a new follower's store is created with.
    pub async fn partition_count(&self) -> Result<u32, FollowError> {
        Ok(self.partitions(&self.client()?).await?.partition_count)
    }

    pub(super) async fn partitions(&self, client: &Client) -> Result<PartitionsInfo, FollowError> {
        client.partitions().await.map_err(|error| self.failed(error))
    }

    /// The leader's records of `partition` from `from`, as it stores them (personal data
    /// sealed), whole appends, at most about
    /// `limit`; waits up to `wait_ms` for one. `follower` names this follower so the
    /// leader counts what it holds (for `min_insync_followers`).
    pub(super) async fn fetch(
        &self,
        client: &Client,
        partition: Partition,
        from: Offset,
        limit: usize,
        wait_ms: u64,
        follower: Option<&str>,
    ) -> Result<PartitionEvents, FollowError> {
        client
            .fetch_sealed(partition, from, limit, wait_ms, follower)
            .await
            .map_err(|error| self.failed(error))
    }

    /// The leader's key changes after `after`, at most `limit`, and its epoch; none from
    /// a leader that predates them.
    pub(super) async fn keys(
        &self,
        client: &Client,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<SubjectKey>, u64), FollowError> {
        match client.keys(after, limit).await {
            Ok(changes) => Ok((changes.keys, changes.leader_epoch)),
            Err(error) if error.status() == Some(404) => Ok((Vec::new(), 0)),
            Err(error) => Err(self.failed(error)),
        }
    }

    /// The leader's record at `offset` of `partition`, if it has one.
    pub(super) async fn record_at(
        &self,
        client: &Client,
        partition: Partition,
        offset: Offset,
    ) -> Result<Option<RecordedEvent>, FollowError> {
        let fetched = self.fetch(client, partition, offset, 1, 0, None).await?;
        Ok(fetched
            .events
            .into_iter()
            .next()
            .filter(|record| record.offset == offset))
    }

    /// The leader's consumer groups; `None` when its store keeps none.
    pub(super) async fn groups(&self, client: &Client) -> Result<Option<Vec<GroupSummary>>, FollowError> {
        self.unless_unsupported(client.groups().await)
    }

    /// One of the leader's groups, with its dead letters.
    pub(super) async fn group(
        &self,
        client: &Client,
        group: &str,
    ) -> Result<(GroupDescription, Vec<DeadLetter>), FollowError> {
        let description = client.group(group).await.map_err(|error| self.failed(error))?;
        let letters = client
            .dead_letters(Some(group))
            .await
            .map_err(|error| self.failed(error))?;
        Ok((description, letters))
    }
}
