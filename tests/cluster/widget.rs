//! The web widget against any node: a visitor starts on one node, sends through another
//! and holds its socket on a third; the page's origin and token hold on every node.

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const PAGE: &str = "https://shop.example";

async fn widget_call(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut rb = http
        .post(format!("{base}{path}"))
        .header("origin", PAGE)
        .json(&body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    json_of(rb.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_is_served_by_every_node() {
    let Some(svc) = Services::get().await else {
        return;
    };
    let o = svc.nodes(2000);
    let nodes = start_nodes(&["v1", "v2", "v3"], &o);
    let http = client();
    let agent = create_agent(&http, &nodes[0].url, &agent_yaml("")).await;
    let (status, w) = json_of(
        http.put(format!(
            "{}/api/v1/agents/{}/widget",
            nodes[0].url, agent.id
        ))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"enabled": true, "allowed_origins": [PAGE]}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{w}");
    let w = w["widget_id"].as_str().unwrap().to_string();

    // Start on v1; the conversation opens (and its session lives) there.
    let (status, v) = widget_call(
        &http,
        &nodes[0].url,
        &format!("/widget/v1/{w}/visitors"),
        None,
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    let (status, c) = widget_call(
        &http,
        &nodes[0].url,
        &format!("/widget/v1/{w}/conversations"),
        Some(&token),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let sid = c["session_id"].as_str().unwrap().to_string();

    // The socket on v3 (proxied to the owner, the page's origin checked there too).
    let url = format!(
        "{}/widget/v1/{w}/conversations/{sid}/ws",
        nodes[2].url.replacen("http", "ws", 1)
    );
    let mut req = url.clone().into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("bearer, {token}").parse().unwrap(),
    );
    req.headers_mut().insert("origin", PAGE.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut foreign = url.into_client_request().unwrap();
    foreign.headers_mut().insert(
        "sec-websocket-protocol",
        format!("bearer, {token}").parse().unwrap(),
    );
    foreign
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(foreign).await.is_err());

    // Messages sent through v2 (forwarded to the owner) and through the socket.
    let path = format!("/widget/v1/{w}/conversations/{sid}/messages");
    let (status, r) = widget_call(
        &http,
        &nodes[1].url,
        &path,
        Some(&token),
        json!({"message": "via v2"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    ws.send(Message::text(
        json!({"type": "message", "message": "via socket"}).to_string(),
    ))
    .await
    .unwrap();
    let mut humans = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while humans.len() < 2 {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "message" && v["role"] == "HUMAN" {
                humans.push(v["text"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(humans, ["via v2", "via socket"]);
    // The history, read on any node, has both in order once each.
    let (status, h) = json_of(
        http.get(format!(
            "{}/widget/v1/{w}/conversations/{sid}",
            nodes[1].url
        ))
        .header("origin", PAGE)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    let texts: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "HUMAN")
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["via v2", "via socket"]);
    drop(ws);
    drop(nodes);
    svc.db.drop_now().await;
}
