//! Platform deliveries in a cluster: whichever node a chat's delivery lands on, it is
//! verified there, once, and its messages are handed to the node that owns the chat's
//! session, so the chat's turns run in one place, in order.

use std::time::Duration;

use chrono::Utc;
use parley_connectors::webhook::{sign, WebhookSecret};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

const INCOMING: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ROTATED: &str = "whsec_cm90YXRlZC1pbmNvbWluZy1zZWNyZXQtMDE=";

async fn admin(http: &Client, method: reqwest::Method, url: String, body: Option<Value>) -> Value {
    let mut rb = http.request(method, url).bearer_auth(ADMIN_KEY);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let (status, body) = json_of(rb.send().await.unwrap()).await;
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// A customer message signed with `secret` per Standard Webhooks, posted to `base`.
async fn post_signed(
    http: &Client,
    base: &str,
    conn: &str,
    secret: &str,
    msg_id: &str,
    text: &str,
) -> (StatusCode, String) {
    let secret = WebhookSecret::parse(secret).unwrap();
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
    (status, resp.text().await.unwrap())
}

/// A customer message signed with the connection's first secret, accepted by `base`.
async fn deliver(http: &Client, base: &str, conn: &str, msg_id: &str, text: &str) {
    let (status, text) = post_signed(http, base, conn, INCOMING, msg_id, text).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    assert!(text.contains("\"accepted\":1"), "{text}");
}

/// A counter of the node's `/metrics` (`name{labels}`), 0 before its first increment.
async fn counter(http: &Client, base: &str, series: &str) -> u64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

const VERIFIED: &str = "parley_connector_verifications_total{platform=\"webhook\"}";

fn handovers(outcome: &str) -> String {
    format!("parley_node_handovers_total{{outcome=\"{outcome}\"}}")
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

/// An agent answering a started webhook connection (started on `n1`), and the session
/// the chat's first message (`m1`, delivered to `n1`) opened there.
async fn chat_on_first_node(http: &Client, n1: &str) -> (Agent, String, String) {
    let agent = create_agent(http, n1, &agent_yaml("")).await;
    let conn = admin(
        http,
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
        http,
        reqwest::Method::PUT,
        format!("{n1}/api/v1/agents/{}/channels", agent.id),
        Some(json!([{"connection_id": conn, "inbound": true}])),
    )
    .await;
    let started = admin(
        http,
        reqwest::Method::POST,
        format!("{n1}/api/v1/connections/{conn}/start"),
        None,
    )
    .await;
    assert_eq!(started["status"], "Connected", "{started}");

    deliver(http, n1, &conn, "msg_1", "m1").await;
    let mut session = None;
    for _ in 0..200 {
        session = events(http, n1, &conn)
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
    assert!(resident_sessions(http, n1).await.contains(&session));
    (agent, conn, session)
}

/// Waits until the connection's event log on `base` has `n` replies; answers the log.
async fn replies(http: &Client, base: &str, conn: &str, n: usize) -> Vec<Value> {
    for _ in 0..300 {
        let log = events(http, base, conn).await;
        if log.iter().filter(|e| e["kind"] == "reply").count() >= n {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "fewer than {n} replies: {:#?}",
        events(http, base, conn).await
    );
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
    let (agent, conn, session) = chat_on_first_node(&http, &n1).await;

    // The next ones land on either node, alternately.
    for i in 2..=7 {
        let base = if i % 2 == 0 { &n2 } else { &n1 };
        deliver(&http, base, &conn, &format!("msg_{i}"), &format!("m{i}")).await;
    }
    let log = replies(&http, &n1, &conn, 7).await;
    assert_eq!(log.iter().filter(|e| e["kind"] == "reply").count(), 7);
    assert_eq!(log.iter().filter(|e| e["kind"] == "delivery").count(), 7);
    assert!(
        log.iter().all(|e| e["kind"] != "error"),
        "no turn failed or waited for another node: {log:#?}"
    );
    let expected: Vec<String> = (1..=7).map(|i| format!("m{i}")).collect();
    assert_eq!(human_texts(&http, &n2, &agent, &session).await, expected);
    // The session never moved: the other node handed its deliveries over.
    assert!(resident_sessions(&http, &n1).await.contains(&session));
    assert!(!resident_sessions(&http, &n2).await.contains(&session));
    // Each delivery was verified once, where it landed: four on the owner, three on the
    // other node, whose messages the owner took as they were.
    assert_eq!(counter(&http, &n1, VERIFIED).await, 4);
    assert_eq!(counter(&http, &n2, VERIFIED).await, 3);
    assert_eq!(counter(&http, &n2, &handovers("sent")).await, 3);
    assert_eq!(counter(&http, &n1, &handovers("received")).await, 3);
    assert_eq!(counter(&http, &n2, &handovers("fallback")).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_records_handed_over_messages_without_verifying_them_again() {
    let Some(svc) = Services::get().await else {
        return;
    };
    let o = svc.nodes(2000);
    let nodes = start_nodes(&["v1", "v2"], &o);
    let (n1, n2) = (nodes[0].url.clone(), nodes[1].url.clone());
    let http = client();
    let (agent, conn, session) = chat_on_first_node(&http, &n1).await;

    // The secret is rotated through the other node, which does not run the connection:
    // the owner's running connection still holds the first secret.
    admin(
        &http,
        reqwest::Method::PATCH,
        format!("{n2}/api/v1/connections/{conn}"),
        Some(json!({"config": {"incoming_secret": ROTATED}})),
    )
    .await;
    let (status, text) = post_signed(&http, &n1, &conn, ROTATED, "msg_x", "direct").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the owner cannot check it: {text}"
    );

    // Delivered to the other node, it is verified there with the new secret and recorded
    // by the owner, which could not have verified it.
    let (status, text) = post_signed(&http, &n2, &conn, ROTATED, "msg_2", "m2").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    assert!(text.contains("\"accepted\":1"), "{text}");
    // A platform's retry of it is a duplicate, answered as such.
    let (status, text) = post_signed(&http, &n2, &conn, ROTATED, "msg_2", "m2").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    assert!(text.contains("\"duplicates\":1"), "{text}");

    replies(&http, &n1, &conn, 2).await;
    assert_eq!(
        human_texts(&http, &n1, &agent, &session).await,
        ["m1", "m2"],
        "recorded and answered once, in the owner's session"
    );
    assert!(resident_sessions(&http, &n1).await.contains(&session));
    assert_eq!(counter(&http, &n2, &handovers("sent")).await, 2);
    assert_eq!(counter(&http, &n1, &handovers("received")).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_for_an_owner_that_is_gone_are_recorded_where_they_land() {
    let Some(svc) = Services::get().await else {
        return;
    };
    let o = svc.nodes(1000);
    let mut nodes = start_nodes(&["g1", "g2"], &o);
    let (n1, n2) = (nodes[0].url.clone(), nodes[1].url.clone());
    let http = client();
    let (agent, conn, session) = chat_on_first_node(&http, &n1).await;
    // The other node learns the owner.
    deliver(&http, &n2, &conn, "msg_2", "m2").await;
    replies(&http, &n1, &conn, 2).await;

    nodes[0].kill9();
    // The message is recorded here and the platform answered; its turn runs once the
    // owner's lease has lapsed and this node has claimed the session.
    deliver(&http, &n2, &conn, "msg_3", "m3").await;
    assert_eq!(counter(&http, &n2, &handovers("fallback")).await, 1);
    let log = replies(&http, &n2, &conn, 3).await;
    assert_eq!(log.iter().filter(|e| e["kind"] == "delivery").count(), 3);
    assert_eq!(
        human_texts(&http, &n2, &agent, &session).await,
        ["m1", "m2", "m3"]
    );
    assert!(resident_sessions(&http, &n2).await.contains(&session));
}
