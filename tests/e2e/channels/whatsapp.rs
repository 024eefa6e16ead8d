//! WhatsApp Cloud API: the subscription check, signed notifications, answers from the
//! number the customer wrote to, dedup on the message id, statuses, the 24-hour window and
//! templates, and rate limits waited out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;

use super::fake::{Fake, Recorded, Reply};
use super::*;
use crate::support::*;

pub(crate) const APP_SECRET: &str = "whatsapp-app-secret";
pub(crate) const ACCESS_TOKEN: &str = "EAAG-whatsapp-access-token";
pub(crate) const VERIFY_TOKEN: &str = "verify-me-please";
/// The API version in the configured graph base, as in `https://graph.facebook.com/v21.0`.
pub(crate) const VERSION: &str = "/v21.0";
pub(crate) const FIRST_NUMBER: &str = "106540352242922";
pub(crate) const SECOND_NUMBER: &str = "106540352242933";
const FAQ_QUESTION: &str = "What are your opening hours?";
const FAQ_ANSWER: &str = "We are open from 9 to 17.";

/// `sha256=<hex HMAC-SHA256(app_secret, body)>`, as Meta signs notifications.
pub(crate) fn signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(APP_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A notification of customer messages to one of our numbers.
pub(crate) fn notification(
    phone_number_id: &str,
    messages: Vec<Value>,
    statuses: Vec<Value>,
) -> Value {
    let contacts: Vec<Value> = messages
        .iter()
        .map(|m| json!({"profile": {"name": "Ann"}, "wa_id": m["from"]}))
        .collect();
    let mut value = json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550009999", "phone_number_id": phone_number_id},
    });
    if !messages.is_empty() {
        value["contacts"] = json!(contacts);
        value["messages"] = json!(messages);
    }
    if !statuses.is_empty() {
        value["statuses"] = json!(statuses);
    }
    json!({"object": "whatsapp_business_account", "entry": [{
        "id": "102290129340398",
        "changes": [{"field": "messages", "value": value}]}]})
}

fn text(from: &str, wamid: &str, body: &str) -> Value {
    json!({"from": from, "id": wamid, "timestamp": chrono::Utc::now().timestamp().to_string(), "type": "text",
           "text": {"body": body}})
}

/// The Graph API as protocol-facts.md describes it for the calls parley makes: phone
/// number lookups and sends. Text sends are answered by `text_send` (default: accepted).
pub(crate) async fn graph_with(
    text_send: impl Fn(&Recorded) -> Option<Reply> + Send + Sync + 'static,
) -> Fake {
    let next = Arc::new(AtomicU64::new(1));
    Fake::start(move |r: &Recorded| {
        assert!(r.path.starts_with(VERSION), "{}", r.path);
        let rest = &r.path[VERSION.len() + 1..];
        match rest.split('/').collect::<Vec<_>>()[..] {
            [number] if r.method == Method::GET => Reply::json(
                200,
                json!({"id": number, "display_phone_number": "+1 555-000-9999",
                       "verified_name": "Parley Test", "quality_rating": "GREEN"}),
            ),
            [_, "messages"] if r.method == Method::POST => {
                let body = r.json();
                if body["type"] == "text" {
                    if let Some(reply) = text_send(r) {
                        return reply;
                    }
                }
                let id = format!("wamid.OUT{}", next.fetch_add(1, Ordering::SeqCst));
                Reply::json(
                    200,
                    json!({"messaging_product": "whatsapp",
                           "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                           "messages": [{"id": id}]}),
                )
            }
            _ => Reply::json(
                400,
                json!({"error": {"message": "Unknown path components", "type": "OAuthException",
                                 "code": 2500, "fbtrace_id": "x"}}),
            ),
        }
    })
    .await
}

async fn graph() -> Fake {
    graph_with(|_| None).await
}

async fn setup(t: &TestServer, fake: &Fake) -> (Agent, String) {
    let agent = t.agent(&basic_agent("")).await;
    let conn = connection(
        t,
        "whatsapp",
        json!({"app_id": "1234567890", "app_secret": APP_SECRET, "access_token": ACCESS_TOKEN,
               "phone_number_ids": [FIRST_NUMBER, SECOND_NUMBER],
               "business_account_id": "102290129340398", "verify_token": VERIFY_TOKEN,
               "api_base": format!("{}{VERSION}", fake.base)}),
        json!({}),
    )
    .await;
    assign(t, &agent, &conn).await;
    let started = act(t, &conn, "start").await;
    assert_eq!(started["status"], "Connected", "{started}");
    // Starting looked the first number up with the access token.
    let lookup = &fake.requests_to(&format!("{VERSION}/{FIRST_NUMBER}"))[0];
    assert_eq!(lookup.method, Method::GET);
    assert_eq!(
        lookup.header("authorization"),
        Some(format!("Bearer {ACCESS_TOKEN}").as_str())
    );
    (agent, conn)
}

pub(crate) async fn deliver(t: &TestServer, conn: &str, body: &Value) -> reqwest::Response {
    let bytes = serde_json::to_vec(body).unwrap();
    hook(t, conn)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature(&bytes))
        .body(bytes)
        .send()
        .await
        .unwrap()
}

/// The message sends the fake received, in order.
pub(crate) fn sends(fake: &Fake) -> Vec<Recorded> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method == Method::POST && r.path.ends_with("/messages"))
        .collect()
}

