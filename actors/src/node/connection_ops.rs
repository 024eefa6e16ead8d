//! Platform connections (admin API): create, list, read, change, delete. Secrets are
//! sealed before they reach the store and never leave the node again except to the
//! platform itself.

use std::collections::BTreeMap;

use chrono::Utc;
use parley_connectors::{ConnectorError, PlatformKind};
use parley_engine::agent::{ValidationError, ValidationErrors};
use parley_engine::connection::{
    apply_config, check_egress, check_secrets_follow, public_view, CheckedConfig, ConnectionId,
    ConnectionRecord, ConnectionStatus,
};
use parley_engine::inbound::Platform;
use parley_engine::model::{AgentId, TenantId};
use parley_engine::store::{AgentChannel, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::check_name;
use super::Node;
use crate::error::{NodeError, NodeResult};

/// `POST /api/v1/connections`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConnection {
    pub name: String,
    pub platform: Platform,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub config: Map<String, Value>,
    #[serde(default)]
    pub advanced: Option<Value>,
    #[serde(default)]
    pub rate_limits: Option<Value>,
}

/// `PATCH /api/v1/connections/{id}`: absent fields stay; config fields merge (a secret
/// given is rotated, `null` removes an optional field).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPatch {
    pub name: Option<String>,
    /// Immutable: accepted only when it names the current platform.
    pub platform: Option<Platform>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub config: Option<Map<String, Value>>,
    pub advanced: Option<Value>,
    pub rate_limits: Option<Value>,
}

#[derive(Debug, Clone, Default)]
pub struct ConnectionFilter {
    pub platform: Option<Platform>,
    pub status: Option<ConnectionStatus>,
    /// Part of the name, any case.
    pub q: Option<String>,
}

/// Counts over all the tenant's connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConnectionSummary {
    pub total: usize,
    pub connected: usize,
    pub error: usize,
}

fn check_object(what: &str, v: Option<Value>) -> NodeResult<Value> {
    match v {
        None | Some(Value::Null) => Ok(json!({})),
        Some(v @ Value::Object(_)) => Ok(v),
        Some(_) => Err(NodeError::Invalid(format!("{what}: must be an object"))),
    }
}

/// The connection's rate limits as given, checked against what
/// [`RateLimits`](parley_engine::rate_limits::RateLimits) understands.
fn check_rate_limits(kind: &dyn PlatformKind, v: Option<Value>) -> NodeResult<Value> {
    let v = check_object("rate_limits", v)?;
    parley_engine::rate_limits::RateLimits::parse(kind.rate_limits(), &v)
        .map_err(NodeError::InvalidFields)?;
    Ok(v)
}

/// The registry's entry for `platform`; an unknown one is the caller's mistake.
pub fn platform_kind(platform: Platform) -> NodeResult<&'static dyn PlatformKind> {
    parley_connectors::platform::kind_or_err(platform).map_err(|message| {
        NodeError::InvalidFields(ValidationErrors(vec![ValidationError {
            path: "platform".into(),
            message,
        }]))
    })
}

/// A config validated by its platform's schema and checks.
fn checked_config(
    kind: &dyn PlatformKind,
    current: &CheckedConfig,
    changes: &Map<String, Value>,
) -> NodeResult<CheckedConfig> {
    let next = apply_config(kind.platform(), kind.fields(), current, changes)
        .map_err(NodeError::InvalidFields)?;
    let errors = kind.check_config(&next);
    if errors.is_empty() {
        Ok(next)
    } else {
        Err(NodeError::InvalidFields(ValidationErrors(errors)))
    }
}

/// What a connection's sealed secrets are bound to: they open for this connection only.
fn secrets_context(id: ConnectionId) -> String {
    format!("connection:{id}")
}

impl Node {
    pub(crate) fn open_config(&self, r: &ConnectionRecord) -> NodeResult<CheckedConfig> {
        let secrets = self
            .shared
            .config
            .secrets
            .open_bound(&r.secrets_sealed, &secrets_context(r.id))
            .map_err(|e| NodeError::Internal(format!("connection {}: {e}", r.id)))?;
        let secrets: BTreeMap<String, String> = serde_json::from_str(&secrets)
            .map_err(|e| NodeError::Internal(format!("connection {}: secrets: {e}", r.id)))?;
        Ok(CheckedConfig {
            public: r.config.clone(),
            secrets,
        })
    }

