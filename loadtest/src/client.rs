//! The Chat API as a customer uses it (REST and WebSocket), and one simulated customer:
//! a session of M turns with think time between them.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::Rng;
use reqwest::{Response, Url};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::cli::{Spread, Transport};
use crate::distribution::Dist;
use crate::stats::{Failure, Recorder};
use crate::verify::{message_text, parse_seq, SessionRecord};

#[derive(Debug, Clone)]
pub struct Agent {
    pub id: String,
    pub token: String,
}

/// The Chat API of one agent on one or more nodes.
pub struct Chat {
    http: reqwest::Client,
    targets: Vec<String>,
    agent: Agent,
    spread: Spread,
    timeout: Duration,
}

impl Chat {
    pub fn new(
        http: reqwest::Client,
        targets: &[String],
        agent: Agent,
        spread: Spread,
        timeout: Duration,
    ) -> Chat {
        Chat {
            http,
            targets: targets.to_vec(),
            agent,
            spread,
            timeout,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The node customer `i` is assigned to (round-robin).
    pub fn target_for(&self, i: usize) -> &str {
        &self.targets[i % self.targets.len()]
    }

    /// The node for customer `i`'s next request: its own, or any under `--spread message`.
    pub fn pick(&self, i: usize) -> &str {
        match self.spread {
            Spread::Session => self.target_for(i),
            Spread::Message => self.target_for(rand::thread_rng().gen_range(0..self.targets.len())),
        }
    }

    fn url(&self, target: &str, path: &str) -> String {
        format!("{target}/chatbot/{}{path}", self.agent.id)
    }

    pub async fn open_session(&self, target: &str) -> Result<String, Failure> {
        let resp = self
            .http
            .post(self.url(target, "/session"))
            .bearer_auth(&self.agent.token)
            .json(&json!({}))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| Failure::from_reqwest(&e))?;
        let body = json_body(resp).await?;
        body["session_id"]
            .as_str()
            .map(str::to_string)
            .ok_or(Failure::Protocol("session answer without session_id"))
    }

    /// One turn over REST; Ok means the server committed it.
    pub async fn send_rest(&self, target: &str, session: &str, text: &str) -> Result<(), Failure> {
        let resp = self
            .http
            .post(self.url(target, &format!("/session/{session}/run_v2")))
            .bearer_auth(&self.agent.token)
            .json(&json!({ "message": text }))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| Failure::from_reqwest(&e))?;
        let body = json_body(resp).await?;
        if body.get("response").is_some() {
            Ok(())
        } else {
            Err(Failure::Protocol("run_v2 answer without response"))
        }
    }

    /// The session's log as (role, text), in order.
    pub async fn messages(
        &self,
        target: &str,
        session: &str,
    ) -> Result<Vec<(String, String)>, Failure> {
        let resp = self
            .http
            .get(self.url(target, &format!("/session/{session}/messages")))
            .bearer_auth(&self.agent.token)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| Failure::from_reqwest(&e))?;
        let body = json_body(resp).await?;
        let logs = body["logs"]
            .as_array()
            .ok_or(Failure::Protocol("messages answer without logs"))?;
        Ok(logs
            .iter()
            .map(|m| {
                let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
                (s("role"), s("text"))
            })
            .collect())
    }

    pub async fn connect_ws(&self, target: &str, session: &str) -> Result<WsSession, Failure> {
        let mut url = Url::parse(&self.url(target, &format!("/ws/{session}")))
            .map_err(|_| Failure::Protocol("bad target URL"))?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .map_err(|()| Failure::Protocol("bad target URL"))?;
        url.query_pairs_mut()
            .append_pair("token", &self.agent.token);
        // TCP_NODELAY, as reqwest sets it: Nagle would hold back small frames.
        let connect = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true);
        match tokio::time::timeout(self.timeout, connect).await {
            Err(_) => Err(Failure::Timeout),
            Ok(Ok((stream, _))) => Ok(WsSession { stream }),
            Ok(Err(tungstenite::Error::Http(resp))) => {
                let body = resp.body().as_deref().unwrap_or_default();
                Err(http_failure(resp.status().as_u16(), body))
            }
            Ok(Err(_)) => Err(Failure::Transport("ws connect")),
        }
    }
}