pub(crate) fn sends_to(fake: &Fake, customer: &str) -> Vec<Recorded> {
    sends(fake)
        .into_iter()
        .filter(|r| r.json()["to"] == customer)
        .collect()
}

fn human_turns(texts: &[(String, String)]) -> usize {
    texts.iter().filter(|(role, _)| role == "HUMAN").count()
}

#[tokio::test]
async fn the_subscription_check_echoes_the_challenge_only_for_the_verify_token() {
    let t = TestServer::start().await;
    let fake = graph().await;
    let (_, conn) = setup(&t, &fake).await;
    let check = |token: &str, mode: &str| {
        t.http
            .get(t.url(&format!("/hooks/{conn}")))
            .query(&[
                ("hub.mode", mode),
                ("hub.verify_token", token),
                ("hub.challenge", "1158201444"),
            ])
            .send()
    };
    let resp = check(VERIFY_TOKEN, "subscribe").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "1158201444");

    let resp = check("not-the-token", "subscribe").await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (_, body) = json_of(resp).await;
    error_code(&body);
    assert!(!body.to_string().contains("1158201444"), "{body}");
    let resp = check(VERIFY_TOKEN, "unsubscribe").await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let kinds = event_kinds(&t, &conn).await;
    assert_eq!(rejections(&t, &conn).await, 2, "{kinds:?}");
}

#[tokio::test]
async fn customers_are_answered_once_from_the_number_they_wrote_to() {
    let t = TestServer::start().await;
    let fake = graph().await;
    let (agent, conn) = setup(&t, &fake).await;

    // Ann writes to the second number, Bob to the first: each is answered from it.
    let ann = notification(
        SECOND_NUMBER,
        vec![text("31612345678", "wamid.ANN1", FAQ_QUESTION)],
        vec![],
    );
    let resp = deliver(&t, &conn, &ann).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let bob = notification(
        FIRST_NUMBER,
        vec![text("4915112345678", "wamid.BOB1", FAQ_QUESTION)],
        vec![],
    );
    assert_eq!(deliver(&t, &conn, &bob).await.status(), StatusCode::OK);
    let ann_session = replied_session(&t, &conn, "wamid.ANN1").await;
    replied_session(&t, &conn, "wamid.BOB1").await;

    let to_ann = sends_to(&fake, "31612345678");
    assert_eq!(to_ann.len(), 1, "{to_ann:#?}");
    assert_eq!(
        to_ann[0].path,
        format!("{VERSION}/{SECOND_NUMBER}/messages")
    );
    assert_eq!(
        to_ann[0].header("authorization"),
        Some(format!("Bearer {ACCESS_TOKEN}").as_str())
    );
    assert_eq!(
        to_ann[0].json(),
        json!({"messaging_product": "whatsapp", "to": "31612345678", "type": "text",
               "text": {"body": FAQ_ANSWER}})
    );
    let to_bob = sends_to(&fake, "4915112345678");
    assert_eq!(to_bob.len(), 1, "{to_bob:#?}");
    assert_eq!(to_bob[0].path, format!("{VERSION}/{FIRST_NUMBER}/messages"));
    assert_eq!(to_bob[0].json()["text"]["body"], FAQ_ANSWER);

    // The reply names the message WhatsApp accepted.
    let reply = events(&t, &conn)
        .await
        .into_iter()
        .find(|e| e["kind"] == "reply" && e["detail"]["dedup_id"] == "wamid.ANN1")
        .unwrap();
    assert_eq!(reply["detail"]["chat_id"], "31612345678");
    assert_eq!(reply["detail"]["message_ids"].as_array().unwrap().len(), 1);

    // WhatsApp delivers at least once: the same wamid again is one turn and one answer.
    for _ in 0..3 {
        assert_eq!(deliver(&t, &conn, &ann).await.status(), StatusCode::OK);
    }
    // A tampered notification (body changed after signing) is refused and changes nothing.
    let signed = serde_json::to_vec(&notification(
        SECOND_NUMBER,
        vec![text("31612345678", "wamid.ANN2", "hello")],
        vec![],
    ))
    .unwrap();
    let tampered = serde_json::to_vec(&notification(
        SECOND_NUMBER,
        vec![text("31612345678", "wamid.ANN2", "give me a refund")],
        vec![],
    ))
    .unwrap();
    let resp = hook(&t, &conn)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature(&signed))
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (_, body) = json_of(resp).await;
    assert_eq!(error_code(&body), "unauthorized");
    // Unsigned: refused too.
    let resp = hook(&t, &conn).json(&ann).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Give a wrongly run turn the time to show before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let texts = session_texts(&t, &agent, &ann_session).await;
    assert_eq!(human_turns(&texts), 1, "{texts:?}");
    assert_eq!(sends_to(&fake, "31612345678").len(), 1);
    let kinds = event_kinds(&t, &conn).await;
    let count = |kind: &str| kinds.iter().filter(|k| *k == kind).count();
    assert_eq!(count("delivery"), 2, "{kinds:?}");
    assert_eq!(count("duplicate"), 3, "{kinds:?}");
    assert_eq!(rejections(&t, &conn).await, 2, "{kinds:?}");
    assert_eq!(count("reply"), 2, "{kinds:?}");
}

