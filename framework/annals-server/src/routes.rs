//! The handlers of API v1 (DESIGN §10).

use crate::follower::FollowerState;
use annals_client::wire::{
    AppendBody, DeadLettersPage, GroupWait, GroupsPage, KeyChanges, PartitionEvents, PartitionInfo, PartitionsInfo,
    StreamEvents, StreamsPage,
};
use std::collections::BTreeMap;
use std::time::Duration;

use annals::group::admin::{self, ResetTo};
use annals::{AppendOutcome, AppendRequest, Deletion, NewEvent, Offset, Partition, StreamId, Version};
use axum::body::{to_bytes, Body};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::AppState;

/// Longest long poll a fetch may ask for.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Most records one read returns.
pub(crate) const MAX_LIMIT: usize = 10_000;

type ApiResult<T = Response> = Result<T, ApiError>;

fn path<T>(extracted: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    extracted
        .map(|Path(value)| value)
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
}

fn query<T>(extracted: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    extracted
        .map(|Query(value)| value)
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
}

fn stream_id(text: String) -> ApiResult<StreamId> {
    Ok(StreamId::new(text).map_err(annals::Error::from)?)
}

/// Reads the whole body, refusing more than the limit with 413, and a body still
/// coming after the server's body timeout with 408.
async fn body_bytes(state: &AppState, body: Body) -> ApiResult<axum::body::Bytes> {
    let limit = state.max_body_bytes;
    let read = tokio::time::timeout(state.body_timeout, to_bytes(body, limit))
        .await
        .map_err(|_| ApiError::request_timeout(state.body_timeout))?;
    read.map_err(|error| {
        let over_limit =
            std::error::Error::source(&error).is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if over_limit {
            ApiError::too_large(limit)
        } else {
            ApiError::bad_request(format!("cannot read the request body: {error}"))
        }
    })
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|error| ApiError::bad_request(format!("invalid request body: {error}")))
}

/// `POST /v1/streams/{stream}/events`. A W3C `traceparent` header goes into the
/// metadata of every event that does not carry one of its own (an invalid one is
/// ignored, as the W3C recommendation says).
pub(crate) async fn append(
    State(state): State<AppState>,
    stream: Result<Path<String>, PathRejection>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult {
    let traceparent: Option<annals::TraceParent> = headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse().ok());
    if let Some(follower) = &state.follower {
        // Served by `annals follow`: a replica until it is promoted, also while it is
        // still checking its log against the leader's (its stored role may be a
        // leader's until then).
        let status = follower.status();
        if status.state != FollowerState::Promoted {
            return Err(annals::Error::ReadOnlyReplica { leader: status.leader }.into());
        }
    }
    let stream = stream_id(path(stream)?)?;
    let bytes = body_bytes(&state, body).await?;
    let body: AppendBody = parse(&bytes)?;
    let mut request = AppendRequest::new(stream, body.expected_version);
    if let Some(command_id) = body.command_id {
        request = request.command_id(command_id);
    }
    for event in body.events {
        let mut new = NewEvent::raw(event.event_type, event.data);
        for data in event.personal {
            new = new.personal(data.subject, data.fields);
        }
        let mut metadata = event.metadata.unwrap_or_default();
        if metadata.traceparent.is_none() {
            metadata.traceparent = traceparent;
        }
        if metadata != annals::Metadata::default() {
            new = new.with_metadata(metadata);
        }
        if let Some(id) = event.id {
            new = new.with_id(id);
        }
        request = request.event(new);
    }
    // The store counts the append (annals_appends_total and the others).
    let outcome = state.store.append(request).await?;
    insync(&state, &outcome).await?;
    let status = if outcome.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(outcome)).into_response())
}

/// Waits, when the server requires it, for enough followers to hold `outcome`.
async fn insync(state: &AppState, outcome: &AppendOutcome) -> Result<(), ApiError> {
    let needed = state.min_insync_followers;
    if needed == 0 {
        return Ok(());
    }
    let holding = state.followers.wait(outcome, needed, state.ack_timeout).await;
    if holding < needed {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "replication_timeout",
            format!(
                "the append is durable on the leader, but only {holding} of the {needed} followers required held it within {} ms",
                state.ack_timeout.as_millis()
            ),
        )
        .with_outcome(outcome));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteParams {
    #[serde(default)]
    hard: bool,
}

