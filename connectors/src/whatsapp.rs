//! WhatsApp Cloud API: the webhook's subscription handshake and `X-Hub-Signature-256`,
//! its notifications (messages and statuses), and sending through the Graph API.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::DateTime;
use hmac::{Hmac, Mac};
use parley_engine::connection::{Field, Kind};
use parley_engine::inbound::{InboundMessage, Platform};
use parley_engine::rate_limits::RateLimits;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::platform::{
    Activation, Channel, Connect, HookRequest, PlatformKind, Spec, Target, Template,
};
use crate::{ConnectorError, ConnectorResult, Delivery, Sent};

/// The most characters one text message may carry.
pub const MAX_TEXT_CHARS: usize = 4096;

/// The platform's name on connections and deliveries.
pub const PLATFORM: Platform = Platform::named("whatsapp");

/// The public Graph API, used when a connection sets no `api_base`.
pub const API: &str = "https://graph.facebook.com/v21.0";

/// Error 130429: the number's throughput (80 msg/s by default) is exceeded; the limit is
/// per second, so a second's wait clears it.
pub const THROUGHPUT_LIMIT_WAIT: Duration = Duration::from_secs(1);

/// Error 131056: too many messages to one recipient from one number. Meta allows about one
/// message every 6 seconds per pair (secondary sources), so wait that long.
pub const PAIR_LIMIT_WAIT: Duration = Duration::from_secs(6);

/// The wait after an HTTP 429 that names none.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The `Refused` code when the customer's 24-hour window is closed: only a template may
/// be sent.
pub const OUTSIDE_WINDOW: &str = "131047";
const THROUGHPUT_LIMIT: i64 = 130429;
const PAIR_LIMIT: i64 = 131056;

/// Answers the GET handshake Meta makes when the webhook is configured: the challenge to
/// echo when the mode is `subscribe` and the verify token matches ours.
pub fn verify_subscription(
    mode: &str,
    verify_token: &str,
    challenge: &str,
    expected_token: &str,
) -> ConnectorResult<String> {
    if mode != "subscribe" {
        return Err(ConnectorError::Unauthorized(
            "hub.mode is not subscribe".into(),
        ));
    }
    if !constant_time_eq(verify_token.as_bytes(), expected_token.as_bytes()) {
        return Err(ConnectorError::Unauthorized(
            "hub.verify_token does not match".into(),
        ));
    }
    Ok(challenge.to_string())
}

