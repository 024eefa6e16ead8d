//! One ChannelActor per started connection: it owns the connection's chat workers (and
//! so the order of each chat's messages), its outbound queue, and the loops a platform
//! needs (polling for platforms that are polled, the outgoing-webhook outbox).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use parley_connectors::{ConnectorError, Delivery};
use parley_engine::connection::ConnectionStatus;
use parley_engine::inbound::InboundMessage;
use parley_engine::registry::Claim;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::chats::{ChatContext, Chats};
use super::outbox;
use super::routes::Routes;
use super::runtime::ChannelRuntime;
use super::{accept_message, set_status};
use crate::node::Shared;

/// How often a connection forgets idle chats and looks for messages left unanswered.
const SWEEP: Duration = Duration::from_secs(30);
/// Unfinished messages loaded per sweep.
const PENDING_BATCH: u32 = 10_000;

pub enum ChannelMsg {
    /// A verified customer message, just recorded as new.
    Inbound(InboundMessage),
    /// A chat worker is through with a message (answered, or left for a later retry).
    Finished(String),
    /// Forget idle chats, retry messages left unanswered.
    Sweep,
}

pub struct ChannelActor;

pub struct ChannelArgs {
    pub shared: Arc<Shared>,
    pub rt: Arc<ChannelRuntime>,
    pub outbox_wake: Arc<Notify>,
    pub routes: Arc<Routes>,
}

pub struct ChannelState {
    ctx: Arc<ChatContext>,
    chats: Chats,
    /// Messages handed to a chat worker and not finished yet, so a message is never run
    /// twice at once (a webhook delivery racing the sweep that reloads it).
    in_flight: HashSet<String>,
    tasks: Vec<JoinHandle<()>>,
}

/// The loops end with the actor however it ends: node shutdown kills connection actors
/// (their supervisor's children), which skips `post_stop`, and a loop left running would
/// go on polling or delivering for a node that has stopped.
impl Drop for ChannelState {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Actor for ChannelActor {
    type Msg = ChannelMsg;
    type State = ChannelState;
    type Arguments = ChannelArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ChannelArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ctx = Arc::new(ChatContext {
            shared: args.shared.clone(),
            rt: args.rt.clone(),
            actor: myself.clone(),
            routes: args.routes,
        });
        let mut tasks = Vec::new();
        if args.rt.channel.polls() {
            tasks.push(tokio::spawn(poll(ctx.clone())));
        }
        if args.rt.channel.events().is_some() {
            tasks.push(tokio::spawn(outbox::deliver(
                args.shared.clone(),
                args.rt.clone(),
                args.outbox_wake.clone(),
            )));
        }
        myself.send_interval(SWEEP, || ChannelMsg::Sweep);
        // Messages recorded before a restart and not answered yet go first.
        let _ = myself.cast(ChannelMsg::Sweep);
        Ok(ChannelState {
            ctx,
            chats: Chats::default(),
            in_flight: HashSet::new(),
            tasks,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for t in &state.tasks {
            t.abort();
        }
        if state.ctx.rt.channel.polls() {
            let _ = state.ctx.shared.registry.release(state.ctx.rt.id).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ChannelMsg::Inbound(msg) => {
                if state.in_flight.insert(msg.dedup_id.clone()) {
                    state.chats.dispatch(&state.ctx, msg, true);
                }
            }
            ChannelMsg::Finished(dedup_id) => {
                state.in_flight.remove(&dedup_id);
            }
            ChannelMsg::Sweep => {
                state.chats.prune();
                state.ctx.routes.prune();
                state.ctx.rt.outbound.shrink();
                let pending = state
                    .ctx
                    .shared
                    .store
                    .inbox_pending(state.ctx.rt.id, PENDING_BATCH)
                    .await;
                match pending {
                    Ok(pending) => {
                        for msg in pending {
                            // Left unfinished, perhaps answered before a restart.
                            if state.in_flight.insert(msg.dedup_id.clone()) {
                                state.chats.dispatch(&state.ctx, msg, false);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(connection = %state.ctx.rt.id, error = %e, "could not load unanswered messages; trying again later")
                    }
                }
            }
        }
        Ok(())
    }
}

/// Polling: the platform's long poll in a loop, confirming updates by the cursor, which
/// is kept in the store so a restart resumes where it stopped. A conflict (Telegram: a
/// webhook is set, or another poller runs) puts the connection in Error and stops polling.
async fn poll(ctx: Arc<ChatContext>) {
    let store = &ctx.shared.store;
    let mut backoff = Duration::from_millis(500);
    // One poller per connection in a cluster (a second one is a conflict): the node
    // that claims the connection in the registry polls; the others wait for its lease.
    let lease = ctx.shared.registry.lease_ttl();
    loop {
        match ctx.shared.registry.claim(ctx.rt.id).await {
            Ok(Claim::Mine) => break,
            Ok(Claim::Owned(_)) => tokio::time::sleep(lease).await,
            Err(e) => {
                tracing::warn!(connection = %ctx.rt.id, error = %e, "cannot claim the poller yet");
                tokio::time::sleep(backoff).await;
            }
        }
    }
    let mut cursor: Option<String> = loop {
        match store.connector_cursor(ctx.rt.id).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(connection = %ctx.rt.id, error = %e, "cannot read the polling offset yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    loop {
        match ctx.rt.channel.poll(cursor.as_deref()).await {
            Ok(updates) => {
                backoff = Duration::from_millis(500);
                let mut next = cursor.clone();
                for update in updates {
                    let accepted = match update.delivery {
                        Ok(Delivery::Message(m)) => {
                            accept_message(&ctx.shared, &ctx.rt, &ctx.actor, m)
                                .await
                                .is_ok()
                        }
                        Ok(_) => true,
                        Err(e) => {
                            ctx.log(
                                "malformed",
                                json!({"cursor": update.cursor, "error": e.to_string()}),
                            )
                            .await;
                            true
                        }
                    };
                    if !accepted {
                        // Not recorded (store down): ask for it again rather than confirm it.
                        break;
                    }
                    next = Some(update.cursor);
                }
                if let Some(next) = next.filter(|n| Some(n) != cursor.as_ref()) {
                    match store.set_connector_cursor(ctx.rt.id, &next).await {
                        Ok(()) => cursor = Some(next),
                        Err(e) => {
                            tracing::warn!(connection = %ctx.rt.id, error = %e, "could not keep the polling offset")
                        }
                    }
                }
            }
            Err(e) if e.is_conflict() => {
                let reason = format!("polling conflict: {e}; a webhook is set or another poller runs with these credentials");
                ctx.log("error", json!({"error": reason})).await;
                set_status(
                    &ctx.shared,
                    ctx.rt.id,
                    ConnectionStatus::Error,
                    Some(reason),
                )
                .await;
                return;
            }
            Err(ConnectorError::RateLimited(wait)) => tokio::time::sleep(wait).await,
            Err(e) => {
                tracing::warn!(connection = %ctx.rt.id, error = %e, "polling failed; polling again shortly");
                ctx.log(
                    "error",
                    json!({"error": e.to_string(), "at": Utc::now().to_rfc3339()}),
                )
                .await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
