//! The SessionActor: the one place a conversation changes. Its mailbox serialises turns,
//! updates, closes and timer ticks; a turn answers only after its messages are committed.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use parley_engine::llm::TurnInput;
use parley_engine::model::{
    AgentId, AttachmentMeta, CloseStatus, Feedback, Message, Mode, Role, Session, SessionId,
    SessionState,
};
use parley_engine::registry::Claim;
use parley_engine::store::{Epoch, Write};
use parley_engine::telemetry;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::{json, Value};
use tracing::Instrument;
use uuid::Uuid;

use crate::agents::AgentRuntime;
use crate::error::{NodeError, NodeResult};
use crate::events::{DeltaCoalescer, OperatorEvent, SessionEvent, UserEvent};
use crate::node::Shared;

/// `[{backend, error}]` for the AI message's metadata.
fn failures_json(failures: &[(String, parley_engine::llm::LlmError)]) -> Value {
    failures
        .iter()
        .map(|(n, e)| json!({"backend": n, "error": e.kind()}))
        .collect()
}

/// A turn's outcome as a metric label.
fn outcome<T>(r: &NodeResult<T>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(NodeError::NotFound(_)) => "not_found",
        Err(NodeError::SessionClosed) => "session_closed",
        Err(NodeError::AgentNotRunning) => "agent_not_running",
        Err(NodeError::Invalid(_) | NodeError::InvalidDefinition(_)) => "invalid",
        Err(NodeError::Moved(_)) => "session_moved",
        Err(NodeError::Unavailable(_)) => "unavailable",
        Err(_) => "error",
    }
}

/// How many recent idempotency keys a live session remembers without asking the store.
const REMEMBERED_KEYS: usize = 64;
/// Messages loaded when a session activates; more are loaded if its agent's backends look
/// further back.
const LOADED_HISTORY: u32 = 20;

#[derive(Debug, Clone)]
pub struct NewAttachment {
    pub filename: String,
    pub content_type: String,
    pub bytes: Bytes,
}

#[derive(Debug, Clone)]
pub struct TurnRequest {
    pub agent_id: AgentId,
    pub text: String,
    pub attachments: Vec<NewAttachment>,
    pub idempotency_key: Option<String>,
    /// The caller knows no earlier turn used `idempotency_key` (a platform delivery just
    /// recorded as new), so the store is not asked for that turn's answer.
    pub new_key: bool,
}

/// The answer to one customer message.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnReply {
    pub response: String,
    pub mode: Mode,
    /// Log id of the customer's message and of the answer.
    pub human_id: i64,
    pub ai_id: Option<i64>,
    pub metadata: Value,
    /// True when this is the stored answer to a repeated `Idempotency-Key`.
    pub replayed: bool,
    pub status: &'static str,
}

/// Fields of a session a PUT may change.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionPatch {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub language: Option<String>,
    pub channel_id: Option<String>,
    pub start_phrase: Option<String>,
    pub mode: Option<Mode>,
    /// Merged into the session's kwargs.
    pub kwargs: Option<serde_json::Map<String, Value>>,
    pub user_info: Option<Value>,
}

pub enum SessionMsg {
    /// A customer message, with the span of the request that brought it (its request id),
    /// so the turn's log lines carry it.
    Turn(
        TurnRequest,
        tracing::Span,
        RpcReplyPort<NodeResult<TurnReply>>,
    ),
    Update(AgentId, SessionPatch, RpcReplyPort<NodeResult<Session>>),
    Close(AgentId, CloseStatus, RpcReplyPort<NodeResult<Session>>),
    /// A timer may be due: close the session if it is.
    Tick,
    /// Load the session now (warm-up, or to check it can be rebuilt from the store).
    Activate(RpcReplyPort<NodeResult<()>>),
    /// An operator's action, in order with the customer's turns.
    Handoff(
        Handoff,
        RpcReplyPort<NodeResult<(Session, Option<Message>)>>,
    ),
}

