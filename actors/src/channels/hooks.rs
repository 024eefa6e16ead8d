//! `POST /hooks/{connection_id}` (and `GET` for WhatsApp's subscription check): verify
//! the delivery first, once, on the node that received it (a failure is 401 and nothing
//! else happens, apart from a line in the event log), record each customer message once,
//! hand it to the connection's actor and answer at once, within the platforms' deadlines
//! (Slack and Discord: 3 s); the turn and the reply follow.
//!
//! In a cluster a customer message whose chat has a session owned by another node is
//! handed to that node, verified, through a [`Relay`]; the platform is answered here once
//! the owner has recorded it.

use std::future::Future;
use std::sync::Arc;

use chrono::Utc;
use parley_connectors::{ConnectorError, Delivery, Received};
use parley_engine::connection::{ConnectionId, ConnectionStatus};
use parley_engine::inbound::InboundMessage;
use parley_engine::model::SessionId;
use parley_engine::registry::RegistryStats;
use parley_engine::telemetry;
use serde_json::{json, Value};

pub use parley_connectors::{HookAnswer, HookBody, HookRequest};

use super::chats::{chat_key, log_event};
use super::runtime::ChannelRuntime;
use super::{accept_message, RunningChannel, CLUSTER_TTL};
use crate::node::{Route, Shared};

/// What a customer message came to where it was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Accepted,
    /// Recorded before (or stale): not run again.
    Duplicate,
    /// Not recorded (the store failed): the platform must deliver it again.
    Unavailable,
}

/// Hands verified customer messages to the node that owns their chat's session (an
/// authenticated node-to-node call of the HTTP layer); that node records them without
/// verifying them again and answers one [`Recorded`] per message, in order. Err: the owner
/// could not be reached or gave no usable answer.
pub trait Relay: Sync {
    fn hand_over(
        &self,
        owner: &str,
        connection: ConnectionId,
        messages: &[InboundMessage],
    ) -> impl Future<Output = Result<Vec<Recorded>, String>> + Send;
}

/// The relay of a node without peers (embedded use, tests): nothing is ever owned
/// elsewhere, and a hand-over, were one asked, is refused so the messages are recorded here.
pub struct Alone;

impl Relay for Alone {
    async fn hand_over(
        &self,
        _owner: &str,
        _connection: ConnectionId,
        _messages: &[InboundMessage],
    ) -> Result<Vec<Recorded>, String> {
        Err("this node has no peers".into())
    }
}

/// Customer messages of one delivery bound for one other node.
struct Handover {
    owner: Arc<str>,
    /// The sessions whose owner was looked up, to forget it if it does not answer.
    sessions: Vec<SessionId>,
    messages: Vec<InboundMessage>,
}

fn count(platform: &'static str, outcome: &'static str) {
    metrics::counter!(telemetry::CONNECTOR_INBOUND_TOTAL, "platform" => platform, "outcome" => outcome)
        .increment(1);
}

/// Anyone can post to a hook: rejections are counted into one line per window, so a
/// flood of them cannot push the connection's real events out of its log.
async fn log_rejected(shared: &Shared, rt: &ChannelRuntime, detail: Value) {
    shared
        .channels
        .journal()
        .log_repeated(rt.id, "rejected", detail)
        .await;
}

fn handovers(outcome: &'static str, n: usize) {
    metrics::counter!(telemetry::NODE_HANDOVERS_TOTAL, "outcome" => outcome).increment(n as u64);
}

/// Records a customer message on this node (see [`accept_message`]).
async fn record_here(shared: &Shared, running: &RunningChannel, m: InboundMessage) -> Recorded {
    match accept_message(shared, &running.rt, &running.actor, m).await {
        Ok(true) => Recorded::Accepted,
        Ok(false) => Recorded::Duplicate,
        Err(e) => {
            tracing::warn!(connection = %running.rt.id, error = %e, "could not record a delivery");
            Recorded::Unavailable
        }
    }
}

/// Records customer messages another node verified and handed to this one, which owns
/// their chat's session: they are not verified again. One outcome per message, in order.
pub async fn accept_handed_over(
    shared: &Shared,
    running: &RunningChannel,
    messages: Vec<InboundMessage>,
) -> Vec<Recorded> {
    handovers("received", messages.len());
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        out.push(record_here(shared, running, m).await);
    }
    out
}

