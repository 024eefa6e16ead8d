//! Microsoft Teams: Bot Framework JWTs against a fake OpenID metadata + JWKS server, activity
//! parsing, and replies through a fake Bot Connector with a fake token endpoint.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parley_connectors::teams::{self, Claims, TeamsClient, TeamsVerifier};
use parley_connectors::{ConnectorError, Delivery, Sent};
use parley_engine::inbound::InboundMessage;
use serde_json::{json, Value};
use support::{dead_base, Fake, Recorded, Reply, TEST_KEY_E, TEST_KEY_N, TEST_KEY_PEM};

const APP_ID: &str = "8c5fd0a3-6c3a-4b57-9d41-3f1b2e0a7d11";
const APP_PASSWORD: &str = "app-password-very-secret";
const ISSUER: &str = "https://api.botframework.com";
const SERVICE_URL: &str = "https://smba.trafficmanager.net/amer/";

fn now() -> i64 {
    Utc::now().timestamp()
}

fn claims() -> Value {
    json!({
        "serviceurl": SERVICE_URL,
        "nbf": now() - 60,
        "exp": now() + 3600,
        "iss": ISSUER,
        "aud": APP_ID,
    })
}

fn sign_with(header: &Header, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(TEST_KEY_PEM.as_bytes()).unwrap();
    jsonwebtoken::encode(header, claims, &key).unwrap()
}

fn token(kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    sign_with(&header, claims)
}

fn with(claims: Value, field: &str, value: Value) -> Value {
    let mut claims = claims;
    claims[field] = value;
    claims
}

/// The Bot Framework's key publishing: `/openid` names `/keys`, which publishes the test
/// key under each key id in `kids` (changed by tests to rotate keys).
struct KeyServer {
    server: Fake,
    kids: Arc<Mutex<Vec<&'static str>>>,
}

impl KeyServer {
    async fn start(kids: &[&'static str]) -> Self {
        let kids = Arc::new(Mutex::new(kids.to_vec()));
        let published = kids.clone();
        let server = Fake::start(move |request: &Recorded| match request.path.as_str() {
            "/openid" => Reply::json(
                200,
                json!({
                    "issuer": ISSUER,
                    "authorization_endpoint": "https://invalid.botframework.com",
                    "jwks_uri": format!("http://{}/keys", request.header("host").unwrap()),
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "token_endpoint_auth_methods_supported": ["private_key_jwt"]
                }),
            ),
            "/keys" => {
                let mut keys: Vec<Value> = published
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|kid| {
                        json!({
                            "kty": "RSA",
                            "use": "sig",
                            "kid": kid,
                            "n": TEST_KEY_N,
                            "e": TEST_KEY_E,
                            "endorsements": ["msteams"]
                        })
                    })
                    .collect();
                // Keys of other kinds are skipped, not fatal.
                keys.push(
                    json!({"kty": "EC", "kid": "ec-key", "crv": "P-256", "x": "AA", "y": "AA"}),
                );
                Reply::json(200, json!({ "keys": keys }))
            }
            _ => Reply::json(500, json!({"error": "down"})),
        })
        .await;
        KeyServer { server, kids }
    }

    fn verifier(&self) -> TeamsVerifier {
        TeamsVerifier::new(
            reqwest::Client::new(),
            format!("{}/openid", self.server.base),
            APP_ID,
        )
    }

    /// How often the key set was fetched (metadata and keys are fetched together).
    fn key_fetches(&self) -> usize {
        let keys = self.server.requests_to("/keys").len();
        assert_eq!(self.server.requests_to("/openid").len(), keys);
        keys
    }
}

#[tokio::test]
async fn a_valid_token_verifies_and_keys_are_fetched_once() {
    let keys = KeyServer::start(&["k1"]).await;
    let verifier = keys.verifier();
    let claims = claims();
    let header = format!("Bearer {}", token("k1", &claims));
    let verified = verifier.verify(&header).await;
    assert_eq!(
        verified,
        Ok(Claims {
            iss: ISSUER.into(),
            aud: APP_ID.into(),
            exp: claims["exp"].as_i64().unwrap(),
            nbf: claims["nbf"].as_i64(),
            service_url: SERVICE_URL.into(),
        })
    );
    assert!(verifier.verify(&header).await.is_ok());
    assert_eq!(keys.key_fetches(), 1);
    assert!(keys
        .server
        .requests()
        .iter()
        .all(|request| request.method == Method::GET));
}

