//! What a command works on: a store opened from `--db`, or an `annals serve` reached
//! over HTTP with `--server` (and `--token`). Commands call the same operations either
//! way and print the same output.

use annals::group::admin::{self, DeadLetter, GroupDescription, GroupSummary, ResetTo};
use annals::{
    AppendOutcome, AppendRequest, Metadata, NewEvent, Offset, Partition, RecordedEvent, Store, StreamId, StreamInfo,
    Version,
};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::output::{CliError, CliResult};

/// A store, or a server.
pub(crate) enum Target {
    Store(Store),
    Server(Remote),
}

/// An `annals serve` over HTTP.
pub(crate) struct Remote {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// Partitions as `annals stats` shows them.
pub(crate) struct Partitions {
    pub(crate) backend: String,
    pub(crate) role: String,
    pub(crate) leader_epoch: u64,
    pub(crate) next_offsets: Vec<Offset>,
    pub(crate) replication_lag: Option<Vec<u64>>,
}

/// One event to append, as the command line gives it.
pub(crate) struct Append {
    pub(crate) stream: StreamId,
    pub(crate) expected: annals::ExpectedVersion,
    pub(crate) command_id: Option<uuid::Uuid>,
    pub(crate) event_type: String,
    pub(crate) data: String,
    pub(crate) metadata: Option<Metadata>,
    pub(crate) id: Option<uuid::Uuid>,
}

impl Remote {
    pub(crate) fn new(base: &str, token: Option<String>) -> Remote {
        Remote {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::new(),
        }
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> CliResult<T> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request
            .send()
            .await
            .map_err(|error| CliError::Usage(format!("cannot reach {}: {error}", self.base)))?;
        let status = response.status();
        let without_json = |error: &dyn std::fmt::Display| {
            CliError::Usage(format!("{} answered {status} without JSON: {error}", self.base))
        };
        let body = response.bytes().await.map_err(|error| without_json(&error))?;
        if !status.is_success() {
            return Err(CliError::Remote(
                serde_json::from_slice(&body).map_err(|error| without_json(&error))?,
            ));
        }
        // Straight from the bytes into the typed answer: payloads are never re-encoded
        // through a `Value` (which would reorder their keys and round big numbers).
        serde_json::from_slice(&body).map_err(|error| match serde_json::from_slice::<IgnoredAny>(&body) {
            Err(not_json) => without_json(&not_json),
            Ok(_) => CliError::Usage(format!("unexpected answer: {error}")),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> CliResult<T> {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: impl Serialize) -> CliResult<T> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }
}

/// The body of `POST /v1/streams/{stream}/events`, for one event.
#[derive(Serialize)]
struct AppendBody<'a> {
    expected_version: annals::ExpectedVersion,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_id: Option<uuid::Uuid>,
    events: [EventBody<'a>; 1],
}

#[derive(Serialize)]
struct EventBody<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    data: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Metadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<uuid::Uuid>,
}

/// Records read from a stream (with its `version`) or a partition (with its
/// `high_watermark`).
#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    version: Version,
    #[serde(default)]
    high_watermark: Offset,
    events: Vec<RecordedEvent>,
}

/// A path segment, percent-encoded.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

impl Target {
    pub(crate) async fn open(db: &str, server: Option<&str>, token: Option<String>) -> CliResult<Target> {
        Ok(match server {
            Some(server) => Target::Server(Remote::new(server, token)),
            None => Target::Store(crate::commands::open_existing(db).await?),
        })
    }

    pub(crate) async fn close(self) {
        if let Target::Store(store) = self {
            store.close().await;
        }
    }

    pub(crate) async fn append(&self, append: Append) -> CliResult<AppendOutcome> {
        match self {
            Target::Store(store) => {
                let mut event = NewEvent::from_json_text(append.event_type, append.data)?;
                if let Some(metadata) = append.metadata {
                    event = event.with_metadata(metadata);
                }
                if let Some(id) = append.id {
                    event = event.with_id(id);
                }
                let mut request = AppendRequest::new(append.stream, append.expected).event(event);
                request.command_id = append.command_id;
                Ok(store.append(request).await?)
            }
            Target::Server(remote) => {
                // The payload is sent as the text given, as `--db` stores it.
                let data = RawValue::from_string(append.data)
                    .map_err(|error| CliError::Usage(format!("--data must be JSON: {error}")))?;
                let body = AppendBody {
                    expected_version: append.expected,
                    command_id: append.command_id,
                    events: [EventBody {
                        event_type: &append.event_type,
                        data: &data,
                        metadata: append.metadata.as_ref(),
                        id: append.id,
                    }],
                };
                remote
                    .post(&format!("/v1/streams/{}/events", segment(append.stream.as_str())), body)
                    .await
            }
        }
    }

    /// The stream's version and up to `limit` events from `from`.
    pub(crate) async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> CliResult<(Version, Vec<RecordedEvent>)> {
        match self {
            Target::Store(store) => Ok((
                store.stream_version(stream).await?,
                store.read_stream(stream, from, limit).await?,
            )),
            Target::Server(remote) => {
                let path = format!(
                    "/v1/streams/{}/events?from_version={from}&limit={limit}",
                    segment(stream.as_str())
                );
                match remote.get::<Page>(&path).await {
                    Ok(page) => Ok((page.version, page.events)),
                    // The API answers 404 for a stream with no events; the store reads it as empty.
                    Err(CliError::Remote(body)) if body["error"] == "not_found" => Ok((0, Vec::new())),
                    Err(error) => Err(error),
                }
            }
        }
    }

