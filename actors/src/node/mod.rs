//! The node: its supervisor, the state its actors share, and [`Node`], the API the HTTP
//! layer calls (agent administration and the Chat API operations).

mod agent_ops;
mod agent_transfer;
mod campaign_ops;
mod channel_ops;
mod connection_ops;
mod conversation_ops;
mod identity_ops;
mod introspect;
mod logins;
mod session_ops;
mod widget_ops;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use parley_engine::model::{AgentId, SessionId};
use parley_engine::model::{Session, SessionState};
use parley_engine::registry::{Claim, Lease, LocalRegistry, NodeInfo, Registry};
use parley_engine::store::{Epoch, SessionWrites, Store, Write};
use parley_engine::telemetry;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

pub use agent_transfer::Transferred;
pub(crate) use campaign_ops::compile_flow;
pub use campaign_ops::{
    campaign_json, AddedParticipants, CampaignPatch, NewCampaign, MAX_PARTICIPANTS_PER_CALL,
};
pub use channel_ops::{TemplateSend, MAX_EVENTS_PAGE};
pub use connection_ops::{ConnectionFilter, ConnectionPatch, ConnectionSummary, NewConnection};
pub use conversation_ops::MAX_OPERATOR_TEXT;
pub use identity_ops::{
    user_json, Caller, LoginError, NewUser, SignedIn, TenantPatch, Usage, UserPatch, TOKEN_TTL,
};
pub use introspect::{ActorInfo, ActorPage, ActorQuery, ActorScope};
pub(crate) use session_ops::check_json;
pub use session_ops::{
    Conversation, CreateSession, Opening, Route, EXT_TYPES, MAX_SESSION_FIELD_CHARS,
    MAX_SESSION_JSON_BYTES, RESERVED_KWARGS,
};
pub use widget_ops::PublicWidget;

use crate::agents::{AgentDirectory, AgentSupArgs, AgentSupMsg, AgentSupervisor, RunningAgent};
use crate::campaigns::{CampaignDirectory, CampaignSupervisor};
use crate::channels::{ChannelDirectory, ChannelSupervisor};
use crate::error::{NodeError, NodeResult};
use crate::events::{EventHub, SessionEvent, UserEvent};
use crate::persistence::{
    BatchStats, CommitError, CommitQueue, PersistMsg, PersistenceActor, PersistenceArgs,
};
use crate::session::{SessionMsg, SessionRouter, SessionShard, ShardArgs, ShardMsg};

#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Session supervisors; sessions are spread over them by id.
    pub shards: usize,
    /// An idle session actor stops (its state is in the store) after this long.
    pub passivate_after: Duration,
    /// How often the store is asked for sessions whose timer is due.
    pub timer_sweep: Duration,
    /// Most turns one group commit takes.
    pub max_batch: usize,
    /// More than `restart_limit` session restarts within `restart_window` in one shard
    /// is a restart storm: it is escalated to the node and logged.
    pub restart_limit: u32,
    pub restart_window: Duration,
    /// Seals connection secrets and agents' LLM secrets at rest. The default is a random key that lives as long
    /// as the process (tests, benches); servers pass the deployment's master key.
    pub secrets: parley_engine::secrets::SecretBox,
    /// Where platforms reach this deployment (Telegram's setWebhook gets
    /// `{public_url}/hooks/{id}`).
    pub public_url: Option<String>,
    /// The time campaigns schedule by (tests pass a manual clock).
    pub clock: crate::Clock,
    /// What outbound calls may reach.
    pub egress: parley_engine::egress::EgressPolicy,
    /// How long outbound calls may take.
    pub timeouts: parley_engine::egress::Timeouts,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            shards: 16,
            passivate_after: Duration::from_secs(60),
            timer_sweep: Duration::from_secs(1),
            max_batch: 4096,
            restart_limit: 10,
            restart_window: Duration::from_secs(10),
            secrets: parley_engine::secrets::SecretBox::from_text(
                &parley_engine::secrets::SecretBox::generate_key(),
            )
            .expect("a generated key is valid"),
            public_url: None,
            clock: crate::Clock::system(),
            egress: parley_engine::egress::EgressPolicy::default(),
            timeouts: parley_engine::egress::Timeouts::default(),
        }
    }
}

