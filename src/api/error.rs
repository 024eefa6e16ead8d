//! API errors: `{"error": {"code", "message", "details"?}}` with the matching status.

use axum::http::StatusCode;
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
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
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
            NodeError::SessionClosed => ApiError::new(StatusCode::CONFLICT, "session_closed", msg),
            NodeError::AgentNotRunning => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "agent_not_running", msg)
            }
            NodeError::InvalidDefinition(errs) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_definition",
                message: errs.to_string(),
                details: serde_json::to_value(&errs.0).ok(),
            },
            NodeError::Invalid(m) => ApiError::invalid(m),
            NodeError::StartFailed(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "agent_start_failed", msg)
            }
            NodeError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            NodeError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg)
            }
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
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
