//! Platform connections at work: the ChannelSupervisor starts one ChannelActor per
//! started connection and restarts it if it fails; the [`ChannelDirectory`] lets the
//! hooks endpoint reach a connection's runtime without a mailbox hop.
//!
//! ```text
//! ChannelSupervisor ── ChannelActor(connection_id) ── chat workers (one per chat)
//!                                                  ├─ polling loop (polled platforms)
//!                                                  └─ event outbox deliverer (webhooks)
//! ```

mod actor;
mod chats;
mod deliver;
pub mod hooks;
mod journal;
pub mod outbound;
pub mod outbox;
mod reply;
mod routes;
pub mod runtime;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use dashmap::DashMap;
use parley_engine::connection::{ConnectionId, ConnectionRecord, ConnectionStatus};
use parley_engine::inbound::InboundMessage;
use parley_engine::model::{AgentId, SessionId};
use parley_engine::store::{NewConnectionEvent, StoreResult};
use parley_engine::telemetry;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde_json::json;
use tokio::sync::Notify;

pub use actor::{ChannelActor, ChannelArgs, ChannelMsg};
pub use chats::{chat_key, log_event as log_connection_event, EVENTS_KEPT};
pub use deliver::deliver_to_session;
pub(crate) use deliver::send_text;
pub use journal::Journal;
pub use routes::{ChatSession, Routes, CLUSTER_TTL};
pub use runtime::ChannelRuntime;

use crate::node::{PersistenceSlot, Shared};

/// Finished deliveries are remembered this long for deduplication (platforms retry for
/// up to a day), then forgotten.
const DEDUP_WINDOW: chrono::Duration = chrono::Duration::hours(48);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How long the webhook connections an agent's events go to are remembered.
const TARGETS_TTL: Duration = Duration::from_secs(2);

/// A started connection on this node.
pub struct RunningChannel {
    pub rt: Arc<ChannelRuntime>,
    pub actor: ActorRef<ChannelMsg>,
    pub outbox_wake: Arc<Notify>,
    pub started: Instant,
    /// Where its customers' messages go (see [`Routes`]).
    pub routes: Arc<Routes>,
    /// When the stored record last said the connection is enabled, in milliseconds
    /// after `started`.
    checked_ms: AtomicU64,
}

impl RunningChannel {
    /// Notes that the stored record says the connection is enabled.
    pub fn checked(&self) {
        self.checked_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether the stored record said so within `ttl`.
    pub fn checked_within(&self, ttl: Duration) -> bool {
        let since = self.started.elapsed().as_millis() as u64;
        since.saturating_sub(self.checked_ms.load(Ordering::Relaxed)) < ttl.as_millis() as u64
    }
}

/// The connections started on this node.
pub struct ChannelDirectory {
    running: DashMap<ConnectionId, Arc<RunningChannel>>,
    targets: DashMap<AgentId, (Instant, Arc<Vec<ConnectionId>>)>,
    supervisor: RwLock<Option<ActorRef<ChannelSupMsg>>>,
    journal: Journal,
    /// Moves whenever agents' channels change here: the inbound agents connections
    /// remember are stale.
    inbound_generation: AtomicU64,
}

impl ChannelDirectory {
    /// Connections' writes go to the persistence writer in `writer`.
    pub(crate) fn new(writer: Arc<PersistenceSlot>) -> ChannelDirectory {
        ChannelDirectory {
            running: DashMap::new(),
            targets: DashMap::new(),
            supervisor: RwLock::new(None),
            journal: Journal::new(writer),
            inbound_generation: AtomicU64::new(0),
        }
    }

    /// Which agent answers which connection may have changed (channels set, an agent
    /// changed or deleted, a connection deleted).
    pub fn forget_inbound_agents(&self) {
        self.inbound_generation.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn inbound_generation(&self) -> u64 {
        self.inbound_generation.load(Ordering::Acquire)
    }

    /// A session on the connection closed: its chat's next message opens a new one.
    pub fn session_closed(&self, connection: ConnectionId, session: SessionId) {
        if let Some(r) = self.running.get(&connection) {
            r.routes.closed(session);
        }
    }

    /// Where connections' deliveries, done marks and event lines are written.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn get(&self, id: &ConnectionId) -> Option<Arc<RunningChannel>> {
        self.running.get(id).map(|r| r.clone())
    }

    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    pub fn all(&self) -> Vec<Arc<RunningChannel>> {
        self.running.iter().map(|r| r.value().clone()).collect()
    }

    pub(crate) fn set_supervisor(&self, sup: ActorRef<ChannelSupMsg>) {
        *self.supervisor.write().unwrap_or_else(|e| e.into_inner()) = Some(sup);
    }