/// In a cluster, the other node that owns the session of the message's chat, with that
/// session. None on a node alone (no lookups), for a chat without a session yet, or when
/// the lookup fails: the message is then recorded here, as for a session of this node.
async fn owner_elsewhere(
    shared: &Shared,
    running: &RunningChannel,
    m: &InboundMessage,
) -> Option<(Arc<str>, SessionId)> {
    if !shared.registry.clustered() {
        return None;
    }
    let rt = &running.rt;
    let key = chat_key(rt, m);
    // A chat this node's workers talked in lately needs no read.
    let session = match running.routes.chat(&key, Some(CLUSTER_TTL)) {
        Some((chat, true)) => chat.session,
        _ => {
            shared
                .store
                .channel_session(rt.id, &key)
                .await
                .ok()??
                .session_id
        }
    };
    match shared.route(session).await {
        Ok(Route::Remote(owner)) => Some((owner, session)),
        _ => None,
    }
}

/// Hands the messages to their owner; one it cannot reach, or that gives no usable
/// answer, has them recorded here instead (see [`Relay`]). They are not lost, but their
/// chat's order may be: their turns wait here for the session (until the owner's lease
/// lapses, or the connection's next sweep), while later messages that reach the owner
/// run at once.
async fn hand_over(
    shared: &Shared,
    running: &RunningChannel,
    relay: &impl Relay,
    h: Handover,
) -> Vec<Recorded> {
    let rt = &running.rt;
    RegistryStats::bump(&shared.registry.stats().forwards);
    match relay.hand_over(&h.owner, rt.id, &h.messages).await {
        Ok(recorded) if recorded.len() == h.messages.len() => {
            handovers("sent", recorded.len());
            return recorded;
        }
        Ok(recorded) => {
            tracing::warn!(connection = %rt.id, owner = %h.owner, sent = h.messages.len(), answered = recorded.len(),
                "the node that owns the chat's session answered for other messages; recording them here");
        }
        Err(error) => {
            tracing::warn!(connection = %rt.id, owner = %h.owner, %error,
                "the node that owns the chat's session did not take the messages; recording them here");
        }
    }
    for s in &h.sessions {
        shared.sessions.forget_owner(s);
    }
    handovers("fallback", h.messages.len());
    let mut out = Vec::with_capacity(h.messages.len());
    for m in h.messages {
        out.push(record_here(shared, running, m).await);
    }
    out
}

/// Handles one request to a started connection's hook.
pub async fn receive(
    shared: &Shared,
    running: &RunningChannel,
    req: HookRequest,
    relay: &impl Relay,
) -> HookAnswer {
    let rt = &running.rt;
    if req.get {
        return subscription_check(shared, running, &req).await;
    }
    let deliveries = match verify(rt, &req).await {
        Ok(d) => d,
        Err(refused) => return refusal(shared, rt, refused).await,
    };
    accept(shared, running, relay, deliveries).await
}

/// Checks a delivery's signature or secret and parses it: the one verification of a
/// delivery, on the node that received it.
pub(crate) async fn verify(
    rt: &ChannelRuntime,
    req: &HookRequest,
) -> Result<Vec<Delivery>, ConnectorError> {
    metrics::counter!(telemetry::CONNECTOR_VERIFICATIONS_TOTAL, "platform" => rt.platform().as_str())
        .increment(1);
    rt.channel.verify(req, Utc::now().timestamp()).await
}

/// What to answer a delivery that did not verify or parse, logged as such.
async fn refusal(shared: &Shared, rt: &ChannelRuntime, refused: ConnectorError) -> HookAnswer {
    let platform = rt.platform().as_str();
    match refused {
        ConnectorError::Unauthorized(reason) => {
            count(platform, "rejected");
            log_rejected(shared, rt, json!({"error": reason})).await;
            HookAnswer::error(401, "unauthorized", reason)
        }
        ConnectorError::Transport(reason) => {
            // The keys to verify with could not be fetched: the platform tries again. Anyone
            // can make this happen by posting while the keys are out of reach, so it is
            // counted into one line like a rejection, not logged once per post.
            shared
                .channels
                .journal()
                .log_repeated(rt.id, "error", json!({"error": reason}))
                .await;
            HookAnswer::error(503, "unavailable", reason)
        }
        e => {
            count(platform, "malformed");
            log_event(shared, rt, "malformed", json!({"error": e.to_string()})).await;
            HookAnswer::error(400, "malformed", e.to_string())
        }
    }
}

