//! A mock LLM backend in this process, so a run can include the backend hop a real
//! deployment has: `POST /webhook` speaks parley's webhook contract and
//! `POST /v1/chat/completions` streams like an OpenAI-compatible server. Each answer waits
//! for a delay drawn from the configured distribution first.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::distribution::Dist;

struct MockState {
    latency: Dist,
    calls: AtomicU64,
}

pub struct MockLlm {
    /// Base URL, without a trailing slash.
    pub url: String,
    state: Arc<MockState>,
    task: JoinHandle<()>,
}

impl MockLlm {
    pub async fn start(listen: SocketAddr, latency: Dist) -> anyhow::Result<MockLlm> {
        anyhow::ensure!(
            !listen.ip().is_unspecified(),
            "--llm-mock-listen: give an address the targets can reach, not {}",
            listen.ip()
        );
        let state = Arc::new(MockState {
            latency,
            calls: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/webhook", post(webhook))
            .route("/v1/chat/completions", post(chat_completions))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(MockLlm { url, state, task })
    }

    /// Requests answered so far.
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::Relaxed)
    }
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The reply to a request's last user message.
fn answer(messages: &Value) -> String {
    let last = messages
        .as_array()
        .and_then(|ms| ms.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    format!("You asked: {last} Here is what I found for you.")
}

async fn respond_later(st: &MockState) {
    st.calls.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(st.latency.sample()).await;
}

async fn webhook(State(st): State<Arc<MockState>>, Json(req): Json<Value>) -> Json<Value> {
    respond_later(&st).await;
    Json(json!({ "content": answer(&req["messages"]) }))
}

/// One `data:` event per word, a finish reason, then `[DONE]`.
async fn chat_completions(State(st): State<Arc<MockState>>, Json(req): Json<Value>) -> Response {
    respond_later(&st).await;
    let text = answer(&req["messages"]);
    let event = |v: Value| Bytes::from(format!("data: {v}\n\n"));
    let mut events: Vec<Bytes> = text
        .split_inclusive(' ')
        .map(|word| event(json!({"choices": [{"index": 0, "delta": {"content": word}}]})))
        .collect();
    events.push(event(
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    ));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let body = Body::from_stream(futures::stream::iter(
        events.into_iter().map(Ok::<_, Infallible>),
    ));
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}
