//! The node over a real SQLite store whose commits can be made to fail and whose calls
//! are counted: group commit batches concurrent turns and connections' writes, a failed
//! commit loses nothing acknowledged and breaks nothing after it, and a platform message
//! in a chat with a live session reads nothing from the store before its turn.

use parley_engine::widget::WidgetRecord;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::Path;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use parley_actors::channels::hooks::{Alone, HookRequest};
use parley_actors::node::NewConnection;
use parley_actors::persistence::PersistMsg;
use parley_actors::session::TurnRequest;
use parley_actors::{Node, NodeConfig, NodeError};
use parley_engine::agent::Format;
use parley_engine::campaign::{
    CampaignId, CampaignRecord, CampaignStats, CheckedParticipant, CommunicationChange,
    CommunicationId, CommunicationRecord, CommunicationStatus, CustomerId, CustomerRecord,
    FlowRecord, ParticipantEvent, ParticipantId, ParticipantQuery, ParticipantRecord,
    ParticipantStep, StepOutcome, UploadId, UploadRecord, Upserted,
};
use parley_engine::connection::{ConnectionId, ConnectionRecord};
use parley_engine::egress::EgressPolicy;
use parley_engine::flow::TriggerType;
use parley_engine::identity::{AuthToken, SessionUsage, UsageScope, UserId, UserRecord};
use parley_engine::inbound::InboundMessage;
use parley_engine::model::{
    AgentId, AttachmentMeta, Feedback, Message, Session, SessionId, TenantId,
};
use parley_engine::store::{
    AgentChannel, AgentRecord, AgentStatus, ChannelSession, Committed, ConnectionEvent,
    ConnectionWrite, ConversationQuery, Epoch, LogLine, NewConnectionEvent, NewOutboxEvent,
    OutboxEntry, SessionWrites, SqliteStore, Store, StoreError, StoreResult, Tenant,
};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};
use uuid::Uuid;

/// The real SQLite store, with a switch that makes commits fail like a full disk would,
/// and one that makes a commit touching a given session panic (a bug in the store).
struct Switchable {
    inner: SqliteStore,
    failing: AtomicBool,
    poisoned: Mutex<Option<SessionId>>,
    /// Event-log lines of this kind make a commit fail.
    poisoned_line: Mutex<Option<String>>,
    /// Calls of each store method so far.
    calls: Mutex<BTreeMap<&'static str, u64>>,
}

impl Switchable {
    fn hit(&self, method: &'static str) {
        *self.calls.lock().unwrap().entry(method).or_default() += 1;
    }