#[tokio::test]
async fn the_documented_service_url_spelling_is_accepted_too() {
    let keys = KeyServer::start(&["k1"]).await;
    let mut claims = claims();
    claims.as_object_mut().unwrap().remove("serviceurl");
    claims["serviceUrl"] = json!(SERVICE_URL);
    let header = format!("Bearer {}", token("k1", &claims));
    let verified = keys.verifier().verify(&header).await.unwrap();
    assert_eq!(verified.service_url, SERVICE_URL);
}

#[tokio::test]
async fn clock_skew_within_five_minutes_is_tolerated() {
    let keys = KeyServer::start(&["k1"]).await;
    let verifier = keys.verifier();
    let lately_expired = with(claims(), "exp", json!(now() - 240));
    let header = format!("Bearer {}", token("k1", &lately_expired));
    assert!(verifier.verify(&header).await.is_ok());
    let soon_valid = with(claims(), "nbf", json!(now() + 240));
    let header = format!("Bearer {}", token("k1", &soon_valid));
    assert!(verifier.verify(&header).await.is_ok());
}

#[tokio::test]
async fn bad_tokens_are_unauthorized_with_the_reason() {
    let keys = KeyServer::start(&["k1"]).await;
    let verifier = keys.verifier();
    let bearer = |token: String| format!("Bearer {token}");

    let valid = token("k1", &claims());
    let mut parts: Vec<String> = valid.split('.').map(str::to_string).collect();
    let forged = with(claims(), "aud", json!("someone-else"));
    parts[1] = base64_url(&forged.to_string());
    let tampered = parts.join(".");

    let mut hs256 = Header::new(Algorithm::HS256);
    hs256.kid = Some("k1".into());
    let hs256 = jsonwebtoken::encode(
        &hs256,
        &claims(),
        &EncodingKey::from_secret(TEST_KEY_N.as_bytes()),
    )
    .unwrap();
    let mut no_service_url = claims();
    no_service_url.as_object_mut().unwrap().remove("serviceurl");
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");

    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "wrong audience",
            bearer(token("k1", &with(claims(), "aud", json!("other-bot")))),
            SERVICE_URL,
            "token audience is not this bot's app id",
        ),
        (
            "wrong issuer",
            bearer(token(
                "k1",
                &with(claims(), "iss", json!("https://sts.windows.net/")),
            )),
            SERVICE_URL,
            "token issuer is not https://api.botframework.com",
        ),
        (
            "expired beyond leeway",
            bearer(token("k1", &with(claims(), "exp", json!(now() - 360)))),
            SERVICE_URL,
            "token expired",
        ),
        (
            "not valid yet beyond leeway",
            bearer(token("k1", &with(claims(), "nbf", json!(now() + 360)))),
            SERVICE_URL,
            "token not valid yet",
        ),
        (
            "serviceUrl mismatch",
            bearer(valid.clone()),
            "https://attacker.example/",
            "token's serviceurl is not the activity's serviceUrl",
        ),
        (
            "unknown kid",
            bearer(token("k9", &claims())),
            SERVICE_URL,
            "token is signed with an unknown key",
        ),
        (
            "tampered",
            bearer(tampered),
            SERVICE_URL,
            "token signature does not match",
        ),
        (
            "HS256",
            bearer(hs256),
            SERVICE_URL,
            "token is not signed with RS256",
        ),
        (
            "no kid",
            bearer(sign_with(&Header::new(Algorithm::RS256), &claims())),
            SERVICE_URL,
            "token names no key",
        ),
        (
            "not bearer",
            format!("Basic {valid}"),
            SERVICE_URL,
            "Authorization is not a Bearer token",
        ),
        (
            "empty",
            String::new(),
            SERVICE_URL,
            "Authorization is not a Bearer token",
        ),
    ];
    for (case, header, service_url, reason) in cases {
        let error = verifier
            .verify(&header)
            .await
            .and_then(|claims| claims.check_service_url(service_url))
            .unwrap_err();
        assert_eq!(error, ConnectorError::Unauthorized(reason.into()), "{case}");
        let token = header.split(' ').next_back().unwrap();
        assert!(
            token.is_empty() || !error.to_string().contains(token),
            "{case}"
        );
    }

    let garbage = verifier.verify("Bearer not-a-jwt").await;
    assert!(
        matches!(&garbage, Err(ConnectorError::Unauthorized(reason)) if reason.starts_with("unreadable token: ")),
        "{garbage:?}"
    );
    for (claims, name) in [(no_service_url, "`serviceurl`"), (no_exp, "`exp`")] {
        let missing = verifier.verify(&bearer(token("k1", &claims))).await;
        assert!(
            matches!(&missing, Err(ConnectorError::Unauthorized(reason))
                if reason.starts_with("token claims unreadable: missing field ")
                    && reason.contains(name)),
            "{missing:?}"
        );
    }
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test]
async fn an_unknown_key_refetches_the_keys_at_most_once_a_minute() {
    let keys = KeyServer::start(&["k1"]).await;
    let verifier = keys.verifier();
    let bearer = |kid: &str| format!("Bearer {}", token(kid, &claims()));
    verifier.verify(&bearer("k1")).await.unwrap();
    assert_eq!(keys.key_fetches(), 1);

    // The Bot Framework rotates in k2; a token signed with it right after our fetch finds
    // no key, and does not make us fetch again.
    keys.kids.lock().unwrap().push("k2");
    tokio::time::pause();
    let early = verifier.verify(&bearer("k2")).await;
    assert_eq!(
        early,
        Err(ConnectorError::Unauthorized(
            "token is signed with an unknown key".into()
        ))
    );
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(verifier.verify(&bearer("k2")).await.is_err());
    assert_eq!(keys.key_fetches(), 1);

    tokio::time::advance(Duration::from_secs(1)).await;
    verifier.verify(&bearer("k2")).await.unwrap();
    assert_eq!(keys.key_fetches(), 2);
    // Known keys need no fetch; another unknown one right away is refused without one.
    verifier.verify(&bearer("k1")).await.unwrap();
    assert!(verifier.verify(&bearer("k3")).await.is_err());
    assert_eq!(keys.key_fetches(), 2);
}

