//! Campaign data as the store keeps it: a campaign with its fields, its flows, customer
//! profiles, participants and uploads.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::model::{Campaign, CampaignId, DataField};
use super::progress::PendingTrigger;
use crate::model::TenantId;

pub type CustomerId = Uuid;
pub type ParticipantId = Uuid;
pub type UploadId = Uuid;

/// A campaign and its data fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignRecord {
    pub campaign: Campaign,
    pub fields: Vec<DataField>,
}

/// A flow of a campaign, as written (validated when stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    pub campaign_id: CampaignId,
    /// Unique within the campaign.
    pub name: String,
    /// `yaml` or `json`: how `definition` is written.
    pub format: String,
    pub definition: String,
    pub active: bool,
    pub updated_at: DateTime<Utc>,
}

/// A customer profile, shared by every campaign of the tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerRecord {
    pub id: CustomerId,
    pub tenant_id: TenantId,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Every customer-profile attribute, the three above included.
    pub attributes: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A customer's enrolment in a campaign (once per `object_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantRecord {
    pub id: ParticipantId,
    pub campaign_id: CampaignId,
    pub customer_id: CustomerId,
    pub object_id: Option<String>,
    pub attributes: Map<String, Value>,
    /// The participant's own IANA zone, if given.
    pub timezone: Option<String>,
    /// The upload that last created or changed it.
    pub upload_id: Option<UploadId>,
    /// The created/updated trigger an upload left that has not run yet.
    pub pending: Option<PendingTrigger>,
    /// The conversation results of its latest ended communication (`result.` in flows).
    pub result: Map<String, Value>,
    pub result_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What an upsert did to one participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upserted {
    pub participant_id: ParticipantId,
    pub customer_id: CustomerId,
    /// True for a new participant (participant_created), false for an existing one
    /// (participant_updated).
    pub created: bool,
}

/// Where a participant is in its campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantStatus {
    /// Its created/updated trigger has not run yet.
    Pending,
    /// It has a communication in progress (Planned … Replied).
    Active,
    /// Neither: its flows have nothing under way.
    Idle,
}

impl ParticipantStatus {
    pub const ALL: [ParticipantStatus; 3] = [
        ParticipantStatus::Pending,
        ParticipantStatus::Active,
        ParticipantStatus::Idle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ParticipantStatus::Pending => "pending",
            ParticipantStatus::Active => "active",
            ParticipantStatus::Idle => "idle",
        }
    }

    pub fn parse(s: &str) -> Option<ParticipantStatus> {
        ParticipantStatus::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The status of a participant with a pending trigger or not, and with a
    /// communication in progress or not.
    pub fn of(pending: bool, communicating: bool) -> ParticipantStatus {
        match (pending, communicating) {
            (true, _) => ParticipantStatus::Pending,
            (false, true) => ParticipantStatus::Active,
            (false, false) => ParticipantStatus::Idle,
        }
    }
}

/// Filters of the participants list; all optional, combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantQuery {
    /// Part of the name (customer or participant attribute `name`), any case.
    pub name: Option<String>,
    pub status: Option<ParticipantStatus>,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub upload_id: Option<UploadId>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    pub offset: u64,
    pub limit: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadStatus {
    Running,
    Done,
    Failed,
}

/// One bad row of an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRowError {
    pub row: u64,
    pub reason: String,
}

/// A CSV (or API) upload and how it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub id: UploadId,
    pub campaign_id: CampaignId,
    pub status: UploadStatus,
    /// Why a failed upload stopped (a bad header, a broken file).
    pub error: Option<String>,
    pub total: u64,
    pub created: u64,
    pub updated: u64,
    pub failed: u64,
    /// The first bad rows (bounded), with their row numbers.
    pub errors: Vec<UploadRowError>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}
