//! Outgoing webhooks: the conversation events of the agents a webhook connection is
//! listed on (and connection status changes) are queued in the store's outbox, then
//! delivered in order, signed per Standard Webhooks, with retries and backoff that
//! survive restarts. A 429 waits as long as its Retry-After says; a 410 disables the
//! connection (its queued events stay, for when it is enabled again).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parley_connectors::ConnectorError;
use parley_engine::connection::{ConnectionId, ConnectionStatus};
use parley_engine::store::NewOutboxEvent;
use parley_engine::telemetry;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use super::chats::log_event;
use super::runtime::ChannelRuntime;
use super::set_status;
use crate::events::UserEvent;
use crate::node::Shared;

/// How long a claimed event is reserved for this node's attempt.
const LEASE: Duration = Duration::from_secs(60);
/// Events claimed per round.
const BATCH: u32 = 32;
/// How often the outbox is looked at without a wake-up (retries that fell due, events
/// queued by other nodes).
const IDLE_POLL: Duration = Duration::from_secs(1);
const MAX_BACKOFF_SECS: i64 = 3600;

fn at_offset(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The wait before attempt `attempts + 1`: 1 s, 2 s, 4 s … up to an hour.
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(2i64.saturating_pow(attempts.min(20)).min(MAX_BACKOFF_SECS) as u64)
}

/// The webhook event a conversation event becomes, if any: (its agent, type, data).
pub fn webhook_event(
    e: &UserEvent,
) -> Option<(parley_engine::model::AgentId, &'static str, Value)> {
    Some(match e {
        UserEvent::ConversationCreated {
            session_id,
            agent_id,
        } => (
            *agent_id,
            "session.created",
            json!({"session_id": session_id, "agent_id": agent_id}),
        ),
        UserEvent::ConversationNewMessage {
            session_id,
            agent_id,
            id,
            role,
            text,
        } => (
            *agent_id,
            "message.created",
            json!({"session_id": session_id, "agent_id": agent_id, "message_id": id,
                   "role": role, "text": text}),
        ),
        UserEvent::ConversationClosed {
            session_id,
            agent_id,
            status,
            conversation_result,
        } => (
            *agent_id,
            "session.closed",
            json!({"session_id": session_id, "agent_id": agent_id, "status": status,
                   "conversation_result": conversation_result}),
        ),
        UserEvent::ConversationBotStatusModified { .. } | UserEvent::Relayed(_) => return None,
    })
}

/// Queues one event for a webhook connection and wakes its deliverer.
pub async fn enqueue(shared: &Shared, connection: ConnectionId, event_type: &str, data: Value) {
    if let Err(e) = try_enqueue(shared, connection, event_type, data).await {
        tracing::warn!(connection = %connection, event_type, error = %e, "could not queue a webhook event; it is lost")
    }
}

/// Queues an event for the connection's webhook; an error means it was not queued.
pub async fn try_enqueue(
    shared: &Shared,
    connection: ConnectionId,
    event_type: &str,
    data: Value,
) -> parley_engine::store::StoreResult<()> {
    let now = Utc::now();
    let body = json!({"type": event_type, "timestamp": now.to_rfc3339(), "data": data});
    let event = NewOutboxEvent {
        msg_id: format!("msg_{}", uuid::Uuid::now_v7().simple()),
        event_type: event_type.to_string(),
        body: body.to_string(),
    };
    shared.store.outbox_push(connection, &event, now).await?;
    shared.channels.wake_outbox(connection);
    Ok(())
}

/// Turns conversation events into queued webhook events, in the order they happened.
pub async fn run_tap(shared: Arc<Shared>, mut events: mpsc::UnboundedReceiver<Arc<UserEvent>>) {
    while let Some(event) = events.recv().await {
        let Some((agent, event_type, data)) = webhook_event(&event) else {
            continue;
        };
        for &connection in shared.channels.webhook_targets(&shared, agent).await.iter() {
            enqueue(&shared, connection, event_type, data.clone()).await;
        }
    }
}

