//! Connections at work (admin API and hooks): start, stop and retry a connection, read
//! its event log, take platform deliveries, send WhatsApp templates, set up Discord's
//! slash command.

use std::sync::Arc;

use parley_connectors::{ConnectorError, Delivery};
use parley_engine::connection::{ConnectionId, ConnectionRecord, ConnectionStatus};
use parley_engine::inbound::Platform;
use parley_engine::model::{SessionId, TenantId};
use parley_engine::store::ConnectionEvent;
use ractor::rpc::CallResult;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Node;
use crate::channels::hooks::{self, HookAnswer, HookRequest};
use crate::channels::outbound::Urgency;
use crate::channels::{
    chat_key, set_status, ChannelRuntime, ChannelSupMsg, PlatformRuntime, RunningChannel,
    CLUSTER_TTL,
};
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
        parley_engine::connection::check_egress(&config, &self.shared.config.egress)
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

    /// What starting a connection asks of its platform: Telegram setWebhook (or
    /// deleteWebhook before polling), Discord's slash command, a credentials check
    /// elsewhere.
    async fn activate(&self, rt: &ChannelRuntime) -> Result<(), String> {
        match &rt.platform {
            PlatformRuntime::Telegram {
                client,
                secret_token,
                polling,
                ..
            } => {
                if *polling {
                    return client.delete_webhook().await.map_err(platform_error);
                }
                let Some(base) = self.shared.config.public_url.as_deref() else {
                    return Err("webhook mode needs the address Telegram can reach this server at: start it with --public-url (PARLEY_PUBLIC_URL), or use mode polling".into());
                };
                let url = format!("{}/hooks/{}", base.trim_end_matches('/'), rt.id);
                client
                    .set_webhook(&url, secret_token, &["message"])
                    .await
                    .map_err(platform_error)
            }
            PlatformRuntime::Discord { .. } => self.overwrite_command(rt).await,
            PlatformRuntime::Slack { client, .. } => {
                client.auth_test().await.map(drop).map_err(platform_error)
            }
            PlatformRuntime::Whatsapp { client, .. } => client
                .phone_number(rt.first_number())
                .await
                .map(drop)
                .map_err(platform_error),
            PlatformRuntime::Teams { client, .. } => {
                client.check_credentials().await.map_err(platform_error)
            }
            PlatformRuntime::Webhook { .. } => Ok(()),
        }
    }

    async fn overwrite_command(&self, rt: &ChannelRuntime) -> Result<(), String> {
        let PlatformRuntime::Discord {
            client,
            handle,
            guild_id,
            ..
        } = &rt.platform
        else {
            return Err("not a Discord connection".into());
        };
        let description = format!("Ask {}", rt.record.name);
        let description: String = description.chars().take(100).collect();
        client
            .overwrite_commands(guild_id.as_deref(), handle, &description)
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

    /// Stops the connection (Telegram: its webhook is deleted); it is Disconnected.
    pub async fn stop_connection(
        &self,
        tenant: TenantId,
        id: ConnectionId,
    ) -> NodeResult<ConnectionRecord> {
        let r = self.connection(tenant, id).await?;
        self.stop_channel(id).await?;
        if let Ok(rt) = self.runtime(&r) {
            if let PlatformRuntime::Telegram {
                client,
                polling: false,
                ..
            } = &rt.platform
            {
                if let Err(e) = client.delete_webhook().await {
                    tracing::warn!(connection = %id, error = %e, "could not delete the Telegram webhook");
                }
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

    /// Bulk-overwrites the Discord application's commands with the connection's handle.
    pub async fn setup_discord(&self, tenant: TenantId, id: ConnectionId) -> NodeResult<Value> {
        let r = self.connection(tenant, id).await?;
        if r.platform != Platform::Discord {
            return Err(NodeError::Invalid(
                "setup is for Discord connections (it registers the slash command)".into(),
            ));
        }
        let rt = self.runtime(&r).map_err(NodeError::Invalid)?;
        let PlatformRuntime::Discord { handle, .. } = &rt.platform else {
            return Err(NodeError::Internal(
                "a Discord connection without Discord settings".into(),
            ));
        };
        let handle = handle.clone();
        match self.overwrite_command(&rt).await {
            Ok(()) => Ok(json!({"ok": true, "command": handle})),
            Err(e) => Ok(json!({"ok": false, "error": e})),
        }
    }

    /// An enabled Discord connection created or changed registers its slash command in
    /// the background (the outcome goes to its event log); creating it does not wait on
    /// Discord. A disabled one sends nothing.
    pub(crate) fn setup_discord_soon(&self, r: &ConnectionRecord) {
        if r.platform != Platform::Discord || !r.enabled {
            return;
        }
        let (node, r) = (self.clone(), r.clone());
        tokio::spawn(async move {
            let Ok(rt) = node.runtime(&r) else {
                return;
            };
            let detail = match node.overwrite_command(&rt).await {
                Ok(()) => json!({"ok": true}),
                Err(e) => json!({"ok": false, "error": e}),
            };
            crate::channels::log_connection_event(&node.shared, &rt, "setup", detail).await;
        });
    }

    /// Sends an approved WhatsApp template through the connection's outbound queue.
    pub async fn send_template(
        &self,
        tenant: TenantId,
        id: ConnectionId,
        req: TemplateSend,
    ) -> NodeResult<Value> {
        let r = self.connection(tenant, id).await?;
        if r.platform != Platform::Whatsapp {
            return Err(NodeError::Invalid(
                "templates are sent on WhatsApp connections".into(),
            ));
        }
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
        let PlatformRuntime::Whatsapp {
            client, numbers, ..
        } = &rt.platform
        else {
            return Err(NodeError::Internal(
                "a WhatsApp connection without WhatsApp settings".into(),
            ));
        };
        let from = numbers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pick(&req.to, req.phone_number_id.as_deref())
            .to_string();
        let sent = rt
            .outbound
            .send(Some(&from), Urgency::Must, || {
                client.send_template(
                    &from,
                    &req.to,
                    &req.name,
                    &req.language,
                    req.components.clone(),
                )
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

    /// A platform delivery to `POST|GET /hooks/{id}`.
    pub async fn receive_hook(&self, id: ConnectionId, req: HookRequest) -> HookAnswer {
        match self.running_channel(id).await {
            Ok(running) => hooks::receive(&self.shared, &running, req).await,
            Err(answer) => answer,
        }
    }

    /// In a cluster: the session a verified delivery's chat talks in, if it has one, so the
    /// HTTP layer can hand the delivery to the node that owns that session (its turns and
    /// their order stay in one place). None on a node alone, or for a chat without a
    /// session yet, or a delivery that does not verify (refused where it landed).
    pub async fn hook_session(&self, id: ConnectionId, req: &HookRequest) -> Option<SessionId> {
        if !self.shared.registry.clustered() || req.get {
            return None;
        }
        let running = self.running_channel(id).await.ok()?;
        let deliveries = hooks::verify(&running.rt, req).await.ok()?;
        let msg = deliveries.into_iter().find_map(|d| match d {
            Delivery::Message(m) => Some(m),
            _ => None,
        })?;
        let key = chat_key(&running.rt, &msg);
        let current = self.shared.store.channel_session(id, &key).await.ok()??;
        Some(current.session_id)
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