#[tokio::test]
async fn unreachable_key_endpoints_are_transport_errors() {
    let keys = KeyServer::start(&["k1"]).await;
    let broken = TeamsVerifier::new(
        reqwest::Client::new(),
        format!("{}/missing", keys.server.base),
        APP_ID,
    );
    let header = format!("Bearer {}", token("k1", &claims()));
    let error = broken.verify(&header).await.unwrap_err();
    assert_eq!(
        error,
        ConnectorError::Transport(format!(
            "teams key endpoint {}/missing answered 500 Internal Server Error",
            keys.server.base
        ))
    );
    let down = TeamsVerifier::new(reqwest::Client::new(), dead_base().await, APP_ID);
    let error = down.verify(&header).await.unwrap_err();
    assert!(matches!(error, ConnectorError::Transport(_)), "{error:?}");
}

fn message_activity() -> Value {
    json!({
        "type": "message",
        "id": "1481567603816",
        "timestamp": "2016-12-12T18:33:23.8158489Z",
        "localTimestamp": "2016-12-12T10:33:23.8158489-08:00",
        "serviceUrl": SERVICE_URL,
        "channelId": "msteams",
        "from": {"id": "29:1XJKJMvc5GBtc2JwZq0oj8tHZmzrQgFmB39ATiQWA85gQtHieVkKilBZ9XHoq9j7Zaqt7CZ-NJWi7me2kHTL3Bw", "name": "Megan Bowen", "aadObjectId": "6f5d5a8e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"},
        "conversation": {"id": "19:ja0cu120i1jod12j@thread.skype;messageid=1481567603816", "conversationType": "channel"},
        "recipient": {"id": "28:8c5fd0a3-6c3a-4b57-9d41-3f1b2e0a7d11", "name": "Parley"},
        "textFormat": "plain",
        "text": "Which card has no monthly fee? – merci",
        "channelData": {"tenant": {"id": "72f988bf-86f1-41af-91ab-2d7cd011db47"}}
    })
}

