//! Agent administration: create, version, start/stop, tokens, delete.

use chrono::Utc;
use parley_engine::agent::{compile, parse_definition, stored, AgentDefinition, Format};
use parley_engine::auth::{generate_secret, hash_secret, verify_secret};
use parley_engine::llm::Backends;
use parley_engine::model::{AgentId, TenantId};
use parley_engine::store::{AgentRecord, AgentStatus, Tenant};
use ractor::rpc::CallResult;
use ractor::RpcReplyPort;
use uuid::Uuid;

use super::Node;
use crate::agents::{missing_environment, AgentSupMsg};
use crate::error::{NodeError, NodeResult};

/// Parses and validates; the definition comes back only when it compiles.
fn checked(text: &str, format: Format) -> NodeResult<AgentDefinition> {
    let def = parse_definition(text, format).map_err(NodeError::InvalidDefinition)?;
    compile(def.clone()).map_err(NodeError::InvalidDefinition)?;
    Ok(def)
}

/// The definition as JSON text, secrets in clear: input for [`Node::create_agent`].
pub(super) fn to_json(def: &AgentDefinition) -> NodeResult<String> {
    serde_json::to_string(def).map_err(|e| NodeError::Internal(e.to_string()))
}

impl Node {
    /// The definition as the store keeps it: its secrets sealed with the master key.
    fn stored(&self, def: &AgentDefinition) -> String {
        stored::seal(def, &self.shared.config.secrets)
    }

    /// Rewrites, sealed, the agent versions older releases stored with their secrets in
    /// clear.
    pub(super) async fn seal_stored_definitions(&self) -> NodeResult<()> {
        let store = &self.shared.store;
        for agent in store.all_agents().await? {
            for version in 1..=agent.current_version {
                let Some(text) = store.get_agent_version(agent.id, version).await? else {
                    continue;
                };
                if stored::is_sealed(&text) {
                    continue;
                }
                // An unreadable version fails where it is used (the agent's status says
                // why); it must not keep the node from starting.
                let def = match stored::open(&text, &self.shared.config.secrets) {
                    Ok(def) => def,
                    Err(e) => {
                        tracing::warn!(agent = %agent.id, version, error = %e, "cannot seal a stored definition");
                        continue;
                    }
                };
                store
                    .set_agent_version_definition(agent.id, version, &self.stored(&def))
                    .await?;
            }
        }
        Ok(())
    }

    async fn agent_sup_call(
        &self,
        make: impl FnOnce(RpcReplyPort<NodeResult<()>>) -> AgentSupMsg,
    ) -> NodeResult<()> {
        match self.shared.agent_supervisor()?.call(make, None).await {
            Ok(CallResult::Success(r)) => r,
            _ => Err(NodeError::Unavailable(
                "agent supervisor unavailable".into(),
            )),
        }
    }

    /// The tenant an admin API key belongs to.
    pub async fn tenant_for_key(&self, key: &str) -> NodeResult<Tenant> {
        self.shared
            .store
            .tenant_by_key_hash(&hash_secret(key))
            .await?
            .ok_or(NodeError::Unauthorized)
    }

    /// Creates an agent (Stopped) from its definition text; returns it with its chat API
    /// token, which is shown only this once.
    pub async fn create_agent(
        &self,
        tenant: TenantId,
        text: &str,
        format: Format,
    ) -> NodeResult<(AgentRecord, AgentDefinition, String)> {
        let def = checked(text, format)?;
        def.check_egress(&self.shared.config.egress)
            .map_err(NodeError::InvalidDefinition)?;
        let token = generate_secret("pat_");
        let now = Utc::now();
        let record = AgentRecord {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            name: def.name.clone(),
            status: AgentStatus::Stopped,
            status_reason: None,
            current_version: 1,
            token_hash: hash_secret(&token),
            created_at: now,
            updated_at: now,
        };
        self.shared
            .store
            .create_agent(&record, &self.stored(&def))
            .await?;
        Ok((record, def, token))
    }

    pub async fn list_agents(&self, tenant: TenantId) -> NodeResult<Vec<AgentRecord>> {
        Ok(self.shared.store.list_agents(tenant).await?)
    }

    /// The agent and its current definition (secrets included: redact before showing).
    pub async fn agent(
        &self,
        tenant: TenantId,
        id: AgentId,
    ) -> NodeResult<(AgentRecord, AgentDefinition)> {
        let record = self.agent_record(tenant, id).await?;
        let text = self
            .shared
            .store
            .get_agent_version(id, record.current_version)
            .await?
            .ok_or_else(|| NodeError::Internal("current agent version is missing".into()))?;
        let def = stored::open(&text, &self.shared.config.secrets)
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        Ok((record, def))
    }

    pub(super) async fn agent_record(
        &self,
        tenant: TenantId,
        id: AgentId,
    ) -> NodeResult<AgentRecord> {
        match self.shared.store.get_agent(id).await? {
            Some(r) if r.tenant_id == tenant => Ok(r),
            _ => Err(NodeError::NotFound("agent")),
        }
    }

