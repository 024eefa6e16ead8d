//! LLM backends through the whole stack: webhook A/B weights, sticky choice, fallback,
//! total failure; OpenAI-compatible streaming with tool calls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::{routing::post, Json, Router};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

/// A webhook that answers with its own name and counts calls per conversation.
async fn named_hook(
    name: &'static str,
    calls: Arc<std::sync::Mutex<Vec<String>>>,
    delay: Duration,
    status: u16,
) -> String {
    serve_fake(Router::new().route(
        "/hook",
        post(move |Json(body): Json<Value>| {
            let calls = calls.clone();
            async move {
                calls
                    .lock()
                    .unwrap()
                    .push(body["conversation_id"].as_str().unwrap().to_string());
                tokio::time::sleep(delay).await;
                let code = StatusCode::from_u16(status).unwrap();
                (
                    code,
                    Json(json!({"content": format!("from {name}"), "metadata": {"model": name}})),
                )
            }
        }),
    ))
    .await
}

#[tokio::test]
async fn weighted_sticky_choice_with_fallback() {
    let t = TestServer::start().await;
    let a_calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let b_calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let a = named_hook("a", a_calls.clone(), Duration::ZERO, 200).await;
    let b = named_hook("b", b_calls.clone(), Duration::ZERO, 200).await;
    let agent = t
        .agent(&basic_agent(&format!(
            "llm:\n  - {{name: a, kind: webhook, url: '{a}/hook', weight: 3}}\n  - {{name: b, kind: webhook, url: '{b}/hook', weight: 1}}\n"
        )))
        .await;
    let mut chosen = std::collections::HashMap::new();
    for _ in 0..200 {
        let sid = t.session(&agent, json!({})).await;
        let s = t.get_session(&agent, &sid).await;
        chosen.insert(sid, s["llm_backend"].as_str().unwrap().to_string());
    }
    let share_a = chosen.values().filter(|b| *b == "a").count();
    assert!(
        (120..=180).contains(&share_a),
        "backend a got {share_a} of 200 sessions (weight 3:1)"
    );
    // Sticky: every turn of a session goes to the backend it was given.
    for (sid, backend) in chosen.iter().take(10) {
        for _ in 0..3 {
            let r = t.say(&agent, sid, "hello").await;
            assert_eq!(r["response"], format!("from {backend}"));
            assert_eq!(r["metadata"]["backend"], backend.as_str());
            assert_eq!(r["metadata"]["backend_metadata"]["model"], backend.as_str());
        }
    }
    let a_sessions: std::collections::HashSet<_> =
        a_calls.lock().unwrap().iter().cloned().collect();
    let b_sessions: std::collections::HashSet<_> =
        b_calls.lock().unwrap().iter().cloned().collect();
    assert!(a_sessions.is_disjoint(&b_sessions));
}

#[tokio::test]
async fn fallback_takes_over_on_timeout_and_total_failure_stores_the_turn() {
    let t = TestServer::start().await;
    let slow_calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let slow = named_hook("slow", slow_calls.clone(), Duration::from_secs(5), 200).await;
    let backup = named_hook("backup", Arc::default(), Duration::ZERO, 200).await;
    let broken = named_hook("broken", Arc::default(), Duration::ZERO, 500).await;
    let agent = t
        .agent(&basic_agent(&format!(
            "llm:\n  - {{name: slow, kind: webhook, url: '{slow}/hook', timeout_secs: 0.3}}\n  - {{name: backup, kind: webhook, url: '{backup}/hook', fallback: true}}\n"
        )))
        .await;
    let sid = t.session(&agent, json!({})).await;
    let r = t.say(&agent, &sid, "hello").await;
    assert_eq!(r["response"], "from backup");
    assert_eq!(r["metadata"]["backend"], "backup");
    assert_eq!(r["metadata"]["failed_backends"][0]["backend"], "slow");
    assert_eq!(r["metadata"]["failed_backends"][0]["error"], "timeout");
    assert_eq!(slow_calls.lock().unwrap().len(), 1);

    let yaml = basic_agent(&format!(
        "error_message: Our assistant is unavailable.\nllm:\n  - {{name: broken, kind: webhook, url: '{broken}/hook'}}\n  - {{name: dead, kind: webhook, url: 'http://127.0.0.1:9/hook', fallback: true, timeout_secs: 1}}\n"
    ));
    let failing = t.agent(&yaml).await;
    let sid = t.session(&failing, json!({})).await;
    let r = t.say(&failing, &sid, "anyone there?").await;
    assert_eq!(r["response"], "Our assistant is unavailable.");
    assert_eq!(r["metadata"]["turn_failed"], true);
    assert_eq!(r["metadata"]["failed_backends"][0]["error"], "status");
    assert_eq!(r["metadata"]["failed_backends"][1]["error"], "connect");
    let log = t.log(&failing, &sid).await;
    assert_eq!(log[1]["role"], "HUMAN");
    assert_eq!(log[1]["text"], "anyone there?");
    assert_eq!(log[2]["text"], "Our assistant is unavailable.");
}