/// Delivers a webhook connection's outbox until the connection stops.
pub async fn deliver(shared: Arc<Shared>, rt: Arc<ChannelRuntime>, wake: Arc<Notify>) {
    let Some(sink) = rt.channel.events() else {
        // Without a URL and a signing secret this connection only receives.
        return;
    };
    let store = &shared.store;
    loop {
        let now = Utc::now();
        let batch = match store
            .outbox_claim(rt.id, now, at_offset(now, LEASE), BATCH)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(connection = %rt.id, error = %e, "cannot read the webhook outbox");
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
        };
        if batch.is_empty() {
            if let Ok(n) = store.outbox_len(rt.id).await {
                metrics::gauge!(telemetry::WEBHOOK_OUTBOX).set(n as f64);
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
            continue;
        }
        let mut entries = batch.into_iter();
        while let Some(e) = entries.next() {
            let outcome = sink.deliver(&e.msg_id, e.body.as_bytes()).await;
            let count = |outcome: &'static str| {
                metrics::counter!(telemetry::CONNECTOR_OUTBOUND_TOTAL,
                    "platform" => rt.platform().as_str(), "outcome" => outcome)
                .increment(1)
            };
            let retry_at = match outcome {
                Ok(()) => {
                    count("sent");
                    if let Err(err) = store.outbox_done(e.id).await {
                        // Sent again after the lease: `webhook-id` lets the receiver drop it.
                        tracing::warn!(connection = %rt.id, error = %err, "could not mark a webhook event delivered");
                    }
                    continue;
                }
                Err(ConnectorError::RateLimited(wait)) => {
                    count("rate_limited");
                    Err((wait, "429 Too Many Requests".to_string()))
                }
                Err(err) if err.is_gone() => {
                    count("error");
                    Ok(())
                }
                Err(err) => {
                    count("error");
                    Err((backoff(e.attempts), err.to_string()))
                }
            };
            let now = Utc::now();
            match retry_at {
                Ok(()) => {
                    let reason = "the endpoint answered 410 Gone; the connection is disabled and its events wait until it is enabled again".to_string();
                    let _ = store.outbox_retry(e.id, e.attempts, now, "410 Gone").await;
                    release(&shared, entries).await;
                    log_event(
                        &shared,
                        &rt,
                        "error",
                        json!({"event_id": e.msg_id, "error": reason}),
                    )
                    .await;
                    disable(&shared, rt.id, reason).await;
                    return;
                }
                Err((wait, error)) => {
                    let _ = store
                        .outbox_retry(e.id, e.attempts + 1, at_offset(now, wait), &error)
                        .await;
                    log_event(
                        &shared,
                        &rt,
                        "error",
                        json!({"event_id": e.msg_id, "event_type": e.event_type, "error": error,
                               "attempts": e.attempts + 1, "retry_in_ms": wait.as_millis() as u64}),
                    )
                    .await;
                    release(&shared, entries).await;
                    break;
                }
            }
        }
    }
}

/// Hands back claimed events not attempted (they wait behind the one that failed).
async fn release(shared: &Shared, rest: impl Iterator<Item = parley_engine::store::OutboxEntry>) {
    let now = Utc::now();
    for e in rest {
        let _ = shared
            .store
            .outbox_retry(e.id, e.attempts, now, e.last_error.as_deref().unwrap_or(""))
            .await;
    }
}

async fn disable(shared: &Arc<Shared>, id: ConnectionId, reason: String) {
    match shared.store.get_connection(id).await {
        Ok(Some(mut r)) => {
            r.enabled = false;
            r.updated_at = Utc::now();
            if let Err(e) = shared.store.put_connection(&r).await {
                tracing::warn!(connection = %id, error = %e, "could not disable the connection");
            }
        }
        Ok(None) => return,
        Err(e) => tracing::warn!(connection = %id, error = %e, "could not disable the connection"),
    }
    set_status(shared, id, ConnectionStatus::Error, Some(reason)).await;
    shared.channels.stop_soon(id);
}
