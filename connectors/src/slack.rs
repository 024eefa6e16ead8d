//! Slack Events API: deliveries signed with the app's signing secret (`v0` HMAC-SHA256),
//! and the Web API methods a bot answers with.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use parley_engine::connection::Field;
use parley_engine::inbound::{InboundMessage, Platform};
use parley_engine::rate_limits::RateLimits;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::platform::{Activation, Channel, Connect, HookRequest, PlatformKind, Spec, Target};
use crate::{ConnectorError, ConnectorResult, Delivery, Sent};

/// How far a delivery's timestamp may be from now, either way, before it counts as a
/// replay.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// The platform's name on connections and deliveries.
pub const PLATFORM: Platform = Platform::named("slack");

/// The public Web API, used when a connection sets no `api_base`.
pub const API: &str = "https://slack.com/api";

/// Messages may be longer, but long ones are cut in the UI.
pub const MAX_TEXT_CHARS: usize = 4000;

/// The wait used when a 429 names none (Slack always does; a proxy in between may not).
const FALLBACK_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Checks a delivery's `X-Slack-Signature` (`v0=` + hex HMAC-SHA256 of
/// `v0:{timestamp}:{body}` under the signing secret) and that its
/// `X-Slack-Request-Timestamp` lies within [`MAX_CLOCK_SKEW_SECS`] of `now` (Unix
/// seconds), so an old delivery cannot be replayed.
pub fn verify(
    signing_secret: &str,
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now: i64,
) -> ConnectorResult<()> {
    let unauthorized = |what: &str| ConnectorError::Unauthorized(format!("slack: {what}"));
    let timestamp: i64 = timestamp_header
        .parse()
        .map_err(|_| unauthorized("request timestamp is not a number"))?;
    if now.abs_diff(timestamp) > MAX_CLOCK_SKEW_SECS {
        return Err(unauthorized("request timestamp too far from now"));
    }
    let signature = signature_header
        .strip_prefix("v0=")
        .and_then(|hex_digest| hex::decode(hex_digest).ok())
        .ok_or_else(|| unauthorized("signature is not v0=<hex>"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(signing_secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(format!("v0:{timestamp_header}:").as_bytes());
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&signature)
        .map_err(|_| unauthorized("signature does not match"))
}

/// Parses a verified Events API delivery.
///
/// `url_verification` is a [`Delivery::Handshake`] whose body is the challenge to echo. A
/// person's `message` or `app_mention` event is a [`Delivery::Message`], answered in its
/// thread (a new one under the message if it has none); events of bots (ours included),
/// edits, deletions and other subtypes, other event types and envelopes are
/// [`Delivery::Ignored`].
///
/// `retry_num` is the `X-Slack-Retry-Num` header. A redelivery is parsed like the first
/// delivery (deduplication is on `event_id`); its number goes into `reply_context` as
/// `"retry_num"` so the caller can tell. The header is not signed, so one that is not a
/// number is left out rather than refused.
pub fn parse(body: &[u8], retry_num: Option<&str>) -> ConnectorResult<Delivery> {
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|e| ConnectorError::Malformed(format!("not a Slack event delivery: {e}")))?;
    match envelope {
        Envelope::UrlVerification { challenge } => Ok(Delivery::Handshake(challenge)),
        Envelope::EventCallback {
            team_id,
            event_id,
            event_time,
            event,
        } => {
            let retry_num = retry_num.and_then(|n| n.parse::<u32>().ok());
            (*event).into_delivery(event_id, team_id, event_time, retry_num)
        }
        Envelope::Other => Ok(Delivery::Ignored("unsupported envelope type")),
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Envelope {
    UrlVerification {
        challenge: String,
    },
    EventCallback {
        team_id: Option<String>,
        event_id: String,
        event_time: Option<i64>,
        // Boxed: the event is much larger than the other variants.
        event: Box<Event>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    user: Option<String>,
    text: Option<String>,
    ts: Option<String>,
    channel: Option<String>,
    thread_ts: Option<String>,
    bot_id: Option<String>,
    subtype: Option<String>,
}

impl Event {
    fn into_delivery(
        self,
        event_id: String,
        team_id: Option<String>,
        event_time: Option<i64>,
        retry_num: Option<u32>,
    ) -> ConnectorResult<Delivery> {
        let Event {
            kind,
            user,
            text,
            ts,
            channel,
            thread_ts,
            bot_id,
            subtype,
        } = self;
        if kind != "message" && kind != "app_mention" {
            return Ok(Delivery::Ignored("unsupported event type"));
        }
        if bot_id.is_some() {
            return Ok(Delivery::Ignored("message from a bot"));
        }
        // Subtypes are bot messages, edits, deletions, joins and the like: not a person
        // saying something new.
        if subtype.is_some() {
            return Ok(Delivery::Ignored("message subtype"));
        }
        let Some(text) = text.filter(|text| !text.is_empty()) else {
            return Ok(Delivery::Ignored("message without text"));
        };
        let missing =
            |field: &str| ConnectorError::Malformed(format!("slack {kind} event without {field}"));
        let user = user.ok_or_else(|| missing("user"))?;
        let channel = channel.ok_or_else(|| missing("channel"))?;
        let ts = ts.ok_or_else(|| missing("ts"))?;
        let sent_at = ts_time(&ts)
            .or_else(|| event_time.and_then(|secs| DateTime::from_timestamp(secs, 0)))
            .ok_or_else(|| {
                ConnectorError::Malformed(format!("slack event ts {ts:?} is not a time"))
            })?;
        let text = if kind == "app_mention" {
            strip_leading_mention(&text).to_owned()
        } else {
            text
        };
        let mut reply_context = json!({ "team_id": team_id, "ts": ts });
        if let Some(retry_num) = retry_num {
            reply_context["retry_num"] = json!(retry_num);
        }
        Ok(Delivery::Message(InboundMessage {
            platform: PLATFORM,
            dedup_id: event_id,
            user_id: user,
            user_name: None,
            chat_id: channel,
            thread_id: Some(thread_ts.unwrap_or(ts)),
            text,
            sent_at,
            reply_context,
        }))
    }
}

/// A message `ts` ("1531420618.000200") is its time: seconds, a dot, microseconds.
fn ts_time(ts: &str) -> Option<DateTime<Utc>> {
    let (secs, micros) = ts.split_once('.').unwrap_or((ts, "0"));
    DateTime::from_timestamp(
        secs.parse().ok()?,
        micros.parse::<u32>().ok()?.checked_mul(1000)?,
    )
}

/// An app mention starts with `<@BOTID>`, addressing us; the question is what follows.
fn strip_leading_mention(text: &str) -> &str {
    let trimmed = text.trim_start();
    trimmed
        .strip_prefix("<@")
        .and_then(|rest| rest.split_once('>'))
        .map_or(trimmed, |(_, question)| question.trim_start())
}

/// Who the token belongs to, as `auth.test` says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AuthTest {
    pub team_id: String,
    pub user_id: String,
    pub bot_id: Option<String>,
}

/// A client for the Slack Web API methods parley uses.
#[derive(Clone)]
pub struct SlackClient {
    http: reqwest::Client,
    api_base: String,
    bot_token: String,
}

impl fmt::Debug for SlackClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackClient")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

impl SlackClient {
    /// `api_base` is e.g. `https://slack.com/api`; `bot_token` the `xoxb-…` token.
    pub fn new(http: reqwest::Client, api_base: &str, bot_token: &str) -> Self {
        Self {
            http,
            api_base: api_base.trim_end_matches('/').to_owned(),
            bot_token: bot_token.to_owned(),
        }
    }

    /// `auth.test`: checks the token and tells whose it is.
    pub async fn auth_test(&self) -> ConnectorResult<AuthTest> {
        self.call("auth.test", json!({})).await
    }

    /// `chat.postMessage`, in the thread `thread_ts` if given. The message id is its `ts`.
    pub async fn post_message(
        &self,
        channel: &str,
        text: &str,
        thread_ts: Option<&str>,
    ) -> ConnectorResult<Sent> {
        let mut body = json!({ "channel": channel, "text": text });
        if let Some(thread_ts) = thread_ts {
            body["thread_ts"] = json!(thread_ts);
        }
        self.call::<Posted>("chat.postMessage", body)
            .await
            .map(Posted::into_sent)
    }

    /// `chat.update`: replaces the text of the message `ts` in `channel`.
    pub async fn update(&self, channel: &str, ts: &str, text: &str) -> ConnectorResult<Sent> {
        self.call::<Posted>(
            "chat.update",
            json!({ "channel": channel, "ts": ts, "text": text }),
        )
        .await
        .map(Posted::into_sent)
    }

    async fn call<T: DeserializeOwned>(&self, method: &str, body: Value) -> ConnectorResult<T> {
        let request = self
            .http
            .post(format!("{}/{method}", self.api_base))
            .bearer_auth(&self.bot_token)
            // Slack warns about JSON bodies without a charset.
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body.to_string());
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        if status.as_u16() == 429 {
            let wait = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map_or(FALLBACK_RETRY_AFTER, Duration::from_secs);
            return Err(ConnectorError::RateLimited(wait));
        }
        let body = response.bytes().await.map_err(transport)?;
        let unreadable = |e: serde_json::Error| {
            ConnectorError::Transport(format!(
                "slack answered {status} with an unreadable body: {e}"
            ))
        };
        let answer: Answer = serde_json::from_slice(&body).map_err(unreadable)?;
        if !answer.ok {
            return Err(ConnectorError::Refused {
                platform: "slack",
                status: status.as_u16(),
                code: answer.error.unwrap_or_else(|| status.as_u16().to_string()),
                message: match answer.needed {
                    Some(scope) => format!("{method} needs scope {scope}"),
                    None => format!("{method} failed"),
                },
            });
        }
        serde_json::from_slice(&body).map_err(unreadable)
    }
}

/// Every Web API answer: `{"ok":true,…}` or `{"ok":false,"error":…,"needed"?:…}`.
#[derive(Deserialize)]
struct Answer {
    ok: bool,
    error: Option<String>,
    /// The missing scope, with error `missing_scope`.
    needed: Option<String>,
}

/// What `chat.postMessage` and `chat.update` answer with, as far as we need it.
#[derive(Deserialize)]
struct Posted {
    ts: String,
}

impl Posted {
    fn into_sent(self) -> Sent {
        Sent {
            message_id: self.ts,
        }
    }
}

/// reqwest errors name the URL; Slack's holds no secret, but the causes are what matter
/// (connection refused, timeout, …), and no error of this crate should carry URLs.
fn transport(err: reqwest::Error) -> ConnectorError {
    ConnectorError::transport("slack", err)
}

const FIELDS: &[Field] = &[
    Field::text("bot_token").required().secret(),
    Field::text("signing_secret").required().secret(),
    Field::text("app_token").secret(),
    Field::text("channel_id"),
    Field::url("api_base"),
];

const SPEC: Spec = Spec {
    platform: PLATFORM,
    fields: FIELDS,
    // About one message per second per channel.
    rate_limits: RateLimits::platform(None, Some(1.0)),
};

/// Slack in the platform registry.
pub struct Slack;

impl PlatformKind for Slack {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn connect(&self, c: &Connect<'_>) -> Result<Box<dyn Channel>, String> {
        Ok(Box::new(SlackChannel {
            client: SlackClient::new(c.http.clone(), &c.api_base(API), &c.secret("bot_token")),
            signing_secret: c.secret("signing_secret"),
        }))
    }
}

struct SlackChannel {
    client: SlackClient,
    signing_secret: String,
}

#[async_trait]
impl Channel for SlackChannel {
    async fn verify(&self, req: &HookRequest, now: i64) -> ConnectorResult<Vec<Delivery>> {
        verify(
            &self.signing_secret,
            req.header("x-slack-request-timestamp"),
            req.header("x-slack-signature"),
            &req.body,
            now,
        )?;
        let retry = req
            .headers
            .get("x-slack-retry-num")
            .and_then(|v| v.to_str().ok());
        parse(&req.body, retry).map(|d| vec![d])
    }

    fn signed_recently(&self) -> bool {
        true
    }

    /// A mention in a channel the app reads comes as `message` and as `app_mention`,
    /// under two event ids: both share the channel and the message's `ts`.
    fn twin_id(&self, msg: &InboundMessage) -> Option<String> {
        let ts = msg.reply_context.get("ts")?.as_str()?;
        Some(format!("ts:{}:{ts}", msg.chat_id))
    }

    async fn activate(&self, _activation: &Activation<'_>) -> ConnectorResult<()> {
        self.client.auth_test().await.map(drop)
    }

    async fn check(&self) -> ConnectorResult<Value> {
        let auth = self.client.auth_test().await?;
        Ok(json!({"team_id": auth.team_id, "user_id": auth.user_id}))
    }

    fn max_chars(&self) -> usize {
        MAX_TEXT_CHARS
    }

    fn streams(&self) -> bool {
        true
    }

    async fn send(&self, to: &Target<'_>, text: &str) -> ConnectorResult<Sent> {
        self.client.post_message(to.chat, text, to.thread).await
    }

    async fn edit(&self, to: &Target<'_>, message_id: &str, text: &str) -> ConnectorResult<()> {
        self.client
            .update(to.chat, message_id, text)
            .await
            .map(drop)
    }
}
