//! The Chat API operations: sessions, turns, conversations, feedback, attachments.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use parley_engine::model::{
    AgentId, AttachmentMeta, ChannelRef, CloseStatus, Feedback, Message, Mode, Role, Session,
    SessionId, SessionState, TenantId,
};
use parley_engine::results::FieldType;
use parley_engine::store::{Write, FIRST_EPOCH};
use parley_engine::telemetry;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::identity_ops::Admission;
use super::{Node, Shared};
use crate::error::{NodeError, NodeResult};
use crate::events::UserEvent;
use crate::session::{customer_visible, SessionMsg, SessionPatch, TurnReply, TurnRequest};

/// Where a session's requests are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Local,
    /// Base URL of the owning node.
    Remote(Arc<str>),
}

/// Customer types (`ext_type`) the Chat API accepts.
pub const EXT_TYPES: [&str; 11] = [
    "web", "mobile", "telegram", "whatsapp", "email", "sip", "facebook", "discord", "slack",
    "teams", "webhook",
];

/// The create-session request body (the seed's shape).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    pub user_id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// The customer type (`ext_type`), default `web`.
    #[serde(rename = "type")]
    pub ext_type: Option<String>,
    #[serde(default)]
    pub args: Vec<Value>,
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    pub user_info: Option<Value>,
    pub channel_id: Option<String>,
    pub language: Option<String>,
    pub start_phrase: Option<String>,
    /// The platform chat the session talks on: set by the server only, never read from a
    /// request body.
    #[serde(skip)]
    pub channel: Option<ChannelRef>,
}

/// How a session opened by parley itself (a campaign's communication) begins.
#[derive(Debug, Clone, Default)]
pub struct Opening {
    /// The session's id, when the caller reserved one.
    pub id: Option<SessionId>,
    /// The first message, instead of the agent's greeting.
    pub text: Option<String>,
}

/// A session with its whole log.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub session: Session,
    pub messages: Vec<Message>,
}

fn check_contact(field: &str, value: &Option<String>, ty: FieldType) -> NodeResult<Option<String>> {
    match value {
        None => Ok(None),
        Some(v) => ty
            .coerce(&Value::String(v.clone()))
            .map(|v| v.as_str().map(str::to_string))
            .map_err(|e| NodeError::Invalid(format!("{field}: {e}"))),
    }
}

/// Keys of `kwargs` the server writes (campaign communications, platform chats): a caller
/// may not write them, so nothing it sends can pass for a campaign's or a platform's.
pub const RESERVED_KWARGS: [&str; 6] = [
    "campaign_id",
    "participant_id",
    "communication_id",
    "communication",
    "context",
    "platform",
];

/// Largest `kwargs` or `user_info` a caller may store on a session, as JSON.
pub const MAX_SESSION_JSON_BYTES: usize = 16 * 1024;
/// Longest short text field of a session (name, language, channel_id, …).
pub const MAX_SESSION_FIELD_CHARS: usize = 256;
/// Longest start phrase.
pub const MAX_START_PHRASE_CHARS: usize = 4096;

pub(crate) fn check_json<T: serde::Serialize + ?Sized>(field: &str, v: &T) -> NodeResult<()> {
    let len = serde_json::to_vec(v).map_or(usize::MAX, |b| b.len());
    if len > MAX_SESSION_JSON_BYTES {
        return Err(NodeError::Invalid(format!(
            "{field}: {len} bytes of JSON, at most {MAX_SESSION_JSON_BYTES}"
        )));
    }
    Ok(())
}

fn check_text(field: &str, v: Option<&String>, max: usize) -> NodeResult<()> {
    match v {
        Some(t) if t.chars().count() > max => Err(NodeError::Invalid(format!(
            "{field}: at most {max} characters"
        ))),
        Some(t) if t.contains('\0') => Err(NodeError::Invalid(format!(
            "{field}: must not contain NUL characters"
        ))),
        _ => Ok(()),
    }
}