    pub(crate) fn supervisor(&self) -> Option<ActorRef<ChannelSupMsg>> {
        self.supervisor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Wakes the outbox deliverer of a webhook connection running here.
    pub fn wake_outbox(&self, id: ConnectionId) {
        if let Some(r) = self.running.get(&id) {
            r.outbox_wake.notify_one();
        }
    }

    /// Forgets which webhooks agents' events go to (channels or connections changed).
    pub fn forget_targets(&self) {
        self.targets.clear();
    }

    /// The enabled, started connections that take events (webhooks with a URL) that
    /// `agent` lists: where its conversation events go. Read from the store (another node may run them), briefly
    /// cached.
    pub async fn webhook_targets(&self, shared: &Shared, agent: AgentId) -> Arc<Vec<ConnectionId>> {
        if let Some(t) = self.targets.get(&agent) {
            if t.0.elapsed() < TARGETS_TTL {
                return t.1.clone();
            }
        }
        let mut found = Vec::new();
        if let Ok(channels) = shared.store.agent_channels(agent).await {
            for c in channels {
                if let Ok(Some(r)) = shared.store.get_connection(c.connection_id).await {
                    if r.enabled && r.status == ConnectionStatus::Connected && takes_events(&r) {
                        found.push(r.id);
                    }
                }
            }
        }
        let found = Arc::new(found);
        self.targets.insert(agent, (Instant::now(), found.clone()));
        found
    }

    /// Stops a connection's actor from a task of its own (it may be the caller).
    pub fn stop_soon(&self, id: ConnectionId) {
        if let Some(sup) = self.supervisor() {
            let _ = sup.cast(ChannelSupMsg::Stop(id, None));
        }
    }

    fn retap(&self, shared: &Shared) {
        let any_sink = self.running.iter().any(|r| r.rt.channel.events().is_some());
        shared.events.set_tapping(any_sink);
        self.forget_targets();
    }
}

/// Records a customer's message (once: a repeated delivery is a duplicate) and hands it to
/// the connection's actor. Answers false for a duplicate or a stale delivery. A store
/// failure means the delivery is not recorded: the platform must be told to deliver it
/// again.
pub(crate) async fn accept_message(
    shared: &Shared,
    rt: &ChannelRuntime,
    actor: &ActorRef<ChannelMsg>,
    msg: InboundMessage,
) -> StoreResult<bool> {
    let platform = rt.platform().as_str();
    let count = |outcome: &'static str| {
        metrics::counter!(telemetry::CONNECTOR_INBOUND_TOTAL, "platform" => platform, "outcome" => outcome)
            .increment(1)
    };
    let journal = shared.channels.journal();
    // A delivery older than the dedup window may be a replay of one already forgotten:
    // it would run twice. Platforms retry for a day at most, so it is refused as stale.
    // Deliveries whose signature carries a time checked within minutes need no such check.
    if !rt.channel.signed_recently() && msg.sent_at < Utc::now() - DEDUP_WINDOW {
        count("stale");
        let detail = json!({"dedup_id": msg.dedup_id, "sent_at": msg.sent_at.to_rfc3339()});
        journal.log_repeated(rt.id, "stale", detail).await;
        return Ok(false);
    }
    let detail = json!({"dedup_id": msg.dedup_id, "chat_id": msg.chat_id, "user_id": msg.user_id});
    // The delivery's line commits with it (before the turn can log its reply, and before
    // the platform is answered), unless a twin may still make it a duplicate.
    let line = journal::line(rt.id, "delivery", detail.clone());
    let twin = rt.channel.twin_id(&msg).map(|dedup_id| InboundMessage {
        dedup_id,
        ..msg.clone()
    });
    let with_line = twin.is_none().then(|| line.clone());
    let mut fresh = journal.insert(rt.id, msg.clone(), with_line).await?;
    if fresh {
        if let Some(twin) = twin {
            // The platform sent this message twice under two delivery ids (Slack: a
            // `message` and an `app_mention`): the second of the pair is a duplicate.
            let twin_id = twin.dedup_id.clone();
            if !journal.insert(rt.id, twin, None).await? {
                journal.done(rt.id, msg.dedup_id.clone(), None).await?;
                fresh = false;
            } else {
                journal.done(rt.id, twin_id, Some(line)).await?;
            }
        }
    }
    if fresh {
        count("accepted");
        let _ = actor.cast(ChannelMsg::Inbound(msg));
    } else {
        count("duplicate");
        chats::log_event(shared, rt, "duplicate", detail).await;
    }
    Ok(fresh)
}

/// Whether a stored connection takes conversation events (its platform says, from its
/// config).
fn takes_events(r: &ConnectionRecord) -> bool {
    parley_connectors::platform::kind(r.platform).is_some_and(|k| k.takes_events(&r.config))
}

/// Sets a connection's status (with the error, for Error) and tells the tenant's
/// outgoing webhooks.
pub(crate) async fn set_status(
    shared: &Shared,
    id: ConnectionId,
    status: ConnectionStatus,
    error: Option<String>,
) {
    let record = match shared.store.get_connection(id).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(connection = %id, error = %e, "could not record a connection status");
            return;
        }
    };
    let mut r = record;
    if r.status == status && r.status_error == error {
        return;
    }
    r.status = status;
    r.status_error = error.clone();
    r.status_at = Utc::now();
    if let Err(e) = shared.store.put_connection(&r).await {
        tracing::warn!(connection = %id, error = %e, "could not record a connection status");
        return;
    }
    shared.channels.forget_targets();
    shared.channels.journal().event(NewConnectionEvent {
        connection_id: id,
        at: r.status_at,
        kind: "status".into(),
        detail: json!({"status": status.as_str(), "error": error}),
    });
    let data = json!({"connection_id": id, "name": r.name, "platform": r.platform,
                      "status": status.as_str(), "error": error});
    if let Ok(all) = shared.store.list_connections(r.tenant_id).await {
        for c in all.iter().filter(|c| {
            c.enabled && (c.status == ConnectionStatus::Connected || c.id == id) && takes_events(c)
        }) {
            outbox::enqueue(shared, c.id, "connection.status", data.clone()).await;
        }
    }
}

