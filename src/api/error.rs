//! API errors: `{"error": {"code", "message", "details"?}}` with the matching status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use parley_actors::NodeError;
use serde_json::{json, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// For `session_moved`: the new owner's URL, when known (see [`MovedTo`]).
    pub moved_to: Option<String>,
    /// Seconds to wait before retrying (`Retry-After`), for 429s.
    pub retry_after: Option<u64>,
}

/// Response extension of a `session_moved` error naming the new owner, so the routing
/// layer can remember it and forward the client's retry straight there.
#[derive(Debug, Clone)]
pub struct MovedTo(pub String);

/// Header of a `session_moved` error: a forwarding node retries elsewhere on seeing it.
pub const SESSION_MOVED_HEADER: &str = "x-parley-session-moved";

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            moved_to: None,
            retry_after: None,
        }
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(message: impl Into<String>, wait: std::time::Duration) -> Self {
        ApiError {
            retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            message,
        )
    }

    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid or missing token",
        )
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// Maps an extractor's rejection (bad JSON, body over the limit, …) to a JSON error.
    pub fn from_rejection(status: StatusCode, text: String) -> Self {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large("request body is too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ApiError::new(status, "unsupported_media_type", text)
            }
            s if s.is_client_error() => ApiError::invalid(text),
            _ => ApiError::new(status, "bad_request", text),
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let msg = e.to_string();
        match e {
            NodeError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", msg),
            NodeError::Unauthorized => ApiError::unauthorized(),
            NodeError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            NodeError::SessionClosed => ApiError::new(StatusCode::CONFLICT, "session_closed", msg),
            NodeError::LimitReached(m) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "session_limit_reached", m)
            }
            NodeError::DailyLimitExceeded(session) => ApiError {
                details: Some(json!({"session_id": session, "status": "daily_limit_exceeded"})),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "daily_limit_exceeded", msg)
            },
            NodeError::AgentNotRunning => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "agent_not_running", msg)
            }
            NodeError::InvalidDefinition(errs) => ApiError {
                details: serde_json::to_value(&errs.0).ok(),
                ..ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_definition",
                    errs.to_string(),
                )
            },
            NodeError::Invalid(m) => ApiError::invalid(m),
            NodeError::InvalidFields(errs) => ApiError {
                details: serde_json::to_value(&errs.0).ok(),
                ..ApiError::invalid(errs.to_string())
            },
            NodeError::StartFailed(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "agent_start_failed", msg)
            }
            NodeError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            NodeError::Upstream(m) => ApiError::new(StatusCode::BAD_GATEWAY, "upstream_error", m),
            NodeError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg)
            }
            NodeError::Moved(url) => ApiError {
                moved_to: url,
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "session_moved", msg)
            },
            NodeError::SessionCrashed => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "session_restarted", msg)
            }
            NodeError::Internal(_) => {
                tracing::error!(error = %msg, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(d) = self.details {
            error["details"] = d;
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(v) = self
            .retry_after
            .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.code == "session_moved" {
            let headers = response.headers_mut();
            headers.insert(SESSION_MOVED_HEADER, HeaderValue::from_static("1"));
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            if let Some(url) = self.moved_to {
                response.extensions_mut().insert(MovedTo(url));
            }
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