    /// Stores a new version. New sessions get it at once (no restart needed); live
    /// sessions keep theirs. A rejected definition changes nothing.
    pub async fn update_agent(
        &self,
        tenant: TenantId,
        id: AgentId,
        text: &str,
        format: Format,
    ) -> NodeResult<AgentRecord> {
        let (record, previous) = self.agent(tenant, id).await?;
        let mut def = parse_definition(text, format).map_err(NodeError::InvalidDefinition)?;
        def.restore_secrets(&previous)
            .map_err(NodeError::InvalidDefinition)?;
        def.check_egress(&self.shared.config.egress)
            .map_err(NodeError::InvalidDefinition)?;
        let compiled = compile(def.clone()).map_err(NodeError::InvalidDefinition)?;
        // A running agent switches to the new version at once, so it must be able to run
        // before it is stored: otherwise the store and the running agent would disagree.
        Backends::build(&compiled, &self.shared.http)
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        if self.shared.agents.get(&id).is_some() {
            if let Some(problem) = missing_environment(&def) {
                return Err(NodeError::Invalid(problem));
            }
        }
        let version = record.current_version + 1;
        self.shared
            .store
            .add_agent_version(id, version, &def.name, &self.stored(&def), Utc::now())
            .await?;
        self.agent_sup_call(|r| AgentSupMsg::Reload(id, r)).await?;
        self.shared.channels.forget_inbound_agents();
        self.agent_record(tenant, id).await
    }

    pub async fn start_agent(&self, tenant: TenantId, id: AgentId) -> NodeResult<AgentRecord> {
        self.agent_record(tenant, id).await?;
        self.agent_sup_call(|r| AgentSupMsg::Start(id, r)).await?;
        self.agent_record(tenant, id).await
    }

    pub async fn stop_agent(&self, tenant: TenantId, id: AgentId) -> NodeResult<AgentRecord> {
        self.agent_record(tenant, id).await?;
        self.agent_sup_call(|r| AgentSupMsg::Stop(id, r)).await?;
        self.agent_record(tenant, id).await
    }

    /// Stops the agent and deletes it with its versions and sessions.
    pub async fn delete_agent(&self, tenant: TenantId, id: AgentId) -> NodeResult<()> {
        self.agent_record(tenant, id).await?;
        self.agent_sup_call(|r| AgentSupMsg::Stop(id, r)).await?;
        self.shared.store.delete_agent(id).await?;
        // Its channels went with it.
        self.shared.channels.forget_inbound_agents();
        Ok(())
    }

    /// Replaces the agent's chat API token; the old one stops working at once.
    pub async fn rotate_token(&self, tenant: TenantId, id: AgentId) -> NodeResult<String> {
        self.agent_record(tenant, id).await?;
        let token = generate_secret("pat_");
        let hash = hash_secret(&token);
        self.shared.store.set_agent_token_hash(id, &hash).await?;
        if let Some(running) = self.shared.agents.get(&id) {
            *running
                .token_hash
                .write()
                .unwrap_or_else(|e| e.into_inner()) = hash;
        }
        Ok(token)
    }

    /// Checks an agent's chat API token; returns the agent's tenant. A running agent is
    /// checked in memory, a stopped one against the store.
    /// The tenant an agent belongs to.
    pub async fn agent_tenant(&self, id: AgentId) -> NodeResult<TenantId> {
        if let Some(running) = self.shared.agents.get(&id) {
            return Ok(running.tenant_id);
        }
        match self.shared.store.get_agent(id).await? {
            Some(r) => Ok(r.tenant_id),
            None => Err(NodeError::NotFound("agent")),
        }
    }

    pub async fn authorize_agent(&self, id: AgentId, token: &str) -> NodeResult<TenantId> {
        if let Some(running) = self.shared.agents.get(&id) {
            let ok = verify_secret(
                token,
                &running.token_hash.read().unwrap_or_else(|e| e.into_inner()),
            );
            return if ok {
                Ok(running.tenant_id)
            } else {
                Err(NodeError::Unauthorized)
            };
        }
        match self.shared.store.get_agent(id).await? {
            None => Err(NodeError::NotFound("agent")),
            Some(r) if verify_secret(token, &r.token_hash) => Ok(r.tenant_id),
            Some(_) => Err(NodeError::Unauthorized),
        }
    }

    /// Starts the agents whose stored status is Running (after a node restart).
    pub(super) async fn resume_agents(&self) -> NodeResult<()> {
        for a in self.shared.store.all_agents().await? {
            if a.status == AgentStatus::Running {
                let id = a.id;
                if let Err(e) = self.agent_sup_call(|r| AgentSupMsg::Start(id, r)).await {
                    tracing::warn!(agent = %id, error = %e, "could not resume agent");
                }
            }
        }
        Ok(())
    }
}
