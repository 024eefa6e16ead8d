//! Platform connections end to end: a real server, real platform deliveries signed as the
//! platforms sign them, and local fakes of the platforms' APIs that behave as
//! shared/protocol-facts.md describes (errors and 429s included).

#[path = "../../../connectors/tests/support/mod.rs"]
pub mod fake;

mod discord;
mod relay;
mod slack;
mod teams;
pub mod telegram;
pub mod webhook;
pub mod whatsapp;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

/// Creates an enabled connection; answers its id.
pub async fn connection(
    t: &TestServer,
    platform: &str,
    config: Value,
    rate_limits: Value,
) -> String {
    let (status, body) = json_of(
        t.admin(Method::POST, "/api/v1/connections")
            .json(
                &json!({"name": format!("{platform} test"), "platform": platform,
                          "enabled": true, "config": config, "rate_limits": rate_limits}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Like [`connection`], with a name of its own (names are unique per tenant).
pub async fn connection_named(
    t: &TestServer,
    name: &str,
    platform: &str,
    config: Value,
    rate_limits: Value,
) -> String {
    let (status, body) = json_of(
        t.admin(Method::POST, "/api/v1/connections")
            .json(&json!({"name": name, "platform": platform, "enabled": true,
                          "config": config, "rate_limits": rate_limits}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Lists the connection as the agent's inbound channel.
pub async fn assign(t: &TestServer, agent: &Agent, connection: &str) {
    let (status, body) = json_of(
        t.admin(
            Method::PUT,
            &format!("/api/v1/agents/{}/channels", agent.id),
        )
        .json(&json!([{"connection_id": connection, "inbound": true}]))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// `start`, `stop` or `retry`; answers the connection afterwards.
pub async fn act(t: &TestServer, connection: &str, action: &str) -> Value {
    let (status, body) = json_of(
        t.admin(
            Method::POST,
            &format!("/api/v1/connections/{connection}/{action}"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

pub async fn get_connection(t: &TestServer, connection: &str) -> Value {
    let (status, body) = json_of(
        t.admin(Method::GET, &format!("/api/v1/connections/{connection}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The connection's event log, newest first.
pub async fn events(t: &TestServer, connection: &str) -> Vec<Value> {
    let (status, body) = json_of(
        t.admin(
            Method::GET,
            &format!("/api/v1/connections/{connection}/events?limit=500"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().unwrap().clone()
}

/// The kinds of the connection's events, oldest first.
pub async fn event_kinds(t: &TestServer, connection: &str) -> Vec<String> {
    let mut kinds: Vec<String> = events(t, connection)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.reverse();
    kinds
}

/// The rejected deliveries the connection's log counts (they share a line per window).
pub async fn rejections(t: &TestServer, connection: &str) -> u64 {
    events(t, connection)
        .await
        .iter()
        .filter(|e| e["kind"] == "rejected")
        .map(|e| e["detail"]["count"].as_u64().unwrap())
        .sum()
}

pub fn hook(t: &TestServer, connection: &str) -> reqwest::RequestBuilder {
    t.http.post(t.url(&format!("/hooks/{connection}")))
}

/// A session's log as (role, text).
pub async fn session_texts(t: &TestServer, agent: &Agent, session: &str) -> Vec<(String, String)> {
    t.log(agent, session)
        .await
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_string(),
                m["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The session the connection's event log says answered `dedup_id` (waits for it).
pub async fn replied_session(t: &TestServer, connection: &str, dedup_id: &str) -> String {
    for _ in 0..200 {
        let reply = events(t, connection)
            .await
            .into_iter()
            .find(|e| e["kind"] == "reply" && e["detail"]["dedup_id"] == dedup_id);
        if let Some(e) = reply {
            return e["detail"]["session_id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "no reply logged for {dedup_id}: {:#?}",
        events(t, connection).await
    );
}

/// An OpenAI-compatible backend that streams its answer in `pieces`, `gap` apart; answers
/// its base URL.
pub async fn slow_llm(pieces: &'static [&'static str], gap: std::time::Duration) -> String {
    use futures::StreamExt;
    serve_fake(axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |axum::Json(_): axum::Json<Value>| async move {
            let stream = futures::stream::iter(pieces.iter().enumerate()).then(move |(i, p)| async move {
                if i > 0 {
                    tokio::time::sleep(gap).await;
                }
                let chunk = json!({"choices": [{"index": 0, "delta": {"content": p}}]});
                Ok::<_, std::convert::Infallible>(format!("data: {chunk}\n\n"))
            });
            let done = futures::stream::iter([Ok(
                "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n".to_string(),
            )]);
            (
                [("content-type", "text/event-stream")],
                axum::body::Body::from_stream(stream.chain(done)),
            )
        }),
    ))
    .await
}

/// An agent on [`slow_llm`].
pub async fn slow_agent(t: &TestServer, llm: &str) -> Agent {
    t.agent(&basic_agent(&format!(
        "llm:\n  - {{name: gpt, kind: openai, base_url: '{llm}/v1', model: m, api_key: sk-test}}\n"
    )))
    .await
}
