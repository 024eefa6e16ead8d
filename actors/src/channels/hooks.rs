//! `POST /hooks/{connection_id}` (and `GET` for WhatsApp's subscription check): verify
//! the delivery first (a failure is 401 and nothing else happens, apart from a line in
//! the event log), record each customer message once, hand it to the connection's actor
//! and answer at once, within the platforms' deadlines (Slack and Discord: 3 s); the
//! turn and the reply follow.

use chrono::Utc;
use parley_connectors::{ConnectorError, Delivery, Received};
use parley_engine::connection::ConnectionStatus;
use parley_engine::telemetry;
use serde_json::{json, Value};

pub use parley_connectors::{HookAnswer, HookBody, HookRequest};

use super::chats::log_event;
use super::runtime::ChannelRuntime;
use super::{accept_message, RunningChannel};
use crate::node::Shared;

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

/// Handles one request to a started connection's hook.
pub async fn receive(shared: &Shared, running: &RunningChannel, req: HookRequest) -> HookAnswer {
    let rt = &running.rt;
    if req.get {
        return subscription_check(shared, running, &req).await;
    }
    let deliveries = match verify(rt, &req).await {
        Ok(d) => d,
        Err(refused) => return refusal(shared, rt, refused).await,
    };
    accept(shared, running, deliveries).await
}

/// Checks a delivery's signature or secret and parses it: once per delivery.
pub(crate) async fn verify(
    rt: &ChannelRuntime,
    req: &HookRequest,
) -> Result<Vec<Delivery>, ConnectorError> {
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

/// Records a verified delivery's messages (each once) and statuses, and answers the
/// platform as it expects.
pub(crate) async fn accept(
    shared: &Shared,
    running: &RunningChannel,
    deliveries: Vec<Delivery>,
) -> HookAnswer {
    let rt = &running.rt;
    let platform = rt.platform().as_str();
    let mut received = Received::default();
    for delivery in deliveries {
        match delivery {
            Delivery::Message(m) => {
                received.messages = true;
                match accept_message(shared, rt, &running.actor, m).await {
                    Ok(true) => received.accepted += 1,
                    Ok(false) => received.duplicates += 1,
                    Err(e) => {
                        // Not recorded: the platform must deliver it again.
                        tracing::warn!(connection = %rt.id, error = %e, "could not record a delivery");
                        return HookAnswer::error(
                            503,
                            "unavailable",
                            "the store is unavailable; deliver again",
                        );
                    }
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
