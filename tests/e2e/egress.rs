//! Outbound calls obey the egress policy: private URLs are refused when configured and
//! when used, secrets do not follow a URL to another host, and a platform that never
//! answers fails the call after the configured timeout.

use std::io::ErrorKind;
use std::time::Duration;

use parley_engine::egress::{EgressPolicy, Timeouts};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

const TOKEN: &str = "123456:egress-test-bot-token";

fn listener() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn nobody_connected(l: &std::net::TcpListener) -> bool {
    matches!(l.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

async fn telegram(t: &TestServer, api_base: &str) -> (StatusCode, Value) {
    t.call(
        Method::POST,
        "/api/v1/connections",
        Some(json!({"name": "Bot", "platform": "telegram",
                    "config": {"bot_token": TOKEN, "mode": "polling", "api_base": api_base}})),
    )
    .await
}

fn llm_agent(base_url: &str) -> String {
    basic_agent(&format!(
        "llm:\n  - {{kind: openai, base_url: '{base_url}', model: m, api_key: sk-x}}\n"
    ))
}

#[tokio::test]
async fn private_urls_are_refused_by_default_and_accepted_when_allowed() {
    let strict = TestServer::start_with(|c| c.node.egress = EgressPolicy::default()).await;
    let (status, body) = telegram(&strict, "http://127.0.0.1:9/").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "validation_error");
    assert!(body.to_string().contains("config.api_base"), "{body}");
    assert!(!body.to_string().contains(TOKEN));
    let (status, body) = strict
        .call(
            Method::POST,
            "/api/v1/connections",
            Some(json!({"name": "Hook", "platform": "webhook",
                        "config": {"url": "http://169.254.169.254/latest"}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let resp = strict
        .admin(Method::POST, "/api/v1/agents")
        .header("content-type", "application/yaml")
        .body(llm_agent("http://localhost:9/v1"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("llm[0].base_url"), "{body}");

    let allowed = TestServer::start().await;
    let (status, body) = telegram(&allowed, "http://127.0.0.1:9/").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let resp = allowed
        .admin(Method::POST, "/api/v1/agents")
        .header("content-type", "application/yaml")
        .body(llm_agent("http://localhost:9/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn testing_a_connection_to_a_denied_address_sends_nothing() {
    let (l, port) = listener();
    let t = TestServer::start().await;
    let mut ids = Vec::new();
    for base in [
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}"),
    ] {
        let (status, c) = t
            .call(
                Method::POST,
                "/api/v1/connections",
                Some(
                    json!({"name": format!("Bot {}", ids.len()), "platform": "telegram",
                            "config": {"bot_token": TOKEN, "mode": "polling", "api_base": base}}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{c}");
        ids.push(c["id"].as_str().unwrap().to_string());
    }
    // The same data under a policy that no longer allows loopback.
    let (dir, guard) = t.stop().await;
    let t = TestServer::start_in(dir, |c| c.node.egress = EgressPolicy::default()).await;
    for id in &ids {
        let (status, body) = t
            .call(
                Method::POST,
                &format!("/api/v1/connections/{id}/test"),
                None,
            )
            .await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || body["ok"] == false,
            "{status} {body}"
        );
        assert!(!body.to_string().contains(TOKEN), "{body}");
    }
    assert!(
        nobody_connected(&l),
        "the bot token was sent to a denied address"
    );
    drop(guard);
}

#[tokio::test]
async fn a_platform_that_never_answers_fails_after_the_timeout() {
    let (l, port) = listener();
    let l = tokio::net::TcpListener::from_std(l).unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let t = TestServer::start_with(|c| {
        c.node.timeouts = Timeouts {
            read: Duration::from_millis(500),
            ..Timeouts::default()
        }
    })
    .await;
    let (status, c) = telegram(&t, &format!("http://127.0.0.1:{port}")).await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let id = c["id"].as_str().unwrap();
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(30),
        t.call(
            Method::POST,
            &format!("/api/v1/connections/{id}/test"),
            None,
        ),
    )
    .await
    .expect("the test call hangs on a platform that never answers");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], false, "{body}");
}

#[tokio::test]
async fn moving_api_base_to_another_host_needs_the_token_again() {
    let t = TestServer::start().await;
    let (status, c) = telegram(&t, "http://127.0.0.1:9/").await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let path = format!("/api/v1/connections/{}", c["id"].as_str().unwrap());
    let (status, body) = t
        .call(
            Method::PATCH,
            &path,
            Some(json!({"config": {"api_base": "http://localhost:9/"}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("config.bot_token"), "{body}");
    let (status, body) = t
        .call(
            Method::PATCH,
            &path,
            Some(json!({"config": {"api_base": "http://127.0.0.1:10/"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "same host: {body}");
    let (status, body) = t
        .call(
            Method::PATCH,
            &path,
            Some(json!({"config": {"api_base": "http://localhost:9/", "bot_token": "1:new"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["config"]["bot_token_set"], true);
}
