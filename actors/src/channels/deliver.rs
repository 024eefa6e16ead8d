//! Messages a session says on its own (an operator's reply, the hand-over notice), sent
//! to the customer on the platform the session talks on.

use parley_connectors::{ConnectorError, ConnectorResult};
use parley_engine::model::{ChannelRef, Session};
use serde_json::json;

use super::outbound::Urgency;
use super::runtime::PlatformRuntime;
use crate::node::Shared;

/// Sends `text` to the customer of `session` if the session talks on a platform chat (its
/// server-set channel reference). Failures go to the connection's event log: the message
/// stays in the session's log either way.
pub async fn deliver_to_session(shared: &Shared, session: &Session, text: &str) {
    let channel = match &session.channel {
        Some(c) => c.clone(),
        None => match legacy_channel(shared, session).await {
            Some(c) => c,
            // Chat API and webhook customers get it as a conversation event.
            None => return,
        },
    };
    let (connection, chat) = (channel.connection_id, channel.chat_id.as_str());
    let Some(running) = shared.channels.get(&connection) else {
        tracing::warn!(session = %session.id, %connection, "the session's connection is not running here; the message was not sent");
        return;
    };
    let rt = &running.rt;
    // Checked again at use: a session never speaks through another tenant's connection.
    if rt.record.tenant_id != session.tenant_id {
        tracing::error!(session = %session.id, %connection, "the session's connection belongs to another tenant; the message was not sent");
        return;
    }
    let sent: ConnectorResult<Vec<String>> = async {
        let out = &rt.outbound;
        let must = |r: Option<String>| {
            r.ok_or_else(|| ConnectorError::Transport("the send was not made".into()))
        };
        match &rt.platform {
            PlatformRuntime::Telegram { client, .. } => Ok(out
                .send(Some(chat), Urgency::Must, || {
                    client.send_message(chat, text)
                })
                .await?
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.message_id)
                .collect()),
            PlatformRuntime::Slack { client, .. } => Ok(vec![must(
                out.send(Some(chat), Urgency::Must, || {
                    client.post_message(chat, text, None)
                })
                .await?
                .map(|s| s.message_id),
            )?]),
            PlatformRuntime::Whatsapp {
                client, numbers, ..
            } => {
                let from = numbers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pick(chat, None)
                    .to_string();
                Ok(vec![must(
                    out.send(Some(&from), Urgency::Must, || {
                        client.send_text(&from, chat, text)
                    })
                    .await?
                    .map(|s| s.message_id),
                )?])
            }
            // Webhook customers get the message.created event.
            PlatformRuntime::Webhook { .. } => Ok(Vec::new()),
            PlatformRuntime::Discord { .. } | PlatformRuntime::Teams { .. } => {
                Err(ConnectorError::Malformed(
                    "this platform only takes replies to a customer's own message".into(),
                ))
            }
        }
    }
    .await;
    let detail = match &sent {
        Ok(ids) => json!({"session_id": session.id, "chat_id": chat, "message_ids": ids}),
        Err(e) => json!({"session_id": session.id, "chat_id": chat, "error": e.to_string()}),
    };
    let kind = if sent.is_ok() { "reply" } else { "error" };
    if let Err(e) = &sent {
        tracing::warn!(session = %session.id, %connection, error = %e, "could not send a message to the customer's platform");
    }
    super::log_connection_event(shared, rt, kind, detail).await;
}

/// Sessions opened on a platform before the typed reference existed kept their chat in
/// `kwargs`, which callers could write too: it is believed only when the connection's own
/// chat map leads to this very session.
async fn legacy_channel(shared: &Shared, session: &Session) -> Option<ChannelRef> {
    let kw = &session.kwargs;
    let connection = kw.get("connection_id")?.as_str()?.parse().ok()?;
    let chat = kw.get("chat_id")?.as_str()?;
    // Platform sessions' users are `<platform>:<user id>`; their chat key `<chat>/<user>`.
    let (_, user) = session.user_id.split_once(':')?;
    let mapped = shared
        .store
        .channel_session(connection, &format!("{chat}/{user}"))
        .await
        .ok()??;
    (mapped.session_id == session.id).then(|| ChannelRef {
        connection_id: connection,
        chat_id: chat.to_string(),
    })
}