    fn seal(&self, id: ConnectionId, secrets: &BTreeMap<String, String>) -> NodeResult<String> {
        let json =
            serde_json::to_string(secrets).map_err(|e| NodeError::Internal(e.to_string()))?;
        Ok(self
            .shared
            .config
            .secrets
            .seal_bound(&json, &secrets_context(id)))
    }

    /// The connection as operators see it: secrets replaced by `<name>_set` flags.
    pub fn connection_json(&self, r: &ConnectionRecord) -> NodeResult<Value> {
        let config = self.open_config(r)?;
        Ok(json!({
            "id": r.id,
            "name": r.name,
            "platform": r.platform,
            "description": r.description,
            "enabled": r.enabled,
            "status": r.status.as_str(),
            "status_error": r.status_error,
            "status_at": r.status_at.to_rfc3339(),
            "config": public_view(platform_kind(r.platform)?.fields(), &config),
            "advanced": r.advanced,
            "rate_limits": r.rate_limits,
            "inbound_url": format!("/hooks/{}", r.id),
            "created_at": r.created_at.to_rfc3339(),
            "updated_at": r.updated_at.to_rfc3339(),
        }))
    }

    async fn name_taken(
        &self,
        tenant: TenantId,
        name: &str,
        except: Option<ConnectionId>,
    ) -> NodeResult<()> {
        let taken = self
            .shared
            .store
            .list_connections(tenant)
            .await?
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(name) && Some(c.id) != except);
        if taken {
            return Err(NodeError::Conflict(format!(
                "a connection named {name:?} exists already"
            )));
        }
        Ok(())
    }

    pub async fn create_connection(
        &self,
        tenant: TenantId,
        req: NewConnection,
    ) -> NodeResult<ConnectionRecord> {
        let name = check_name(&req.name)?;
        let empty = CheckedConfig {
            public: Map::new(),
            secrets: BTreeMap::new(),
        };
        let kind = platform_kind(req.platform)?;
        let config = checked_config(kind, &empty, &req.config)?;
        check_egress(kind.fields(), &config, &self.shared.config.egress)
            .map_err(NodeError::InvalidFields)?;
        let advanced = check_object("advanced", req.advanced)?;
        let rate_limits = check_rate_limits(kind, req.rate_limits)?;
        self.name_taken(tenant, &name, None).await?;
        let now = Utc::now();
        let id = uuid::Uuid::now_v7();
        let record = ConnectionRecord {
            id,
            tenant_id: tenant,
            name,
            platform: req.platform,
            description: req.description,
            enabled: req.enabled,
            status: ConnectionStatus::Active,
            status_error: None,
            status_at: now,
            secrets_sealed: self.seal(id, &config.secrets)?,
            config: config.public,
            advanced,
            rate_limits,
            created_at: now,
            updated_at: now,
        };
        self.shared.store.put_connection(&record).await?;
        self.setup_soon(&record);
        Ok(record)
    }

    pub async fn connection(
        &self,
        tenant: TenantId,
        id: ConnectionId,
    ) -> NodeResult<ConnectionRecord> {
        match self.shared.store.get_connection(id).await? {
            // Another tenant's connection is "not found", so ids do not leak.
            Some(c) if c.tenant_id == tenant => Ok(c),
            _ => Err(NodeError::NotFound("connection")),
        }
    }

    pub async fn list_connections(
        &self,
        tenant: TenantId,
        filter: &ConnectionFilter,
    ) -> NodeResult<(Vec<ConnectionRecord>, ConnectionSummary)> {
        let all = self.shared.store.list_connections(tenant).await?;
        let summary = ConnectionSummary {
            total: all.len(),
            connected: all
                .iter()
                .filter(|c| c.status == ConnectionStatus::Connected)
                .count(),
            error: all
                .iter()
                .filter(|c| c.status == ConnectionStatus::Error)
                .count(),
        };
        let q = filter.q.as_deref().map(str::to_lowercase);
        let shown = all
            .into_iter()
            .filter(|c| filter.platform.is_none_or(|p| c.platform == p))
            .filter(|c| filter.status.is_none_or(|s| c.status == s))
            .filter(|c| {
                q.as_deref()
                    .is_none_or(|q| c.name.to_lowercase().contains(q))
            })
            .collect();
        Ok((shown, summary))
    }

    pub async fn update_connection(
        &self,
        tenant: TenantId,
        id: ConnectionId,
        patch: ConnectionPatch,
    ) -> NodeResult<ConnectionRecord> {
        let mut r = self.connection(tenant, id).await?;
        if patch.platform.is_some_and(|p| p != r.platform) {
            return Err(NodeError::Invalid(
                "platform: cannot be changed; create a new connection".into(),
            ));
        }
        if let Some(name) = &patch.name {
            let name = check_name(name)?;
            self.name_taken(tenant, &name, Some(id)).await?;
            r.name = name;
        }
        if let Some(d) = patch.description {
            r.description = Some(d).filter(|d| !d.is_empty());
        }
        if let Some(e) = patch.enabled {
            r.enabled = e;
        }
        if let Some(changes) = &patch.config {
            let current = self.open_config(&r)?;
            let kind = platform_kind(r.platform)?;
            let next = checked_config(kind, &current, changes)?;
            check_egress(kind.fields(), &next, &self.shared.config.egress)
                .map_err(NodeError::InvalidFields)?;
            check_secrets_follow(kind.fields(), &current, &next, changes)
                .map_err(NodeError::InvalidFields)?;
            r.secrets_sealed = self.seal(r.id, &next.secrets)?;
            r.config = next.public;
        }
        if patch.advanced.is_some() {
            r.advanced = check_object("advanced", patch.advanced)?;
        }
        if patch.rate_limits.is_some() {
            r.rate_limits = check_rate_limits(platform_kind(r.platform)?, patch.rate_limits)?;
        }
        r.updated_at = Utc::now();
        self.shared.store.put_connection(&r).await?;
        if patch.config.is_some() && self.shared.channels.get(&id).is_none() {
            self.setup_soon(&r);
        }
        self.connection_changed(&r).await?;
        self.connection(tenant, id).await
    }

    /// Checks a connection with a real call to its platform (Telegram getMe, Discord
    /// /users/@me, Slack auth.test, WhatsApp phone-number lookup, Teams token, a signed
    /// webhook test event). Answers what the platform said; never a secret.
    pub async fn test_connection(&self, tenant: TenantId, id: ConnectionId) -> NodeResult<Value> {
        let r = self.connection(tenant, id).await?;
        let rt = self.runtime(&r).map_err(NodeError::Invalid)?;
        let outcome = match rt.channel.check().await {
            Err(ConnectorError::Config(m)) => return Err(NodeError::Invalid(m)),
            other => other,
        };
        Ok(match outcome {
            Ok(detail) => json!({"ok": true, "platform": r.platform, "detail": detail}),
            Err(e) => json!({"ok": false, "platform": r.platform, "error": e.to_string()}),
        })
    }

    /// Replaces the connections an agent talks on. Every connection must be the tenant's;
    /// a connection answers to one inbound agent at most (Conflict otherwise).
    pub async fn set_agent_channels(
        &self,
        tenant: TenantId,
        agent: AgentId,
        channels: Vec<AgentChannel>,
    ) -> NodeResult<Vec<AgentChannel>> {
        self.agent(tenant, agent).await?;
        let mut errors = Vec::new();
        for (i, c) in channels.iter().enumerate() {
            let path = format!("[{i}].connection_id");
            if channels[..i]
                .iter()
                .any(|p| p.connection_id == c.connection_id)
            {
                errors.push(ValidationError {
                    path,
                    message: "listed twice".into(),
                });
            } else if !matches!(self.shared.store.get_connection(c.connection_id).await?, Some(r) if r.tenant_id == tenant)
            {
                errors.push(ValidationError {
                    path,
                    message: "no such connection".into(),
                });
            }
        }
        if !errors.is_empty() {
            return Err(NodeError::InvalidFields(ValidationErrors(errors)));
        }
        self.shared.channels.forget_targets();
        match self.shared.store.set_agent_channels(agent, &channels).await {
            Err(StoreError::Conflict(_)) => return Err(NodeError::Conflict(
                "a connection listed as inbound already takes inbound traffic for another agent"
                    .into(),
            )),
            other => other?,
        }
        self.shared.channels.forget_inbound_agents();
        self.agent_channels(tenant, agent).await
    }

    pub async fn agent_channels(
        &self,
        tenant: TenantId,
        agent: AgentId,
    ) -> NodeResult<Vec<AgentChannel>> {
        self.agent(tenant, agent).await?;
        Ok(self.shared.store.agent_channels(agent).await?)
    }

    pub async fn delete_connection(&self, tenant: TenantId, id: ConnectionId) -> NodeResult<()> {
        self.connection(tenant, id).await?;
        if self.shared.channels.get(&id).is_some() {
            self.stop_connection(tenant, id).await?;
        }
        self.shared.channels.forget_targets();
        self.shared.store.delete_connection(id).await?;
        self.shared.channels.forget_inbound_agents();
        Ok(())
    }
}
