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
use parley_engine::store::ChannelSession;
use ractor::ActorRef;
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, mpsc, Mutex};

use super::actor::ChannelMsg;
use super::reply::Reply;
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
}

impl ChatContext {
    /// Appends to the connection's event log; a failure to log is only traced.
    pub async fn log(&self, kind: &str, detail: Value) {
        log_event(&self.shared, &self.rt, kind, detail).await;
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

struct Worker {
    tx: mpsc::UnboundedSender<InboundMessage>,
    /// Held by the chat's worker while it runs, so a successor waits for it.
    turn: Arc<Mutex<()>>,
}

impl Chats {
    /// Hands a message to its chat's worker, starting one if none runs.
    pub fn dispatch(&mut self, ctx: &Arc<ChatContext>, msg: InboundMessage) {
        let key = chat_key(&ctx.rt, &msg);
        let msg = match self.workers.get(&key) {
            Some(w) => match w.tx.send(msg) {
                Ok(()) => return,
                Err(mpsc::error::SendError(msg)) => msg,
            },
            None => msg,
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
    mut rx: mpsc::UnboundedReceiver<InboundMessage>,
) {
    // The chat's previous worker may still be finishing its last messages.
    let _turn = turn.lock_owned().await;
    loop {
        match tokio::time::timeout(IDLE, rx.recv()).await {
            Ok(Some(msg)) => handle(&ctx, msg).await,
            Ok(None) => break,
            Err(_) => {
                // New messages now start a new worker; the ones already queued are ours.
                rx.close();
                while let Ok(msg) = rx.try_recv() {
                    handle(&ctx, msg).await;
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

async fn handle(ctx: &ChatContext, msg: InboundMessage) {
    let mut backoff = FIRST_BACKOFF;
    let mut finished = true;
    for attempt in 1..=ATTEMPTS {
        match answer(ctx, &msg).await {
            Ok((session, sent)) => {
                // Queued, not waited for: the chat's next message need not wait on it.
                drop(ctx.shared.channels.journal().log(
                    ctx.rt.id,
                    "reply",
                    json!({"dedup_id": msg.dedup_id, "chat_id": msg.chat_id,
                           "session_id": session, "message_ids": sent}),
                ));
                break;
            }
            Err(Failure::Final(error)) => {
                tracing::warn!(connection = %ctx.rt.id, dedup_id = %msg.dedup_id, %error, "could not answer a platform message");
                ctx.log(
                    "error",
                    json!({"dedup_id": msg.dedup_id, "chat_id": msg.chat_id, "error": error}),
                )
                .await;
                break;
            }
            Err(Failure::Passing(error)) if attempt == ATTEMPTS => {
                tracing::warn!(connection = %ctx.rt.id, dedup_id = %msg.dedup_id, %error, "giving up on a platform message for now; it stays queued");
                ctx.log(
                    "error",
                    json!({"dedup_id": msg.dedup_id, "chat_id": msg.chat_id,
                           "error": error, "retry": "at the connection's next sweep"}),
                )
                .await;
                finished = false;
            }
            Err(Failure::Passing(error)) => {
                tracing::debug!(connection = %ctx.rt.id, %error, attempt, "answering failed; trying again");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
    // The chat's next message goes on meanwhile; the actor hears the message is through
    // only once that is written, so its sweep never takes it for unanswered.
    let (journal, actor, id) = (
        ctx.shared.channels.journal().clone(),
        ctx.actor.clone(),
        ctx.rt.id,
    );
    tokio::spawn(async move {
        if finished {
            if let Err(e) = journal.done(id, msg.dedup_id.clone()).await {
                // Still pending: it runs again at the next start, as a replay of its turn.
                tracing::warn!(connection = %id, error = %e, "could not mark a platform message done");
            }
        }
        let _ = actor.cast(ChannelMsg::Finished(msg.dedup_id));
    });
}

/// Runs the message's turn and delivers the answer; answers the session and the ids of
/// the platform messages sent.
async fn answer(
    ctx: &ChatContext,
    msg: &InboundMessage,
) -> Result<(SessionId, Vec<String>), Failure> {
    let (mut session, agent) = chat_session(ctx, msg, false).await?;
    let mut reply = Reply::new(&ctx.rt, msg);
    super::reply::typing(&ctx.rt, &msg.chat_id);
    let mut request = TurnRequest {
        agent_id: agent,
        text: msg.text.clone(),
        attachments: Vec::new(),
        // A message answered before a restart is replayed from the store, not re-run.
        idempotency_key: Some(format!("{}:{}", msg.platform.as_str(), msg.dedup_id)),
    };
    let turn = loop {
        match turn_streamed(ctx, session, &request, &mut reply).await {
            Err(NodeError::SessionClosed) => {
                (session, request.agent_id) = chat_session(ctx, msg, true).await?;
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
/// the campaign's agent.
async fn chat_session(
    ctx: &ChatContext,
    msg: &InboundMessage,
    force_new: bool,
) -> Result<(SessionId, AgentId), Failure> {
    let store = &ctx.shared.store;
    let inbound = store.inbound_agent(ctx.rt.id).await?;
    let key = chat_key(&ctx.rt, msg);
    let now = Utc::now();
    if !force_new {
        if let Some(current) = store.channel_session(ctx.rt.id, &key).await? {
            let expired = ctx.rt.channel.session_lifetime().is_some_and(|lifetime| {
                (now - current.started_at).to_std().unwrap_or_default() >= lifetime
            });
            if !expired {
                if let Some(s) = store.load_session(current.session_id).await? {
                    let ours =
                        Some(s.agent_id) == inbound || s.kwargs.contains_key("communication_id");
                    if ours && s.state == SessionState::Active {
                        return Ok((s.id, s.agent_id));
                    }
                }
            }
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
    Ok((session.id, agent))
}
