//! Telegram Bot API: webhook deliveries (verified by the secret token Telegram echoes in a
//! header), long polling, and the methods a bot answers with.
//!
//! Every call goes to `{api_base}/bot{token}/{method}`, so the bot token is part of every
//! URL: errors are built without URLs, and the client's `Debug` leaves the token out.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::DateTime;
use hmac::{Hmac, Mac};
use parley_engine::connection::{DefaultValue, Field, Kind};
use parley_engine::inbound::{InboundMessage, Platform};
use parley_engine::rate_limits::RateLimits;
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::platform::{
    self, Activation, Channel, Connect, HookRequest, PlatformKind, Spec, Target,
};
use crate::text::split_message;
use crate::{ConnectorError, ConnectorResult, Delivery, Sent};

/// The platform's name on connections and deliveries.
pub const PLATFORM: Platform = Platform::named("telegram");

/// The public Bot API, used when a connection sets no `api_base`.
pub const API: &str = "https://api.telegram.org";

/// Long-poll timeout of `getUpdates` in polling mode.
const POLL_SECS: u64 = 25;

/// The header every webhook delivery carries, holding the `secret_token` given to
/// `setWebhook`.
pub const SECRET_TOKEN_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";

/// The longest text one message may carry (Unicode scalar values, as Telegram counts).
pub const MAX_TEXT_CHARS: usize = 4096;

/// The wait used when a 429 names none (Telegram always does; a proxy in between may not).
const FALLBACK_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How much longer than the long-poll timeout a `getUpdates` call may take before it
/// counts as failed, so a client-wide timeout shorter than the poll does not cut it off.
const POLL_GRACE: Duration = Duration::from_secs(10);

/// The `secret_token` to give `setWebhook` for a bot: derived from its token, so nothing
/// more needs storing, and only the bot token's holders (Telegram and us) know it. Hex,
/// so it fits Telegram's `[A-Za-z0-9_-]{1,256}`.
pub fn webhook_secret(bot_token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(bot_token.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"parley telegram webhook secret");
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a webhook delivery's secret-token header against ours, in constant time.
///
/// An empty configured secret rejects everything: Telegram requires 1–256 characters, so
/// an empty one is a configuration mistake, never a reason to accept unverified updates.
pub fn verify(secret_token: &str, headers: &HeaderMap) -> ConnectorResult<()> {
    if secret_token.is_empty() {
        return Err(ConnectorError::Unauthorized(
            "no webhook secret token configured".into(),
        ));
    }
    let given = headers
        .get(SECRET_TOKEN_HEADER)
        .ok_or_else(|| ConnectorError::Unauthorized(format!("missing {SECRET_TOKEN_HEADER}")))?;
    if constant_time_eq(given.as_bytes(), secret_token.as_bytes()) {
        Ok(())
    } else {
        Err(ConnectorError::Unauthorized(format!(
            "wrong {SECRET_TOKEN_HEADER}"
        )))
    }
}

/// Compares `a` and `b` through their HMAC tags: `verify_slice` compares in constant time
/// and the tags have one length, so timing shows neither where nor whether the lengths
/// differ. (The inputs are the HMAC's messages, not its keys: short keys are zero-padded,
/// which would make "x" and "x\0" equal.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let tag = |input: &[u8]| {
        Hmac::<Sha256>::new_from_slice(b"parley telegram secret token")
            .expect("HMAC takes keys of any length")
            .chain_update(input)
    };
    tag(a).verify_slice(&tag(b).finalize().into_bytes()).is_ok()
}

/// Parses one webhook delivery (an `Update`).
///
/// A new text message from a person becomes [`Delivery::Message`]; other updates (edits,
/// media without text, messages from bots) are [`Delivery::Ignored`]; anything that is not
/// an `Update` is [`ConnectorError::Malformed`].
pub fn parse(body: &[u8]) -> ConnectorResult<Delivery> {
    serde_json::from_slice::<Update>(body)
        .map_err(not_an_update)?
        .into_delivery()
}

fn not_an_update(err: serde_json::Error) -> ConnectorError {
    ConnectorError::Malformed(format!("not a Telegram update: {err}"))
}

#[derive(Deserialize)]
struct Update {
    update_id: i64,
    message: Option<Message>,
}

