//! The durable store: one trait, implemented on SQLite (embedded default) and on Postgres
//! (several nodes). Session writes arrive in batches from the persistence actor and are committed
//! in one transaction per batch (group commit).

mod encoding;
mod isolate;
pub mod pg_testing;
mod postgres;
mod sqlite;
#[cfg(test)]
pub(crate) mod tests;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use isolate::{commit_isolating, BatchOutcome, RequestOutcome};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::campaign::{
    CampaignId, CampaignRecord, CampaignStats, CheckedParticipant, CommunicationChange,
    CommunicationId, CommunicationRecord, CommunicationStatus, CustomerId, CustomerRecord,
    FlowRecord, ParticipantEvent, ParticipantId, ParticipantQuery, ParticipantRecord,
    ParticipantStep, StepOutcome, UploadId, UploadRecord, Upserted,
};
use crate::connection::{ConnectionId, ConnectionRecord};
use crate::flow::TriggerType;
use crate::identity::{AuthToken, SessionUsage, TenantSettings, UsageScope, UserId, UserRecord};
use crate::inbound::InboundMessage;
use crate::model::{AgentId, AttachmentMeta, Feedback, Message, Session, SessionId, TenantId};
use crate::widget::WidgetRecord;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store conflict: {0}")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// This write could not be committed (it made the store fail in a way no retry
    /// mends); writes committed beside it are unaffected.
    #[error("the write was refused: {0}")]
    Refused(String),
}

/// Tenants one e-mail address is looked up in at sign-in (each costs a password check).
pub const MAX_USERS_PER_EMAIL: usize = 8;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    /// SHA-256 of the tenant's admin API key.
    pub api_key_hash: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub settings: TenantSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentStatus {
    Stopped,
    Running,
    Error,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Stopped => "Stopped",
            AgentStatus::Running => "Running",
            AgentStatus::Error => "Error",
        }
    }

    pub fn parse(s: &str) -> Option<AgentStatus> {
        Some(match s {
            "Stopped" => AgentStatus::Stopped,
            "Running" => AgentStatus::Running,
            "Error" => AgentStatus::Error,
            _ => return None,
        })
    }
}

/// An agent's identity and status; its definitions live in numbered versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: AgentId,
    pub tenant_id: TenantId,
    pub name: String,
    pub status: AgentStatus,
    /// Why the agent is in Error.
    pub status_reason: Option<String>,
    /// The newest version; new sessions start on it.
    pub current_version: i64,
    /// SHA-256 of the agent's chat API token.
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One write of a session-changing turn; a batch of these commits atomically.
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert or replace the session row.
    Session(Box<Session>),
    /// Append a message (its `id` is its position in the session's log).
    Message(Box<Message>),
    /// Store an attachment's bytes.
    Attachment {
        session_id: SessionId,
        meta: AttachmentMeta,
        bytes: Bytes,
    },
}

/// An ownership claim on a session. Each claim ([`Store::claim_session`]) raises the
/// session's epoch; a node's writes carry the epoch it claimed with, and the store refuses
/// them once a newer claim exists, so an owner that lost its lease (paused, partitioned)
/// can never overwrite its successor.
pub type Epoch = i64;

/// The epoch of a session that was just created: nobody can have claimed it before.
pub const FIRST_EPOCH: Epoch = 1;

/// One session's writes in a batch, under the claim its actor holds.
#[derive(Debug, Clone)]
pub struct SessionWrites {
    pub session: SessionId,
    pub epoch: Epoch,
    pub writes: Vec<Write>,
}

