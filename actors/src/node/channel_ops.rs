//! Connections at work (admin API and hooks): start, stop and retry a connection, read
//! its event log, take platform deliveries, send message templates, run a platform's
//! set-up step (Discord's slash command).

use std::sync::Arc;

use parley_connectors::{Activation, ConnectorError, Template};
use parley_engine::connection::{ConnectionId, ConnectionRecord, ConnectionStatus};
use parley_engine::inbound::InboundMessage;
use parley_engine::model::TenantId;
use parley_engine::store::ConnectionEvent;
use ractor::rpc::CallResult;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Node;
use crate::channels::hooks::{self, HookAnswer, HookRequest, Recorded, Relay};
use crate::channels::outbound::Urgency;
use crate::channels::{set_status, ChannelRuntime, ChannelSupMsg, RunningChannel, CLUSTER_TTL};
use crate::error::{NodeError, NodeResult};

/// Most events one page of a connection's event log holds.
pub const MAX_EVENTS_PAGE: u32 = 500;

/// `POST /api/v1/connections/{id}/templates/send`: an approved WhatsApp template, the
/// only message allowed outside a customer's 24-hour window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSend {
    /// The customer's phone number (WhatsApp id).
    pub to: String,
    pub name: String,
    pub language: String,
    #[serde(default)]
    pub components: Value,
    /// The business number to send from; default: the customer's number, else rotation.
    pub phone_number_id: Option<String>,
}

fn platform_error(e: ConnectorError) -> String {
    e.to_string()
}

impl Node {
    fn channel_supervisor(&self) -> NodeResult<ractor::ActorRef<ChannelSupMsg>> {
        self.shared
            .channels
            .supervisor()
            .ok_or_else(|| NodeError::Unavailable("the channel supervisor is not running".into()))
    }

    pub(super) fn runtime(&self, r: &ConnectionRecord) -> Result<ChannelRuntime, String> {
        let config = self.open_config(r).map_err(|e| e.to_string())?;
        // Checked again here: the policy may be stricter than when the URL was stored.
        let kind = parley_connectors::platform::kind_or_err(r.platform)?;
        parley_engine::connection::check_egress(kind.fields(), &config, &self.shared.config.egress)
            .map_err(|e| e.to_string())?;
        ChannelRuntime::build(r.clone(), &config, &self.shared.http)
    }

    /// Runs the connection's actor with `rt` (replacing a running one).
    async fn run_channel(&self, rt: ChannelRuntime) -> NodeResult<()> {
        let sup = self.channel_supervisor()?;
        match sup
            .call(|r| ChannelSupMsg::Start(Arc::new(rt), r), None)
            .await
        {
            Ok(CallResult::Success(Ok(()))) => Ok(()),
            Ok(CallResult::Success(Err(e))) => Err(NodeError::Internal(e)),
            _ => Err(NodeError::Unavailable(
                "the channel supervisor did not answer".into(),
            )),
        }
    }

    async fn stop_channel(&self, id: ConnectionId) -> NodeResult<()> {
        let sup = self.channel_supervisor()?;
        sup.call(|r| ChannelSupMsg::Stop(id, Some(r)), None)
            .await
            .map_err(|e| NodeError::Unavailable(format!("the channel supervisor: {e}")))?;
        Ok(())
    }