/// A 2xx answer's JSON, or the failure a non-2xx answer stands for.
async fn json_body(resp: Response) -> Result<Value, Failure> {
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| Failure::from_reqwest(&e))?;
    if !status.is_success() {
        return Err(http_failure(status.as_u16(), &bytes));
    }
    serde_json::from_slice(&bytes).map_err(|_| Failure::Protocol("answer is not JSON"))
}

fn http_failure(status: u16, body: &[u8]) -> Failure {
    let code = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_else(|| "-".into());
    Failure::Http { status, code }
}

/// A session's WebSocket.
pub struct WsSession {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsSession {
    /// Sends turn `seq` and waits for its answer: the AI message event after the event of
    /// this customer message (message events are published once committed).
    pub async fn turn(&mut self, seq: u32, timeout: Duration) -> Result<(), Failure> {
        let deadline = Instant::now() + timeout;
        let out = json!({"type": "message", "message": message_text(seq)}).to_string();
        tokio::time::timeout_at(deadline, self.stream.send(Message::text(out)))
            .await
            .map_err(|_| Failure::Timeout)?
            .map_err(|_| Failure::Transport("ws send"))?;
        let mut accepted = false;
        loop {
            let text = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return Err(Failure::Timeout),
                Ok(Some(Ok(Message::Text(t)))) => t,
                Ok(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) => {
                    return Err(Failure::Transport("ws closed"))
                }
                Ok(Some(Ok(_))) => continue,
            };
            let ev: Value = serde_json::from_str(text.as_str())
                .map_err(|_| Failure::Protocol("ws event is not JSON"))?;
            match (ev["type"].as_str(), ev["role"].as_str()) {
                (Some("message"), Some("HUMAN")) => {
                    accepted |= ev["text"].as_str().and_then(parse_seq) == Some(seq);
                }
                (Some("message"), Some("AI")) if accepted => return Ok(()),
                (Some("error"), _) => {
                    // Only turn errors carry a status; `lagged` (events dropped) does not,
                    // and the answer may still come.
                    if let Some(status) = ev["error"]["status"].as_u64() {
                        let code = ev["error"]["code"].as_str().unwrap_or("-").to_string();
                        return Err(Failure::Http {
                            status: u16::try_from(status).unwrap_or(0),
                            code,
                        });
                    }
                }
                (Some("close" | "timeout"), _) => {
                    return Err(Failure::Protocol("session closed by the server"))
                }
                _ => {}
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// What every simulated customer does in a session.
#[derive(Debug, Clone)]
pub struct Script {
    pub transport: Transport,
    pub turns: u32,
    pub think: Dist,
}

/// Customer `customer` opens a session and sends its turns one after another (the next
/// only after the answer), stopping early at `deadline`.
pub async fn run_session(
    chat: &Chat,
    script: &Script,
    rec: &Recorder,
    customer: usize,
    deadline: Option<Instant>,
) {
    let _active = rec.active();
    let started = Instant::now();
    let id = match chat.open_session(chat.pick(customer)).await {
        Ok(id) => id,
        Err(f) => return rec.failure(&f),
    };
    rec.session_started(started.elapsed());
    let mut record = SessionRecord {
        id,
        ..SessionRecord::default()
    };
    let mut ws = None;
    if script.transport == Transport::Ws {
        match chat.connect_ws(chat.pick(customer), &record.id).await {
            Ok(s) => ws = Some(s),
            Err(f) => {
                rec.failure(&f);
                return rec.session_done(record);
            }
        }
    }
    for seq in 1..=script.turns {
        if seq > 1 && !script.think.is_zero() {
            tokio::time::sleep(script.think.sample()).await;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let t0 = Instant::now();
        let result = match &mut ws {
            Some(ws) => ws.turn(seq, chat.timeout()).await,
            None => {
                let target = chat.pick(customer);
                chat.send_rest(target, &record.id, &message_text(seq)).await
            }
        };
        match result {
            Ok(()) => {
                rec.turn(t0.elapsed());
                record.acked.push(seq);
            }
            Err(f) => {
                rec.failure(&f);
                record.unacked.push(seq);
                // After a timeout or a broken socket, later events could not be told
                // apart from this turn's: the customer gives up on the session.
                if ws.is_some() && !matches!(f, Failure::Http { .. }) {
                    break;
                }
            }
        }
    }
    if let Some(ws) = ws {
        ws.close().await;
    }
    rec.session_done(record);
}