/// A comparison whose time does not depend on where the inputs differ, so the token
/// cannot be guessed byte by byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app_secret, body)>` in constant
/// time.
pub fn verify(app_secret: &str, signature_header: &str, body: &[u8]) -> ConnectorResult<()> {
    let unauthorized = |reason: &str| ConnectorError::Unauthorized(reason.to_string());
    let hex_signature = signature_header
        .strip_prefix("sha256=")
        .ok_or_else(|| unauthorized("X-Hub-Signature-256 is not sha256=<hex>"))?;
    let signature = hex::decode(hex_signature)
        .map_err(|_| unauthorized("X-Hub-Signature-256 is not sha256=<hex>"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| unauthorized("X-Hub-Signature-256 does not match"))
}

#[derive(Deserialize)]
struct Notification {
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    value: ChangeValue,
}

#[derive(Deserialize)]
struct ChangeValue {
    metadata: Option<Metadata>,
    #[serde(default)]
    contacts: Vec<Contact>,
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    statuses: Vec<Status>,
}

#[derive(Deserialize)]
struct Metadata {
    phone_number_id: String,
}

#[derive(Deserialize)]
struct Contact {
    wa_id: Option<String>,
    profile: Option<Profile>,
}

#[derive(Deserialize)]
struct Profile {
    name: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    from: String,
    id: String,
    timestamp: String,
    #[serde(rename = "type")]
    kind: String,
    text: Option<Text>,
}

#[derive(Deserialize)]
struct Text {
    body: String,
}

#[derive(Deserialize)]
struct Status {
    id: String,
    status: String,
    #[serde(default)]
    errors: Vec<StatusError>,
}

#[derive(Deserialize)]
struct StatusError {
    code: i64,
    title: Option<String>,
    message: Option<String>,
}

/// Parses a verified notification. One POST can carry several messages and statuses, in
/// order: text messages become `Message`, statuses `Status`, other message types
/// (images, reactions, …) `Ignored`.
pub fn parse(body: &[u8]) -> ConnectorResult<Vec<Delivery>> {
    let notification: Notification = serde_json::from_slice(body)
        .map_err(|e| ConnectorError::Malformed(format!("whatsapp notification: {e}")))?;
    let mut deliveries = Vec::new();
    for value in notification
        .entry
        .into_iter()
        .flat_map(|entry| entry.changes)
        .map(|change| change.value)
    {
        for message in &value.messages {
            deliveries.push(message_delivery(&value, message)?);
        }
        deliveries.extend(value.statuses.into_iter().map(status_delivery));
    }
    Ok(deliveries)
}

fn message_delivery(value: &ChangeValue, message: &Message) -> ConnectorResult<Delivery> {
    let Some(text) = message.text.as_ref().filter(|_| message.kind == "text") else {
        return Ok(Delivery::Ignored("whatsapp message is not text"));
    };
    let phone_number_id = value
        .metadata
        .as_ref()
        .map(|metadata| metadata.phone_number_id.clone())
        .ok_or_else(|| ConnectorError::Malformed("message without metadata".into()))?;
    let sent_at = message
        .timestamp
        .parse()
        .ok()
        .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
        .ok_or_else(|| ConnectorError::Malformed("message timestamp is not unix seconds".into()))?;
    Ok(Delivery::Message(InboundMessage {
        platform: PLATFORM,
        dedup_id: message.id.clone(),
        user_id: message.from.clone(),
        user_name: contact_name(&value.contacts, &message.from),
        chat_id: message.from.clone(),
        thread_id: None,
        text: text.body.clone(),
        sent_at,
        reply_context: json!({ "phone_number_id": phone_number_id }),
    }))
}

/// The sender's profile name. A contact's `wa_id` can differ from `from` (Brazilian
/// numbers gain a digit), so a lone contact is taken as the sender.
fn contact_name(contacts: &[Contact], from: &str) -> Option<String> {
    let contact = match contacts {
        [only] => Some(only),
        _ => contacts
            .iter()
            .find(|contact| contact.wa_id.as_deref() == Some(from)),
    };
    contact?.profile.as_ref()?.name.clone()
}

fn status_delivery(status: Status) -> Delivery {
    let error = status.errors.into_iter().next().map(|error| {
        let title = error.title.or(error.message).unwrap_or_default();
        format!("{}: {title}", error.code)
    });
    Delivery::Status {
        message_id: status.id,
        status: status.status,
        error,
    }
}

/// Splits text into parts of at most `max` characters that concatenate back to it.
/// A part ends after the last newline, else the last whitespace, in its second half, so
/// words stay whole; a part without such a break is cut at `max` characters.
fn split_text(text: &str, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some((limit, _)) = rest.char_indices().nth(max) {
        let head = &rest[..limit];
        let half = head.char_indices().nth(max / 2).map_or(0, |(at, _)| at);
        let after_break = |at: usize| {
            let width = head[at..].chars().next().map_or(1, char::len_utf8);
            Some(at + width).filter(|_| at >= half)
        };
        let cut = head
            .rfind('\n')
            .and_then(after_break)
            .or_else(|| head.rfind(char::is_whitespace).and_then(after_break))
            .unwrap_or(limit);
        parts.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    parts.push(rest);
    parts
}

/// A business phone number, as `GET /{phone_number_id}` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PhoneNumber {
    pub id: String,
    pub display_phone_number: String,
    pub verified_name: Option<String>,
    pub quality_rating: Option<String>,
}

#[derive(Deserialize)]
struct SendResponse {
    messages: Vec<SentMessage>,
}

#[derive(Deserialize)]
struct SentMessage {
    id: String,
}

#[derive(Deserialize)]
struct GraphErrorBody {
    error: GraphError,
}

#[derive(Deserialize)]
struct GraphError {
    message: String,
    code: i64,
    fbtrace_id: Option<String>,
}

/// Calls the Graph API with a system user's access token.
#[derive(Clone)]
pub struct WhatsAppClient {
    http: reqwest::Client,
    graph_base: String,
    access_token: String,
}

/// The token stays out of `{:?}`.
impl std::fmt::Debug for WhatsAppClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhatsAppClient")
            .field("graph_base", &self.graph_base)
            .finish_non_exhaustive()
    }
}

impl WhatsAppClient {
    /// `graph_base` includes the API version, e.g. `https://graph.facebook.com/v21.0`.
    pub fn new(
        http: reqwest::Client,
        graph_base: impl Into<String>,
        access_token: impl Into<String>,
    ) -> Self {
        WhatsAppClient {
            http,
            graph_base: graph_base.into(),
            access_token: access_token.into(),
        }
    }

