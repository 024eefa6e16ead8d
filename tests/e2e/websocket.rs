//! WebSockets: streaming order, timer events, chatting over the socket, customer events.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(t: &TestServer, path: &str) -> Ws {
    let url = format!("{}{path}", t.base.replace("http://", "ws://"));
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects")
        .0
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an event within 10 s")
            .expect("socket open")
            .expect("no socket error");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test]
async fn deltas_stream_before_the_final_message() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t.session(&a, json!({})).await;
    let mut ws = connect(&t, &format!("/chatbot/{}/ws/{sid}?token={}", a.id, a.token)).await;
    let r = t.say(&a, &sid, "What are your opening hours?").await;
    let first = next_json(&mut ws).await;
    assert_eq!(first["type"], "delta", "deltas come first: {first}");
    let mut streamed = first["text"].as_str().unwrap().to_string();
    let final_msg = loop {
        let ev = next_json(&mut ws).await;
        match ev["type"].as_str().unwrap() {
            "delta" => streamed.push_str(ev["text"].as_str().unwrap()),
            "message" if ev["role"] == "HUMAN" => {
                assert_eq!(ev["text"], "What are your opening hours?")
            }
            "message" => break ev,
            other => panic!("unexpected {other}"),
        }
    };
    assert_eq!(final_msg["text"], r["response"]);
    assert_eq!(streamed, r["response"].as_str().unwrap());
    assert_eq!(final_msg["id"], r["metadata"]["message_id"]);

    // A client may chat on the socket too.
    ws.send(Message::Text(
        json!({"type": "message", "message": "I need a human"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let mut got_ai = false;
    while !got_ai {
        let ev = next_json(&mut ws).await;
        got_ai = ev["type"] == "message" && ev["role"] == "AI";
    }
    assert_eq!(t.log(&a, &sid).await.len(), 5);
}

#[tokio::test]
async fn a_timer_close_is_announced() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("session:\n  user_timeout: 1\n")).await;
    let sid = t.session(&a, json!({})).await;
    let mut ws = connect(&t, &format!("/chatbot/{}/ws/{sid}?token={}", a.id, a.token)).await;
    let ev = next_json(&mut ws).await;
    assert_eq!(ev["type"], "timeout");
    assert_eq!(ev["status"], "user_timeout");
    let ev = next_json(&mut ws).await;
    assert_eq!(ev["type"], "close");
    assert_eq!(ev["status"], "user_timeout");
}

#[tokio::test]
async fn bad_socket_requests_are_refused() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t.session(&a, json!({})).await;
    let url = format!(
        "{}/chatbot/{}/ws/{sid}?token=wrong",
        t.base.replace("http://", "ws://"),
        a.id
    );
    let err = tokio_tungstenite::connect_async(url).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let url = format!(
        "{}/chatbot/{}/ws/{}?token={}",
        t.base.replace("http://", "ws://"),
        a.id,
        uuid::Uuid::now_v7(),
        a.token
    );
    let err = tokio_tungstenite::connect_async(url).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}

#[tokio::test]
async fn customer_events_cover_a_conversation() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let mut ws = connect(
        &t,
        &format!("/ws/cust-9?agent_id={}&token={}", a.id, a.token),
    )
    .await;
    let sid = t.session(&a, json!({"user_id": "cust-9"})).await;
    let ev = next_json(&mut ws).await;
    assert_eq!(ev["type"], "CONVERSATION_CREATED");
    assert_eq!(ev["session_id"], sid.as_str());
    assert_eq!(next_json(&mut ws).await["type"], "CONVERSATION_NEW_MESSAGE"); // greeting
    t.say(&a, &sid, "hello, I am eve@example.com").await;
    assert_eq!(next_json(&mut ws).await["role"], "HUMAN");
    assert_eq!(next_json(&mut ws).await["role"], "AI");
    let r = t
        .http
        .put(t.url(&format!("/chatbot/{}/session/{sid}", a.id)))
        .bearer_auth(&a.token)
        .json(&json!({"mode": "OPERATOR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ev = next_json(&mut ws).await;
    assert_eq!(ev["type"], "CONVERSATION_BOT_STATUS_MODIFIED");
    assert_eq!(ev["status"], "OPERATOR");
    t.http
        .delete(t.url(&format!("/chatbot/{}/session/{sid}", a.id)))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    let ev = next_json(&mut ws).await;
    assert_eq!(ev["type"], "CONVERSATION_CLOSED");
    assert_eq!(ev["status"], "completed");
    assert_eq!(ev["conversation_result"]["HumanEmail"], "eve@example.com");
}
