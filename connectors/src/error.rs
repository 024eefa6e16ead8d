//! How a platform said no.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConnectorError {
    /// The delivery failed verification (signature, secret, token): answer 401.
    #[error("unauthorized delivery: {0}")]
    Unauthorized(String),
    /// The delivery is not what the platform sends: answer 400.
    #[error("malformed delivery: {0}")]
    Malformed(String),
    /// The platform asks us to wait this long before trying again.
    #[error("rate limited; retry after {0:?}")]
    RateLimited(Duration),
    /// The platform refused the call; `code` is its own error code or name.
    #[error("{platform} refused ({status}): {code}: {message}")]
    Refused {
        platform: &'static str,
        status: u16,
        code: String,
        message: String,
    },
    /// The platform could not be reached or answered something unreadable.
    #[error("{0}")]
    Transport(String),
    /// The platform has no such operation (editing on WhatsApp, templates on Slack).
    #[error("{0}")]
    Unsupported(String),
    /// The connection's config cannot do this (a missing URL or secret, no public address).
    #[error("{0}")]
    Config(String),
}

pub type ConnectorResult<T> = Result<T, ConnectorError>;

impl ConnectorError {
    /// The endpoint is gone for good (HTTP 410): stop calling it.
    pub fn is_gone(&self) -> bool {
        matches!(self, ConnectorError::Refused { code, .. } if code == "gone")
    }

    /// Another consumer holds what the call needs (Telegram `getUpdates` 409 while a
    /// webhook is set or another poller runs).
    pub fn is_conflict(&self) -> bool {
        matches!(self, ConnectorError::Refused { code, .. } if code == "conflict")
    }

    /// Only an approved template reaches this customer now (WhatsApp's 24-hour window).
    pub fn is_window_closed(&self) -> bool {
        matches!(self, ConnectorError::Refused { code, .. } if code == crate::whatsapp::OUTSIDE_WINDOW)
    }

    /// A call to `platform` that failed on the way, with its causes but without the URL
    /// (a Telegram URL holds the bot token).
    pub(crate) fn transport(platform: &str, err: reqwest::Error) -> ConnectorError {
        let err = err.without_url();
        let mut message = format!("{platform} unreachable: {err}");
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        ConnectorError::Transport(message)
    }
}

/// A `Retry-After` header in whole seconds, if there is one.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_secs)
}
