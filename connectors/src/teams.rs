//! Microsoft Teams through the Bot Framework: the JWT on every inbound activity, the
//! activity itself, and replies and edits through the Bot Connector with an app token.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parley_engine::connection::Field;
use parley_engine::inbound::{InboundMessage, Platform};
use parley_engine::rate_limits::RateLimits;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::platform::{Activation, Channel, Connect, HookRequest, PlatformKind, Spec, Target};
use crate::{ConnectorError, ConnectorResult, Delivery, Sent};

/// The issuer of the tokens the Bot Framework sends bots.
/// The platform's name on connections and deliveries.
pub const PLATFORM: Platform = Platform::named("teams");

/// Where app tokens come from, unless a connection's `api_base` says otherwise.
pub const TOKEN_ENDPOINT: &str =
    "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token";

/// Where the keys that sign inbound activities are published.
pub const OPENID_METADATA: &str =
    "https://login.botframework.com/v1/.well-known/openidconfiguration";

/// The longest message text parley sends.
pub const MAX_TEXT_CHARS: usize = 28_000;

pub const BOT_FRAMEWORK_ISSUER: &str = "https://api.botframework.com";

/// The scope of the token a bot calls the Bot Connector with.
pub const TOKEN_SCOPE: &str = "https://api.botframework.com/.default";

/// Clock skew tolerated on `exp` and `nbf`, as the Bot Framework SDKs do.
pub const LEEWAY: Duration = Duration::from_secs(5 * 60);

/// Keys are refetched when a token names an unknown one, but no more often than this, so
/// tokens with made-up key ids cannot make us hammer the key endpoint.
pub const MIN_KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// How long before its expiry an app token is replaced, so none expires in flight.
const TOKEN_RENEWAL_MARGIN: Duration = Duration::from_secs(5 * 60);

/// The wait after a 429 that names none.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What a verified Bot Framework token says. Every field but `nbf` is required.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    pub nbf: Option<i64>,
    /// The Bot Connector the token was issued for. The SDKs read the claim as
    /// `serviceurl`; the documentation writes `serviceUrl`: both are accepted.
    #[serde(rename = "serviceurl", alias = "serviceUrl")]
    pub service_url: String,
}

impl Claims {
    /// The token's `serviceurl` must be the activity's `serviceUrl`, else a stolen token
    /// could point our replies elsewhere.
    pub fn check_service_url(&self, activity_service_url: &str) -> ConnectorResult<()> {
        if self.service_url != activity_service_url {
            return Err(unauthorized(
                "token's serviceurl is not the activity's serviceUrl",
            ));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct OpenIdMetadata {
    jwks_uri: String,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kid: Option<String>,
    kty: String,
    n: Option<String>,
    e: Option<String>,
}

struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    refreshed_at: Option<Instant>,
}

/// Verifies the `Authorization` header of inbound activities against the keys the
/// OpenID metadata names. Keys are fetched on first use and cached.
pub struct TeamsVerifier {
    http: reqwest::Client,
    openid_metadata_url: String,
    validation: Validation,
    keys: Mutex<KeyCache>,
}

impl TeamsVerifier {
    /// `openid_metadata_url` is the Bot Framework's
    /// `https://login.botframework.com/v1/.well-known/openidconfiguration`; `app_id` is
    /// the bot's Microsoft app id, the tokens' audience.
    pub fn new(
        http: reqwest::Client,
        openid_metadata_url: impl Into<String>,
        app_id: &str,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[BOT_FRAMEWORK_ISSUER]);
        validation.set_audience(&[app_id]);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_nbf = true;
        TeamsVerifier {
            http,
            openid_metadata_url: openid_metadata_url.into(),
            validation,
            keys: Mutex::new(KeyCache {
                keys: HashMap::new(),
                refreshed_at: None,
            }),
        }
    }

    /// Verifies `Bearer <JWT>`: RS256 with a published key, issuer, audience, `exp` and
    /// `nbf` within [`LEEWAY`]. It needs nothing from the body, so an unauthenticated
    /// delivery is refused before its body is read; the caller then checks the activity's
    /// `serviceUrl` with [`Claims::check_service_url`]. A failed check is `Unauthorized`
    /// with the reason; unreachable key endpoints are `Transport`.
    pub async fn verify(&self, authorization_header: &str) -> ConnectorResult<Claims> {
        let token = match authorization_header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(unauthorized("Authorization is not a Bearer token")),
        };
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| unauthorized(&format!("unreadable token: {e}")))?;
        if header.alg != Algorithm::RS256 {
            return Err(unauthorized("token is not signed with RS256"));
        }
        let kid = header
            .kid
            .ok_or_else(|| unauthorized("token names no key"))?;
        let key = self.key(&kid).await?;
        Ok(
            jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
                .map_err(rejection)?
                .claims,
        )
    }

    /// The key with this id, refetching the key set when it is unknown (at most once per
    /// [`MIN_KEY_REFRESH_INTERVAL`]). The lock is held while fetching, so concurrent
    /// deliveries wait for one fetch instead of each making their own.
    async fn key(&self, kid: &str) -> ConnectorResult<DecodingKey> {
        let mut cache = self.keys.lock().await;
        if let Some(key) = cache.keys.get(kid) {
            return Ok(key.clone());
        }
        let may_refresh = cache
            .refreshed_at
            .is_none_or(|at| at.elapsed() >= MIN_KEY_REFRESH_INTERVAL);
        if may_refresh {
            cache.keys = self.fetch_keys().await?;
            cache.refreshed_at = Some(Instant::now());
        }
        cache
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| unauthorized("token is signed with an unknown key"))
    }

    async fn fetch_keys(&self) -> ConnectorResult<HashMap<String, DecodingKey>> {
        let metadata: OpenIdMetadata = self.get_json(&self.openid_metadata_url).await?;
        let set: JwkSet = self.get_json(&metadata.jwks_uri).await?;
        Ok(set
            .keys
            .into_iter()
            .filter(|jwk| jwk.kty == "RSA")
            .filter_map(|jwk| {
                let key = DecodingKey::from_rsa_components(jwk.n.as_ref()?, jwk.e.as_ref()?);
                Some((jwk.kid?, key.ok()?))
            })
            .collect())
    }

    async fn get_json<T: DeserializeOwned>(&self, url: &str) -> ConnectorResult<T> {
        let response = self.http.get(url).send().await.map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(ConnectorError::Transport(format!(
                "teams key endpoint {url} answered {status}"
            )));
        }
        response.json().await.map_err(|e| {
            ConnectorError::Transport(format!("teams key endpoint {url} answered: {e}"))
        })
    }
}

