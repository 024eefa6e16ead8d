//! Microsoft Teams: activities carry Bot Framework JWTs (RS256, keys from a local OpenID
//! metadata + JWKS fake); replies go to the activity's serviceUrl with an app token from a
//! fake token endpoint, fetched once and cached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::fake::{Fake, Recorded, Reply, TEST_KEY_N, TEST_KEY_PEM};
use super::*;
use crate::support::*;

const KID: &str = "bf-key-1";

const APP_ID: &str = "8c5fd0a3-6c3a-4b57-9d41-3f1b2e0a7d11";
const APP_PASSWORD: &str = "app-password-very-secret";
const ISSUER: &str = "https://api.botframework.com";
const APP_TOKEN: &str = "eyJ0eXAi.fake-bot-connector-token";
const FAQ_QUESTION: &str = "What are your opening hours?";
const FAQ_ANSWER: &str = "We are open from 9 to 17.";

/// The Bot Framework as seen from parley: OpenID metadata and keys, the token endpoint,
/// and the Bot Connector at `{base}/amer/`.
struct Teams {
    fake: Fake,
}

impl Teams {
    async fn start() -> Teams {
        let next = Arc::new(AtomicU64::new(1));
        let fake = Fake::start(
            move |r: &Recorded| match (r.method.as_str(), r.path.as_str()) {
                ("GET", "/openid") => Reply::json(
                    200,
                    json!({"issuer": ISSUER,
                       "authorization_endpoint": "https://invalid.botframework.com",
                       "jwks_uri": format!("http://{}/keys", r.header("host").unwrap()),
                       "id_token_signing_alg_values_supported": ["RS256"],
                       "token_endpoint_auth_methods_supported": ["private_key_jwt"]}),
                ),
                ("GET", "/keys") => Reply::json(
                    200,
                    json!({"keys": [{"kty": "RSA", "use": "sig", "kid": KID, "n": TEST_KEY_N,
                                 "e": "AQAB", "endorsements": ["msteams"]}]}),
                ),
                ("POST", "/token") => Reply::json(
                    200,
                    json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                       "access_token": APP_TOKEN}),
                ),
                ("POST", path) if path.starts_with("/amer/v3/conversations/") => Reply::json(
                    200,
                    json!({"id": format!("reply-{}", next.fetch_add(1, Ordering::SeqCst))}),
                ),
                _ => Reply::json(404, json!({"error": {"code": "NotFound", "message": "no"}})),
            },
        )
        .await;
        Teams { fake }
    }

    fn service_url(&self) -> String {
        format!("{}/amer/", self.fake.base)
    }

    fn replies(&self) -> Vec<Recorded> {
        self.fake
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/amer/"))
            .collect()
    }

    fn token_requests(&self) -> Vec<Recorded> {
        self.fake.requests_to("/token")
    }
}

fn claims(service_url: &str) -> Value {
    let now = Utc::now().timestamp();
    json!({"serviceurl": service_url, "nbf": now - 60, "exp": now + 3600,
           "iss": ISSUER, "aud": APP_ID})
}

