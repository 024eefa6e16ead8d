//! WebSockets: streaming order, timer events, chatting over the socket, customer events.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

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

/// An agent's token hears only its own agent's conversations with a customer, even when
/// another agent of the tenant talks to a customer of the same id.
#[tokio::test]
async fn an_agent_token_hears_only_its_own_agents_conversations() {
    let t = TestServer::start().await;
    let a1 = t.agent(&basic_agent("")).await;
    let a2 = t.agent(&basic_agent("")).await;
    let mut ws2 = connect(
        &t,
        &format!("/ws/cust-1?agent_id={}&token={}", a2.id, a2.token),
    )
    .await;
    let s1 = t.session(&a1, json!({"user_id": "cust-1"})).await;
    t.say(&a1, &s1, "my card number is 4111 1111 1111 1111")
        .await;
    let s2 = t.session(&a2, json!({"user_id": "cust-1"})).await;
    // The first event a2's socket hears is a2's own new conversation, nothing of a1's.
    let ev = next_json(&mut ws2).await;
    assert_eq!(ev["type"], "CONVERSATION_CREATED", "{ev}");
    assert_eq!(ev["session_id"], s2.as_str(), "{ev}");
    assert_eq!(ev["agent_id"], a2.id.as_str(), "{ev}");
    // An admin key reading the tenant's logs hears both agents.
    let mut all = ws_with_token(&t, "/ws/cust-1", ADMIN_KEY).await.unwrap();
    t.say(&a1, &s1, "hello again").await;
    assert_eq!(next_json(&mut all).await["agent_id"], a1.id.as_str());
}

/// Admin keys and sign-ins are not taken from the URL (proxies log it); they are taken
/// from the `bearer` subprotocol. Agent tokens still work in `?token=`.
#[tokio::test]
async fn admin_tokens_come_in_the_subprotocol_not_the_url() {
    let t = TestServer::start().await;
    let url = format!(
        "{}/ws/conversations?token={ADMIN_KEY}",
        t.base.replace("http://", "ws://")
    );
    let err = tokio_tungstenite::connect_async(url).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let err = ws_with_token(&t, "/ws/conversations", "pk_wrong")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let feed = ws_with_token(&t, "/ws/conversations", ADMIN_KEY).await;
    assert!(feed.is_ok(), "{:?}", feed.err());
    let a = t.agent(&basic_agent("")).await;
    let sid = t.session(&a, json!({})).await;
    let mut ws = ws_with_token(&t, &format!("/chatbot/{}/ws/{sid}", a.id), &a.token)
        .await
        .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    loop {
        let ev = next_json(&mut ws).await;
        if ev["type"] == "message" && ev["role"] == "AI" {
            break;
        }
    }
}

/// Messages pipelined on one socket are committed in the order sent, and bad ones are
/// answered with the REST route's errors.
#[tokio::test]
async fn one_sockets_messages_run_in_order_with_the_rest_checks() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t.session(&a, json!({})).await;
    let mut ws = connect(&t, &format!("/chatbot/{}/ws/{sid}?token={}", a.id, a.token)).await;
    let sent: Vec<String> = (0..40).map(|i| format!("message {i}")).collect();
    for m in &sent {
        ws.send(Message::text(
            json!({"type": "message", "message": m}).to_string(),
        ))
        .await
        .unwrap();
    }
    let mut answers = 0;
    while answers < sent.len() {
        let ev = next_json(&mut ws).await;
        if ev["type"] == "message" && ev["role"] == "AI" {
            answers += 1;
        }
    }
    let humans: Vec<String> = t
        .log(&a, &sid)
        .await
        .iter()
        .filter(|m| m["role"] == "HUMAN")
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(humans, sent);

    for bad in [
        json!({"type": "message", "message": "x", "idempotency_key": "k".repeat(300)}),
        json!({"type": "message", "message": "x", "idempotency_key": "a\u{0}b"}),
        json!({"type": "message", "message": "nul \u{0} inside"}),
        json!({"type": "message", "message": "  "}),
    ] {
        ws.send(Message::text(bad.to_string())).await.unwrap();
        let ev = next_json(&mut ws).await;
        assert_eq!(ev["type"], "error", "{bad}: {ev}");
        assert_eq!(ev["error"]["status"], 422, "{bad}: {ev}");
    }
    assert_eq!(
        t.log(&a, &sid)
            .await
            .iter()
            .filter(|m| m["role"] == "HUMAN")
            .count(),
        sent.len(),
        "nothing bad was stored"
    );
    // A frame far above the longest message closes the socket.
    ws.send(Message::text("x".repeat(1 << 20))).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true));
}

/// A closed socket leaves no subscription behind.
#[tokio::test]
async fn closed_sockets_leave_no_subscriptions() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t.session(&a, json!({})).await;
    let base = t.node().events().channels();
    for i in 0..20 {
        let mut ws = connect(
            &t,
            &format!("/ws/visitor-{i}?agent_id={}&token={}", a.id, a.token),
        )
        .await;
        ws.close(None).await.unwrap();
    }
    let mut s = connect(&t, &format!("/chatbot/{}/ws/{sid}?token={}", a.id, a.token)).await;
    s.close(None).await.unwrap();
    let mut ops = ws_with_token(&t, "/ws/conversations", ADMIN_KEY)
        .await
        .unwrap();
    ops.close(None).await.unwrap();
    eventually(5, "the subscriptions are dropped", || async {
        t.node().events().channels() == base
    })
    .await;
}
