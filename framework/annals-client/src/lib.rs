//! The HTTP API of an `annals serve`: its wire types ([`wire`]) and a typed client.
//!
//! ```no_run
//! # async fn demo() -> Result<(), annals_client::ClientError> {
//! use annals_client::Client;
//!
//! let server = Client::new("http://127.0.0.1:7070", None);
//! let partitions = server.partitions().await?;
//! println!("{} partitions, {}", partitions.partition_count, partitions.role);
//! # Ok(()) }
//! ```

pub mod wire;

use std::path::Path;

use annals::group::admin::{DeadLetter, GroupDescription, GroupSummary, ResetTo};
use annals::{AppendOutcome, Offset, Partition, Position, StreamId, StreamInfo, Version};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;
use serde_json::json;

use annals::personal::{Erasure, Subject};
use wire::{
    AppendBody, DeadLettersPage, ErrorBody, GroupWait, GroupsPage, KeyChanges, PartitionEvents, PartitionsInfo,
    StreamDeleted, StreamEvents, StreamsPage,
};

/// An HTTP client builder (rustls) trusting the platform's certificate authorities, or
/// only those of the PEM file `ca_file` when one is given: a private authority's, for
/// servers with certificates of their own.
pub fn http_trusting(ca_file: Option<&Path>) -> Result<reqwest::ClientBuilder, ClientError> {
    let builder = reqwest::Client::builder();
    let Some(path) = ca_file else { return Ok(builder) };
    let invalid = |reason: String| ClientError::Certificate {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|error| invalid(error.to_string()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| invalid(error.to_string()))?;
    if certificates.is_empty() {
        return Err(invalid("no certificate in it".into()));
    }
    Ok(builder.tls_certs_only(certificates))
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A certificate authority file could not be read.
    #[error("cannot use the certificate authority file {path}: {reason}")]
    Certificate {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        /// The server's base URL.
        url: String,
        /// The HTTP client's error.
        source: reqwest::Error,
    },
    /// The server answered with an error.
    #[error("{url} answered {status}: {}", body.message)]
    Api {
        /// The server's base URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The error's body: its code and details.
        body: ErrorBody,
    },
    /// The server answered something the API does not say (not JSON, another shape).
    #[error("{url} answered {status} unexpectedly: {message}")]
    Unexpected {
        /// The server's base URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What was wrong with it.
        message: String,
    },
}

impl ClientError {
    /// The HTTP status of an answer, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Unreachable { .. } | ClientError::Certificate { .. } => None,
            ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } => Some(*status),
        }
    }

    /// The error code of an API error (`not_found`, `unauthorized`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } => Some(&body.error),
            _ => None,
        }
    }
}

/// A client of one server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
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

/// The path of a fetch of `partition`.
fn fetch_path(
    partition: Partition,
    from: Offset,
    limit: usize,
    wait_ms: u64,
    follower: Option<&str>,
    sealed: bool,
) -> String {
    let mut path = format!("/v1/partitions/{partition}/events?from_offset={from}&limit={limit}&wait_ms={wait_ms}");
    if let Some(follower) = follower {
        path.push_str("&follower=");
        path.push_str(&segment(follower));
    }
    if sealed {
        path.push_str("&sealed=true");
    }
    path
}

impl Client {
    /// A client of the server at `base` (`http://host:port` or `https://…`), with its
    /// bearer token if it needs one.
    pub fn new(base: &str, token: Option<String>) -> Client {
        Client::with_http(base, token, reqwest::Client::new())
    }

    /// As [`new`](Client::new), trusting only the certificate authorities of the PEM
    /// file `ca_file`, if given.
    pub fn trusting(base: &str, token: Option<String>, ca_file: Option<&Path>) -> Result<Client, ClientError> {
        let http = http_trusting(ca_file)?
            .build()
            .map_err(|error| ClientError::Certificate {
                path: ca_file.map(|path| path.display().to_string()).unwrap_or_default(),
                reason: error.to_string(),
            })?;
        Ok(Client::with_http(base, token, http))
    }

