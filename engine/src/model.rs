//! Ids, sessions, messages and the enums the Chat API exposes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub type AgentId = Uuid;
pub type SessionId = Uuid;
pub type TenantId = Uuid;

/// Who wrote a message (the seed's message roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    Human,
    Ai,
    Operator,
    Copilot,
    Notes,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Human => "HUMAN",
            Role::Ai => "AI",
            Role::Operator => "OPERATOR",
            Role::Copilot => "COPILOT",
            Role::Notes => "NOTES",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "HUMAN" => Role::Human,
            "AI" => Role::Ai,
            "OPERATOR" => Role::Operator,
            "COPILOT" => Role::Copilot,
            "NOTES" => Role::Notes,
            _ => return None,
        })
    }
}

/// Who is answering the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    #[default]
    Regular,
    Operator,
    Copilot,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Regular, Mode::Operator, Mode::Copilot];

    /// Its serde name (what the API shows and the store's `mode` column holds).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Regular => "REGULAR",
            Mode::Operator => "OPERATOR",
            Mode::Copilot => "COPILOT",
        }
    }

    /// By name, in any case.
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }
}

/// How a session ended: the seed's fifteen close statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseStatus {
    Completed,
    Busy,
    Noanswer,
    Canceled,
    Failed,
    ResolvedByOperator,
    EscalatedByOperator,
    NotFound,
    NetworkError,
    Unknown,
    UserTimeout,
    Timeout,
    Declined,
    Transferred,
    DailyLimitExceeded,
}

impl CloseStatus {
    pub const ALL: [CloseStatus; 15] = [
        CloseStatus::Completed,
        CloseStatus::Busy,
        CloseStatus::Noanswer,
        CloseStatus::Canceled,
        CloseStatus::Failed,
        CloseStatus::ResolvedByOperator,
        CloseStatus::EscalatedByOperator,
        CloseStatus::NotFound,
        CloseStatus::NetworkError,
        CloseStatus::Unknown,
        CloseStatus::UserTimeout,
        CloseStatus::Timeout,
        CloseStatus::Declined,
        CloseStatus::Transferred,
        CloseStatus::DailyLimitExceeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseStatus::Completed => "completed",
            CloseStatus::Busy => "busy",
            CloseStatus::Noanswer => "noanswer",
            CloseStatus::Canceled => "canceled",
            CloseStatus::Failed => "failed",
            CloseStatus::ResolvedByOperator => "resolved_by_operator",
            CloseStatus::EscalatedByOperator => "escalated_by_operator",
            CloseStatus::NotFound => "not_found",
            CloseStatus::NetworkError => "network_error",
            CloseStatus::Unknown => "unknown",
            CloseStatus::UserTimeout => "user_timeout",
            CloseStatus::Timeout => "timeout",
            CloseStatus::Declined => "declined",
            CloseStatus::Transferred => "transferred",
            CloseStatus::DailyLimitExceeded => "daily_limit_exceeded",
        }
    }

    pub fn parse(s: &str) -> Option<CloseStatus> {
        CloseStatus::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Customer feedback on one AI message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Feedback {
    Good,
    Bad,
    #[default]
    None,
}

/// A file the customer sent with a message; the bytes live in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentMeta {
    pub id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
}

/// One entry of a session's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Position in the session's log, starting at 1 (the seed's log `id`).
    pub id: i64,
    pub session_id: SessionId,
    pub role: Role,
    pub text: String,
    pub timestamp: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentMeta>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub metadata: Value,
    #[serde(default)]
    pub feedback: Feedback,
    /// The run_v2 `Idempotency-Key` that produced this message (AI messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// A session's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "close_status")]
pub enum SessionState {
    Active,
    Closed(CloseStatus),
}

/// Where a session's customer is reached on a platform: the connection and the chat on
/// it. Set only by the server (a platform message or a campaign communication opened the
/// session); nothing a customer or an agent writes can change it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRef {
    pub connection_id: Uuid,
    pub chat_id: String,
    /// The thread the conversation happens in (Slack), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// The platform's id of the customer, where the chat is not theirs alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// `seconds` after `at`; a moment past the calendar's end is its end (never). Validation
