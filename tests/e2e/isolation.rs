//! Tenant and credential isolation: what a caller writes never reaches what is not theirs.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::channels::telegram::{sent_texts, telegram, TOKEN};
use crate::channels::{act, connection};
use crate::support::*;

async fn put_session(t: &TestServer, a: &Agent, sid: &str, body: Value) -> (StatusCode, Value) {
    t.call_as(
        Method::PUT,
        &format!("/chatbot/{}/session/{sid}", a.id),
        &a.token,
        Some(body),
    )
    .await
}

async fn create_session(t: &TestServer, a: &Agent, body: Value) -> (StatusCode, Value) {
    t.call_as(
        Method::POST,
        &format!("/chatbot/{}/session", a.id),
        &a.token,
        Some(body),
    )
    .await
}

/// A Chat API customer who writes another tenant's connection and a chat id into their
/// session's fields cannot make an operator's reply go out through that connection.
#[tokio::test]
async fn customer_fields_never_route_operator_messages() {
    let t = TestServer::start_with(|c| {
        c.super_key = Some(SUPER_KEY.into());
        c.node.public_url = Some("https://parley.example".into());
    })
    .await;
    let fake = telegram().await;
    // Tenant A's running Telegram bot.
    let a_conn = connection(
        &t,
        "telegram",
        json!({"bot_token": TOKEN, "api_base": fake.base}),
        json!({}),
    )
    .await;
    assert_eq!(act(&t, &a_conn, "start").await["status"], "Connected");
    // Tenant B's chat customer names A's connection and a chat of their choosing.
    let b_key = t.tenant("B").await;
    let b = t.agent_as(&b_key, &basic_agent("")).await;
    const CHAT: i64 = 666;
    let routing = json!({"kwargs": {"connection_id": a_conn, "chat_id": CHAT.to_string(), "platform": "telegram"}});
    let (status, body) = create_session(&t, &b, routing.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "validation_error", "{body}");
    let sid = t
        .session(
            &b,
            json!({"kwargs": {"connection_id": a_conn, "chat_id": CHAT.to_string()}}),
        )
        .await;
    let (status, body) = put_session(
        &t,
        &b,
        &sid,
        json!({"kwargs": {"connection_id": a_conn, "chat_id": CHAT.to_string()}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // B's operator answers; nothing goes out on A's bot.
    let (status, body) = t
        .call_as(
            Method::POST,
            &format!("/api/v1/conversations/{sid}/mode"),
            &b_key,
            Some(json!({"mode": "OPERATOR"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = t
        .call_as(
            Method::POST,
            &format!("/api/v1/conversations/{sid}/messages"),
            &b_key,
            Some(json!({"text": "Your code is 1234"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sent_texts(&fake, CHAT).is_empty(), "{:?}", fake.requests());
}

/// The Chat API may ask for a person, but not take a conversation back from operators.
#[tokio::test]
async fn chat_api_callers_cannot_take_a_conversation_from_operators() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t.session(&a, json!({})).await;
    for mode in ["COPILOT"] {
        let (status, body) = put_session(&t, &a, &sid, json!({"mode": mode})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{mode}: {body}");
    }
    let (status, body) = put_session(&t, &a, &sid, json!({"mode": "OPERATOR"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["mode"], "OPERATOR");
    for mode in ["REGULAR", "COPILOT"] {
        let (status, body) = put_session(&t, &a, &sid, json!({"mode": mode})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{mode}: {body}");
        assert_eq!(error_code(&body), "forbidden");
    }
    assert_eq!(t.get_session(&a, &sid).await["mode"], "OPERATOR");
}

/// What a Chat API caller stores on a session is bounded, and the keys the server writes
/// are its own.
#[tokio::test]
async fn session_fields_are_bounded_and_server_keys_reserved() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let big = "x".repeat(20 * 1024);
    for body in [
        json!({"kwargs": {"blob": big}}),
        json!({"user_info": {"blob": big}}),
        json!({"name": "n".repeat(300)}),
        json!({"language": "l".repeat(300)}),
        json!({"start_phrase": "s".repeat(5000)}),
        json!({"name": "a\u{0}b"}),
        json!({"kwargs": {"communication_id": "c1"}}),
        json!({"kwargs": {"campaign_id": "c1"}}),
    ] {
        let (status, resp) = create_session(&t, &a, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {resp}");
    }
    let sid = t.session(&a, json!({"kwargs": {"plan": "gold"}})).await;
    // Each request small, together too big: refused, and nothing of it stored.
    let chunk = "y".repeat(9 * 1024);
    let (status, body) = put_session(&t, &a, &sid, json!({"kwargs": {"one": chunk}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = put_session(&t, &a, &sid, json!({"kwargs": {"two": chunk}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let s = t.get_session(&a, &sid).await;
    assert_eq!(s["kwargs"]["plan"], "gold");
    assert!(s["kwargs"].get("two").is_none(), "{s}");
    let (status, body) = put_session(&t, &a, &sid, json!({"kwargs": {"platform": "slack"}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

fn flow(agent: &str, channel: &str, connection: Option<&str>) -> String {
    let conn = connection.map_or(String::new(), |c| format!("\n    connection_id: {c}"));
    format!(
        r#"
nodes:
  - {{id: created, type: participant_created, next: talk}}
  - id: talk
    type: start_communication
    name: HELLO
    channel: {channel}
    agent_id: {agent}{conn}
    duration: "08:00"
    start_phrase: "Hello"
"#
    )
}

async fn put_flow_as(t: &TestServer, key: &str, campaign: &str, yaml: &str) -> (StatusCode, Value) {
    json_of(
        t.http
            .put(t.url(&format!("/api/v1/campaigns/{campaign}/flows/main")))
            .bearer_auth(key)
            .header("content-type", "application/yaml")
            .body(yaml.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// A campaign flow names agents and connections of its own tenant only: another
/// tenant's ids are refused as if they did not exist, so nothing is opened, billed or sent
/// on the other tenant's behalf.
#[tokio::test]
async fn flows_cannot_name_another_tenants_agents_or_connections() {
    let t = TestServer::with_super_key().await;
    let a = t.agent(&basic_agent("")).await;
    let a_conn = connection(
        &t,
        "webhook",
        json!({"url": "https://hooks.example/a"}),
        json!({}),
    )
    .await;
    let b_key = t.tenant("B").await;
    let b = t.agent_as(&b_key, &basic_agent("")).await;
    let (status, c) = t
        .call_as(
            Method::POST,
            "/api/v1/campaigns",
            &b_key,
            Some(json!({"name": "Outreach"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let campaign = c["id"].as_str().unwrap();

    let (status, body) = put_flow_as(&t, &b_key, campaign, &flow(&a.id, "chat", None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string().contains("nodes[1].agent_id"),
        "path-addressed: {body}"
    );
    let (status, body) =
        put_flow_as(&t, &b_key, campaign, &flow(&b.id, "webhook", Some(&a_conn))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string().contains("nodes[1].connection_id"),
        "{body}"
    );
    // The tenant's own agent goes through.
    let (status, body) = put_flow_as(&t, &b_key, campaign, &flow(&b.id, "chat", None)).await;
    assert!(status.is_success(), "{body}");
    // A's inbox and usage show nothing of B's campaign.
    let (_, usage) = t.call(Method::GET, "/api/v1/billing/usage", None).await;
    assert_eq!(usage["sessions"], 0, "{usage}");
}