fn unauthorized(reason: &str) -> ConnectorError {
    ConnectorError::Unauthorized(reason.to_string())
}

fn rejection(error: jsonwebtoken::errors::Error) -> ConnectorError {
    let reason = match error.kind() {
        ErrorKind::ExpiredSignature => "token expired".to_string(),
        ErrorKind::ImmatureSignature => "token not valid yet".to_string(),
        ErrorKind::InvalidIssuer => format!("token issuer is not {BOT_FRAMEWORK_ISSUER}"),
        ErrorKind::InvalidAudience => "token audience is not this bot's app id".to_string(),
        ErrorKind::InvalidSignature => "token signature does not match".to_string(),
        // Claims are read before they are checked, so a missing one shows here.
        ErrorKind::Json(e) => format!("token claims unreadable: {e}"),
        _ => format!("invalid token: {error}"),
    };
    ConnectorError::Unauthorized(reason)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Activity {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    timestamp: Option<DateTime<Utc>>,
    service_url: Option<String>,
    from: Option<Account>,
    conversation: Option<Account>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct Account {
    id: String,
    name: Option<String>,
}

/// Parses a verified activity: a `message` with text becomes `Message`; anything else
/// (conversationUpdate, typing, card submits without text) is `Ignored`.
pub fn parse(body: &[u8]) -> ConnectorResult<Delivery> {
    let activity: Activity = serde_json::from_slice(body)
        .map_err(|e| ConnectorError::Malformed(format!("teams activity: {e}")))?;
    if activity.kind != "message" {
        return Ok(Delivery::Ignored("teams activity is not a message"));
    }
    let Some(text) = activity.text.filter(|text| !text.is_empty()) else {
        return Ok(Delivery::Ignored("teams message without text"));
    };
    let missing = |field: &str| ConnectorError::Malformed(format!("teams message without {field}"));
    let id = activity.id.ok_or_else(|| missing("id"))?;
    let service_url = activity.service_url.ok_or_else(|| missing("serviceUrl"))?;
    let from = activity.from.ok_or_else(|| missing("from"))?;
    let conversation = activity
        .conversation
        .ok_or_else(|| missing("conversation"))?;
    let sent_at = activity.timestamp.ok_or_else(|| missing("timestamp"))?;
    Ok(Delivery::Message(InboundMessage {
        platform: PLATFORM,
        reply_context: json!({
            "service_url": service_url,
            "activity_id": id,
            "conversation_id": conversation.id,
        }),
        dedup_id: id,
        user_id: from.id,
        user_name: from.name,
        chat_id: conversation.id,
        thread_id: None,
        text,
        sent_at,
    }))
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Seconds; some endpoints send it as a string.
    expires_in: Value,
}

#[derive(Deserialize)]
struct TokenError {
    error: String,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct ConnectorErrorBody {
    error: ConnectorErrorDetail,
}

#[derive(Deserialize)]
struct ConnectorErrorDetail {
    code: String,
    message: Option<String>,
}

#[derive(Deserialize)]
struct ResourceResponse {
    id: String,
}

struct AppToken {
    value: String,
    renew_at: Instant,
}

/// Replies and edits through the Bot Connector, with an app token from the client
/// credentials grant, cached until shortly before it expires.
pub struct TeamsClient {
    http: reqwest::Client,
    token_endpoint: String,
    app_id: String,
    app_password: String,
    token: Mutex<Option<AppToken>>,
}

/// The password and token stay out of `{:?}`.
impl std::fmt::Debug for TeamsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeamsClient")
            .field("token_endpoint", &self.token_endpoint)
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl TeamsClient {
    /// `token_endpoint` is e.g.
    /// `https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token`.
    pub fn new(
        http: reqwest::Client,
        token_endpoint: impl Into<String>,
        app_id: impl Into<String>,
        app_password: impl Into<String>,
    ) -> Self {
        TeamsClient {
            http,
            token_endpoint: token_endpoint.into(),
            app_id: app_id.into(),
            app_password: app_password.into(),
            token: Mutex::new(None),
        }
    }

    /// Answers an activity in its conversation; returns the reply's activity id.
    pub async fn reply(
        &self,
        service_url: &str,
        conversation_id: &str,
        activity_id: &str,
        text: &str,
    ) -> ConnectorResult<Sent> {
        let url = activity_url(service_url, conversation_id, activity_id)?;
        let body = json!({ "type": "message", "text": text });
        let answer = self.call(Method::POST, url, body).await?;
        let response: ResourceResponse = serde_json::from_slice(&answer).map_err(|e| {
            ConnectorError::Transport(format!("teams answered an unreadable reply id: {e}"))
        })?;
        Ok(Sent {
            message_id: response.id,
        })
    }

    /// Replaces the text of an activity the bot sent.
    pub async fn update(
        &self,
        service_url: &str,
        conversation_id: &str,
        activity_id: &str,
        text: &str,
    ) -> ConnectorResult<()> {
        let url = activity_url(service_url, conversation_id, activity_id)?;
        let body = json!({ "type": "message", "id": activity_id, "text": text });
        // The answer (the activity id again, or nothing) tells nothing new.
        self.call(Method::PUT, url, body).await.map(drop)
    }

    /// Calls the Bot Connector. A 401 drops the cached token, so the next call gets a
    /// fresh one; a 429 is `RateLimited`; other errors are `Refused` with the error code.
    /// Returns the body of a success.
    async fn call(&self, method: Method, url: Url, body: Value) -> ConnectorResult<Bytes> {
        let token = self.token().await?;
        let response = self
            .http
            .request(method, url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status.is_success() {
            return response.bytes().await.map_err(transport);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ConnectorError::RateLimited(retry_after(response.headers())));
        }
        if status == StatusCode::UNAUTHORIZED {
            *self.token.lock().await = None;
        }
        let text = response.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<ConnectorErrorBody>(&text) {
            Ok(body) => (body.error.code, body.error.message.unwrap_or_default()),
            Err(_) => (
                status.as_u16().to_string(),
                text.chars().take(200).collect(),
            ),
        };
        Err(ConnectorError::Refused {
            platform: "teams",
            status: status.as_u16(),
            code,
            message,
        })
    }

    /// Checks the app id and password by getting a token (the connection's `test`).
    pub async fn check_credentials(&self) -> ConnectorResult<()> {
        self.token().await.map(|_| ())
    }

    /// The cached app token, or a new one. The lock is held while fetching, so concurrent
    /// sends share one token request.
    async fn token(&self) -> ConnectorResult<String> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached
            .as_ref()
            .filter(|token| Instant::now() < token.renew_at)
        {
            return Ok(token.value.clone());
        }
        let response = self
            .http
            .post(&self.token_endpoint)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &self.app_id),
                ("client_secret", &self.app_password),
                ("scope", TOKEN_SCOPE),
            ])
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ConnectorError::RateLimited(retry_after(response.headers())));
        }
        let text = response.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(token_error(status, &text));
        }
        let token: TokenResponse = serde_json::from_str(&text).map_err(|e| {
            ConnectorError::Transport(format!("teams token endpoint answered: {e}"))
        })?;
        let lifetime = token
            .expires_in
            .as_u64()
            .or_else(|| token.expires_in.as_str()?.parse().ok())
            .map(Duration::from_secs)
            .ok_or_else(|| {
                ConnectorError::Transport("teams token endpoint sent no expires_in".into())
            })?;
        // Short-lived tokens are renewed at half their life rather than never cached.
        let margin = TOKEN_RENEWAL_MARGIN.min(lifetime / 2);
        *cached = Some(AppToken {
            value: token.access_token.clone(),
            renew_at: Instant::now() + lifetime - margin,
        });
        Ok(token.access_token)
    }
}

