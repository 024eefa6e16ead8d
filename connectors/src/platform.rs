//! The one interface every platform implements, and the registry of platforms.
//!
//! A platform is two things: a [`PlatformKind`] (its name, config schema, rate-limit
//! defaults, and how to connect from a config) and the [`Channel`] a started connection
//! holds (verify and parse deliveries, answer the platform, send, edit, typing, polling,
//! set-up and checks). The actors' channel runtime only ever sees these two traits, so
//! adding a platform is its module and one line in the crate root's list.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parley_engine::agent::ValidationError;
use parley_engine::connection::{CheckedConfig, Field};
use parley_engine::inbound::{InboundMessage, Platform};
use parley_engine::rate_limits::RateLimits;
use reqwest::header::HeaderMap;
use serde_json::{json, Map, Value};

use crate::{ConnectorError, ConnectorResult, Delivery, Sent};

/// An inbound request to a connection's hook, as the HTTP layer received it.
#[derive(Debug, Clone, Default)]
pub struct HookRequest {
    /// `GET` (a subscription check) or `POST` (a delivery).
    pub get: bool,
    pub headers: HeaderMap,
    pub query: HashMap<String, String>,
    pub body: Bytes,
}

impl HookRequest {
    /// A header's value, or "" when it is missing or not text.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// What to answer the platform.
#[derive(Debug, Clone, PartialEq)]
pub struct HookAnswer {
    pub status: u16,
    pub body: HookBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HookBody {
    Json(Value),
    Text(String),
}

impl HookAnswer {
    pub fn json(status: u16, body: Value) -> HookAnswer {
        HookAnswer {
            status,
            body: HookBody::Json(body),
        }
    }

    pub fn text(status: u16, body: String) -> HookAnswer {
        HookAnswer {
            status,
            body: HookBody::Text(body),
        }
    }

    /// parley's JSON error body.
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> HookAnswer {
        HookAnswer::json(
            status,
            json!({"error": {"code": code, "message": message.into()}}),
        )
    }

    pub fn ok() -> HookAnswer {
        HookAnswer::json(200, json!({"ok": true}))
    }
}

/// What became of a verified delivery, for the platform's answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Received {
    /// Customer messages recorded now.
    pub accepted: usize,
    /// Customer messages (or statuses) seen before.
    pub duplicates: usize,
    /// Whether the delivery held a customer message at all.
    pub messages: bool,
    /// The body a handshake asks to be answered with.
    pub handshake: Option<String>,
}

/// Where a message goes: the chat, the rate-limit lane it counts against, and, for a
/// reply, the message it answers (its thread, tokens, service URL…).
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub chat: &'a str,
    /// The thread to answer in (Slack), if any.
    pub thread: Option<&'a str>,
    /// The key of the connection's per-chat limit (`None`: only the overall limit).
    pub lane: Option<String>,
    /// The sending identity the platform picked (a WhatsApp business number).
    pub from: Option<String>,
    pub reply_to: Option<&'a InboundMessage>,
}

impl<'a> Target<'a> {
    /// A message to `chat`, limited per chat.
    pub fn chat(chat: &'a str) -> Target<'a> {
        Target {
            chat,
            thread: None,
            lane: Some(chat.to_string()),
            from: None,
            reply_to: None,
        }
    }

    /// The answered message's reply context value `key`.
    pub fn context(&self, key: &str) -> ConnectorResult<&'a str> {
        self.reply_to
            .and_then(|m| m.reply_context.get(key))
            .and_then(Value::as_str)
            .ok_or_else(|| ConnectorError::Malformed(format!("reply context without {key}")))
    }
}

/// A pre-approved message template (WhatsApp), the only message some platforms let a
/// business send first.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub name: String,
    pub language: String,
    /// Its parameters; `null` for none.
    pub components: Value,
}

/// What starting a connection needs to tell its platform.
#[derive(Debug, Clone)]
pub struct Activation<'a> {
    /// Where the platform delivers to (`{public_url}/hooks/{id}`), if this server has a
    /// public address.
    pub hook_url: Option<String>,
    /// The connection's name (a Discord command's description).
    pub name: &'a str,
}

/// One update a polling platform handed over.
#[derive(Debug)]
pub struct Polled {
    /// The cursor that confirms this update and everything before it.
    pub cursor: String,
    pub delivery: ConnectorResult<Delivery>,
}

/// A connection's opened config, with typed getters.
pub struct Connect<'a> {
    pub config: &'a CheckedConfig,
    pub http: &'a reqwest::Client,
}