    /// The calls counted since the last take.
    fn take_calls(&self) -> BTreeMap<&'static str, u64> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

#[async_trait]
impl Store for Switchable {
    async fn migrate(&self) -> StoreResult<()> {
        self.hit("migrate");
        self.inner.migrate().await
    }
    async fn create_tenant(&self, t: &Tenant) -> StoreResult<()> {
        self.hit("create_tenant");
        self.inner.create_tenant(t).await
    }
    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        self.hit("list_tenants");
        self.inner.list_tenants().await
    }
    async fn tenant_by_key_hash(&self, h: &str) -> StoreResult<Option<Tenant>> {
        self.hit("tenant_by_key_hash");
        self.inner.tenant_by_key_hash(h).await
    }
    async fn set_tenant_key_hash(&self, t: TenantId, h: &str) -> StoreResult<()> {
        self.hit("set_tenant_key_hash");
        self.inner.set_tenant_key_hash(t, h).await
    }
    async fn create_agent(&self, r: &AgentRecord, d: &str) -> StoreResult<()> {
        self.hit("create_agent");
        self.inner.create_agent(r, d).await
    }
    async fn add_agent_version(
        &self,
        a: AgentId,
        v: i64,
        n: &str,
        d: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.hit("add_agent_version");
        self.inner.add_agent_version(a, v, n, d, at).await
    }
    async fn get_agent(&self, a: AgentId) -> StoreResult<Option<AgentRecord>> {
        self.hit("get_agent");
        self.inner.get_agent(a).await
    }
    async fn list_agents(&self, t: TenantId) -> StoreResult<Vec<AgentRecord>> {
        self.hit("list_agents");
        self.inner.list_agents(t).await
    }
    async fn all_agents(&self) -> StoreResult<Vec<AgentRecord>> {
        self.hit("all_agents");
        self.inner.all_agents().await
    }
    async fn get_agent_version(&self, a: AgentId, v: i64) -> StoreResult<Option<String>> {
        self.hit("get_agent_version");
        self.inner.get_agent_version(a, v).await
    }
    async fn set_agent_version_definition(&self, a: AgentId, v: i64, d: &str) -> StoreResult<()> {
        self.hit("set_agent_version_definition");
        self.inner.set_agent_version_definition(a, v, d).await
    }
    async fn set_agent_status(
        &self,
        a: AgentId,
        s: AgentStatus,
        r: Option<&str>,
    ) -> StoreResult<()> {
        self.hit("set_agent_status");
        self.inner.set_agent_status(a, s, r).await
    }
    async fn set_agent_token_hash(&self, a: AgentId, h: &str) -> StoreResult<()> {
        self.hit("set_agent_token_hash");
        self.inner.set_agent_token_hash(a, h).await
    }
    async fn delete_agent(&self, a: AgentId) -> StoreResult<bool> {
        self.hit("delete_agent");
        self.inner.delete_agent(a).await
    }
    async fn commit_all(
        &self,
        batch: &[SessionWrites],
        connections: &[ConnectionWrite],
    ) -> StoreResult<Committed> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("disk full".into()));
        }
        let poisoned = *self.poisoned.lock().unwrap();
        if batch.iter().any(|g| Some(g.session) == poisoned) {
            panic!("the store cannot write this session");
        }
        let poisoned = self.poisoned_line.lock().unwrap().clone();
        let poisoned_line = |w: &ConnectionWrite| match w {
            ConnectionWrite::Line(l) => Some(&l.event.kind) == poisoned.as_ref(),
            _ => false,
        };
        if connections.iter().any(poisoned_line) {
            return Err(StoreError::Refused(
                "the store cannot write this line".into(),
            ));
        }
        self.hit("commit_all");
        self.inner.commit_all(batch, connections).await
    }
    async fn claim_session(&self, s: SessionId) -> StoreResult<Option<Epoch>> {
        self.hit("claim_session");
        self.inner.claim_session(s).await
    }
    async fn put_connection(&self, c: &ConnectionRecord) -> StoreResult<()> {
        self.hit("put_connection");
        self.inner.put_connection(c).await
    }
    async fn get_connection(&self, id: ConnectionId) -> StoreResult<Option<ConnectionRecord>> {
        self.hit("get_connection");
        self.inner.get_connection(id).await
    }
    async fn list_connections(&self, t: TenantId) -> StoreResult<Vec<ConnectionRecord>> {
        self.hit("list_connections");
        self.inner.list_connections(t).await
    }
    async fn delete_connection(&self, id: ConnectionId) -> StoreResult<bool> {
        self.hit("delete_connection");
        self.inner.delete_connection(id).await
    }
    async fn set_agent_channels(&self, a: AgentId, c: &[AgentChannel]) -> StoreResult<()> {
        self.hit("set_agent_channels");
        self.inner.set_agent_channels(a, c).await
    }
    async fn agent_channels(&self, a: AgentId) -> StoreResult<Vec<AgentChannel>> {
        self.hit("agent_channels");
        self.inner.agent_channels(a).await
    }
    async fn inbound_agent(&self, c: ConnectionId) -> StoreResult<Option<AgentId>> {
        self.hit("inbound_agent");
        self.inner.inbound_agent(c).await
    }
    async fn put_widget(&self, w: &WidgetRecord) -> StoreResult<()> {
        self.hit("put_widget");
        self.inner.put_widget(w).await
    }
    async fn widget_of_agent(&self, a: AgentId) -> StoreResult<Option<WidgetRecord>> {
        self.hit("widget_of_agent");
        self.inner.widget_of_agent(a).await
    }
    async fn widget(&self, id: &str) -> StoreResult<Option<WidgetRecord>> {
        self.hit("widget");
        self.inner.widget(id).await
    }
    async fn inbox_mark_seen(
        &self,
        c: ConnectionId,
        d: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.hit("inbox_mark_seen");
        self.inner.inbox_mark_seen(c, d, at).await
    }
    async fn inbox_pending(&self, c: ConnectionId, l: u32) -> StoreResult<Vec<InboundMessage>> {
        self.hit("inbox_pending");
        self.inner.inbox_pending(c, l).await
    }
    async fn inbox_prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.hit("inbox_prune");
        self.inner.inbox_prune(before).await
    }
    async fn channel_session(
        &self,
        c: ConnectionId,
        k: &str,
    ) -> StoreResult<Option<ChannelSession>> {
        self.hit("channel_session");
        self.inner.channel_session(c, k).await
    }
    async fn set_channel_session(
        &self,
        c: ConnectionId,
        k: &str,
        s: &ChannelSession,
    ) -> StoreResult<()> {
        self.hit("set_channel_session");
        self.inner.set_channel_session(c, k, s).await
    }
    async fn connection_events(
        &self,
        c: ConnectionId,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<ConnectionEvent>> {
        self.hit("connection_events");
        self.inner.connection_events(c, before, limit).await
    }
    async fn connector_cursor(&self, c: ConnectionId) -> StoreResult<Option<String>> {
        self.hit("connector_cursor");
        self.inner.connector_cursor(c).await
    }
    async fn set_connector_cursor(&self, c: ConnectionId, cursor: &str) -> StoreResult<()> {
        self.hit("set_connector_cursor");
        self.inner.set_connector_cursor(c, cursor).await
    }
    async fn outbox_push(
        &self,
        c: ConnectionId,
        e: &NewOutboxEvent,
        at: DateTime<Utc>,
    ) -> StoreResult<i64> {
        self.hit("outbox_push");
        self.inner.outbox_push(c, e, at).await
    }
    async fn outbox_claim(
        &self,
        c: ConnectionId,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxEntry>> {
        self.hit("outbox_claim");
        self.inner.outbox_claim(c, now, lease_until, limit).await
    }
    async fn outbox_retry(
        &self,
        id: i64,
        attempts: u32,
        next: DateTime<Utc>,
        error: &str,
    ) -> StoreResult<()> {
        self.hit("outbox_retry");
        self.inner.outbox_retry(id, attempts, next, error).await
    }
    async fn outbox_done(&self, id: i64) -> StoreResult<()> {
        self.hit("outbox_done");
        self.inner.outbox_done(id).await
    }
    async fn outbox_len(&self, c: ConnectionId) -> StoreResult<u64> {
        self.hit("outbox_len");
        self.inner.outbox_len(c).await
    }
    async fn load_session(&self, s: SessionId) -> StoreResult<Option<Session>> {
        self.hit("load_session");
        self.inner.load_session(s).await
    }
    async fn load_messages(&self, s: SessionId) -> StoreResult<Vec<Message>> {
        self.hit("load_messages");
        self.inner.load_messages(s).await
    }
    async fn load_recent_messages(&self, s: SessionId, n: u32) -> StoreResult<Vec<Message>> {
        self.hit("load_recent_messages");
        self.inner.load_recent_messages(s, n).await
    }
    async fn find_reply(&self, s: SessionId, k: &str) -> StoreResult<Option<Message>> {
        self.hit("find_reply");
        self.inner.find_reply(s, k).await
    }
    async fn sessions_for_user(
        &self,
        t: TenantId,
        a: Option<AgentId>,
        e: &str,
        x: &str,
    ) -> StoreResult<Vec<Session>> {
        self.hit("sessions_for_user");
        self.inner.sessions_for_user(t, a, e, x).await
    }
    async fn due_sessions(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<(SessionId, AgentId)>> {
        self.hit("due_sessions");
        self.inner.due_sessions(now, limit).await
    }
    async fn set_feedback(&self, s: SessionId, l: i64, f: Feedback) -> StoreResult<bool> {
        self.hit("set_feedback");
        self.inner.set_feedback(s, l, f).await
    }
    async fn get_attachment(
        &self,
        id: Uuid,
    ) -> StoreResult<Option<(SessionId, AttachmentMeta, Bytes)>> {
        self.hit("get_attachment");
        self.inner.get_attachment(id).await
    }
    async fn put_campaign(&self, c: &CampaignRecord) -> StoreResult<()> {
        self.hit("put_campaign");
        self.inner.put_campaign(c).await
    }
    async fn get_campaign(&self, id: CampaignId) -> StoreResult<Option<CampaignRecord>> {
        self.hit("get_campaign");
        self.inner.get_campaign(id).await
    }
    async fn list_campaigns(&self, t: TenantId) -> StoreResult<Vec<CampaignRecord>> {
        self.hit("list_campaigns");
        self.inner.list_campaigns(t).await
    }
    async fn delete_campaign(&self, id: CampaignId) -> StoreResult<bool> {
        self.hit("delete_campaign");
        self.inner.delete_campaign(id).await
    }
    async fn put_flow(&self, f: &FlowRecord) -> StoreResult<()> {
        self.hit("put_flow");
        self.inner.put_flow(f).await
    }
    async fn get_flow(&self, c: CampaignId, name: &str) -> StoreResult<Option<FlowRecord>> {
        self.hit("get_flow");
        self.inner.get_flow(c, name).await
    }
    async fn list_flows(&self, c: CampaignId) -> StoreResult<Vec<FlowRecord>> {
        self.hit("list_flows");
        self.inner.list_flows(c).await
    }
    async fn delete_flow(&self, c: CampaignId, name: &str) -> StoreResult<bool> {
        self.hit("delete_flow");
        self.inner.delete_flow(c, name).await
    }
    async fn upsert_participants(
        &self,
        t: TenantId,
        c: CampaignId,
        u: Option<UploadId>,
        batch: &[CheckedParticipant],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<Upserted>> {
        self.hit("upsert_participants");
        self.inner.upsert_participants(t, c, u, batch, at).await
    }
    async fn get_participant(&self, id: ParticipantId) -> StoreResult<Option<ParticipantRecord>> {
        self.hit("get_participant");
        self.inner.get_participant(id).await
    }
    async fn list_participants(
        &self,
        c: CampaignId,
        q: &ParticipantQuery,
    ) -> StoreResult<(Vec<ParticipantRecord>, u64)> {
        self.hit("list_participants");
        self.inner.list_participants(c, q).await
    }
    async fn delete_participant(&self, id: ParticipantId) -> StoreResult<bool> {
        self.hit("delete_participant");
        self.inner.delete_participant(id).await
    }
    async fn get_customer(&self, id: CustomerId) -> StoreResult<Option<CustomerRecord>> {
        self.hit("get_customer");
        self.inner.get_customer(id).await
    }
    async fn list_customers(
        &self,
        t: TenantId,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<CustomerRecord>, u64)> {
        self.hit("list_customers");
        self.inner.list_customers(t, offset, limit).await
    }
    async fn put_upload(&self, u: &UploadRecord) -> StoreResult<()> {
        self.hit("put_upload");
        self.inner.put_upload(u).await
    }
    async fn get_upload(&self, id: UploadId) -> StoreResult<Option<UploadRecord>> {
        self.hit("get_upload");
        self.inner.get_upload(id).await
    }
    async fn list_uploads(&self, c: CampaignId) -> StoreResult<Vec<UploadRecord>> {
        self.hit("list_uploads");
        self.inner.list_uploads(c).await
    }
    async fn get_tenant(&self, id: TenantId) -> StoreResult<Option<Tenant>> {
        self.hit("get_tenant");
        self.inner.get_tenant(id).await
    }
    async fn update_tenant(&self, t: &Tenant) -> StoreResult<()> {
        self.hit("update_tenant");
        self.inner.update_tenant(t).await
    }
    async fn put_user(&self, u: &UserRecord) -> StoreResult<()> {
        self.hit("put_user");
        self.inner.put_user(u).await
    }
    async fn get_user(&self, id: UserId) -> StoreResult<Option<UserRecord>> {
        self.hit("get_user");
        self.inner.get_user(id).await
    }
    async fn users_by_email(&self, e: &str) -> StoreResult<Vec<UserRecord>> {
        self.hit("users_by_email");
        self.inner.users_by_email(e).await
    }
    async fn list_users(&self, t: TenantId) -> StoreResult<Vec<UserRecord>> {
        self.hit("list_users");
        self.inner.list_users(t).await
    }
    async fn delete_user(&self, id: UserId) -> StoreResult<bool> {
        self.hit("delete_user");
        self.inner.delete_user(id).await
    }
    async fn put_auth_token(&self, t: &AuthToken) -> StoreResult<()> {
        self.hit("put_auth_token");
        self.inner.put_auth_token(t).await
    }
    async fn auth_token(&self, h: &str) -> StoreResult<Option<AuthToken>> {
        self.hit("auth_token");
        self.inner.auth_token(h).await
    }
    async fn delete_auth_token(&self, h: &str) -> StoreResult<()> {
        self.hit("delete_auth_token");
        self.inner.delete_auth_token(h).await
    }
    async fn delete_auth_tokens(&self, u: UserId) -> StoreResult<u64> {
        self.hit("delete_auth_tokens");
        self.inner.delete_auth_tokens(u).await
    }
    async fn prune_auth_tokens(&self, n: DateTime<Utc>) -> StoreResult<u64> {
        self.hit("prune_auth_tokens");
        self.inner.prune_auth_tokens(n).await
    }
    async fn reserve_session(
        &self,
        s: UsageScope,
        f: DateTime<Utc>,
        t: DateTime<Utc>,
        l: u64,
    ) -> StoreResult<bool> {
        self.hit("reserve_session");
        self.inner.reserve_session(s, f, t, l).await
    }
    async fn release_session(
        &self,
        s: UsageScope,
        f: DateTime<Utc>,
        t: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.hit("release_session");
        self.inner.release_session(s, f, t).await
    }
    async fn session_usage(
        &self,
        t: TenantId,
        f: DateTime<Utc>,
        to: DateTime<Utc>,
        n: DateTime<Utc>,
        l: chrono::TimeDelta,
    ) -> StoreResult<SessionUsage> {
        self.hit("session_usage");
        self.inner.session_usage(t, f, to, n, l).await
    }
    async fn list_conversations(
        &self,
        t: TenantId,
        q: &ConversationQuery,
    ) -> StoreResult<(Vec<Session>, u64)> {
        self.hit("list_conversations");
        self.inner.list_conversations(t, q).await
    }
    async fn list_running_campaigns(&self) -> StoreResult<Vec<CampaignRecord>> {
        self.hit("list_running_campaigns");
        self.inner.list_running_campaigns().await
    }
    async fn pending_participants(
        &self,
        c: CampaignId,
        a: Option<ParticipantId>,
        l: u32,
    ) -> StoreResult<Vec<ParticipantId>> {
        self.hit("pending_participants");
        self.inner.pending_participants(c, a, l).await
    }
    async fn add_participant_event(
        &self,
        c: CampaignId,
        p: ParticipantId,
        t: TriggerType,
        m: Option<CommunicationId>,
        at: DateTime<Utc>,
    ) -> StoreResult<i64> {
        self.hit("add_participant_event");
        self.inner.add_participant_event(c, p, t, m, at).await
    }
    async fn participant_events(
        &self,
        c: CampaignId,
        a: i64,
        l: u32,
    ) -> StoreResult<Vec<ParticipantEvent>> {
        self.hit("participant_events");
        self.inner.participant_events(c, a, l).await
    }
    async fn commit_participant_step(&self, s: &ParticipantStep) -> StoreResult<StepOutcome> {
        self.hit("commit_participant_step");
        self.inner.commit_participant_step(s).await
    }
    async fn get_communication(
        &self,
        id: CommunicationId,
    ) -> StoreResult<Option<CommunicationRecord>> {
        self.hit("get_communication");
        self.inner.get_communication(id).await
    }
    async fn change_communication(
        &self,
        id: CommunicationId,
        f: &[CommunicationStatus],
        c: &CommunicationChange,
    ) -> StoreResult<Option<CommunicationRecord>> {
        self.hit("change_communication");
        self.inner.change_communication(id, f, c).await
    }
    async fn due_communications(
        &self,
        c: CampaignId,
        n: DateTime<Utc>,
        l: u32,
    ) -> StoreResult<Vec<CommunicationRecord>> {
        self.hit("due_communications");
        self.inner.due_communications(c, n, l).await
    }
    async fn next_due_communication(&self, c: CampaignId) -> StoreResult<Option<DateTime<Utc>>> {
        self.hit("next_due_communication");
        self.inner.next_due_communication(c).await
    }
    async fn live_communications(
        &self,
        c: CampaignId,
    ) -> StoreResult<Vec<(CommunicationId, SessionId)>> {
        self.hit("live_communications");
        self.inner.live_communications(c).await
    }
    async fn communication_by_session(
        &self,
        s: SessionId,
    ) -> StoreResult<Option<CommunicationRecord>> {
        self.hit("communication_by_session");
        self.inner.communication_by_session(s).await
    }
    async fn communication_by_message(
        &self,
        c: ConnectionId,
        m: &str,
    ) -> StoreResult<Option<CommunicationRecord>> {
        self.hit("communication_by_message");
        self.inner.communication_by_message(c, m).await
    }
    async fn list_communications(&self, p: ParticipantId) -> StoreResult<Vec<CommunicationRecord>> {
        self.hit("list_communications");
        self.inner.list_communications(p).await
    }
    async fn campaign_stats(&self, c: CampaignId) -> StoreResult<CampaignStats> {
        self.hit("campaign_stats");
        self.inner.campaign_stats(c).await
    }
    async fn customers_by_channel_id(
        &self,
        t: TenantId,
        n: &str,
        v: &str,
        l: u32,
    ) -> StoreResult<Vec<CustomerId>> {
        self.hit("customers_by_channel_id");
        self.inner.customers_by_channel_id(t, n, v, l).await
    }
    async fn participants_of_customer(
        &self,
        c: CampaignId,
        cu: CustomerId,
    ) -> StoreResult<Vec<ParticipantId>> {
        self.hit("participants_of_customer");
        self.inner.participants_of_customer(c, cu).await
    }
}

const AGENT: &str = "name: T\nworkflow:\n  - name: A\n    init_state: true\nknowledge:\n  faq:\n    - {question: opening hours, answer: 9 to 17}\n";

async fn node() -> (Node, Arc<Switchable>, AgentId, tempfile::TempDir) {
    let (node, store, agent, _, dir) = node_with(NodeConfig::default()).await;
    (node, store, agent, dir)
}

async fn node_with(
    config: NodeConfig,
) -> (Node, Arc<Switchable>, AgentId, TenantId, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
    let store = Arc::new(Switchable {
        inner,
        failing: AtomicBool::new(false),
        poisoned: Mutex::new(None),
        poisoned_line: Mutex::new(None),
        calls: Mutex::default(),
    });
    store.migrate().await.unwrap();
    let tenant = Tenant {
        id: Uuid::now_v7(),
        name: "t".into(),
        api_key_hash: "h".into(),
        created_at: Utc::now(),
        settings: Default::default(),
    };
    store.create_tenant(&tenant).await.unwrap();
    let node = Node::start(store.clone(), config).await.unwrap();
    let (agent, _, _) = node
        .create_agent(tenant.id, AGENT, Format::Yaml)
        .await
        .unwrap();
    node.start_agent(tenant.id, agent.id).await.unwrap();
    (node, store, agent.id, tenant.id, dir)
}

fn turn(agent: AgentId, text: &str) -> TurnRequest {
    TurnRequest {
        agent_id: agent,
        text: text.into(),
        attachments: Vec::new(),
        idempotency_key: None,
        new_key: false,
    }
}

#[tokio::test]
async fn concurrent_turns_share_commits() {
    let (node, _store, agent, _dir) = node().await;
    let mut sessions = Vec::new();
    for _ in 0..200 {
        sessions.push(
            node.create_session(agent, Default::default())
                .await
                .unwrap()
                .id,
        );
    }
    let before = node.shared().persistence().stats().await.unwrap();
    let tasks: Vec<_> = sessions
        .iter()
        .map(|&sid| {
            let node = node.clone();
            tokio::spawn(async move { node.turn(sid, turn(agent, "opening hours?")).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().response, "9 to 17");
    }
    let after = node.shared().persistence().stats().await.unwrap();
    let (requests, batches) = (
        after.requests - before.requests,
        after.batches - before.batches,
    );
    assert_eq!(requests, 200);
    assert!(batches < 200, "200 concurrent turns took {batches} commits");
    for sid in sessions {
        assert_eq!(node.messages(agent, sid).await.unwrap().len(), 2);
    }
    node.shutdown().await;
}

#[tokio::test]
async fn a_failed_commit_is_unavailable_and_leaves_no_trace() {
    let (node, store, agent, _dir) = node().await;
    let sid = node
        .create_session(agent, Default::default())
        .await
        .unwrap()
        .id;
    node.turn(sid, turn(agent, "first")).await.unwrap();

    store.failing.store(true, Ordering::SeqCst);
    let err = node.turn(sid, turn(agent, "lost")).await.unwrap_err();
    assert!(matches!(err, NodeError::Unavailable(_)), "{err:?}");
    assert!(node
        .create_session(agent, Default::default())
        .await
        .is_err());

    store.failing.store(false, Ordering::SeqCst);
    let r = node.turn(sid, turn(agent, "opening hours?")).await.unwrap();
    // The refused turn took no log ids: the next one follows the last committed turn.
    assert_eq!(r.human_id, 3);
    let texts: Vec<String> = node
        .messages(agent, sid)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts.len(), 4);
    assert!(!texts.contains(&"lost".to_string()));
    assert_eq!(node.session(agent, sid).await.unwrap().message_count, 4);
    node.shutdown().await;
}

#[tokio::test]
async fn a_write_that_panics_the_store_fails_only_its_own_turn() {
    let (node, store, agent, _dir) = node().await;
    let bad = node
        .create_session(agent, Default::default())
        .await
        .unwrap()
        .id;
    let mut good = Vec::new();
    for _ in 0..30 {
        good.push(
            node.create_session(agent, Default::default())
                .await
                .unwrap()
                .id,
        );
    }
    *store.poisoned.lock().unwrap() = Some(bad);
    let before = node.shared().persistence().stats().await.unwrap();
    // All at once, so the bad turn shares batches with good ones.
    let tasks: Vec<_> = std::iter::once(bad)
        .chain(good.iter().copied())
        .map(|sid| {
            let node = node.clone();
            tokio::spawn(async move { (sid, node.turn(sid, turn(agent, "opening hours?")).await) })
        })
        .collect();
    for t in tasks {
        let (sid, r) = t.await.unwrap();
        if sid == bad {
            let err = r.unwrap_err();
            assert!(matches!(err, NodeError::Internal(_)), "{err:?}");
        } else {
            assert_eq!(r.unwrap().response, "9 to 17");
        }
    }
    // The same writer committed them all: a restarted one would count from zero.
    let after = node.shared().persistence().stats().await.unwrap();
    assert_eq!(after.requests, before.requests + 31);
    for &sid in &good {
        assert_eq!(node.messages(agent, sid).await.unwrap().len(), 2);
    }
    assert!(node.messages(agent, bad).await.unwrap().is_empty());

    *store.poisoned.lock().unwrap() = None;
    let r = node.turn(bad, turn(agent, "opening hours?")).await.unwrap();
    assert_eq!(r.human_id, 1);
    assert_eq!(node.messages(agent, bad).await.unwrap().len(), 2);
    node.shutdown().await;
}

const BOT_TOKEN: &str = "42:test";

/// A local Bot API: answers every method, counting the messages sent.
async fn fake_telegram(sent: Arc<AtomicU64>) -> String {
    let app = Router::new().route(
        "/{bot}/{method}",
        post(
            move |Path((_bot, method)): Path<(String, String)>, Json(body): Json<Value>| {
                let sent = sent.clone();
                async move {
                    if method == "sendMessage" {
                        let n = sent.fetch_add(1, Ordering::SeqCst) as i64 + 1;
                        return Json(json!({"ok": true, "result": {"message_id": n, "date": 0,
                            "chat": {"id": body["chat_id"], "type": "private"}}}));
                    }
                    Json(json!({"ok": true, "result": true}))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// A node whose agent answers a started Telegram connection (webhook mode) on `base`.
async fn telegram_node(base: &str) -> (Node, Arc<Switchable>, ConnectionId, tempfile::TempDir) {
    let (node, store, agent, tenant, dir) = node_with(NodeConfig {
        public_url: Some("https://parley.example".into()),
        // The fake Bot API is on loopback.
        egress: EgressPolicy::new(true, &["127.0.0.0/8".into()]).unwrap(),
        // No timer sweeps reading the store while calls are counted.
        timer_sweep: Duration::from_secs(3600),
        ..NodeConfig::default()
    })
    .await;
    let mut config = serde_json::Map::new();
    config.insert("bot_token".into(), json!(BOT_TOKEN));
    config.insert("api_base".into(), json!(base));
    config.insert("streaming".into(), json!(false));
    let c = node
        .create_connection(
            tenant,
            NewConnection {
                name: "tg".into(),
                platform: parley_connectors::telegram::PLATFORM,
                description: None,
                enabled: true,
                config,
                advanced: None,
                // No platform pacing: each answer goes out at once.
                rate_limits: Some(json!({"per_second": null, "per_chat_per_second": null})),
            },
        )
        .await
        .unwrap();
    node.set_agent_channels(
        tenant,
        agent,
        vec![AgentChannel {
            connection_id: c.id,
            inbound: true,
        }],
    )
    .await
    .unwrap();
    node.start_connection(tenant, c.id).await.unwrap();
    (node, store, c.id, dir)
}

fn telegram_update(update_id: i64, chat: i64, text: &str) -> HookRequest {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-telegram-bot-api-secret-token",
        HeaderValue::from_str(&parley_connectors::telegram::webhook_secret(BOT_TOKEN)).unwrap(),
    );
    let body = json!({"update_id": update_id, "message": {"message_id": update_id,
        "date": Utc::now().timestamp(), "chat": {"id": chat, "type": "private"},
        "from": {"id": chat, "is_bot": false, "first_name": "C"}, "text": text}});
    HookRequest {
        get: false,
        headers,
        query: Default::default(),
        body: body.to_string().into(),
    }
}

/// Waits (bounded) until `sent` answers went out and no delivery is left unfinished,
/// asking the store beneath the counting one.
async fn settled(store: &Switchable, c: ConnectionId, sent: &AtomicU64, answers: u64) {
    for _ in 0..500 {
        if sent.load(Ordering::SeqCst) >= answers
            && store.inner.inbox_pending(c, 10).await.unwrap().is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{} of {answers} answers sent, or deliveries left unfinished",
        sent.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn a_steady_state_platform_message_reads_nothing_from_the_store() {
    let sent = Arc::new(AtomicU64::new(0));
    let base = fake_telegram(sent.clone()).await;
    let (node, store, c, _dir) = telegram_node(&base).await;
    // The chat's first message opens its session.
    let answer = node
        .receive_hook(c, telegram_update(1, 7, "opening hours?"), &Alone)
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    settled(&store, c, &sent, 1).await;
    store.take_calls();
    for n in 2..=11 {
        let answer = node
            .receive_hook(c, telegram_update(n, 7, "opening hours?"), &Alone)
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        settled(&store, c, &sent, n as u64).await;
    }
    let mut calls = store.take_calls();
    // The campaign supervisor's periodic look for running campaigns is no message's.
    calls.remove("list_running_campaigns");
    eprintln!("store calls for 10 steady-state messages: {calls:?}");
    // Per message: the delivery recorded with its log line, the turn, and the reply's
    // line with the done mark, each riding a group commit (fewer when they share one).
    assert_eq!(
        calls.keys().copied().collect::<Vec<_>>(),
        ["commit_all"],
        "{calls:?}"
    );
    assert!((10..=30).contains(&calls["commit_all"]), "{calls:?}");
    node.shutdown().await;
}

#[tokio::test]
async fn a_connection_write_the_store_refuses_fails_only_itself() {
    let (node, store, agent, _dir) = node().await;
    let mut sessions = Vec::new();
    for _ in 0..30 {
        sessions.push(
            node.create_session(agent, Default::default())
                .await
                .unwrap()
                .id,
        );
    }
    *store.poisoned_line.lock().unwrap() = Some("poison".into());
    let c = Uuid::now_v7();
    let journal = node.shared().channels.journal().clone();
    let line = |kind: &str, n: usize| {
        ConnectionWrite::Line(LogLine {
            event: NewConnectionEvent {
                connection_id: c,
                at: Utc::now(),
                kind: kind.into(),
                detail: json!({ "n": n }),
            },
            keep: 100,
        })
    };
    // All at once, so the bad line shares batches with turns and good lines.
    let bad = journal.write(vec![line("poison", 0)]);
    let good: Vec<_> = (1..=5)
        .map(|n| journal.write(vec![line("fine", n)]))
        .collect();
    let turns: Vec<_> = sessions
        .iter()
        .map(|&sid| {
            let node = node.clone();
            tokio::spawn(async move { node.turn(sid, turn(agent, "opening hours?")).await })
        })
        .collect();
    assert!(matches!(bad.await, Err(StoreError::Refused(_))));
    for g in good {
        assert_eq!(g.await.unwrap(), [true]);
    }
    for t in turns {
        assert_eq!(t.await.unwrap().unwrap().response, "9 to 17");
    }
    for &sid in &sessions {
        assert_eq!(node.messages(agent, sid).await.unwrap().len(), 2);
    }
    let lines = store.inner.connection_events(c, None, 100).await.unwrap();
    let mut kinds: Vec<&str> = lines.iter().map(|e| e.kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["fine"; 5]);
    node.shutdown().await;
}

#[tokio::test]
async fn deliveries_go_on_when_the_persistence_writer_restarts() {
    let sent = Arc::new(AtomicU64::new(0));
    let base = fake_telegram(sent.clone()).await;
    let (node, store, c, _dir) = telegram_node(&base).await;
    let answer = node
        .receive_hook(c, telegram_update(1, 7, "opening hours?"), &Alone)
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    settled(&store, c, &sent, 1).await;

    // The writer dies: the node starts a new persistence actor, and connections' writes
    // go to it as sessions' do.
    let old = node.shared().persistence().actor().unwrap().clone();
    old.cast(PersistMsg::WriterDied("test".into())).unwrap();
    for _ in 0..500 {
        let now = node.shared().persistence();
        if now.actor().is_some_and(|a| a.get_id() != old.get_id()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(node.actor_info("persistence").unwrap().restarts, 1);

    let answer = node
        .receive_hook(c, telegram_update(2, 7, "opening hours?"), &Alone)
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    settled(&store, c, &sent, 2).await;
    let lines = store.inner.connection_events(c, None, 100).await.unwrap();
    let replied: Vec<&str> = lines
        .iter()
        .filter(|e| e.kind == "reply")
        .filter_map(|e| e.detail["dedup_id"].as_str())
        .collect();
    assert_eq!(replied, ["2", "1"]);
    // A redelivery after the restart is still known.
    let answer = node
        .receive_hook(c, telegram_update(2, 7, "opening hours?"), &Alone)
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sent.load(Ordering::SeqCst), 2);
    node.shutdown().await;
}
