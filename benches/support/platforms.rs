//! Local fakes of the platform APIs parley answers through (the Telegram Bot API, the
//! Slack Web API) that count the answers they receive, and the deliveries the platforms
//! would post to parley's hook, signed as they sign them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::Notify;

pub const TELEGRAM_TOKEN: &str = "42:bench";
pub const SLACK_BOT_TOKEN: &str = "xoxb-1111-2222-bench";
pub const SLACK_SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
/// How long a run may wait for the platform to receive every answer.
const ANSWERS_WITHIN: Duration = Duration::from_secs(120);

/// The answers a fake platform received.
#[derive(Default)]
pub struct Answers {
    count: AtomicU64,
    /// Slack answers not posted in the thread of the message they answer.
    unthreaded: AtomicU64,
    arrived: Notify,
}

impl Answers {
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    pub fn unthreaded(&self) -> u64 {
        self.unthreaded.load(Ordering::SeqCst)
    }

    fn received(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.arrived.notify_waiters();
    }

    /// Waits until `n` answers have arrived in all (panics after [`ANSWERS_WITHIN`]).
    pub async fn wait_for(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + ANSWERS_WITHIN;
        loop {
            let arrived = self.arrived.notified();
            if self.count() >= n {
                return;
            }
            let wait = tokio::time::timeout(Duration::from_millis(50), arrived);
            if wait.await.is_err() && tokio::time::Instant::now() > deadline {
                panic!(
                    "the platform received {} answers of {n} within {ANSWERS_WITHIN:?}",
                    self.count()
                );
            }
        }
    }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// The Bot API: sendMessage answers a message and is counted; anything else (setWebhook,
/// sendChatAction) succeeds. Answers its base URL.
pub async fn telegram(answers: Arc<Answers>) -> String {
    let next = Arc::new(AtomicI64::new(1));
    let app = Router::new().route(
        "/{bot}/{method}",
        post(
            move |Path((_bot, method)): Path<(String, String)>, Json(body): Json<Value>| {
                let (answers, next) = (answers.clone(), next.clone());
                async move {
                    if method != "sendMessage" {
                        return Json(json!({"ok": true, "result": true}));
                    }
                    answers.received();
                    Json(json!({"ok": true, "result": {
                        "message_id": next.fetch_add(1, Ordering::Relaxed), "date": 0,
                        "chat": {"id": body["chat_id"], "type": "private"}}}))
                }
            },
        ),
    );
    serve(app).await
}

/// A Telegram update with a customer's text in private chat `chat`.
pub fn telegram_update(update_id: i64, chat: usize, text: &str) -> String {
    let user = 10_000 + chat as i64;
    json!({"update_id": update_id, "message": {"message_id": update_id,
        "date": chrono::Utc::now().timestamp(), "chat": {"id": user, "type": "private"},
        "from": {"id": user, "is_bot": false, "first_name": "B"}, "text": text}})
    .to_string()
}

/// Chat `chat` of the Slack bench: its channel, and the thread its messages are in.
pub fn slack_channel(chat: usize) -> String {
    format!("CBENCH{chat:05}")
}

pub fn slack_thread(chat: usize) -> String {
    format!("1699999999.{chat:06}")
}

/// The Web API: auth.test names the bot; chat.postMessage answers a message and is
/// counted, and one outside its chat's thread is counted as unthreaded; chat.update and
/// anything else succeed. Answers its base URL.
pub async fn slack(answers: Arc<Answers>) -> String {
    let next = Arc::new(AtomicU64::new(1));
    let app = Router::new().route(
        "/{method}",
        post(move |Path(method): Path<String>, Json(body): Json<Value>| {
            let (answers, next) = (answers.clone(), next.clone());
            async move {
                match method.as_str() {
                    "auth.test" => Json(json!({"ok": true, "url": "https://bench.slack.com/",
                        "team": "Bench", "user": "parley", "team_id": "T0BENCH",
                        "user_id": "U0BOT", "bot_id": "B0BOT"})),
                    "chat.postMessage" => {
                        let threaded = body["channel"]
                            .as_str()
                            .and_then(|c| c.strip_prefix("CBENCH"))
                            .and_then(|n| n.parse::<usize>().ok())
                            .is_some_and(|chat| body["thread_ts"] == slack_thread(chat).as_str());
                        if !threaded {
                            answers.unthreaded.fetch_add(1, Ordering::SeqCst);
                        }
                        answers.received();
                        let ts = format!("1700000000.{:06}", next.fetch_add(1, Ordering::Relaxed));
                        Json(json!({"ok": true, "channel": body["channel"], "ts": ts,
                            "message": {"type": "message", "text": body["text"], "ts": ts,
                                        "bot_id": "B0BOT"}}))
                    }
                    _ => Json(json!({"ok": true, "channel": body["channel"], "ts": body["ts"]})),
                }
            }
        }),
    );
    serve(app).await
}

/// A signed Events API delivery: `event_callback` with a customer's message `n` in chat
/// `chat`'s channel, inside the chat's thread. Answers (timestamp, signature, body).
pub fn slack_event(n: u64, chat: usize, text: &str) -> (String, String, String) {
    // A message ts is seconds and microseconds; n keeps each one distinct.
    let ts = format!("{}.{:06}", 1_700_000_001 + n / 1_000_000, n % 1_000_000);
    let body = json!({"token": "bench", "team_id": "T0BENCH", "api_app_id": "A0BENCH",
        "type": "event_callback", "event_id": format!("EvB{n}"), "event_time": 1_700_000_001,
        "event": {"type": "message", "channel_type": "channel", "user": format!("UB{chat:05}"),
                  "text": text, "ts": ts, "thread_ts": slack_thread(chat),
                  "channel": slack_channel(chat), "team": "T0BENCH"}})
    .to_string();
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(SLACK_SIGNING_SECRET.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    let signature = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    (timestamp, signature, body)
}
