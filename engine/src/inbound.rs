//! What a channel connector hands the engine: a customer's message from a platform,
//! verified and parsed, with what a reply needs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A platform's name (`telegram`, `slack`, …): what connections, deliveries and metrics are
/// labelled with. The platforms themselves live in `parley-connectors`, one module each,
/// and register their names there; the engine only carries the name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform(&'static str);

/// Names are short lowercase words: anything else is refused before it is kept.
const MAX_NAME_LEN: usize = 32;
/// Distinct names ever kept. Registered platforms are a handful; the bound keeps names read
/// from requests or old data from growing memory without end.
const MAX_NAMES: usize = 256;

static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());

impl Platform {
    /// A platform's name as its module declares it.
    pub const fn named(name: &'static str) -> Platform {
        Platform(name)
    }

    /// The platform called `name`, or why no platform can be called that. Whether parley
    /// has such a platform is the connectors' registry's to say.
    pub fn parse(name: &str) -> Result<Platform, String> {
        let well_formed = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !well_formed {
            return Err(format!(
                "{name:?} is not a platform name (lowercase letters, digits and _, at most {MAX_NAME_LEN})"
            ));
        }
        let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = names.iter().find(|n| **n == name) {
            return Ok(Platform(known));
        }
        if names.len() >= MAX_NAMES {
            return Err(format!("{name:?} is not a known platform"));
        }
        let kept: &'static str = Box::leak(name.to_string().into_boxed_str());
        names.push(kept);
        Ok(Platform(kept))
    }

    /// Keeps a platform's name ahead of any other (the connectors' registry does this for
    /// every platform it has), so names from requests can never crowd it out.
    pub fn register(self) {
        let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        if !names.contains(&self.0) {
            names.push(self.0);
        }
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for Platform {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Platform {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Platform, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Platform::parse(&name).map_err(serde::de::Error::custom)
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
