//! Telegram: webhook and polling modes, dedup on update_id, order under bursts, rate
//! limits and 429s, streamed edits.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::fake::{Fake, Recorded, Reply};
use super::*;
use crate::support::*;

pub(crate) const TOKEN: &str = "123456:TEST-token";

pub(crate) fn update(update_id: i64, chat: i64, text: &str) -> Value {
    json!({"update_id": update_id, "message": {
        "message_id": update_id, "date": chrono::Utc::now().timestamp(),
        "chat": {"id": chat, "type": "private"},
        "from": {"id": chat, "is_bot": false, "first_name": "Ann"},
        "text": text}})
}

/// The Bot API as protocol-facts.md describes it, for the methods parley calls.
pub(crate) async fn telegram() -> Fake {
    telegram_refusing(0).await
}

/// Like [`telegram`], answering the first `refused` sendMessage calls with a 429 that asks
/// for a one-second wait.
async fn telegram_refusing(refused: i64) -> Fake {
    let next_id = Arc::new(AtomicI64::new(100));
    let refusals = AtomicI64::new(refused);
    Fake::start(move |r: &Recorded| {
        let method = r.path.rsplit('/').next().unwrap_or_default();
        assert!(r.path.starts_with(&format!("/bot{TOKEN}/")), "{}", r.path);
        match method {
            "sendMessage" if refusals.fetch_sub(1, Ordering::SeqCst) > 0 => Reply::json(
                429,
                json!({"ok": false, "error_code": 429,
                       "description": "Too Many Requests: retry after 1",
                       "parameters": {"retry_after": 1}}),
            ),
            "sendMessage" => {
                let body = r.json();
                Reply::json(200, json!({"ok": true, "result": {
                    "message_id": next_id.fetch_add(1, Ordering::SeqCst), "date": 1_700_000_000,
                    "chat": {"id": body["chat_id"], "type": "private"}, "text": body["text"]}}))
            }
            "editMessageText" => Reply::json(200, json!({"ok": true, "result": {
                "message_id": r.json()["message_id"], "date": 1_700_000_000,
                "chat": {"id": r.json()["chat_id"], "type": "private"}, "text": r.json()["text"]}})),
            "getMe" => Reply::json(200, json!({"ok": true, "result": {"id": 123456, "is_bot": true, "first_name": "Bot", "username": "test_bot"}})),
            _ => Reply::json(200, json!({"ok": true, "result": true})),
        }
    })
    .await
}

pub(crate) fn sent_texts(fake: &Fake, chat: i64) -> Vec<String> {
    fake.requests()
        .iter()
        .filter(|r| r.path.ends_with("/sendMessage") && r.json()["chat_id"] == json!(chat))
        .map(|r| r.json()["text"].as_str().unwrap().to_string())
        .collect()
}

async fn setup(
    t: &TestServer,
    fake: &Fake,
    extra: Value,
    limits: Value,
) -> (Agent, String, String) {
    let agent = t.agent(&basic_agent("")).await;
    let mut config = json!({"bot_token": TOKEN, "api_base": fake.base});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let conn = connection(t, "telegram", config, limits).await;
    assign(t, &agent, &conn).await;
    let started = act(t, &conn, "start").await;
    assert_eq!(started["status"], "Connected", "{started}");
    let set = fake.requests_to(&format!("/bot{TOKEN}/setWebhook"));
    let secret = set
        .last()
        .map(|r| r.json()["secret_token"].as_str().unwrap().to_string());
    (agent, conn, secret.unwrap_or_default())
}