    /// Records of a partition from `from`, waiting up to `wait_ms` for the first, and
    /// the partition's high watermark.
    pub(crate) async fn fetch(
        &self,
        partition: Partition,
        from: Offset,
        limit: usize,
        wait_ms: u64,
    ) -> CliResult<(Vec<RecordedEvent>, Offset)> {
        match self {
            Target::Store(store) => {
                let wait = std::time::Duration::from_millis(wait_ms);
                let records = store.fetch(partition, from, limit, wait).await?;
                Ok((records, store.high_watermark(partition).await?))
            }
            Target::Server(remote) => {
                let page: Page = remote
                    .get(&format!(
                        "/v1/partitions/{partition}/events?from_offset={from}&limit={limit}&wait_ms={wait_ms}"
                    ))
                    .await?;
                Ok((page.events, page.high_watermark))
            }
        }
    }

    pub(crate) async fn list_streams(
        &self,
        category: Option<&str>,
        limit: usize,
        after: Option<&StreamId>,
    ) -> CliResult<Vec<StreamInfo>> {
        match self {
            Target::Store(store) => Ok(store.list_streams(category, limit, after).await?),
            Target::Server(remote) => {
                let mut path = format!("/v1/streams?limit={limit}");
                if let Some(category) = category {
                    path += &format!("&category={}", segment(category));
                }
                if let Some(after) = after {
                    path += &format!("&after={}", segment(after.as_str()));
                }
                let body: Value = remote.get(&path).await?;
                serde_json::from_value(body["streams"].clone())
                    .map_err(|error| CliError::Usage(format!("unexpected answer: {error}")))
            }
        }
    }

    /// The backend's name, the store's role and epoch, every partition's next offset
    /// and, through a follower's server, its replication lag.
    pub(crate) async fn partitions(&self) -> CliResult<Partitions> {
        match self {
            Target::Store(store) => {
                let replica = store.refresh_replica().await?;
                Ok(Partitions {
                    backend: store.backend_name().to_owned(),
                    role: replica.role().to_owned(),
                    leader_epoch: replica.epoch,
                    next_offsets: store.high_watermarks().await?,
                    replication_lag: None,
                })
            }
            Target::Server(remote) => {
                let body: Value = remote.get("/v1/partitions").await?;
                let partitions = body["partitions"].as_array().cloned().unwrap_or_default();
                let lags: Vec<Option<u64>> = partitions.iter().map(|p| p["replication_lag"].as_u64()).collect();
                Ok(Partitions {
                    backend: body["backend"].as_str().unwrap_or("server").to_owned(),
                    role: body["role"].as_str().unwrap_or("leader").to_owned(),
                    leader_epoch: body["leader_epoch"].as_u64().unwrap_or(0),
                    next_offsets: partitions
                        .iter()
                        .map(|p| p["next_offset"].as_u64().unwrap_or(0))
                        .collect(),
                    replication_lag: lags
                        .iter()
                        .all(Option::is_some)
                        .then(|| lags.into_iter().flatten().collect()),
                })
            }
        }
    }

    pub(crate) async fn groups(&self) -> CliResult<Vec<GroupSummary>> {
        match self {
            Target::Store(store) => Ok(admin::list(store).await?),
            Target::Server(remote) => {
                let body: Value = remote.get("/v1/groups").await?;
                serde_json::from_value(body["groups"].clone())
                    .map_err(|error| CliError::Usage(format!("unexpected answer: {error}")))
            }
        }
    }

    pub(crate) async fn describe(&self, group: &str) -> CliResult<GroupDescription> {
        match self {
            Target::Store(store) => Ok(admin::describe(store, group).await?),
            Target::Server(remote) => remote.get(&format!("/v1/groups/{}", segment(group))).await,
        }
    }

    pub(crate) async fn reset(&self, group: &str, to: ResetTo) -> CliResult<GroupDescription> {
        match self {
            Target::Store(store) => {
                admin::reset(store, group, to).await?;
                Ok(admin::describe(store, group).await?)
            }
            Target::Server(remote) => {
                remote
                    .post(&format!("/v1/groups/{}/reset", segment(group)), json!({ "to": to }))
                    .await
            }
        }
    }

    pub(crate) async fn set_paused(
        &self,
        group: &str,
        partitions: Option<Vec<Partition>>,
        paused: bool,
    ) -> CliResult<GroupDescription> {
        match self {
            Target::Store(store) => {
                if paused {
                    admin::pause(store, group, partitions).await?;
                } else {
                    admin::resume(store, group, partitions).await?;
                }
                Ok(admin::describe(store, group).await?)
            }
            Target::Server(remote) => {
                let action = if paused { "pause" } else { "resume" };
                remote
                    .post(
                        &format!("/v1/groups/{}/{action}", segment(group)),
                        json!({ "partitions": partitions }),
                    )
                    .await
            }
        }
    }

    pub(crate) async fn dead_letters(&self, group: Option<&str>) -> CliResult<Vec<DeadLetter>> {
        match self {
            Target::Store(store) => Ok(admin::dead_letters(store, group).await?),
            Target::Server(remote) => {
                let path = match group {
                    Some(group) => format!("/v1/dead-letters?group={}", segment(group)),
                    None => "/v1/dead-letters".to_owned(),
                };
                let body: Value = remote.get(&path).await?;
                serde_json::from_value(body["dead_letters"].clone())
                    .map_err(|error| CliError::Usage(format!("unexpected answer: {error}")))
            }
        }
    }

    pub(crate) async fn dead_letter(&self, id: i64, retry: bool) -> CliResult<DeadLetter> {
        match self {
            Target::Store(store) if retry => Ok(admin::retry_dead_letter(store, id).await?),
            Target::Store(store) => Ok(admin::skip_dead_letter(store, id).await?),
            Target::Server(remote) => {
                let action = if retry { "retry" } else { "skip" };
                remote.post(&format!("/v1/dead-letters/{id}/{action}"), json!({})).await
            }
        }
    }
}