impl Connect<'_> {
    pub fn text(&self, key: &str) -> Option<String> {
        self.config
            .public
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    pub fn flag(&self, key: &str, default: bool) -> bool {
        self.config
            .public
            .get(key)
            .and_then(Value::as_bool)
            .unwrap_or(default)
    }

    pub fn int(&self, key: &str, default: u64) -> u64 {
        self.config
            .public
            .get(key)
            .and_then(Value::as_u64)
            .unwrap_or(default)
    }

    pub fn list(&self, key: &str) -> Vec<String> {
        self.config
            .public
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A secret field ("" when unset).
    pub fn secret(&self, key: &str) -> String {
        self.config.secrets.get(key).cloned().unwrap_or_default()
    }

    /// The config's `api_base`, or the platform's public API.
    pub fn api_base(&self, default: &str) -> String {
        self.text("api_base").unwrap_or_else(|| default.to_string())
    }
}

/// What a platform declares about itself.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub platform: Platform,
    /// The config schema: validation and the console's forms.
    pub fields: &'static [Field],
    /// The platform's documented outbound limits.
    pub rate_limits: RateLimits,
}

/// A platform as the registry knows it.
pub trait PlatformKind: Send + Sync + 'static {
    fn spec(&self) -> &'static Spec;

    fn platform(&self) -> Platform {
        self.spec().platform
    }

    fn fields(&self) -> &'static [Field] {
        self.spec().fields
    }

    fn rate_limits(&self) -> RateLimits {
        self.spec().rate_limits
    }

    /// Checks beyond each field's own (e.g. a secret's format).
    fn check_config(&self, _config: &CheckedConfig) -> Vec<ValidationError> {
        Vec::new()
    }

    /// Whether a connection with this (public) config receives conversation events
    /// (outgoing webhooks).
    fn takes_events(&self, _config: &Map<String, Value>) -> bool {
        false
    }

    /// Builds a connection's channel from its opened config; an error is a config that
    /// cannot work.
    fn connect(&self, c: &Connect<'_>) -> Result<Box<dyn Channel>, String>;
}

/// Where a connection's conversation events go (outgoing webhooks).
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Delivers one event (`id` stays the same across retries).
    async fn deliver(&self, id: &str, body: &[u8]) -> ConnectorResult<()>;
}

