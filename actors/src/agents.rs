//! Running agents: the AgentSupervisor starts and stops one AgentActor per running agent.
//! The actor owns the agent's compiled versions; the shared [`AgentDirectory`] lets
//! sessions and the API reach the current version without a mailbox hop per turn.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use parley_engine::agent::{stored, AgentDefinition, BackendKind, CompiledAgent};
use parley_engine::egress::EgressPolicy;
use parley_engine::llm::{Backends, DEFAULT_CONTEXT_WINDOW};
use parley_engine::model::{AgentId, TenantId};
use parley_engine::secrets::SecretBox;
use parley_engine::store::{AgentRecord, AgentStatus, Store};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::error::{NodeError, NodeResult};
use crate::events::{EventHub, UserEvent};

/// One compiled version of an agent with its LLM backends.
pub struct AgentRuntime {
    pub version: i64,
    pub compiled: Arc<CompiledAgent>,
    pub backends: Backends,
    /// How many recent messages the backends look at: what a live session keeps in memory.
    pub history_window: usize,
}

/// What a valid definition still needs from the node's environment to run (API keys named
/// by `api_key_env`).
pub fn missing_environment(def: &AgentDefinition) -> Option<String> {
    def.llm
        .iter()
        .enumerate()
        .find_map(|(i, b)| match (b.kind, &b.api_key_env, &b.api_key) {
            (BackendKind::Openai, Some(var), None) if std::env::var_os(var).is_none() => Some(
                format!("llm[{i}].api_key_env: environment variable {var} is not set"),
            ),
            _ => None,
        })
}

/// Loads, parses and compiles one stored version; the error is the reason shown as the
/// agent's Error status.
pub async fn build_runtime(
    store: &dyn Store,
    secrets: &SecretBox,
    egress: &EgressPolicy,
    http: &reqwest::Client,
    agent: AgentId,
    version: i64,
) -> Result<AgentRuntime, String> {
    let text = store
        .get_agent_version(agent, version)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("version {version} is missing"))?;
    let def = stored::open(&text, secrets).map_err(|e| e.to_string())?;
    if let Some(problem) = missing_environment(&def) {
        return Err(problem);
    }
    def.check_egress(egress).map_err(|e| e.to_string())?;
    // The builtin backend reads only the newest message; remote ones their context window.
    let history_window = def
        .llm
        .iter()
        .map(|b| match b.kind {
            BackendKind::Builtin => 1,
            _ => b.context_window.unwrap_or(DEFAULT_CONTEXT_WINDOW),
        })
        .max()
        .unwrap_or(1);
    let compiled = parley_engine::agent::compile(def).map_err(|e| e.to_string())?;
    let backends = Backends::build(&compiled, http).map_err(|e| e.to_string())?;
    Ok(AgentRuntime {
        version,
        compiled: Arc::new(compiled),
        backends,
        history_window,
    })
}

/// A running agent as sessions and the API see it.
pub struct RunningAgent {
    pub id: AgentId,
    pub tenant_id: TenantId,
    pub token_hash: RwLock<String>,
    current: RwLock<Arc<AgentRuntime>>,
    actor: RwLock<ActorRef<AgentMsg>>,
    /// When the agent started on this node, and how often its actor was restarted since.
    pub started: std::time::Instant,
    pub restarts: std::sync::atomic::AtomicU32,
}

impl RunningAgent {
    pub fn actor(&self) -> ActorRef<AgentMsg> {
        self.actor.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn current(&self) -> Arc<AgentRuntime> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The runtime of `version`: the current one, or an older one live sessions still use.
    pub async fn version(&self, version: i64) -> NodeResult<Arc<AgentRuntime>> {
        let cur = self.current();
        if cur.version == version {
            return Ok(cur);
        }
        let actor = self.actor.read().unwrap_or_else(|e| e.into_inner()).clone();
        match actor.call(|r| AgentMsg::GetVersion(version, r), None).await {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            _ => Err(NodeError::AgentNotRunning),
        }
    }
}

/// Running agents by id.
#[derive(Default)]
pub struct AgentDirectory {
    running: DashMap<AgentId, Arc<RunningAgent>>,
}

impl AgentDirectory {
    pub fn get(&self, id: &AgentId) -> Option<Arc<RunningAgent>> {
        self.running.get(id).map(|e| e.clone())
    }

    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    /// The running agents, by id.
    pub fn all(&self) -> Vec<Arc<RunningAgent>> {
        let mut all: Vec<_> = self.running.iter().map(|e| e.value().clone()).collect();
        all.sort_by_key(|a| a.id);
        all
    }
}

pub enum AgentMsg {
    GetVersion(i64, RpcReplyPort<NodeResult<Arc<AgentRuntime>>>),
}

/// Holds one running agent's compiled versions.
pub struct AgentActor;

pub struct AgentActorArgs {
    pub agent: AgentId,
    pub store: Arc<dyn Store>,
    pub secrets: SecretBox,
    pub egress: EgressPolicy,
    pub http: reqwest::Client,
    pub first: Arc<AgentRuntime>,
}

pub struct AgentActorState {
    agent: AgentId,
    store: Arc<dyn Store>,
    secrets: SecretBox,
    egress: EgressPolicy,
    http: reqwest::Client,
    versions: HashMap<i64, Arc<AgentRuntime>>,
}

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = AgentActorState;
    type Arguments = AgentActorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut versions = HashMap::new();
        versions.insert(args.first.version, args.first);
        Ok(AgentActorState {
            agent: args.agent,
            store: args.store,
            secrets: args.secrets,
            egress: args.egress,
            http: args.http,
            versions,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMsg::GetVersion(v, reply) => {
                let r = match state.versions.get(&v) {
                    Some(rt) => Ok(rt.clone()),
                    None => match build_runtime(
                        state.store.as_ref(),
                        &state.secrets,
                        &state.egress,
                        &state.http,
                        state.agent,
                        v,
                    )
                    .await
                    {
                        Ok(rt) => {
                            let rt = Arc::new(rt);
                            state.versions.insert(v, rt.clone());
                            Ok(rt)
                        }
                        Err(e) => Err(NodeError::Internal(format!("agent version {v}: {e}"))),
                    },
                };
                let _ = reply.send(r);
            }
        }
        Ok(())
    }
}

