//! Discord interactions over the HTTP endpoint: slash-command deliveries signed with
//! Ed25519, the deferred answer, and the interaction webhooks a reply goes through.
//!
//! A command must be answered within 3 s, so the endpoint answers
//! [`deferred_response`] at once and the reply follows through [`DiscordClient::reply`]
//! while the interaction token lives (15 min).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::DateTime;
use ed25519_dalek::{Signature, VerifyingKey};
use parley_engine::connection::{DefaultValue, Field, Kind};
use parley_engine::inbound::{InboundMessage, Platform};
use parley_engine::rate_limits::RateLimits;
use reqwest::header::{AUTHORIZATION, RETRY_AFTER};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::platform::{
    Activation, Channel, Connect, HookAnswer, HookRequest, PlatformKind, Received, Spec, Target,
};
pub use crate::text::split_message;
use crate::{ConnectorError, ConnectorResult, Delivery, Sent};

/// The longest content one message may carry (Unicode scalar values).
pub const MAX_CONTENT_CHARS: usize = 2000;

/// The platform's name on connections and deliveries.
pub const PLATFORM: Platform = Platform::named("discord");

/// The public API, used when a connection sets no `api_base`.
pub const API: &str = "https://discord.com/api/v10";

/// The longest session per user (30 days, in ms).
pub const MAX_SESSION_MS: u64 = 2_592_000_000;

/// The interaction type of Discord's endpoint check.
const PING: u8 = 1;
/// The interaction type of a slash command.
const APPLICATION_COMMAND: u8 = 2;
/// The command option type of a string.
const STRING_OPTION: u8 = 3;
/// The message flag that shows a response only to the user who asked.
const EPHEMERAL: u64 = 64;
/// The name of the text option of the command [`DiscordClient::overwrite_commands`]
/// registers.
const TEXT_OPTION: &str = "question";
/// Discord's epoch (2015-01-01) in Unix milliseconds: snowflakes count from it.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
/// The wait used when a 429 names none (Discord always does; a proxy in between may not).
const FALLBACK_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Checks an interaction's `X-Signature-Ed25519` (hex) over `timestamp || body` with the
/// application's public key (hex). Discord probes endpoints with bad signatures and drops
/// those that accept them, so any doubt is [`ConnectorError::Unauthorized`].
pub fn verify(
    public_key_hex: &str,
    signature_hex: &str,
    timestamp: &str,
    body: &[u8],
) -> ConnectorResult<()> {
    let unauthorized = |what: &str| ConnectorError::Unauthorized(format!("discord: {what}"));
    let key_bytes: [u8; 32] = hex::decode(public_key_hex)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| unauthorized("public key is not 32 hex-encoded bytes"))?;
    let key = VerifyingKey::from_bytes(&key_bytes)
        .map_err(|_| unauthorized("public key is not an Ed25519 key"))?;
    let signature: [u8; 64] = hex::decode(signature_hex)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| unauthorized("signature is not 64 hex-encoded bytes"))?;
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(body);
    // Strict verification also refuses malleable signatures and weak keys, which a
    // genuine Discord signature never is.
    key.verify_strict(&signed, &Signature::from_bytes(&signature))
        .map_err(|_| unauthorized("signature does not match"))
}

/// Parses a verified interaction.
///
/// PING is a [`Delivery::Handshake`] whose body is the PONG to answer with. A slash
/// command is a [`Delivery::Message`] whose text is its first string option (searched
/// through subcommands too); a command without one, and other interaction types, are
/// [`Delivery::Ignored`].
pub fn parse(body: &[u8]) -> ConnectorResult<Delivery> {
    let interaction: Interaction = serde_json::from_slice(body)
        .map_err(|e| ConnectorError::Malformed(format!("not a Discord interaction: {e}")))?;
    match interaction.kind {
        PING => Ok(Delivery::Handshake(json!({ "type": PING }).to_string())),
        APPLICATION_COMMAND => interaction.into_message(),
        _ => Ok(Delivery::Ignored("unsupported interaction type")),
    }
}

/// The immediate answer to a command: "thinking…", the reply following through
/// [`DiscordClient::reply`]. Ephemeral shows it only to the user who asked.
pub fn deferred_response(ephemeral: bool) -> Value {
    if ephemeral {
        json!({ "type": 5, "data": { "flags": EPHEMERAL } })
    } else {
        json!({ "type": 5 })
    }
}

#[derive(Deserialize)]
struct Interaction {
    id: String,
    #[serde(rename = "type")]
    kind: u8,
    application_id: Option<String>,
    token: Option<String>,
    guild_id: Option<String>,
    channel_id: Option<String>,
    member: Option<Member>,
    user: Option<User>,
    data: Option<CommandData>,
}

