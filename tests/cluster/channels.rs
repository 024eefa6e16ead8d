//! Platform deliveries in a cluster: whichever node a chat's delivery lands on, it is
//! handed to the node that owns the chat's session, so the chat's turns run in one place,
//! in order.

use std::time::Duration;

use chrono::Utc;
use parley_connectors::webhook::{sign, WebhookSecret};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

const INCOMING: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn admin(http: &Client, method: reqwest::Method, url: String, body: Option<Value>) -> Value {
    let mut rb = http.request(method, url).bearer_auth(ADMIN_KEY);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let (status, body) = json_of(rb.send().await.unwrap()).await;
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// A customer message signed per Standard Webhooks, delivered to `base`.
async fn deliver(http: &Client, base: &str, conn: &str, msg_id: &str, text: &str) {
    let secret = WebhookSecret::parse(INCOMING).unwrap();
    let body = json!({"user_id": "u1", "text": text}).to_string();
    let ts = Utc::now().timestamp();
    let resp = http
        .post(format!("{base}/hooks/{conn}"))
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            sign(&secret, msg_id, ts, body.as_bytes()),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    assert!(text.contains("\"accepted\":1"), "{text}");
}

async fn events(http: &Client, base: &str, conn: &str) -> Vec<Value> {
    let body = admin(
        http,
        reqwest::Method::GET,
        format!("{base}/api/v1/connections/{conn}/events?limit=500"),
        None,
    )
    .await;
    body["events"].as_array().unwrap().clone()
}

async fn resident_sessions(http: &Client, base: &str) -> Vec<String> {
    let body = admin(
        http,
        reqwest::Method::GET,
        format!("{base}/api/v1/admin/actors?kind=session"),
        None,
    )
    .await;
    body["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["id"]
                .as_str()
                .unwrap()
                .trim_start_matches("session:")
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chats_deliveries_are_answered_where_its_session_lives() {
    let Some(svc) = Services::get().await else {
        return;
    };
    let o = svc.nodes(2000);
    let nodes = start_nodes(&["c1", "c2"], &o);
    let (n1, n2) = (nodes[0].url.clone(), nodes[1].url.clone());
    let http = client();
    let agent = create_agent(&http, &n1, &agent_yaml("")).await;
    let conn = admin(
        &http,
        reqwest::Method::POST,
        format!("{n1}/api/v1/connections"),
        Some(
            json!({"name": "hooks", "platform": "webhook", "enabled": true,
                    "config": {"incoming_secret": INCOMING}}),
        ),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    admin(
        &http,
        reqwest::Method::PUT,
        format!("{n1}/api/v1/agents/{}/channels", agent.id),
        Some(json!([{"connection_id": conn, "inbound": true}])),
    )
    .await;
    let started = admin(
        &http,
        reqwest::Method::POST,
        format!("{n1}/api/v1/connections/{conn}/start"),
        None,
    )
    .await;
    assert_eq!(started["status"], "Connected", "{started}");

    // The first message opens the chat's session on the node it landed on.
    deliver(&http, &n1, &conn, "msg_1", "m1").await;
    let mut session = None;
    for _ in 0..200 {
        session = events(&http, &n1, &conn)
            .await
            .iter()
            .find(|e| e["kind"] == "reply")
            .map(|e| e["detail"]["session_id"].as_str().unwrap().to_string());
        if session.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let session = session.expect("the first message is answered");
    assert!(resident_sessions(&http, &n1).await.contains(&session));

    // The next ones land on either node, alternately.
    for i in 2..=7 {
        let base = if i % 2 == 0 { &n2 } else { &n1 };
        deliver(&http, base, &conn, &format!("msg_{i}"), &format!("m{i}")).await;
    }
    let mut replies = 0;
    for _ in 0..200 {
        replies = events(&http, &n1, &conn)
            .await
            .iter()
            .filter(|e| e["kind"] == "reply")
            .count();
        if replies == 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(replies, 7, "{:#?}", events(&http, &n1, &conn).await);
    let log = events(&http, &n1, &conn).await;
    assert!(
        log.iter().all(|e| e["kind"] != "error"),
        "no turn failed or waited for another node: {log:#?}"
    );
    let expected: Vec<String> = (1..=7).map(|i| format!("m{i}")).collect();
    assert_eq!(human_texts(&http, &n2, &agent, &session).await, expected);
    // The session never moved: the other node handed its deliveries over.
    assert!(resident_sessions(&http, &n1).await.contains(&session));
    assert!(!resident_sessions(&http, &n2).await.contains(&session));
}
