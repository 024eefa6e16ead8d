//! Webhook connections: customer messages signed per Standard Webhooks (dedup on
//! `webhook-id`), and outgoing events (conversation and connection status) to a local
//! receiver, signed, in order, retried with backoff, 429s waited out, 410 disabling the
//! connection, and nothing lost across a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use parley_connectors::webhook::{self, WebhookSecret};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::fake::{Fake, Recorded, Reply};
use super::*;
use crate::support::*;

/// Signs what parley sends.
pub(crate) const OUT_SECRET: &str = "whsec_cGFybGV5LWUyZS1vdXRnb2luZy1zaWduaW5nLWtleSE=";
/// Signs what customers' systems send parley.
const IN_SECRET: &str = "whsec_cGFybGV5LWUyZS1pbmNvbWluZy1zaWduaW5nLWtleSE=";
const FAQ_QUESTION: &str = "What are your opening hours?";
const FAQ_ANSWER: &str = "We are open from 9 to 17.";

/// A customer's endpoint: answers 200, or 500 while `failing`; canned answers queued on
/// `fake` go first. Remembers which events it accepted.
pub(crate) struct Receiver {
    fake: Fake,
    failing: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<String>>>,
}

/// One event as the receiver got it (signature checked).
#[derive(Debug, Clone)]
pub(crate) struct Delivered {
    id: String,
    body: Value,
    at: Instant,
}

impl Delivered {
    pub(crate) fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap()
    }

    pub(crate) fn data(&self) -> &Value {
        &self.body["data"]
    }
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let failing = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (f, a) = (failing.clone(), accepted.clone());
        let fake = Fake::start(move |r: &Recorded| {
            if f.load(Ordering::SeqCst) {
                return Reply::json(500, json!({"error": "temporarily down"}));
            }
            a.lock()
                .unwrap()
                .push(r.header("webhook-id").unwrap_or_default().to_string());
            Reply::json(200, json!({"ok": true}))
        })
        .await;
        Receiver {
            fake,
            failing,
            accepted,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("{}/events", self.fake.base)
    }

    /// Every request so far, each checked: path, content type, a valid signature.
    fn delivered(&self) -> Vec<Delivered> {
        let secret = WebhookSecret::parse(OUT_SECRET).unwrap();
        self.fake
            .requests()
            .into_iter()
            .map(|r| {
                assert_eq!(r.method, Method::POST);
                assert_eq!(r.path, "/events");
                assert_eq!(r.header("content-type"), Some("application/json"));
                let id = r.header("webhook-id").expect("webhook-id").to_string();
                assert!(id.starts_with("msg_"), "{id}");
                webhook::verify(&secret, &r.headers, &r.body, Utc::now().timestamp())
                    .unwrap_or_else(|e| panic!("event {id} is not signed right: {e}"));
                // The signature also checks out recomputed from its parts.
                let timestamp: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
                assert_eq!(
                    r.header("webhook-signature").unwrap(),
                    webhook::sign(&secret, &id, timestamp, &r.body)
                );
                let body = r.json();
                assert!(
                    chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap())
                        .is_ok(),
                    "{body}"
                );
                Delivered { id, body, at: r.at }
            })
            .collect()
    }

    /// Distinct events in the order they were first delivered.
    pub(crate) fn distinct(&self) -> Vec<Delivered> {
        let mut seen = Vec::<Delivered>::new();
        for d in self.delivered() {
            if !seen.iter().any(|s| s.id == d.id) {
                seen.push(d);
            }
        }
        seen
    }

    fn accepted(&self) -> Vec<String> {
        self.accepted.lock().unwrap().clone()
    }
}

/// (type, text-ish summary) of the events about `session`, in order.
fn about_session(events: &[Delivered], session: &str) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|d| d.data()["session_id"] == session)
        .map(|d| {
            let detail = match d.kind() {
                "message.created" => d.data()["text"].as_str().unwrap().to_string(),
                "session.closed" => d.data()["status"].as_str().unwrap_or("").to_string(),
                _ => String::new(),
            };
            (d.kind().to_string(), detail)
        })
        .collect()
}

fn pair(kind: &str, detail: &str) -> (String, String) {
    (kind.to_string(), detail.to_string())
}