#[derive(Deserialize)]
struct Member {
    user: User,
}

#[derive(Deserialize)]
struct User {
    id: String,
    username: Option<String>,
    global_name: Option<String>,
}

#[derive(Deserialize)]
struct CommandData {
    #[serde(default)]
    options: Vec<CommandOption>,
}

#[derive(Deserialize)]
struct CommandOption {
    #[serde(rename = "type")]
    kind: u8,
    value: Option<Value>,
    /// The options of a subcommand (group).
    #[serde(default)]
    options: Vec<CommandOption>,
}

impl Interaction {
    fn into_message(self) -> ConnectorResult<Delivery> {
        let missing = |field: &str| {
            ConnectorError::Malformed(format!("discord command interaction without {field}"))
        };
        // In a guild the user is inside `member`; in a DM it is `user`.
        let user = self
            .member
            .map(|m| m.user)
            .or(self.user)
            .ok_or_else(|| missing("a user"))?;
        let application_id = self
            .application_id
            .ok_or_else(|| missing("application_id"))?;
        let token = self.token.ok_or_else(|| missing("token"))?;
        let chat_id = self.channel_id.ok_or_else(|| missing("channel_id"))?;
        let data = self.data.ok_or_else(|| missing("data"))?;
        let Some(text) = first_string_option(&data.options) else {
            return Ok(Delivery::Ignored("command without a text option"));
        };
        let mut reply_context = json!({ "application_id": application_id, "token": token });
        if let Some(guild_id) = self.guild_id {
            reply_context["guild_id"] = json!(guild_id);
        }
        Ok(Delivery::Message(InboundMessage {
            platform: PLATFORM,
            sent_at: snowflake_time(&self.id)?,
            dedup_id: self.id,
            user_id: user.id,
            user_name: user.global_name.or(user.username),
            chat_id,
            thread_id: None,
            text: text.to_owned(),
            reply_context,
        }))
    }
}

/// The value of the first string option, depth first.
fn first_string_option(options: &[CommandOption]) -> Option<&str> {
    options
        .iter()
        .find_map(|option| match (&option.kind, &option.value) {
            (&STRING_OPTION, Some(Value::String(text))) => Some(text.as_str()),
            _ => first_string_option(&option.options),
        })
}

/// Interactions carry no timestamp, but their snowflake id encodes when Discord made it.
fn snowflake_time(id: &str) -> ConnectorResult<DateTime<chrono::Utc>> {
    id.parse::<u64>()
        .ok()
        .and_then(|id| i64::try_from((id >> 22) + DISCORD_EPOCH_MS).ok())
        .and_then(DateTime::from_timestamp_millis)
        .ok_or_else(|| {
            ConnectorError::Malformed(format!("interaction id {id:?} is not a snowflake"))
        })
}

/// The bot user, as `/users/@me` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BotUser {
    pub id: String,
    pub username: String,
}

/// A client for the Discord HTTP API calls parley makes.
#[derive(Clone)]
pub struct DiscordClient {
    http: reqwest::Client,
    api_base: String,
    application_id: String,
    bot_token: String,
}

impl fmt::Debug for DiscordClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscordClient")
            .field("api_base", &self.api_base)
            .field("application_id", &self.application_id)
            .finish_non_exhaustive()
    }
}

impl DiscordClient {
    /// `api_base` is e.g. `https://discord.com/api/v10`.
    pub fn new(
        http: reqwest::Client,
        api_base: &str,
        application_id: &str,
        bot_token: &str,
    ) -> Self {
        Self {
            http,
            api_base: api_base.trim_end_matches('/').to_owned(),
            application_id: application_id.to_owned(),
            bot_token: bot_token.to_owned(),
        }
    }

    /// `GET /users/@me`: checks the bot token and tells who the bot is.
    pub async fn get_me(&self) -> ConnectorResult<BotUser> {
        let request = self
            .http
            .get(format!("{}/users/@me", self.api_base))
            .header(AUTHORIZATION, format!("Bot {}", self.bot_token));
        execute(request).await
    }

    /// Replaces the deferred response's "thinking…" with `content` (at most
    /// [`MAX_CONTENT_CHARS`]). The interaction token authorises interaction webhooks, so
    /// no bot token is sent.
    pub async fn edit_original(&self, token: &str, content: &str) -> ConnectorResult<Sent> {
        let url = format!("{}/messages/@original", self.webhook_url(token));
        execute::<MessageId>(self.http.patch(url).json(&message_body(content)))
            .await
            .map(MessageId::into_sent)
    }

