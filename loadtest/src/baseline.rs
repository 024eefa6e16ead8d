//! The bare baseline: an axum JSON echo server in this process, driven by the same HTTP
//! client (or WebSocket client) with the same concurrency and think time for the same
//! time as the parley run. Its requests/s is what this machine and client manage with no
//! conversation engine behind them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::Transport;
use crate::distribution::Dist;
use crate::stats::{Failure, Recorder};
use crate::verify::message_text;

pub struct EchoServer {
    pub url: String,
    task: JoinHandle<()>,
}

impl EchoServer {
    pub async fn start() -> anyhow::Result<EchoServer> {
        let app = Router::new()
            .route(
                "/echo",
                post(|Json(body): Json<Value>| async { Json(body) }),
            )
            .route("/ws", get(ws_echo));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(EchoServer { url, task })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn ws_echo(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|mut socket| async move {
        while let Some(Ok(m)) = socket.recv().await {
            let echo = match m {
                WsMessage::Text(_) => m,
                WsMessage::Close(_) => break,
                _ => continue,
            };
            if socket.send(echo).await.is_err() {
                break;
            }
        }
    })
}

/// How the baseline is driven: mirrors the parley run.
#[derive(Debug, Clone)]
pub struct Load {
    pub transport: Transport,
    pub concurrency: usize,
    pub duration: Duration,
    pub think: Dist,
    pub timeout: Duration,
}

/// Runs `load` against the echo server at `url`, recording into `rec`.
pub async fn drive(
    http: reqwest::Client,
    url: &str,
    load: &Load,
    rec: Arc<Recorder>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let deadline = start + load.duration;
    let mut tasks = JoinSet::new();
    for _ in 0..load.concurrency.max(1) {
        let (http, url, load, rec) = (http.clone(), url.to_string(), load.clone(), rec.clone());
        tasks.spawn(async move {
            match load.transport {
                Transport::Rest => rest_worker(&http, &url, &load, &rec, deadline).await,
                Transport::Ws => ws_worker(&url, &load, &rec, deadline).await,
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done?;
    }
    Ok(start.elapsed())
}

async fn think(load: &Load, seq: u32) {
    if seq > 1 && !load.think.is_zero() {
        tokio::time::sleep(load.think.sample()).await;
    }
}

async fn rest_worker(
    http: &reqwest::Client,
    url: &str,
    load: &Load,
    rec: &Recorder,
    deadline: Instant,
) {
    let _active = rec.active();
    let url = format!("{url}/echo");
    for seq in 1.. {
        think(load, seq).await;
        if Instant::now() >= deadline {
            break;
        }
        let t0 = Instant::now();
        let body = json!({ "message": message_text(seq) });
        let result = async {
            let resp = http
                .post(&url)
                .json(&body)
                .timeout(load.timeout)
                .send()
                .await
                .map_err(|e| Failure::from_reqwest(&e))?;
            let status = resp.status().as_u16();
            let echoed: Value = resp.json().await.map_err(|e| Failure::from_reqwest(&e))?;
            match (status, echoed == body) {
                (200, true) => Ok(()),
                (200, false) => Err(Failure::Protocol("echo differs")),
                (status, _) => Err(Failure::Http {
                    status,
                    code: "-".into(),
                }),
            }
        }
        .await;
        match result {
            Ok(()) => rec.turn(t0.elapsed()),
            Err(f) => rec.failure(&f),
        }
    }
}

async fn ws_worker(url: &str, load: &Load, rec: &Recorder, deadline: Instant) {
    let _active = rec.active();
    let ws_url = format!("{}/ws", url.replacen("http", "ws", 1));
    let connect = tokio_tungstenite::connect_async_with_config(ws_url.as_str(), None, true);
    let mut socket = match connect.await {
        Ok((s, _)) => s,
        Err(_) => return rec.failure(&Failure::Transport("ws connect")),
    };
    for seq in 1.. {
        think(load, seq).await;
        if Instant::now() >= deadline {
            break;
        }
        let t0 = Instant::now();
        let text = json!({"type": "message", "message": message_text(seq)}).to_string();
        let round_trip = async {
            socket.send(Message::text(text.clone())).await.ok()?;
            match socket.next().await? {
                Ok(Message::Text(t)) => Some(t.as_str() == text),
                _ => None,
            }
        };
        match tokio::time::timeout(load.timeout, round_trip).await {
            Ok(Some(true)) => rec.turn(t0.elapsed()),
            Ok(Some(false)) => rec.failure(&Failure::Protocol("echo differs")),
            Ok(None) => return rec.failure(&Failure::Transport("ws closed")),
            Err(_) => return rec.failure(&Failure::Timeout),
        }
    }
    let _ = socket.close(None).await;
}
