//! `POST /hooks/{connection_id}` (and `GET` for WhatsApp's subscription check): verify
//! the delivery first, once, on the node that received it (a failure is 401 and nothing
//! else happens, apart from a line in the event log), record each customer message once,
//! hand it to the connection's actor and answer at once, within the platforms' deadlines
//! (Slack and Discord: 3 s); the turn and the reply follow.
//!
//! In a cluster a customer message whose chat has a session owned by another node is
//! handed to that node, verified, through a [`Relay`]; the platform is answered here once
//! the owner has recorded it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use parley_connectors::{discord, slack, teams, telegram, webhook, whatsapp};
use parley_connectors::{ConnectorError, Delivery};
use parley_engine::connection::{ConnectionId, ConnectionStatus};
use parley_engine::inbound::InboundMessage;
use parley_engine::model::SessionId;
use parley_engine::registry::RegistryStats;
use parley_engine::telemetry;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use super::chats::{chat_key, log_event};
use super::runtime::{ChannelRuntime, PlatformRuntime};
use super::{accept_message, RunningChannel};
use crate::node::{Route, Shared};

/// An inbound request as the HTTP layer received it.
pub struct HookRequest {
    /// `GET` (a subscription check) or `POST` (a delivery).
    pub get: bool,
    pub headers: HeaderMap,
    pub query: HashMap<String, String>,
    pub body: Bytes,
}

/// What to answer the platform.
#[derive(Debug, Clone, PartialEq)]
pub struct HookAnswer {
    pub status: u16,
    pub body: HookBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HookBody {
    Json(Value),
    Text(String),
}

impl HookAnswer {
    fn json(status: u16, body: Value) -> HookAnswer {
        HookAnswer {
            status,
            body: HookBody::Json(body),
        }
    }

    fn error(status: u16, code: &str, message: impl Into<String>) -> HookAnswer {
        HookAnswer::json(
            status,
            json!({"error": {"code": code, "message": message.into()}}),
        )
    }

    fn ok() -> HookAnswer {
        HookAnswer::json(200, json!({"ok": true}))
    }
}

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

/// Customer messages of one delivery bound for one other node.
struct Handover {
    owner: Arc<str>,
    /// The sessions whose owner was looked up, to forget it if it does not answer.
    sessions: Vec<SessionId>,
    messages: Vec<InboundMessage>,
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
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
    rt: &ChannelRuntime,
    m: &InboundMessage,
) -> Option<(Arc<str>, SessionId)> {
    if !shared.registry.clustered() {
        return None;
    }
    let current = shared
        .store
        .channel_session(rt.id, &chat_key(rt, m))
        .await
        .ok()??;
    match shared.route(current.session_id).await {
        Ok(Route::Remote(owner)) => Some((owner, current.session_id)),
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
    let platform = rt.kind().as_str();
    if req.get {
        return subscription_check(shared, running, &req).await;
    }
    metrics::counter!(telemetry::CONNECTOR_VERIFICATIONS_TOTAL, "platform" => platform)
        .increment(1);
    let verified = verify(rt, &req).await;
    let deliveries = match verified {
        Ok(d) => d,
        Err(ConnectorError::Unauthorized(reason)) => {
            count(platform, "rejected");
            log_rejected(shared, rt, json!({"error": reason})).await;
            return HookAnswer::error(401, "unauthorized", reason);
        }
        Err(ConnectorError::Transport(reason)) => {
            // The keys to verify with could not be fetched: the platform tries again. Anyone
            // can make this happen by posting while the keys are out of reach, so it is
            // counted into one line like a rejection, not logged once per post.
            shared
                .channels
                .journal()
                .log_repeated(rt.id, "error", json!({"error": reason}))
                .await;
            return HookAnswer::error(503, "unavailable", reason);
        }
        Err(e) => {
            count(platform, "malformed");
            log_event(shared, rt, "malformed", json!({"error": e.to_string()})).await;
            return HookAnswer::error(400, "malformed", e.to_string());
        }
    };
    let (mut accepted, mut duplicates) = (0, 0);
    let mut handshake = None;
    let mut message = false;
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
                message = true;
                if let Some((owner, session)) = owner_elsewhere(shared, rt, &m).await {
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
                    Recorded::Accepted => accepted += 1,
                    Recorded::Duplicate => duplicates += 1,
                    Recorded::Unavailable => return unrecorded(),
                }
            }
            Delivery::Handshake(body) => {
                count(platform, "handshake");
                handshake = Some(body);
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
                        duplicates += 1;
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
                Recorded::Accepted => accepted += 1,
                Recorded::Duplicate => duplicates += 1,
                Recorded::Unavailable => return unrecorded(),
            }
        }
    }
    match (&rt.platform, handshake) {
        (PlatformRuntime::Discord { .. }, Some(pong)) => HookAnswer::json(
            200,
            serde_json::from_str(&pong).unwrap_or(json!({"type": 1})),
        ),
        (_, Some(challenge)) => HookAnswer {
            status: 200,
            body: HookBody::Text(challenge),
        },
        (PlatformRuntime::Discord { ephemeral, .. }, None) if message => {
            HookAnswer::json(200, discord::deferred_response(*ephemeral))
        }
        (PlatformRuntime::Webhook { .. }, None) => {
            HookAnswer::json(202, json!({"accepted": accepted, "duplicates": duplicates}))
        }
        _ => HookAnswer::ok(),
    }
}