/// What an operator does to a conversation.
#[derive(Debug, Clone)]
pub enum Handoff {
    /// REGULAR, OPERATOR or COPILOT. Leaving the AI tells the customer; back to REGULAR
    /// drops the assignee.
    Mode(Mode),
    /// The user working it (`None`: nobody); a REGULAR session moves to OPERATOR.
    Assign(Option<Uuid>),
    /// An OPERATOR message (to the customer, on their channel) or NOTES (internal).
    Message {
        role: Role,
        text: String,
        author: Option<Uuid>,
    },
}

/// What the customer is told when a person takes over.
pub const TRANSFER_NOTICE: &str =
    "I'm handing you over to a colleague from our team. They will answer here shortly.";
/// …and when nobody is on shift to take over.
pub const NO_OPERATOR_NOTICE: &str =
    "No one from our team is available right now, so I'll keep helping you here.";
/// …and when the AI takes the conversation back.
pub const RETURN_NOTICE: &str = "You're back with the assistant. How can I help?";

/// Whether the customer sees messages of this role (not notes, not drafts).
pub fn customer_visible(role: Role) -> bool {
    matches!(role, Role::Human | Role::Ai | Role::Operator)
}

/// Tells the session's and customer's subscribers (customer-visible messages only) and
/// the tenant's operators (every message) about a new message.
fn publish_message(shared: &Shared, session: &Session, m: &Message) {
    if customer_visible(m.role) {
        shared
            .events
            .session(session.id, || SessionEvent::message(m));
        shared.events.user(session.tenant_id, &session.user_id, || {
            UserEvent::ConversationNewMessage {
                session_id: session.id,
                agent_id: session.agent_id,
                id: m.id,
                role: m.role.as_str(),
                text: m.text.clone(),
            }
        });
    }
    shared
        .events
        .operators(session.tenant_id, || OperatorEvent::NewMessage {
            session_id: session.id,
            agent_id: session.agent_id,
            id: m.id,
            role: m.role.as_str(),
            text: m.text.clone(),
        });
}

fn publish_mode(shared: &Shared, session: &Session) {
    shared.events.user(session.tenant_id, &session.user_id, || {
        UserEvent::ConversationBotStatusModified {
            session_id: Some(session.id),
            agent_id: session.agent_id,
            status: session.mode.as_str().to_string(),
        }
    });
    shared
        .events
        .operators(session.tenant_id, || OperatorEvent::ModeChanged {
            session_id: session.id,
            mode: session.mode.as_str(),
            assignee: session.assignee,
        });
}

pub struct SessionActor;

pub struct SessionArgs {
    pub id: SessionId,
    pub shared: Arc<Shared>,
}

/// Loaded lazily on the first message, so spawning stays cheap and a shard never waits on
/// the store.
pub struct SessionActorState {
    id: SessionId,
    shared: Arc<Shared>,
    live: Option<Box<Live>>,
    /// The epoch of this actor's claim on the session (0: not claimed yet).
    epoch: Epoch,
    /// Set once another node owns the session (with its URL when known): everything left
    /// in the mailbox is answered Moved, and the actor stops without writing.
    moved: Option<Option<String>>,
}

struct Live {
    session: Session,
    /// The newest messages of the log (the whole log is in the store).
    history: Vec<Message>,
    agent: Option<Arc<AgentRuntime>>,
    replies: HashMap<String, TurnReply>,
    /// What the stored session row says, as far as this actor wrote it. An ordinary turn
    /// only appends messages (the store rebuilds the count and last activity from the log
    /// on load); the row is rewritten when the workflow moves or results change, when a
    /// timer finds its deadline stale, and when the actor passivates.
    written_count: i64,
    written_deadline: Option<DateTime<Utc>>,
}

impl Live {
    /// Records that the row now holds `session`.
    fn written(&mut self, session: &Session) {
        self.written_count = session.message_count;
        self.written_deadline = session.next_deadline();
    }
}

impl SessionActorState {
    /// Claims the session for this node: in the registry (unless another live node owns
    /// it), then in the store, whose raised epoch fences any previous owner's late writes.
    async fn claim(&mut self) -> NodeResult<()> {
        if let Some(url) = &self.moved {
            return Err(NodeError::Moved(url.clone()));
        }
        if let Claim::Owned(owner) = self.shared.registry.claim(self.id).await? {
            self.lost(Some(owner.url));
            return Err(NodeError::Moved(self.moved.clone().flatten()));
        }
        match self.shared.store.claim_session(self.id).await {
            Ok(Some(epoch)) => {
                self.epoch = epoch;
                Ok(())
            }
            Ok(None) => {
                self.release().await;
                Err(NodeError::NotFound("session"))
            }
            Err(e) => {
                self.release().await;
                Err(e.into())
            }
        }
    }

