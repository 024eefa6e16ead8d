//! Opening a communication: a session of the chosen agent for the participant, with the
//! start phrase (else the agent's greeting) as its first message, which then goes out on
//! the channel — Telegram and WhatsApp through the running connection (a WhatsApp
//! customer outside the 24-hour window gets the template), a webhook as a signed
//! `communication.started` event, parley's chat as the session itself.

use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use parley_connectors::{ConnectorError, Sent, Template};
use parley_engine::campaign::{CommunicationRecord, CommunicationStatus};
use parley_engine::flow::{display, Channel, Communication, EvalContext, ParticipantData};
use parley_engine::model::{ChannelRef, SessionId};
use parley_engine::store::ChannelSession;
use serde_json::{json, Map, Value};

use super::runner::CampaignCtx;
use crate::channels::outbound::Urgency;
use crate::channels::{send_text, RunningChannel};
use crate::node::{CreateSession, Opening};

/// How a communication went out.
pub struct Opened {
    /// Delivered where sending is delivering (Telegram, chat, webhook); Started where the
    /// platform reports delivery later (WhatsApp).
    pub status: CommunicationStatus,
    pub message_id: Option<String>,
}

/// Why a communication could not go out.
pub enum OpenError {
    /// Before its session was opened.
    Before(String),
    /// After: its session is to be closed.
    After(String),
}