/// The token endpoint's OAuth error (`invalid_client` for a wrong id or password) as
/// `Refused`; its description never holds the secret.
fn token_error(status: StatusCode, body: &str) -> ConnectorError {
    let (code, message) = match serde_json::from_str::<TokenError>(body) {
        Ok(error) => (error.error, error.error_description.unwrap_or_default()),
        Err(_) if status == StatusCode::UNAUTHORIZED => {
            ("invalid_client".to_string(), String::new())
        }
        Err(_) => (
            status.as_u16().to_string(),
            body.chars().take(200).collect(),
        ),
    };
    ConnectorError::Refused {
        platform: "teams",
        status: status.as_u16(),
        code,
        message,
    }
}

/// `{service_url}/v3/conversations/{conversation_id}/activities/{activity_id}`, each id
/// escaped as one path segment (Teams conversation ids hold `:`, `;` and `@`).
fn activity_url(
    service_url: &str,
    conversation_id: &str,
    activity_id: &str,
) -> ConnectorResult<Url> {
    let mut url = Url::parse(service_url)
        .map_err(|e| ConnectorError::Malformed(format!("teams serviceUrl: {e}")))?;
    url.path_segments_mut()
        .map_err(|_| ConnectorError::Malformed("teams serviceUrl cannot be a base".into()))?
        .pop_if_empty()
        .extend([
            "v3",
            "conversations",
            conversation_id,
            "activities",
            activity_id,
        ]);
    Ok(url)
}