/// Checks a delivery's signature or secret and parses it.
pub(crate) async fn verify(
    rt: &ChannelRuntime,
    req: &HookRequest,
) -> Result<Vec<Delivery>, ConnectorError> {
    let body = &req.body[..];
    match &rt.platform {
        PlatformRuntime::Telegram { secret_token, .. } => {
            telegram::verify(secret_token, &req.headers)
                .and_then(|()| telegram::parse(body).map(|d| vec![d]))
        }
        PlatformRuntime::Discord { public_key, .. } => discord::verify(
            public_key,
            header(&req.headers, "x-signature-ed25519"),
            header(&req.headers, "x-signature-timestamp"),
            body,
        )
        .and_then(|()| discord::parse(body).map(|d| vec![d])),
        PlatformRuntime::Slack { signing_secret, .. } => slack::verify(
            signing_secret,
            header(&req.headers, "x-slack-request-timestamp"),
            header(&req.headers, "x-slack-signature"),
            body,
            Utc::now().timestamp(),
        )
        .and_then(|()| {
            let retry = req
                .headers
                .get("x-slack-retry-num")
                .and_then(|v| v.to_str().ok());
            slack::parse(body, retry).map(|d| vec![d])
        }),
        PlatformRuntime::Whatsapp { app_secret, .. } => whatsapp::verify(
            app_secret,
            header(&req.headers, "x-hub-signature-256"),
            body,
        )
        .and_then(|()| whatsapp::parse(body)),
        PlatformRuntime::Teams { verifier, .. } => verify_teams(verifier, &req.headers, body).await,
        PlatformRuntime::Webhook {
            incoming_secret, ..
        } => match incoming_secret {
            None => Err(ConnectorError::Unauthorized(
                "this connection has no incoming_secret: it takes no incoming messages".into(),
            )),
            Some(key) => webhook::verify(key, &req.headers, body, Utc::now().timestamp())
                .and_then(|()| webhook::parse(&req.headers, body).map(|d| vec![d])),
        },
    }
}

/// Teams: the token is verified before the body is read (an unauthenticated 10 MB body
/// is never parsed); its serviceUrl claim must then match the activity's.
async fn verify_teams(
    verifier: &teams::TeamsVerifier,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<Delivery>, ConnectorError> {
    let claims = verifier.verify(header(headers, "authorization")).await?;
    let service_url = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("serviceUrl")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    claims.check_service_url(&service_url)?;
    teams::parse(body).map(|d| vec![d])
}

/// WhatsApp's `GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`.
async fn subscription_check(
    shared: &Shared,
    running: &RunningChannel,
    req: &HookRequest,
) -> HookAnswer {
    let PlatformRuntime::Whatsapp { verify_token, .. } = &running.rt.platform else {
        return HookAnswer::error(
            405,
            "method_not_allowed",
            "this connection's hook takes POST only",
        );
    };
    let q = |k: &str| req.query.get(k).map(String::as_str).unwrap_or_default();
    match whatsapp::verify_subscription(
        q("hub.mode"),
        q("hub.verify_token"),
        q("hub.challenge"),
        verify_token,
    ) {
        Ok(challenge) => {
            count("whatsapp", "handshake");
            HookAnswer {
                status: 200,
                body: HookBody::Text(challenge),
            }
        }
        Err(e) => {
            count("whatsapp", "rejected");
            log_rejected(shared, &running.rt, json!({"error": e.to_string()})).await;
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