/// A display name (of a campaign, connection, user or tenant): trimmed, 1 to 200
/// characters.
fn check_name(name: &str) -> NodeResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(NodeError::Invalid("name: 1 to 200 characters".into()));
    }
    Ok(name.to_string())
}

/// What every actor of the node reaches: the store, the directories and the actor refs
/// a supervisor may replace after a restart.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub config: NodeConfig,
    pub agents: Arc<AgentDirectory>,
    /// Connections started on this node.
    pub channels: ChannelDirectory,
    /// Campaigns running on this node.
    pub campaigns: CampaignDirectory,
    pub events: Arc<EventHub>,
    pub sessions: SessionRouter,
    /// Who owns which session in the cluster.
    pub registry: Arc<dyn Registry>,
    /// Set while the node leaves the cluster: passivating sessions then skip releasing
    /// their claims one by one, since leaving frees them all at once.
    pub leaving: AtomicBool,
    pub http: reqwest::Client,
    pub supervision: SupervisionStats,
    /// Sign-in failures (throttling).
    pub logins: logins::Logins,
    /// Tenants as last read (limits, time zone), with when.
    pub(crate) tenants: dashmap::DashMap<
        parley_engine::model::TenantId,
        (std::time::Instant, Arc<parley_engine::store::Tenant>),
    >,
    /// Widgets by public id as last read, with when.
    pub(crate) widgets: dashmap::DashMap<String, (std::time::Instant, Arc<PublicWidget>)>,
    persistence: Arc<PersistenceSlot>,
    agent_sup: RwLock<Option<ActorRef<AgentSupMsg>>>,
}

/// The running persistence actor and its writer's queue (replaced when the node restarts
/// the actor).
pub(crate) type PersistenceSlot = RwLock<Option<(ActorRef<PersistMsg>, CommitQueue)>>;

/// Counters of what the supervisors did.
#[derive(Debug, Default)]
pub struct SupervisionStats {
    /// Session actors restarted after a failure.
    pub session_restarts: AtomicU64,
    /// Restart storms escalated to the node.
    pub restart_storms: AtomicU64,
    /// When the node's own children (by introspection id: `persistence`,
    /// `agent_supervisor`, `shard:N`) last started, and how often each was restarted.
    pub(crate) started: dashmap::DashMap<String, std::time::Instant>,
    pub(crate) restarts: dashmap::DashMap<String, u32>,
}

impl SupervisionStats {
    fn started(&self, id: String) {
        self.started.insert(id, std::time::Instant::now());
    }

    pub(crate) fn restarted(&self, id: String) {
        *self.restarts.entry(id.clone()).or_insert(0) += 1;
        self.started(id);
    }
}

fn read<T: Clone>(slot: &RwLock<Option<T>>) -> Option<T> {
    slot.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn write<T>(slot: &RwLock<Option<T>>, value: T) {
    *slot.write().unwrap_or_else(|e| e.into_inner()) = Some(value);
}

/// Sends writes to the PersistenceActor's writer and waits for their commit.
pub struct PersistenceHandle(Option<(ActorRef<PersistMsg>, CommitQueue)>);

impl PersistenceHandle {
    /// Commits one session's writes under the epoch of its owner's claim and hands them
    /// back.
    pub async fn commit(
        &self,
        session: SessionId,
        epoch: Epoch,
        writes: Vec<Write>,
    ) -> NodeResult<Vec<Write>> {
        let Some((_, queue)) = &self.0 else {
            return Err(NodeError::Unavailable("persistence is not running".into()));
        };
        let group = SessionWrites {
            session,
            epoch,
            writes,
        };
        queue.commit(group).await.map_err(|e| match e {
            CommitError::Fenced => NodeError::Moved(None),
            CommitError::Failed(e) => e.into(),
        })
    }

    /// The persistence actor (to watch or stop it).
    pub fn actor(&self) -> Option<&ActorRef<PersistMsg>> {
        self.0.as_ref().map(|(a, _)| a)
    }

    /// Write requests waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.0.as_ref().map_or(0, |(_, q)| q.depth())
    }

    /// Group-commit statistics since the persistence actor started.
    pub async fn stats(&self) -> Option<BatchStats> {
        match self.0.as_ref()?.0.call(PersistMsg::Stats, None).await {
            Ok(CallResult::Success(s)) => Some(s),
            _ => None,
        }
    }
}