#[test]
fn a_message_activity_becomes_an_inbound_message() {
    let activity = message_activity();
    let parsed = teams::parse(activity.to_string().as_bytes());
    assert_eq!(
        parsed,
        Ok(Delivery::Message(InboundMessage {
            platform: parley_connectors::teams::PLATFORM,
            dedup_id: "1481567603816".into(),
            user_id: activity["from"]["id"].as_str().unwrap().into(),
            user_name: Some("Megan Bowen".into()),
            chat_id: "19:ja0cu120i1jod12j@thread.skype;messageid=1481567603816".into(),
            thread_id: None,
            text: "Which card has no monthly fee? – merci".into(),
            sent_at: "2016-12-12T18:33:23.8158489Z"
                .parse::<DateTime<Utc>>()
                .unwrap(),
            reply_context: json!({
                "service_url": SERVICE_URL,
                "activity_id": "1481567603816",
                "conversation_id": "19:ja0cu120i1jod12j@thread.skype;messageid=1481567603816",
            }),
        }))
    );
}

#[test]
fn other_activities_are_ignored_and_broken_ones_rejected() {
    let update = json!({
        "type": "conversationUpdate",
        "id": "f:1",
        "serviceUrl": SERVICE_URL,
        "membersAdded": [{"id": "28:bot"}],
        "conversation": {"id": "a:1"}
    });
    assert_eq!(
        teams::parse(update.to_string().as_bytes()),
        Ok(Delivery::Ignored("teams activity is not a message"))
    );
    let card_submit = with(message_activity(), "text", Value::Null);
    assert_eq!(
        teams::parse(card_submit.to_string().as_bytes()),
        Ok(Delivery::Ignored("teams message without text"))
    );
    let mut no_conversation = message_activity();
    no_conversation
        .as_object_mut()
        .unwrap()
        .remove("conversation");
    assert_eq!(
        teams::parse(no_conversation.to_string().as_bytes()),
        Err(ConnectorError::Malformed(
            "teams message without conversation".into()
        ))
    );
    assert!(matches!(
        teams::parse(b"<xml/>"),
        Err(ConnectorError::Malformed(_))
    ));
}

/// The token endpoint (`/token`) and the Bot Connector (`/amer/v3/...`). Tokens are
/// `tok-1`, `tok-2`, … valid for 3599 s, or for `expires_in` seconds (as a string) when
/// the client id asks for it as `short:<seconds>`; the password `wrong` is refused and
/// the client id `throttled` rate limited. The connector answers by conversation id:
/// `throttled`, `throttled-unnamed`, `missing`, `revoked`; else it accepts the
/// activity as `reply-1`, `reply-2`, ….
async fn bot_framework() -> Fake {
    let tokens = Arc::new(AtomicUsize::new(0));
    let replies = Arc::new(AtomicUsize::new(0));
    Fake::start(move |request: &Recorded| {
        if request.path == "/token" {
            let form = String::from_utf8(request.body.to_vec()).unwrap();
            if form.contains("client_secret=wrong") {
                return Reply::json(401, json!({
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                    "error_codes": [7000215]
                }));
            }
            if form.contains("client_id=throttled") {
                return Reply::json(429, json!({})).with_header("retry-after", "9");
            }
            let expires_in = match form.split('&').find_map(|pair| pair.strip_prefix("client_id=short%3A")) {
                Some(seconds) => json!(seconds),
                None => json!(3599),
            };
            let n = tokens.fetch_add(1, Ordering::SeqCst) + 1;
            return Reply::json(200, json!({
                "token_type": "Bearer",
                "expires_in": expires_in,
                "ext_expires_in": expires_in,
                "access_token": format!("tok-{n}")
            }));
        }
        if !request.header("authorization").unwrap_or_default().starts_with("Bearer tok-") {
            return Reply::json(401, json!({"message": "Authorization has been denied for this request."}));
        }
        let conversation = request.path.split('/').nth(4).unwrap_or_default();
        match conversation {
            "throttled" => Reply::json(429, json!({})).with_header("retry-after", "3"),
            "throttled-unnamed" => Reply::json(429, json!({})),
            "missing" => Reply::json(404, json!({"error": {"code": "ConversationNotFound", "message": "Conversation not found."}})),
            "revoked" => Reply::json(401, json!({"message": "Authorization has been denied for this request."})),
            _ if request.method == Method::PUT => Reply::json(200, json!({"id": request.path.rsplit('/').next().unwrap()})),
            _ => {
                let n = replies.fetch_add(1, Ordering::SeqCst) + 1;
                Reply::json(201, json!({"id": format!("reply-{n}")}))
            }
        }
    })
    .await
}