fn jwt(claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.into());
    let key = EncodingKey::from_rsa_pem(TEST_KEY_PEM.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn activity(service_url: &str, id: &str, conversation: &str, text: &str) -> Value {
    json!({"type": "message", "id": id, "timestamp": "2024-05-01T10:00:00.000Z",
           "serviceUrl": service_url, "channelId": "msteams",
           "from": {"id": "29:1user-aad-id", "name": "Ann", "aadObjectId": "aad-1"},
           "conversation": {"id": conversation, "conversationType": "personal"},
           "recipient": {"id": format!("28:{APP_ID}"), "name": "Parley"},
           "text": text, "textFormat": "plain", "locale": "en-US"})
}

async fn setup(t: &TestServer, teams: &Teams) -> (Agent, String) {
    let agent = t.agent(&basic_agent("")).await;
    let conn = connection(
        t,
        "teams",
        json!({"app_id": APP_ID, "app_password": APP_PASSWORD,
               "api_base": format!("{}/token", teams.fake.base),
               "openid_metadata_url": format!("{}/openid", teams.fake.base)}),
        json!({}),
    )
    .await;
    assign(t, &agent, &conn).await;
    let started = act(t, &conn, "start").await;
    assert_eq!(started["status"], "Connected", "{started}");
    (agent, conn)
}

async fn deliver(
    t: &TestServer,
    conn: &str,
    authorization: Option<String>,
    body: &Value,
) -> reqwest::Response {
    let mut req = hook(t, conn).json(body);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn activities_are_answered_in_their_conversation_with_one_cached_app_token() {
    let t = TestServer::start().await;
    let teams = Teams::start().await;
    let (agent, conn) = setup(&t, &teams).await;
    // Starting checked the credentials with the client-credentials grant.
    let token = teams.token_requests();
    assert_eq!(token.len(), 1);
    let form = String::from_utf8(token[0].body.to_vec()).unwrap();
    for part in [
        "grant_type=client_credentials",
        &format!("client_id={APP_ID}"),
        &format!("client_secret={APP_PASSWORD}"),
        "scope=https%3A%2F%2Fapi.botframework.com%2F.default",
    ] {
        assert!(form.split('&').any(|p| p == part), "{part} in {form}");
    }

    let service_url = teams.service_url();
    let auth = || Some(format!("Bearer {}", jwt(&claims(&service_url))));
    let conversation = "a:1Xq9ConversationId";
    let ids = ["1714557600001", "1714557600002", "1714557600003"];
    for id in ids {
        let resp = deliver(
            &t,
            &conn,
            auth(),
            &activity(&service_url, id, conversation, FAQ_QUESTION),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let session = replied_session(&t, &conn, ids[2]).await;
    for id in ids {
        assert_eq!(replied_session(&t, &conn, id).await, session);
    }
    let replies = teams.replies();
    assert_eq!(replies.len(), 3, "{replies:#?}");
    for (reply, id) in replies.iter().zip(ids) {
        assert_eq!(reply.method, Method::POST);
        assert_eq!(
            reply.path,
            format!("/amer/v3/conversations/{conversation}/activities/{id}")
        );
        assert_eq!(
            reply.header("authorization"),
            Some(format!("Bearer {APP_TOKEN}").as_str())
        );
        assert_eq!(reply.json()["type"], "message");
        assert_eq!(reply.json()["text"], FAQ_ANSWER);
    }
    // One token for the start and all three replies.
    assert_eq!(teams.token_requests().len(), 1);
    // The reply event names the Bot Connector's id of the answer.
    let reply = events(&t, &conn)
        .await
        .into_iter()
        .find(|e| e["kind"] == "reply" && e["detail"]["dedup_id"] == ids[0])
        .unwrap();
    assert_eq!(reply["detail"]["chat_id"], conversation);
    let sent = reply["detail"]["message_ids"].as_array().unwrap();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].as_str().unwrap().starts_with("reply-"), "{reply}");

    // The Bot Framework redelivers: the same activity id is one turn.
    for _ in 0..2 {
        let resp = deliver(
            &t,
            &conn,
            auth(),
            &activity(&service_url, ids[0], conversation, FAQ_QUESTION),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let texts = session_texts(&t, &agent, &session).await;
    let human: Vec<_> = texts.iter().filter(|(r, _)| r == "HUMAN").collect();
    assert_eq!(human.len(), 3, "{texts:?}");
    assert_eq!(teams.replies().len(), 3);
    let kinds = event_kinds(&t, &conn).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "duplicate").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "delivery").count(),
        3,
        "{kinds:?}"
    );
}

#[tokio::test]
async fn activities_without_a_valid_bot_framework_token_are_refused() {
    let t = TestServer::start().await;
    let teams = Teams::start().await;
    let (_, conn) = setup(&t, &teams).await;
    let service_url = teams.service_url();
    let body = activity(&service_url, "1714557600100", "a:conv", FAQ_QUESTION);
    let with = |field: &str, value: Value| {
        let mut c = claims(&service_url);
        c[field] = value;
        Some(format!("Bearer {}", jwt(&c)))
    };
    let mut unsigned = jwt(&claims(&service_url));
    unsigned.truncate(unsigned.rfind('.').unwrap() + 1);
    unsigned.push_str("c2lnbmF0dXJl");
    let forged = [
        ("no token", None),
        ("not a bearer token", Some("Basic dXNlcjpwYXNz".to_string())),
        ("garbage", Some("Bearer not.a.jwt".to_string())),
        ("bad signature", Some(format!("Bearer {unsigned}"))),
        ("wrong audience", with("aud", json!("another-bot-app-id"))),
        ("wrong issuer", with("iss", json!("https://evil.example"))),
        ("expired", with("exp", json!(Utc::now().timestamp() - 3600))),
        (
            "serviceUrl claim mismatch",
            with("serviceurl", json!("https://evil.example/amer/")),
        ),
    ];
    for (what, authorization) in &forged {
        let resp = deliver(&t, &conn, authorization.clone(), &body).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
        let (_, answer) = json_of(resp).await;
        assert_eq!(error_code(&answer), "unauthorized", "{what}: {answer}");
    }
    // A valid token for another serviceUrl does not let an activity name ours.
    let elsewhere = activity(
        "https://evil.example/amer/",
        "1714557600101",
        "a:conv",
        FAQ_QUESTION,
    );
    let resp = deliver(
        &t,
        &conn,
        Some(format!("Bearer {}", jwt(&claims(&service_url)))),
        &elsewhere,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let kinds = event_kinds(&t, &conn).await;
    assert_eq!(
        rejections(&t, &conn).await,
        forged.len() as u64 + 1,
        "{kinds:?}"
    );
    assert!(
        !kinds.iter().any(|k| k == "delivery" || k == "reply"),
        "{kinds:?}"
    );
    assert!(teams.replies().is_empty());

    // The same activity with a good token is taken.
    let resp = deliver(
        &t,
        &conn,
        Some(format!("Bearer {}", jwt(&claims(&service_url)))),
        &body,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    replied_session(&t, &conn, "1714557600100").await;
    assert_eq!(teams.replies().len(), 1);
}

/// The token is checked before the body is read: an unauthenticated 9 MB body that is
/// not even JSON is refused as unauthorized, not parsed and found malformed.
#[tokio::test]
async fn an_unauthenticated_big_body_is_refused_before_it_is_parsed() {
    let t = TestServer::start().await;
    let teams = Teams::start().await;
    let (_agent, conn) = setup(&t, &teams).await;
    let body = format!("{{\"serviceUrl\": [{}", "[".repeat(9 << 20));
    let resp = hook(&t, &conn)
        .header("authorization", "Bearer not-a-jwt")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_code(&body), "unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("unreadable token"),
        "{body}"
    );
}

/// While the keys to verify with cannot be fetched, posts are answered 503 and counted
/// into one event-log line, so a flood cannot push the log's other events out.
#[tokio::test]
async fn unverifiable_posts_while_the_keys_are_unreachable_count_into_one_line() {
    let t = TestServer::start().await;
    let teams = Teams::start().await;
    let conn = connection(
        &t,
        "teams",
        json!({"app_id": APP_ID, "app_password": APP_PASSWORD,
               "api_base": format!("{}/token", teams.fake.base),
               "openid_metadata_url": "http://127.0.0.1:9/openid"}),
        json!({}),
    )
    .await;
    let started = act(&t, &conn, "start").await;
    assert_eq!(started["status"], "Connected", "{started}");
    let token = jwt(&claims(&teams.service_url()));
    let body = activity(&teams.service_url(), "1", "conv-1", "hello");
    for _ in 0..30 {
        let resp = deliver(&t, &conn, Some(format!("Bearer {token}")), &body).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let errors: Vec<Value> = events(&t, &conn)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "error")
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["detail"]["count"], 30, "{errors:?}");
}