#[derive(Deserialize)]
struct Message {
    message_id: i64,
    date: i64,
    chat: Chat,
    from: Option<User>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct Chat {
    id: i64,
}

#[derive(Deserialize)]
struct User {
    id: i64,
    is_bot: bool,
    first_name: String,
    username: Option<String>,
}

impl Update {
    fn into_delivery(self) -> ConnectorResult<Delivery> {
        let Some(message) = self.message else {
            return Ok(Delivery::Ignored("not a new message"));
        };
        // Messages in channels (and some service messages) have no sender to talk to.
        let Some(from) = message.from else {
            return Ok(Delivery::Ignored("message without a sender"));
        };
        if from.is_bot {
            return Ok(Delivery::Ignored("message from a bot"));
        }
        let Some(text) = message.text else {
            return Ok(Delivery::Ignored("message without text"));
        };
        let sent_at = DateTime::from_timestamp(message.date, 0).ok_or_else(|| {
            ConnectorError::Malformed(format!("message date {} out of range", message.date))
        })?;
        Ok(Delivery::Message(InboundMessage {
            platform: PLATFORM,
            dedup_id: self.update_id.to_string(),
            user_id: from.id.to_string(),
            user_name: Some(from.username.unwrap_or(from.first_name)),
            chat_id: message.chat.id.to_string(),
            thread_id: None,
            text,
            sent_at,
            reply_context: json!({ "message_id": message.message_id }),
        }))
    }
}

/// One update from [`TelegramClient::get_updates`]. Every update comes with its id, even
/// one that does not parse, so a poller can always confirm past it.
#[derive(Debug, Clone, PartialEq)]
pub struct Polled {
    pub update_id: i64,
    pub delivery: ConnectorResult<Delivery>,
}

/// The bot itself, as `getMe` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BotUser {
    pub id: i64,
    pub first_name: String,
    pub username: Option<String>,
}

/// A client for the Bot API methods parley uses.
#[derive(Clone)]
pub struct TelegramClient {
    http: reqwest::Client,
    api_base: String,
    bot_token: String,
}

impl fmt::Debug for TelegramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramClient")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

impl TelegramClient {
    /// `api_base` is e.g. `https://api.telegram.org` (or a self-hosted Bot API server).
    pub fn new(http: reqwest::Client, api_base: &str, bot_token: &str) -> Self {
        Self {
            http,
            api_base: api_base.trim_end_matches('/').to_owned(),
            bot_token: bot_token.to_owned(),
        }
    }

    /// `getMe`: checks the token and tells who the bot is.
    pub async fn get_me(&self) -> ConnectorResult<BotUser> {
        self.call("getMe", json!({})).await
    }

    /// `sendMessage`, split into several messages when `text` is longer than
    /// [`MAX_TEXT_CHARS`] (preferably at line or word breaks). Returns every message sent,
    /// in order. If a later part fails, the earlier parts stay sent and the error is
    /// returned.
    pub async fn send_message(&self, chat_id: &str, text: &str) -> ConnectorResult<Vec<Sent>> {
        let mut sent = Vec::new();
        for part in split_message(text, MAX_TEXT_CHARS) {
            let message: SentMessage = self
                .call(
                    "sendMessage",
                    json!({ "chat_id": id_value(chat_id), "text": part }),
                )
                .await?;
            sent.push(Sent {
                message_id: message.message_id.to_string(),
            });
        }
        Ok(sent)
    }

