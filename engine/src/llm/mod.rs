//! LLM backends: the `builtin` retrieval responder, the seed's `webhook` contract and
//! OpenAI-compatible chat completions, behind one trait; [`Backends`] picks one per session
//! by weight and falls back when it fails.

mod builtin;
mod openai;
mod select;
#[cfg(test)]
mod testkit;
mod webhook;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

pub use builtin::BuiltinBackend;
pub use openai::OpenAiBackend;
pub use select::{Backends, NamedBackend, TurnFailure, TurnOutcome};
pub use webhook::WebhookBackend;

use crate::model::{AgentId, Message, Session};
use crate::workflow::TurnContext;

/// Default request timeout of remote backends.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of recent messages sent to remote backends.
pub const DEFAULT_CONTEXT_WINDOW: usize = 20;

/// What a backend sees of the turn.
pub struct TurnInput<'a> {
    pub agent_id: AgentId,
    pub session: &'a Session,
    /// The session's log, ending with the customer's new message.
    pub history: &'a [Message],
}

impl TurnInput<'_> {
    /// The customer's newest message text.
    pub fn last_human_text(&self) -> &str {
        self.history
            .iter()
            .rev()
            .find(|m| m.role == crate::model::Role::Human)
            .map(|m| m.text.as_str())
            .unwrap_or("")
    }
}

/// A backend's answer: the reply text and metadata stored with the AI message. Workflow
/// actions were applied to the [`TurnContext`] while generating.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generation {
    pub content: String,
    pub metadata: Value,
}

/// Receives reply text as it is generated (for WebSocket streaming and channel edits).
pub type DeltaSink<'a> = &'a (dyn Fn(&str) + Send + Sync);

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("backend timed out after {0:?}")]
    Timeout(Duration),
    #[error("backend unreachable: {0}")]
    Connect(String),
    #[error("backend answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("backend answer is invalid: {0}")]
    InvalidResponse(String),
    #[error("backend misconfigured: {0}")]
    Config(String),
    #[error("too many tool rounds ({0}) without a final answer")]
    ToolRounds(u32),
}

impl LlmError {
    /// Short, stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::Timeout(_) => "timeout",
            LlmError::Connect(_) => "connect",
            LlmError::Status { .. } => "status",
            LlmError::InvalidResponse(_) => "invalid_response",
            LlmError::Config(_) => "config",
            LlmError::ToolRounds(_) => "tool_rounds",
        }
    }

    /// Maps a reqwest error, keeping timeouts apart. URLs are left out: they may hold keys.
    pub fn from_reqwest(e: reqwest::Error, timeout: Duration) -> LlmError {
        if e.is_timeout() {
            LlmError::Timeout(timeout)
        } else if e.is_decode() {
            LlmError::InvalidResponse(e.without_url().to_string())
        } else {
            LlmError::Connect(e.without_url().to_string())
        }
    }
}

#[async_trait]
pub trait LlmBackend: Send + Sync {
    fn kind(&self) -> &'static str;

    /// Produces the reply to the newest customer message, applying workflow actions
    /// (state changes, results, finish) to `ctx` and streaming text to `deltas`.
    async fn generate(
        &self,
        input: &TurnInput<'_>,
        ctx: &mut TurnContext<'_>,
        deltas: DeltaSink<'_>,
    ) -> Result<Generation, LlmError>;
}

/// Trims a body for error messages so a huge HTML error page does not flood logs.
pub(crate) fn snippet(body: &str) -> String {
    const MAX: usize = 300;
    if body.len() <= MAX {
        body.to_string()
    } else {
        let mut end = MAX;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &body[..end])
    }
}