/// A started connection's side of its platform.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// Checks a delivery's signature or secret and parses it. `now` is the Unix time
    /// signatures with a timestamp are checked against.
    async fn verify(&self, req: &HookRequest, now: i64) -> ConnectorResult<Vec<Delivery>>;

    /// A `GET` subscription check (WhatsApp `hub.challenge`): the body to answer, or
    /// `None` when the platform makes none.
    fn subscribe(&self, _query: &HashMap<String, String>) -> Option<ConnectorResult<String>> {
        None
    }

    /// The answer to a verified delivery.
    fn answer(&self, received: &Received) -> HookAnswer {
        match &received.handshake {
            Some(challenge) => HookAnswer::text(200, challenge.clone()),
            None => HookAnswer::ok(),
        }
    }

    /// The chat a message belongs to: a customer has one session per key.
    fn chat_key(&self, msg: &InboundMessage) -> String {
        format!("{}/{}", msg.chat_id, msg.user_id)
    }

    /// How long a chat's session lasts before the next message starts a new one.
    fn session_lifetime(&self) -> Option<Duration> {
        None
    }

    /// Whether deliveries carry a signed time checked within minutes (or expiring
    /// tokens), so an old replay can never verify; otherwise deliveries older than the
    /// dedup window are refused as stale.
    fn signed_recently(&self) -> bool {
        false
    }

    /// A second dedup id of the same customer message when the platform sends it twice
    /// under different delivery ids (Slack: `message` and `app_mention`).
    fn twin_id(&self, _msg: &InboundMessage) -> Option<String> {
        None
    }

    /// Whether updates are fetched by polling instead of delivered to the hook.
    fn polls(&self) -> bool {
        false
    }

    /// Fetches updates after `cursor` (long poll). A conflict error means another
    /// consumer holds the updates: polling stops.
    async fn poll(&self, _cursor: Option<&str>) -> ConnectorResult<Vec<Polled>> {
        Err(ConnectorError::Unsupported(
            "this platform delivers to its hook".into(),
        ))
    }

    /// What starting the connection asks of the platform (register the hook, a
    /// credentials check).
    async fn activate(&self, activation: &Activation<'_>) -> ConnectorResult<()>;

    /// What stopping it asks (remove the hook); best effort.
    async fn deactivate(&self) -> ConnectorResult<()> {
        Ok(())
    }

    /// A real call that shows the credentials work; answers what the platform said.
    async fn check(&self) -> ConnectorResult<Value>;

    /// A set-up step the operator can run again (Discord's slash command); `None` when
    /// the platform has none.
    async fn setup(&self, _activation: &Activation<'_>) -> Option<ConnectorResult<Value>> {
        None
    }

    /// Whether changing the connection's config runs [`Channel::setup`] again.
    fn sets_up_on_change(&self) -> bool {
        false
    }

    /// The longest text one message may carry.
    fn max_chars(&self) -> usize;

    /// Whether partial answers are shown while they are generated (edits).
    fn streams(&self) -> bool {
        false
    }

    /// Whether answers go to the chat at all (outgoing webhooks get them as events).
    fn replies_in_chat(&self) -> bool {
        true
    }

    /// Where the answer to `msg` goes.
    fn reply_target<'m>(&self, msg: &'m InboundMessage) -> Target<'m> {
        Target {
            thread: msg.thread_id.as_deref(),
            reply_to: Some(msg),
            ..Target::chat(&msg.chat_id)
        }
    }

    /// Whether a sent message is known delivered only once the platform reports it
    /// (WhatsApp statuses), not when the send succeeds.
    fn reports_delivery(&self) -> bool {
        false
    }

    /// Where a message the business starts goes (an operator's reply, a campaign's
    /// opening), in `thread` if given; `via` asks for a sending identity (a WhatsApp
    /// business number), where the platform has several. Platforms that only answer a
    /// customer's own message refuse.
    fn chat_target<'c>(
        &self,
        chat: &'c str,
        thread: Option<&'c str>,
        _via: Option<&str>,
    ) -> ConnectorResult<Target<'c>> {
        Ok(Target {
            thread,
            ..Target::chat(chat)
        })
    }

    /// Tells the customer an answer is coming; best effort.
    async fn typing(&self, _chat: &str) {}

    /// Sends `text` (at most [`Channel::max_chars`]) as a new message.
    async fn send(&self, to: &Target<'_>, text: &str) -> ConnectorResult<Sent>;

    /// Sends the first message of an answer (Discord: fills in the deferred response).
    async fn send_first(&self, to: &Target<'_>, text: &str) -> ConnectorResult<Sent> {
        self.send(to, text).await
    }

    /// Replaces the text of a message sent before.
    async fn edit(&self, _to: &Target<'_>, _message_id: &str, _text: &str) -> ConnectorResult<()> {
        Err(ConnectorError::Unsupported(
            "this platform cannot edit messages".into(),
        ))
    }

    /// Sends an approved template.
    async fn send_template(&self, _to: &Target<'_>, _template: &Template) -> ConnectorResult<Sent> {
        Err(ConnectorError::Unsupported(
            "this platform has no message templates (they are a WhatsApp feature)".into(),
        ))
    }

    /// Where conversation events go, for a connection that takes them.
    fn events(&self) -> Option<&dyn EventSink> {
        None
    }
}

/// What [`Channel::chat_target`] answers on a platform where the business can only answer
/// a customer's own message (an interaction token, an activity to reply to).
pub fn replies_only<T>() -> ConnectorResult<T> {
    Err(ConnectorError::Unsupported(
        "this platform only takes replies to a customer's own message".into(),
    ))
}

/// The platforms, their names kept ahead of any other.
static REGISTRY: LazyLock<Vec<&'static dyn PlatformKind>> = LazyLock::new(|| {
    let all = crate::platforms();
    for kind in &all {
        kind.platform().register();
    }
    all
});

/// Every platform, in the order they are listed.
pub fn registry() -> &'static [&'static dyn PlatformKind] {
    &REGISTRY
}

/// The platform called `platform`, if parley has it.
pub fn kind(platform: Platform) -> Option<&'static dyn PlatformKind> {
    REGISTRY.iter().copied().find(|k| k.platform() == platform)
}

/// The platform called `platform`, or an error naming the ones there are.
pub fn kind_or_err(platform: Platform) -> Result<&'static dyn PlatformKind, String> {
    kind(platform).ok_or_else(|| {
        let known: Vec<&str> = REGISTRY.iter().map(|k| k.platform().as_str()).collect();
        format!("unknown platform {platform} (known: {})", known.join(", "))
    })
}