    /// Sends `content` (at most [`MAX_CONTENT_CHARS`]) as a follow-up message.
    pub async fn follow_up(&self, token: &str, content: &str) -> ConnectorResult<Sent> {
        let request = self
            .http
            .post(self.webhook_url(token))
            .json(&message_body(content));
        execute::<MessageId>(request)
            .await
            .map(MessageId::into_sent)
    }

    /// Answers a deferred interaction with `text` of any length: the first
    /// [`MAX_CONTENT_CHARS`] replace the original response, the rest follow as follow-ups.
    /// Returns every message, in order; if a later part fails, the earlier parts stay sent
    /// and the error is returned.
    pub async fn reply(&self, token: &str, text: &str) -> ConnectorResult<Vec<Sent>> {
        let mut parts = split_message(text, MAX_CONTENT_CHARS).into_iter();
        let first = parts.next().unwrap_or_default();
        let mut sent = vec![self.edit_original(token, first).await?];
        for part in parts {
            sent.push(self.follow_up(token, part).await?);
        }
        Ok(sent)
    }

    /// Replaces all of the application's commands (globally, or in one guild, where
    /// changes show at once) with the one command `/{handle} {question}`.
    pub async fn overwrite_commands(
        &self,
        guild_id: Option<&str>,
        handle: &str,
        description: &str,
    ) -> ConnectorResult<()> {
        let url = match guild_id {
            Some(guild_id) => format!(
                "{}/applications/{}/guilds/{guild_id}/commands",
                self.api_base, self.application_id
            ),
            None => format!(
                "{}/applications/{}/commands",
                self.api_base, self.application_id
            ),
        };
        let commands = json!([{
            "name": handle,
            "type": 1,
            "description": description,
            "options": [{
                "type": STRING_OPTION,
                "name": TEXT_OPTION,
                "description": "What you want to ask",
                "required": true,
            }],
        }]);
        let request = self
            .http
            .put(url)
            .header(AUTHORIZATION, format!("Bot {}", self.bot_token))
            .json(&commands);
        execute::<serde::de::IgnoredAny>(request).await.map(drop)
    }

    fn webhook_url(&self, token: &str) -> String {
        format!("{}/webhooks/{}/{token}", self.api_base, self.application_id)
    }
}

/// A message's content, with mentions switched off: the text comes from an LLM, and
/// must not be able to ping @everyone or anyone else.
fn message_body(content: &str) -> Value {
    json!({ "content": content, "allowed_mentions": { "parse": [] } })
}

#[derive(Deserialize)]
struct MessageId {
    id: String,
}

impl MessageId {
    fn into_sent(self) -> Sent {
        Sent {
            message_id: self.id,
        }
    }
}

/// Discord's error body: `{"code", "message"}`, plus `retry_after` (seconds, fractional)
/// on a 429.
#[derive(Deserialize)]
struct ErrorBody {
    code: Option<i64>,
    message: Option<String>,
    retry_after: Option<f64>,
}

async fn execute<T: DeserializeOwned>(request: reqwest::RequestBuilder) -> ConnectorResult<T> {
    let response = request.send().await.map_err(transport)?;
    let status = response.status();
    let retry_after_header = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<f64>().ok());
    let body = response.bytes().await.map_err(transport)?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| {
            ConnectorError::Transport(format!(
                "discord answered {status} with an unreadable body: {e}"
            ))
        });
    }
    let error = serde_json::from_slice::<ErrorBody>(&body).ok();
    if status.as_u16() == 429 {
        // The body's value is the precise one (fractional); the header rounds it up.
        let wait = error
            .as_ref()
            .and_then(|error| error.retry_after)
            .or(retry_after_header)
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .unwrap_or(FALLBACK_RETRY_AFTER);
        return Err(ConnectorError::RateLimited(wait));
    }
    let Some(error) = error else {
        return Err(ConnectorError::Transport(format!(
            "discord answered {status} with an unreadable body"
        )));
    };
    Err(ConnectorError::Refused {
        platform: "discord",
        status: status.as_u16(),
        code: error
            .code
            .map_or_else(|| status.as_u16().to_string(), |code| code.to_string()),
        message: error.message.unwrap_or_default(),
    })
}

/// reqwest names the URL in its errors, and interaction webhook URLs hold the interaction
/// token: drop it, keep the causes (connection refused, timeout, …).
fn transport(err: reqwest::Error) -> ConnectorError {
    ConnectorError::transport("discord", err)
}

const FIELDS: &[Field] = &[
    Field::text("application_id").required(),
    Field::text("public_key").required(),
    Field::text("bot_token").required().secret(),
    Field::text("guild_id"),
    Field::text("client_id"),
    Field::text("handle").or(DefaultValue::Text("ask")),
    Field::new("ephemeral", Kind::Bool).or(DefaultValue::Bool(false)),
    Field::new(
        "session_duration_ms",
        Kind::Int {
            max: MAX_SESSION_MS,
        },
    )
    .or(DefaultValue::Int(86_400_000)),
    Field::new("stream", Kind::Bool).or(DefaultValue::Bool(true)),
    Field::url("api_base"),
];