/// Creates and enables a webhook connection named `name` (names are unique); answers its id.
pub(crate) async fn webhook_connection(t: &TestServer, name: &str, config: Value) -> String {
    let (status, body) = json_of(
        t.admin(Method::POST, "/api/v1/connections")
            .json(
                &json!({"name": name, "platform": "webhook", "enabled": true,
                          "config": config}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn close_session(t: &TestServer, agent: &Agent, session: &str) {
    let (status, body) = json_of(
        t.http
            .delete(t.url(&format!("/chatbot/{}/session/{session}", agent.id)))
            .bearer_auth(&agent.token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A customer message signed with `secret` as a Standard Webhooks sender signs it.
fn signed(
    t: &TestServer,
    conn: &str,
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &Value,
) -> reqwest::RequestBuilder {
    let bytes = serde_json::to_vec(body).unwrap();
    let signature = webhook::sign(
        &WebhookSecret::parse(secret).unwrap(),
        id,
        timestamp,
        &bytes,
    );
    hook(t, conn)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(bytes)
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    json_of(req.send().await.unwrap()).await
}

#[tokio::test]
async fn signed_customer_messages_are_taken_once_and_answered_as_events() {
    let t = TestServer::start().await;
    let rx = Receiver::start().await;
    let agent = t.agent(&basic_agent("")).await;
    let conn = webhook_connection(
        &t,
        "Orders",
        json!({"incoming_secret": IN_SECRET, "url": rx.url(), "secret": OUT_SECRET}),
    )
    .await;
    assign(&t, &agent, &conn).await;
    assert_eq!(act(&t, &conn, "start").await["status"], "Connected");
    let message = json!({"user_id": "cust-42", "user_name": "Ann", "chat_id": "order-7",
                         "text": FAQ_QUESTION, "context": {"order": 7}});
    let now = Utc::now().timestamp();

    let (status, body) = send(signed(&t, &conn, IN_SECRET, "msg_in_1", now, &message)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, json!({"accepted": 1, "duplicates": 0}));
    // The sender retries (same webhook-id, signed anew): a duplicate.
    let (status, body) = send(signed(&t, &conn, IN_SECRET, "msg_in_1", now, &message)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, json!({"accepted": 0, "duplicates": 1}));
    let (status, body) = send(signed(&t, &conn, IN_SECRET, "msg_in_1", now + 3, &message)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, json!({"accepted": 0, "duplicates": 1}));

    let session = replied_session(&t, &conn, "msg_in_1").await;
    // The answer goes to the customer's system as a message.created event.
    eventually(10, "the answer as an event", || async {
        about_session(&rx.delivered(), &session).contains(&pair("message.created", FAQ_ANSWER))
    })
    .await;
    let answer = rx
        .distinct()
        .into_iter()
        .find(|d| d.data()["session_id"] == session && d.data()["text"] == FAQ_ANSWER)
        .unwrap();
    assert_eq!(answer.kind(), "message.created");
    assert_eq!(answer.data()["agent_id"], agent.id);

    // Forgeries: another key, a stale or future timestamp, missing headers.
    let other = json!({"user_id": "cust-42", "text": "forged"});
    let forged = [
        (
            "signed with another key",
            signed(&t, &conn, OUT_SECRET, "msg_in_2", now, &other),
        ),
        (
            "ten minutes old",
            signed(&t, &conn, IN_SECRET, "msg_in_3", now - 600, &other),
        ),
        (
            "ten minutes ahead",
            signed(&t, &conn, IN_SECRET, "msg_in_4", now + 600, &other),
        ),
        ("unsigned", hook(&t, &conn).json(&other)),
    ];
    let forgeries = forged.len();
    for (what, req) in forged {
        let (status, body) = send(req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(error_code(&body), "unauthorized", "{what}");
    }
    // Signed but not a message: 400, nothing run.
    let (status, body) = send(signed(
        &t,
        &conn,
        IN_SECRET,
        "msg_in_5",
        now,
        &json!({"user_id": "cust-42"}),
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    error_code(&body);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let texts = session_texts(&t, &agent, &session).await;
    let human: Vec<_> = texts.iter().filter(|(r, _)| r == "HUMAN").collect();
    assert_eq!(human.len(), 1, "{texts:?}");
    let kinds = event_kinds(&t, &conn).await;
    let count = |kind: &str| kinds.iter().filter(|k| *k == kind).count();
    assert_eq!(count("delivery"), 1, "{kinds:?}");
    assert_eq!(count("duplicate"), 2, "{kinds:?}");
    assert_eq!(rejections(&t, &conn).await, forgeries as u64, "{kinds:?}");
    assert_eq!(count("malformed"), 1, "{kinds:?}");
    assert_eq!(count("reply"), 1, "{kinds:?}");

    // A connection without an incoming secret takes no messages.
    let outgoing_only = webhook_connection(
        &t,
        "Outgoing only",
        json!({"url": rx.url(), "secret": OUT_SECRET}),
    )
    .await;
    assert_eq!(
        act(&t, &outgoing_only, "start").await["status"],
        "Connected"
    );
    let (status, body) = send(signed(
        &t,
        &outgoing_only,
        IN_SECRET,
        "msg_in_6",
        now,
        &message,
    ))
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_code(&body), "unauthorized");
    assert!(event_kinds(&t, &outgoing_only)
        .await
        .contains(&"rejected".to_string()));
}

#[tokio::test]
async fn conversation_and_status_events_go_out_signed_and_in_order() {
    let t = TestServer::start().await;
    let rx = Receiver::start().await;
    let agent = t.agent(&basic_agent("")).await;
    let unlisted = t.agent(&basic_agent("")).await;
    let conn =
        webhook_connection(&t, "Events", json!({"url": rx.url(), "secret": OUT_SECRET})).await;
    assign(&t, &agent, &conn).await;
    assert_eq!(act(&t, &conn, "start").await["status"], "Connected");

    let session = t.session(&agent, json!({})).await;
    let answer = t.say(&agent, &session, FAQ_QUESTION).await;
    assert_eq!(answer["response"], FAQ_ANSWER, "{answer}");
    // An agent that does not list the connection sends it nothing.
    let elsewhere = t.session(&unlisted, json!({})).await;
    t.say(&unlisted, &elsewhere, FAQ_QUESTION).await;
    close_session(&t, &agent, &session).await;
    eventually(15, "session.closed delivered", || async {
        rx.delivered()
            .iter()
            .any(|d| d.kind() == "session.closed" && d.data()["session_id"] == session)
    })
    .await;

    let delivered = rx.delivered();
    let events = rx.distinct();
    assert_eq!(
        delivered.len(),
        events.len(),
        "each event once: {delivered:#?}"
    );
    // First: the connection itself became Connected.
    assert_eq!(events[0].kind(), "connection.status", "{events:#?}");
    assert_eq!(events[0].data()["connection_id"], conn);
    assert_eq!(events[0].data()["status"], "Connected");
    assert_eq!(
        about_session(&events, &session),
        [
            pair("session.created", ""),
            pair("message.created", "Hi there!"),
            pair("message.created", FAQ_QUESTION),
            pair("message.created", FAQ_ANSWER),
            pair("session.closed", "completed"),
        ]
    );
    for d in events.iter().filter(|d| d.data()["session_id"] == session) {
        assert_eq!(d.data()["agent_id"], agent.id, "{d:?}");
    }
    let roles: Vec<&str> = events
        .iter()
        .filter(|d| d.kind() == "message.created")
        .map(|d| d.data()["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles[1], "HUMAN", "{roles:?}");
    assert_ne!(roles[2], "HUMAN", "{roles:?}");
    assert!(
        !events.iter().any(|d| d.data()["session_id"] == elsewhere),
        "{events:#?}"
    );

    // Connections changing status are told too.
    let other = webhook_connection(&t, "Incoming", json!({"incoming_secret": IN_SECRET})).await;
    assert_eq!(act(&t, &other, "start").await["status"], "Connected");
    assert_eq!(act(&t, &other, "stop").await["status"], "Disconnected");
    eventually(15, "the other connection's statuses", || async {
        rx.delivered().iter().any(|d| {
            d.kind() == "connection.status"
                && d.data()["connection_id"] == other
                && d.data()["status"] == "Disconnected"
        })
    })
    .await;
    let statuses: Vec<Value> = rx
        .distinct()
        .into_iter()
        .filter(|d| d.kind() == "connection.status" && d.data()["connection_id"] == other)
        .map(|d| d.data().clone())
        .collect();
    assert_eq!(statuses.len(), 2, "{statuses:#?}");
    assert_eq!(statuses[0]["status"], "Connected");
    assert_eq!(statuses[0]["platform"], "webhook");
    assert_eq!(statuses[0]["name"], "Incoming");
    assert_eq!(statuses[1]["status"], "Disconnected");
    let received = rx.delivered();
    assert!(
        received.windows(2).all(|w| w[0].at <= w[1].at),
        "one at a time, in order"
    );
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_event_again_with_backoff() {
    let t = TestServer::start().await;
    let rx = Receiver::start().await;
    rx.fake
        .queue(Reply::json(500, json!({"error": "internal"})));
    rx.fake
        .queue(Reply::json(503, json!({"error": "unavailable"})));
    let agent = t.agent(&basic_agent("")).await;
    let conn =
        webhook_connection(&t, "Events", json!({"url": rx.url(), "secret": OUT_SECRET})).await;
    assign(&t, &agent, &conn).await;
    assert_eq!(act(&t, &conn, "start").await["status"], "Connected");
    // Events behind the failing one wait for it.
    let session = t.session(&agent, json!({})).await;
    eventually(20, "delivered after two failures", || async {
        rx.delivered()
            .iter()
            .any(|d| d.kind() == "session.created" && d.data()["session_id"] == session)
    })
    .await;
    let delivered = rx.delivered();
    let first = &delivered[0];
    assert_eq!(first.kind(), "connection.status");
    let attempts: Vec<&Delivered> = delivered.iter().filter(|d| d.id == first.id).collect();
    assert_eq!(
        attempts.len(),
        3,
        "two failures, then delivered once: {delivered:#?}"
    );
    assert!(
        delivered[..3].iter().all(|d| d.id == first.id),
        "{delivered:#?}"
    );
    assert!(attempts.iter().all(|d| d.body == first.body));
    // Backoff: 1 s, then 2 s.
    let gaps = [
        attempts[1].at - attempts[0].at,
        attempts[2].at - attempts[1].at,
    ];
    assert!(gaps[0] >= Duration::from_secs(1), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_secs(2), "{gaps:?}");
    assert_eq!(
        rx.accepted().iter().filter(|id| **id == first.id).count(),
        1
    );
    // The session's events came after it, in order.
    let after: Vec<&str> = delivered[3..].iter().map(|d| d.kind()).collect();
    assert_eq!(
        after[..2],
        ["session.created", "message.created"],
        "{after:?}"
    );
    // The failures are in the connection's log.
    let errors: Vec<Value> = events(&t, &conn)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "error" && e["detail"]["event_id"] == first.id.as_str())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[tokio::test]
async fn a_429_waits_for_its_retry_after() {
    let t = TestServer::start().await;
    let rx = Receiver::start().await;
    rx.fake
        .queue(Reply::json(429, json!({"error": "slow down"})).with_header("retry-after", "1"));
    let conn =
        webhook_connection(&t, "Events", json!({"url": rx.url(), "secret": OUT_SECRET})).await;
    assert_eq!(act(&t, &conn, "start").await["status"], "Connected");
    eventually(15, "delivered after the 429", || async {
        rx.accepted().len() == 1
    })
    .await;
    let delivered = rx.delivered();
    assert_eq!(delivered.len(), 2, "{delivered:#?}");
    assert_eq!(delivered[0].id, delivered[1].id);
    assert_eq!(rx.accepted(), [delivered[0].id.clone()]);
    let gap = delivered[1].at - delivered[0].at;
    assert!(gap >= Duration::from_secs(1), "{gap:?}");
    assert_eq!(get_connection(&t, &conn).await["status"], "Connected");
}

#[tokio::test]
async fn a_410_disables_the_connection_and_its_events_wait() {
    let t = TestServer::start().await;
    let rx = Receiver::start().await;
    rx.fake
        .queue(Reply::json(410, json!({"error": "endpoint removed"})));
    let agent = t.agent(&basic_agent("")).await;
    let conn =
        webhook_connection(&t, "Events", json!({"url": rx.url(), "secret": OUT_SECRET})).await;
    assign(&t, &agent, &conn).await;
    assert_eq!(act(&t, &conn, "start").await["status"], "Connected");
    eventually(10, "disabled after the 410", || async {
        let c = get_connection(&t, &conn).await;
        c["enabled"] == false && c["status"] == "Error"
    })
    .await;
    let c = get_connection(&t, &conn).await;
    assert!(c["status_error"].as_str().unwrap().contains("410"), "{c}");
    let logged = events(&t, &conn).await;
    assert!(
        logged
            .iter()
            .any(|e| e["kind"] == "error"
                && e["detail"]["error"].as_str().unwrap_or("").contains("410")),
        "{logged:#?}"
    );
    // Delivery stops: nothing is tried again, and new conversations send nothing.
    let session = t.session(&agent, json!({})).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let delivered = rx.delivered();
    assert_eq!(delivered.len(), 1, "{delivered:#?}");
    let gone = delivered[0].id.clone();
    // Hooks of a disabled connection answer 410 too.
    assert_eq!(
        hook(&t, &conn)
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::GONE
    );

    // Enabled and started again, the event that was refused goes first.
    let (status, body) = json_of(
        t.admin(Method::PATCH, &format!("/api/v1/connections/{conn}"))
            .json(&json!({"enabled": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(act(&t, &conn, "start").await["status"], "Connected");
    eventually(15, "the queued event and the new status", || async {
        rx.accepted().len() >= 2
    })
    .await;
    let events = rx.distinct();
    assert_eq!(events[0].id, gone);
    assert_eq!(rx.accepted()[0], gone);
    assert_eq!(events[1].kind(), "connection.status");
    assert_eq!(events[1].data()["status"], "Connected");
    assert!(
        !events.iter().any(|d| d.data()["session_id"] == session),
        "no events were queued while it was disabled"
    );
}

#[tokio::test]
async fn a_restart_during_retries_loses_no_event() {
    let t = TestServer::start().await;
    let rx = Receiver::start().await;
    rx.failing.store(true, Ordering::SeqCst);
    let agent = t.agent(&basic_agent("")).await;
    let conn =
        webhook_connection(&t, "Events", json!({"url": rx.url(), "secret": OUT_SECRET})).await;
    assign(&t, &agent, &conn).await;
    assert_eq!(act(&t, &conn, "start").await["status"], "Connected");
    let session = t.session(&agent, json!({})).await;
    t.say(&agent, &session, FAQ_QUESTION).await;
    // The first event has failed twice (the next try is 2 s away); the others wait.
    eventually(20, "two failed attempts", || async {
        events(&t, &conn)
            .await
            .iter()
            .any(|e| e["kind"] == "error" && e["detail"]["attempts"] == 2)
    })
    .await;
    // Let the failed round hand the events behind it back before stopping.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.accepted().is_empty());
    let (dir, tmp) = t.stop().await;
    let tried = rx.fake.requests().len();
    assert!(tried >= 2);
    // A stopped node sends nothing (its next try would have been due by now).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        rx.fake.requests().len(),
        tried,
        "a stopped node kept delivering"
    );

    let t = TestServer::start_in(dir, |_| {}).await;
    rx.failing.store(false, Ordering::SeqCst);
    eventually(90, "the queued events after the restart", || async {
        rx.accepted().len() >= 5
    })
    .await;
    // More conversation after the restart comes after them.
    t.say(&agent, &session, FAQ_QUESTION).await;
    eventually(30, "the new events", || async { rx.accepted().len() >= 7 }).await;

    let events = rx.distinct();
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|d| {
            (
                d.kind().to_string(),
                d.data()["text"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            pair("connection.status", ""),
            pair("session.created", ""),
            pair("message.created", "Hi there!"),
            pair("message.created", FAQ_QUESTION),
            pair("message.created", FAQ_ANSWER),
            pair("message.created", FAQ_QUESTION),
            pair("message.created", FAQ_ANSWER),
        ]
    );
    // Every event was accepted, in order of first delivery; the failed one kept its id.
    let ids: Vec<String> = events.iter().map(|d| d.id.clone()).collect();
    let mut accepted = rx.accepted();
    accepted.dedup();
    assert_eq!(accepted, ids);
    let failed: Vec<Delivered> = rx.delivered().into_iter().take(tried).collect();
    assert!(failed.iter().all(|d| d.id == ids[0]), "{failed:#?}");
    drop(t);
    drop(tmp);
}