pub(crate) async fn deliver(
    t: &TestServer,
    conn: &str,
    secret: &str,
    body: &Value,
) -> reqwest::Response {
    hook(t, conn)
        .header("X-Telegram-Bot-Api-Secret-Token", secret)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn webhook_mode_answers_once_per_update_and_rejects_forgeries() {
    let t =
        TestServer::start_with(|c| c.node.public_url = Some("https://parley.example".into())).await;
    let fake = telegram().await;
    let (agent, conn, secret) = setup(&t, &fake, json!({}), json!({})).await;
    let set = fake.requests_to(&format!("/bot{TOKEN}/setWebhook"));
    assert_eq!(
        set[0].json()["url"],
        format!("https://parley.example/hooks/{conn}")
    );
    assert_eq!(set[0].json()["allowed_updates"], json!(["message"]));
    assert!(secret.len() >= 32 && secret.chars().all(|c| c.is_ascii_alphanumeric()));

    // The started connection is an actor under the channel supervisor.
    let (status, tree) = json_of(
        t.admin(reqwest::Method::GET, "/api/v1/admin/actors?kind=channel")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tree}");
    assert_eq!(
        tree["children"][0]["id"],
        format!("channel:{conn}"),
        "{tree}"
    );
    assert_eq!(tree["children"][0]["kind"], "channel");

    let resp = deliver(
        &t,
        &conn,
        &secret,
        &update(1, 42, "What are your opening hours?"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let session = replied_session(&t, &conn, "1").await;
    assert_eq!(sent_texts(&fake, 42), ["We are open from 9 to 17."]);

    // Telegram retries a delivery it saw no 2xx for: the same update_id is one turn.
    for _ in 0..3 {
        let resp = deliver(
            &t,
            &conn,
            &secret,
            &update(1, 42, "What are your opening hours?"),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    // A forged delivery (wrong secret) is refused and changes nothing.
    let resp = deliver(&t, &conn, "not-the-secret", &update(2, 42, "forged")).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (_, body) = json_of(resp).await;
    assert_eq!(error_code(&body), "unauthorized");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let texts = session_texts(&t, &agent, &session).await;
    let human: Vec<_> = texts.iter().filter(|(r, _)| r == "HUMAN").collect();
    assert_eq!(human.len(), 1, "{texts:?}");
    assert_eq!(sent_texts(&fake, 42).len(), 1);
    let kinds = event_kinds(&t, &conn).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "duplicate").count(),
        3,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"rejected".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"delivery".to_string()), "{kinds:?}");
    // A customer typing is told an answer is coming.
    assert!(!fake
        .requests_to(&format!("/bot{TOKEN}/sendChatAction"))
        .is_empty());

    // Stopped: the webhook is deleted and deliveries are refused for the platform to retry.
    let stopped = act(&t, &conn, "stop").await;
    assert_eq!(stopped["status"], "Disconnected");
    assert_eq!(
        fake.requests_to(&format!("/bot{TOKEN}/deleteWebhook"))
            .len(),
        1
    );
    let resp = deliver(&t, &conn, &secret, &update(3, 42, "hello?")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Disabled: gone.
    let (status, _) = json_of(
        t.admin(
            reqwest::Method::PATCH,
            &format!("/api/v1/connections/{conn}"),
        )
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let resp = deliver(&t, &conn, &secret, &update(4, 42, "hello?")).await;
    assert_eq!(resp.status(), StatusCode::GONE);
    // Unknown connection.
    let resp = deliver(
        &t,
        &uuid::Uuid::now_v7().to_string(),
        &secret,
        &update(5, 42, "x"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn webhook_mode_needs_a_public_url() {
    let t = TestServer::start().await;
    let fake = telegram().await;
    let conn = connection(
        &t,
        "telegram",
        json!({"bot_token": TOKEN, "api_base": fake.base}),
        json!({}),
    )
    .await;
    let started = act(&t, &conn, "start").await;
    assert_eq!(started["status"], "Error");
    assert!(
        started["status_error"]
            .as_str()
            .unwrap()
            .contains("--public-url"),
        "{started}"
    );
    // Polling needs none.
    let (status, _) = json_of(
        t.admin(
            reqwest::Method::PATCH,
            &format!("/api/v1/connections/{conn}"),
        )
        .json(&json!({"config": {"mode": "polling"}}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(act(&t, &conn, "retry").await["status"], "Connected");
}

#[tokio::test]
async fn bursts_keep_their_order_within_the_chat_rate_and_429s_are_waited_out() {
    let t =
        TestServer::start_with(|c| c.node.public_url = Some("https://parley.example".into())).await;
    // The first answer is refused with a 429 asking for one second.
    let fake = telegram_refusing(1).await;
    let (agent, conn, secret) = setup(
        &t,
        &fake,
        json!({"streaming": false}),
        json!({"per_chat_per_second": 4}),
    )
    .await;
    let start = Instant::now();
    for i in 1..=8 {
        let resp = deliver(
            &t,
            &conn,
            &secret,
            &update(i, 7, &format!("message number {i}")),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let session = replied_session(&t, &conn, "8").await;
    let texts = session_texts(&t, &agent, &session).await;
    let human: Vec<_> = texts
        .iter()
        .filter(|(r, _)| r == "HUMAN")
        .map(|(_, t)| t.clone())
        .collect();
    let expected: Vec<_> = (1..=8).map(|i| format!("message number {i}")).collect();
    assert_eq!(human, expected, "turns ran in arrival order");
    // Eight answers (the refused one repeated after its wait, not dropped).
    let sends: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/sendMessage"))
        .collect();
    assert_eq!(sends.len(), 9, "8 answers + the one refused with 429");
    assert!(start.elapsed() >= Duration::from_secs(1));
    // 4 per second with bursts of 4: after the burst, sends are ≥ 250 ms apart.
    let gaps: Vec<_> = sends.windows(2).map(|w| w[1].at - w[0].at).collect();
    let spaced = gaps
        .iter()
        .filter(|g| **g >= Duration::from_millis(200))
        .count();
    assert!(spaced >= 4, "sends came too fast: {gaps:?}");
    let first = sends[0].at;
    let last = sends.last().unwrap().at;
    assert!(
        last - first >= Duration::from_millis(1000),
        "{:?}",
        last - first
    );
}

#[tokio::test]
async fn answers_stream_as_edits_in_order_ending_with_the_whole_text() {
    let t =
        TestServer::start_with(|c| c.node.public_url = Some("https://parley.example".into())).await;
    let fake = telegram().await;
    let llm = slow_llm(
        &["One ", "two ", "three ", "four ", "five."],
        Duration::from_millis(250),
    )
    .await;
    let agent = t
        .agent(&basic_agent(&format!(
            "llm:\n  - {{name: gpt, kind: openai, base_url: '{llm}/v1', model: m, api_key: sk-test}}\n"
        )))
        .await;
    let conn = connection(
        &t,
        "telegram",
        json!({"bot_token": TOKEN, "api_base": fake.base}),
        json!({"per_chat_per_second": 10}),
    )
    .await;
    assign(&t, &agent, &conn).await;
    assert_eq!(act(&t, &conn, "start").await["status"], "Connected");
    let secret = fake.requests_to(&format!("/bot{TOKEN}/setWebhook"))[0].json()["secret_token"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = deliver(&t, &conn, &secret, &update(10, 5, "count to five")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    replied_session(&t, &conn, "10").await;
    let calls: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/sendMessage") || r.path.ends_with("/editMessageText"))
        .collect();
    assert!(
        calls[0].path.ends_with("/sendMessage"),
        "the first piece is a new message"
    );
    let id = calls[0].json().get("message_id").cloned();
    assert!(id.is_none());
    let edits: Vec<String> = calls[1..]
        .iter()
        .map(|r| {
            assert!(
                r.path.ends_with("/editMessageText"),
                "then only edits: {}",
                r.path
            );
            assert_eq!(r.json()["message_id"], json!(100));
            r.json()["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(
        edits.len() >= 2,
        "several edits as the answer grew: {edits:?}"
    );
    // Each edit shows more of the answer; the last is all of it.
    let first = calls[0].json()["text"].as_str().unwrap().to_string();
    let mut shown = vec![first];
    shown.extend(edits);
    for w in shown.windows(2) {
        assert!(w[1].starts_with(w[0].trim_end()), "{shown:?}");
    }
    assert_eq!(shown.last().unwrap(), "One two three four five.");
}

#[tokio::test]
async fn polling_resumes_from_the_kept_offset_and_a_409_is_an_error() {
    let t = TestServer::start().await;
    let queue: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(vec![
        update(500, 9, "What are your opening hours?"),
        update(501, 9, "thanks"),
    ]));
    let offsets: Arc<Mutex<Vec<i64>>> = Arc::default();
    let conflict = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent: Arc<Mutex<Vec<String>>> = Arc::default();
    let (q, o, c, s) = (
        queue.clone(),
        offsets.clone(),
        conflict.clone(),
        sent.clone(),
    );
    let base = serve_fake(Router::new().route(
        "/{bot}/{method}",
        post(move |axum::extract::Path((_bot, method)): axum::extract::Path<(String, String)>, Json(body): Json<Value>| {
            let (q, o, c, s) = (q.clone(), o.clone(), c.clone(), s.clone());
            async move {
                match method.as_str() {
                    "getUpdates" => {
                        if c.load(Ordering::SeqCst) {
                            return (StatusCode::CONFLICT, Json(json!({"ok": false, "error_code": 409,
                                "description": "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"})));
                        }
                        let offset = body["offset"].as_i64().unwrap();
                        o.lock().unwrap().push(offset);
                        let ready: Vec<Value> = q.lock().unwrap().iter()
                            .filter(|u| u["update_id"].as_i64().unwrap() >= offset).cloned().collect();
                        if ready.is_empty() {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        (StatusCode::OK, Json(json!({"ok": true, "result": ready})))
                    }
                    "sendMessage" => {
                        s.lock().unwrap().push(body["text"].as_str().unwrap().to_string());
                        (StatusCode::OK, Json(json!({"ok": true, "result": {"message_id": 1, "date": 0, "chat": {"id": body["chat_id"], "type": "private"}}})))
                    }
                    _ => (StatusCode::OK, Json(json!({"ok": true, "result": true}))),
                }
            }
        }),
    ))
    .await;
    let agent = t.agent(&basic_agent("")).await;
    let conn = connection(
        &t,
        "telegram",
        json!({"bot_token": TOKEN, "api_base": base, "mode": "polling"}),
        json!({}),
    )
    .await;
    assign(&t, &agent, &conn).await;
    assert_eq!(act(&t, &conn, "start").await["status"], "Connected");
    replied_session(&t, &conn, "501").await;
    assert_eq!(sent.lock().unwrap()[0], "We are open from 9 to 17.");
    assert_eq!(sent.lock().unwrap().len(), 2);
    // Later polls confirm past the last update.
    eventually(5, "offset 502 asked for", || async {
        offsets.lock().unwrap().contains(&502)
    })
    .await;

    // After a restart the kept offset is used: nothing is answered twice.
    let (dir, tmp) = t.stop().await;
    offsets.lock().unwrap().clear();
    let t = TestServer::start_in(dir, |_| {}).await;
    eventually(5, "polling resumes", || async {
        !offsets.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(offsets.lock().unwrap()[0], 502);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sent.lock().unwrap().len(), 2);

    // Another poller (or a webhook) makes Telegram answer 409: the connection is in Error.
    conflict.store(true, Ordering::SeqCst);
    eventually(10, "status Error", || async {
        get_connection(&t, &conn).await["status"] == "Error"
    })
    .await;
    let c = get_connection(&t, &conn).await;
    assert!(c["status_error"].as_str().unwrap().contains("409"), "{c}");
    drop(tmp);
}

#[tokio::test]
async fn a_message_recorded_before_a_restart_is_answered_after_it() {
    use parley_engine::inbound::InboundMessage;
    use parley_engine::store::{SqliteStore, Store};

    let t =
        TestServer::start_with(|c| c.node.public_url = Some("https://parley.example".into())).await;
    let fake = telegram().await;
    let (agent, conn, secret) = setup(&t, &fake, json!({"streaming": false}), json!({})).await;
    let (dir, tmp) = t.stop().await;

    // What the hook had recorded (and acknowledged to Telegram) when the node went down.
    let store = SqliteStore::open(&dir.join("parley.db")).await.unwrap();
    let recorded = InboundMessage {
        platform: parley_connectors::telegram::PLATFORM,
        dedup_id: "77".into(),
        user_id: "31".into(),
        user_name: Some("Ann".into()),
        chat_id: "31".into(),
        thread_id: None,
        text: "What are your opening hours?".into(),
        sent_at: chrono::Utc::now(),
        reply_context: json!({"message_id": 77}),
    };
    let id = uuid::Uuid::parse_str(&conn).unwrap();
    assert!(store
        .inbox_insert(id, &recorded, chrono::Utc::now())
        .await
        .unwrap());
    store.close().await;

    let t = TestServer::start_in(dir, |c| {
        c.node.public_url = Some("https://parley.example".into())
    })
    .await;
    let session = replied_session(&t, &conn, "77").await;
    assert_eq!(sent_texts(&fake, 31), ["We are open from 9 to 17."]);
    let texts = session_texts(&t, &agent, &session).await;
    assert_eq!(
        texts.iter().filter(|(r, _)| r == "HUMAN").count(),
        1,
        "{texts:?}"
    );
    // Telegram delivering it again now is a duplicate.
    let resp = deliver(
        &t,
        &conn,
        &secret,
        &update(77, 31, "What are your opening hours?"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sent_texts(&fake, 31).len(), 1);
    drop(tmp);
}

/// Anyone can post to a hook: 1,100 forged deliveries (more than the log keeps) are one
/// counted `rejected` line, and the connection's real events stay in its log.
#[tokio::test]
async fn a_flood_of_forged_deliveries_is_one_counted_line_and_keeps_the_log() {
    use futures::StreamExt;

    let t =
        TestServer::start_with(|c| c.node.public_url = Some("https://parley.example".into())).await;
    let fake = telegram().await;
    let (_agent, conn, secret) = setup(&t, &fake, json!({}), json!({})).await;
    let resp = deliver(
        &t,
        &conn,
        &secret,
        &update(1, 42, "What are your opening hours?"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    replied_session(&t, &conn, "1").await;
    let before = event_kinds(&t, &conn).await;
    assert!(before.contains(&"delivery".to_string()), "{before:?}");

    let forged = update(2, 42, "forged");
    let statuses: Vec<StatusCode> = futures::stream::iter(0..1100)
        .map(|_| async { deliver(&t, &conn, "not-the-secret", &forged).await.status() })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED));

    let events = events(&t, &conn).await;
    let rejected: Vec<&Value> = events.iter().filter(|e| e["kind"] == "rejected").collect();
    assert_eq!(rejected.len(), 1, "{events:?}");
    let line = &rejected[0]["detail"];
    assert_eq!(line["count"], 1100, "{line}");
    assert_eq!(
        line["error"], "wrong X-Telegram-Bot-Api-Secret-Token",
        "{line}"
    );
    assert!(line["first_at"].as_str().unwrap() <= line["last_at"].as_str().unwrap());
    let mut after: Vec<String> = events
        .iter()
        .filter(|e| e["kind"] != "rejected")
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    after.reverse();
    assert_eq!(after, before);
}

/// An update sent longer ago than the dedup window is refused as stale (answered 200, so
/// Telegram stops retrying) and never reaches a session.
#[tokio::test]
async fn an_update_older_than_the_dedup_window_is_refused_as_stale() {
    let t =
        TestServer::start_with(|c| c.node.public_url = Some("https://parley.example".into())).await;
    let fake = telegram().await;
    let (_agent, conn, secret) = setup(&t, &fake, json!({}), json!({})).await;
    let mut old = update(7, 42, "hello from the past");
    old["message"]["date"] = json!((chrono::Utc::now() - chrono::Duration::hours(49)).timestamp());
    assert_eq!(
        deliver(&t, &conn, &secret, &old).await.status(),
        StatusCode::OK
    );
    let kinds = event_kinds(&t, &conn).await;
    assert!(kinds.contains(&"stale".to_string()), "{kinds:?}");
    assert!(!kinds.contains(&"delivery".to_string()), "{kinds:?}");
    assert!(sent_texts(&fake, 42).is_empty());
}

/// The connection remembers its inbound agent and each chat's session; what changes them
/// is seen by the next message.
#[tokio::test]
async fn a_closed_session_or_a_new_inbound_agent_takes_effect_at_the_next_message() {
    let t =
        TestServer::start_with(|c| c.node.public_url = Some("https://parley.example".into())).await;
    let fake = telegram().await;
    let (first, conn, secret) = setup(&t, &fake, json!({"streaming": false}), json!({})).await;
    let say = |n: i64| {
        let (t, conn, secret) = (&t, &conn, &secret);
        async move { deliver(t, conn, secret, &update(n, 42, "opening hours?")).await }
    };
    assert_eq!(say(1).await.status(), StatusCode::OK);
    let s1 = replied_session(&t, &conn, "1").await;
    assert_eq!(say(2).await.status(), StatusCode::OK);
    assert_eq!(replied_session(&t, &conn, "2").await, s1);

    // Closed through the Chat API: the chat's next message opens a new session.
    let resp = t
        .http
        .delete(t.url(&format!("/chatbot/{}/session/{s1}", first.id)))
        .bearer_auth(&first.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(say(3).await.status(), StatusCode::OK);
    let s2 = replied_session(&t, &conn, "3").await;
    assert_ne!(s2, s1);
    let human = |texts: Vec<(String, String)>| texts.iter().filter(|(r, _)| r == "HUMAN").count();
    assert_eq!(human(session_texts(&t, &first, &s1).await), 2);

    // Another agent takes the connection's customers: the chat moves to a session of it.
    let (status, body) = t
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/agents/{}/channels", first.id),
            Some(json!([])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = t.agent(&basic_agent("")).await;
    assign(&t, &second, &conn).await;
    assert_eq!(say(4).await.status(), StatusCode::OK);
    let s3 = replied_session(&t, &conn, "4").await;
    assert_ne!(s3, s2);
    assert_eq!(
        t.get_session(&second, &s3).await["agent_id"],
        second.id.as_str()
    );
    assert_eq!(human(session_texts(&t, &second, &s3).await), 1);
    assert_eq!(human(session_texts(&t, &first, &s2).await), 1);
    assert_eq!(sent_texts(&fake, 42).len(), 4);
}
