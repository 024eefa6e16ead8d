//! The errors the node reports to its callers (the HTTP layer maps them to statuses).

use parley_engine::agent::ValidationErrors;
use parley_engine::model::SessionId;
use parley_engine::registry::RegistryError;
use parley_engine::store::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("invalid or missing token")]
    Unauthorized,
    /// The credential is valid but its scope does not reach this.
    #[error("{0}")]
    Forbidden(String),
    #[error("the session is closed")]
    SessionClosed,
    #[error("the agent is not running")]
    AgentNotRunning,
    #[error("invalid agent definition")]
    InvalidDefinition(ValidationErrors),
    #[error("{0}")]
    Invalid(String),
    /// Fields of a request that do not validate, each with its path.
    #[error("invalid fields: {0}")]
    InvalidFields(ValidationErrors),
    #[error("the agent failed to start: {0}")]
    StartFailed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// Another node owns the session now (its URL, when known); nothing was changed here.
    #[error("the session moved to another node; retry")]
    Moved(Option<String>),
    /// A platform refused or failed a call made on the caller's behalf.
    #[error("the platform refused: {0}")]
    Upstream(String),
    #[error("the session failed while handling this request and was restarted")]
    SessionCrashed,
    #[error("internal error: {0}")]
    Internal(String),
    /// The tenant's monthly session limit is reached: no new sessions until it is raised
    /// or the period ends.
    #[error("{0}")]
    LimitReached(String),
    /// The agent's daily session limit is reached: the session was recorded closed with
    /// `daily_limit_exceeded` and never activated.
    #[error("the agent's daily session limit is reached")]
    DailyLimitExceeded(SessionId),
}

impl From<StoreError> for NodeError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => NodeError::Unavailable(m),
            StoreError::Conflict(m) => NodeError::Conflict(m),
            StoreError::Corrupt(m) | StoreError::Refused(m) => NodeError::Internal(m),
        }
    }
}

pub type NodeResult<T> = Result<T, NodeError>;

impl From<RegistryError> for NodeError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Unavailable(m) => NodeError::Unavailable(m),
        }
    }
}