    /// Looks a business phone number up (to check configuration and show its number).
    pub async fn phone_number(&self, phone_number_id: &str) -> ConnectorResult<PhoneNumber> {
        let request = self.http.get(self.url(&[phone_number_id])?);
        self.call(request).await
    }

    /// Sends text from a business number; text over [`MAX_TEXT_CHARS`] goes as several
    /// messages, in order. Returns the last message's id. When a part fails, the parts
    /// before it have been sent.
    pub async fn send_text(
        &self,
        phone_number_id: &str,
        to: &str,
        text: &str,
    ) -> ConnectorResult<Sent> {
        let mut sent = None;
        for part in split_text(text, MAX_TEXT_CHARS) {
            let body = json!({
                "messaging_product": "whatsapp",
                "to": to,
                "type": "text",
                "text": { "body": part },
            });
            sent = Some(self.send_message(phone_number_id, body).await?);
        }
        Ok(sent.expect("split_text yields at least one part"))
    }

    /// Sends an approved template, the only thing allowed outside the customer's 24-hour
    /// window. `components` holds its parameters; `null` sends none.
    pub async fn send_template(
        &self,
        phone_number_id: &str,
        to: &str,
        name: &str,
        language_code: &str,
        components: Value,
    ) -> ConnectorResult<Sent> {
        let mut template = json!({ "name": name, "language": { "code": language_code } });
        if !components.is_null() {
            template["components"] = components;
        }
        let body = json!({
            "messaging_product": "whatsapp",
            "to": to,
            "type": "template",
            "template": template,
        });
        self.send_message(phone_number_id, body).await
    }

    async fn send_message(&self, phone_number_id: &str, body: Value) -> ConnectorResult<Sent> {
        let request = self
            .http
            .post(self.url(&[phone_number_id, "messages"])?)
            .json(&body);
        let response: SendResponse = self.call(request).await?;
        let message = response.messages.into_iter().next().ok_or_else(|| {
            ConnectorError::Transport("whatsapp accepted a message but named no id".into())
        })?;
        Ok(Sent {
            message_id: message.id,
        })
    }

    /// Path segments are appended one by one, so an id cannot change the path's shape.
    fn url(&self, segments: &[&str]) -> ConnectorResult<Url> {
        let mut url = Url::parse(&self.graph_base)
            .map_err(|e| ConnectorError::Transport(format!("whatsapp graph_base: {e}")))?;
        url.path_segments_mut()
            .map_err(|_| ConnectorError::Transport("whatsapp graph_base cannot be a base".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> ConnectorResult<T> {
        let response = request
            .bearer_auth(&self.access_token)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| {
                ConnectorError::Transport(format!("whatsapp answered unreadable JSON: {e}"))
            });
        }
        Err(graph_error(status, &headers, &body))
    }
}

/// Maps a Graph error. Rate limits become `RateLimited`: an HTTP 429 for its Retry-After
/// (else [`DEFAULT_RETRY_AFTER`]), codes 130429 and 131056 for [`THROUGHPUT_LIMIT_WAIT`]
/// and [`PAIR_LIMIT_WAIT`]. Everything else is `Refused` with the Graph code, e.g.
/// [`OUTSIDE_WINDOW`] when only a template may be sent.
fn graph_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ConnectorError {
    let error = serde_json::from_slice::<GraphErrorBody>(body)
        .ok()
        .map(|body| body.error);
    if status == StatusCode::TOO_MANY_REQUESTS {
        let wait = headers
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse().ok())
            .map_or(DEFAULT_RETRY_AFTER, Duration::from_secs);
        return ConnectorError::RateLimited(wait);
    }
    match error {
        Some(GraphError {
            code: THROUGHPUT_LIMIT,
            ..
        }) => ConnectorError::RateLimited(THROUGHPUT_LIMIT_WAIT),
        Some(GraphError {
            code: PAIR_LIMIT, ..
        }) => ConnectorError::RateLimited(PAIR_LIMIT_WAIT),
        Some(error) => ConnectorError::Refused {
            platform: "whatsapp",
            status: status.as_u16(),
            code: error.code.to_string(),
            // fbtrace_id is what Meta's support asks for.
            message: match error.fbtrace_id {
                Some(trace) => format!("{} (fbtrace_id {trace})", error.message),
                None => error.message,
            },
        },
        None => ConnectorError::Refused {
            platform: "whatsapp",
            status: status.as_u16(),
            code: status.as_u16().to_string(),
            message: String::from_utf8_lossy(body).chars().take(200).collect(),
        },
    }
}

/// reqwest's message alone ("error sending request") says little, so causes are kept.
fn transport(error: reqwest::Error) -> ConnectorError {
    ConnectorError::transport("whatsapp", error)
}