fn retry_after(headers: &HeaderMap) -> Duration {
    crate::error::retry_after(headers).unwrap_or(DEFAULT_RETRY_AFTER)
}

/// reqwest's message alone ("error sending request") says little, so causes are kept.
fn transport(error: reqwest::Error) -> ConnectorError {
    ConnectorError::transport("teams", error)
}

const FIELDS: &[Field] = &[
    Field::text("app_id").required(),
    Field::text("app_password").required().secret(),
    Field::text("tenant_id"),
    Field::url("openid_metadata_url"),
    Field::url("api_base"),
];

const SPEC: Spec = Spec {
    platform: PLATFORM,
    fields: FIELDS,
    // Teams throttles by its own answers (429 with Retry-After).
    rate_limits: RateLimits::platform(None, None),
};

/// Microsoft Teams (Bot Framework) in the platform registry.
pub struct Teams;

impl PlatformKind for Teams {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn connect(&self, c: &Connect<'_>) -> Result<Box<dyn Channel>, String> {
        let app_id = c.text("app_id").unwrap_or_default();
        Ok(Box::new(TeamsChannel {
            client: TeamsClient::new(
                c.http.clone(),
                c.api_base(TOKEN_ENDPOINT),
                app_id.clone(),
                c.secret("app_password"),
            ),
            verifier: TeamsVerifier::new(
                c.http.clone(),
                c.text("openid_metadata_url")
                    .unwrap_or_else(|| OPENID_METADATA.into()),
                &app_id,
            ),
        }))
    }
}

struct TeamsChannel {
    client: TeamsClient,
    verifier: TeamsVerifier,
}

#[async_trait]
impl Channel for TeamsChannel {
    /// The token is verified before the body is read (an unauthenticated 10 MB body is
    /// never parsed); its serviceUrl claim must then match the activity's.
    async fn verify(&self, req: &HookRequest, _now: i64) -> ConnectorResult<Vec<Delivery>> {
        let claims = self.verifier.verify(req.header("authorization")).await?;
        let service_url = serde_json::from_slice::<Value>(&req.body)
            .ok()
            .and_then(|v| {
                v.get("serviceUrl")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_default();
        claims.check_service_url(&service_url)?;
        parse(&req.body).map(|d| vec![d])
    }

    fn signed_recently(&self) -> bool {
        true
    }

    async fn activate(&self, _activation: &Activation<'_>) -> ConnectorResult<()> {
        self.client.check_credentials().await
    }

    async fn check(&self) -> ConnectorResult<Value> {
        self.client.check_credentials().await?;
        Ok(json!({"token": "obtained"}))
    }

    fn max_chars(&self) -> usize {
        MAX_TEXT_CHARS
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
        self.client
            .reply(
                to.context("service_url")?,
                to.context("conversation_id")?,
                to.context("activity_id")?,
                text,
            )
            .await
    }
}