pub enum AgentSupMsg {
    /// Start (or keep running) the agent; answers the error reason on failure.
    Start(AgentId, RpcReplyPort<NodeResult<()>>),
    Stop(AgentId, RpcReplyPort<NodeResult<()>>),
    /// The agent got a new version: compile it and make it current if running.
    Reload(AgentId, RpcReplyPort<NodeResult<()>>),
    /// Catch up with changes other nodes of the cluster made in the store: start agents
    /// that run there, stop those stopped or deleted there, load new versions and tokens.
    Sync(RpcReplyPort<()>),
}

pub struct AgentSupervisor;

pub struct AgentSupArgs {
    pub store: Arc<dyn Store>,
    /// Opens the API keys and header values sealed in stored definitions.
    pub secrets: SecretBox,
    pub egress: EgressPolicy,
    pub http: reqwest::Client,
    pub directory: Arc<AgentDirectory>,
    pub events: Arc<EventHub>,
}

pub struct AgentSupState {
    args: AgentSupArgs,
    by_cell: HashMap<ActorId, AgentId>,
}

impl AgentSupState {
    async fn spawn(
        &mut self,
        myself: &ActorRef<AgentSupMsg>,
        agent: AgentId,
        first: Arc<AgentRuntime>,
    ) -> NodeResult<ActorRef<AgentMsg>> {
        let (actor, _) = Actor::spawn_linked(
            None,
            AgentActor,
            AgentActorArgs {
                agent,
                store: self.args.store.clone(),
                secrets: self.args.secrets.clone(),
                egress: self.args.egress.clone(),
                http: self.args.http.clone(),
                first,
            },
            myself.get_cell(),
        )
        .await
        .map_err(|e| NodeError::Internal(format!("spawning agent actor: {e}")))?;
        self.by_cell.insert(actor.get_id(), agent);
        Ok(actor)
    }

    /// Starts the agent here. `announce`: tell customers its status changed (not when this
    /// node merely catches up with an agent already running elsewhere).
    async fn start(
        &mut self,
        myself: &ActorRef<AgentSupMsg>,
        id: AgentId,
        announce: bool,
    ) -> NodeResult<()> {
        if self.args.directory.running.contains_key(&id) {
            return Ok(());
        }
        let store = self.args.store.clone();
        let record = store
            .get_agent(id)
            .await?
            .ok_or(NodeError::NotFound("agent"))?;
        let runtime = match build_runtime(
            store.as_ref(),
            &self.args.secrets,
            &self.args.egress,
            &self.args.http,
            id,
            record.current_version,
        )
        .await
        {
            Ok(rt) => Arc::new(rt),
            Err(reason) => {
                store
                    .set_agent_status(id, AgentStatus::Error, Some(&reason))
                    .await?;
                tracing::warn!(agent = %id, %reason, "agent failed to start");
                return Err(NodeError::StartFailed(reason));
            }
        };
        let actor = self.spawn(myself, id, runtime.clone()).await?;
        self.args.directory.running.insert(
            id,
            Arc::new(RunningAgent {
                id,
                tenant_id: record.tenant_id,
                token_hash: RwLock::new(record.token_hash),
                current: RwLock::new(runtime),
                actor: RwLock::new(actor),
                started: std::time::Instant::now(),
                restarts: std::sync::atomic::AtomicU32::new(0),
            }),
        );
        store
            .set_agent_status(id, AgentStatus::Running, None)
            .await?;
        if announce {
            self.status_event(id, AgentStatus::Running);
        }
        tracing::info!(agent = %id, version = record.current_version, "agent started");
        Ok(())
    }