/// Which business number talks to which customer, when a tenant has several.
///
/// A customer stays on one number: the customer-service window and the conversation's
/// history belong to a number pair. A customer who wrote to one of our numbers is answered
/// from it; new customers are spread round-robin. Assignments live as long as the value
/// (one entry per customer), so the owner keeps or persists it as it sees fit.
#[derive(Debug, Clone)]
pub struct NumberRotation {
    phone_number_ids: Vec<String>,
    assigned: HashMap<String, usize>,
    next: usize,
}

impl NumberRotation {
    /// `None` without numbers: there is nothing to rotate.
    pub fn new(phone_number_ids: Vec<String>) -> Option<Self> {
        (!phone_number_ids.is_empty()).then(|| NumberRotation {
            phone_number_ids,
            assigned: HashMap::new(),
            next: 0,
        })
    }

    /// The number to send to `recipient` from. `wrote_to` is the number the customer
    /// wrote to, when known; a number that is not ours is disregarded.
    pub fn pick(&mut self, recipient: &str, wrote_to: Option<&str>) -> &str {
        let written = wrote_to.and_then(|number| {
            self.phone_number_ids
                .iter()
                .position(|candidate| candidate == number)
        });
        let index = match (written, self.assigned.get(recipient)) {
            (Some(index), _) | (None, Some(&index)) => index,
            (None, None) => {
                let index = self.next;
                self.next = (self.next + 1) % self.phone_number_ids.len();
                index
            }
        };
        self.assigned.insert(recipient.to_string(), index);
        &self.phone_number_ids[index]
    }
}

const FIELDS: &[Field] = &[
    Field::text("app_id").required(),
    Field::text("app_secret").required().secret(),
    Field::text("access_token").required().secret(),
    Field::new("phone_number_ids", Kind::TextList).required(),
    Field::text("business_account_id").required(),
    Field::text("verify_token").required().secret(),
    Field::url("api_base"),
];

const SPEC: Spec = Spec {
    platform: PLATFORM,
    fields: FIELDS,
    // 80 messages per second per business number.
    rate_limits: RateLimits::platform(None, Some(80.0)),
};

/// WhatsApp Cloud API in the platform registry.
pub struct Whatsapp;

impl PlatformKind for Whatsapp {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn connect(&self, c: &Connect<'_>) -> Result<Box<dyn Channel>, String> {
        let numbers = c.list("phone_number_ids");
        let first_number = numbers.first().cloned().unwrap_or_default();
        Ok(Box::new(WhatsappChannel {
            client: WhatsAppClient::new(c.http.clone(), c.api_base(API), c.secret("access_token")),
            app_secret: c.secret("app_secret"),
            verify_token: c.secret("verify_token"),
            numbers: std::sync::Mutex::new(
                NumberRotation::new(numbers)
                    .ok_or("config.phone_number_ids: no business number")?,
            ),
            first_number,
        }))
    }
}

struct WhatsappChannel {
    client: WhatsAppClient,
    app_secret: String,
    verify_token: String,
    numbers: std::sync::Mutex<NumberRotation>,
    /// What start and check look up.
    first_number: String,
}

impl WhatsappChannel {
    fn pick(&self, recipient: &str, wrote_to: Option<&str>) -> String {
        self.numbers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pick(recipient, wrote_to)
            .to_string()
    }
}

#[async_trait]
impl Channel for WhatsappChannel {
    async fn verify(&self, req: &HookRequest, _now: i64) -> ConnectorResult<Vec<Delivery>> {
        verify(
            &self.app_secret,
            req.header("x-hub-signature-256"),
            &req.body,
        )?;
        parse(&req.body)
    }

    fn subscribe(&self, query: &HashMap<String, String>) -> Option<ConnectorResult<String>> {
        let q = |k: &str| query.get(k).map(String::as_str).unwrap_or_default();
        Some(verify_subscription(
            q("hub.mode"),
            q("hub.verify_token"),
            q("hub.challenge"),
            &self.verify_token,
        ))
    }

    async fn activate(&self, _activation: &Activation<'_>) -> ConnectorResult<()> {
        self.client.phone_number(&self.first_number).await.map(drop)
    }

    async fn check(&self) -> ConnectorResult<Value> {
        let n = self.client.phone_number(&self.first_number).await?;
        Ok(json!({"phone_number_id": n.id, "display_phone_number": n.display_phone_number}))
    }

    fn max_chars(&self) -> usize {
        MAX_TEXT_CHARS
    }

    /// Sent, delivered and read come later as statuses.
    fn reports_delivery(&self) -> bool {
        true
    }