fn attribute(ctx: &EvalContext<'_>, name: &str) -> Option<String> {
    ctx.attribute(name).map(display)
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Renders the placeholders in every string of a template's components.
fn render_value(v: &Value, ctx: &EvalContext<'_>) -> Value {
    match v {
        Value::String(s) => Value::String(ctx.render(s)),
        Value::Array(items) => Value::Array(items.iter().map(|i| render_value(i, ctx)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), render_value(v, ctx)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn running(ctx: &CampaignCtx, c: &CommunicationRecord) -> Result<Arc<RunningChannel>, OpenError> {
    let id = c.connection_id.ok_or_else(|| {
        OpenError::Before(format!(
            "a {} communication needs a connection",
            c.channel.as_str()
        ))
    })?;
    let running = ctx.shared.channels.get(&id).ok_or_else(|| {
        OpenError::Before(format!(
            "connection {id} is not running: start it with POST /api/v1/connections/{id}/start"
        ))
    })?;
    // Checked at use as at write: a campaign never sends through another tenant's bot.
    if running.rt.record.tenant_id != ctx.record.campaign.tenant_id {
        return Err(OpenError::Before(format!(
            "no connection {id} in this tenant"
        )));
    }
    if running.rt.platform().as_str() != c.channel.as_str() {
        return Err(OpenError::Before(format!(
            "connection {id} is a {} connection, not {}",
            running.rt.platform(),
            c.channel.as_str()
        )));
    }
    Ok(running)
}

pub async fn open(
    ctx: &CampaignCtx,
    c: &CommunicationRecord,
    spec: &Communication,
    data: &ParticipantData,
    today: NaiveDate,
    session_id: SessionId,
) -> Result<Opened, OpenError> {
    let ectx = data.context(today);
    let agent = ctx
        .shared
        .running_agent(c.agent_id)
        .await
        .map_err(|e| OpenError::Before(format!("agent {}: {e}", c.agent_id)))?;
    if agent.tenant_id != ctx.record.campaign.tenant_id {
        return Err(OpenError::Before(format!(
            "no agent {} in this tenant",
            c.agent_id
        )));
    }
    let start_phrase = spec.start_phrase.as_ref().map(|t| ectx.render(t));
    // The platform address, and the connection it goes out on.
    let (ext_type, user_id, address, channel) = match spec.channel {
        Channel::Chat => {
            let user = attribute(&ectx, "web_id")
                .or_else(|| attribute(&ectx, "external_id"))
                .unwrap_or_else(|| format!("participant:{}", c.participant_id));
            ("web", user, None, None)
        }
        Channel::Webhook => {
            let user = attribute(&ectx, "external_id")
                .unwrap_or_else(|| format!("participant:{}", c.participant_id));
            ("webhook", user, None, Some(running(ctx, c)?))
        }
        Channel::Telegram => {
            let id = attribute(&ectx, "telegram_id").ok_or_else(|| {
                OpenError::Before(
                    "the participant has no telegram_id: a Telegram bot can only write to people who wrote to it first"
                        .into(),
                )
            })?;
            let rt = running(ctx, c)?;
            ("telegram", format!("telegram:{id}"), Some(id), Some(rt))
        }
        Channel::Whatsapp => {
            let to = attribute(&ectx, "whatsapp_id")
                .or_else(|| attribute(&ectx, "phone"))
                .map(|n| digits(&n))
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    OpenError::Before("the participant has no whatsapp_id or phone".into())
                })?;
            let rt = running(ctx, c)?;
            ("whatsapp", format!("whatsapp:{to}"), Some(to), Some(rt))
        }
    };
    let mut kwargs = Map::new();
    kwargs.insert("campaign_id".into(), json!(c.campaign_id));
    kwargs.insert("participant_id".into(), json!(c.participant_id));
    kwargs.insert("communication_id".into(), json!(c.id));
    kwargs.insert("communication".into(), json!(c.name));
    kwargs.insert(
        "context".into(),
        Value::Object(data.context_values(&spec.context, today)),
    );
    let channel_ref = match (&channel, &address) {
        (Some(rt), Some(address)) => {
            kwargs.insert("platform".into(), json!(ext_type));
            Some(ChannelRef {
                connection_id: rt.rt.id,
                chat_id: address.clone(),
                thread_id: None,
                user_id: Some(address.clone()),
            })
        }
        _ => None,
    };
    let session = ctx
        .shared
        .open_session(
            c.agent_id,
            CreateSession {
                user_id: Some(user_id),
                name: attribute(&ectx, "name"),
                ext_type: Some(ext_type.into()),
                channel_id: c.connection_id.map(|id| id.to_string()),
                kwargs,
                channel: channel_ref,
                ..CreateSession::default()
            },
            Opening {
                id: Some(session_id),
                text: start_phrase.clone(),
            },
        )
        .await
        .map_err(|e| OpenError::Before(format!("could not open its session: {e}")))?;
    let text = start_phrase.or(session.greeting_text.clone());
    let after = |e: ConnectorError| OpenError::After(e.to_string());
    let Some(running) = channel else {
        return Ok(Opened {
            status: CommunicationStatus::Delivered,
            message_id: None,
        });
    };
    let rt = &running.rt;
    if let Some(address) = &address {
        // The customer's answer comes to this session.
        let key = format!("{address}/{address}");
        ctx.shared
            .store
            .set_channel_session(
                rt.id,
                &key,
                &ChannelSession {
                    session_id,
                    started_at: Utc::now(),
                },
            )
            .await
            .map_err(|e| OpenError::After(e.to_string()))?;
        running.routes.forget_chat(&key);
    }
    if !rt.channel.replies_in_chat() {
        // Outgoing webhooks hear of the communication as an event.
        let data = json!({
            "communication_id": c.id,
            "communication": c.name,
            "campaign_id": c.campaign_id,
            "participant_id": c.participant_id,
            "session_id": session_id,
            "agent_id": c.agent_id,
            "text": text,
            "participant": data.participant,
            "customer": data.customer,
            "context": data.context_values(&spec.context, today),
        });
        crate::channels::outbox::try_enqueue(&ctx.shared, rt.id, "communication.started", data)
            .await
            .map_err(|e| OpenError::After(e.to_string()))?;
        return Ok(Opened {
            status: CommunicationStatus::Delivered,
            message_id: None,
        });
    }
    let Some(address) = address else {
        return Err(OpenError::After(format!(
            "a {} communication needs the participant's address",
            c.channel.as_str()
        )));
    };
    let to = rt
        .channel
        .chat_target(&address, None, None)
        .map_err(after)?;
    let must =
        |sent: Option<Sent>| sent.ok_or_else(|| OpenError::After("the send was not made".into()));
    let lane = to.lane.as_deref();
    if let Some(template) = &spec.template {
        // A platform with templates (WhatsApp) lets free text reach only a customer who
        // wrote within its window: the start phrase is tried, and the template goes when
        // the platform says the window is closed.
        if let Some(text) = spec.start_phrase.as_ref().and(text.as_ref()) {
            match rt
                .outbound
                .send(lane, Urgency::Must, || rt.channel.send(&to, text))
                .await
            {
                Ok(sent) => {
                    return Ok(Opened {
                        status: CommunicationStatus::Started,
                        message_id: Some(must(sent)?.message_id),
                    })
                }
                Err(e) if e.is_window_closed() => {}
                Err(e) => return Err(after(e)),
            }
        }
        let template = Template {
            name: template.name.clone(),
            language: template.language.clone(),
            components: template
                .components
                .as_ref()
                .map(|c| render_value(&Value::Array(c.clone()), &ectx))
                .unwrap_or(Value::Null),
        };
        let sent = rt
            .outbound
            .send(lane, Urgency::Must, || {
                rt.channel.send_template(&to, &template)
            })
            .await
            .map_err(after)?;
        return Ok(Opened {
            status: CommunicationStatus::Started,
            message_id: Some(must(sent)?.message_id),
        });
    }
    let text = text.ok_or_else(|| {
        OpenError::After(
            "nothing to send: give the communication a start_phrase or the agent a greeting".into(),
        )
    })?;
    let last = send_text(rt, &to, &text).await.map_err(after)?.pop();
    Ok(Opened {
        status: if rt.channel.reports_delivery() {
            CommunicationStatus::Started
        } else {
            CommunicationStatus::Delivered
        },
        message_id: last,
    })
}
