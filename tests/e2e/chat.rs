//! The Chat API: session lifecycle, errors, ordering, passivation, timers, crashes and
//! idempotent retries.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn session_lifecycle() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t
        .session(&a, json!({"user_id": "cust-1", "name": "Ann", "email": "Ann@Example.org", "type": "telegram", "kwargs": {"vip": true}}))
        .await;
    let s = t.get_session(&a, &sid).await;
    assert_eq!(s["status"], "active");
    assert_eq!(s["mode"], "REGULAR");
    assert_eq!(s["ext_type"], "telegram");
    assert_eq!(s["email"], "ann@example.org");
    assert_eq!(s["greeting_text"], "Hi there!");
    assert_eq!(s["timeout"], 259200);
    assert_eq!(s["kwargs"]["vip"], true);
    assert_eq!(s["session_type"], "custom_stateful");
    assert_eq!(
        uuid::Uuid::parse_str(s["session_id"].as_str().unwrap())
            .unwrap()
            .get_version_num(),
        7
    );

    let r = t.say(&a, &sid, "What are your opening hours?").await;
    assert_eq!(r["response"], "We are open from 9 to 17.");
    assert_eq!(r["metadata"]["mode"], "REGULAR");

    // Results are recognised, validated and returned with the session.
    t.say(&a, &sid, "write to me at bob@example.com").await;
    let s = t.get_session(&a, &sid).await;
    assert_eq!(s["conversation_result"]["HumanEmail"], "bob@example.com");

    // The workflow moves only along a declared transition.
    let r = t.say(&a, &sid, "I want a human operator").await;
    assert_eq!(r["metadata"]["state"], "Human");

    let resp = t
        .http
        .put(t.url(&format!("/chatbot/{}/session/{sid}", a.id)))
        .bearer_auth(&a.token)
        .json(&json!({"name": "Ann B.", "language": "de", "email": "Ann.B@Example.org", "phone": "+49 (151) 234-567"}))
        .send()
        .await
        .unwrap();
    let (status, s) = json_of(resp).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["name"], "Ann B.");
    assert_eq!(s["language"], "de");
    assert_eq!(s["email"], "ann.b@example.org");
    assert_eq!(s["phone"], "+49151234567");

    let log = t.log(&a, &sid).await;
    let roles: Vec<&str> = log.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["AI", "HUMAN", "AI", "HUMAN", "AI", "HUMAN", "AI"]);

    let resp = t
        .http
        .delete(t.url(&format!(
            "/chatbot/{}/session/{sid}?status=resolved_by_operator",
            a.id
        )))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    let (status, s) = json_of(resp).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["status"], "resolved_by_operator");
    assert!(s["closed_at"].is_string());

    let (status, body) = json_of(t.run(&a, &sid, "hello?").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "session_closed");
    let resp = t
        .http
        .delete(t.url(&format!("/chatbot/{}/session/{sid}", a.id)))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let t = TestServer::start_with(|c| c.limits.max_message_chars = 100).await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t.session(&a, json!({})).await;
    let chat = |path: &str| t.url(&format!("/chatbot/{}{path}", a.id));

    // 401: missing and wrong tokens.
    let r = t
        .http
        .post(chat("/session"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let r = t
        .http
        .post(chat("/session"))
        .bearer_auth("pat_nope")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // 422: a message with a NUL character (no store can keep it in text).
    let r = t
        .http
        .post(chat(&format!("/session/{sid}/run_v2")))
        .bearer_auth(&a.token)
        .json(&json!({"message": "nul \u{0} inside"}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_error")
    );

    // 404: unknown agent, unknown session, malformed ids.
    let r = t
        .http
        .post(t.url(&format!("/chatbot/{}/session", uuid::Uuid::now_v7())))
        .bearer_auth(&a.token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (status, body) = json_of(
        t.run(&a, &uuid::Uuid::now_v7().to_string(), "hi")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, _) = json_of(t.run(&a, "not-a-uuid", "hi").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // 422: missing message, bad fields, bad close status, bad JSON.
    let r = t
        .http
        .post(chat(&format!("/session/{sid}/run_v2")))
        .bearer_auth(&a.token)
        .multipart(reqwest::multipart::Form::new().text("other", "x"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_error")
    );
    let r = t
        .http
        .post(chat("/session"))
        .bearer_auth(&a.token)
        .json(&json!({"email": "not-an-email"}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("email"),
        "{body}"
    );
    let r = t
        .http
        .post(chat("/session"))
        .bearer_auth(&a.token)
        .json(&json!({"type": "pigeon"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = t
        .http
        .post(chat(&format!("/session/{sid}/run_v2")))
        .bearer_auth(&a.token)
        .header("content-type", "application/json")
        .body("{\"message\": ")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert!(status.is_client_error(), "{status}");
    error_code(&body);
    let r = t
        .http
        .delete(chat(&format!("/session/{sid}?status=exploded")))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = t
        .http
        .post(chat(&format!("/session/{sid}/run_v2")))
        .bearer_auth(&a.token)
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // 413: a message over the limit, and a body over the limit.
    let (status, body) = json_of(t.run(&a, &sid, &"x".repeat(101)).send().await.unwrap()).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );

    // 503: the agent is stopped.
    let r = t
        .admin(
            reqwest::Method::POST,
            &format!("/api/v1/agents/{}/stop", a.id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (status, body) = json_of(t.run(&a, &sid, "hi").send().await.unwrap()).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "agent_not_running")
    );
    let r = t
        .http
        .post(chat("/session"))
        .bearer_auth(&a.token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Unknown routes and methods.
    let (status, body) = json_of(t.http.get(t.url("/nope")).send().await.unwrap()).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "route_not_found")
    );
    let (status, body) = json_of(t.http.patch(chat("/session")).send().await.unwrap()).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_json() {
    let t = TestServer::start_with(|c| c.limits.max_body_bytes = 64 * 1024).await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t.session(&a, json!({})).await;
    let form = reqwest::multipart::Form::new()
        .text("message", "see attachment")
        .part(
            "attachments",
            reqwest::multipart::Part::bytes(vec![7u8; 200 * 1024]).file_name("big.bin"),
        );
    let r = t
        .http
        .post(t.url(&format!("/chatbot/{}/session/{sid}/run_v2", a.id)))
        .bearer_auth(&a.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    // Nothing of the rejected turn was stored.
    assert_eq!(t.log(&a, &sid).await.len(), 1);
}

/// A webhook backend that answers "echo: <last user message>".
async fn echo_backend(delay: Duration) -> String {
    use axum::{routing::post, Json, Router};
    serve_fake(Router::new().route(
        "/hook",
        post(move |Json(body): Json<serde_json::Value>| async move {
            tokio::time::sleep(delay).await;
            let last = body["messages"].as_array().unwrap().last().unwrap()["content"]
                .as_str()
                .unwrap()
                .to_string();
            Json(json!({"content": format!("echo: {last}")}))
        }),
    ))
    .await
}

#[tokio::test]
async fn concurrent_turns_on_one_session_are_serialised() {
    let t = TestServer::start().await;
    let hook = echo_backend(Duration::from_millis(1)).await;
    let a = t
        .agent(&basic_agent(&format!(
            "llm:\n  - kind: webhook\n    url: {hook}/hook\n"
        )))
        .await;
    let sid = t.session(&a, json!({})).await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let req = t.run(&a, &sid, &format!("msg {i}"));
        tasks.push(tokio::spawn(async move {
            (i, json_of(req.send().await.unwrap()).await)
        }));
    }
    for task in tasks {
        let (i, (status, body)) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["response"], format!("echo: msg {i}"));
        let human = body["metadata"]["human_message_id"].as_i64().unwrap();
        assert_eq!(body["metadata"]["message_id"].as_i64().unwrap(), human + 1);
    }
    let log = t.log(&a, &sid).await;
    assert_eq!(log.len(), 201);
    for (i, m) in log.iter().enumerate() {
        assert_eq!(m["id"].as_i64().unwrap(), i as i64 + 1);
    }
    // Every customer message is followed by its own answer: no interleaved turns.
    let mut seen = std::collections::HashSet::new();
    for pair in log[1..].chunks(2) {
        assert_eq!(pair[0]["role"], "HUMAN");
        assert_eq!(pair[1]["role"], "AI");
        let text = pair[0]["text"].as_str().unwrap();
        assert_eq!(pair[1]["text"], format!("echo: {text}"));
        assert!(seen.insert(text.to_string()), "duplicate {text}");
    }
    assert_eq!(seen.len(), 100);
}

#[tokio::test]
async fn idle_sessions_passivate_and_continue_with_their_history() {
    let t = TestServer::start_with(|c| c.node.passivate_after = Duration::from_secs(1)).await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t.session(&a, json!({})).await;
    t.say(&a, &sid, "I need a human").await;
    assert_eq!(t.node().resident_sessions(), 1);
    eventually(10, "the session passivates", || async {
        t.node().resident_sessions() == 0
    })
    .await;
    let r = t.say(&a, &sid, "What are your opening hours?").await;
    // Re-activated from the store: log ids continue and the workflow state was kept.
    assert_eq!(r["metadata"]["human_message_id"], 4);
    assert_eq!(r["metadata"]["state"], "Human");
    assert_eq!(t.node().resident_sessions(), 1);
    assert_eq!(t.log(&a, &sid).await.len(), 5);
}

#[tokio::test]
async fn user_timeout_closes_an_idle_session() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("session:\n  user_timeout: 1\n")).await;
    let sid = t.session(&a, json!({})).await;
    t.say(&a, &sid, "hello").await;
    eventually(10, "the session closes with user_timeout", || async {
        t.get_session(&a, &sid).await["status"] == "user_timeout"
    })
    .await;
    let (status, _) = json_of(t.run(&a, &sid, "still there?").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn max_duration_closes_an_active_session() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("session:\n  max_duration: 2\n")).await;
    let sid = t.session(&a, json!({})).await;
    // Activity does not extend the maximum duration.
    for _ in 0..3 {
        t.say(&a, &sid, "hello").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eventually(10, "the session closes with timeout", || async {
        t.get_session(&a, &sid).await["status"] == "timeout"
    })
    .await;
}

#[tokio::test]
async fn a_crash_inside_a_turn_is_a_5xx_and_the_next_turn_works() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t.session(&a, json!({})).await;
    t.say(&a, &sid, "hello").await;
    let (status, body) = json_of(t.run(&a, &sid, "__panic__").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(&body), "session_restarted");
    let r = t.say(&a, &sid, "What are your opening hours?").await;
    assert_eq!(r["response"], "We are open from 9 to 17.");
    // The crashed turn left nothing behind; the log continues in order.
    let log = t.log(&a, &sid).await;
    let texts: Vec<&str> = log.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), 5);
    assert!(!texts.contains(&"__panic__"));
    assert_eq!(r["metadata"]["human_message_id"], 4);
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_answer() {
    let t = TestServer::start_with(|c| c.node.passivate_after = Duration::from_secs(1)).await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t.session(&a, json!({})).await;
    let send = |key: &str| {
        t.run(&a, &sid, "What are your opening hours?")
            .header("Idempotency-Key", key.to_string())
            .send()
    };
    let first = send("k-1").await.unwrap();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let (_, first) = json_of(first).await;
    let again = send("k-1").await.unwrap();
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    let (status, again) = json_of(again).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["response"], first["response"]);
    assert_eq!(
        again["metadata"]["message_id"],
        first["metadata"]["message_id"]
    );
    assert_eq!(t.log(&a, &sid).await.len(), 3);
    // Still answered from the store after the session passivated.
    eventually(10, "passivation", || async {
        t.node().resident_sessions() == 0
    })
    .await;
    let (_, third) = json_of(send("k-1").await.unwrap()).await;
    assert_eq!(
        third["metadata"]["message_id"],
        first["metadata"]["message_id"]
    );
    assert_eq!(t.log(&a, &sid).await.len(), 3);
    // A new key is a new turn.
    let (_, other) = json_of(send("k-2").await.unwrap()).await;
    assert_eq!(other["metadata"]["message_id"], 5);
    let bad = t
        .run(&a, &sid, "x")
        .header("Idempotency-Key", "k".repeat(300))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_restart_storm_is_escalated_and_sessions_still_work() {
    use std::sync::atomic::Ordering;
    let t = TestServer::start_with(|c| {
        c.node.restart_limit = 2;
        c.node.shards = 1;
    })
    .await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t.session(&a, json!({})).await;
    for _ in 0..4 {
        let (status, _) = json_of(t.run(&a, &sid, "__panic__").send().await.unwrap()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    let stats = &t.node().shared().supervision;
    assert_eq!(stats.session_restarts.load(Ordering::Relaxed), 4);
    eventually(5, "the storm reaches the node", || async {
        stats.restart_storms.load(Ordering::Relaxed) >= 1
    })
    .await;
    // Sessions are then activated on demand and keep working.
    let r = t.say(&a, &sid, "What are your opening hours?").await;
    assert_eq!(r["response"], "We are open from 9 to 17.");
}

#[tokio::test]
async fn customer_activity_pushes_the_inactivity_deadline() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("session:\n  user_timeout: 2\n")).await;
    let sid = t.session(&a, json!({})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    t.say(&a, &sid, "still here").await;
    // The deadline set at creation has passed, but the customer spoke since.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(t.get_session(&a, &sid).await["status"], "active");
    eventually(
        10,
        "the session closes two seconds after the last message",
        || async { t.get_session(&a, &sid).await["status"] == "user_timeout" },
    )
    .await;
    let log = t.log(&a, &sid).await;
    assert_eq!(log.len(), 3);
}