    /// The customer is answered from the number they wrote to; sends are limited per
    /// business number.
    fn reply_target<'m>(&self, msg: &'m InboundMessage) -> Target<'m> {
        let wrote_to = msg
            .reply_context
            .get("phone_number_id")
            .and_then(Value::as_str);
        let from = self.pick(&msg.user_id, wrote_to);
        Target {
            chat: &msg.user_id,
            thread: None,
            lane: Some(from.clone()),
            from: Some(from),
            reply_to: Some(msg),
        }
    }

    fn chat_target<'c>(
        &self,
        chat: &'c str,
        _thread: Option<&'c str>,
        via: Option<&str>,
    ) -> ConnectorResult<Target<'c>> {
        let from = self.pick(chat, via);
        Ok(Target {
            chat,
            thread: None,
            lane: Some(from.clone()),
            from: Some(from),
            reply_to: None,
        })
    }

    async fn send(&self, to: &Target<'_>, text: &str) -> ConnectorResult<Sent> {
        let from = to.from.as_deref().unwrap_or(&self.first_number);
        self.client.send_text(from, to.chat, text).await
    }

    async fn send_template(&self, to: &Target<'_>, template: &Template) -> ConnectorResult<Sent> {
        let from = to.from.as_deref().unwrap_or(&self.first_number);
        self.client
            .send_template(
                from,
                to.chat,
                &template.name,
                &template.language,
                template.components.clone(),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(numbers: &[&str]) -> Vec<String> {
        numbers.iter().map(|number| number.to_string()).collect()
    }

    #[test]
    fn new_recipients_rotate_and_each_stays_on_its_number() {
        let mut rotation = NumberRotation::new(ids(&["n1", "n2", "n3"])).unwrap();
        assert_eq!(rotation.pick("a", None), "n1");
        assert_eq!(rotation.pick("b", None), "n2");
        assert_eq!(rotation.pick("a", None), "n1");
        assert_eq!(rotation.pick("c", None), "n3");
        assert_eq!(rotation.pick("d", None), "n1");
        assert_eq!(rotation.pick("b", None), "n2");
    }

    #[test]
    fn the_number_a_customer_wrote_to_wins_and_sticks() {
        let mut rotation = NumberRotation::new(ids(&["n1", "n2"])).unwrap();
        assert_eq!(rotation.pick("a", None), "n1");
        assert_eq!(rotation.pick("a", Some("n2")), "n2");
        assert_eq!(rotation.pick("a", None), "n2");
        // A new customer who wrote to n2 does not advance the rotation.
        assert_eq!(rotation.pick("b", Some("n2")), "n2");
        assert_eq!(rotation.pick("c", None), "n2");
        assert_eq!(rotation.pick("d", None), "n1");
    }

    #[test]
    fn a_number_that_is_not_ours_is_disregarded() {
        let mut rotation = NumberRotation::new(ids(&["n1", "n2"])).unwrap();
        assert_eq!(rotation.pick("a", Some("elsewhere")), "n1");
        assert_eq!(rotation.pick("a", Some("elsewhere")), "n1");
        assert_eq!(rotation.pick("b", None), "n2");
    }

    #[test]
    fn no_numbers_no_rotation() {
        assert!(NumberRotation::new(Vec::new()).is_none());
    }

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split_text("hello", 10), vec!["hello"]);
        assert_eq!(split_text("", 10), vec![""]);
        assert_eq!(split_text("0123456789", 10), vec!["0123456789"]);
    }

    #[test]
    fn splits_prefer_newlines_then_spaces_in_the_second_half() {
        assert_eq!(
            split_text("aaaaaa\nbb cc dd", 10),
            vec!["aaaaaa\n", "bb cc dd"]
        );
        assert_eq!(split_text("aaaa bbbb cccc", 10), vec!["aaaa bbbb ", "cccc"]);
        // A break in the first half would make a tiny part: cut hard instead.
        assert_eq!(split_text("a bbbbbbbbbbbb", 10), vec!["a bbbbbbbb", "bbbb"]);
    }

    #[test]
    fn splits_count_characters_not_bytes() {
        let text = "ж".repeat(25);
        let parts = split_text(&text, 10);
        assert_eq!(
            parts.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            [10, 10, 5]
        );
        assert_eq!(parts.concat(), text);
        let spaced = "€€€ ".repeat(7);
        let parts = split_text(&spaced, 10);
        assert!(parts.iter().all(|part| part.chars().count() <= 10));
        assert_eq!(parts[0], "€€€ €€€ ");
        assert_eq!(parts.concat(), spaced);
    }
}