/// bounds timeouts, but a session row is data: a value beyond the bound must not panic.
fn after(at: DateTime<Utc>, seconds: u64) -> DateTime<Utc> {
    i64::try_from(seconds)
        .ok()
        .and_then(chrono::TimeDelta::try_seconds)
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Everything a session is, apart from its message log. This is what the store keeps per
/// session and what a session actor rebuilds itself from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: SessionId,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    /// The agent version this session started with; it keeps it until it ends.
    pub agent_version: i64,
    pub session_type: String,
    pub mode: Mode,
    pub ext_type: String,
    pub user_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub channel_id: Option<String>,
    /// Maximum session duration in seconds.
    pub timeout: u64,
    /// Inactivity limit in seconds (None: no limit).
    pub user_timeout: Option<u64>,
    pub greeting_text: Option<String>,
    pub start_phrase: Option<String>,
    pub language: Option<String>,
    /// Name of the LLM backend chosen for this session (sticky for A/B tests).
    pub llm_backend: Option<String>,
    /// Current workflow state name.
    pub workflow_state: String,
    pub conversation_result: BTreeMap<String, Value>,
    pub kwargs: serde_json::Map<String, Value>,
    pub user_info: Value,
    pub created_at: DateTime<Utc>,
    pub last_activity: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub state: SessionState,
    /// Number of messages in the log (the id of the newest one).
    pub message_count: i64,
    /// The operator working the conversation, if one is assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<Uuid>,
    /// The platform chat the session talks on, if it talks on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelRef>,
}

impl Session {
    pub fn is_closed(&self) -> bool {
        matches!(self.state, SessionState::Closed(_))
    }

    /// When the max-duration timer fires.
    pub fn close_time(&self) -> DateTime<Utc> {
        after(self.created_at, self.timeout)
    }

    /// When the inactivity timer fires, if there is one.
    pub fn user_deadline(&self) -> Option<DateTime<Utc>> {
        self.user_timeout.map(|t| after(self.last_activity, t))
    }

    /// The earliest moment a timer closes this session (None once closed).
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        if self.is_closed() {
            return None;
        }
        let close = self.close_time();
        Some(match self.user_deadline() {
            Some(u) if u < close => u,
            _ => close,
        })
    }

    /// Which timer is due at `now`, if any: max duration wins over inactivity.
    pub fn due_timer(&self, now: DateTime<Utc>) -> Option<CloseStatus> {
        if self.is_closed() {
            return None;
        }
        if now >= self.close_time() {
            Some(CloseStatus::Timeout)
        } else if self.user_deadline().is_some_and(|d| now >= d) {
            Some(CloseStatus::UserTimeout)
        } else {
            None
        }
    }

    pub fn status_str(&self) -> &'static str {
        match self.state {
            SessionState::Active => "active",
            SessionState::Closed(c) => c.as_str(),
        }
    }

    /// The session as the Chat API shows it (the seed's create-session response).
    pub fn to_api_json(&self, tenant_current_date: &str) -> Value {
        serde_json::json!({
            "session_id": self.id,
            "agent_id": self.agent_id,
            "agent_version": self.agent_version,
            "session_type": self.session_type,
            "mode": self.mode,
            "conversation_id": null,
            "ext_type": self.ext_type,
            "user_id": self.user_id,
            "name": self.name,
            "email": self.email,
            "phone": self.phone,
            "channel_id": self.channel_id,
            "timeout": self.timeout,
            "user_timeout": self.user_timeout,
            "greeting_text": self.greeting_text,
            "inbound_phrase": null,
            "start_phrase": self.start_phrase,
            "language": self.language,
            "llm_backend": self.llm_backend,
            "show_thoughts": false,
            "workflow_state": self.workflow_state,
            "conversation_result": if self.conversation_result.is_empty() { Value::Null } else { serde_json::to_value(&self.conversation_result).unwrap_or(Value::Null) },
            "env_info": {
                "current_date": tenant_current_date,
                "tenant_id": self.tenant_id,
            },
            "kwargs": self.kwargs,
            "start_time": self.created_at.to_rfc3339(),
            "close_time": self.close_time().timestamp_millis() as f64 / 1000.0,
            "closed_at": self.closed_at.map(|t| t.to_rfc3339()),
            "status": self.status_str(),
            "message_count": self.message_count,
        })
    }
}