impl Shared {
    /// Tells the session's and the customer's subscribers that a session closed.
    pub(crate) fn announce_close(&self, s: &Session) {
        let SessionState::Closed(status) = s.state else {
            return;
        };
        metrics::counter!(telemetry::SESSIONS_CLOSED_TOTAL, "status" => status.as_str())
            .increment(1);
        if let Some(c) = &s.channel {
            self.channels.session_closed(c.connection_id, s.id);
        }
        self.events.session(s.id, || SessionEvent::Close {
            session_id: s.id,
            status: status.as_str(),
            conversation_result: s.conversation_result.clone(),
        });
        self.events
            .user(s.tenant_id, &s.user_id, || UserEvent::ConversationClosed {
                session_id: s.id,
                agent_id: s.agent_id,
                status: status.as_str(),
                conversation_result: s.conversation_result.clone(),
            });
    }

    pub fn persistence(&self) -> PersistenceHandle {
        PersistenceHandle(read(&self.persistence))
    }

    /// The running agent; in a cluster, an agent started on another node a moment ago is
    /// started here on first use rather than waiting for the next sync.
    pub(crate) async fn running_agent(&self, id: AgentId) -> NodeResult<Arc<RunningAgent>> {
        if let Some(a) = self.agents.get(&id) {
            return Ok(a);
        }
        if self.registry.clustered() {
            let sup = self.agent_supervisor()?;
            let _ = sup.call(AgentSupMsg::Sync, None).await;
            if let Some(a) = self.agents.get(&id) {
                return Ok(a);
            }
        }
        Err(NodeError::AgentNotRunning)
    }

    pub(crate) fn agent_supervisor(&self) -> NodeResult<ActorRef<AgentSupMsg>> {
        read(&self.agent_sup)
            .ok_or_else(|| NodeError::Unavailable("agent supervisor is not running".into()))
    }
}

/// How often a node of a cluster catches up with agent changes made on other nodes.
const AGENT_SYNC: Duration = Duration::from_secs(1);

pub enum NodeMsg {
    /// Ask the store for sessions whose timer is due and tick them.
    SweepTimers,
    /// Renew this node's lease in the registry.
    Heartbeat,
    /// Catch up with agent changes made on other nodes, and exchange which customers
    /// have sockets where.
    SyncAgents,
    /// A shard saw too many session restarts.
    RestartStorm { shard: usize, restarts: usize },
}

/// The root of the tree: starts the persistence actor, agent supervisor and session
/// shards, restarts them if they fail, and drives the session timers.
pub struct NodeSupervisor;

pub struct NodeState {
    shared: Arc<Shared>,
    shards: Vec<ActorRef<ShardMsg>>,
    sweeping: Arc<AtomicBool>,
    beating: Arc<AtomicBool>,
    syncing_watches: Arc<AtomicBool>,
    /// The customers this node last told the registry it watches.
    watched: Arc<tokio::sync::Mutex<HashSet<String>>>,
}

