//! Answers a customer on the platform they wrote from: streamed as the reply is generated
//! where the platform can edit a message, in one piece elsewhere, split where it is
//! longer than a platform message may be.

use std::sync::Arc;
use std::time::Instant;

use parley_connectors::split_message;
use parley_connectors::{ConnectorError, ConnectorResult, Target};
use parley_engine::inbound::InboundMessage;

use super::outbound::Urgency;
use super::runtime::ChannelRuntime;

/// A streamed answer shows up once it has this much text, so a customer's notification
/// is not a lone first word…
const MIN_FIRST_CHARS: usize = 12;
/// …and once the answer has taken this long: a quick answer goes out whole, in one
/// message, without edits.
const FIRST_SHOW_AFTER: std::time::Duration = std::time::Duration::from_millis(400);

/// Tells the customer an answer is coming, best effort and beside the turn: the answer
/// does not wait for it.
pub fn typing(rt: &Arc<ChannelRuntime>, chat_id: &str) {
    let (rt, chat) = (rt.clone(), chat_id.to_string());
    tokio::spawn(async move { rt.channel.typing(&chat).await });
}

/// One reply being delivered.
pub struct Reply<'a> {
    rt: &'a ChannelRuntime,
    to: Target<'a>,
    /// The message the streamed text is shown in, once sent.
    streamed: Option<String>,
    started: Instant,
    shown: String,
    last_edit: Option<Instant>,
}

impl<'a> Reply<'a> {
    pub fn new(rt: &'a ChannelRuntime, msg: &'a InboundMessage) -> Reply<'a> {
        Reply {
            rt,
            to: rt.channel.reply_target(msg),
            streamed: None,
            started: Instant::now(),
            shown: String::new(),
            last_edit: None,
        }
    }

    /// Whether partial text is shown while the reply is generated.
    pub fn streams(&self) -> bool {
        self.rt.channel.streams()
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
        // Only the first message streams; the rest of a long reply comes with the end.
        let head = split_message(text, self.rt.channel.max_chars())[0];
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

    /// Delivers the whole reply: the first part fills the streamed message (or is the
    /// answer's first message), the rest follows as new messages, in order.
    pub async fn finish(&mut self, text: &str) -> ConnectorResult<Vec<String>> {
        let mut sent = Vec::new();
        if text.trim().is_empty() || !self.rt.channel.replies_in_chat() {
            return Ok(sent);
        }
        for (i, part) in split_message(text, self.rt.channel.max_chars())
            .into_iter()
            .enumerate()
        {
            if i == 0 {
                if self.streamed.is_none() || part != self.shown {
                    self.show(part, Urgency::Must).await?;
                }
                sent.extend(self.streamed.clone());
            } else {
                sent.push(self.send_new(part).await?);
            }
        }
        Ok(sent)
    }

    /// Sends the answer's first message, or edits it to `text`. False: skipped (`IfFree`).
    async fn show(&mut self, text: &str, urgency: Urgency) -> ConnectorResult<bool> {
        let (channel, to, lane) = (&self.rt.channel, &self.to, self.to.lane.as_deref());
        let out = &self.rt.outbound;
        let done = match self.streamed.clone() {
            None => out
                .send(lane, urgency, || channel.send_first(to, text))
                .await?
                .map(|s| self.streamed = Some(s.message_id)),
            Some(id) => {
                out.send(lane, urgency, || channel.edit(to, &id, text))
                    .await?
            }
        };
        Ok(done.is_some())
    }

    /// Sends `text` as a new message; answers its id.
    async fn send_new(&self, text: &str) -> ConnectorResult<String> {
        let (channel, to) = (&self.rt.channel, &self.to);
        self.rt
            .outbound
            .send(to.lane.as_deref(), Urgency::Must, || channel.send(to, text))
            .await?
            .map(|s| s.message_id)
            .ok_or_else(|| ConnectorError::Transport("a required send was skipped".into()))
    }
}