/// What a Chat API caller may write on a session: bounded sizes, and none of the keys the
/// server writes itself.
fn check_caller_fields(
    texts: [(&str, Option<&String>); 5],
    start_phrase: Option<&String>,
    kwargs: Option<&Map<String, Value>>,
    args: &[Value],
    user_info: Option<&Value>,
) -> NodeResult<()> {
    for (field, v) in texts {
        check_text(field, v, MAX_SESSION_FIELD_CHARS)?;
    }
    check_text("start_phrase", start_phrase, MAX_START_PHRASE_CHARS)?;
    if let Some(kw) = kwargs {
        if let Some(k) = kw.keys().find(|k| RESERVED_KWARGS.contains(&k.as_str())) {
            return Err(NodeError::Invalid(format!(
                "kwargs.{k}: reserved for what the server records (one of {})",
                RESERVED_KWARGS.join(", ")
            )));
        }
        let mut all = kw.clone();
        if !args.is_empty() {
            all.insert("args".into(), Value::Array(args.to_vec()));
        }
        check_json("kwargs", &all)?;
    }
    if let Some(u) = user_info {
        check_json("user_info", u)?;
    }
    Ok(())
}

impl Node {
    /// Opens a session on the agent's newest version for a Chat API caller; the greeting
    /// is its first message.
    pub async fn create_session(
        &self,
        agent_id: AgentId,
        req: CreateSession,
    ) -> NodeResult<Session> {
        check_caller_fields(
            [
                ("name", req.name.as_ref()),
                ("language", req.language.as_ref()),
                ("channel_id", req.channel_id.as_ref()),
                ("email", req.email.as_ref()),
                ("phone", req.phone.as_ref()),
            ],
            req.start_phrase.as_ref(),
            Some(&req.kwargs),
            &req.args,
            req.user_info.as_ref(),
        )?;
        self.shared.create_session(agent_id, req).await
    }

    /// A session of this agent as stored (every acknowledged change is committed).
    pub async fn session(&self, agent_id: AgentId, id: SessionId) -> NodeResult<Session> {
        match self.shared.store.load_session(id).await? {
            Some(s) if s.agent_id == agent_id => Ok(s),
            _ => Err(NodeError::NotFound("session")),
        }
    }

    /// A session's log as its customer sees it, in order (operators' notes and the AI's
    /// drafts for them are left out).
    pub async fn messages(&self, agent_id: AgentId, id: SessionId) -> NodeResult<Vec<Message>> {
        self.session(agent_id, id).await?;
        self.customer_log(id).await
    }

    /// A session's log without what the customer never sees.
    pub(super) async fn customer_log(&self, id: SessionId) -> NodeResult<Vec<Message>> {
        let mut log = self.shared.store.load_messages(id).await?;
        log.retain(|m| customer_visible(m.role));
        Ok(log)
    }

    pub async fn update_session(
        &self,
        agent_id: AgentId,
        id: SessionId,
        mut patch: SessionPatch,
    ) -> NodeResult<Session> {
        check_caller_fields(
            [
                ("name", patch.name.as_ref()),
                ("language", patch.language.as_ref()),
                ("channel_id", patch.channel_id.as_ref()),
                ("email", patch.email.as_ref()),
                ("phone", patch.phone.as_ref()),
            ],
            patch.start_phrase.as_ref(),
            patch.kwargs.as_ref(),
            &[],
            patch.user_info.as_ref(),
        )?;
        // Stored the way a new session stores them (lower-case e-mail, digits-only phone).
        patch.email = check_contact("email", &patch.email, FieldType::Email)?;
        patch.phone = check_contact("phone", &patch.phone, FieldType::Phone)?;
        self.shared
            .sessions
            .call(id, |r| SessionMsg::Update(agent_id, patch.clone(), r))
            .await
    }

    pub async fn close_session(
        &self,
        agent_id: AgentId,
        id: SessionId,
        status: CloseStatus,
    ) -> NodeResult<Session> {
        self.shared
            .sessions
            .call(id, |r| SessionMsg::Close(agent_id, status, r))
            .await
    }

    /// Where requests for the session are served: here, or by the live node that owns it.
    /// Sessions resident here and owners already seen cost no registry round trip.
    pub async fn route(&self, id: SessionId) -> NodeResult<Route> {
        self.shared.route(id).await
    }

