//! How a running campaign's participants progress, as the store keeps it: their
//! communications (with the time each is due), the triggers waiting to run their flows,
//! the step a flow walk commits, and the campaign's counts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::model::CampaignId;
use super::records::{CustomerId, ParticipantId};
use crate::connection::ConnectionId;
use crate::flow::{Channel, TriggerType};
use crate::model::{AgentId, SessionId, TenantId};

pub type CommunicationId = Uuid;

/// Where a communication is. Planned, Started, Delivered and Read are in progress;
/// Replied and Completed successful; NoResponse, Canceled, Skipped and Failed not completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CommunicationStatus {
    Planned,
    Started,
    Delivered,
    Read,
    Replied,
    Completed,
    NoResponse,
    Canceled,
    Skipped,
    Failed,
}

impl CommunicationStatus {
    pub const ALL: [CommunicationStatus; 10] = [
        CommunicationStatus::Planned,
        CommunicationStatus::Started,
        CommunicationStatus::Delivered,
        CommunicationStatus::Read,
        CommunicationStatus::Replied,
        CommunicationStatus::Completed,
        CommunicationStatus::NoResponse,
        CommunicationStatus::Canceled,
        CommunicationStatus::Skipped,
        CommunicationStatus::Failed,
    ];

    /// The statuses of a communication that has not ended (cancel_communications stops
    /// these).
    pub const OPEN: [CommunicationStatus; 5] = [
        CommunicationStatus::Planned,
        CommunicationStatus::Started,
        CommunicationStatus::Delivered,
        CommunicationStatus::Read,
        CommunicationStatus::Replied,
    ];

    /// The statuses of a communication whose session is open.
    pub const LIVE: [CommunicationStatus; 4] = [
        CommunicationStatus::Started,
        CommunicationStatus::Delivered,
        CommunicationStatus::Read,
        CommunicationStatus::Replied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommunicationStatus::Planned => "Planned",
            CommunicationStatus::Started => "Started",
            CommunicationStatus::Delivered => "Delivered",
            CommunicationStatus::Read => "Read",
            CommunicationStatus::Replied => "Replied",
            CommunicationStatus::Completed => "Completed",
            CommunicationStatus::NoResponse => "NoResponse",
            CommunicationStatus::Canceled => "Canceled",
            CommunicationStatus::Skipped => "Skipped",
            CommunicationStatus::Failed => "Failed",
        }
    }

    pub fn parse(s: &str) -> Option<CommunicationStatus> {
        CommunicationStatus::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
    }

    pub fn is_open(self) -> bool {
        CommunicationStatus::OPEN.contains(&self)
    }
}

/// A communication a flow planned for a participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommunicationRecord {
    pub id: CommunicationId,
    pub tenant_id: TenantId,
    pub campaign_id: CampaignId,
    pub participant_id: ParticipantId,
    /// The flow and start_communication node that planned it.
    pub flow: String,
    pub node: String,
    pub name: String,
    pub channel: Channel,
    pub agent_id: AgentId,
    pub connection_id: Option<ConnectionId>,
    pub status: CommunicationStatus,
    /// Why it failed, was skipped or canceled.
    pub reason: Option<String>,
    /// When it may start (inside the window, in the scheduling timezone).
    pub start_at: DateTime<Utc>,
    /// When it is canceled if it has not started by then.
    pub cancel_at: Option<DateTime<Utc>>,
    pub session_id: Option<SessionId>,
    /// The platform's id of the opening message (WhatsApp reports delivery by it).
    pub message_id: Option<String>,
    /// The agent's conversation results, once its session closed.
    pub results: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl CommunicationRecord {
    /// When the campaign must look at it next while it is planned: its start, or its
    /// cancellation if that comes first.
    pub fn due_at(&self) -> DateTime<Utc> {
        match self.cancel_at {
            Some(c) if c < self.start_at => c,
            _ => self.start_at,
        }
    }
}

/// A change to a communication, applied only from the statuses the caller expects.
#[derive(Debug, Clone, PartialEq)]
pub struct CommunicationChange {
    pub status: CommunicationStatus,
    pub reason: Option<String>,
    /// Set when `Some`; kept otherwise.
    pub session_id: Option<SessionId>,
    pub message_id: Option<String>,
    /// Set when `Some`, and then also written to the participant as its latest result.
    pub results: Option<Map<String, Value>>,
    /// The trigger this change fires for the participant (communication_updated or
    /// communication_ended), queued in the same transaction.
    pub fire: Option<TriggerType>,
    pub at: DateTime<Utc>,
}

/// A trigger an upload or API call left on a participant, run once the campaign runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingTrigger {
    Created,
    Updated,
}

impl PendingTrigger {
    pub fn trigger(self) -> TriggerType {
        match self {
            PendingTrigger::Created => TriggerType::ParticipantCreated,
            PendingTrigger::Updated => TriggerType::ParticipantUpdated,
        }
    }
}

/// A queued trigger other than created/updated (communication_ended and _updated,
/// incoming_session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantEvent {
    /// Increases with every event of the store.
    pub id: i64,
    pub campaign_id: CampaignId,
    pub participant_id: ParticipantId,
    pub trigger: TriggerType,
    pub communication_id: Option<CommunicationId>,
    pub at: DateTime<Utc>,
}

/// What one flow run of a participant changes, committed in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantStep {
    pub tenant_id: TenantId,
    pub campaign_id: CampaignId,
    pub participant_id: ParticipantId,
    pub customer_id: CustomerId,
    /// Clears the participant's pending created/updated trigger, provided the participant
    /// was not changed since it was read at this `updated_at` (a newer upload's trigger
    /// stays).
    pub clear_pending: Option<DateTime<Utc>>,
    /// The queued event this run consumed (deleted).
    pub event_done: Option<i64>,
    /// Attribute changes: a value replaces, `null` removes; other attributes stay.
    pub participant_patch: Map<String, Value>,
    pub customer_patch: Map<String, Value>,
    /// Cancels the participant's open communications (cancel_communications), before the
    /// new ones are inserted.
    pub cancel_open: bool,
    pub new_communications: Vec<CommunicationRecord>,
    /// (flow, node) for every node passed, for the per-node counts.
    pub visited: Vec<(String, String)>,
    pub at: DateTime<Utc>,
}

/// What committing a step did beyond what it said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutcome {
    /// False when the participant no longer exists: nothing was written except the
    /// consumed event's removal.
    pub applied: bool,
    /// The communications `cancel_open` canceled, as they are now (their sessions, if
    /// any, are for the caller to close).
    pub canceled: Vec<CommunicationRecord>,
}

/// How many of a campaign's communications are in a status on a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommunicationCount {
    pub status: CommunicationStatus,
    pub channel: Channel,
    pub count: u64,
}

/// How many times participants passed a flow node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCount {
    pub flow: String,
    pub node: String,
    pub count: u64,
}

/// A campaign's counts (`GET …/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignStats {
    pub participants: u64,
    /// Participants whose created/updated trigger has not run yet.
    pub participants_pending: u64,
    /// Non-zero counts only, by status then channel.
    pub communications: Vec<CommunicationCount>,
    /// By flow then node.
    pub nodes: Vec<NodeCount>,
}