/// A write of a platform connection's state. Connections' writes commit in the same
/// transactions as sessions' writes (see [`Store::commit_all`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionWrite {
    /// Records an inbound delivery, pending until it is marked done, unless one with the
    /// same `dedup_id` is recorded for its connection already (a duplicate, also of an
    /// earlier write of the batch). `line` goes into the log with a new delivery only.
    Inbox {
        connection: ConnectionId,
        message: Box<InboundMessage>,
        at: DateTime<Utc>,
        line: Option<LogLine>,
    },
    /// Marks a delivery finished (its turn ran and its answer went out).
    Done {
        connection: ConnectionId,
        dedup_id: String,
    },
    /// Appends a line to the connection's log.
    Line(LogLine),
    /// Counts occurrences into the connection's newest line of their kind when that line
    /// started at or after `since`, in place; otherwise appends a new line. A flood of
    /// them then takes one line per window instead of pushing every other line out of
    /// the log. A batch's occurrences of one kind count together.
    Repeated {
        event: RepeatedConnectionEvent,
        since: DateTime<Utc>,
        keep: u32,
    },
}

/// A line for a connection's event log, which keeps the connection's newest `keep` lines.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub event: NewConnectionEvent,
    pub keep: u32,
}

/// What [`Store::commit_all`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Committed {
    /// Sessions whose writes were left out: claimed by a newer owner since their epoch.
    pub fenced: Vec<SessionId>,
    /// One per connection write, in order: for an `Inbox`, whether the delivery is new
    /// (false: a duplicate); true for the others.
    pub applied: Vec<bool>,
}

