//! Standard Webhooks: signed events to a customer's endpoint, and signed customer messages
//! from systems that speak the same scheme.
//!
//! Every message carries `webhook-id`, `webhook-timestamp` (unix seconds) and
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, a
//! space-separated list so a key can be rotated. Receivers accept timestamps within
//! [`TOLERANCE_SECS`] of their clock and treat `webhook-id` as an idempotency key.
//!
//! An incoming customer message is a JSON object:
//!
//! ```json
//! {"user_id": "cust-42", "user_name": "Ann", "chat_id": "order-7", "text": "Hello",
//!  "context": {"order": 7}}
//! ```
//!
//! `user_id` and `text` are required and non-empty; `chat_id` defaults to `user_id`;
//! `context` (any JSON) comes back as the message's reply context.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use parley_engine::agent::ValidationError;
use parley_engine::connection::{CheckedConfig, Field};
use parley_engine::inbound::{InboundMessage, Platform};
use parley_engine::rate_limits::RateLimits;
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Map;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::platform::{
    Activation, Channel, Connect, EventSink, HookAnswer, HookRequest, PlatformKind, Received, Spec,
    Target,
};
use crate::{ConnectorError, ConnectorResult, Delivery, Sent};

type HmacSha256 = Hmac<Sha256>;

/// How far a message's timestamp may be from the receiver's clock, either way.
/// The platform's name on connections and deliveries.
pub const PLATFORM: Platform = Platform::named("webhook");

pub const TOLERANCE_SECS: u64 = 5 * 60;

/// The wait after a 429 that names none: receivers that throttle rarely recover sooner.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The event type of [`test_event`].
pub const TEST_EVENT_TYPE: &str = "connection.test";

/// How much of a refusing receiver's body goes into the error (it is only a hint).
const MAX_ERROR_BODY_CHARS: usize = 200;

/// A signing key, parsed once from its `whsec_<base64>` form.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// Parses `whsec_<base64 key>`; like the reference libraries, the prefix is optional.
    pub fn parse(secret: &str) -> ConnectorResult<Self> {
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        match BASE64.decode(encoded) {
            Ok(key) if !key.is_empty() => Ok(WebhookSecret(key)),
            // The error never quotes the secret: it ends up in logs.
            _ => Err(ConnectorError::Malformed(
                "webhook secret is not whsec_<base64 key>".into(),
            )),
        }
    }

    fn mac(&self, msg_id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

/// Redacted: a secret must not reach logs through `{:?}`.
impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

/// The `webhook-signature` value (`v1,<base64>`) for one message.
pub fn sign(secret: &WebhookSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = secret.mac(msg_id, &timestamp.to_string(), body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// Checks a received message: its timestamp is within [`TOLERANCE_SECS`] of `now` (unix
/// seconds) and one of its `v1` signatures matches (compared in constant time).
pub fn verify(
    secret: &WebhookSecret,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> ConnectorResult<()> {
    let msg_id = required_header(headers, "webhook-id")?;
    let timestamp = required_header(headers, "webhook-timestamp")?;
    let signatures = required_header(headers, "webhook-signature")?;
    let sent: i64 = timestamp.parse().map_err(|_| {
        ConnectorError::Unauthorized("webhook-timestamp is not unix seconds".into())
    })?;
    if sent.abs_diff(now) > TOLERANCE_SECS {
        return Err(ConnectorError::Unauthorized(
            "webhook-timestamp is more than 5 minutes from now".into(),
        ));
    }
    // The signed bytes use the header exactly as sent, not a re-formatted number.
    let mac = secret.mac(msg_id, timestamp, body);
    let matches = signatures
        .split(' ')
        .filter_map(|candidate| candidate.strip_prefix("v1,"))
        .filter_map(|encoded| BASE64.decode(encoded).ok())
        .any(|signature| mac.clone().verify_slice(&signature).is_ok());
    if matches {
        Ok(())
    } else {
        Err(ConnectorError::Unauthorized(
            "no webhook-signature matches".into(),
        ))
    }
}

fn required_header<'a>(headers: &'a HeaderMap, name: &str) -> ConnectorResult<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| ConnectorError::Unauthorized(format!("missing {name} header")))
}

/// The documented shape of an incoming customer message (see the module docs).
#[derive(Deserialize)]
struct IncomingMessage {
    user_id: String,
    user_name: Option<String>,
    chat_id: Option<String>,
    text: String,
    #[serde(default)]
    context: Value,
}

/// Parses a verified incoming customer message; `webhook-id` becomes the dedup id and
/// `webhook-timestamp` the time it was sent.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> ConnectorResult<Delivery> {
    let malformed = |reason: &str| ConnectorError::Malformed(reason.to_string());
    let msg_id =
        required_header(headers, "webhook-id").map_err(|_| malformed("missing webhook-id"))?;
    let sent_at = required_header(headers, "webhook-timestamp")
        .ok()
        .and_then(|timestamp| timestamp.parse().ok())
        .and_then(|seconds| DateTime::<Utc>::from_timestamp(seconds, 0))
        .ok_or_else(|| malformed("webhook-timestamp is not unix seconds"))?;
    let message: IncomingMessage = serde_json::from_slice(body)
        .map_err(|e| ConnectorError::Malformed(format!("webhook message: {e}")))?;
    if message.user_id.is_empty() {
        return Err(malformed("user_id is empty"));
    }
    if message.text.is_empty() {
        return Err(malformed("text is empty"));
    }
    Ok(Delivery::Message(InboundMessage {
        platform: PLATFORM,
        dedup_id: msg_id.to_string(),
        chat_id: message.chat_id.unwrap_or_else(|| message.user_id.clone()),
        user_id: message.user_id,
        user_name: message.user_name,
        thread_id: None,
        text: message.text,
        sent_at,
        reply_context: message.context,
    }))
}

