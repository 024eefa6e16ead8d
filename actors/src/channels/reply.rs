//! Answers a customer on the platform they wrote from: streamed as the reply is generated
//! where the platform can edit a message (Telegram, Discord, Slack), in one piece
//! elsewhere, split where it is longer than a platform message may be.

use std::sync::Arc;
use std::time::Instant;

use parley_connectors::discord::{split_message, MAX_CONTENT_CHARS};
use parley_connectors::telegram::MAX_TEXT_CHARS;
use parley_connectors::{ConnectorError, ConnectorResult};
use parley_engine::inbound::InboundMessage;
use serde_json::Value;

use super::outbound::Urgency;
use super::runtime::{ChannelRuntime, PlatformRuntime};

/// A streamed answer shows up once it has this much text, so a customer's notification
/// is not a lone first word…
const MIN_FIRST_CHARS: usize = 12;
/// …and once the answer has taken this long: a quick answer goes out whole, in one
/// message, without edits.
const FIRST_SHOW_AFTER: std::time::Duration = std::time::Duration::from_millis(400);
/// Slack messages may be longer, but long ones are cut in the UI.
const SLACK_MAX_CHARS: usize = 4000;
const WHATSAPP_MAX_CHARS: usize = 4096;
const TEAMS_MAX_CHARS: usize = 28_000;

/// Tells the customer an answer is coming (Telegram "typing…"), best effort and beside
/// the turn: it is a chat action, not a message, so it takes nothing from the chat's
/// message budget, and the answer does not wait for it.
pub fn typing(rt: &Arc<ChannelRuntime>, chat_id: &str) {
    if let PlatformRuntime::Telegram { client, .. } = &rt.platform {
        let (client, chat) = (client.clone(), chat_id.to_string());
        tokio::spawn(async move {
            let _ = client.send_typing(&chat).await;
        });
    }
}

/// One reply being delivered.
pub struct Reply<'a> {
    rt: &'a ChannelRuntime,
    msg: &'a InboundMessage,
    /// The message the streamed text is shown in, once sent.
    streamed: Option<String>,
    started: Instant,
    shown: String,
    last_edit: Option<Instant>,
}

fn ctx<'v>(msg: &'v InboundMessage, key: &str) -> ConnectorResult<&'v str> {
    msg.reply_context
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ConnectorError::Malformed(format!("reply context without {key}")))
}