    /// Another node owns the session: drop the state (the store has everything that was
    /// acknowledged) and have the shard stop this actor.
    fn lost(&mut self, owner_url: Option<String>) {
        self.moved = Some(owner_url);
        self.live = None;
        self.shared.sessions.evict(self.id);
    }

    async fn release(&self) {
        if let Err(e) = self.shared.registry.release(self.id).await {
            tracing::warn!(session = %self.id, error = %e, "could not release the claim; it lapses with the lease");
        }
    }

    async fn live(&mut self) -> NodeResult<&mut Live> {
        if self.live.is_none() {
            if let Err(e) = self.claim().await {
                if matches!(e, NodeError::NotFound(_)) {
                    // No such session: this actor must not stay resident (a caller asking
                    // for random ids would otherwise fill the node with empty actors).
                    self.shared.sessions.evict(self.id);
                }
                return Err(e);
            }
            let store = &self.shared.store;
            let session = store
                .load_session(self.id)
                .await?
                .ok_or(NodeError::NotFound("session"))?;
            self.shared.sessions.set_tenant(&self.id, session.tenant_id);
            let history = store.load_recent_messages(self.id, LOADED_HISTORY).await?;
            self.live = Some(Box::new(Live {
                written_count: session.message_count,
                // Unknown: the stored deadline may predate the newest turns.
                written_deadline: None,
                session,
                history,
                agent: None,
                replies: HashMap::new(),
            }));
        }
        Ok(self.live.as_mut().expect("loaded above"))
    }

    /// Commits the writes and hands them back.
    async fn commit(&mut self, writes: Vec<Write>) -> NodeResult<Vec<Write>> {
        let r = self
            .shared
            .persistence()
            .commit(self.id, self.epoch, writes)
            .await;
        if let Err(NodeError::Moved(_)) = &r {
            self.lost(None);
        }
        r
    }

