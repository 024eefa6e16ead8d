//! Slack: auth.test at start, signed Events API deliveries (url_verification, replays and
//! forgeries refused), answers in the message's thread streamed through chat.update, our
//! own messages ignored, retries deduplicated, the per-channel rate and 429s.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use super::fake::{Fake, Recorded, Reply};
use super::*;
use crate::support::*;

const BOT_TOKEN: &str = "xoxb-1111-2222-s3cret";
const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const CHANNEL: &str = "C0123CHAN";
const FAQ_ANSWER: &str = "We are open from 9 to 17.";
const FALLBACK: &str =
    "I'm sorry, I don't have information about that. Could you rephrase your question?";

/// `X-Slack-Signature` of `body` sent at `timestamp`.
fn sign(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

async fn send(
    t: &TestServer,
    conn: &str,
    timestamp: &str,
    signature: &str,
    body: String,
) -> reqwest::Response {
    hook(t, conn)
        .header("X-Slack-Request-Timestamp", timestamp)
        .header("X-Slack-Signature", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Delivers `body` signed now, as Slack does; `retry` is X-Slack-Retry-Num.
async fn deliver_retry(
    t: &TestServer,
    conn: &str,
    body: &Value,
    retry: Option<u32>,
) -> reqwest::Response {
    let body = body.to_string();
    let ts = Utc::now().timestamp().to_string();
    let mut req = hook(t, conn)
        .header("X-Slack-Request-Timestamp", &ts)
        .header("X-Slack-Signature", sign(SIGNING_SECRET, &ts, &body))
        .header("content-type", "application/json");
    if let Some(n) = retry {
        req = req
            .header("X-Slack-Retry-Num", n.to_string())
            .header("X-Slack-Retry-Reason", "http_timeout");
    }
    req.body(body).send().await.unwrap()
}

async fn deliver(t: &TestServer, conn: &str, body: &Value) -> reqwest::Response {
    deliver_retry(t, conn, body, None).await
}

async fn deliver_ok(t: &TestServer, conn: &str, body: &Value) {
    let resp = deliver(t, conn, body).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap()
    );
}

/// An `event_callback` with a person's message in `CHANNEL`.
fn message(event_id: &str, user: &str, ts: &str, text: &str) -> Value {
    json!({"token": "XXYYZZ", "team_id": "T0TEAM", "api_app_id": "A0APP",
           "type": "event_callback", "event_id": event_id, "event_time": 1_700_000_000,
           "event": {"type": "message", "channel_type": "channel", "user": user,
                     "text": text, "ts": ts, "channel": CHANNEL, "team": "T0TEAM"}})
}

/// A message the fake accepted through chat.postMessage.
#[derive(Debug, Clone)]
struct Posted {
    ts: String,
    channel: String,
    thread_ts: Option<String>,
    text: String,
}

struct Slack {
    fake: Fake,
    posted: Arc<Mutex<Vec<Posted>>>,
}

impl Slack {
    /// The Web API as protocol-facts.md describes it for the methods parley calls:
    /// auth.test answers `auth`; the first `refused` chat.postMessage calls get a 429
    /// asking for one second.
    async fn start(auth: Value, refused: i64) -> Slack {
        let posted: Arc<Mutex<Vec<Posted>>> = Arc::default();
        let next_ts = AtomicU64::new(100);
        let refusals = AtomicI64::new(refused);
        let log = posted.clone();
        let fake = Fake::start(move |r: &Recorded| match r.path.as_str() {
            "/auth.test" => Reply::json(200, auth.clone()),
            "/chat.postMessage" if refusals.fetch_sub(1, Ordering::SeqCst) > 0 => {
                Reply::json(429, json!({"ok": false, "error": "ratelimited"}))
                    .with_header("retry-after", "1")
            }
            "/chat.postMessage" => {
                let body = r.json();
                let ts = format!("1700000000.{:06}", next_ts.fetch_add(1, Ordering::SeqCst));
                log.lock().unwrap().push(Posted {
                    ts: ts.clone(),
                    channel: body["channel"].as_str().unwrap().to_string(),
                    thread_ts: body["thread_ts"].as_str().map(str::to_string),
                    text: body["text"].as_str().unwrap().to_string(),
                });
                Reply::json(
                    200,
                    json!({"ok": true, "channel": body["channel"], "ts": ts,
                           "message": {"type": "message", "text": body["text"], "ts": ts,
                                       "bot_id": "B0BOT"}}),
                )
            }
            "/chat.update" => {
                let body = r.json();
                Reply::json(
                    200,
                    json!({"ok": true, "channel": body["channel"], "ts": body["ts"],
                           "text": body["text"]}),
                )
            }
            _ => Reply::json(200, json!({"ok": false, "error": "unknown_method"})),
        })
        .await;
        Slack { fake, posted }
    }

    async fn ok() -> Slack {
        Slack::start(
            json!({"ok": true, "url": "https://acme.slack.com/", "team": "Acme",
                   "user": "parley", "team_id": "T0TEAM", "user_id": "U0BOT",
                   "bot_id": "B0BOT"}),
            0,
        )
        .await
    }

    fn posted(&self) -> Vec<Posted> {
        self.posted.lock().unwrap().clone()
    }

    /// The chat.postMessage and chat.update calls, in order.
    fn chat_calls(&self) -> Vec<Recorded> {
        self.fake
            .requests()
            .into_iter()
            .filter(|r| r.path == "/chat.postMessage" || r.path == "/chat.update")
            .collect()
    }

    /// The texts each posted message showed, in order: as posted, then each update.
    fn shown(&self, posted: &Posted) -> Vec<String> {
        let mut texts = vec![posted.text.clone()];
        texts.extend(
            self.fake
                .requests_to("/chat.update")
                .iter()
                .map(Recorded::json)
                .filter(|u| u["ts"] == posted.ts.as_str())
                .map(|u| {
                    assert_eq!(u["channel"], posted.channel.as_str());
                    u["text"].as_str().unwrap().to_string()
                }),
        );
        texts
    }

    /// The replies as the channel shows them at the end: (thread, final text).
    fn replies(&self) -> Vec<(String, String)> {
        self.posted()
            .iter()
            .map(|p| {
                assert_eq!(p.channel, CHANNEL);
                let thread = p.thread_ts.clone().expect("answers go in the thread");
                (thread, self.shown(p).pop().unwrap())
            })
            .collect()
    }
}

async fn setup(t: &TestServer, slack: &Slack, agent: &Agent, limits: Value) -> String {
    let conn = connection(
        t,
        "slack",
        json!({"bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET,
               "api_base": slack.fake.base}),
        limits,
    )
    .await;
    assign(t, agent, &conn).await;
    let started = act(t, &conn, "start").await;
    assert_eq!(started["status"], "Connected", "{started}");
    conn
}

fn humans(texts: &[(String, String)]) -> Vec<String> {
    texts
        .iter()
        .filter(|(role, _)| role == "HUMAN")
        .map(|(_, text)| text.clone())
        .collect()
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

#[test]
fn the_signer_matches_slacks_documented_vector() {
    let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    assert_eq!(
        sign(SIGNING_SECRET, "1531420618", body),
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    );
}

#[tokio::test]
async fn start_checks_the_token_with_auth_test_and_a_refusal_is_an_error() {
    let t = TestServer::start().await;
    let slack = Slack::ok().await;
    let agent = t.agent(&basic_agent("")).await;
    setup(&t, &slack, &agent, json!({})).await;
    let auth = slack.fake.single_request();
    assert_eq!(auth.path, "/auth.test");
    assert_eq!(auth.method, reqwest::Method::POST);
    let bearer = format!("Bearer {BOT_TOKEN}");
    assert_eq!(auth.header("authorization"), Some(bearer.as_str()));

    // A revoked or wrong token: Slack answers HTTP 200 with ok:false.
    let refusing = Slack::start(json!({"ok": false, "error": "invalid_auth"}), 0).await;
    let conn = connection_named(
        &t,
        "Slack with a wrong token",
        "slack",
        json!({"bot_token": "xoxb-wrong", "signing_secret": SIGNING_SECRET,
               "api_base": refusing.fake.base}),
        json!({}),
    )
    .await;
    let started = act(&t, &conn, "start").await;
    assert_eq!(started["status"], "Error", "{started}");
    let reason = started["status_error"].as_str().unwrap();
    assert!(reason.contains("invalid_auth"), "{started}");
    assert!(!reason.contains("xoxb-wrong"), "{started}");
    assert_eq!(get_connection(&t, &conn).await["status"], "Error");
    let status = events(&t, &conn)
        .await
        .into_iter()
        .find(|e| e["kind"] == "status")
        .unwrap();
    assert!(
        status["detail"]["error"]
            .as_str()
            .unwrap()
            .contains("invalid_auth"),
        "{status}"
    );
    // Not started: deliveries are refused for Slack to retry.
    let resp = deliver(&t, &conn, &message("Ev0", "U1", "1700000001.000100", "hi")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn url_verification_is_echoed_and_stale_or_forged_deliveries_refused() {
    let t = TestServer::start().await;
    let slack = Slack::ok().await;
    let agent = t.agent(&basic_agent("")).await;
    let conn = setup(&t, &slack, &agent, json!({})).await;

    let challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P";
    let resp = deliver(
        &t,
        &conn,
        &json!({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": challenge,
                "type": "url_verification"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), challenge);

    let genuine = message(
        "Ev1",
        "U1",
        "1700000001.000100",
        "What are your opening hours?",
    );
    let body = genuine.to_string();
    let now = Utc::now().timestamp();
    let at = |offset: i64| (now + offset).to_string();
    let forgeries: Vec<(&str, String, String, String)> = vec![
        (
            "replayed: signed 10 minutes ago",
            at(-600),
            sign(SIGNING_SECRET, &at(-600), &body),
            body.clone(),
        ),
        (
            "just past the 300 s window",
            at(-302),
            sign(SIGNING_SECRET, &at(-302), &body),
            body.clone(),
        ),
        (
            "from the future",
            at(600),
            sign(SIGNING_SECRET, &at(600), &body),
            body.clone(),
        ),
        (
            "another secret",
            at(0),
            sign("not-the-signing-secret", &at(0), &body),
            body.clone(),
        ),
        (
            "another timestamp than signed",
            at(0),
            sign(SIGNING_SECRET, &at(-1), &body),
            body.clone(),
        ),
        (
            "altered body",
            at(0),
            sign(SIGNING_SECRET, &at(0), &body),
            body.replace("opening", "closing"),
        ),
        ("no signature", at(0), String::new(), body.clone()),
    ];
    for (what, ts, signature, body) in &forgeries {
        let resp = send(&t, &conn, ts, signature, body.clone()).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
        let (_, answer) = json_of(resp).await;
        assert_eq!(error_code(&answer), "unauthorized", "{what}");
    }
    let kinds = event_kinds(&t, &conn).await;
    assert_eq!(
        rejections(&t, &conn).await,
        forgeries.len() as u64,
        "{kinds:?}"
    );
    assert_eq!(count(&kinds, "delivery"), 0, "{kinds:?}");
    assert!(slack.chat_calls().is_empty());

    // The genuine delivery of the same event is new: the forgeries left no trace.
    deliver_ok(&t, &conn, &genuine).await;
    replied_session(&t, &conn, "Ev1").await;
    assert_eq!(
        slack.replies(),
        [("1700000001.000100".to_string(), FAQ_ANSWER.to_string())]
    );
}

#[tokio::test]
async fn a_mention_delivered_as_message_and_app_mention_is_one_turn() {
    let t = TestServer::start().await;
    let slack = Slack::ok().await;
    let agent = t.agent(&basic_agent("")).await;
    let conn = setup(&t, &slack, &agent, json!({})).await;
    let ts = "1700000002.000200";
    let plain = message("EvM", "U1", ts, "<@UBOT> What are your opening hours?");
    let mut mention = message("EvA", "U1", ts, "<@UBOT> What are your opening hours?");
    mention["event"]["type"] = json!("app_mention");
    deliver_ok(&t, &conn, &plain).await;
    deliver_ok(&t, &conn, &mention).await;
    let session = replied_session(&t, &conn, "EvM").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let texts = session_texts(&t, &agent, &session).await;
    assert_eq!(
        texts.iter().filter(|(r, _)| r == "HUMAN").count(),
        1,
        "{texts:?}"
    );
    assert_eq!(slack.replies().len(), 1);
    let kinds = event_kinds(&t, &conn).await;
    assert_eq!(count(&kinds, "duplicate"), 1, "{kinds:?}");
}

#[tokio::test]
async fn a_message_is_answered_once_in_its_thread_and_bot_messages_are_ignored() {
    let t = TestServer::start().await;
    let slack = Slack::ok().await;
    let agent = t.agent(&basic_agent("")).await;
    let conn = setup(&t, &slack, &agent, json!({})).await;

    let asked = message(
        "Ev1",
        "U1",
        "1700000001.000100",
        "What are your opening hours?",
    );
    deliver_ok(&t, &conn, &asked).await;
    let session = replied_session(&t, &conn, "Ev1").await;
    assert_eq!(
        slack.replies(),
        [("1700000001.000100".to_string(), FAQ_ANSWER.to_string())]
    );
    let calls = slack.chat_calls();
    assert_eq!(calls[0].path, "/chat.postMessage");
    let bearer = format!("Bearer {BOT_TOKEN}");
    for call in &calls {
        assert_eq!(call.header("authorization"), Some(bearer.as_str()));
        assert!(call
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
    }
    let reply = events(&t, &conn)
        .await
        .into_iter()
        .find(|e| e["kind"] == "reply")
        .unwrap();
    assert_eq!(reply["detail"]["chat_id"], CHANNEL);
    assert_eq!(
        reply["detail"]["message_ids"],
        json!([slack.posted()[0].ts])
    );

    // Slack retries a delivery it saw no 2xx for in time: the same event_id is one turn.
    let resp = deliver_retry(&t, &conn, &asked, Some(1)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    // Our own answer comes back as a message event with bot_id; bot messages too.
    let mut own = message("Ev2", "U0BOT", &slack.posted()[0].ts, FAQ_ANSWER);
    own["event"]["bot_id"] = json!("B0BOT");
    own["event"]["thread_ts"] = json!("1700000001.000100");
    deliver_ok(&t, &conn, &own).await;
    let mut bot = message("Ev3", "U0OTHER", "1700000001.000300", "beep");
    bot["event"]["bot_id"] = json!("B0OTHER");
    bot["event"]["subtype"] = json!("bot_message");
    deliver_ok(&t, &conn, &bot).await;
    let kinds = event_kinds(&t, &conn).await;
    assert_eq!(count(&kinds, "duplicate"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "delivery"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "reply"), 1, "{kinds:?}");
    assert_eq!(
        humans(&session_texts(&t, &agent, &session).await),
        ["What are your opening hours?"]
    );
    assert_eq!(slack.posted().len(), 1);

    // A message inside a thread is answered in that thread, in the same session.
    let mut follow = message("Ev4", "U1", "1700000001.000500", "thanks");
    follow["event"]["thread_ts"] = json!("1700000001.000100");
    deliver_ok(&t, &conn, &follow).await;
    assert_eq!(replied_session(&t, &conn, "Ev4").await, session);
    let replies = slack.replies();
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(
        replies[1],
        ("1700000001.000100".to_string(), FALLBACK.to_string())
    );
}

#[tokio::test]
async fn a_streamed_answer_updates_the_posted_message_in_order() {
    let t = TestServer::start().await;
    let slack = Slack::ok().await;
    let llm = slow_llm(
        &["One ", "two ", "three ", "four ", "five."],
        Duration::from_millis(250),
    )
    .await;
    let agent = slow_agent(&t, &llm).await;
    let conn = setup(&t, &slack, &agent, json!({"per_chat_per_second": 10})).await;
    deliver_ok(
        &t,
        &conn,
        &message("Ev1", "U1", "1700000001.000100", "count to five"),
    )
    .await;
    replied_session(&t, &conn, "Ev1").await;
    let posted = slack.posted();
    assert_eq!(posted.len(), 1, "one message, then updates: {posted:?}");
    assert_eq!(posted[0].thread_ts.as_deref(), Some("1700000001.000100"));
    let calls = slack.chat_calls();
    assert_eq!(calls[0].path, "/chat.postMessage");
    assert!(calls[1..].iter().all(|c| c.path == "/chat.update"));
    let shown = slack.shown(&posted[0]);
    assert_eq!(shown.len(), calls.len());
    assert!(shown.len() >= 3, "several updates as it grew: {shown:?}");
    for w in shown.windows(2) {
        assert!(
            w[1].starts_with(w[0].trim_end()) && w[1] != w[0],
            "{shown:?}"
        );
    }
    assert_eq!(shown.last().unwrap(), "One two three four five.");
}

#[tokio::test]
async fn a_channel_burst_is_answered_in_order_within_the_channel_rate() {
    let t = TestServer::start().await;
    let slack = Slack::ok().await;
    let agent = t.agent(&basic_agent("")).await;
    let conn = setup(&t, &slack, &agent, json!({"per_chat_per_second": 2})).await;
    let ts = |i: usize| format!("1700000100.{i:06}");
    for i in 1..=6 {
        deliver_ok(
            &t,
            &conn,
            &message(
                &format!("Ev{i}"),
                "U1",
                &ts(i),
                &format!("question number {i}"),
            ),
        )
        .await;
    }
    let session = replied_session(&t, &conn, "Ev6").await;
    let expected: Vec<_> = (1..=6).map(|i| format!("question number {i}")).collect();
    assert_eq!(
        humans(&session_texts(&t, &agent, &session).await),
        expected,
        "turns ran in arrival order"
    );
    // Each answer in its message's thread, in order.
    let expected: Vec<_> = (1..=6).map(|i| (ts(i), FALLBACK.to_string())).collect();
    assert_eq!(slack.replies(), expected);

    // 2 per second with bursts of 2: any calls i < j to the channel are at least
    // (j - i - 1) × 500 ms apart (a little less for the way from parley to the fake).
    let calls = slack.chat_calls();
    assert!(calls.len() >= 6, "{}", calls.len());
    let slack_ms = 60;
    for i in 0..calls.len() {
        for j in i + 2..calls.len() {
            let gap = calls[j].at - calls[i].at;
            let least = Duration::from_millis(500 * (j - i - 1) as u64 - slack_ms);
            assert!(
                gap >= least,
                "calls {i} and {j} only {gap:?} apart: {:?}",
                calls.iter().map(|c| c.at - calls[0].at).collect::<Vec<_>>()
            );
        }
    }
}

#[tokio::test]
async fn a_429_on_post_message_is_waited_out_and_the_answer_posted_once() {
    let t = TestServer::start().await;
    // The first chat.postMessage is refused: "Retry-After: 1".
    let slack = Slack::start(
        json!({"ok": true, "team_id": "T0TEAM", "user_id": "U0BOT"}),
        1,
    )
    .await;
    let agent = t.agent(&basic_agent("")).await;
    // The connection's own limit would allow a post every 100 ms: only the 429 holds it.
    let conn = setup(&t, &slack, &agent, json!({"per_chat_per_second": 10})).await;
    deliver_ok(
        &t,
        &conn,
        &message(
            "Ev1",
            "U1",
            "1700000001.000100",
            "What are your opening hours?",
        ),
    )
    .await;
    replied_session(&t, &conn, "Ev1").await;
    let posts = slack.fake.requests_to("/chat.postMessage");
    assert_eq!(
        posts.len(),
        2,
        "the refused post, then one after the wait: {posts:#?}"
    );
    let waited = posts[1].at - posts[0].at;
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    // Nothing else reached the channel during the wait.
    assert!(slack
        .chat_calls()
        .iter()
        .all(|c| c.at <= posts[0].at || c.at >= posts[1].at));
    assert_eq!(slack.posted().len(), 1);
    assert_eq!(
        slack.replies(),
        [("1700000001.000100".to_string(), FAQ_ANSWER.to_string())]
    );
    let kinds = event_kinds(&t, &conn).await;
    assert!(!kinds.iter().any(|k| k == "error"), "{kinds:?}");
}
