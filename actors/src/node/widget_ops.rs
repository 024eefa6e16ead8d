//! Agents' web widgets: their settings (admin), what a page may read of them, and the
//! conversations of their visitors — each visitor reaches only its own sessions of the
//! widget's agent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use parley_engine::model::{AgentId, AttachmentMeta, Session, SessionId, TenantId};
use parley_engine::widget::{
    new_widget_id, SecretChange, WidgetRecord, WidgetSecrets, WidgetSettings, WidgetUpdate,
};

use super::session_ops::{Conversation, CreateSession};
use super::Node;
use crate::error::{NodeError, NodeResult};

/// How long a node serves a widget as last read before reading it again: a change made on
/// another node of a cluster reaches pages within this (this node's own changes at once).
const WIDGET_TTL: Duration = Duration::from_secs(2);
/// Widgets kept in the cache at most (past it the oldest half is dropped).
const WIDGET_CACHE: usize = 10_000;
/// Longest transcription a speech-to-text backend may take.
const STT_TIMEOUT: Duration = Duration::from_secs(30);

/// A widget as its public routes need it: the record and the agent's name and greeting.
#[derive(Debug, Clone)]
pub struct PublicWidget {
    pub record: WidgetRecord,
    pub agent_name: String,
    pub agent_greeting: Option<String>,
}

/// The context a widget secret is sealed for: one agent, one field.
fn secret_context(agent: AgentId, field: &str) -> String {
    format!("widget:{agent}:{field}")
}

impl Node {
    /// The agent's widget; one never configured answers its defaults (no public id yet).
    pub async fn widget_settings(
        &self,
        tenant: TenantId,
        agent: AgentId,
    ) -> NodeResult<Option<WidgetRecord>> {
        self.agent_record(tenant, agent).await?;
        Ok(self.shared.store.widget_of_agent(agent).await?)
    }

    /// Replaces the agent's widget settings; secrets given are sealed, absent ones kept.
    pub async fn put_widget(
        &self,
        tenant: TenantId,
        agent: AgentId,
        update: WidgetUpdate,
    ) -> NodeResult<WidgetRecord> {
        self.agent_record(tenant, agent).await?;
        let (settings, identity, stt_key) = update.checked().map_err(NodeError::Invalid)?;
        if let Some(url) = &settings.voice.stt_base_url {
            self.shared
                .config
                .egress
                .check_url(url)
                .map_err(|e| NodeError::Invalid(format!("voice.stt_base_url: {e}")))?;
        }
        let store = &self.shared.store;
        let old = store.widget_of_agent(agent).await?;
        let secrets = old.as_ref().map(|w| w.secrets.clone()).unwrap_or_default();
        let seal = |change: SecretChange, current: Option<String>, field: &str| match change {
            SecretChange::Keep => current,
            SecretChange::Remove => None,
            SecretChange::Set(s) => Some(
                self.shared
                    .config
                    .secrets
                    .seal_bound(&s, &secret_context(agent, field)),
            ),
        };
        let secrets = WidgetSecrets {
            identity_secret: seal(identity, secrets.identity_secret, "identity_secret"),
            stt_api_key: seal(stt_key, secrets.stt_api_key, "stt_api_key"),
        };
        if settings.identity_verification && secrets.identity_secret.is_none() {
            return Err(NodeError::Invalid(
                "identity_verification.secret: required when identity verification is on".into(),
            ));
        }
        let record = WidgetRecord {
            agent_id: agent,
            tenant_id: tenant,
            widget_id: old.map_or_else(new_widget_id, |w| w.widget_id),
            settings,
            secrets,
            updated_at: Utc::now(),
        };
        store.put_widget(&record).await?;
        self.shared.widgets.remove(&record.widget_id);
        Ok(record)
    }

    /// The widget a page names, as last read (see [`WIDGET_TTL`]).
    pub async fn public_widget(&self, widget_id: &str) -> NodeResult<Arc<PublicWidget>> {
        let cache = &self.shared.widgets;
        if let Some(hit) = cache.get(widget_id) {
            if hit.0.elapsed() < WIDGET_TTL {
                return Ok(hit.1.clone());
            }
        }
        let record = self
            .shared
            .store
            .widget(widget_id)
            .await?
            .ok_or(NodeError::NotFound("widget"))?;
        let (agent_name, agent_greeting) = match self.shared.agents.get(&record.agent_id) {
            Some(running) => {
                let def = &running.current().compiled.definition;
                (def.name.clone(), def.greeting.clone())
            }
            None => {
                let agent = self
                    .shared
                    .store
                    .get_agent(record.agent_id)
                    .await?
                    .ok_or(NodeError::NotFound("widget"))?;
                (agent.name, None)
            }
        };
        let widget = Arc::new(PublicWidget {
            record,
            agent_name,
            agent_greeting,
        });
        if cache.len() >= WIDGET_CACHE {
            let stale: Vec<String> = cache
                .iter()
                .filter(|e| e.value().0.elapsed() >= WIDGET_TTL)
                .map(|e| e.key().clone())
                .collect();
            for k in stale {
                cache.remove(&k);
            }
        }
        cache.insert(widget_id.to_string(), (Instant::now(), widget.clone()));
        Ok(widget)
    }