    /// `editMessageText`. Editing to the text the message already has succeeds: Telegram
    /// answers 400 "message is not modified", which for us means the edit is done.
    pub async fn edit_message_text(
        &self,
        chat_id: &str,
        message_id: &str,
        text: &str,
    ) -> ConnectorResult<()> {
        let params = json!({
            "chat_id": id_value(chat_id),
            "message_id": id_value(message_id),
            "text": text,
        });
        match self
            .call::<serde::de::IgnoredAny>("editMessageText", params)
            .await
        {
            Ok(_) => Ok(()),
            Err(ConnectorError::Refused {
                status: 400,
                message,
                ..
            }) if message.contains("message is not modified") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `sendChatAction` "typing": shows "typing…" for about five seconds.
    pub async fn send_typing(&self, chat_id: &str) -> ConnectorResult<()> {
        self.call::<bool>(
            "sendChatAction",
            json!({ "chat_id": id_value(chat_id), "action": "typing" }),
        )
        .await
        .map(drop)
    }

    /// `setWebhook`: Telegram will POST updates of the `allowed_updates` kinds to `url`,
    /// each with [`SECRET_TOKEN_HEADER`] set to `secret_token`.
    pub async fn set_webhook(
        &self,
        url: &str,
        secret_token: &str,
        allowed_updates: &[&str],
    ) -> ConnectorResult<()> {
        self.call::<bool>(
            "setWebhook",
            json!({
                "url": url,
                "secret_token": secret_token,
                "allowed_updates": allowed_updates,
            }),
        )
        .await
        .map(drop)
    }

    /// `deleteWebhook`, which polling needs: with a webhook set, `getUpdates` answers 409.
    pub async fn delete_webhook(&self) -> ConnectorResult<()> {
        self.call::<bool>("deleteWebhook", json!({}))
            .await
            .map(drop)
    }

    /// `getUpdates` (long polling): waits up to `timeout_secs` for updates from `offset`
    /// on. Asking with `offset` = last `update_id` + 1 confirms everything before it.
    ///
    /// A set webhook or a second poller makes Telegram answer 409, mapped to
    /// [`ConnectorError::Refused`] with code `"conflict"`.
    pub async fn get_updates(
        &self,
        offset: i64,
        timeout_secs: u64,
    ) -> ConnectorResult<Vec<Polled>> {
        let request = self
            .request(
                "getUpdates",
                &json!({ "offset": offset, "timeout": timeout_secs }),
            )
            .timeout(Duration::from_secs(timeout_secs).saturating_add(POLL_GRACE));
        let updates: Vec<Value> = execute(request).await?;
        updates
            .into_iter()
            .map(|update| {
                let update_id =
                    update
                        .get("update_id")
                        .and_then(Value::as_i64)
                        .ok_or_else(|| {
                            ConnectorError::Transport(
                                "telegram: getUpdates returned an update without update_id".into(),
                            )
                        })?;
                let delivery = serde_json::from_value::<Update>(update)
                    .map_err(not_an_update)
                    .and_then(Update::into_delivery);
                Ok(Polled {
                    update_id,
                    delivery,
                })
            })
            .collect()
    }

    async fn call<T: DeserializeOwned>(&self, method: &str, params: Value) -> ConnectorResult<T> {
        execute(self.request(method, &params)).await
    }

    fn request(&self, method: &str, params: &Value) -> reqwest::RequestBuilder {
        let url = format!("{}/bot{}/{method}", self.api_base, self.bot_token);
        self.http.post(url).json(params)
    }
}

/// What `sendMessage` answers with, as far as we need it.
#[derive(Deserialize)]
struct SentMessage {
    message_id: i64,
}

/// Every Bot API answer: `{"ok":true,"result":…}` or `{"ok":false,"error_code":…}`.
#[derive(Deserialize)]
struct ApiResponse<T> {
    ok: bool,
    result: Option<T>,
    error_code: Option<u16>,
    description: Option<String>,
    parameters: Option<ResponseParameters>,
}

#[derive(Deserialize)]
struct ResponseParameters {
    retry_after: Option<u64>,
}

async fn execute<T: DeserializeOwned>(request: reqwest::RequestBuilder) -> ConnectorResult<T> {
    let response = request.send().await.map_err(transport)?;
    let status = response.status();
    let body = response.bytes().await.map_err(transport)?;
    let answer: ApiResponse<T> = serde_json::from_slice(&body).map_err(|e| {
        ConnectorError::Transport(format!(
            "telegram answered {status} with an unreadable body: {e}"
        ))
    })?;
    if answer.ok {
        return answer.result.ok_or_else(|| {
            ConnectorError::Transport("telegram answered ok without a result".into())
        });
    }
    let code = answer.error_code.unwrap_or(status.as_u16());
    if code == 429 {
        let retry_after = answer.parameters.and_then(|p| p.retry_after);
        return Err(ConnectorError::RateLimited(
            retry_after.map_or(FALLBACK_RETRY_AFTER, Duration::from_secs),
        ));
    }
    Err(ConnectorError::Refused {
        platform: "telegram",
        status: status.as_u16(),
        // Telegram answers 409 only when someone else takes the updates (a webhook or
        // another poller): a name says that better than the number.
        code: if code == 409 {
            "conflict".into()
        } else {
            code.to_string()
        },
        message: answer.description.unwrap_or_default(),
    })
}

/// Ids travel as strings in parley; Telegram wants integers (or `@username` strings).
fn id_value(id: &str) -> Value {
    id.parse::<i64>().map_or_else(|_| json!(id), |n| json!(n))
}

/// reqwest names the URL in its errors, and the URL holds the bot token: drop it, keep the
/// causes (connection refused, timeout, …).
fn transport(err: reqwest::Error) -> ConnectorError {
    ConnectorError::transport("telegram", err)
}

const FIELDS: &[Field] = &[
    Field::text("bot_token").required().secret(),
    Field::text("bot_username"),
    Field::text("chat_id"),
    Field::new(
        "mode",
        Kind::OneOf {
            values: &["webhook", "polling"],
        },
    )
    .or(DefaultValue::Text("webhook")),
    Field::new("streaming", Kind::Bool).or(DefaultValue::Bool(true)),
    Field::url("api_base"),
];

const SPEC: Spec = Spec {
    platform: PLATFORM,
    fields: FIELDS,
    // About 1 message per second per chat and 30 per second overall.
    rate_limits: RateLimits::platform(Some(30.0), Some(1.0)),
};

/// Telegram in the platform registry.
pub struct Telegram;

impl PlatformKind for Telegram {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn connect(&self, c: &Connect<'_>) -> Result<Box<dyn Channel>, String> {
        let token = c.secret("bot_token");
        Ok(Box::new(TelegramChannel {
            client: TelegramClient::new(c.http.clone(), &c.api_base(API), &token),
            secret_token: webhook_secret(&token),
            polling: c.text("mode").as_deref() == Some("polling"),
            streaming: c.flag("streaming", true),
        }))
    }
}

struct TelegramChannel {
    client: TelegramClient,
    /// What Telegram echoes in every webhook delivery.
    secret_token: String,
    polling: bool,
    streaming: bool,
}

#[async_trait]
impl Channel for TelegramChannel {
    async fn verify(&self, req: &HookRequest, _now: i64) -> ConnectorResult<Vec<Delivery>> {
        verify(&self.secret_token, &req.headers)?;
        parse(&req.body).map(|d| vec![d])
    }

    fn polls(&self) -> bool {
        self.polling
    }

    async fn poll(&self, cursor: Option<&str>) -> ConnectorResult<Vec<platform::Polled>> {
        let offset = cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
        let updates = self.client.get_updates(offset, POLL_SECS).await?;
        Ok(updates
            .into_iter()
            .map(|u| platform::Polled {
                cursor: (u.update_id + 1).to_string(),
                delivery: u.delivery,
            })
            .collect())
    }

    /// Polling needs the webhook gone; webhook mode sets it to this server's hook.
    async fn activate(&self, activation: &Activation<'_>) -> ConnectorResult<()> {
        if self.polling {
            return self.client.delete_webhook().await;
        }
        let Some(url) = &activation.hook_url else {
            return Err(ConnectorError::Config("webhook mode needs the address Telegram can reach this server at: start it with --public-url (PARLEY_PUBLIC_URL), or use mode polling".into()));
        };
        self.client
            .set_webhook(url, &self.secret_token, &["message"])
            .await
    }

    async fn deactivate(&self) -> ConnectorResult<()> {
        if self.polling {
            return Ok(());
        }
        self.client.delete_webhook().await
    }

    async fn check(&self) -> ConnectorResult<Value> {
        let me = self.client.get_me().await?;
        Ok(json!({"bot_id": me.id, "username": me.username}))
    }

    fn max_chars(&self) -> usize {
        MAX_TEXT_CHARS
    }

    fn streams(&self) -> bool {
        self.streaming
    }

    /// A chat action, not a message: it takes nothing from the chat's message budget.
    async fn typing(&self, chat: &str) {
        let _ = self.client.send_typing(chat).await;
    }

    async fn send(&self, to: &Target<'_>, text: &str) -> ConnectorResult<Sent> {
        self.client
            .send_message(to.chat, text)
            .await?
            .pop()
            .ok_or_else(|| ConnectorError::Transport("telegram sent no message".into()))
    }

    async fn edit(&self, to: &Target<'_>, message_id: &str, text: &str) -> ConnectorResult<()> {
        self.client
            .edit_message_text(to.chat, message_id, text)
            .await
    }
}