/// Records a verified delivery's messages (each once, here or on the node that owns their
/// chat's session) and statuses, and answers the platform as it expects.
async fn accept(
    shared: &Shared,
    running: &RunningChannel,
    relay: &impl Relay,
    deliveries: Vec<Delivery>,
) -> HookAnswer {
    let rt = &running.rt;
    let platform = rt.platform().as_str();
    let mut received = Received::default();
    // A chat's messages all go to one place, so each chat keeps its order.
    let mut elsewhere: Vec<Handover> = Vec::new();
    let unrecorded = || {
        HookAnswer::error(
            503,
            "unavailable",
            "the store is unavailable; deliver again",
        )
    };
    for delivery in deliveries {
        match delivery {
            Delivery::Message(m) => {
                received.messages = true;
                if let Some((owner, session)) = owner_elsewhere(shared, running, &m).await {
                    match elsewhere.iter_mut().find(|h| h.owner == owner) {
                        Some(h) => {
                            h.sessions.push(session);
                            h.messages.push(m);
                        }
                        None => elsewhere.push(Handover {
                            owner,
                            sessions: vec![session],
                            messages: vec![m],
                        }),
                    }
                    continue;
                }
                match record_here(shared, running, m).await {
                    Recorded::Accepted => received.accepted += 1,
                    Recorded::Duplicate => received.duplicates += 1,
                    Recorded::Unavailable => return unrecorded(),
                }
            }
            Delivery::Handshake(body) => {
                count(platform, "handshake");
                received.handshake = Some(body);
            }
            Delivery::Status {
                message_id,
                status,
                error,
            } => {
                // The platform repeats a notification it thinks was not received: each
                // (message, status) is applied once.
                let key = format!("status:{message_id}:{status}");
                match shared.store.inbox_mark_seen(rt.id, &key, Utc::now()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        count(platform, "duplicate");
                        received.duplicates += 1;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(connection = %rt.id, error = %e, "could not record a status");
                        return HookAnswer::error(
                            503,
                            "unavailable",
                            "the store is unavailable; deliver again",
                        );
                    }
                }
                count(platform, "status");
                crate::campaigns::message_status(shared, rt.id, &message_id, &status).await;
                log_event(
                    shared,
                    rt,
                    "message_status",
                    json!({"message_id": message_id, "status": status, "error": error}),
                )
                .await;
            }
            Delivery::Ignored(reason) => {
                count(platform, "ignored");
                tracing::debug!(connection = %rt.id, reason, "delivery ignored");
            }
        }
    }
    // The platform is answered once the owners have recorded their messages, so a
    // success still means recorded.
    for h in elsewhere {
        for r in hand_over(shared, running, relay, h).await {
            match r {
                Recorded::Accepted => received.accepted += 1,
                Recorded::Duplicate => received.duplicates += 1,
                Recorded::Unavailable => return unrecorded(),
            }
        }
    }
    rt.channel.answer(&received)
}

/// A `GET` to the hook: the platform's subscription check, where it makes one.
async fn subscription_check(
    shared: &Shared,
    running: &RunningChannel,
    req: &HookRequest,
) -> HookAnswer {
    let rt = &running.rt;
    let platform = rt.platform().as_str();
    match rt.channel.subscribe(&req.query) {
        None => HookAnswer::error(
            405,
            "method_not_allowed",
            "this connection's hook takes POST only",
        ),
        Some(Ok(challenge)) => {
            count(platform, "handshake");
            HookAnswer::text(200, challenge)
        }
        Some(Err(e)) => {
            count(platform, "rejected");
            log_rejected(shared, rt, json!({"error": e.to_string()})).await;
            HookAnswer::error(403, "forbidden", e.to_string())
        }
    }
}

/// Answers for connections that cannot take deliveries.
pub fn not_found() -> HookAnswer {
    HookAnswer::error(404, "not_found", "no such connection")
}

pub fn disabled(platform: &'static str) -> HookAnswer {
    count(platform, "disabled");
    HookAnswer::error(410, "disabled", "this connection is disabled")
}

pub fn not_started(status: ConnectionStatus) -> HookAnswer {
    HookAnswer::error(
        503,
        "not_started",
        format!(
            "this connection is {} and not started; start it with POST /api/v1/connections/{{id}}/start",
            status.as_str()
        ),
    )
}

pub fn unavailable(message: String) -> HookAnswer {
    HookAnswer::error(503, "unavailable", message)
}