    /// The host page's user-hash secret of a widget, opened.
    pub fn widget_identity_secret(&self, widget: &WidgetRecord) -> NodeResult<Option<String>> {
        widget
            .secrets
            .identity_secret
            .as_deref()
            .map(|s| {
                self.shared
                    .config
                    .secrets
                    .open_bound(s, &secret_context(widget.agent_id, "identity_secret"))
                    .map_err(|e| NodeError::Internal(format!("widget secret: {e}")))
            })
            .transpose()
    }

    /// A visitor's newest conversation with the widget's agent, with its log.
    pub async fn visitor_latest(
        &self,
        widget: &WidgetRecord,
        user_id: &str,
    ) -> NodeResult<Option<Conversation>> {
        let store = &self.shared.store;
        let sessions = store
            .sessions_for_user(widget.tenant_id, Some(widget.agent_id), user_id, "web")
            .await?;
        let Some(session) = sessions.into_iter().next() else {
            return Ok(None);
        };
        let messages = self.customer_log(session.id).await?;
        Ok(Some(Conversation { session, messages }))
    }

    /// One of the visitor's own sessions of the widget's agent (404 for any other).
    pub async fn visitor_session(
        &self,
        widget: &WidgetRecord,
        user_id: &str,
        session: SessionId,
    ) -> NodeResult<Session> {
        match self.shared.store.load_session(session).await? {
            Some(s)
                if s.agent_id == widget.agent_id
                    && s.tenant_id == widget.tenant_id
                    && s.user_id == user_id
                    && s.ext_type == "web" =>
            {
                Ok(s)
            }
            _ => Err(NodeError::NotFound("conversation")),
        }
    }

    /// The visitor's conversation with the messages after `after`.
    pub async fn visitor_conversation(
        &self,
        widget: &WidgetRecord,
        user_id: &str,
        session: SessionId,
        after: i64,
    ) -> NodeResult<Conversation> {
        let session = self.visitor_session(widget, user_id, session).await?;
        let mut messages = self.customer_log(session.id).await?;
        messages.retain(|m| m.id > after);
        Ok(Conversation { session, messages })
    }

    /// Opens a new conversation for the visitor (the agent's greeting first).
    pub async fn visitor_start(
        &self,
        widget: &WidgetRecord,
        user_id: &str,
        name: Option<String>,
        email: Option<String>,
    ) -> NodeResult<Conversation> {
        let session = self
            .create_session(
                widget.agent_id,
                CreateSession {
                    user_id: Some(user_id.to_string()),
                    name,
                    email,
                    ext_type: Some("web".into()),
                    channel_id: Some("widget".into()),
                    ..CreateSession::default()
                },
            )
            .await?;
        let messages = self.customer_log(session.id).await?;
        Ok(Conversation { session, messages })
    }

    /// An attachment of a session of the widget's agent.
    pub async fn widget_attachment(
        &self,
        widget: &WidgetRecord,
        id: uuid::Uuid,
    ) -> NodeResult<(AttachmentMeta, Bytes)> {
        self.attachment_of(id, |s| {
            s.agent_id == widget.agent_id && s.tenant_id == widget.tenant_id
        })
        .await
    }

    /// Turns a visitor's recording into text with the widget's speech-to-text backend
    /// (an OpenAI-compatible `/audio/transcriptions`).
    pub async fn transcribe(
        &self,
        widget: &WidgetRecord,
        filename: &str,
        content_type: &str,
        audio: Bytes,
    ) -> NodeResult<String> {
        let settings: &WidgetSettings = &widget.settings;
        let base = settings
            .voice
            .stt_base_url
            .as_deref()
            .filter(|_| settings.voice.enabled)
            .ok_or_else(|| NodeError::Invalid("voice: this widget does not transcribe".into()))?;
        let url = format!("{}/audio/transcriptions", base.trim_end_matches('/'));
        let part = reqwest::multipart::Part::bytes(audio.to_vec())
            .file_name(filename.to_string())
            .mime_str(content_type)
            .map_err(|_| NodeError::Invalid("attachments: bad audio content type".into()))?;
        let form = reqwest::multipart::Form::new()
            .text(
                "model",
                settings
                    .voice
                    .stt_model
                    .clone()
                    .unwrap_or_else(|| "whisper-1".into()),
            )
            .part("file", part);
        let mut req = self
            .shared
            .http
            .post(&url)
            .multipart(form)
            .timeout(STT_TIMEOUT);
        if let Some(sealed) = &widget.secrets.stt_api_key {
            let key = self
                .shared
                .config
                .secrets
                .open_bound(sealed, &secret_context(widget.agent_id, "stt_api_key"))
                .map_err(|e| NodeError::Internal(format!("widget secret: {e}")))?;
            req = req.bearer_auth(key);
        }
        let failed = |what: String| NodeError::Upstream(format!("speech-to-text: {what}"));
        let resp = req
            .send()
            .await
            .map_err(|e| failed(e.without_url().to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(failed(format!("answered {status}")));
        }
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| failed(format!("unreadable answer: {}", e.without_url())))?;
        match body.get("text").and_then(|t| t.as_str()).map(str::trim) {
            Some(t) if !t.is_empty() => Ok(t.to_string()),
            _ => Err(failed("no text in the answer".into())),
        }
    }
}