fn client(fake: &Fake, app_id: &str, password: &str) -> TeamsClient {
    TeamsClient::new(
        reqwest::Client::new(),
        format!("{}/token", fake.base),
        app_id,
        password,
    )
}

const CONVERSATION: &str = "19:ja0cu120i1jod12j@thread.skype;messageid=1481567603816";

#[tokio::test]
async fn reply_posts_to_the_bot_connector_with_a_cached_app_token() {
    let fake = bot_framework().await;
    let client = client(&fake, APP_ID, APP_PASSWORD);
    // serviceUrls end with a slash; it must not double.
    let service_url = format!("{}/amer/", fake.base);
    let first = client
        .reply(
            &service_url,
            CONVERSATION,
            "1481567603816",
            "Basic Debit – 0 €",
        )
        .await;
    assert_eq!(
        first,
        Ok(Sent {
            message_id: "reply-1".into()
        })
    );
    let second = client
        .reply(&service_url, CONVERSATION, "1481567603816", "more")
        .await;
    assert_eq!(
        second,
        Ok(Sent {
            message_id: "reply-2".into()
        })
    );

    let token_requests = fake.requests_to("/token");
    assert_eq!(token_requests.len(), 1, "the token is cached");
    let token_request = &token_requests[0];
    assert_eq!(token_request.method, Method::POST);
    assert_eq!(
        token_request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        std::str::from_utf8(&token_request.body).unwrap(),
        format!(
            "grant_type=client_credentials&client_id={APP_ID}&client_secret={APP_PASSWORD}\
             &scope=https%3A%2F%2Fapi.botframework.com%2F.default"
        )
    );

    let path = format!("/amer/v3/conversations/{CONVERSATION}/activities/1481567603816");
    let replies = fake.requests_to(&path);
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[0].method, Method::POST);
    assert_eq!(replies[0].header("authorization"), Some("Bearer tok-1"));
    assert_eq!(replies[0].header("content-type"), Some("application/json"));
    assert_eq!(
        replies[0].json(),
        json!({"type": "message", "text": "Basic Debit – 0 €"})
    );
    assert_eq!(replies[1].header("authorization"), Some("Bearer tok-1"));
}

#[tokio::test]
async fn update_puts_the_new_text_on_the_activity() {
    let fake = bot_framework().await;
    let client = client(&fake, APP_ID, APP_PASSWORD);
    let service_url = format!("{}/amer", fake.base);
    let updated = client
        .update(&service_url, "a:1Xy", "1:reply-7", "edited")
        .await;
    assert_eq!(updated, Ok(()));
    let request = &fake.requests_to("/amer/v3/conversations/a:1Xy/activities/1:reply-7")[0];
    assert_eq!(request.method, Method::PUT);
    assert_eq!(request.header("authorization"), Some("Bearer tok-1"));
    assert_eq!(
        request.json(),
        json!({"type": "message", "id": "1:reply-7", "text": "edited"})
    );
}

#[tokio::test]
async fn tokens_are_renewed_before_they_expire() {
    let fake = bot_framework().await;
    // A 4 s token is renewed at half its life: 2 s.
    let client = client(&fake, "short:4", APP_PASSWORD);
    let service_url = format!("{}/amer/", fake.base);
    client.reply(&service_url, "c1", "a1", "one").await.unwrap();
    client.reply(&service_url, "c1", "a1", "two").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    client
        .reply(&service_url, "c1", "a1", "three")
        .await
        .unwrap();

    let used: Vec<String> = fake
        .requests_to("/amer/v3/conversations/c1/activities/a1")
        .iter()
        .map(|request| request.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(used, ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]);
}