    async fn turn(&mut self, req: TurnRequest) -> NodeResult<TurnReply> {
        let shared = self.shared.clone();
        let live = self.live().await?;
        if live.session.agent_id != req.agent_id {
            return Err(NodeError::NotFound("session"));
        }
        if let Some(key) = &req.idempotency_key {
            if let Some(r) = live.replies.get(key) {
                return Ok(TurnReply {
                    replayed: true,
                    ..r.clone()
                });
            }
            let stored = match req.new_key {
                true => None,
                false => shared.store.find_reply(live.session.id, key).await?,
            };
            if let Some(m) = stored {
                // The key sits on the AI's answer; in OPERATOR mode, where nobody answers at
                // once, on the customer's message; a COPILOT draft is no answer to replay.
                let (human_id, answer) = match m.role {
                    Role::Human => (m.id, None),
                    Role::Ai => (m.id - 1, Some(m)),
                    _ => (m.id - 1, None),
                };
                return Ok(TurnReply {
                    response: answer.as_ref().map(|m| m.text.clone()).unwrap_or_default(),
                    mode: live.session.mode,
                    human_id,
                    ai_id: answer.as_ref().map(|m| m.id),
                    metadata: answer.map_or(Value::Null, |m| m.metadata),
                    replayed: true,
                    status: live.session.status_str(),
                });
            }
        }
        if live.session.is_closed() {
            return Err(NodeError::SessionClosed);
        }
        let running = shared.running_agent(req.agent_id).await?;
        let agent = match &live.agent {
            Some(a) if a.version == live.session.agent_version => a.clone(),
            _ => {
                let a = running.version(live.session.agent_version).await?;
                live.agent = Some(a.clone());
                a
            }
        };
        // The backends look further back than what is in memory: load that much (the new
        // message makes up the rest of the window).
        let needed = agent.history_window.saturating_sub(1);
        let loaded = live.history.len();
        if loaded < needed && (loaded as i64) < live.session.message_count {
            live.history = shared
                .store
                .load_recent_messages(live.session.id, needed as u32)
                .await?;
        }

        let now = Utc::now();
        let session_id = live.session.id;
        let mut writes = Vec::with_capacity(4);
        let mut metas = Vec::with_capacity(req.attachments.len());
        for a in req.attachments {
            let meta = AttachmentMeta {
                id: Uuid::now_v7(),
                filename: a.filename,
                content_type: a.content_type,
                size: a.bytes.len() as u64,
            };
            metas.push(meta.clone());
            writes.push(Write::Attachment {
                session_id,
                meta,
                bytes: a.bytes,
            });
        }
        let human = Message {
            id: live.session.message_count + 1,
            session_id,
            role: Role::Human,
            text: req.text,
            timestamp: now,
            attachments: metas,
            metadata: Value::Null,
            feedback: Feedback::None,
            // Nobody answers at once in OPERATOR mode: the customer's message keeps the key,
            // so a retry (after a passivation too) is not logged twice.
            idempotency_key: (live.session.mode == Mode::Operator)
                .then(|| req.idempotency_key.clone())
                .flatten(),
        };

        #[cfg(feature = "fault-injection")]
        if human.text == "__panic__" {
            panic!("fault injection: a turn panicked inside its session actor");
        }

        let human_id = human.id;
        let mut new_messages = Vec::with_capacity(2);
        // What the turn changes besides the log; the session itself is updated only after
        // the commit (and cloned only when its row has to be written).
        let mut workflow_state = None;
        let mut results = None;
        let mut finish = None;

        // Set when the backend asked for a human and one is on shift.
        let mut mode_change = None;
        // An operator answers in OPERATOR mode; in COPILOT mode the AI drafts for them.
        if live.session.mode == Mode::Operator {
            new_messages.push(human);
        } else {
            // The backends see the customer's message as the newest of the history.
            live.history.push(human);
            let streaming = shared.events.has_session_subscribers(&session_id);
            let deltas = DeltaCoalescer::new(shared.events.clone(), session_id);
            let sink = |t: &str| {
                if streaming {
                    deltas.push(t);
                }
            };
            let input = TurnInput {
                agent_id: req.agent_id,
                session: &live.session,
                history: &live.history,
            };
            let outcome = agent
                .backends
                .run(
                    &agent.compiled,
                    live.session.llm_backend.as_deref(),
                    &input,
                    &sink,
                )
                .await;
            deltas.flush();
            new_messages.push(live.history.pop().expect("pushed above"));
            let copilot = live.session.mode == Mode::Copilot;
            let tenant = live.session.tenant_id;
            let (text, metadata) = match outcome {
                Ok(out) if out.ctx.transfer && !copilot => {
                    let on_shift = shared.operators_on_shift(tenant, now).await?;
                    let mut meta = json!({"backend": out.backend, "transfer_to_operator": true});
                    finish = out.ctx.finish;
                    if *out.ctx.results() != live.session.conversation_result {
                        results = Some(out.ctx.into_results());
                    }
                    if on_shift.is_empty() {
                        meta["operators_on_shift"] = json!(0);
                        (NO_OPERATOR_NOTICE.to_string(), meta)
                    } else {
                        mode_change = Some(Mode::Operator);
                        (TRANSFER_NOTICE.to_string(), meta)
                    }
                }
                Ok(out) => {
                    let mut meta = json!({
                        "backend": out.backend,
                        "state": out.ctx.state().name,
                    });
                    if !out.generation.metadata.is_null() {
                        meta["backend_metadata"] = out.generation.metadata;
                    }
                    if !out.ctx.rejected.is_empty() {
                        meta["rejected_actions"] = json!(out.ctx.rejected);
                    }
                    if !out.failures.is_empty() {
                        meta["failed_backends"] = failures_json(&out.failures);
                    }
                    finish = out.ctx.finish;
                    if out.ctx.state().name != live.session.workflow_state {
                        workflow_state = Some(out.ctx.state().name.clone());
                    }
                    if *out.ctx.results() != live.session.conversation_result {
                        results = Some(out.ctx.into_results());
                    }
                    (out.generation.content, meta)
                }
                Err(f) => (
                    agent.compiled.definition.error_message.clone(),
                    json!({"turn_failed": true, "failed_backends": failures_json(&f.failures)}),
                ),
            };
            new_messages.push(Message {
                id: human_id + 1,
                session_id,
                role: if copilot { Role::Copilot } else { Role::Ai },
                text,
                timestamp: Utc::now(),
                attachments: Vec::new(),
                metadata,
                feedback: Feedback::None,
                idempotency_key: req.idempotency_key.clone(),
            });
        }
        let last_id = new_messages.last().map_or(human_id, |m| m.id);

        writes.extend(
            new_messages
                .into_iter()
                .map(|m| Write::Message(Box::new(m))),
        );
        // The row is rewritten only when more than the log changed (see `Live`).
        // A conversation operators work is rewritten on every message, so the inbox
        // (newest change first) brings it up; the AI's conversations keep the append-only
        // path.
        let updated = (workflow_state.is_some()
            || results.is_some()
            || finish.is_some()
            || mode_change.is_some()
            || live.session.mode != Mode::Regular)
            .then(|| {
                let mut s = live.session.clone();
                s.last_activity = now;
                s.message_count = last_id;
                if let Some(m) = mode_change {
                    s.mode = m;
                }
                if let Some(w) = workflow_state {
                    s.workflow_state = w;
                }
                if let Some(r) = results {
                    s.conversation_result = r;
                }
                if let Some(status) = finish {
                    s.state = SessionState::Closed(status);
                    s.closed_at = Some(Utc::now());
                }
                s
            });
        if let Some(s) = &updated {
            writes.push(Write::Session(Box::new(s.clone())));
        }
        let mut new_messages: Vec<Message> = self
            .commit(writes)
            .await?
            .into_iter()
            .filter_map(|w| match w {
                Write::Message(m) => Some(*m),
                _ => None,
            })
            .collect();

        // Committed: only now does the live state move on and do subscribers hear of it.
        let live = self.live.as_mut().expect("loaded above");
        match updated {
            Some(s) => {
                live.written(&s);
                live.session = s;
            }
            None => {
                live.session.last_activity = now;
                live.session.message_count = last_id;
            }
        }
        let session = &live.session;
        for m in &new_messages {
            publish_message(&shared, session, m);
        }
        if mode_change.is_some() {
            publish_mode(&shared, session);
        }
        if session.is_closed() {
            shared.announce_close(session);
        }
        // A COPILOT draft is the operator's, not the customer's answer. The history keeps no
        // metadata, so the answer's moves into the reply.
        let ai = new_messages.get_mut(1).filter(|m| m.role == Role::Ai);
        let reply = TurnReply {
            response: ai.as_ref().map(|m| m.text.clone()).unwrap_or_default(),
            mode: session.mode,
            human_id,
            ai_id: ai.as_ref().map(|m| m.id),
            metadata: ai.map_or(Value::Null, |m| std::mem::take(&mut m.metadata)),
            replayed: false,
            status: session.status_str(),
        };
        if let Some(key) = req.idempotency_key {
            if live.replies.len() >= REMEMBERED_KEYS {
                live.replies.clear();
            }
            live.replies.insert(key, reply.clone());
        }
        // Backends read roles and texts; metadata and attachments stay in the store only.
        live.history
            .extend(new_messages.into_iter().map(|m| Message {
                metadata: Value::Null,
                attachments: Vec::new(),
                ..m
            }));
        // Keep memory bounded. The next turn adds the customer's message itself, so a window
        // of N needs N - 1 kept; trimming waits for a full window of excess (amortised).
        let keep = live
            .agent
            .as_ref()
            .map_or(1, |a| a.history_window)
            .saturating_sub(1);
        if live.history.len() > 2 * keep + 1 {
            let excess = live.history.len() - keep;
            live.history.drain(..excess);
        }
        Ok(reply)
    }