impl Actor for NodeSupervisor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        write(
            &shared.persistence,
            spawn_persistence(&shared, &myself).await?,
        );
        write(&shared.agent_sup, spawn_agent_sup(&shared, &myself).await?);
        spawn_channel_sup(&shared, &myself).await?;
        for id in [
            "node",
            "persistence",
            "agent_supervisor",
            "channel_supervisor",
        ] {
            shared.supervision.started(id.into());
        }
        let mut shards = Vec::with_capacity(shared.config.shards);
        for index in 0..shared.config.shards.max(1) {
            shards.push(spawn_shard(&shared, &myself, index).await?);
        }
        shared.sessions.set_shards(shards.clone());
        myself.send_interval(shared.config.timer_sweep, || NodeMsg::SweepTimers);
        if shared.registry.clustered() {
            // Several beats per lease, so one slow round trip does not cost the lease.
            let period = (shared.registry.lease_ttl() / 4).max(Duration::from_millis(50));
            myself.send_interval(period, || NodeMsg::Heartbeat);
            myself.send_interval(AGENT_SYNC, || NodeMsg::SyncAgents);
        }
        Ok(NodeState {
            shared,
            shards,
            sweeping: Arc::default(),
            beating: Arc::default(),
            syncing_watches: Arc::default(),
            watched: Arc::default(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            NodeMsg::SweepTimers => {
                // One sweep at a time, off the supervisor's mailbox.
                if state.sweeping.swap(true, Ordering::AcqRel) {
                    return Ok(());
                }
                let shared = state.shared.clone();
                let flag = state.sweeping.clone();
                tokio::spawn(async move {
                    shared
                        .sessions
                        .forget_idle_owners(shared.config.passivate_after);
                    match shared.store.due_sessions(chrono::Utc::now(), 1000).await {
                        Ok(due) => {
                            for (id, _agent) in due {
                                // Another live node owns it: that node's sweep ticks it.
                                if !shared.sessions.is_resident(&id)
                                    && !matches!(shared.registry.remote_owner(id).await, Ok(None))
                                {
                                    continue;
                                }
                                let _ = shared.sessions.tell(id, SessionMsg::Tick).await;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "timer sweep failed"),
                    }
                    flag.store(false, Ordering::Release);
                });
            }
            NodeMsg::SyncAgents => {
                if let Ok(sup) = state.shared.agent_supervisor() {
                    // Fire and forget: the supervisor's mailbox serialises syncs.
                    let _ = sup.cast(AgentSupMsg::Sync(ractor::concurrency::oneshot().0.into()));
                }
                if !state.syncing_watches.swap(true, Ordering::AcqRel) {
                    let (shared, flag, last) = (
                        state.shared.clone(),
                        state.syncing_watches.clone(),
                        state.watched.clone(),
                    );
                    tokio::spawn(async move {
                        sync_watches(&shared, &last).await;
                        flag.store(false, Ordering::Release);
                    });
                }
            }
            NodeMsg::Heartbeat => {
                if state.beating.swap(true, Ordering::AcqRel) {
                    return Ok(());
                }
                let shared = state.shared.clone();
                let flag = state.beating.clone();
                tokio::spawn(async move {
                    match shared.registry.heartbeat().await {
                        Ok(Lease::Renewed) => {}
                        Ok(Lease::Lost) => revalidate(&shared).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "heartbeat failed; sessions owned here keep being served")
                        }
                    }
                    flag.store(false, Ordering::Release);
                });
            }
            NodeMsg::RestartStorm { shard, restarts } => {
                state
                    .shared
                    .supervision
                    .restart_storms
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    shard,
                    restarts,
                    "restart storm: session actors keep failing; restarting them on demand only"
                );
            }
        }
        Ok(())
    }

    // Overrides ractor's default, which would stop the node when any child ends.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, err) = event else {
            return Ok(());
        };
        let id = cell.get_id();
        let shared = state.shared.clone();
        if read(&shared.persistence).is_some_and(|(p, _)| p.get_id() == id) {
            tracing::error!(error = %err, "persistence actor failed; restarting it");
            metrics::counter!(telemetry::RESTARTS_TOTAL, "kind" => "persistence").increment(1);
            shared.supervision.restarted("persistence".into());
            write(
                &shared.persistence,
                spawn_persistence(&shared, &myself).await?,
            );
        } else if read(&shared.agent_sup).is_some_and(|a| a.get_id() == id) {
            tracing::error!(error = %err, "agent supervisor failed; restarting it");
            metrics::counter!(telemetry::RESTARTS_TOTAL, "kind" => "agent_supervisor").increment(1);
            shared.supervision.restarted("agent_supervisor".into());
            write(&shared.agent_sup, spawn_agent_sup(&shared, &myself).await?);
        } else if shared
            .channels
            .supervisor()
            .is_some_and(|c| c.get_id() == id)
        {
            tracing::error!(error = %err, "channel supervisor failed; restarting it and its connections");
            metrics::counter!(telemetry::RESTARTS_TOTAL, "kind" => "channel_supervisor")
                .increment(1);
            shared.supervision.restarted("channel_supervisor".into());
            let running = shared.channels.all();
            spawn_channel_sup(&shared, &myself).await?;
            if let Some(sup) = shared.channels.supervisor() {
                for r in running {
                    let _ = sup.cast(crate::channels::ChannelSupMsg::Start(
                        r.rt.clone(),
                        ractor::concurrency::oneshot().0.into(),
                    ));
                }
            }
        } else if shared
            .campaigns
            .supervisor()
            .is_some_and(|c| c.get_id() == id)
        {
            tracing::error!(error = %err, "campaign supervisor failed; restarting it");
            metrics::counter!(telemetry::RESTARTS_TOTAL, "kind" => "campaign_supervisor")
                .increment(1);
            shared.supervision.restarted("campaign_supervisor".into());
            spawn_campaign_sup(&shared, &myself).await?;
        } else if let Some(index) = state.shards.iter().position(|s| s.get_id() == id) {
            tracing::error!(shard = index, error = %err, "session shard failed; restarting it");
            metrics::counter!(telemetry::RESTARTS_TOTAL, "kind" => "session_shard").increment(1);
            shared.supervision.restarted(format!("shard:{index}"));
            shared
                .sessions
                .live
                .retain(|sid, _| shared.sessions.shard_of(sid) != index);
            let shard = spawn_shard(&shared, &myself, index).await?;
            shared.sessions.replace_shard(index, shard.clone());
            state.shards[index] = shard;
        }
        Ok(())
    }
}