    /// What the platform is told when the connection starts.
    fn activation<'r>(&self, rt: &'r ChannelRuntime) -> Activation<'r> {
        Activation {
            hook_url: self
                .shared
                .config
                .public_url
                .as_deref()
                .map(|base| format!("{}/hooks/{}", base.trim_end_matches('/'), rt.id)),
            name: &rt.record.name,
        }
    }

    /// What starting a connection asks of its platform (register the hook, a credentials
    /// check).
    async fn activate(&self, rt: &ChannelRuntime) -> Result<(), String> {
        rt.channel
            .activate(&self.activation(rt))
            .await
            .map_err(platform_error)
    }

    /// Starts the connection: its platform is set up, then its actor runs here. A
    /// platform that refuses puts it in Error, with the reason.
    pub async fn start_connection(
        &self,
        tenant: TenantId,
        id: ConnectionId,
    ) -> NodeResult<ConnectionRecord> {
        let r = self.connection(tenant, id).await?;
        if !r.enabled {
            return Err(NodeError::Conflict(
                "the connection is disabled; enable it first (PATCH {\"enabled\": true})".into(),
            ));
        }
        let started = match self.runtime(&r) {
            Err(reason) => Err(reason),
            Ok(rt) => match self.activate(&rt).await {
                Err(reason) => Err(reason),
                Ok(()) => self.run_channel(rt).await.map_err(|e| e.to_string()),
            },
        };
        match started {
            Ok(()) => set_status(&self.shared, id, ConnectionStatus::Connected, None).await,
            Err(reason) => {
                self.stop_channel(id).await?;
                set_status(&self.shared, id, ConnectionStatus::Error, Some(reason)).await;
            }
        }
        self.connection(tenant, id).await
    }

    /// Stops the connection (the platform is told: Telegram deletes its webhook); it is
    /// Disconnected.
    pub async fn stop_connection(
        &self,
        tenant: TenantId,
        id: ConnectionId,
    ) -> NodeResult<ConnectionRecord> {
        let r = self.connection(tenant, id).await?;
        self.stop_channel(id).await?;
        if let Ok(rt) = self.runtime(&r) {
            if let Err(e) = rt.channel.deactivate().await {
                tracing::warn!(connection = %id, error = %e, "could not tell the platform the connection stopped");
            }
        }
        set_status(&self.shared, id, ConnectionStatus::Disconnected, None).await;
        self.connection(tenant, id).await
    }

    /// Starts an Error or Disconnected connection again.
    pub async fn retry_connection(
        &self,
        tenant: TenantId,
        id: ConnectionId,
    ) -> NodeResult<ConnectionRecord> {
        self.start_connection(tenant, id).await
    }

    /// Applies a changed connection to its running actor: disabled stops it, other
    /// changes start it again with the new settings.
    pub(crate) async fn connection_changed(&self, r: &ConnectionRecord) -> NodeResult<()> {
        self.shared.channels.forget_targets();
        if self.shared.channels.get(&r.id).is_none() {
            return Ok(());
        }
        if r.enabled {
            self.start_connection(r.tenant_id, r.id).await?;
        } else {
            self.stop_connection(r.tenant_id, r.id).await?;
        }
        Ok(())
    }

    /// The connection's event log, newest first.
    pub async fn connection_events(
        &self,
        tenant: TenantId,
        id: ConnectionId,
        before: Option<i64>,
        limit: u32,
    ) -> NodeResult<Vec<ConnectionEvent>> {
        self.connection(tenant, id).await?;
        Ok(self
            .shared
            .store
            .connection_events(id, before, limit.clamp(1, MAX_EVENTS_PAGE))
            .await?)
    }

    /// Runs the platform's set-up step again (Discord: overwrites the application's
    /// commands with the connection's handle). Answers what the platform said.
    pub async fn setup_connection(&self, tenant: TenantId, id: ConnectionId) -> NodeResult<Value> {
        let r = self.connection(tenant, id).await?;
        let rt = self.runtime(&r).map_err(NodeError::Invalid)?;
        match rt.channel.setup(&self.activation(&rt)).await {
            None => Err(NodeError::Invalid(format!(
                "{} connections have no set-up step",
                r.platform
            ))),
            Some(Ok(detail)) => {
                let mut out = json!({"ok": true});
                if let (Some(out), Value::Object(detail)) = (out.as_object_mut(), detail) {
                    out.extend(detail);
                }
                Ok(out)
            }
            Some(Err(e)) => Ok(json!({"ok": false, "error": e.to_string()})),
        }
    }

    /// An enabled connection whose platform sets up on change (Discord's slash command),
    /// created or changed, runs its set-up in the background (the outcome goes to its
    /// event log); creating it does not wait on the platform. A disabled one sends
    /// nothing.
    pub(crate) fn setup_soon(&self, r: &ConnectionRecord) {
        if !r.enabled {
            return;
        }
        let (node, r) = (self.clone(), r.clone());
        tokio::spawn(async move {
            let Ok(rt) = node.runtime(&r) else {
                return;
            };
            if !rt.channel.sets_up_on_change() {
                return;
            }
            let Some(outcome) = rt.channel.setup(&node.activation(&rt)).await else {
                return;
            };
            let detail = match outcome {
                Ok(_) => json!({"ok": true}),
                Err(e) => json!({"ok": false, "error": e.to_string()}),
            };
            crate::channels::log_connection_event(&node.shared, &rt, "setup", detail).await;
        });
    }

    /// Sends an approved template (WhatsApp) through the connection's outbound queue.
    pub async fn send_template(
        &self,
        tenant: TenantId,
        id: ConnectionId,
        req: TemplateSend,
    ) -> NodeResult<Value> {
        let r = self.connection(tenant, id).await?;
        if !r.enabled {
            return Err(NodeError::Conflict("the connection is disabled".into()));
        }
        for (field, v) in [
            ("to", &req.to),
            ("name", &req.name),
            ("language", &req.language),
        ] {
            if v.trim().is_empty() {
                return Err(NodeError::Invalid(format!("{field}: must not be empty")));
            }
        }
        let running = self.shared.channels.get(&id);
        let rt = match &running {
            Some(r) => r.rt.clone(),
            None => Arc::new(self.runtime(&r).map_err(NodeError::Invalid)?),
        };
        let to = rt
            .channel
            .chat_target(&req.to, None, req.phone_number_id.as_deref())
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        let template = Template {
            name: req.name.clone(),
            language: req.language.clone(),
            components: req.components.clone(),
        };
        let from = to.from.clone();
        let sent = rt
            .outbound
            .send(to.lane.as_deref(), Urgency::Must, || {
                rt.channel.send_template(&to, &template)
            })
            .await;
        let detail = json!({"to": req.to, "template": req.name, "phone_number_id": from});
        match sent {
            Ok(Some(s)) => {
                crate::channels::log_connection_event(
                    &self.shared,
                    &rt,
                    "template",
                    json!({"message_id": s.message_id, "detail": detail}),
                )
                .await;
                Ok(json!({"ok": true, "message_id": s.message_id, "phone_number_id": from}))
            }
            Ok(None) => Err(NodeError::Unavailable("the send was not made".into())),
            Err(ConnectorError::Unsupported(m)) => Err(NodeError::Invalid(m)),
            Err(e) => {
                crate::channels::log_connection_event(
                    &self.shared,
                    &rt,
                    "error",
                    json!({"error": e.to_string(), "detail": detail}),
                )
                .await;
                Err(NodeError::Upstream(e.to_string()))
            }
        }
    }

    /// The connection's actor here; one started elsewhere (another node, or before this
    /// node restarted) is started here too. Err: what to answer the platform.
    async fn running_channel(&self, id: ConnectionId) -> Result<Arc<RunningChannel>, HookAnswer> {
        // Disabling or deleting a connection on this node stops it here; another node's
        // doing so is checked for every so often.
        if let Some(running) = self.shared.channels.get(&id) {
            if !self.shared.registry.clustered() || running.checked_within(CLUSTER_TTL) {
                return Ok(running);
            }
        }
        let r = match self.shared.store.get_connection(id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(hooks::not_found()),
            Err(e) => return Err(hooks::unavailable(e.to_string())),
        };
        if !r.enabled {
            return Err(hooks::disabled(r.platform.as_str()));
        }
        if let Some(running) = self.shared.channels.get(&id) {
            running.checked();
            return Ok(running);
        }
        if r.status != ConnectionStatus::Connected {
            return Err(hooks::not_started(r.status));
        }
        match self.runtime(&r) {
            Ok(rt) => {
                if let Err(e) = self.run_channel(rt).await {
                    return Err(hooks::unavailable(e.to_string()));
                }
            }
            Err(reason) => {
                set_status(
                    &self.shared,
                    id,
                    ConnectionStatus::Error,
                    Some(reason.clone()),
                )
                .await;
                return Err(hooks::unavailable(reason));
            }
        }
        self.shared
            .channels
            .get(&id)
            .ok_or_else(|| hooks::not_started(r.status))
    }

    /// A platform delivery to `POST|GET /hooks/{id}`: verified here, its customer messages
    /// recorded here or handed to the nodes that own their chats' sessions by `relay`.
    pub async fn receive_hook(
        &self,
        id: ConnectionId,
        req: HookRequest,
        relay: &impl Relay,
    ) -> HookAnswer {
        match self.running_channel(id).await {
            Ok(running) => hooks::receive(&self.shared, &running, req, relay).await,
            Err(answer) => answer,
        }
    }

    /// The connection that customer messages another node handed over are recorded on
    /// (started here if it runs elsewhere). Err: what to answer that node.
    pub async fn handover_channel(
        &self,
        id: ConnectionId,
    ) -> Result<Arc<RunningChannel>, HookAnswer> {
        self.running_channel(id).await
    }

    /// Records customer messages another node verified (see [`Relay`]).
    pub async fn accept_handed_over(
        &self,
        running: &RunningChannel,
        messages: Vec<InboundMessage>,
    ) -> Vec<Recorded> {
        hooks::accept_handed_over(&self.shared, running, messages).await
    }

    /// Starts the actors of the connections that were running when the node stopped.
    pub(crate) async fn resume_channels(&self) -> NodeResult<()> {
        for tenant in self.shared.store.list_tenants().await? {
            for r in self.shared.store.list_connections(tenant.id).await? {
                if !r.enabled || r.status != ConnectionStatus::Connected {
                    continue;
                }
                match self.runtime(&r) {
                    Ok(rt) => self.run_channel(rt).await?,
                    Err(reason) => {
                        set_status(&self.shared, r.id, ConnectionStatus::Error, Some(reason)).await
                    }
                }
            }
        }
        Ok(())
    }
}