pub enum ChannelSupMsg {
    /// Forget finished deliveries older than the dedup window.
    Prune,
    /// Starts (or restarts, with a new runtime) a connection's actor.
    Start(Arc<ChannelRuntime>, RpcReplyPort<Result<(), String>>),
    /// Stops a connection's actor, if it runs.
    Stop(ConnectionId, Option<RpcReplyPort<()>>),
}

pub struct ChannelSupervisor;

impl Actor for ChannelSupervisor {
    type Msg = ChannelSupMsg;
    type State = Arc<Shared>;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        shared.channels.set_supervisor(myself.clone());
        myself.send_interval(PRUNE_EVERY, || ChannelSupMsg::Prune);
        Ok(shared)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ChannelSupMsg::Prune => {
                let store = shared.store.clone();
                tokio::spawn(async move {
                    match store.inbox_prune(Utc::now() - DEDUP_WINDOW).await {
                        Ok(n) => tracing::debug!(forgotten = n, "pruned the delivery inbox"),
                        Err(e) => tracing::warn!(error = %e, "could not prune the delivery inbox"),
                    }
                });
            }
            ChannelSupMsg::Start(rt, reply) => {
                stop(shared, rt.id).await;
                let started = spawn(shared, &myself, rt).await;
                shared.channels.retap(shared);
                let _ = reply.send(started);
            }
            ChannelSupMsg::Stop(id, reply) => {
                stop(shared, id).await;
                shared.channels.retap(shared);
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
        }
        Ok(())
    }

    // Overrides ractor's default, which would stop the supervisor when any child ends.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, err) = event else {
            return Ok(());
        };
        let failed = shared
            .channels
            .running
            .iter()
            .find(|r| r.actor.get_id() == cell.get_id())
            .map(|r| r.rt.clone());
        if let Some(rt) = failed {
            tracing::error!(connection = %rt.id, error = %err, "connection actor failed; restarting it");
            metrics::counter!(telemetry::RESTARTS_TOTAL, "kind" => "channel").increment(1);
            shared.supervision.restarted(format!("channel:{}", rt.id));
            shared.channels.running.remove(&rt.id);
            if let Err(e) = spawn(shared, &myself, rt.clone()).await {
                tracing::error!(connection = %rt.id, error = %e, "could not restart the connection actor");
            }
        }
        Ok(())
    }
}

async fn spawn(
    shared: &Arc<Shared>,
    sup: &ActorRef<ChannelSupMsg>,
    rt: Arc<ChannelRuntime>,
) -> Result<(), String> {
    let outbox_wake = Arc::new(Notify::new());
    // A new actor starts with nothing remembered.
    let routes = Arc::new(Routes::default());
    let (actor, _) = Actor::spawn_linked(
        None,
        ChannelActor,
        ChannelArgs {
            shared: shared.clone(),
            rt: rt.clone(),
            outbox_wake: outbox_wake.clone(),
            routes: routes.clone(),
        },
        sup.get_cell(),
    )
    .await
    .map_err(|e| format!("starting the connection actor: {e}"))?;
    shared.channels.running.insert(
        rt.id,
        Arc::new(RunningChannel {
            rt,
            actor,
            outbox_wake,
            started: Instant::now(),
            routes,
            checked_ms: AtomicU64::new(0),
        }),
    );
    Ok(())
}

async fn stop(shared: &Shared, id: ConnectionId) {
    if let Some((_, r)) = shared.channels.running.remove(&id) {
        r.actor
            .stop_and_wait(None, Some(Duration::from_secs(10)))
            .await
            .ok();
    }
}