#[tokio::test]
async fn statuses_are_logged_with_their_message_id() {
    let t = TestServer::start().await;
    let fake = graph().await;
    let (_, conn) = setup(&t, &fake).await;
    let status = |status: &str| {
        json!({"id": "wamid.OUT42", "status": status, "timestamp": "1700000100",
               "recipient_id": "31612345678"})
    };
    let mut failed = status("failed");
    failed["errors"] = json!([{"code": 131047, "title": "Re-engagement message",
                              "message": "Re-engagement message"}]);
    let body = notification(
        FIRST_NUMBER,
        vec![],
        vec![status("sent"), status("delivered"), status("read"), failed],
    );
    assert_eq!(deliver(&t, &conn, &body).await.status(), StatusCode::OK);
    let mut logged: Vec<Value> = events(&t, &conn)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "message_status")
        .map(|e| e["detail"].clone())
        .collect();
    logged.reverse();
    let seen: Vec<(&str, &str)> = logged
        .iter()
        .map(|d| {
            (
                d["message_id"].as_str().unwrap(),
                d["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("wamid.OUT42", "sent"),
            ("wamid.OUT42", "delivered"),
            ("wamid.OUT42", "read"),
            ("wamid.OUT42", "failed")
        ]
    );
    assert!(logged[0]["error"].is_null(), "{logged:?}");
    let error = logged[3]["error"].as_str().unwrap();
    assert!(error.contains("131047"), "{error}");
    // Statuses are not customer messages: no turn, no send.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kinds = event_kinds(&t, &conn).await;
    assert!(
        !kinds.iter().any(|k| k == "delivery" || k == "reply"),
        "{kinds:?}"
    );
    assert!(sends(&fake).is_empty());
}

#[tokio::test]
async fn outside_the_window_the_error_names_the_template_endpoint_and_a_template_goes_out() {
    let t = TestServer::start().await;
    // Every text is refused: the customer last wrote more than 24 hours ago.
    let fake = graph_with(|_| {
        Some(Reply::json(
            400,
            json!({"error": {"message": "(#131047) Re-engagement message", "type": "OAuthException",
                             "code": 131047, "error_data": {"messaging_product": "whatsapp",
                             "details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number."},
                             "fbtrace_id": "x"}}),
        ))
    })
    .await;
    let (_, conn) = setup(&t, &fake).await;
    let customer = "31612345678";
    let late = notification(
        SECOND_NUMBER,
        vec![text(customer, "wamid.LATE1", FAQ_QUESTION)],
        vec![],
    );
    assert_eq!(deliver(&t, &conn, &late).await.status(), StatusCode::OK);
    eventually(10, "an error event for the refused answer", || async {
        events(&t, &conn)
            .await
            .iter()
            .any(|e| e["kind"] == "error" && e["detail"]["dedup_id"] == "wamid.LATE1")
    })
    .await;
    let error = events(&t, &conn)
        .await
        .into_iter()
        .find(|e| e["kind"] == "error" && e["detail"]["dedup_id"] == "wamid.LATE1")
        .unwrap();
    let text = error["detail"]["error"].as_str().unwrap().to_string();
    assert!(text.contains("131047"), "{text}");
    assert!(
        text.contains(&format!("/api/v1/connections/{conn}/templates/send")),
        "{text}"
    );
    // Refused for good: tried once, not again.
    assert_eq!(sends_to(&fake, customer).len(), 1);

    // A template reaches the customer, from the number they wrote to.
    let components = json!([{"type": "body", "parameters": [{"type": "text", "text": "Ann"}]}]);
    let path = format!("/api/v1/connections/{conn}/templates/send");
    let (status, body) = json_of(
        t.admin(Method::POST, &path)
            .json(
                &json!({"to": customer, "name": "order_update", "language": "en_US",
                          "components": components}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], true);
    let sent = sends_to(&fake, customer);
    assert_eq!(sent.len(), 2);
    let template = &sent[1];
    assert_eq!(template.path, format!("{VERSION}/{SECOND_NUMBER}/messages"));
    assert_eq!(
        template.header("authorization"),
        Some(format!("Bearer {ACCESS_TOKEN}").as_str())
    );
    assert_eq!(
        template.json(),
        json!({"messaging_product": "whatsapp", "to": customer, "type": "template",
               "template": {"name": "order_update", "language": {"code": "en_US"},
                            "components": components}})
    );
    let message_id = body["message_id"].as_str().unwrap();
    assert!(message_id.starts_with("wamid.OUT"), "{body}");

    // Another business number when asked for; no components: none sent.
    let (status, body) = json_of(
        t.admin(Method::POST, &path)
            .json(
                &json!({"to": customer, "name": "hello_world", "language": "en_US",
                          "phone_number_id": FIRST_NUMBER}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], true);
    assert_ne!(body["message_id"].as_str().unwrap(), message_id);
    let last = sends_to(&fake, customer).pop().unwrap();
    assert_eq!(last.path, format!("{VERSION}/{FIRST_NUMBER}/messages"));
    assert_eq!(
        last.json()["template"],
        json!({"name": "hello_world", "language": {"code": "en_US"}})
    );
    let kinds = event_kinds(&t, &conn).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "template").count(),
        2,
        "{kinds:?}"
    );

    // A required field missing: a JSON error, nothing sent.
    let before = sends(&fake).len();
    let (status, body) = json_of(
        t.admin(Method::POST, &path)
            .json(&json!({"to": customer, "language": "en_US"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
        "{status} {body}"
    );
    error_code(&body);
    let (status, body) = json_of(
        t.admin(Method::POST, &path)
            .json(&json!({"to": customer, "name": " ", "language": "en_US"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
        "{status} {body}"
    );
    error_code(&body);
    assert_eq!(sends(&fake).len(), before);

    // Templates are a WhatsApp thing.
    let other = connection(
        &t,
        "webhook",
        json!({"incoming_secret": "whsec_cGFybGV5LWUyZS1pbmNvbWluZy1zaWduaW5nLWtleSE="}),
        json!({}),
    )
    .await;
    let (status, body) = json_of(
        t.admin(
            Method::POST,
            &format!("/api/v1/connections/{other}/templates/send"),
        )
        .json(&json!({"to": customer, "name": "hello_world", "language": "en_US"}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    // The API answers request errors as 422 validation_error (400 would do as well).
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
        "{status} {body}"
    );
    error_code(&body);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WhatsApp"),
        "{body}"
    );
}

#[tokio::test]
async fn throughput_errors_and_429s_are_waited_out_and_each_answer_lands_once() {
    let t = TestServer::start().await;
    let fake = graph().await;
    let (agent, conn) = setup(&t, &fake).await;
    let customer = "31612345678";

    // Error 130429: the number's throughput is exceeded; a second's wait clears it.
    fake.queue(Reply::json(
        400,
        json!({"error": {"message": "(#130429) Rate limit hit", "type": "OAuthException",
                         "code": 130429, "fbtrace_id": "x"}}),
    ));
    let first = notification(
        FIRST_NUMBER,
        vec![text(customer, "wamid.R1", FAQ_QUESTION)],
        vec![],
    );
    assert_eq!(deliver(&t, &conn, &first).await.status(), StatusCode::OK);
    let session = replied_session(&t, &conn, "wamid.R1").await;
    let tries = sends_to(&fake, customer);
    assert_eq!(
        tries.len(),
        2,
        "the refused send and its repeat: {tries:#?}"
    );
    assert_eq!(tries[0].json(), tries[1].json());
    assert!(
        tries[1].at - tries[0].at >= Duration::from_secs(1),
        "{:?}",
        tries[1].at - tries[0].at
    );

    // An HTTP 429 is waited out for its Retry-After.
    fake.queue(
        Reply::json(
            429,
            json!({"error": {"message": "Too many calls", "type": "OAuthException",
                             "code": 80007, "fbtrace_id": "x"}}),
        )
        .with_header("retry-after", "1"),
    );
    let second = notification(
        FIRST_NUMBER,
        vec![text(customer, "wamid.R2", FAQ_QUESTION)],
        vec![],
    );
    assert_eq!(deliver(&t, &conn, &second).await.status(), StatusCode::OK);
    replied_session(&t, &conn, "wamid.R2").await;
    let tries = sends_to(&fake, customer);
    assert_eq!(tries.len(), 4, "{tries:#?}");
    assert_eq!(tries[2].json(), tries[3].json());
    assert!(
        tries[3].at - tries[2].at >= Duration::from_secs(1),
        "{:?}",
        tries[3].at - tries[2].at
    );

    // Each answer went out once: two turns, two accepted sends, no errors.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let texts = session_texts(&t, &agent, &session).await;
    assert_eq!(human_turns(&texts), 2, "{texts:?}");
    assert_eq!(sends_to(&fake, customer).len(), 4);
    let replies: Vec<Value> = events(&t, &conn)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "reply")
        .collect();
    assert_eq!(replies.len(), 2);
    for r in &replies {
        let ids = r["detail"]["message_ids"].as_array().unwrap();
        assert_eq!(ids.len(), 1, "{r}");
        assert!(ids[0].as_str().unwrap().starts_with("wamid.OUT"), "{r}");
    }
    assert_ne!(
        replies[0]["detail"]["message_ids"],
        replies[1]["detail"]["message_ids"]
    );
    let kinds = event_kinds(&t, &conn).await;
    assert!(!kinds.contains(&"error".to_string()), "{kinds:?}");
}

/// A message sent longer ago than the dedup window (two days) is refused as stale, each
/// time it comes, and never reaches a session; a fresh one still does.
#[tokio::test]
async fn a_message_older_than_the_dedup_window_is_refused_as_stale() {
    let t = TestServer::start().await;
    let fake = graph().await;
    let (_agent, conn) = setup(&t, &fake).await;
    let mut old = text("31612345678", "wamid.OLD", "hello from the past");
    old["timestamp"] = json!((chrono::Utc::now() - chrono::Duration::hours(49))
        .timestamp()
        .to_string());
    let body = notification(FIRST_NUMBER, vec![old], vec![]);
    for _ in 0..2 {
        assert_eq!(deliver(&t, &conn, &body).await.status(), StatusCode::OK);
    }
    let fresh = notification(
        FIRST_NUMBER,
        vec![text("31612345678", "wamid.NEW", "hello")],
        vec![],
    );
    assert_eq!(deliver(&t, &conn, &fresh).await.status(), StatusCode::OK);
    replied_session(&t, &conn, "wamid.NEW").await;
    let events = events(&t, &conn).await;
    let stale: Vec<&Value> = events.iter().filter(|e| e["kind"] == "stale").collect();
    assert_eq!(stale.len(), 1, "{events:?}");
    assert_eq!(stale[0]["detail"]["count"], 2);
    assert_eq!(stale[0]["detail"]["dedup_id"], "wamid.OLD");
    let deliveries: Vec<&Value> = events.iter().filter(|e| e["kind"] == "delivery").collect();
    assert_eq!(deliveries.len(), 1, "{events:?}");
    assert_eq!(deliveries[0]["detail"]["dedup_id"], "wamid.NEW");
}

/// A status notification the platform repeats is applied and logged once.
#[tokio::test]
async fn repeated_statuses_are_applied_once() {
    let t = TestServer::start().await;
    let fake = graph().await;
    let (_, conn) = setup(&t, &fake).await;
    let status = |status: &str| {
        json!({"id": "wamid.OUT77", "status": status, "timestamp": "1700000100",
               "recipient_id": "31612345678"})
    };
    let first = notification(FIRST_NUMBER, vec![], vec![status("delivered")]);
    let both = notification(
        FIRST_NUMBER,
        vec![],
        vec![status("delivered"), status("read")],
    );
    for body in [&first, &first, &both, &both] {
        assert_eq!(deliver(&t, &conn, body).await.status(), StatusCode::OK);
    }
    let logged: Vec<String> = events(&t, &conn)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "message_status")
        .map(|e| e["detail"]["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(logged, ["read", "delivered"], "newest first");
}