impl<'a> Reply<'a> {
    pub fn new(rt: &'a ChannelRuntime, msg: &'a InboundMessage) -> Reply<'a> {
        Reply {
            rt,
            msg,
            streamed: None,
            started: Instant::now(),
            shown: String::new(),
            last_edit: None,
        }
    }

    /// Whether partial text is shown while the reply is generated.
    pub fn streams(&self) -> bool {
        match &self.rt.platform {
            PlatformRuntime::Telegram { streaming, .. } => *streaming,
            PlatformRuntime::Discord { stream, .. } => *stream,
            PlatformRuntime::Slack { .. } => true,
            _ => false,
        }
    }

    /// Shows the reply generated so far, if the limits allow now; skipped otherwise (the
    /// next piece or the final answer shows it).
    pub async fn partial(&mut self, text: &str) -> ConnectorResult<()> {
        if !self.streams()
            || text.trim().is_empty()
            // Edits count against the chat's rate limit like messages do.
            || self
                .last_edit
                .is_some_and(|t| t.elapsed() < self.rt.outbound.chat_interval())
        {
            return Ok(());
        }
        let max = self.max_chars();
        // Only the first message streams; the rest of a long reply comes with the end.
        let head = split_message(text, max)[0];
        let first = self.shown.is_empty();
        if head == self.shown
            || (first
                && (head.trim().chars().count() < MIN_FIRST_CHARS
                    || self.started.elapsed() < FIRST_SHOW_AFTER))
        {
            return Ok(());
        }
        if self.show(head, Urgency::IfFree).await? {
            self.shown = head.to_string();
            self.last_edit = Some(Instant::now());
        }
        Ok(())
    }

    /// Delivers the whole reply: the streamed message gets the final text of its part,
    /// the rest follows as new messages, in order.
    pub async fn finish(&mut self, text: &str) -> ConnectorResult<Vec<String>> {
        let mut sent = Vec::new();
        // Webhook customers get the answer as a `message.created` event.
        if text.trim().is_empty() || matches!(self.rt.platform, PlatformRuntime::Webhook { .. }) {
            return Ok(sent);
        }
        let max = self.max_chars();
        let parts = split_message(text, max);
        for (i, part) in parts.into_iter().enumerate() {
            if i == 0 && self.streamed.is_some() {
                if part != self.shown {
                    self.show(part, Urgency::Must).await?;
                }
                sent.extend(self.streamed.clone());
            } else if i == 0 && matches!(self.rt.platform, PlatformRuntime::Discord { .. }) {
                // The deferred response is the first message of a Discord reply.
                self.show(part, Urgency::Must).await?;
                sent.extend(self.streamed.clone());
            } else {
                sent.push(self.send_new(part).await?);
            }
        }
        Ok(sent)
    }

    fn max_chars(&self) -> usize {
        match &self.rt.platform {
            PlatformRuntime::Telegram { .. } => MAX_TEXT_CHARS,
            PlatformRuntime::Discord { .. } => MAX_CONTENT_CHARS,
            PlatformRuntime::Slack { .. } => SLACK_MAX_CHARS,
            PlatformRuntime::Whatsapp { .. } => WHATSAPP_MAX_CHARS,
            PlatformRuntime::Teams { .. } => TEAMS_MAX_CHARS,
            PlatformRuntime::Webhook { .. } => usize::MAX,
        }
    }

    /// Sends or edits the streamed message to `text`. False: skipped (`IfFree`).
    async fn show(&mut self, text: &str, urgency: Urgency) -> ConnectorResult<bool> {
        let out = &self.rt.outbound;
        let chat = self.msg.chat_id.as_str();
        let done = match (&self.rt.platform, self.streamed.clone()) {
            (PlatformRuntime::Telegram { client, .. }, None) => {
                let sent = out
                    .send(Some(chat), urgency, || client.send_message(chat, text))
                    .await?;
                sent.and_then(|s| s.into_iter().next()).map(|s| {
                    self.streamed = Some(s.message_id);
                })
            }
            (PlatformRuntime::Telegram { client, .. }, Some(id)) => {
                out.send(Some(chat), urgency, || {
                    client.edit_message_text(chat, &id, text)
                })
                .await?
            }
            (PlatformRuntime::Discord { client, .. }, streamed) => {
                let token = ctx(self.msg, "token")?;
                let sent = out
                    .send(None, urgency, || client.edit_original(token, text))
                    .await?;
                sent.map(|s| {
                    self.streamed = streamed.or(Some(s.message_id));
                })
            }
            (PlatformRuntime::Slack { client, .. }, None) => {
                let thread = self.msg.thread_id.as_deref();
                let sent = out
                    .send(Some(chat), urgency, || {
                        client.post_message(chat, text, thread)
                    })
                    .await?;
                sent.map(|s| {
                    self.streamed = Some(s.message_id);
                })
            }
            (PlatformRuntime::Slack { client, .. }, Some(ts)) => out
                .send(Some(chat), urgency, || client.update(chat, &ts, text))
                .await?
                .map(drop),
            _ => None,
        };
        Ok(done.is_some())
    }

    /// Sends `text` as a new message; answers its id.
    async fn send_new(&self, text: &str) -> ConnectorResult<String> {
        let out = &self.rt.outbound;
        let chat = self.msg.chat_id.as_str();
        let must = |r: Option<String>| {
            r.ok_or_else(|| ConnectorError::Transport("a required send was skipped".into()))
        };
        match &self.rt.platform {
            PlatformRuntime::Telegram { client, .. } => must(
                out.send(Some(chat), Urgency::Must, || {
                    client.send_message(chat, text)
                })
                .await?
                .and_then(|s| s.into_iter().next())
                .map(|s| s.message_id),
            ),
            PlatformRuntime::Discord { client, .. } => {
                let token = ctx(self.msg, "token")?;
                must(
                    out.send(None, Urgency::Must, || client.follow_up(token, text))
                        .await?
                        .map(|s| s.message_id),
                )
            }
            PlatformRuntime::Slack { client, .. } => {
                let thread = self.msg.thread_id.as_deref();
                must(
                    out.send(Some(chat), Urgency::Must, || {
                        client.post_message(chat, text, thread)
                    })
                    .await?
                    .map(|s| s.message_id),
                )
            }
            PlatformRuntime::Whatsapp {
                client, numbers, ..
            } => {
                let wrote_to = self
                    .msg
                    .reply_context
                    .get("phone_number_id")
                    .and_then(Value::as_str);
                let from = numbers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pick(&self.msg.user_id, wrote_to)
                    .to_string();
                let to = self.msg.user_id.as_str();
                must(
                    out.send(Some(&from), Urgency::Must, || {
                        client.send_text(&from, to, text)
                    })
                    .await?
                    .map(|s| s.message_id),
                )
            }
            PlatformRuntime::Teams { client, .. } => {
                let service_url = ctx(self.msg, "service_url")?;
                let conversation = ctx(self.msg, "conversation_id")?;
                let activity = ctx(self.msg, "activity_id")?;
                must(
                    out.send(Some(chat), Urgency::Must, || {
                        client.reply(service_url, conversation, activity, text)
                    })
                    .await?
                    .map(|s| s.message_id),
                )
            }
            PlatformRuntime::Webhook { .. } => Err(ConnectorError::Malformed(
                "webhook answers go out as events".into(),
            )),
        }
    }
}