    async fn update(&mut self, agent_id: AgentId, patch: SessionPatch) -> NodeResult<Session> {
        let live = self.live().await?;
        if live.session.agent_id != agent_id {
            return Err(NodeError::NotFound("session"));
        }
        if live.session.is_closed() {
            return Err(NodeError::SessionClosed);
        }
        let mut s = live.session.clone();
        let mode_changed = patch.mode.is_some_and(|m| m != s.mode);
        // A caller of the Chat API may ask for a person; taking the conversation back from
        // the operators, or giving it to the AI's drafts, is the operators' own decision.
        if let Some(m) = patch.mode.filter(|m| *m != s.mode && *m != Mode::Operator) {
            return Err(NodeError::Forbidden(format!(
                "mode: the Chat API may only ask for a person (OPERATOR); {} is set by operators with POST /api/v1/conversations/{{id}}/mode",
                m.as_str()
            )));
        }
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = patch.$f { s.$f = Some(v); } )* };
        }
        set!(name, email, phone, language, channel_id, start_phrase);
        if let Some(m) = patch.mode {
            s.mode = m;
        }
        if let Some(kw) = patch.kwargs {
            s.kwargs.extend(kw);
            // Bounded as a whole, not only per request.
            crate::node::check_json("kwargs", &s.kwargs)?;
        }
        if let Some(u) = patch.user_info {
            s.user_info = u;
        }
        self.commit(vec![Write::Session(Box::new(s.clone()))])
            .await?;
        if mode_changed {
            self.shared.events.user(s.tenant_id, &s.user_id, || {
                UserEvent::ConversationBotStatusModified {
                    session_id: Some(s.id),
                    agent_id: s.agent_id,
                    status: s.mode.as_str().to_string(),
                }
            });
            // The operators see the request for a person come in.
            self.shared
                .events
                .operators(s.tenant_id, || OperatorEvent::ModeChanged {
                    session_id: s.id,
                    mode: s.mode.as_str(),
                    assignee: s.assignee,
                });
        }
        let live = self.live.as_mut().expect("loaded above");
        live.written(&s);
        live.session = s.clone();
        Ok(s)
    }

    async fn handoff(&mut self, h: Handoff) -> NodeResult<(Session, Option<Message>)> {
        let shared = self.shared.clone();
        let live = self.live().await?;
        if live.session.is_closed() {
            return Err(NodeError::SessionClosed);
        }
        let mut s = live.session.clone();
        let before = (s.mode, s.assignee);
        let now = Utc::now();
        let mut text = None;
        match h {
            Handoff::Mode(mode) => {
                if mode != Mode::Regular && s.mode == Mode::Regular {
                    text = Some((Role::Ai, TRANSFER_NOTICE.to_string(), None));
                } else if mode == Mode::Regular && s.mode != Mode::Regular {
                    text = Some((Role::Ai, RETURN_NOTICE.to_string(), None));
                    s.assignee = None;
                }
                s.mode = mode;
            }
            Handoff::Assign(user) => {
                s.assignee = user;
                if user.is_some() && s.mode == Mode::Regular {
                    s.mode = Mode::Operator;
                    text = Some((Role::Ai, TRANSFER_NOTICE.to_string(), None));
                }
            }
            Handoff::Message {
                role,
                text: t,
                author,
            } => text = Some((role, t, author)),
        }
        let message = text.map(|(role, text, author)| Message {
            id: s.message_count + 1,
            session_id: s.id,
            role,
            text,
            timestamp: now,
            attachments: Vec::new(),
            metadata: author.map_or(Value::Null, |a| json!({"author": a})),
            feedback: Feedback::None,
            idempotency_key: None,
        });
        if let Some(m) = &message {
            s.message_count = m.id;
            s.last_activity = now;
        }
        let changed = (s.mode, s.assignee) != before;
        if message.is_none() && !changed {
            return Ok((s, None));
        }
        let mut writes = Vec::with_capacity(2);
        if let Some(m) = &message {
            writes.push(Write::Message(Box::new(m.clone())));
        }
        writes.push(Write::Session(Box::new(s.clone())));
        self.commit(writes).await?;
        let live = self.live.as_mut().expect("loaded above");
        live.written(&s);
        live.session = s.clone();
        if let Some(m) = &message {
            if m.role != Role::Notes {
                live.history.push(Message {
                    metadata: Value::Null,
                    ..m.clone()
                });
            }
            publish_message(&shared, &s, m);
        }
        if changed {
            publish_mode(&shared, &s);
        }
        // Said to a customer on a platform: it goes out there too, after the commit and
        // before this session's next message.
        if let Some(m) = message
            .as_ref()
            .filter(|m| matches!(m.role, Role::Ai | Role::Operator))
        {
            crate::channels::deliver_to_session(&shared, &s, &m.text).await;
        }
        Ok((s, message))
    }

    async fn close(&mut self, status: CloseStatus, by_timer: bool) -> NodeResult<Session> {
        let live = self.live().await?;
        if live.session.is_closed() {
            return Err(NodeError::SessionClosed);
        }
        let mut s = live.session.clone();
        s.state = SessionState::Closed(status);
        s.closed_at = Some(Utc::now());
        self.commit(vec![Write::Session(Box::new(s.clone()))])
            .await?;
        let events = &self.shared.events;
        if by_timer {
            events.session(s.id, || SessionEvent::Timeout {
                session_id: s.id,
                status: status.as_str(),
            });
        }
        self.shared.announce_close(&s);
        let live = self.live.as_mut().expect("loaded above");
        live.written(&s);
        live.session = s.clone();
        Ok(s)
    }
}

