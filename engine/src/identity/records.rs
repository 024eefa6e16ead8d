//! Users, roles, sign-in tokens and tenant settings as the store keeps them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::schedule::OperatorSchedule;
use crate::model::TenantId;

pub type UserId = Uuid;

/// What a user may do in their tenant (the seed's role matrix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, users and tenant settings included.
    Admin,
    /// The playground only: chat with agents.
    User,
    /// Reads agents, knowledge, sessions and campaigns; changes nothing.
    Viewer,
    /// Works conversations.
    Operator,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::User, Role::Viewer, Role::Operator];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A person who signs in to one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub name: String,
    /// Lower-case; unique across the deployment (sign-in is by e-mail alone).
    pub email: String,
    pub role: Role,
    /// Argon2id, PHC string format.
    pub password_hash: String,
    /// Set for a temporary password: the first sign-in must change it.
    pub must_change_password: bool,
    /// Operators only: when they are on shift, in the tenant's time zone.
    pub schedule: Option<OperatorSchedule>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A bearer token a sign-in issued (stored by its SHA-256, never as issued).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthToken {
    pub token_hash: String,
    pub user_id: UserId,
    pub tenant_id: TenantId,
    /// Good only for changing a temporary password.
    pub password_change_only: bool,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A tenant's own details (its name lives on the tenant).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantSettings {
    pub description: String,
    pub phone: Option<String>,
    pub billing_email: Option<String>,
    pub country: Option<String>,
    pub street: Option<String>,
    pub zip: Option<String>,
    pub website: Option<String>,
    /// IANA zone: operators' schedules and billing periods are read in it.
    pub timezone: Option<String>,
    /// Sessions the tenant may start per calendar month (set with the super key).
    pub monthly_session_limit: Option<u64>,
}

/// What a usage counter counts sessions of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UsageScope {
    Tenant(TenantId),
    Agent(crate::model::AgentId),
}

/// A tenant's sessions in a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionUsage {
    /// Sessions started in the period (refused ones apart).
    pub sessions: u64,
    /// 24-hour windows of sessions that start in the period: a session counts one per
    /// started day of its life (a 36-hour session, two).
    pub billable: u64,
    /// Starts refused with `daily_limit_exceeded` (recorded, never billed).
    pub refused: u64,
}