/// An event ready to send: its headers' values and the exact body they sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEvent {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: Vec<u8>,
}

/// Builds and signs an event in the Standard Webhooks payload convention:
/// `{"type": event_type, "timestamp": RFC 3339, "data": data}`.
pub fn event(
    secret: &WebhookSecret,
    msg_id: &str,
    event_type: &str,
    data: Value,
    now: DateTime<Utc>,
) -> SignedEvent {
    let body = json!({"type": event_type, "timestamp": now.to_rfc3339(), "data": data}).to_string();
    let timestamp = now.timestamp();
    SignedEvent {
        id: msg_id.to_string(),
        timestamp,
        signature: sign(secret, msg_id, timestamp, body.as_bytes()),
        body: body.into_bytes(),
    }
}

/// A signed `connection.test` event, for checking an endpoint when it is configured.
pub fn test_event(secret: &WebhookSecret, msg_id: &str, now: DateTime<Utc>) -> SignedEvent {
    event(
        secret,
        msg_id,
        TEST_EVENT_TYPE,
        json!({"message": "parley webhook test"}),
        now,
    )
}

/// Sends events to customers' endpoints. Timeouts and redirects are the given client's.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    http: reqwest::Client,
}

impl WebhookSender {
    pub fn new(http: reqwest::Client) -> Self {
        WebhookSender { http }
    }

    /// Signs and sends one event now. `msg_id` is the caller's, so a retry of the same
    /// event reuses it and the receiver can drop the duplicate.
    pub async fn deliver(
        &self,
        url: &str,
        secret: &WebhookSecret,
        msg_id: &str,
        event_type: &str,
        payload: Value,
    ) -> ConnectorResult<()> {
        let signed = event(secret, msg_id, event_type, payload, Utc::now());
        self.send(url, &signed).await
    }

    /// POSTs a signed event. 2xx is success; 410 is `Refused` with code `gone` (the
    /// caller disables the endpoint); 429 is `RateLimited` for its Retry-After seconds
    /// (else [`DEFAULT_RETRY_AFTER`]); any other status is `Refused` with the status as
    /// its code; an unreachable endpoint is `Transport`.
    pub async fn send(&self, url: &str, event: &SignedEvent) -> ConnectorResult<()> {
        let response = self
            .http
            .post(url)
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", event.timestamp.to_string())
            .header("webhook-signature", &event.signature)
            .header(CONTENT_TYPE, "application/json")
            .body(event.body.clone())
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ConnectorError::RateLimited(retry_after(response.headers())));
        }
        let code = if status == StatusCode::GONE {
            "gone".to_string()
        } else {
            status.as_u16().to_string()
        };
        let body = response.text().await.unwrap_or_default();
        Err(ConnectorError::Refused {
            platform: "webhook",
            status: status.as_u16(),
            code,
            message: body.chars().take(MAX_ERROR_BODY_CHARS).collect(),
        })
    }
}

fn retry_after(headers: &HeaderMap) -> Duration {
    crate::error::retry_after(headers).unwrap_or(DEFAULT_RETRY_AFTER)
}