    /// Forgets the owner [`Node::route`] remembered (it did not answer, or no longer owns
    /// the session).
    pub fn forget_owner(&self, id: SessionId) {
        self.shared.sessions.forget_owner(&id);
    }

    /// Remembers the owner a [`NodeError::Moved`] named.
    pub fn remember_owner(&self, id: SessionId, url: &str) {
        self.shared.sessions.remember_owner(id, url);
    }

    /// Makes the session resident on this node, loaded from the store.
    pub async fn activate_session(&self, id: SessionId) -> NodeResult<()> {
        self.shared.sessions.call(id, SessionMsg::Activate).await
    }

    /// Runs one customer message through the session's actor; answers after the commit.
    pub async fn turn(&self, session: SessionId, req: TurnRequest) -> NodeResult<TurnReply> {
        let span = tracing::Span::current();
        self.shared
            .sessions
            .call(session, |r| SessionMsg::Turn(req.clone(), span.clone(), r))
            .await
    }

    /// A customer's conversations with their logs, newest first.
    pub async fn conversations(
        &self,
        tenant: TenantId,
        agent: Option<AgentId>,
        ext_id: &str,
        ext_type: &str,
    ) -> NodeResult<Vec<Conversation>> {
        let store = &self.shared.store;
        let mut out = Vec::new();
        for session in store
            .sessions_for_user(tenant, agent, ext_id, ext_type)
            .await?
        {
            let messages = self.customer_log(session.id).await?;
            out.push(Conversation { session, messages });
        }
        Ok(out)
    }

    /// An attachment, if it belongs to a session of this customer in this tenant.
    pub async fn attachment(
        &self,
        tenant: TenantId,
        id: Uuid,
        ext_id: &str,
    ) -> NodeResult<(AttachmentMeta, Bytes)> {
        self.attachment_of(id, |s| s.tenant_id == tenant && s.user_id == ext_id)
            .await
    }

    /// An attachment, if the session it belongs to is one `owns` accepts.
    pub(super) async fn attachment_of(
        &self,
        id: Uuid,
        owns: impl FnOnce(&Session) -> bool,
    ) -> NodeResult<(AttachmentMeta, Bytes)> {
        let store = &self.shared.store;
        let (session_id, meta, bytes) = store
            .get_attachment(id)
            .await?
            .ok_or(NodeError::NotFound("attachment"))?;
        match store.load_session(session_id).await? {
            Some(s) if owns(&s) => Ok((meta, bytes)),
            _ => Err(NodeError::NotFound("attachment")),
        }
    }

    /// Records the customer's reaction to one message of their session.
    pub async fn set_feedback(
        &self,
        tenant: TenantId,
        session_id: SessionId,
        log_id: i64,
        ext_id: &str,
        feedback: Feedback,
    ) -> NodeResult<()> {
        let store = &self.shared.store;
        match store.load_session(session_id).await? {
            Some(s) if s.tenant_id == tenant && s.user_id == ext_id => {}
            _ => return Err(NodeError::NotFound("session")),
        }
        if store.set_feedback(session_id, log_id, feedback).await? {
            Ok(())
        } else {
            Err(NodeError::NotFound("message"))
        }
    }
}

impl Shared {
    /// See [`Node::route`].
    pub(crate) async fn route(&self, id: SessionId) -> NodeResult<Route> {
        let sessions = &self.sessions;
        if !self.registry.clustered() || sessions.is_resident(&id) {
            return Ok(Route::Local);
        }
        if let Some(url) = sessions.known_owner(&id) {
            return Ok(Route::Remote(url));
        }
        Ok(match self.registry.remote_owner(id).await? {
            Some(owner) => {
                sessions.remember_owner(id, &owner.url);
                Route::Remote(owner.url.into())
            }
            None => Route::Local,
        })
    }

    pub(crate) async fn create_session(
        &self,
        agent_id: AgentId,
        req: CreateSession,
    ) -> NodeResult<Session> {
        self.open_session(agent_id, req, Opening::default()).await
    }