impl SessionActorState {
    /// Rewrites the session row from the live state (best effort: the log stays
    /// authoritative for what the row may lack).
    async fn write_row(&mut self) {
        let Some(s) = self.live.as_ref().map(|l| l.session.clone()) else {
            return;
        };
        match self.commit(vec![Write::Session(Box::new(s.clone()))]).await {
            Ok(_) => {
                if let Some(live) = self.live.as_mut() {
                    live.written(&s);
                }
            }
            Err(e) => {
                tracing::warn!(session = %self.id, error = %e, "could not store the session row")
            }
        }
    }

    async fn dispatch(&mut self, message: SessionMsg) {
        match message {
            SessionMsg::Turn(req, span, reply) => {
                let started = std::time::Instant::now();
                let turn = tracing::info_span!(parent: &span, "turn", session = %self.id);
                let r = self.turn(req).instrument(turn).await;
                metrics::histogram!(telemetry::TURN_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!(telemetry::TURNS_TOTAL, "outcome" => outcome(&r)).increment(1);
                let _ = reply.send(r);
            }
            SessionMsg::Update(agent_id, patch, reply) => {
                let _ = reply.send(self.update(agent_id, patch).await);
            }
            SessionMsg::Close(agent_id, status, reply) => {
                let r = match self.live().await {
                    Ok(l) if l.session.agent_id != agent_id => Err(NodeError::NotFound("session")),
                    Ok(_) => self.close(status, false).await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            SessionMsg::Activate(reply) => {
                let _ = reply.send(self.live().await.map(|_| ()));
            }
            SessionMsg::Handoff(h, reply) => {
                let _ = reply.send(self.handoff(h).await);
            }
            SessionMsg::Tick => {
                let (due, stale) = match self.live().await {
                    Ok(l) => (
                        l.session.due_timer(Utc::now()),
                        l.written_deadline != l.session.next_deadline(),
                    ),
                    Err(_) => (None, false),
                };
                if let Some(status) = due {
                    if let Err(e) = self.close(status, true).await {
                        tracing::warn!(session = %self.id, error = %e, "timer close failed; retried on the next sweep");
                    }
                } else if stale {
                    // Turns moved the deadline without rewriting the row: store it, or the
                    // sweep would keep finding this session due.
                    self.write_row().await;
                }
            }
        }
    }
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionActorState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SessionActorState {
            id: args.id,
            shared: args.shared,
            live: None,
            epoch: 0,
            moved: None,
        })
    }

    // A passivating session leaves its row up to date, so the timer sweep finds the right
    // deadline without waking it.
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if state
            .live
            .as_ref()
            .is_some_and(|l| l.written_count != l.session.message_count)
        {
            Box::pin(state.write_row()).await;
        }
        // A node that is leaving frees all its claims at once afterwards.
        let leaving = state
            .shared
            .leaving
            .load(std::sync::atomic::Ordering::Acquire);
        if state.epoch > 0 && state.moved.is_none() && !leaving {
            state.release().await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // ractor keeps this future inside every actor's task for the actor's whole life, so
        // the large per-message futures are boxed: an idle session then costs only what it
        // holds, not the size of its biggest handler.
        Box::pin(state.dispatch(message)).await;
        Ok(())
    }
}