/// `DELETE /v1/streams/{stream}?hard=false`: appends the stream's deletion record,
/// which redacts its earlier records. 200 with the record's position and the mode.
pub(crate) async fn delete_stream(
    State(state): State<AppState>,
    stream: Result<Path<String>, PathRejection>,
    params: Result<Query<DeleteParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let stream = stream_id(path(stream)?)?;
    let params = query(params)?;
    let deletion = if params.hard { Deletion::Hard } else { Deletion::Soft };
    let outcome = state.store.delete_stream(&stream, deletion).await?;
    insync(&state, &outcome).await?;
    Ok(Json(json!({
        "stream": stream,
        "partition": outcome.partition,
        "offset": outcome.first_offset,
        "version": outcome.first_version,
        "hard": params.hard,
    })))
}

/// `DELETE /v1/subjects/{subject}`: erases the subject (deletes its key, so that its
/// personal data reads as erased everywhere). 200 with the erasure.
pub(crate) async fn erase_subject(
    State(state): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<annals::personal::Erasure>> {
    let subject = annals::personal::Subject::new(path(subject)?)?;
    let erasure = state.store.erase_subject(&subject).await?;
    insync(&state, &erasure.outcome).await?;
    Ok(Json(erasure))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeysParams {
    #[serde(default)]
    after: u64,
    #[serde(default = "five_hundred")]
    limit: usize,
}

/// `GET /v1/keys?after=SEQ&limit=N`: the key table's changes after `after`, for a
/// follower to copy: `{"keys": [{"seq","subject","key"}]}`, `"key": null` for an erasure.
pub(crate) async fn keys(
    State(state): State<AppState>,
    params: Result<Query<KeysParams>, QueryRejection>,
) -> ApiResult<Json<KeyChanges>> {
    let params = query(params)?;
    let keys = state
        .store
        .keys_since(params.after, params.limit.clamp(1, MAX_LIMIT))
        .await?;
    let leader_epoch = state.store.replica().epoch;
    Ok(Json(KeyChanges { keys, leader_epoch }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadParams {
    #[serde(default = "one")]
    from_version: Version,
    /// Read from the first event written at or after this time instead.
    from_time: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default = "hundred")]
    limit: usize,
}

fn one() -> Version {
    Version(1)
}

fn hundred() -> usize {
    100
}

/// `GET /v1/streams/{stream}/events`.
pub(crate) async fn read_stream(
    State(state): State<AppState>,
    stream: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> ApiResult {
    let stream = stream_id(path(stream)?)?;
    let params = query(params)?;
    let version = state.store.stream_version(&stream).await?;
    if !state.store.stream_exists(&stream).await? {
        return Err(annals::Error::StreamNotFound { stream }.into());
    }
    let from_version = match params.from_time {
        Some(time) => state.store.version_at(&stream, time).await?.unwrap_or(version + 1),
        None => params.from_version,
    };
    let events = state
        .store
        .read_stream(&stream, from_version, params.limit.min(MAX_LIMIT))
        .await?;
    Ok(Json(StreamEvents {
        stream,
        version,
        events,
    })
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamsParams {
    category: Option<String>,
    /// Streams whose id starts with this (not with `category`).
    prefix: Option<String>,
    after: Option<String>,
    #[serde(default = "hundred")]
    limit: usize,
}

/// `GET /v1/streams`: streams in id order (for the console and scripts).
pub(crate) async fn list_streams(
    State(state): State<AppState>,
    params: Result<Query<StreamsParams>, QueryRejection>,
) -> ApiResult<Json<StreamsPage>> {
    let params = query(params)?;
    let after = params.after.map(stream_id).transpose()?;
    let limit = params.limit.min(MAX_LIMIT);
    let streams = match (&params.prefix, &params.category) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give either prefix or category, not both")),
        (Some(prefix), None) => state.store.streams_with_prefix(prefix, limit, after.as_ref()).await?,
        (None, category) => {
            state
                .store
                .list_streams(category.as_deref(), limit, after.as_ref())
                .await?
        }
    };
    Ok(Json(StreamsPage { streams }))
}

/// `GET /v1/whoami`: the role of the caller's token (`admin` on a server without
/// tokens), so that a client shows only what it may do.
pub(crate) async fn whoami(axum::Extension(role): axum::Extension<crate::Role>) -> Json<Value> {
    Json(json!({ "role": role }))
}

/// `GET /v1/events/{id}`: the record with this event id.
pub(crate) async fn event(
    State(state): State<AppState>,
    id: Result<Path<uuid::Uuid>, PathRejection>,
) -> ApiResult<Json<annals::RecordedEvent>> {
    let id = path(id)?;
    match state.store.read_event(id).await? {
        Some(record) => Ok(Json(record)),
        None => Err(ApiError::not_found(format!("no record has the event id {id}"))),
    }
}

/// `GET /v1/partitions`.
pub(crate) async fn partitions(State(state): State<AppState>) -> ApiResult<Json<PartitionsInfo>> {
    let watermarks = state.store.high_watermarks().await?;
    let replica = state.store.replica();
    let follower = state.follower.as_ref().map(|follower| follower.status());
    let partitions = watermarks
        .iter()
        .enumerate()
        .map(|(partition, next)| PartitionInfo {
            next_offset: *next,
            partition: Partition(partition as u32),
            replication_lag: follower.as_ref().and_then(|status| status.lag.get(partition).copied()),
        })
        .collect();
    Ok(Json(PartitionsInfo {
        // Every record says whether it ends its append, and a fetch answers whole
        // appends: what a follower needs to ship them whole.
        append_boundaries: true,
        backend: state.store.backend_name().to_owned(),
        leader_epoch: replica.epoch,
        partition_count: state.store.partition_count(),
        partitions,
        replication: follower.map(|status| json!(status)),
        role: replica.role().to_owned(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FetchParams {
    #[serde(default)]
    from_offset: Offset,
    #[serde(default = "five_hundred")]
    limit: usize,
    #[serde(default)]
    wait_ms: u64,
    /// A follower's id: the fetch reports that it holds everything below `from_offset`.
    #[serde(default)]
    follower: Option<String>,
    /// Records exactly as stored, personal data sealed (what a follower copies).
    #[serde(default)]
    sealed: bool,
    /// Read from the first record written at or after this time instead.
    from_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Only records of these event types (comma-separated); answers at once.
    #[serde(rename = "type")]
    event_types: Option<String>,
}

fn five_hundred() -> usize {
    500
}

/// A request that may wait (a long poll, a wait for a group), holding one of the
/// server's `max_long_polls` permits; the gauge of waiting requests (process-wide, like
/// every metric) counts it until it ends, also when the request fails or its client
/// goes away.
struct LongPoll {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl LongPoll {
    /// A permit to wait, if the request asks to wait and one is free; past the cap the
    /// request answers at once instead.
    fn try_start(state: &AppState, wait_ms: u64) -> Option<LongPoll> {
        if wait_ms == 0 {
            return None;
        }
        let permit = state.long_polls.clone().try_acquire_owned().ok()?;
        metrics::gauge!("annals_long_polls_waiting").increment(1.0);
        Some(LongPoll { _permit: permit })
    }
}

impl Drop for LongPoll {
    fn drop(&mut self) {
        metrics::gauge!("annals_long_polls_waiting").decrement(1.0);
    }
}

/// `GET /v1/partitions/{p}/events`: fetch, long-polling up to `wait_ms`.
pub(crate) async fn fetch(
    State(state): State<AppState>,
    partition: Result<Path<Partition>, PathRejection>,
    params: Result<Query<FetchParams>, QueryRejection>,
) -> ApiResult {
    let partition = path(partition)?;
    let mut params = query(params)?;
    if let Some(time) = params.from_time {
        params.from_offset = state.store.offset_at(partition, time).await?;
    }
    if let Some(types) = &params.event_types {
        if params.sealed || params.follower.is_some() {
            return Err(ApiError::bad_request("type cannot be combined with sealed or follower"));
        }
        let types: Vec<String> = types.split(',').map(str::to_owned).collect();
        let limit = params.limit.clamp(1, MAX_LIMIT);
        let found = (state.store)
            .read_partition_of_types(partition, params.from_offset, limit, &types)
            .await?;
        return Ok(Json(PartitionEvents {
            partition,
            events: found.records,
            next_offset: found.next_offset,
            high_watermark: state.store.high_watermark(partition).await?,
        })
        .into_response());
    }
    if let Some(follower) = &params.follower {
        if partition >= state.store.partition_count() {
            return Err(annals::Error::PartitionOutOfRange {
                partition,
                partition_count: state.store.partition_count(),
            }
            .into());
        }
        // A follower can hold no more than the partition: a report past its end (a
        // bad or hostile client) would acknowledge appends nobody holds.
        let end = state.store.high_watermark(partition).await?;
        state.followers.report(follower, partition, params.from_offset.min(end));
    }
    let permit = LongPoll::try_start(&state, params.wait_ms);
    let wait = match permit {
        Some(_) => Duration::from_millis(params.wait_ms).min(MAX_WAIT),
        None => Duration::ZERO,
    };
    let limit = params.limit.clamp(1, MAX_LIMIT);
    let mut stopping = state.stopping.subscribe();
    let fetch = async |wait| match params.sealed {
        true => {
            state
                .store
                .fetch_sealed(partition, params.from_offset, limit, wait)
                .await
        }
        false => state.store.fetch(partition, params.from_offset, limit, wait).await,
    };
    let waited = tokio::select! {
        events = fetch(wait) => Some(events?),
        Ok(_) = stopping.wait_for(|stopping| *stopping) => None,
    };
    let events = match waited {
        Some(events) => events,
        // Shutting down: answer with what is there now, rather than hold the shutdown
        // for the rest of the wait.
        None => fetch(Duration::ZERO).await?,
    };
    drop(permit);
    metrics::counter!("annals_fetches_total").increment(1);
    let next_offset = events.last().map_or(params.from_offset, |r| r.offset + 1);
    let high_watermark = state.store.high_watermark(partition).await?;
    Ok(Json(PartitionEvents {
        partition,
        events,
        next_offset,
        high_watermark,
    })
    .into_response())
}

/// `GET /v1/groups`.
pub(crate) async fn groups(State(state): State<AppState>) -> ApiResult<Json<GroupsPage>> {
    Ok(Json(GroupsPage {
        groups: admin::list(&state.store).await?,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitParams {
    partition: Partition,
    offset: Offset,
    #[serde(default)]
    timeout_ms: u64,
}

/// `GET /v1/groups/{group}/wait?partition=&offset=&timeout_ms=`: read-your-writes. Answers
/// as soon as the group has committed past the position, or when the timeout (at most
/// 30 s) runs out: `{"group", "partition", "offset", "reached", "committed"}`, with
/// `reached` saying which.
pub(crate) async fn wait(
    State(state): State<AppState>,
    group: Result<Path<String>, PathRejection>,
    params: Result<Query<WaitParams>, QueryRejection>,
) -> ApiResult<Json<GroupWait>> {
    let group = path(group)?;
    let params = query(params)?;
    let position = annals::Position {
        partition: params.partition,
        offset: params.offset,
    };
    let permit = LongPoll::try_start(&state, params.timeout_ms);
    let timeout = match permit {
        Some(_) => Duration::from_millis(params.timeout_ms).min(MAX_WAIT),
        None => Duration::ZERO,
    };
    let mut stopping = state.stopping.subscribe();
    let waited = tokio::select! {
        waited = admin::wait_until(&state.store, &group, position, timeout) => Some(waited?),
        Ok(_) = stopping.wait_for(|stopping| *stopping) => None,
    };
    let waited = match waited {
        Some(waited) => waited,
        // Shutting down: answer with where the group stands now.
        None => admin::wait_until(&state.store, &group, position, Duration::ZERO).await?,
    };
    drop(permit);
    Ok(Json(GroupWait {
        group,
        partition: position.partition,
        offset: position.offset,
        reached: waited.reached,
        committed: waited.committed,
    }))
}

/// `GET /v1/groups/{group}`.
pub(crate) async fn group(
    State(state): State<AppState>,
    group: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let group = path(group)?;
    Ok(Json(json!(admin::describe(&state.store, &group).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    to: ResetTo,
}

/// `POST /v1/groups/{group}/reset`.
pub(crate) async fn reset(
    State(state): State<AppState>,
    group: Result<Path<String>, PathRejection>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let group = path(group)?;
    let bytes = body_bytes(&state, body).await?;
    let body: ResetBody = parse(&bytes)?;
    admin::reset(&state.store, &group, body.to).await?;
    Ok(Json(json!(admin::describe(&state.store, &group).await?)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    #[serde(default)]
    partitions: Option<Vec<Partition>>,
}

/// `POST /v1/groups/{group}/pause` and `/resume`: body `{"partitions": [p…]}` or none
/// (every partition).
async fn set_paused(state: AppState, group: String, body: Body, paused: bool) -> ApiResult<Json<Value>> {
    let bytes = body_bytes(&state, body).await?;
    let body: PauseBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        PauseBody::default()
    } else {
        parse(&bytes)?
    };
    if paused {
        admin::pause(&state.store, &group, body.partitions).await?;
    } else {
        admin::resume(&state.store, &group, body.partitions).await?;
    }
    Ok(Json(json!(admin::describe(&state.store, &group).await?)))
}

/// `POST /v1/groups/{group}/pause`.
pub(crate) async fn pause(
    State(state): State<AppState>,
    group: Result<Path<String>, PathRejection>,
    body: Body,
) -> ApiResult<Json<Value>> {
    set_paused(state, path(group)?, body, true).await
}

/// `POST /v1/groups/{group}/resume`.
pub(crate) async fn resume(
    State(state): State<AppState>,
    group: Result<Path<String>, PathRejection>,
    body: Body,
) -> ApiResult<Json<Value>> {
    set_paused(state, path(group)?, body, false).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeadLetterParams {
    group: Option<String>,
}

/// `GET /v1/dead-letters?group=`.
pub(crate) async fn dead_letters(
    State(state): State<AppState>,
    params: Result<Query<DeadLetterParams>, QueryRejection>,
) -> ApiResult<Json<DeadLettersPage>> {
    let params = query(params)?;
    let letters = admin::dead_letters(&state.store, params.group.as_deref()).await?;
    Ok(Json(DeadLettersPage { dead_letters: letters }))
}

/// `POST /v1/dead-letters/{id}/retry`.
pub(crate) async fn retry_dead_letter(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let id = path(id)?;
    Ok(Json(json!(admin::retry_dead_letter(&state.store, id).await?)))
}

/// `POST /v1/dead-letters/{id}/skip`.
pub(crate) async fn skip_dead_letter(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let id = path(id)?;
    Ok(Json(json!(admin::skip_dead_letter(&state.store, id).await?)))
}

/// `GET /health/live` (and `/health`): the process is up and serving requests.
pub(crate) async fn live(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"status": "ok", "role": state.store.replica().role()}))
}

/// `GET /health/ready`: whether the server can do its job. The store must answer a
/// read of its log (it is reachable and its schema is in place: a store opens only
/// once its migrations are applied), and a follower must be fetching from its leader.
/// `200 {"status":"ready"}`, or `503 {"status":"not_ready","reason":…}`.
pub(crate) async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let role = state.store.replica().role();
    // The probe needs no token: it says what is wrong in general terms only, and the
    // details (the store's error, the leader, the follower's last error) go to the log
    // and to `GET /v1/partitions`.
    let reason = match state.store.high_watermarks().await {
        Err(error) => {
            tracing::warn!(%error, "not ready: the store does not answer");
            Some("the store does not answer".to_owned())
        }
        Ok(_) => state.follower.as_ref().and_then(|follower| {
            let status = follower.status();
            match status.state {
                FollowerState::Following | FollowerState::Promoted => None,
                state => Some(format!(
                    "the follower is {}, not fetching from its leader",
                    json!(state).as_str().unwrap_or_default()
                )),
            }
        }),
    };
    match reason {
        None => (StatusCode::OK, Json(json!({"status": "ready", "role": role}))),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "role": role, "reason": reason})),
        ),
    }
}

/// `GET /metrics`: Prometheus text, with the high watermarks and every group's lag
/// read at scrape time.
pub(crate) async fn metrics(State(state): State<AppState>) -> ApiResult {
    let watermarks = state.store.high_watermarks().await?;
    for (partition, next) in watermarks.iter().enumerate() {
        metrics::gauge!("annals_partition_high_watermark", "partition" => partition.to_string()).set(next.0 as f64);
    }
    for group in admin::list(&state.store).await? {
        let described = admin::describe(&state.store, &group.group).await?;
        let lags: BTreeMap<Partition, u64> = described.partitions.iter().map(|p| (p.partition, p.lag)).collect();
        for (partition, lag) in lags {
            metrics::gauge!("annals_group_lag", "group" => group.group.clone(), "partition" => partition.to_string())
                .set(lag as f64);
        }
        metrics::gauge!("annals_group_members", "group" => group.group.clone()).set(group.members as f64);
    }
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response())
}

/// Any other path: JSON 404.
pub(crate) async fn unknown_route() -> ApiError {
    ApiError::not_found("no such route")
}

/// A known path with another method: JSON 405.
pub(crate) async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