const SPEC: Spec = Spec {
    platform: PLATFORM,
    fields: FIELDS,
    // 50 requests per second per bot.
    rate_limits: RateLimits::platform(Some(50.0), None),
};

/// Discord in the platform registry.
pub struct Discord;

impl PlatformKind for Discord {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn connect(&self, c: &Connect<'_>) -> Result<Box<dyn Channel>, String> {
        let application_id = c.text("application_id").unwrap_or_default();
        Ok(Box::new(DiscordChannel {
            client: DiscordClient::new(
                c.http.clone(),
                &c.api_base(API),
                &application_id,
                &c.secret("bot_token"),
            ),
            public_key: c.text("public_key").unwrap_or_default(),
            handle: c.text("handle").unwrap_or_else(|| "ask".into()),
            guild_id: c.text("guild_id"),
            ephemeral: c.flag("ephemeral", false),
            stream: c.flag("stream", true),
            session_duration_ms: c.int("session_duration_ms", 86_400_000),
        }))
    }
}

struct DiscordChannel {
    client: DiscordClient,
    public_key: String,
    handle: String,
    guild_id: Option<String>,
    ephemeral: bool,
    stream: bool,
    session_duration_ms: u64,
}

impl DiscordChannel {
    async fn overwrite_command(&self, name: &str) -> ConnectorResult<()> {
        let description: String = format!("Ask {name}").chars().take(100).collect();
        self.client
            .overwrite_commands(self.guild_id.as_deref(), &self.handle, &description)
            .await
    }
}

#[async_trait]
impl Channel for DiscordChannel {
    async fn verify(&self, req: &HookRequest, _now: i64) -> ConnectorResult<Vec<Delivery>> {
        verify(
            &self.public_key,
            req.header("x-signature-ed25519"),
            req.header("x-signature-timestamp"),
            &req.body,
        )?;
        parse(&req.body).map(|d| vec![d])
    }

    /// PONG to a PING; "thinking…" to a command, the answer following as its edit.
    fn answer(&self, received: &Received) -> HookAnswer {
        match &received.handshake {
            Some(pong) => HookAnswer::json(
                200,
                serde_json::from_str(pong).unwrap_or(json!({"type": PING})),
            ),
            None if received.messages => HookAnswer::json(200, deferred_response(self.ephemeral)),
            None => HookAnswer::ok(),
        }
    }

    /// One session per user, across channels, for `session_duration_ms`.
    fn chat_key(&self, msg: &InboundMessage) -> String {
        msg.user_id.clone()
    }

    fn session_lifetime(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.session_duration_ms))
    }

    async fn activate(&self, activation: &Activation<'_>) -> ConnectorResult<()> {
        self.overwrite_command(activation.name).await
    }

    async fn check(&self) -> ConnectorResult<Value> {
        let me = self.client.get_me().await?;
        Ok(json!({"bot_id": me.id, "username": me.username}))
    }

    /// Registers the slash command again.
    async fn setup(&self, activation: &Activation<'_>) -> Option<ConnectorResult<Value>> {
        Some(
            self.overwrite_command(activation.name)
                .await
                .map(|()| json!({"command": self.handle})),
        )
    }

    fn sets_up_on_change(&self) -> bool {
        true
    }

    fn max_chars(&self) -> usize {
        MAX_CONTENT_CHARS
    }

    fn streams(&self) -> bool {
        self.stream
    }

    /// Interaction webhooks are not limited per channel.
    fn reply_target<'m>(&self, msg: &'m InboundMessage) -> Target<'m> {
        Target {
            chat: &msg.chat_id,
            thread: None,
            lane: None,
            from: None,
            reply_to: Some(msg),
        }
    }

    fn chat_target<'c>(
        &self,
        _chat: &'c str,
        _thread: Option<&'c str>,
        _via: Option<&str>,
    ) -> ConnectorResult<Target<'c>> {
        crate::platform::replies_only()
    }

    async fn send(&self, to: &Target<'_>, text: &str) -> ConnectorResult<Sent> {
        self.client.follow_up(to.context("token")?, text).await
    }

    /// The deferred response is the first message of an answer.
    async fn send_first(&self, to: &Target<'_>, text: &str) -> ConnectorResult<Sent> {
        self.client.edit_original(to.context("token")?, text).await
    }

    async fn edit(&self, to: &Target<'_>, _message_id: &str, text: &str) -> ConnectorResult<()> {
        self.client
            .edit_original(to.context("token")?, text)
            .await
            .map(drop)
    }
}
