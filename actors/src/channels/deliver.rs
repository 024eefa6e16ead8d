//! Messages a session says on its own (an operator's reply, the hand-over notice), sent
//! to the customer on the platform the session talks on.

use parley_connectors::split_message;
use parley_connectors::{ConnectorError, ConnectorResult, Target};
use parley_engine::model::{ChannelRef, Session};
use serde_json::json;

use super::outbound::Urgency;
use super::runtime::ChannelRuntime;
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
    let sent = send_all(rt, &channel, text).await;
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
        thread_id: None,
        user_id: Some(user.to_string()),
    })
}

/// Sends `text` to the session's chat, split at the platform's limit; answers the ids of
/// the messages sent (none where answers go out as events).
async fn send_all(
    rt: &ChannelRuntime,
    channel: &ChannelRef,
    text: &str,
) -> ConnectorResult<Vec<String>> {
    if !rt.channel.replies_in_chat() {
        // Webhook customers get the message.created event.
        return Ok(Vec::new());
    }
    let to = rt
        .channel
        .chat_target(&channel.chat_id, channel.thread_id.as_deref(), None)?;
    send_text(rt, &to, text).await
}

/// Sends `text` to `to` as new messages, split at the platform's limit, each waiting for
/// the connection's limits; answers their ids in order.
pub(crate) async fn send_text(
    rt: &ChannelRuntime,
    to: &Target<'_>,
    text: &str,
) -> ConnectorResult<Vec<String>> {
    let platform = &rt.channel;
    let mut ids = Vec::new();
    for part in split_message(text, platform.max_chars()) {
        let sent = rt
            .outbound
            .send(to.lane.as_deref(), Urgency::Must, || {
                platform.send(to, part)
            })
            .await?
            .ok_or_else(|| ConnectorError::Transport("the send was not made".into()))?;
        ids.push(sent.message_id);
    }
    Ok(ids)
}