/// Tells the registry which customers have sockets here (what changed, and a refresh of
/// the entry's lifetime), and learns which have sockets elsewhere.
async fn sync_watches(shared: &Arc<Shared>, last: &tokio::sync::Mutex<HashSet<String>>) {
    let now = shared.events.watched_here();
    let mut last = last.lock().await;
    let added: Vec<String> = now.difference(&last).cloned().collect();
    let removed: Vec<String> = last.difference(&now).cloned().collect();
    if !now.is_empty() || !removed.is_empty() {
        match shared.registry.update_watched_users(&added, &removed).await {
            Ok(()) => *last = now,
            Err(e) => {
                tracing::debug!(error = %e, "could not publish this node's watched customers")
            }
        }
    }
    match shared.registry.users_watched_elsewhere().await {
        Ok(keys) => shared.events.set_watched_elsewhere(keys),
        Err(e) => tracing::debug!(error = %e, "could not read the customers watched elsewhere"),
    }
}

/// The lease had lapsed, so other nodes may have claimed sessions that live here: claim
/// each again and let go of those that have a new owner. (Their stale writes would be
/// fenced anyway; this just stops serving them from here.)
async fn revalidate(shared: &Arc<Shared>) {
    let ids: Vec<SessionId> = shared.sessions.live.iter().map(|e| *e.key()).collect();
    tracing::warn!(
        sessions = ids.len(),
        "lease had expired; re-claiming resident sessions"
    );
    for id in ids {
        match shared.registry.claim(id).await {
            Ok(Claim::Mine) => {}
            Ok(Claim::Owned(owner)) => {
                tracing::warn!(session = %id, owner = %owner.id, "session was taken over; letting it go");
                shared.sessions.evict(id);
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-claiming failed; retried on the next heartbeat");
                return;
            }
        }
    }
}

async fn spawn_persistence(
    shared: &Arc<Shared>,
    node: &ActorRef<NodeMsg>,
) -> Result<(ActorRef<PersistMsg>, CommitQueue), ActorProcessingErr> {
    let (p, _) = Actor::spawn_linked(
        None,
        PersistenceActor,
        PersistenceArgs {
            store: shared.store.clone(),
            max_batch: shared.config.max_batch,
        },
        node.get_cell(),
    )
    .await?;
    match p.call(PersistMsg::Queue, None).await? {
        CallResult::Success(queue) => Ok((p, queue)),
        _ => Err("the persistence actor did not answer".into()),
    }
}

async fn spawn_agent_sup(
    shared: &Arc<Shared>,
    node: &ActorRef<NodeMsg>,
) -> Result<ActorRef<AgentSupMsg>, ActorProcessingErr> {
    let (a, _) = Actor::spawn_linked(
        None,
        AgentSupervisor,
        AgentSupArgs {
            store: shared.store.clone(),
            secrets: shared.config.secrets.clone(),
            egress: shared.config.egress.clone(),
            http: shared.http.clone(),
            directory: shared.agents.clone(),
            events: shared.events.clone(),
        },
        node.get_cell(),
    )
    .await?;
    Ok(a)
}

async fn spawn_channel_sup(
    shared: &Arc<Shared>,
    node: &ActorRef<NodeMsg>,
) -> Result<(), ActorProcessingErr> {
    // The supervisor registers itself in the directory as it starts.
    Actor::spawn_linked(None, ChannelSupervisor, shared.clone(), node.get_cell()).await?;
    Ok(())
}