/// The `Repeated` writes of a batch, one per connection and kind, counted together: the
/// earliest occurrence and window, the latest occurrence and sample, the sum of counts.
pub(crate) fn fold_repeats(
    writes: &[ConnectionWrite],
) -> Vec<(RepeatedConnectionEvent, DateTime<Utc>, u32)> {
    let mut folded: Vec<(RepeatedConnectionEvent, DateTime<Utc>, u32)> = Vec::new();
    for w in writes {
        let ConnectionWrite::Repeated { event, since, keep } = w else {
            continue;
        };
        match folded
            .iter_mut()
            .find(|(r, _, _)| r.connection_id == event.connection_id && r.kind == event.kind)
        {
            Some((r, s, k)) => {
                r.count = r.count.saturating_add(event.count);
                r.first_at = r.first_at.min(event.first_at);
                r.last_at = r.last_at.max(event.last_at);
                r.sample = event.sample.clone();
                *s = (*s).min(*since);
                *k = (*k).min(*keep);
            }
            None => folded.push((event.clone(), *since, *keep)),
        }
    }
    folded
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates or upgrades the schema.
    async fn migrate(&self) -> StoreResult<()>;

    // Tenants.
    async fn create_tenant(&self, tenant: &Tenant) -> StoreResult<()>;
    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>>;
    async fn tenant_by_key_hash(&self, api_key_hash: &str) -> StoreResult<Option<Tenant>>;
    async fn set_tenant_key_hash(&self, tenant: TenantId, api_key_hash: &str) -> StoreResult<()>;
    async fn get_tenant(&self, id: TenantId) -> StoreResult<Option<Tenant>>;
    /// Writes the tenant's name and settings (not its key).
    async fn update_tenant(&self, tenant: &Tenant) -> StoreResult<()>;

    // Users and sign-in tokens.
    /// Inserts the user or replaces it whole. Conflict when another user has the e-mail
    /// address, and when the change would leave a tenant that has admin users without
    /// one (the user was its last admin and is no longer one).
    async fn put_user(&self, user: &UserRecord) -> StoreResult<()>;
    async fn get_user(&self, id: UserId) -> StoreResult<Option<UserRecord>>;
    /// The users of a (lower-case) e-mail address, across tenants (an address is unique
    /// within its tenant only), oldest first, [`MAX_USERS_PER_EMAIL`] at most.
    async fn users_by_email(&self, email: &str) -> StoreResult<Vec<UserRecord>>;
    /// The tenant's users, oldest first.
    async fn list_users(&self, tenant: TenantId) -> StoreResult<Vec<UserRecord>>;
    /// Deletes the user and its tokens; false if there was none. Conflict when it is the
    /// last admin of its tenant.
    async fn delete_user(&self, id: UserId) -> StoreResult<bool>;
    async fn put_auth_token(&self, token: &AuthToken) -> StoreResult<()>;
    async fn auth_token(&self, token_hash: &str) -> StoreResult<Option<AuthToken>>;
    async fn delete_auth_token(&self, token_hash: &str) -> StoreResult<()>;
    /// Signs the user out everywhere; answers how many tokens went.
    async fn delete_auth_tokens(&self, user: UserId) -> StoreResult<u64>;
    /// Removes tokens expired by `now`; answers how many.
    async fn prune_auth_tokens(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    /// The tenant's sessions matching `query`, most recently changed first (`updated_at`,
    /// then id, descending), and how many match in all.
    async fn list_conversations(
        &self,
        tenant: TenantId,
        query: &ConversationQuery,
    ) -> StoreResult<(Vec<Session>, u64)>;

    // Session limits and billing.
    /// Counts one more session of `scope` in the period [from, to) unless `limit` are
    /// counted already; answers whether it was counted. Atomic: of concurrent callers at
    /// the boundary exactly as many pass as fit. A scope's first call in a period starts
    /// its counter from the sessions stored in the period (`daily_limit_exceeded` ones
    /// apart), so a limit set mid-period counts what came before.
    async fn reserve_session(
        &self,
        scope: UsageScope,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<bool>;
    /// Gives back one session [`Store::reserve_session`] counted for `scope` in the
    /// period (the start it was counted for did not happen).
    async fn release_session(
        &self,
        scope: UsageScope,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// The tenant's sessions in [from, to) and their billable 24-hour windows (see
    /// [`SessionUsage`]): windows run from a session's start to its close, or to `now`
    /// while it is open. Sessions that started more than `lookback` before `from` are
    /// not looked at.
    async fn session_usage(
        &self,
        tenant: TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
        lookback: chrono::TimeDelta,
    ) -> StoreResult<SessionUsage>;

    // Agents.
    /// Inserts the agent and its version `record.current_version` with `definition`.
    async fn create_agent(&self, record: &AgentRecord, definition: &str) -> StoreResult<()>;
    /// Adds a version and makes it current (with the name it gives the agent); fails with
    /// Conflict if it exists already.
    async fn add_agent_version(
        &self,
        agent: AgentId,
        version: i64,
        name: &str,
        definition: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn get_agent(&self, agent: AgentId) -> StoreResult<Option<AgentRecord>>;
    async fn list_agents(&self, tenant: TenantId) -> StoreResult<Vec<AgentRecord>>;
    /// All agents of all tenants (to restart the running ones at boot).
    async fn all_agents(&self) -> StoreResult<Vec<AgentRecord>>;
    async fn get_agent_version(&self, agent: AgentId, version: i64) -> StoreResult<Option<String>>;
    /// Rewrites a stored version's definition in place (sealing secrets stored in clear
    /// by older releases); Conflict if there is no such version.
    async fn set_agent_version_definition(
        &self,
        agent: AgentId,
        version: i64,
        definition: &str,
    ) -> StoreResult<()>;
    async fn set_agent_status(
        &self,
        agent: AgentId,
        status: AgentStatus,
        reason: Option<&str>,
    ) -> StoreResult<()>;
    async fn set_agent_token_hash(&self, agent: AgentId, token_hash: &str) -> StoreResult<()>;
    /// Deletes the agent, its versions, sessions, messages and attachments.
    async fn delete_agent(&self, agent: AgentId) -> StoreResult<bool>;

    // Sessions.
    /// Commits a batch of sessions' and connections' writes in one transaction: all of it
    /// or nothing, except that the writes of sessions claimed since (stored epoch above
    /// theirs) are left out.
    async fn commit_all(
        &self,
        sessions: &[SessionWrites],
        connections: &[ConnectionWrite],
    ) -> StoreResult<Committed>;
    /// [`Store::commit_all`] of sessions' writes only; answers the sessions fenced.
    async fn commit(&self, batch: &[SessionWrites]) -> StoreResult<Vec<SessionId>> {
        Ok(self.commit_all(batch, &[]).await?.fenced)
    }
    /// Claims the session for a new owner: raises its epoch and answers it (None if there
    /// is no such session). Writes under older epochs are refused from now on.
    async fn claim_session(&self, session: SessionId) -> StoreResult<Option<Epoch>>;
    /// The session with `message_count` and `last_activity` brought up to date from its
    /// log: a group commit of an ordinary turn appends messages without rewriting the
    /// session row, so the row alone may lag behind.
    async fn load_session(&self, session: SessionId) -> StoreResult<Option<Session>>;
    /// The session's log in order.
    async fn load_messages(&self, session: SessionId) -> StoreResult<Vec<Message>>;
    /// The newest `limit` messages of the session's log, oldest first.
    async fn load_recent_messages(
        &self,
        session: SessionId,
        limit: u32,
    ) -> StoreResult<Vec<Message>>;
    /// The AI message a run_v2 with this `Idempotency-Key` produced, if it was committed.
    async fn find_reply(&self, session: SessionId, key: &str) -> StoreResult<Option<Message>>;
    /// A customer's sessions (by `user_id` = ext_id and `ext_type`), newest first;
    /// `agent` narrows to one agent.
    async fn sessions_for_user(
        &self,
        tenant: TenantId,
        agent: Option<AgentId>,
        ext_id: &str,
        ext_type: &str,
    ) -> StoreResult<Vec<Session>>;
    /// Open sessions whose next timer deadline is at or before `now`.
    async fn due_sessions(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<(SessionId, AgentId)>>;
    /// Sets feedback on one message; false if there is no such message.
    async fn set_feedback(
        &self,
        session: SessionId,
        log_id: i64,
        feedback: Feedback,
    ) -> StoreResult<bool>;
    async fn get_attachment(
        &self,
        id: uuid::Uuid,
    ) -> StoreResult<Option<(SessionId, AttachmentMeta, Bytes)>>;

    // Platform connections.
    /// Inserts the connection or replaces it whole.
    async fn put_connection(&self, connection: &ConnectionRecord) -> StoreResult<()>;
    async fn get_connection(&self, id: ConnectionId) -> StoreResult<Option<ConnectionRecord>>;
    /// The tenant's connections, oldest first.
    async fn list_connections(&self, tenant: TenantId) -> StoreResult<Vec<ConnectionRecord>>;
    async fn delete_connection(&self, id: ConnectionId) -> StoreResult<bool>;
    /// Replaces the agent's channels. Conflict when a connection would get a second
    /// inbound agent.
    async fn set_agent_channels(
        &self,
        agent: AgentId,
        channels: &[AgentChannel],
    ) -> StoreResult<()>;
    async fn agent_channels(&self, agent: AgentId) -> StoreResult<Vec<AgentChannel>>;
    /// The agent that answers the connection's customers, if any.
    async fn inbound_agent(&self, connection: ConnectionId) -> StoreResult<Option<AgentId>>;

    // Agents' web widgets

    /// Creates or replaces the agent's widget (its `widget_id` is kept once created).
    async fn put_widget(&self, widget: &WidgetRecord) -> StoreResult<()>;
    async fn widget_of_agent(&self, agent: AgentId) -> StoreResult<Option<WidgetRecord>>;
    /// The widget a page names by its public id.
    async fn widget(&self, widget_id: &str) -> StoreResult<Option<WidgetRecord>>;

    // Connector state. Deleting a connection deletes all of it.
    /// Records inbound deliveries in one transaction, each pending until it is marked
    /// done. One answer per input: false when one with the same `dedup_id` is recorded for
    /// its connection already (a duplicate, also of an earlier input of the batch).
    async fn inbox_insert_many(
        &self,
        batch: &[(ConnectionId, InboundMessage)],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        let writes: Vec<ConnectionWrite> = batch
            .iter()
            .map(|(connection, message)| ConnectionWrite::Inbox {
                connection: *connection,
                message: Box::new(message.clone()),
                at,
                line: None,
            })
            .collect();
        Ok(self.commit_all(&[], &writes).await?.applied)
    }
    /// [`Store::inbox_insert_many`] for one delivery.
    async fn inbox_insert(
        &self,
        connection: ConnectionId,
        message: &InboundMessage,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let fresh = self
            .inbox_insert_many(&[(connection, message.clone())], at)
            .await?;
        Ok(fresh.first().copied().unwrap_or(false))
    }
    /// Marks deliveries finished (their turns ran and their answers went out), in one
    /// transaction.
    async fn inbox_done_many(&self, batch: &[(ConnectionId, String)]) -> StoreResult<()> {
        let writes: Vec<ConnectionWrite> = batch
            .iter()
            .map(|(connection, dedup_id)| ConnectionWrite::Done {
                connection: *connection,
                dedup_id: dedup_id.clone(),
            })
            .collect();
        self.commit_all(&[], &writes).await.map(|_| ())
    }
    /// Records a delivery that needs no handling later (a message status) as already done:
    /// false when one with the same `dedup_id` was recorded before (a duplicate). Kept and
    /// pruned like handled messages, and never listed as pending.
    async fn inbox_mark_seen(
        &self,
        connection: ConnectionId,
        dedup_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// [`Store::inbox_done_many`] for one delivery.
    async fn inbox_done(&self, connection: ConnectionId, dedup_id: &str) -> StoreResult<()> {
        self.inbox_done_many(&[(connection, dedup_id.to_string())])
            .await
    }
    /// The connection's unfinished deliveries, oldest first.
    async fn inbox_pending(
        &self,
        connection: ConnectionId,
        limit: u32,
    ) -> StoreResult<Vec<InboundMessage>>;
    /// Forgets finished deliveries recorded before `before`; pending ones stay. Answers how
    /// many went.
    async fn inbox_prune(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    /// The session a chat (`chat_key`: the platform's chat and user) talks in.
    async fn channel_session(
        &self,
        connection: ConnectionId,
        chat_key: &str,
    ) -> StoreResult<Option<ChannelSession>>;
    /// Inserts or replaces the chat's session.
    async fn set_channel_session(
        &self,
        connection: ConnectionId,
        chat_key: &str,
        session: &ChannelSession,
    ) -> StoreResult<()>;

    /// Appends events to their connections' logs in one transaction (in order) and drops
    /// all but each connection's newest `keep` events.
    async fn add_connection_events(
        &self,
        batch: &[NewConnectionEvent],
        keep: u32,
    ) -> StoreResult<()> {
        let writes: Vec<ConnectionWrite> = batch
            .iter()
            .map(|event| {
                ConnectionWrite::Line(LogLine {
                    event: event.clone(),
                    keep,
                })
            })
            .collect();
        self.commit_all(&[], &writes).await.map(|_| ())
    }
    /// [`Store::add_connection_events`] for one event.
    async fn add_connection_event(
        &self,
        connection: ConnectionId,
        at: DateTime<Utc>,
        kind: &str,
        detail: &serde_json::Value,
        keep: u32,
    ) -> StoreResult<()> {
        let event = NewConnectionEvent {
            connection_id: connection,
            at,
            kind: kind.to_string(),
            detail: detail.clone(),
        };
        self.add_connection_events(&[event], keep).await
    }
    /// Counts repeated events (rejected deliveries) into the connection's newest line of
    /// their kind (see [`ConnectionWrite::Repeated`]).
    async fn add_repeated_connection_event(
        &self,
        event: &RepeatedConnectionEvent,
        since: DateTime<Utc>,
        keep: u32,
    ) -> StoreResult<()> {
        let write = ConnectionWrite::Repeated {
            event: event.clone(),
            since,
            keep,
        };
        self.commit_all(&[], &[write]).await.map(|_| ())
    }
    /// The connection's events, newest first; `before` pages on (only smaller ids).
    async fn connection_events(
        &self,
        connection: ConnectionId,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<ConnectionEvent>>;

    /// Where a connector resumes reading (Telegram getUpdates offset).
    async fn connector_cursor(&self, connection: ConnectionId) -> StoreResult<Option<String>>;
    async fn set_connector_cursor(&self, connection: ConnectionId, cursor: &str)
        -> StoreResult<()>;

    /// Queues an outgoing webhook event, due at once. Answers its id (ids increase).
    async fn outbox_push(
        &self,
        connection: ConnectionId,
        event: &NewOutboxEvent,
        at: DateTime<Utc>,
    ) -> StoreResult<i64>;
    /// Up to `limit` of the connection's oldest queued events, in order, provided the
    /// oldest is due at `now` (nothing otherwise, so events are never delivered out of
    /// order). Each returned event is leased: its `next_attempt_at` becomes `lease_until`,
    /// so another node does not send it meanwhile.
    async fn outbox_claim(
        &self,
        connection: ConnectionId,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxEntry>>;
    /// Records a failed attempt: `attempts`, when to try again and why it failed.
    async fn outbox_retry(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
        last_error: &str,
    ) -> StoreResult<()>;
    /// Removes a delivered event.
    async fn outbox_done(&self, id: i64) -> StoreResult<()>;
    /// How many events the connection has queued.
    async fn outbox_len(&self, connection: ConnectionId) -> StoreResult<u64>;

    // Campaigns.
    /// Inserts the campaign (with its fields) or replaces it whole.
    async fn put_campaign(&self, campaign: &CampaignRecord) -> StoreResult<()>;
    async fn get_campaign(&self, id: CampaignId) -> StoreResult<Option<CampaignRecord>>;
    /// The tenant's campaigns, oldest first.
    async fn list_campaigns(&self, tenant: TenantId) -> StoreResult<Vec<CampaignRecord>>;
    /// Every tenant's running campaigns (what the nodes share out among themselves).
    async fn list_running_campaigns(&self) -> StoreResult<Vec<CampaignRecord>>;
    /// Deletes the campaign with its flows, participants and uploads (customer profiles
    /// stay). False if there was none.
    async fn delete_campaign(&self, id: CampaignId) -> StoreResult<bool>;

    /// Inserts the flow or replaces the one of the same name.
    async fn put_flow(&self, flow: &FlowRecord) -> StoreResult<()>;
    async fn get_flow(&self, campaign: CampaignId, name: &str) -> StoreResult<Option<FlowRecord>>;
    /// The campaign's flows by name.
    async fn list_flows(&self, campaign: CampaignId) -> StoreResult<Vec<FlowRecord>>;
    async fn delete_flow(&self, campaign: CampaignId, name: &str) -> StoreResult<bool>;

    /// Upserts a batch of participants of one campaign in one transaction. Each one's
    /// customer profile is found within the tenant by its key (external_id, else e-mail,
    /// else phone: the column of the key's kind equals its value) or created; then the
    /// participant is found by (campaign, customer, object_id) or created. Attributes
    /// merge: the values given replace stored ones, the others stay (inputs carry no
    /// blank values). The customer's `external_id`, `email` and `phone` columns follow its
    /// attributes of those names. `upload` is recorded on every participant touched.
    /// Answers one [`Upserted`] per input, in order; an input repeated within the batch
    /// upserts twice (created, then updated).
    async fn upsert_participants(
        &self,
        tenant: TenantId,
        campaign: CampaignId,
        upload: Option<UploadId>,
        batch: &[CheckedParticipant],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<Upserted>>;
    async fn get_participant(&self, id: ParticipantId) -> StoreResult<Option<ParticipantRecord>>;
    /// One page of the campaign's participants (oldest first) matching `query`, and how
    /// many match in all. `email`, `phone`, `external_id` filter on the customer profile.
    async fn list_participants(
        &self,
        campaign: CampaignId,
        query: &ParticipantQuery,
    ) -> StoreResult<(Vec<ParticipantRecord>, u64)>;
    /// Deletes a participant (its customer profile stays). False if there was none.
    async fn delete_participant(&self, id: ParticipantId) -> StoreResult<bool>;

    async fn get_customer(&self, id: CustomerId) -> StoreResult<Option<CustomerRecord>>;
    /// One page of the tenant's customers (oldest first) and their total.
    async fn list_customers(
        &self,
        tenant: TenantId,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<CustomerRecord>, u64)>;

    /// Inserts the upload or replaces it whole (progress is written as it goes).
    async fn put_upload(&self, upload: &UploadRecord) -> StoreResult<()>;
    async fn get_upload(&self, id: UploadId) -> StoreResult<Option<UploadRecord>>;
    /// The campaign's uploads, newest first.
    async fn list_uploads(&self, campaign: CampaignId) -> StoreResult<Vec<UploadRecord>>;

    // Campaigns at work: participants' triggers, steps and communications.
    /// Up to `limit` of the campaign's participants with a pending created/updated
    /// trigger, by id, after `after`.
    async fn pending_participants(
        &self,
        campaign: CampaignId,
        after: Option<ParticipantId>,
        limit: u32,
    ) -> StoreResult<Vec<ParticipantId>>;
    /// Queues a trigger for a participant; answers its id.
    async fn add_participant_event(
        &self,
        campaign: CampaignId,
        participant: ParticipantId,
        trigger: TriggerType,
        communication: Option<CommunicationId>,
        at: DateTime<Utc>,
    ) -> StoreResult<i64>;
    /// Up to `limit` of the campaign's queued triggers with ids above `after`, oldest
    /// first.
    async fn participant_events(
        &self,
        campaign: CampaignId,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<ParticipantEvent>>;
    /// Commits one flow run of a participant in one transaction (see [`ParticipantStep`]).
    async fn commit_participant_step(&self, step: &ParticipantStep) -> StoreResult<StepOutcome>;

    async fn get_communication(
        &self,
        id: CommunicationId,
    ) -> StoreResult<Option<CommunicationRecord>>;
    /// Applies `change` if the communication's status is one of `from`; answers it as it
    /// is now, or `None` if it is missing or in another status (nothing changed).
    async fn change_communication(
        &self,
        id: CommunicationId,
        from: &[CommunicationStatus],
        change: &CommunicationChange,
    ) -> StoreResult<Option<CommunicationRecord>>;
    /// Up to `limit` of the campaign's Planned communications due by `now` (their start,
    /// or their cancellation if that comes first), earliest first.
    async fn due_communications(
        &self,
        campaign: CampaignId,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<CommunicationRecord>>;
    /// When the campaign's next Planned communication is due.
    async fn next_due_communication(
        &self,
        campaign: CampaignId,
    ) -> StoreResult<Option<DateTime<Utc>>>;
    /// The campaign's communications whose session is open (Started, Delivered, Read,
    /// Replied) with their sessions.
    async fn live_communications(
        &self,
        campaign: CampaignId,
    ) -> StoreResult<Vec<(CommunicationId, SessionId)>>;
    /// The communication a session was opened for.
    async fn communication_by_session(
        &self,
        session: SessionId,
    ) -> StoreResult<Option<CommunicationRecord>>;
    /// The communication whose opening message the platform knows by `message_id`.
    async fn communication_by_message(
        &self,
        connection: ConnectionId,
        message_id: &str,
    ) -> StoreResult<Option<CommunicationRecord>>;
    /// A participant's communications, oldest first.
    async fn list_communications(
        &self,
        participant: ParticipantId,
    ) -> StoreResult<Vec<CommunicationRecord>>;
    async fn campaign_stats(&self, campaign: CampaignId) -> StoreResult<CampaignStats>;
    /// The tenant's customers whose attribute `name` (telegram_id, whatsapp_id, web_id or
    /// phone) is `value`, at most `limit`.
    async fn customers_by_channel_id(
        &self,
        tenant: TenantId,
        name: &str,
        value: &str,
        limit: u32,
    ) -> StoreResult<Vec<CustomerId>>;
    /// The customer's participants in the campaign (one per object).
    async fn participants_of_customer(
        &self,
        campaign: CampaignId,
        customer: CustomerId,
    ) -> StoreResult<Vec<ParticipantId>>;
}

/// Whose conversations the inbox lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignee {
    Nobody,
    User(UserId),
}

/// Filters of the operators' inbox; all optional, combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationQuery {
    pub mode: Option<crate::model::Mode>,
    /// `true`: open sessions only; `false`: closed ones only.
    pub active: Option<bool>,
    pub assignee: Option<Assignee>,
    pub offset: u64,
    pub limit: u64,
}

/// The session a platform chat talks in, and when it started (Discord keeps a user's
/// session for `session_duration_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSession {
    pub session_id: SessionId,
    pub started_at: DateTime<Utc>,
}

/// One line of a connection's event log (deliveries, duplicates, rejections, sends,
/// errors, status changes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionEvent {
    /// Increases with every event of the store.
    pub id: i64,
    pub connection_id: ConnectionId,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub detail: serde_json::Value,
}

/// A line to append to a connection's event log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewConnectionEvent {
    pub connection_id: ConnectionId,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub detail: serde_json::Value,
}

/// Occurrences of one kind of event, counted in one log line (see
/// [`Store::add_repeated_connection_event`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatedConnectionEvent {
    pub connection_id: ConnectionId,
    pub kind: String,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    pub count: u64,
    /// The latest occurrence's detail, kept as the sample.
    pub sample: serde_json::Value,
}

impl RepeatedConnectionEvent {
    /// The line's detail: the latest sample with `count`, `first_at` and `last_at`, the
    /// count and first time carried over from `joined` (the detail of the line these
    /// occurrences join), if any.
    pub fn detail(&self, joined: Option<&serde_json::Value>) -> serde_json::Value {
        let mut detail = match &self.sample {
            serde_json::Value::Object(fields) => fields.clone(),
            other => serde_json::Map::from_iter([("sample".to_string(), other.clone())]),
        };
        let before = joined.and_then(|d| d["count"].as_u64()).unwrap_or(0);
        let first_at = joined
            .and_then(|d| d.get("first_at").cloned())
            .unwrap_or_else(|| self.first_at.to_rfc3339().into());
        detail.insert("count".into(), before.saturating_add(self.count).into());
        detail.insert("first_at".into(), first_at);
        detail.insert("last_at".into(), self.last_at.to_rfc3339().into());
        serde_json::Value::Object(detail)
    }

    /// The line these occurrences start when there is none of their kind to join.
    pub fn new_line(&self) -> NewConnectionEvent {
        NewConnectionEvent {
            connection_id: self.connection_id,
            at: self.first_at,
            kind: self.kind.clone(),
            detail: self.detail(None),
        }
    }
}

/// An outgoing webhook event to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboxEvent {
    /// The Standard Webhooks `webhook-id` (the receiver's idempotency key).
    pub msg_id: String,
    pub event_type: String,
    /// The JSON body; it is signed afresh at every attempt.
    pub body: String,
}

/// A queued outgoing webhook event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub connection_id: ConnectionId,
    pub msg_id: String,
    pub event_type: String,
    pub body: String,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A connection an agent talks on; `inbound`: the agent answers the connection's
/// customers (at most one agent per connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentChannel {
    pub connection_id: ConnectionId,
    pub inbound: bool,
}