fn sse(chunks: &[Value]) -> String {
    let mut out = String::new();
    for c in chunks {
        out.push_str(&format!("data: {c}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

#[tokio::test]
async fn openai_backend_streams_and_changes_state_with_a_tool_call() {
    let t = TestServer::start().await;
    let rounds = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let (r2, s2) = (rounds.clone(), seen.clone());
    let fake = serve_fake(Router::new().route(
        "/v1/chat/completions",
        post(move |Json(body): Json<Value>| {
            let (rounds, seen) = (r2.clone(), s2.clone());
            async move {
                seen.lock().unwrap().push(body.clone());
                let n = rounds.fetch_add(1, Ordering::SeqCst);
                let text = if n == 0 {
                    sse(&[
                        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "ChangeState", "arguments": "{\"state\":"}}]}}]}),
                        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"Human\"}"}}]}}]}),
                        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
                    ])
                } else {
                    sse(&[
                        json!({"choices": [{"index": 0, "delta": {"content": "Connecting you "}}]}),
                        json!({"choices": [{"index": 0, "delta": {"content": "to a human."}}]}),
                        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
                    ])
                };
                ([("content-type", "text/event-stream")], text)
            }
        }),
    ))
    .await;
    let agent = t
        .agent(&basic_agent(&format!("llm:\n  - {{name: gpt, kind: openai, base_url: '{fake}/v1', model: test-model, api_key: sk-test}}\n")))
        .await;
    let sid = t.session(&agent, json!({})).await;
    let r = t.say(&agent, &sid, "let me talk to a person").await;
    assert_eq!(r["response"], "Connecting you to a human.");
    assert_eq!(r["metadata"]["state"], "Human");
    assert_eq!(t.get_session(&agent, &sid).await["workflow_state"], "Human");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0]["model"], "test-model");
    assert_eq!(seen[0]["stream"], true);
    let tool_msg = seen[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("tool result sent back");
    assert_eq!(tool_msg["tool_call_id"], "call_1");
}

#[tokio::test]
async fn the_webhook_sees_its_context_window_across_passivation() {
    let t = TestServer::start_with(|c| c.node.passivate_after = Duration::from_secs(1)).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let s2 = seen.clone();
    let hook = serve_fake(Router::new().route(
        "/hook",
        post(move |Json(body): Json<Value>| {
            let seen = s2.clone();
            async move {
                seen.lock().unwrap().push(body["messages"].clone());
                let n = body["messages"].as_array().unwrap().len();
                Json(json!({"content": format!("reply {n}")}))
            }
        }),
    ))
    .await;
    let agent = t
        .agent(&basic_agent(&format!(
            "llm:\n  - {{kind: webhook, url: '{hook}/hook', context_window: 4}}\n"
        )))
        .await;
    let sid = t.session(&agent, json!({})).await;
    for q in ["one", "two", "three"] {
        t.say(&agent, &sid, q).await;
    }
    let contents = |m: &Value| -> Vec<String> {
        m.as_array()
            .unwrap()
            .iter()
            .map(|x| {
                format!(
                    "{}:{}",
                    x["role"].as_str().unwrap(),
                    x["content"].as_str().unwrap()
                )
            })
            .collect()
    };
    let last = seen.lock().unwrap().last().cloned().unwrap();
    // The window covers the greeting too: log ids 3 to 6 of 6.
    assert_eq!(
        contents(&last),
        [
            "assistant:reply 2",
            "user:two",
            "assistant:reply 4",
            "user:three"
        ]
    );
    eventually(10, "passivation", || async {
        t.node().resident_sessions() == 0
    })
    .await;
    t.say(&agent, &sid, "four").await;
    let last = seen.lock().unwrap().last().cloned().unwrap();
    // Re-activated from the store, the window is whole again: log ids 5 to 8.
    assert_eq!(
        contents(&last),
        [
            "assistant:reply 4",
            "user:three",
            "assistant:reply 4",
            "user:four"
        ]
    );
}
