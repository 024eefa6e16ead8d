//! Moving agents: export to a ZIP (secrets sealed under a key shown once, or left out),
//! import it (into this tenant or another deployment), and copy an agent in place.

use chrono::Utc;
use parley_engine::agent::archive::{self, ArchiveError, ChannelRef, ExportOptions};
use parley_engine::agent::{AgentDefinition, Format};
use parley_engine::model::{AgentId, TenantId};
use parley_engine::store::{AgentChannel, AgentRecord};

use super::agent_ops::to_json;
use super::Node;
use crate::error::{NodeError, NodeResult};

/// An agent made by an import or a copy.
#[derive(Debug, Clone)]
pub struct Transferred {
    pub record: AgentRecord,
    pub definition: AgentDefinition,
    /// The chat API token of a newly created agent (shown once); `None` when an import
    /// replaced an existing agent's configuration.
    pub token: Option<String>,
    /// What could not be carried over, for the operator to fix.
    pub notes: Vec<String>,
    pub secrets_removed: bool,
}

impl Node {
    /// The agent as an archive, and the key that opens its secrets (shown once).
    pub async fn export_agent(
        &self,
        tenant: TenantId,
        id: AgentId,
        options: ExportOptions,
    ) -> NodeResult<(AgentRecord, Vec<u8>, String)> {
        let (record, def) = self.agent(tenant, id).await?;
        let mut channels = Vec::new();
        for c in self.shared.store.agent_channels(id).await? {
            if let Some(conn) = self.shared.store.get_connection(c.connection_id).await? {
                channels.push(ChannelRef {
                    connection_id: c.connection_id,
                    name: conn.name,
                    platform: conn.platform.as_str().to_string(),
                    inbound: c.inbound,
                });
            }
        }
        let (bytes, key) = archive::export(&def, &channels, options, Utc::now());
        Ok((record, bytes, key))
    }

    /// Imports an archive: a new agent, or with the export's `force_update_agent` a new
    /// version of the tenant's agent of the same name. Channels are assigned where the
    /// tenant has the connection; an inbound connection another agent holds is taken over
    /// only with `force_update_integrations`.
    pub async fn import_agent(
        &self,
        tenant: TenantId,
        bytes: &[u8],
        key: &str,
    ) -> NodeResult<Transferred> {
        let imported = archive::import(bytes, key).map_err(|e| match e {
            ArchiveError::WrongKey => NodeError::Invalid(format!("secret_key: {e}")),
            e => NodeError::Invalid(format!("file: {e}")),
        })?;
        let def = imported.definition;
        let text = to_json(&def)?;
        let existing = self
            .list_agents(tenant)
            .await?
            .into_iter()
            .find(|a| a.name == def.name);
        let (record, token) = match existing {
            Some(a) if imported.options.force_update_agent => {
                (self.update_agent(tenant, a.id, &text, Format::Json).await?, None)
            }
            Some(_) => {
                return Err(NodeError::Conflict(format!(
                    "an agent named {:?} exists; export with force_update_agent to replace its configuration",
                    def.name
                )))
            }
            None => {
                let (record, _, token) = self.create_agent(tenant, &text, Format::Json).await?;
                (record, Some(token))
            }
        };
        let mut notes = Vec::new();
        if imported.secrets_removed {
            notes.push(
                "the export left secrets out: enter the LLM API keys and header values again"
                    .to_string(),
            );
        }
        let mut channels = Vec::new();
        for c in &imported.channels {
            let here = self.shared.store.get_connection(c.connection_id).await?;
            if here.is_none_or(|r| r.tenant_id != tenant) {
                notes.push(format!(
                    "connection {:?} ({}) is not in this tenant: not assigned",
                    c.name, c.platform
                ));
                continue;
            }
            let mut inbound = c.inbound;
            if inbound {
                if let Some(holder) = self.shared.store.inbound_agent(c.connection_id).await? {
                    if holder != record.id {
                        if imported.options.force_update_integrations {
                            self.release_inbound(tenant, holder, c.connection_id)
                                .await?;
                        } else {
                            inbound = false;
                            notes.push(format!(
                                "connection {:?} answers to another agent: assigned without inbound",
                                c.name
                            ));
                        }
                    }
                }
            }
            channels.push(AgentChannel {
                connection_id: c.connection_id,
                inbound,
            });
        }
        if !channels.is_empty() {
            self.set_agent_channels(tenant, record.id, channels).await?;
        }
        Ok(Transferred {
            record,
            definition: def,
            token,
            notes,
            secrets_removed: imported.secrets_removed,
        })
    }

    /// Stops `agent` taking the connection's inbound traffic (it keeps the connection).
    async fn release_inbound(
        &self,
        tenant: TenantId,
        agent: AgentId,
        connection: parley_engine::connection::ConnectionId,
    ) -> NodeResult<()> {
        let channels: Vec<AgentChannel> = self
            .shared
            .store
            .agent_channels(agent)
            .await?
            .into_iter()
            .map(|mut c| {
                if c.connection_id == connection {
                    c.inbound = false;
                }
                c
            })
            .collect();
        self.set_agent_channels(tenant, agent, channels).await?;
        Ok(())
    }

    /// A new agent with the same configuration (secrets redacted: enter them again) and
    /// the same channels, less inbound ones (a connection answers to one agent).
    pub async fn copy_agent(
        &self,
        tenant: TenantId,
        id: AgentId,
        name: Option<String>,
    ) -> NodeResult<Transferred> {
        let (_, def) = self.agent(tenant, id).await?;
        let mut copy = def.redacted();
        copy.name = match name {
            Some(n) if !n.trim().is_empty() => n.trim().to_string(),
            _ => format!("{} (copy)", def.name),
        };
        let secrets_removed = copy
            != AgentDefinition {
                name: copy.name.clone(),
                ..def.clone()
            };
        let (record, definition, token) = self
            .create_agent(tenant, &to_json(&copy)?, Format::Json)
            .await?;
        let mut notes = Vec::new();
        if secrets_removed {
            notes.push(
                "secrets were copied redacted: enter the LLM API keys and header values again"
                    .to_string(),
            );
        }
        let mut channels = Vec::new();
        for c in self.shared.store.agent_channels(id).await? {
            if c.inbound {
                let name = self
                    .shared
                    .store
                    .get_connection(c.connection_id)
                    .await?
                    .map_or_else(|| c.connection_id.to_string(), |r| r.name);
                notes.push(format!(
                    "inbound connection {name:?} stays with the original (a connection answers to one agent): not copied"
                ));
            } else {
                channels.push(c);
            }
        }
        if !channels.is_empty() {
            self.set_agent_channels(tenant, record.id, channels).await?;
        }
        Ok(Transferred {
            record,
            definition,
            token: Some(token),
            notes,
            secrets_removed,
        })
    }
}
