//! Customers' messages from a connection, one chat at a time: each chat has a worker that
//! runs its messages in arrival order (a chat's next message waits for the answer to the
//! one before), while chats run side by side. A message is a turn of the chat's session,
//! and its answer goes back on the platform.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use parley_connectors::ConnectorError;
use parley_engine::inbound::InboundMessage;
use parley_engine::model::{AgentId, ChannelRef, SessionId, SessionState};
use parley_engine::store::{ChannelSession, ConnectionWrite, StoreResult};
use ractor::ActorRef;
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, mpsc, Mutex};

use super::actor::ChannelMsg;
use super::reply::Reply;
use super::routes::{ChatSession, Routes, CLUSTER_TTL};
use super::runtime::ChannelRuntime;
use crate::error::NodeError;
use crate::events::SessionEvent;
use crate::node::{CreateSession, Shared};
use crate::session::{SessionMsg, TurnRequest};

/// A chat's worker stops after this long without messages.
const IDLE: Duration = Duration::from_secs(30);
/// A message whose turn failed for a passing reason (store or session unavailable) is
/// tried this often, with doubling waits, before it is left for the connection's next
/// sweep.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Events kept per connection in its event log.
pub const EVENTS_KEPT: u32 = 1000;

/// What the chat workers of one connection share.
pub struct ChatContext {
    pub shared: Arc<Shared>,
    pub rt: Arc<ChannelRuntime>,
    pub actor: ActorRef<ChannelMsg>,
    pub routes: Arc<Routes>,
}

impl ChatContext {
    /// Appends to the connection's event log; a failure to log is only traced.
    pub async fn log(&self, kind: &str, detail: Value) {
        log_event(&self.shared, &self.rt, kind, detail).await;
    }

    /// How long what the routes remember is trusted: for ever on a node alone, where
    /// every change is made here; briefly in a cluster.
    fn ttl(&self) -> Option<Duration> {
        self.shared.registry.clustered().then_some(CLUSTER_TTL)
    }
}

pub async fn log_event(shared: &Shared, rt: &ChannelRuntime, kind: &str, detail: Value) {
    shared.channels.journal().log(rt.id, kind, detail).await;
}

/// The chat a message belongs to, as its platform keys sessions.
pub fn chat_key(rt: &ChannelRuntime, msg: &InboundMessage) -> String {
    rt.channel.chat_key(msg)
}

/// The running chat workers of a connection (owned by its actor).
#[derive(Default)]
pub struct Chats {
    workers: HashMap<String, Worker>,
}

/// A message, and whether it was just recorded as new (no earlier turn can have answered
/// it).
type Queued = (InboundMessage, bool);

struct Worker {
    tx: mpsc::UnboundedSender<Queued>,
    /// Held by the chat's worker while it runs, so a successor waits for it.
    turn: Arc<Mutex<()>>,
}

impl Chats {
    /// Hands a message to its chat's worker, starting one if none runs; `fresh`: it was
    /// just recorded as new.
    pub fn dispatch(&mut self, ctx: &Arc<ChatContext>, msg: InboundMessage, fresh: bool) {
        let key = chat_key(&ctx.rt, &msg);
        let msg = match self.workers.get(&key) {
            Some(w) => match w.tx.send((msg, fresh)) {
                Ok(()) => return,
                Err(mpsc::error::SendError(queued)) => queued,
            },
            None => (msg, fresh),
        };
        let turn = self
            .workers
            .get(&key)
            .map(|w| w.turn.clone())
            .unwrap_or_default();
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(msg);
        tokio::spawn(run_chat(ctx.clone(), turn.clone(), rx));
        self.workers.insert(key, Worker { tx, turn });
    }

    /// Forgets chats whose worker has stopped.
    pub fn prune(&mut self) {
        self.workers
            .retain(|_, w| !w.tx.is_closed() || w.turn.try_lock().is_err());
    }
}

async fn run_chat(
    ctx: Arc<ChatContext>,
    turn: Arc<Mutex<()>>,
    mut rx: mpsc::UnboundedReceiver<Queued>,
) {
    // The chat's previous worker may still be finishing its last messages.
    let _turn = turn.lock_owned().await;
    loop {
        match tokio::time::timeout(IDLE, rx.recv()).await {
            Ok(Some((msg, fresh))) => handle(&ctx, msg, fresh).await,
            Ok(None) => break,
            Err(_) => {
                // New messages now start a new worker; the ones already queued are ours.
                rx.close();
                while let Ok((msg, fresh)) = rx.try_recv() {
                    handle(&ctx, msg, fresh).await;
                }
                break;
            }
        }
    }
}

/// Why a message could not be answered.
enum Failure {
    /// A passing condition: try again later.
    Passing(String),
    /// It will not get better by trying again (no agent, refused by the platform).
    Final(String),
}

impl From<NodeError> for Failure {
    fn from(e: NodeError) -> Failure {
        match e {
            NodeError::Unavailable(_) | NodeError::Moved(_) | NodeError::SessionCrashed => {
                Failure::Passing(e.to_string())
            }
            e => Failure::Final(e.to_string()),
        }
    }
}