    /// As [`new`](Client::new), with an HTTP client of the caller's (timeouts, TLS).
    pub fn with_http(base: &str, token: Option<String>, http: reqwest::Client) -> Client {
        Client {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        }
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, ClientError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let unreachable = |source| ClientError::Unreachable {
            url: self.base.clone(),
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let unexpected = |message: String| ClientError::Unexpected {
            url: self.base.clone(),
            status,
            message,
        };
        let body = response.bytes().await.map_err(unreachable)?;
        if !(200..300).contains(&status) {
            let body: ErrorBody =
                serde_json::from_slice(&body).map_err(|error| unexpected(format!("not an error body: {error}")))?;
            return Err(ClientError::Api {
                url: self.base.clone(),
                status,
                body,
            });
        }
        // Straight from the bytes into the typed answer: payloads are never re-encoded
        // through a `Value` (which would reorder their keys and round big numbers).
        serde_json::from_slice(&body).map_err(|error| match serde_json::from_slice::<IgnoredAny>(&body) {
            Err(not_json) => unexpected(format!("not JSON: {not_json}")),
            Ok(_) => unexpected(error.to_string()),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, ClientError> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.http.delete(format!("{}{path}", self.base))).await
    }

    /// `POST /v1/streams/{stream}/events`.
    pub async fn append(&self, stream: &StreamId, body: &AppendBody) -> Result<AppendOutcome, ClientError> {
        self.post(&format!("/v1/streams/{}/events", segment(stream.as_str())), body)
            .await
    }

    /// `GET /v1/streams/{stream}/events`: the stream's version and up to `limit`
    /// events from version `from`. A stream with no events reads as empty (the API
    /// answers it `not_found`).
    pub async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<StreamEvents, ClientError> {
        let path = format!(
            "/v1/streams/{}/events?from_version={from}&limit={limit}",
            segment(stream.as_str())
        );
        match self.get(&path).await {
            Err(error) if error.code() == Some("not_found") => Ok(StreamEvents {
                stream: stream.clone(),
                version: Version(0),
                events: Vec::new(),
            }),
            answered => answered,
        }
    }

    /// `GET /v1/partitions/{partition}/events`: whole appends from offset `from`, about
    /// `limit` records, waiting up to `wait_ms` for the first. `follower` names a
    /// follower, so that the leader counts what it holds.
    pub async fn fetch(
        &self,
        partition: Partition,
        from: Offset,
        limit: usize,
        wait_ms: u64,
        follower: Option<&str>,
    ) -> Result<PartitionEvents, ClientError> {
        self.get(&fetch_path(partition, from, limit, wait_ms, follower, false))
            .await
    }

    /// [`fetch`](Client::fetch) with `sealed=true`: records exactly as stored, their
    /// personal data sealed, as a follower copies them.
    pub async fn fetch_sealed(
        &self,
        partition: Partition,
        from: Offset,
        limit: usize,
        wait_ms: u64,
        follower: Option<&str>,
    ) -> Result<PartitionEvents, ClientError> {
        self.get(&fetch_path(partition, from, limit, wait_ms, follower, true))
            .await
    }

    /// `GET /v1/keys`: the leader's key changes after `after`, at most `limit`.
    pub async fn keys(&self, after: u64, limit: usize) -> Result<KeyChanges, ClientError> {
        self.get(&format!("/v1/keys?after={after}&limit={limit}")).await
    }

    /// `DELETE /v1/subjects/{subject}`: erases the subject.
    pub async fn erase_subject(&self, subject: &Subject) -> Result<Erasure, ClientError> {
        self.delete(&format!("/v1/subjects/{}", segment(subject.as_str())))
            .await
    }

    /// `GET /v1/partitions`.
    pub async fn partitions(&self) -> Result<PartitionsInfo, ClientError> {
        self.get("/v1/partitions").await
    }

    /// `GET /v1/streams`: streams in id order, of one category if given, after
    /// `after`.
    pub async fn streams(
        &self,
        category: Option<&str>,
        limit: usize,
        after: Option<&StreamId>,
    ) -> Result<Vec<StreamInfo>, ClientError> {
        let mut path = format!("/v1/streams?limit={limit}");
        if let Some(category) = category {
            path += &format!("&category={}", segment(category));
        }
        if let Some(after) = after {
            path += &format!("&after={}", segment(after.as_str()));
        }
        Ok(self.get::<StreamsPage>(&path).await?.streams)
    }

    /// `GET /v1/groups`.
    pub async fn groups(&self) -> Result<Vec<GroupSummary>, ClientError> {
        Ok(self.get::<GroupsPage>("/v1/groups").await?.groups)
    }

    /// `GET /v1/groups/{group}`.
    pub async fn group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        self.get(&format!("/v1/groups/{}", segment(group))).await
    }

    /// `GET /v1/groups/{group}/wait`: waits until `group` has committed past
    /// `position`, at most `timeout_ms` (the server caps it at 30 s).
    pub async fn wait_until(&self, group: &str, position: Position, timeout_ms: u64) -> Result<GroupWait, ClientError> {
        self.get(&format!(
            "/v1/groups/{}/wait?partition={}&offset={}&timeout_ms={timeout_ms}",
            segment(group),
            position.partition,
            position.offset
        ))
        .await
    }

    /// `POST /v1/groups/{group}/reset`.
    pub async fn reset(&self, group: &str, to: &ResetTo) -> Result<GroupDescription, ClientError> {
        self.post(&format!("/v1/groups/{}/reset", segment(group)), &json!({ "to": to }))
            .await
    }

    /// `POST /v1/groups/{group}/pause` or `…/resume`, of `partitions` (all when `None`).
    pub async fn set_paused(
        &self,
        group: &str,
        partitions: Option<Vec<Partition>>,
        paused: bool,
    ) -> Result<GroupDescription, ClientError> {
        let action = if paused { "pause" } else { "resume" };
        self.post(
            &format!("/v1/groups/{}/{action}", segment(group)),
            &json!({ "partitions": partitions }),
        )
        .await
    }

    /// `GET /v1/dead-letters`, of one group or all.
    pub async fn dead_letters(&self, group: Option<&str>) -> Result<Vec<DeadLetter>, ClientError> {
        let path = match group {
            Some(group) => format!("/v1/dead-letters?group={}", segment(group)),
            None => "/v1/dead-letters".to_owned(),
        };
        Ok(self.get::<DeadLettersPage>(&path).await?.dead_letters)
    }

    /// `POST /v1/dead-letters/{id}/retry`.
    pub async fn retry_dead_letter(&self, id: i64) -> Result<DeadLetter, ClientError> {
        self.post(&format!("/v1/dead-letters/{id}/retry"), &json!({})).await
    }

    /// `DELETE /v1/streams/{stream}?hard=`: deletes a stream (see [`annals::Deletion`]).
    pub async fn delete_stream(&self, stream: &StreamId, hard: bool) -> Result<StreamDeleted, ClientError> {
        self.delete(&format!("/v1/streams/{}?hard={hard}", segment(stream.as_str())))
            .await
    }

    /// `POST /v1/dead-letters/{id}/skip`.
    pub async fn skip_dead_letter(&self, id: i64) -> Result<DeadLetter, ClientError> {
        self.post(&format!("/v1/dead-letters/{id}/skip"), &json!({})).await
    }
}
