//! SessionShard: the supervisor of one slice of the node's sessions. It activates session
//! actors, passivates idle ones, and restarts failed ones from the store, escalating when
//! a shard sees a restart storm.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_engine::model::{SessionId, TenantId};
use parley_engine::telemetry;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::actor::{SessionActor, SessionArgs, SessionMsg};
use super::router::ShardStats;
use crate::error::{NodeError, NodeResult};
use crate::node::{NodeMsg, Shared};

pub enum ShardMsg {
    Activate(SessionId, RpcReplyPort<NodeResult<ActorRef<SessionMsg>>>),
    /// Passivate sessions idle for longer than the configured time (0: all idle ones), of
    /// one tenant or of all.
    Passivate {
        idle_secs: u32,
        tenant: Option<TenantId>,
    },
    /// Stop the session's actor now: another node owns the session.
    Evict(SessionId),
}

pub struct SessionShard;

pub struct ShardArgs {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub node: ActorRef<NodeMsg>,
}

pub struct ShardState {
    index: usize,
    shared: Arc<Shared>,
    node: ActorRef<NodeMsg>,
    children: HashMap<SessionId, ActorRef<SessionMsg>>,
    by_actor: HashMap<ActorId, SessionId>,
    /// Passivating sessions and the activations waiting for them to finish.
    draining: HashMap<SessionId, Vec<RpcReplyPort<NodeResult<ActorRef<SessionMsg>>>>>,
    recent_restarts: VecDeque<Instant>,
    stats: Arc<ShardStats>,
}

impl ShardState {
    async fn spawn(
        &mut self,
        myself: &ActorRef<ShardMsg>,
        id: SessionId,
    ) -> NodeResult<ActorRef<SessionMsg>> {
        let (actor, _) = Actor::spawn_linked(
            None,
            SessionActor,
            SessionArgs {
                id,
                shared: self.shared.clone(),
            },
            myself.get_cell(),
        )
        .await
        .map_err(|e| NodeError::Internal(format!("spawning session actor: {e}")))?;
        self.children.insert(id, actor.clone());
        self.by_actor.insert(actor.get_id(), id);
        metrics::counter!(telemetry::ACTIVATIONS_TOTAL).increment(1);
        self.shared.sessions.insert(id, actor.clone());
        Ok(actor)
    }

    fn passivate(&mut self, idle_secs: u32, tenant: Option<TenantId>) {
        let now = self.shared.sessions.now_secs();
        let idle: Vec<SessionId> = self
            .children
            .keys()
            .filter(|id| match self.shared.sessions.live.get(id) {
                Some(e) => {
                    now.saturating_sub(e.last_used.load(Ordering::Relaxed)) >= idle_secs
                        && tenant.is_none_or(|t| e.tenant.get() == Some(&t))
                }
                None => tenant.is_none(),
            })
            // A session with a WebSocket open here stays resident (and claimed by this
            // node), so turns that reach other nodes are forwarded here and its events
            // reach the socket.
            .filter(|id| !self.shared.events.has_session_subscribers(id))
            .copied()
            .collect();
        for id in idle {
            self.stop_child(id);
        }
    }

    fn publish(&self) {
        self.stats
            .children
            .store(self.children.len(), Ordering::Relaxed);
    }

    fn stop_child(&mut self, id: SessionId) {
        self.shared.sessions.restarts.remove(&id);
        if let Some(actor) = self.children.remove(&id) {
            metrics::counter!(telemetry::PASSIVATIONS_TOTAL).increment(1);
            self.shared.sessions.live.remove(&id);
            // Messages already queued are still handled; later ones are refused and
            // re-routed, and wait here until this actor is gone.
            if actor.drain().is_ok() {
                self.draining.insert(id, Vec::new());
            }
        }
    }

    /// A child is gone: serve the activations that waited for it.
    async fn gone(&mut self, myself: &ActorRef<ShardMsg>, id: SessionId) {
        if let Some(waiters) = self.draining.remove(&id) {
            if !waiters.is_empty() {
                let r = self.spawn(myself, id).await;
                for w in waiters {
                    let _ = w.send(r.clone());
                }
            }
        }
    }
}

impl Actor for SessionShard {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let cfg = &args.shared.config;
        let idle_secs = cfg.passivate_after.as_secs().max(1) as u32;
        // Check a few times per idle period so sessions passivate close to on time.
        let period =
            (cfg.passivate_after / 4).clamp(Duration::from_millis(250), Duration::from_secs(15));
        myself.send_interval(period, move || ShardMsg::Passivate {
            idle_secs,
            tenant: None,
        });
        let stats = Arc::new(ShardStats {
            children: AtomicUsize::new(0),
            started: Instant::now(),
        });
        args.shared
            .sessions
            .set_shard_stats(args.index, stats.clone());
        Ok(ShardState {
            index: args.index,
            shared: args.shared,
            node: args.node,
            children: HashMap::new(),
            by_actor: HashMap::new(),
            draining: HashMap::new(),
            recent_restarts: VecDeque::new(),
            stats,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMsg::Activate(id, reply) => {
                if let Some(a) = state.children.get(&id) {
                    let a = a.clone();
                    state.shared.sessions.insert(id, a.clone());
                    let _ = reply.send(Ok(a));
                } else if let Some(waiters) = state.draining.get_mut(&id) {
                    waiters.push(reply);
                } else {
                    let _ = reply.send(state.spawn(&myself, id).await);
                }
            }
            ShardMsg::Passivate { idle_secs, tenant } => state.passivate(idle_secs, tenant),
            ShardMsg::Evict(id) => state.stop_child(id),
        }
        state.publish();
        Ok(())
    }

    // Overrides ractor's default, which would stop the shard when any session ends.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(id) = state.by_actor.remove(&cell.get_id()) {
                    if state
                        .children
                        .get(&id)
                        .is_some_and(|a| a.get_id() == cell.get_id())
                    {
                        state.children.remove(&id);
                        state.shared.sessions.live.remove(&id);
                    }
                    state.gone(&myself, id).await;
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(id) = state.by_actor.remove(&cell.get_id()) else {
                    return Ok(());
                };
                state.children.remove(&id);
                state
                    .shared
                    .sessions
                    .live
                    .remove_if(&id, |_, e| e.actor.get_id() == cell.get_id());
                state
                    .shared
                    .supervision
                    .session_restarts
                    .fetch_add(1, Ordering::Relaxed);
                metrics::counter!(telemetry::RESTARTS_TOTAL, "kind" => "session").increment(1);
                *state.shared.sessions.restarts.entry(id).or_insert(0) += 1;
                let cfg = &state.shared.config;
                let now = Instant::now();
                state.recent_restarts.push_back(now);
                while state
                    .recent_restarts
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > cfg.restart_window)
                {
                    state.recent_restarts.pop_front();
                }
                tracing::warn!(session = %id, shard = state.index, error = %err, "session actor failed; restarting it from the store");
                if state.recent_restarts.len() as u32 > cfg.restart_limit {
                    // A storm: stop restarting eagerly (sessions still re-activate on
                    // demand) and tell the node.
                    let _ = state.node.send_message(NodeMsg::RestartStorm {
                        shard: state.index,
                        restarts: state.recent_restarts.len(),
                    });
                    state.gone(&myself, id).await;
                } else if state.draining.contains_key(&id) {
                    state.gone(&myself, id).await;
                } else {
                    state.spawn(&myself, id).await?;
                }
            }
            _ => {}
        }
        state.publish();
        Ok(())
    }
}