    /// Stops the agent's actor here, leaving the stored status alone.
    fn stop_here(&mut self, id: AgentId) {
        if let Some((_, running)) = self.args.directory.running.remove(&id) {
            let actor = running
                .actor
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            self.by_cell.remove(&actor.get_id());
            actor.stop(Some("agent stopped".into()));
        }
    }

    async fn sync(&mut self, myself: &ActorRef<AgentSupMsg>) -> NodeResult<()> {
        let records = self.args.store.all_agents().await?;
        let stored: HashMap<AgentId, &AgentRecord> = records.iter().map(|r| (r.id, r)).collect();
        let here: Vec<AgentId> = self
            .args
            .directory
            .running
            .iter()
            .map(|e| *e.key())
            .collect();
        for id in here {
            match stored.get(&id) {
                Some(r) if r.status == AgentStatus::Running => {
                    let Some(running) = self.args.directory.get(&id) else {
                        continue;
                    };
                    let stale_token = *running.token_hash.read().unwrap_or_else(|e| e.into_inner())
                        != r.token_hash;
                    if running.current().version != r.current_version || stale_token {
                        if let Err(e) = self.reload(id).await {
                            tracing::warn!(agent = %id, error = %e, "could not load the agent's new version");
                        }
                    }
                }
                _ => {
                    tracing::info!(agent = %id, "agent stopped or deleted on another node; stopping it here");
                    self.stop_here(id);
                }
            }
        }
        for r in records.iter().filter(|r| r.status == AgentStatus::Running) {
            if !self.args.directory.running.contains_key(&r.id) {
                if let Err(e) = self.start(myself, r.id, false).await {
                    tracing::warn!(agent = %r.id, error = %e, "could not start an agent that runs on another node");
                }
            }
        }
        Ok(())
    }

    async fn stop(&mut self, id: AgentId) -> NodeResult<()> {
        self.stop_here(id);
        if self.args.store.get_agent(id).await?.is_some() {
            self.args
                .store
                .set_agent_status(id, AgentStatus::Stopped, None)
                .await?;
            self.status_event(id, AgentStatus::Stopped);
        }
        Ok(())
    }

    async fn reload(&mut self, id: AgentId) -> NodeResult<()> {
        let Some(running) = self.args.directory.get(&id) else {
            return Ok(());
        };
        let record = self
            .args
            .store
            .get_agent(id)
            .await?
            .ok_or(NodeError::NotFound("agent"))?;
        let rt = build_runtime(
            self.args.store.as_ref(),
            &self.args.secrets,
            &self.args.egress,
            &self.args.http,
            id,
            record.current_version,
        )
        .await
        .map_err(NodeError::Invalid)?;
        *running.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rt);
        *running
            .token_hash
            .write()
            .unwrap_or_else(|e| e.into_inner()) = record.token_hash;
        Ok(())
    }

    fn status_event(&self, agent_id: AgentId, status: AgentStatus) {
        self.args
            .events
            .all_users(|| UserEvent::ConversationBotStatusModified {
                session_id: None,
                agent_id,
                status: status.as_str().to_string(),
            });
    }
}

impl Actor for AgentSupervisor {
    type Msg = AgentSupMsg;
    type State = AgentSupState;
    type Arguments = AgentSupArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(AgentSupState {
            args,
            by_cell: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentSupMsg::Start(id, reply) => {
                let _ = reply.send(state.start(&myself, id, true).await);
            }
            AgentSupMsg::Stop(id, reply) => {
                let _ = reply.send(state.stop(id).await);
            }
            AgentSupMsg::Reload(id, reply) => {
                let _ = reply.send(state.reload(id).await);
            }
            AgentSupMsg::Sync(reply) => {
                if let Err(e) = state.sync(&myself).await {
                    tracing::warn!(error = %e, "could not sync agents with the store");
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    // An agent actor that fails is restarted with the agent's current runtime; ractor's
    // default would stop this supervisor instead.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = &event {
            let Some(id) = state.by_cell.remove(&cell.get_id()) else {
                return Ok(());
            };
            tracing::error!(agent = %id, error = %err, "agent actor failed; restarting it");
            if let Some(running) = state.args.directory.get(&id) {
                let actor = state.spawn(&myself, id, running.current()).await?;
                *running.actor.write().unwrap_or_else(|e| e.into_inner()) = actor;
                running
                    .restarts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                metrics::counter!(parley_engine::telemetry::RESTARTS_TOTAL, "kind" => "agent")
                    .increment(1);
            }
        } else if let SupervisionEvent::ActorTerminated(cell, _, _) = &event {
            state.by_cell.remove(&cell.get_id());
        }
        Ok(())
    }
}