async fn spawn_campaign_sup(
    shared: &Arc<Shared>,
    node: &ActorRef<NodeMsg>,
) -> Result<(), ActorProcessingErr> {
    // The supervisor registers itself in the directory as it starts.
    Actor::spawn_linked(None, CampaignSupervisor, shared.clone(), node.get_cell()).await?;
    shared.supervision.started("campaign_supervisor".into());
    Ok(())
}

async fn spawn_shard(
    shared: &Arc<Shared>,
    node: &ActorRef<NodeMsg>,
    index: usize,
) -> Result<ActorRef<ShardMsg>, ActorProcessingErr> {
    let (s, _) = Actor::spawn_linked(
        None,
        SessionShard,
        ShardArgs {
            index,
            shared: shared.clone(),
            node: node.clone(),
        },
        node.get_cell(),
    )
    .await?;
    Ok(s)
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
    supervisor: ActorRef<NodeMsg>,
}

impl Node {
    /// Builds the actor tree on a migrated store and restarts the agents that were
    /// running when the node last stopped.
    pub async fn start(store: Arc<dyn Store>, config: NodeConfig) -> NodeResult<Node> {
        let local = LocalRegistry::new(NodeInfo {
            id: "local".into(),
            url: String::new(),
        });
        Node::start_in_cluster(store, Arc::new(local), config).await
    }

    /// Like [`Node::start`], as one node of a cluster that shares `registry` (and the
    /// store). Joins the registry first; if it is unreachable the node still starts, and
    /// claims answer Unavailable until it is back.
    pub async fn start_in_cluster(
        store: Arc<dyn Store>,
        registry: Arc<dyn Registry>,
        config: NodeConfig,
    ) -> NodeResult<Node> {
        if let Err(e) = registry.join().await {
            tracing::warn!(error = %e, "cannot reach the registry yet; retrying on every heartbeat");
        }
        // The platforms' names are kept before any stored connection is read.
        parley_connectors::platform::registry();
        let http = parley_engine::egress::builder(Some(&config.egress), config.timeouts)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| NodeError::Internal(format!("http client: {e}")))?;
        let persistence = Arc::new(PersistenceSlot::default());
        let channels = ChannelDirectory::new(persistence.clone());
        let shared = Arc::new(Shared {
            store,
            config,
            agents: Arc::default(),
            channels,
            campaigns: CampaignDirectory::default(),
            events: Arc::default(),
            sessions: SessionRouter::default(),
            registry,
            leaving: AtomicBool::new(false),
            http,
            supervision: SupervisionStats::default(),
            logins: logins::Logins::default(),
            tenants: dashmap::DashMap::new(),
            widgets: dashmap::DashMap::new(),
            persistence,
            agent_sup: RwLock::new(None),
        });
        let (supervisor, _) = Actor::spawn(None, NodeSupervisor, shared.clone())
            .await
            .map_err(|e| NodeError::Internal(format!("starting the node: {e}")))?;
        let node = Node { shared, supervisor };
        node.relay_user_events();
        let (tap, tapped) = tokio::sync::mpsc::unbounded_channel();
        node.shared.events.tap_into(tap);
        tokio::spawn(crate::channels::outbox::run_tap(
            node.shared.clone(),
            tapped,
        ));
        let (tap, tapped) = tokio::sync::mpsc::unbounded_channel();
        node.shared.events.campaign_tap_into(tap);
        tokio::spawn(crate::campaigns::run_tap(node.shared.clone(), tapped));
        node.seal_stored_definitions().await?;
        node.resume_agents().await?;
        node.resume_channels().await?;
        spawn_campaign_sup(&node.shared, &node.supervisor)
            .await
            .map_err(|e| NodeError::Internal(format!("starting campaigns: {e}")))?;
        Ok(node)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn events(&self) -> &Arc<EventHub> {
        &self.shared.events
    }