/// The URL is left out: customers put access tokens in their endpoint URLs. The causes
/// are kept, since reqwest's own message ("error sending request") says little.
fn transport(error: reqwest::Error) -> ConnectorError {
    ConnectorError::transport("webhook endpoint", error)
}

const FIELDS: &[Field] = &[
    Field::url("url"),
    Field::text("secret").secret(),
    Field::text("incoming_secret").secret(),
    Field::url("api_base"),
];

const SPEC: Spec = Spec {
    platform: PLATFORM,
    fields: FIELDS,
    rate_limits: RateLimits::platform(None, None),
};

/// Signed webhooks (Standard Webhooks) in the platform registry: conversation events out
/// to `url`, customer messages in.
pub struct Webhook;

impl PlatformKind for Webhook {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn check_config(&self, config: &CheckedConfig) -> Vec<ValidationError> {
        match config.secrets.get("secret") {
            Some(secret) if !secret.starts_with("whsec_") => vec![ValidationError {
                path: "config.secret".into(),
                message: "must start with whsec_".into(),
            }],
            _ => Vec::new(),
        }
    }

    fn takes_events(&self, config: &Map<String, Value>) -> bool {
        config.get("url").is_some_and(Value::is_string)
    }

    fn connect(&self, c: &Connect<'_>) -> Result<Box<dyn Channel>, String> {
        let key = |k: &str| {
            c.config
                .secrets
                .get(k)
                .map(|s| WebhookSecret::parse(s).map_err(|e| format!("config.{k}: {e}")))
                .transpose()
        };
        Ok(Box::new(WebhookChannel {
            url: c.text("url"),
            secret: key("secret")?,
            incoming_secret: key("incoming_secret")?,
            sender: WebhookSender::new(c.http.clone()),
        }))
    }
}

struct WebhookChannel {
    url: Option<String>,
    secret: Option<WebhookSecret>,
    incoming_secret: Option<WebhookSecret>,
    sender: WebhookSender,
}

#[async_trait]
impl Channel for WebhookChannel {
    async fn verify(&self, req: &HookRequest, now: i64) -> ConnectorResult<Vec<Delivery>> {
        let Some(key) = &self.incoming_secret else {
            return Err(ConnectorError::Unauthorized(
                "this connection has no incoming_secret: it takes no incoming messages".into(),
            ));
        };
        verify(key, &req.headers, &req.body, now)?;
        parse(&req.headers, &req.body).map(|d| vec![d])
    }

    /// Senders learn what was taken: 202 with the counts.
    fn answer(&self, received: &Received) -> HookAnswer {
        match &received.handshake {
            Some(challenge) => HookAnswer::text(200, challenge.clone()),
            None => HookAnswer::json(
                202,
                json!({"accepted": received.accepted, "duplicates": received.duplicates}),
            ),
        }
    }

    fn signed_recently(&self) -> bool {
        true
    }

    async fn activate(&self, _activation: &Activation<'_>) -> ConnectorResult<()> {
        Ok(())
    }

    /// Sends a signed test event.
    async fn check(&self) -> ConnectorResult<Value> {
        let (Some(url), Some(key)) = (&self.url, &self.secret) else {
            return Err(ConnectorError::Config(
                "config.url and config.secret are needed to send a signed test event".into(),
            ));
        };
        let msg_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        self.sender
            .send(url, &test_event(key, &msg_id, Utc::now()))
            .await?;
        Ok(json!({"delivered_to": url}))
    }

    fn max_chars(&self) -> usize {
        usize::MAX
    }

    /// Answers go out as `message.created` events.
    fn replies_in_chat(&self) -> bool {
        false
    }

    async fn send(&self, _to: &Target<'_>, _text: &str) -> ConnectorResult<Sent> {
        Err(ConnectorError::Unsupported(
            "webhook answers go out as events".into(),
        ))
    }

    fn events(&self) -> Option<&dyn EventSink> {
        (self.url.is_some() && self.secret.is_some()).then_some(self as &dyn EventSink)
    }
}

#[async_trait]
impl EventSink for WebhookChannel {
    async fn deliver(&self, id: &str, body: &[u8]) -> ConnectorResult<()> {
        let (Some(url), Some(secret)) = (&self.url, &self.secret) else {
            return Err(ConnectorError::Config(
                "this connection has no url and secret to deliver events with".into(),
            ));
        };
        let timestamp = Utc::now().timestamp();
        let signed = SignedEvent {
            signature: sign(secret, id, timestamp, body),
            id: id.to_string(),
            timestamp,
            body: body.to_vec(),
        };
        self.sender.send(url, &signed).await
    }
}