impl From<parley_engine::store::StoreError> for Failure {
    fn from(e: parley_engine::store::StoreError) -> Failure {
        NodeError::from(e).into()
    }
}

async fn handle(ctx: &ChatContext, msg: InboundMessage, fresh: bool) {
    let mut backoff = FIRST_BACKOFF;
    let mut finished = true;
    let mut line = None;
    for attempt in 1..=ATTEMPTS {
        // A later attempt may follow a turn that committed before its answer failed.
        match answer(ctx, &msg, fresh && attempt == 1).await {
            Ok((session, sent)) => {
                line = Some((
                    "reply",
                    json!({"dedup_id": msg.dedup_id, "chat_id": msg.chat_id,
                           "session_id": session, "message_ids": sent}),
                ));
                break;
            }
            Err(Failure::Final(error)) => {
                tracing::warn!(connection = %ctx.rt.id, dedup_id = %msg.dedup_id, %error, "could not answer a platform message");
                line = Some((
                    "error",
                    json!({"dedup_id": msg.dedup_id, "chat_id": msg.chat_id, "error": error}),
                ));
                break;
            }
            Err(Failure::Passing(error)) if attempt == ATTEMPTS => {
                tracing::warn!(connection = %ctx.rt.id, dedup_id = %msg.dedup_id, %error, "giving up on a platform message for now; it stays queued");
                line = Some((
                    "error",
                    json!({"dedup_id": msg.dedup_id, "chat_id": msg.chat_id,
                           "error": error, "retry": "at the connection's next sweep"}),
                ));
                finished = false;
            }
            Err(Failure::Passing(error)) => {
                tracing::debug!(connection = %ctx.rt.id, %error, attempt, "answering failed; trying again");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
    // The line and the done mark commit together, queued now (after the delivery's line).
    // A reply's are not waited for: the chat's next message goes on meanwhile. The actor
    // hears the message is through only once they are written, so its sweep never takes
    // it for unanswered.
    let replied = line.as_ref().is_some_and(|(kind, _)| *kind == "reply");
    let id = ctx.rt.id;
    let mut writes = Vec::with_capacity(2);
    if finished {
        writes.push(ConnectionWrite::Done {
            connection: id,
            dedup_id: msg.dedup_id.clone(),
        });
    }
    writes.extend(
        line.map(|(kind, detail)| ConnectionWrite::Line(super::journal::line(id, kind, detail))),
    );
    let written = ctx.shared.channels.journal().write(writes);
    let actor = ctx.actor.clone();
    let through = async move {
        if let (Err(e), true) = (written.await, finished) {
            // Still pending: it runs again at the next start, as a replay of its turn.
            tracing::warn!(connection = %id, error = %e, "could not mark a platform message done");
        }
        let _ = actor.cast(ChannelMsg::Finished(msg.dedup_id));
    };
    if replied {
        tokio::spawn(through);
    } else {
        through.await;
    }
}

/// Runs the message's turn and delivers the answer; answers the session and the ids of
/// the platform messages sent. `new_key`: no earlier turn can have answered the message.
async fn answer(
    ctx: &ChatContext,
    msg: &InboundMessage,
    new_key: bool,
) -> Result<(SessionId, Vec<String>), Failure> {
    let (mut session, agent) = chat_session(ctx, msg, None).await?;
    let mut reply = Reply::new(&ctx.rt, msg);
    super::reply::typing(&ctx.rt, &msg.chat_id);
    let mut request = TurnRequest {
        agent_id: agent,
        text: msg.text.clone(),
        attachments: Vec::new(),
        // A message answered before a restart is replayed from the store, not re-run.
        idempotency_key: Some(format!("{}:{}", msg.platform.as_str(), msg.dedup_id)),
        new_key,
    };
    let mut gone = None;
    let turn = loop {
        match turn_streamed(ctx, session, &request, &mut reply).await {
            // Closed, or (remembered from before) deleted: once, the chat's session is
            // looked up again, and a new one opened if need be.
            Err(NodeError::SessionClosed | NodeError::NotFound("session")) if gone.is_none() => {
                gone = Some(session);
                (session, request.agent_id) = chat_session(ctx, msg, gone).await?;
            }
            other => break other?,
        }
    };
    let sent = reply.finish(&turn).await.map_err(|e| match e {
        e if e.is_window_closed() => Failure::Final(format!(
            "{e}: the customer's 24-hour window is closed; send a template with POST /api/v1/connections/{}/templates/send",
            ctx.rt.id
        )),
        ConnectorError::Transport(m) => Failure::Passing(m),
        e => Failure::Final(e.to_string()),
    })?;
    Ok((session, sent))
}

/// Runs the turn, showing the reply as it is generated where the platform streams.
async fn turn_streamed(
    ctx: &ChatContext,
    session: SessionId,
    request: &TurnRequest,
    reply: &mut Reply<'_>,
) -> Result<String, NodeError> {
    let mut deltas = reply
        .streams()
        .then(|| ctx.shared.events.subscribe_session(session));
    let span = tracing::Span::current();
    let turn = ctx.shared.sessions.call(session, |r| {
        SessionMsg::Turn(request.clone(), span.clone(), r)
    });
    tokio::pin!(turn);
    let mut so_far = String::new();
    loop {
        let Some(rx) = deltas.as_mut() else {
            return turn.await.map(|t| t.response);
        };
        let event = tokio::select! {
            done = &mut turn => return done.map(|t| t.response),
            event = rx.recv() => event,
        };
        match event {
            Ok(event) => {
                if let SessionEvent::Delta { text, .. } = &*event {
                    so_far.push_str(text);
                    if let Err(e) = reply.partial(&so_far).await {
                        tracing::debug!(error = %e, "a streamed edit failed; the final answer follows");
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => deltas = None,
        }
    }
}

/// The chat's open session and its agent, or a new one of the connection's inbound agent
/// (the first message, or the last session closed or, on Discord, lasted
/// `session_duration_ms`). A session a campaign opened with the customer goes on with
/// the campaign's agent. `gone`: the session the chat's last turn found closed. What the
/// routes remember is used without asking the store.
async fn chat_session(
    ctx: &ChatContext,
    msg: &InboundMessage,
    gone: Option<SessionId>,
) -> Result<(SessionId, AgentId), Failure> {
    let store = &ctx.shared.store;
    let inbound = inbound_agent(ctx).await?;
    let key = chat_key(&ctx.rt, msg);
    let now = Utc::now();
    // The chat's session, and whether the store was asked for it just now.
    let current = match gone {
        None => match ctx.routes.chat(&key, ctx.ttl()) {
            Some((chat, true)) => Some((chat, false)),
            // Older than a cluster trusts: still the chat's session?
            Some((chat, false)) => match store.channel_session(ctx.rt.id, &key).await? {
                Some(c) if c.session_id == chat.session => Some((chat, true)),
                _ => stored_chat(ctx, &key).await?.map(|c| (c, true)),
            },
            None => stored_chat(ctx, &key).await?.map(|c| (c, true)),
        },
        Some(gone) => {
            ctx.routes.forget_chat(&key);
            // Another node may have opened the chat's next session meanwhile.
            stored_chat(ctx, &key)
                .await?
                .filter(|c| c.session != gone)
                .map(|c| (c, true))
        }
    };
    if let Some((chat, asked)) = current {
        let expired = ctx.rt.channel.session_lifetime().is_some_and(|lifetime| {
            (now - chat.started_at).to_std().unwrap_or_default() >= lifetime
        });
        if !expired && (Some(chat.agent) == inbound || chat.campaign) {
            if asked {
                ctx.routes.remember(&key, chat);
            }
            return Ok((chat.session, chat.agent));
        }
    }
    let agent = inbound.ok_or_else(|| {
        Failure::Final(
            "no agent answers this connection: list it with \"inbound\": true in PUT /api/v1/agents/{id}/channels"
                .into(),
        )
    })?;
    let platform = msg.platform.as_str();
    let mut kwargs = Map::new();
    kwargs.insert("platform".into(), json!(platform));
    let session = ctx
        .shared
        .create_session(
            agent,
            CreateSession {
                user_id: Some(format!("{platform}:{}", msg.user_id)),
                name: msg.user_name.clone(),
                ext_type: Some(platform.into()),
                channel_id: Some(ctx.rt.id.to_string()),
                kwargs,
                channel: Some(ChannelRef {
                    connection_id: ctx.rt.id,
                    chat_id: msg.chat_id.clone(),
                    thread_id: msg.thread_id.clone(),
                    user_id: Some(msg.user_id.clone()),
                }),
                ..CreateSession::default()
            },
        )
        .await?;
    store
        .set_channel_session(
            ctx.rt.id,
            &key,
            &ChannelSession {
                session_id: session.id,
                started_at: now,
            },
        )
        .await?;
    let chat = ChatSession {
        session: session.id,
        agent,
        started_at: now,
        campaign: false,
    };
    ctx.routes.remember(&key, chat);
    Ok((session.id, agent))
}

/// The chat's session as stored, if it is open.
async fn stored_chat(ctx: &ChatContext, key: &str) -> StoreResult<Option<ChatSession>> {
    let store = &ctx.shared.store;
    let Some(current) = store.channel_session(ctx.rt.id, key).await? else {
        return Ok(None);
    };
    let session = store.load_session(current.session_id).await?;
    Ok(session
        .filter(|s| s.state == SessionState::Active)
        .map(|s| ChatSession {
            session: s.id,
            agent: s.agent_id,
            started_at: current.started_at,
            campaign: s.kwargs.contains_key("communication_id"),
        }))
}

/// The agent that answers the connection's customers, as remembered while agents'
/// channels do not change.
async fn inbound_agent(ctx: &ChatContext) -> StoreResult<Option<AgentId>> {
    // Read before the store is asked, so a change meanwhile is not lost.
    let generation = ctx.shared.channels.inbound_generation();
    if let Some(agent) = ctx.routes.inbound(generation, ctx.ttl()) {
        return Ok(agent);
    }
    let agent = ctx.shared.store.inbound_agent(ctx.rt.id).await?;
    ctx.routes.set_inbound(generation, agent);
    Ok(agent)
}
