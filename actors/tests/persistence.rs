//! The node over a real SQLite store whose commits can be made to fail: group commit
//! batches concurrent turns, and a failed commit loses nothing acknowledged and breaks
//! nothing after it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
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
use parley_engine::flow::TriggerType;
use parley_engine::identity::{AuthToken, SessionUsage, UsageScope, UserId, UserRecord};
use parley_engine::inbound::InboundMessage;
use parley_engine::model::{
    AgentId, AttachmentMeta, Feedback, Message, Session, SessionId, TenantId,
};
use parley_engine::store::{
    AgentChannel, AgentRecord, AgentStatus, ChannelSession, ConnectionEvent, ConversationQuery,
    Epoch, NewConnectionEvent, NewOutboxEvent, OutboxEntry, RepeatedConnectionEvent, SessionWrites,
    SqliteStore, Store, StoreError, StoreResult, Tenant,
};
use uuid::Uuid;

/// The real SQLite store, with a switch that makes commits fail like a full disk would,
/// and one that makes a commit touching a given session panic (a bug in the store).
struct Switchable {
    inner: SqliteStore,
    failing: AtomicBool,
    poisoned: Mutex<Option<SessionId>>,
}

#[async_trait]
impl Store for Switchable {
    async fn migrate(&self) -> StoreResult<()> {
        self.inner.migrate().await
    }
    async fn create_tenant(&self, t: &Tenant) -> StoreResult<()> {
        self.inner.create_tenant(t).await
    }
    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        self.inner.list_tenants().await
    }
    async fn tenant_by_key_hash(&self, h: &str) -> StoreResult<Option<Tenant>> {
        self.inner.tenant_by_key_hash(h).await
    }
    async fn set_tenant_key_hash(&self, t: TenantId, h: &str) -> StoreResult<()> {
        self.inner.set_tenant_key_hash(t, h).await
    }
    async fn create_agent(&self, r: &AgentRecord, d: &str) -> StoreResult<()> {
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
        self.inner.add_agent_version(a, v, n, d, at).await
    }
    async fn get_agent(&self, a: AgentId) -> StoreResult<Option<AgentRecord>> {
        self.inner.get_agent(a).await
    }
    async fn list_agents(&self, t: TenantId) -> StoreResult<Vec<AgentRecord>> {
        self.inner.list_agents(t).await
    }
    async fn all_agents(&self) -> StoreResult<Vec<AgentRecord>> {
        self.inner.all_agents().await
    }
    async fn get_agent_version(&self, a: AgentId, v: i64) -> StoreResult<Option<String>> {
        self.inner.get_agent_version(a, v).await
    }
    async fn set_agent_version_definition(&self, a: AgentId, v: i64, d: &str) -> StoreResult<()> {
        self.inner.set_agent_version_definition(a, v, d).await
    }
    async fn set_agent_status(
        &self,
        a: AgentId,
        s: AgentStatus,
        r: Option<&str>,
    ) -> StoreResult<()> {
        self.inner.set_agent_status(a, s, r).await
    }
    async fn set_agent_token_hash(&self, a: AgentId, h: &str) -> StoreResult<()> {
        self.inner.set_agent_token_hash(a, h).await
    }
    async fn delete_agent(&self, a: AgentId) -> StoreResult<bool> {
        self.inner.delete_agent(a).await
    }
    async fn commit(&self, batch: &[SessionWrites]) -> StoreResult<Vec<SessionId>> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("disk full".into()));
        }
        let poisoned = *self.poisoned.lock().unwrap();
        if batch.iter().any(|g| Some(g.session) == poisoned) {
            panic!("the store cannot write this session");
        }
        self.inner.commit(batch).await
    }
    async fn claim_session(&self, s: SessionId) -> StoreResult<Option<Epoch>> {
        self.inner.claim_session(s).await
    }
    async fn put_connection(&self, c: &ConnectionRecord) -> StoreResult<()> {
        self.inner.put_connection(c).await
    }
    async fn get_connection(&self, id: ConnectionId) -> StoreResult<Option<ConnectionRecord>> {
        self.inner.get_connection(id).await
    }
    async fn list_connections(&self, t: TenantId) -> StoreResult<Vec<ConnectionRecord>> {
        self.inner.list_connections(t).await
    }
    async fn delete_connection(&self, id: ConnectionId) -> StoreResult<bool> {
        self.inner.delete_connection(id).await
    }
    async fn set_agent_channels(&self, a: AgentId, c: &[AgentChannel]) -> StoreResult<()> {
        self.inner.set_agent_channels(a, c).await
    }
    async fn agent_channels(&self, a: AgentId) -> StoreResult<Vec<AgentChannel>> {
        self.inner.agent_channels(a).await
    }
    async fn inbound_agent(&self, c: ConnectionId) -> StoreResult<Option<AgentId>> {
        self.inner.inbound_agent(c).await
    }
    async fn inbox_insert_many(
        &self,
        batch: &[(ConnectionId, InboundMessage)],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        self.inner.inbox_insert_many(batch, at).await
    }
    async fn inbox_done_many(&self, batch: &[(ConnectionId, String)]) -> StoreResult<()> {
        self.inner.inbox_done_many(batch).await
    }
    async fn inbox_mark_seen(
        &self,
        c: ConnectionId,
        d: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.inner.inbox_mark_seen(c, d, at).await
    }
    async fn inbox_pending(&self, c: ConnectionId, l: u32) -> StoreResult<Vec<InboundMessage>> {
        self.inner.inbox_pending(c, l).await
    }
    async fn inbox_prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.inner.inbox_prune(before).await
    }
    async fn channel_session(
        &self,
        c: ConnectionId,
        k: &str,
    ) -> StoreResult<Option<ChannelSession>> {
        self.inner.channel_session(c, k).await
    }
    async fn set_channel_session(
        &self,
        c: ConnectionId,
        k: &str,
        s: &ChannelSession,
    ) -> StoreResult<()> {
        self.inner.set_channel_session(c, k, s).await
    }
    async fn add_connection_events(
        &self,
        batch: &[NewConnectionEvent],
        keep: u32,
    ) -> StoreResult<()> {
        self.inner.add_connection_events(batch, keep).await
    }
    async fn add_repeated_connection_event(
        &self,
        event: &RepeatedConnectionEvent,
        since: DateTime<Utc>,
        keep: u32,
    ) -> StoreResult<()> {
        self.inner
            .add_repeated_connection_event(event, since, keep)
            .await
    }
    async fn connection_events(
        &self,
        c: ConnectionId,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<ConnectionEvent>> {
        self.inner.connection_events(c, before, limit).await
    }
    async fn connector_cursor(&self, c: ConnectionId) -> StoreResult<Option<String>> {
        self.inner.connector_cursor(c).await
    }
    async fn set_connector_cursor(&self, c: ConnectionId, cursor: &str) -> StoreResult<()> {
        self.inner.set_connector_cursor(c, cursor).await
    }
    async fn outbox_push(
        &self,
        c: ConnectionId,
        e: &NewOutboxEvent,
        at: DateTime<Utc>,
    ) -> StoreResult<i64> {
        self.inner.outbox_push(c, e, at).await
    }
    async fn outbox_claim(
        &self,
        c: ConnectionId,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxEntry>> {
        self.inner.outbox_claim(c, now, lease_until, limit).await
    }
    async fn outbox_retry(
        &self,
        id: i64,
        attempts: u32,
        next: DateTime<Utc>,
        error: &str,
    ) -> StoreResult<()> {
        self.inner.outbox_retry(id, attempts, next, error).await
    }
    async fn outbox_done(&self, id: i64) -> StoreResult<()> {
        self.inner.outbox_done(id).await
    }
    async fn outbox_len(&self, c: ConnectionId) -> StoreResult<u64> {
        self.inner.outbox_len(c).await
    }
    async fn load_session(&self, s: SessionId) -> StoreResult<Option<Session>> {
        self.inner.load_session(s).await
    }
    async fn load_messages(&self, s: SessionId) -> StoreResult<Vec<Message>> {
        self.inner.load_messages(s).await
    }
    async fn load_recent_messages(&self, s: SessionId, n: u32) -> StoreResult<Vec<Message>> {
        self.inner.load_recent_messages(s, n).await
    }
    async fn find_reply(&self, s: SessionId, k: &str) -> StoreResult<Option<Message>> {
        self.inner.find_reply(s, k).await
    }
    async fn sessions_for_user(
        &self,
        t: TenantId,
        a: Option<AgentId>,
        e: &str,
        x: &str,
    ) -> StoreResult<Vec<Session>> {
        self.inner.sessions_for_user(t, a, e, x).await
    }
    async fn due_sessions(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<(SessionId, AgentId)>> {
        self.inner.due_sessions(now, limit).await
    }
    async fn set_feedback(&self, s: SessionId, l: i64, f: Feedback) -> StoreResult<bool> {
        self.inner.set_feedback(s, l, f).await
    }
    async fn get_attachment(
        &self,
        id: Uuid,
    ) -> StoreResult<Option<(SessionId, AttachmentMeta, Bytes)>> {
        self.inner.get_attachment(id).await
    }
    async fn put_campaign(&self, c: &CampaignRecord) -> StoreResult<()> {
        self.inner.put_campaign(c).await
    }
    async fn get_campaign(&self, id: CampaignId) -> StoreResult<Option<CampaignRecord>> {
        self.inner.get_campaign(id).await
    }
    async fn list_campaigns(&self, t: TenantId) -> StoreResult<Vec<CampaignRecord>> {
        self.inner.list_campaigns(t).await
    }
    async fn delete_campaign(&self, id: CampaignId) -> StoreResult<bool> {
        self.inner.delete_campaign(id).await
    }
    async fn put_flow(&self, f: &FlowRecord) -> StoreResult<()> {
        self.inner.put_flow(f).await
    }
    async fn get_flow(&self, c: CampaignId, name: &str) -> StoreResult<Option<FlowRecord>> {
        self.inner.get_flow(c, name).await
    }
    async fn list_flows(&self, c: CampaignId) -> StoreResult<Vec<FlowRecord>> {
        self.inner.list_flows(c).await
    }
    async fn delete_flow(&self, c: CampaignId, name: &str) -> StoreResult<bool> {
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
        self.inner.upsert_participants(t, c, u, batch, at).await
    }
    async fn get_participant(&self, id: ParticipantId) -> StoreResult<Option<ParticipantRecord>> {
        self.inner.get_participant(id).await
    }
    async fn list_participants(
        &self,
        c: CampaignId,
        q: &ParticipantQuery,
    ) -> StoreResult<(Vec<ParticipantRecord>, u64)> {
        self.inner.list_participants(c, q).await
    }
    async fn delete_participant(&self, id: ParticipantId) -> StoreResult<bool> {
        self.inner.delete_participant(id).await
    }
    async fn get_customer(&self, id: CustomerId) -> StoreResult<Option<CustomerRecord>> {
        self.inner.get_customer(id).await
    }
    async fn list_customers(
        &self,
        t: TenantId,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<CustomerRecord>, u64)> {
        self.inner.list_customers(t, offset, limit).await
    }
    async fn put_upload(&self, u: &UploadRecord) -> StoreResult<()> {
        self.inner.put_upload(u).await
    }
    async fn get_upload(&self, id: UploadId) -> StoreResult<Option<UploadRecord>> {
        self.inner.get_upload(id).await
    }
    async fn list_uploads(&self, c: CampaignId) -> StoreResult<Vec<UploadRecord>> {
        self.inner.list_uploads(c).await
    }
    async fn get_tenant(&self, id: TenantId) -> StoreResult<Option<Tenant>> {
        self.inner.get_tenant(id).await
    }
    async fn update_tenant(&self, t: &Tenant) -> StoreResult<()> {
        self.inner.update_tenant(t).await
    }
    async fn put_user(&self, u: &UserRecord) -> StoreResult<()> {
        self.inner.put_user(u).await
    }
    async fn get_user(&self, id: UserId) -> StoreResult<Option<UserRecord>> {
        self.inner.get_user(id).await
    }
    async fn users_by_email(&self, e: &str) -> StoreResult<Vec<UserRecord>> {
        self.inner.users_by_email(e).await
    }
    async fn list_users(&self, t: TenantId) -> StoreResult<Vec<UserRecord>> {
        self.inner.list_users(t).await
    }
    async fn delete_user(&self, id: UserId) -> StoreResult<bool> {
        self.inner.delete_user(id).await
    }
    async fn put_auth_token(&self, t: &AuthToken) -> StoreResult<()> {
        self.inner.put_auth_token(t).await
    }
    async fn auth_token(&self, h: &str) -> StoreResult<Option<AuthToken>> {
        self.inner.auth_token(h).await
    }
    async fn delete_auth_token(&self, h: &str) -> StoreResult<()> {
        self.inner.delete_auth_token(h).await
    }
    async fn delete_auth_tokens(&self, u: UserId) -> StoreResult<u64> {
        self.inner.delete_auth_tokens(u).await
    }
    async fn prune_auth_tokens(&self, n: DateTime<Utc>) -> StoreResult<u64> {
        self.inner.prune_auth_tokens(n).await
    }
    async fn reserve_session(
        &self,
        s: UsageScope,
        f: DateTime<Utc>,
        t: DateTime<Utc>,
        l: u64,
    ) -> StoreResult<bool> {
        self.inner.reserve_session(s, f, t, l).await
    }
    async fn release_session(
        &self,
        s: UsageScope,
        f: DateTime<Utc>,
        t: DateTime<Utc>,
    ) -> StoreResult<()> {
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
        self.inner.session_usage(t, f, to, n, l).await
    }
    async fn list_conversations(
        &self,
        t: TenantId,
        q: &ConversationQuery,
    ) -> StoreResult<(Vec<Session>, u64)> {
        self.inner.list_conversations(t, q).await
    }
    async fn list_running_campaigns(&self) -> StoreResult<Vec<CampaignRecord>> {
        self.inner.list_running_campaigns().await
    }
    async fn pending_participants(
        &self,
        c: CampaignId,
        a: Option<ParticipantId>,
        l: u32,
    ) -> StoreResult<Vec<ParticipantId>> {
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
        self.inner.add_participant_event(c, p, t, m, at).await
    }
    async fn participant_events(
        &self,
        c: CampaignId,
        a: i64,
        l: u32,
    ) -> StoreResult<Vec<ParticipantEvent>> {
        self.inner.participant_events(c, a, l).await
    }
    async fn commit_participant_step(&self, s: &ParticipantStep) -> StoreResult<StepOutcome> {
        self.inner.commit_participant_step(s).await
    }
    async fn get_communication(
        &self,
        id: CommunicationId,
    ) -> StoreResult<Option<CommunicationRecord>> {
        self.inner.get_communication(id).await
    }
    async fn change_communication(
        &self,
        id: CommunicationId,
        f: &[CommunicationStatus],
        c: &CommunicationChange,
    ) -> StoreResult<Option<CommunicationRecord>> {
        self.inner.change_communication(id, f, c).await
    }
    async fn due_communications(
        &self,
        c: CampaignId,
        n: DateTime<Utc>,
        l: u32,
    ) -> StoreResult<Vec<CommunicationRecord>> {
        self.inner.due_communications(c, n, l).await
    }
    async fn next_due_communication(&self, c: CampaignId) -> StoreResult<Option<DateTime<Utc>>> {
        self.inner.next_due_communication(c).await
    }
    async fn live_communications(
        &self,
        c: CampaignId,
    ) -> StoreResult<Vec<(CommunicationId, SessionId)>> {
        self.inner.live_communications(c).await
    }
    async fn communication_by_session(
        &self,
        s: SessionId,
    ) -> StoreResult<Option<CommunicationRecord>> {
        self.inner.communication_by_session(s).await
    }
    async fn communication_by_message(
        &self,
        c: ConnectionId,
        m: &str,
    ) -> StoreResult<Option<CommunicationRecord>> {
        self.inner.communication_by_message(c, m).await
    }
    async fn list_communications(&self, p: ParticipantId) -> StoreResult<Vec<CommunicationRecord>> {
        self.inner.list_communications(p).await
    }
    async fn campaign_stats(&self, c: CampaignId) -> StoreResult<CampaignStats> {
        self.inner.campaign_stats(c).await
    }
    async fn customers_by_channel_id(
        &self,
        t: TenantId,
        n: &str,
        v: &str,
        l: u32,
    ) -> StoreResult<Vec<CustomerId>> {
        self.inner.customers_by_channel_id(t, n, v, l).await
    }
    async fn participants_of_customer(
        &self,
        c: CampaignId,
        cu: CustomerId,
    ) -> StoreResult<Vec<ParticipantId>> {
        self.inner.participants_of_customer(c, cu).await
    }
}

const AGENT: &str = "name: T\nworkflow:\n  - name: A\n    init_state: true\nknowledge:\n  faq:\n    - {question: opening hours, answer: 9 to 17}\n";

async fn node() -> (Node, Arc<Switchable>, AgentId, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
    let store = Arc::new(Switchable {
        inner,
        failing: AtomicBool::new(false),
        poisoned: Mutex::new(None),
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
    let node = Node::start(store.clone(), NodeConfig::default())
        .await
        .unwrap();
    let (agent, _, _) = node
        .create_agent(tenant.id, AGENT, Format::Yaml)
        .await
        .unwrap();
    node.start_agent(tenant.id, agent.id).await.unwrap();
    (node, store, agent.id, dir)
}

fn turn(agent: AgentId, text: &str) -> TurnRequest {
    TurnRequest {
        agent_id: agent,
        text: text.into(),
        attachments: Vec::new(),
        idempotency_key: None,
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