    pub(crate) async fn open_session(
        &self,
        agent_id: AgentId,
        req: CreateSession,
        opening: Opening,
    ) -> NodeResult<Session> {
        let running = self.running_agent(agent_id).await?;
        let rt = running.current();
        let ext_type = req.ext_type.unwrap_or_else(|| "web".into());
        if !EXT_TYPES.contains(&ext_type.as_str()) {
            return Err(NodeError::Invalid(format!(
                "type: unknown customer type {ext_type:?} (one of {})",
                EXT_TYPES.join(", ")
            )));
        }
        let email = check_contact("email", &req.email, FieldType::Email)?;
        let phone = check_contact("phone", &req.phone, FieldType::Phone)?;
        if req
            .user_id
            .as_deref()
            .is_some_and(|u| u.trim().is_empty() || u.len() > 256)
        {
            return Err(NodeError::Invalid(
                "user_id: must be 1 to 256 characters".into(),
            ));
        }
        let def = &rt.compiled.definition;
        let id = opening.id.unwrap_or_else(Uuid::now_v7);
        let now = Utc::now();
        let mut kwargs = req.kwargs;
        if !req.args.is_empty() {
            kwargs.insert("args".into(), Value::Array(req.args));
        }
        let mut session = Session {
            id,
            tenant_id: running.tenant_id,
            agent_id,
            agent_version: rt.version,
            session_type: "custom_stateful".into(),
            mode: Mode::Regular,
            ext_type,
            user_id: req.user_id.unwrap_or_else(|| Uuid::new_v4().to_string()),
            name: req.name,
            email,
            phone,
            channel_id: req.channel_id,
            timeout: def.session.max_duration,
            user_timeout: def.session.user_timeout,
            greeting_text: def.greeting.clone(),
            start_phrase: req.start_phrase,
            language: req.language,
            llm_backend: Some(rt.backends.choose(id).to_string()),
            workflow_state: rt.compiled.init_state_name().to_string(),
            conversation_result: BTreeMap::new(),
            kwargs,
            user_info: req.user_info.unwrap_or(Value::Null),
            created_at: now,
            last_activity: now,
            closed_at: None,
            state: SessionState::Active,
            message_count: 0,
            assignee: None,
            channel: req.channel,
        };
        if let Admission::DailyLimit = self
            .admit_session(running.tenant_id, agent_id, def.session.daily_limit, now)
            .await?
        {
            // Recorded, so the refusal shows in the agent's sessions, but never active.
            session.state = SessionState::Closed(CloseStatus::DailyLimitExceeded);
            session.closed_at = Some(now);
            self.persistence()
                .commit(id, FIRST_EPOCH, vec![Write::Session(Box::new(session))])
                .await?;
            metrics::counter!(telemetry::SESSIONS_CLOSED_TOTAL, "status" => CloseStatus::DailyLimitExceeded.as_str())
                .increment(1);
            return Err(NodeError::DailyLimitExceeded(id));
        }
        let mut writes = Vec::with_capacity(2);
        let greeting = opening
            .text
            .as_ref()
            .or(def.greeting.as_ref())
            .map(|g| Message {
                id: 1,
                session_id: id,
                role: Role::Ai,
                text: g.clone(),
                timestamp: now,
                attachments: Vec::new(),
                metadata: Value::Null,
                feedback: Feedback::None,
                idempotency_key: None,
            });
        if let Some(g) = &greeting {
            session.message_count = 1;
            writes.push(Write::Message(Box::new(g.clone())));
        }
        writes.push(Write::Session(Box::new(session.clone())));
        self.persistence().commit(id, FIRST_EPOCH, writes).await?;
        metrics::counter!(telemetry::SESSIONS_CREATED_TOTAL).increment(1);
        let events = &self.events;
        events.user(session.tenant_id, &session.user_id, || {
            UserEvent::ConversationCreated {
                session_id: id,
                agent_id,
            }
        });
        if let Some(g) = greeting {
            events.user(session.tenant_id, &session.user_id, || {
                UserEvent::ConversationNewMessage {
                    session_id: id,
                    agent_id,
                    id: g.id,
                    role: g.role.as_str(),
                    text: g.text,
                }
            });
        }
        Ok(session)
    }
}
