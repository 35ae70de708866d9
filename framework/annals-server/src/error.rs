//! Every error the API returns: JSON `{"error", "message", …}` with a stable code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Map<String, Value>,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <token>` header is required",
        )
    }

    /// 403 `forbidden`: the token's role is below the route's.
    pub(crate) fn forbidden(needed: crate::Role, has: crate::Role) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this route needs a token with the {needed} role; this one has {has}"),
        )
        .with("role_needed", needed.as_str())
    }

    /// 408 `request_timeout`: the body did not arrive in time.
    pub(crate) fn request_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request body did not arrive within {limit:?}"),
        )
    }

    /// 413 `payload_too_large`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// Adds the append's outcome (it happened, whatever else failed).
    pub(crate) fn with_outcome(self, outcome: &annals::AppendOutcome) -> Self {
        self.with("outcome", serde_json::to_value(outcome).unwrap_or(Value::Null))
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The code, for metrics.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl From<annals::Error> for ApiError {
    fn from(error: annals::Error) -> Self {
        let code = error.code();
        let status = match code {
            "bad_request" | "json_too_deep" => StatusCode::BAD_REQUEST,
            "not_found" => StatusCode::NOT_FOUND,
            "wrong_expected_version"
            | "command_id_conflict"
            | "group_has_members"
            | "fenced"
            | "replication_gap"
            | "not_a_replica" => StatusCode::CONFLICT,
            "read_only_replica" => StatusCode::FORBIDDEN,
            "stream_deleted" | "subject_erased" => StatusCode::GONE,
            "payload_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
            "unsupported" => StatusCode::NOT_IMPLEMENTED,
            "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(%error, "request failed");
        }
        let mut api = ApiError::new(status, code, error.to_string());
        if let annals::Error::ReadOnlyReplica { leader } = &error {
            api = api.with("leader", leader.clone());
        }
        if let annals::Error::WrongExpectedVersion { expected, actual, .. } = &error {
            api = api
                .with("expected", serde_json::to_value(expected).unwrap_or(Value::Null))
                .with("actual", actual.0);
        }
        api
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        body.extend(self.extra);
        let mut response = (self.status, Json(Value::Object(body))).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

/// The code of an error response, for the metrics layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorCode(pub(crate) &'static str);
