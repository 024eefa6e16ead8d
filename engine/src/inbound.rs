//! What a channel connector hands the engine: a customer's message from a platform,
//! verified and parsed, with what a reply needs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Telegram,
    Discord,
    Slack,
    Whatsapp,
    Teams,
    Webhook,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Telegram => "telegram",
            Platform::Discord => "discord",
            Platform::Slack => "slack",
            Platform::Whatsapp => "whatsapp",
            Platform::Teams => "teams",
            Platform::Webhook => "webhook",
        }
    }
}

/// A customer's message from a platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    pub platform: Platform,
    /// The platform's id of this delivery, for deduplication: Telegram update_id, Discord
    /// interaction id, Slack event_id, WhatsApp message id (wamid), Teams activity id,
    /// Standard Webhooks `webhook-id`.
    pub dedup_id: String,
    /// The platform's id of the customer.
    pub user_id: String,
    pub user_name: Option<String>,
    /// Where the conversation happens (chat, channel, conversation, phone number): a
    /// customer's session is keyed by it together with `user_id`.
    pub chat_id: String,
    /// A thread to answer in (Slack `thread_ts` or the message `ts`), if any.
    pub thread_id: Option<String>,
    pub text: String,
    pub sent_at: DateTime<Utc>,
    /// What answering needs beyond the chat id, platform-specific (Discord interaction
    /// token and application id, Teams serviceUrl and activity id, the WhatsApp number
    /// the customer wrote to).
    pub reply_context: Value,
}