    /// Session actors resident on this node.
    pub fn resident_sessions(&self) -> usize {
        self.shared.sessions.resident()
    }

    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.shared.registry
    }

    /// In a cluster: delivers events other nodes relay for customers whose sockets are here,
    /// and relays this node's events for customers whose sockets are elsewhere.
    fn relay_user_events(&self) {
        let Some(mut inbound) = self.shared.registry.relayed_user_events() else {
            return;
        };
        let events = self.shared.events.clone();
        tokio::spawn(async move {
            while let Some((key, json)) = inbound.recv().await {
                events.relayed(&key, &json);
            }
        });
        let (tx, mut outbound) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
        self.shared.events.relay_to(tx);
        let registry = self.shared.registry.clone();
        tokio::spawn(async move {
            while let Some((key, json)) = outbound.recv().await {
                if let Err(e) = registry.publish_user_event(&key, &json).await {
                    tracing::debug!(error = %e, "could not relay a customer event");
                }
            }
        });
    }

    /// Whether the store answers (a cheap read).
    pub async fn store_ready(&self) -> NodeResult<()> {
        self.shared.store.get_agent(uuid::Uuid::nil()).await?;
        Ok(())
    }

    /// Whether the registry answers (the in-process one always does).
    pub async fn registry_ready(&self) -> NodeResult<()> {
        Ok(self.shared.registry.ping().await?)
    }

    /// Sets the gauges that are read rather than counted (call before rendering metrics).
    pub fn sample_metrics(&self) {
        use metrics::{counter, gauge};
        let shared = &self.shared;
        let resident = shared.sessions.resident();
        gauge!(telemetry::SESSIONS_RESIDENT).set(resident as f64);
        let agents = shared.agents.running_count();
        for (kind, n) in [
            ("node_supervisor", 1),
            (
                "persistence",
                usize::from(read(&shared.persistence).is_some()),
            ),
            (
                "agent_supervisor",
                usize::from(read(&shared.agent_sup).is_some()),
            ),
            ("agent", agents),
            ("channel_supervisor", 1),
            ("channel", shared.channels.running_count()),
            ("campaign_supervisor", 1),
            ("campaign", shared.campaigns.running_count()),
            ("participant", shared.campaigns.resident_participants()),
            ("session_shard", shared.config.shards.max(1)),
            ("session", resident),
        ] {
            gauge!(telemetry::ACTORS, "kind" => kind).set(n as f64);
        }
        gauge!(telemetry::CAMPAIGN_PARTICIPANTS_RESIDENT)
            .set(shared.campaigns.resident_participants() as f64);
        gauge!(telemetry::MAILBOX_DEPTH_MAX, "kind" => "session")
            .set(shared.sessions.deepest_mailbox() as f64);
        let queued = shared.persistence().queue_depth();
        gauge!(telemetry::COMMIT_QUEUE).set(queued as f64);
        gauge!(telemetry::MAILBOX_DEPTH_MAX, "kind" => "persistence").set(queued as f64);
        if let Some(rss) = telemetry::resident_memory_bytes() {
            gauge!(telemetry::RESIDENT_MEMORY).set(rss as f64);
        }
        let r = shared.registry.stats().snapshot();
        for (op, v) in [
            ("claim", r.claims),
            ("claim_lost", r.claims_lost),
            ("takeover", r.takeovers),
            ("lookup", r.lookups),
            ("release", r.releases),
            ("heartbeat", r.heartbeats),
            ("forward", r.forwards),
            ("error", r.errors),
        ] {
            counter!(telemetry::REGISTRY_OPS_TOTAL, "op" => op).absolute(v);
        }
        counter!(telemetry::REGISTRY_ROUND_TRIPS_TOTAL).absolute(r.commands);
    }

    /// Stops the tree: sessions finish the messages already in their mailboxes, then the
    /// persistence actor commits what it accepted, then everything stops and the node
    /// leaves the cluster, so its sessions can be claimed elsewhere at once.
    pub async fn shutdown(&self) {
        self.shared.leaving.store(true, Ordering::Release);
        let wait = Some(Duration::from_secs(10));
        for i in 0..self.shared.config.shards.max(1) {
            if let Some(s) = self.shared.sessions.shard(i) {
                s.drain_children_and_wait(wait).await;
            }
        }
        if let Ok(a) = self.shared.agent_supervisor() {
            a.stop_children_and_wait(None, wait).await;
        }
        self.supervisor
            .stop_children_and_wait(Some("node shutdown".into()), wait)
            .await;
        self.supervisor.stop_and_wait(None, wait).await.ok();
        if let Err(e) = self.shared.registry.leave().await {
            tracing::warn!(error = %e, "could not leave the registry; claims lapse with the lease");
        }
    }
}