#[tokio::test]
async fn connector_errors_map_to_rate_limits_and_refusals() {
    let fake = bot_framework().await;
    let client = client(&fake, APP_ID, APP_PASSWORD);
    let service_url = format!("{}/amer/", fake.base);
    let reply = |conversation: &'static str| {
        let (client, service_url) = (&client, service_url.clone());
        async move {
            client
                .reply(&service_url, conversation, "a1", "hi")
                .await
                .unwrap_err()
        }
    };
    assert_eq!(
        reply("throttled").await,
        ConnectorError::RateLimited(Duration::from_secs(3))
    );
    assert_eq!(
        reply("throttled-unnamed").await,
        ConnectorError::RateLimited(Duration::from_secs(1))
    );
    assert_eq!(
        reply("missing").await,
        ConnectorError::Refused {
            platform: "teams",
            status: 404,
            code: "ConversationNotFound".into(),
            message: "Conversation not found.".into(),
        }
    );
    let revoked = reply("revoked").await;
    assert_eq!(
        revoked,
        ConnectorError::Refused {
            platform: "teams",
            status: 401,
            code: "401".into(),
            message: r#"{"message":"Authorization has been denied for this request."}"#.into(),
        }
    );
    assert!(!format!("{revoked} {revoked:?}").contains("tok-1"));
    // A 401 drops the cached token: the next call fetches a new one.
    assert_eq!(fake.requests_to("/token").len(), 1);
    client
        .reply(&service_url, "fine", "a1", "hi")
        .await
        .unwrap();
    assert_eq!(fake.requests_to("/token").len(), 2);
    let last = fake.requests_to("/amer/v3/conversations/fine/activities/a1");
    assert_eq!(last[0].header("authorization"), Some("Bearer tok-2"));
}

#[tokio::test]
async fn token_endpoint_errors_never_show_the_password() {
    let fake = bot_framework().await;
    let service_url = format!("{}/amer/", fake.base);
    let error = client(&fake, APP_ID, "wrong")
        .reply(&service_url, "c1", "a1", "hi")
        .await
        .unwrap_err();
    assert_eq!(
        error,
        ConnectorError::Refused {
            platform: "teams",
            status: 401,
            code: "invalid_client".into(),
            message: "AADSTS7000215: Invalid client secret provided.".into(),
        }
    );
    let throttled = client(&fake, "throttled", APP_PASSWORD)
        .reply(&service_url, "c1", "a1", "hi")
        .await
        .unwrap_err();
    assert_eq!(
        throttled,
        ConnectorError::RateLimited(Duration::from_secs(9))
    );
    assert!(fake
        .requests_to("/amer/v3/conversations/c1/activities/a1")
        .is_empty());

    // An endpoint that answers 401 without an OAuth body is still invalid_client.
    let bare = Fake::start(|_: &Recorded| Reply {
        status: 401,
        headers: vec![],
        body: String::new(),
    })
    .await;
    let error = client(&bare, APP_ID, APP_PASSWORD)
        .reply(&service_url, "c1", "a1", "hi")
        .await
        .unwrap_err();
    assert_eq!(
        error,
        ConnectorError::Refused {
            platform: "teams",
            status: 401,
            code: "invalid_client".into(),
            message: String::new(),
        }
    );
    assert!(!format!("{error} {error:?} {throttled}").contains(APP_PASSWORD));

    let down = TeamsClient::new(
        reqwest::Client::new(),
        dead_base().await,
        APP_ID,
        APP_PASSWORD,
    );
    let error = down
        .reply(&service_url, "c1", "a1", "hi")
        .await
        .unwrap_err();
    assert!(matches!(error, ConnectorError::Transport(_)), "{error:?}");
    assert!(!format!("{error} {error:?}").contains(APP_PASSWORD));
}
