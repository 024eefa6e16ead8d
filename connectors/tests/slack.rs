//! Slack: request signatures and Events API parsing, and the client against a fake Web
//! API on loopback that behaves as Slack does.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use chrono::{TimeZone, Utc};
use parley_connectors::slack::{parse, verify, AuthTest, SlackClient, MAX_CLOCK_SKEW_SECS};
use parley_connectors::{ConnectorError, Delivery, Sent};
use parley_engine::inbound::InboundMessage;
use serde_json::{json, Value};
use support::{dead_base, Fake, Recorded, Reply};

// Slack's documented example.
const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const TS: &str = "1531420618";
const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
const NOW: i64 = 1_531_420_618 + 42;

const BOT_TOKEN: &str = "xoxb-1111-2222-s3cretBotToken";

fn unauthorized(result: Result<(), ConnectorError>) -> bool {
    matches!(result, Err(ConnectorError::Unauthorized(_)))
}

// ---------------------------------------------------------------- verify

#[test]
fn verify_accepts_slacks_example() {
    assert_eq!(verify(SECRET, TS, SIGNATURE, BODY.as_bytes(), NOW), Ok(()));
}

#[test]
fn verify_rejects_a_tampered_body_signature_or_secret() {
    let mut flipped = SIGNATURE.to_owned();
    flipped.replace_range(10..11, "0");
    assert_ne!(flipped, SIGNATURE);
    let body = BODY.as_bytes();
    let cases = [
        (
            "body",
            verify(
                SECRET,
                TS,
                SIGNATURE,
                BODY.replace("roadrunner", "coyote").as_bytes(),
                NOW,
            ),
        ),
        ("empty body", verify(SECRET, TS, SIGNATURE, b"", NOW)),
        (
            "secret",
            verify("8f742231b10e8888abcd99yyyzzz85a6", TS, SIGNATURE, body, NOW),
        ),
        ("signature", verify(SECRET, TS, &flipped, body, NOW)),
        (
            "truncated",
            verify(SECRET, TS, &SIGNATURE[..SIGNATURE.len() - 2], body, NOW),
        ),
        ("no prefix", verify(SECRET, TS, &SIGNATURE[3..], body, NOW)),
        (
            "v1 prefix",
            verify(SECRET, TS, &SIGNATURE.replace("v0=", "v1="), body, NOW),
        ),
        ("not hex", verify(SECRET, TS, "v0=zz", body, NOW)),
        ("empty", verify(SECRET, TS, "", body, NOW)),
        // The timestamp is signed too: another one (still fresh) does not match.
        (
            "other ts",
            verify(SECRET, "1531420619", SIGNATURE, body, NOW),
        ),
        (
            "ts not a number",
            verify(SECRET, "soon", SIGNATURE, body, NOW),
        ),
        ("ts empty", verify(SECRET, "", SIGNATURE, body, NOW)),
    ];
    for (name, result) in cases {
        assert!(unauthorized(result.clone()), "{name}: {result:?}");
    }
}

#[test]
fn verify_rejects_timestamps_more_than_five_minutes_away() {
    let ts: i64 = TS.parse().unwrap();
    let skew = MAX_CLOCK_SKEW_SECS as i64;
    assert_eq!(skew, 300);
    let body = BODY.as_bytes();
    assert_eq!(verify(SECRET, TS, SIGNATURE, body, ts + skew), Ok(()));
    assert_eq!(verify(SECRET, TS, SIGNATURE, body, ts - skew), Ok(()));
    assert!(unauthorized(verify(
        SECRET,
        TS,
        SIGNATURE,
        body,
        ts + skew + 1
    )));
    assert!(unauthorized(verify(
        SECRET,
        TS,
        SIGNATURE,
        body,
        ts - skew - 1
    )));
    assert!(unauthorized(verify(
        SECRET,
        TS,
        SIGNATURE,
        body,
        1_700_000_000
    )));
    // Extreme values neither overflow nor pass.
    assert!(unauthorized(verify(SECRET, TS, SIGNATURE, body, i64::MIN)));
    assert!(unauthorized(verify(
        SECRET,
        &i64::MAX.to_string(),
        SIGNATURE,
        body,
        i64::MIN
    )));
}

// ---------------------------------------------------------------- parse

fn event_callback(event: Value) -> Value {
    json!({
        "token": "XXYYZZ",
        "team_id": "T1DC2JH3J",
        "api_app_id": "A0PARLEY",
        "event": event,
        "type": "event_callback",
        "event_id": "Ev08MFMKH6",
        "event_time": 1_700_000_000,
        "authorizations": [{"team_id": "T1DC2JH3J", "user_id": "U0BOT", "is_bot": true}]
    })
}

fn channel_message() -> Value {
    json!({
        "type": "message",
        "channel": "C2147483705",
        "channel_type": "channel",
        "user": "U2147483697",
        "text": "How much is Premium?",
        "ts": "1700000001.000200",
        "event_ts": "1700000001.000200"
    })
}

fn parse_json(delivery: &Value, retry_num: Option<&str>) -> Result<Delivery, ConnectorError> {
    parse(delivery.to_string().as_bytes(), retry_num)
}

fn parse_message(delivery: &Value, retry_num: Option<&str>) -> InboundMessage {
    match parse_json(delivery, retry_num) {
        Ok(Delivery::Message(message)) => message,
        other => panic!("not a message: {other:?}"),
    }
}

#[test]
fn parse_answers_url_verification_with_the_challenge() {
    let delivery = json!({
        "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification"
    });
    assert_eq!(
        parse_json(&delivery, None),
        Ok(Delivery::Handshake(
            "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P".into()
        ))
    );
}

#[test]
fn parse_maps_a_channel_message_to_a_new_thread_under_it() {
    assert_eq!(
        parse_json(&event_callback(channel_message()), None),
        Ok(Delivery::Message(InboundMessage {
            platform: parley_connectors::slack::PLATFORM,
            dedup_id: "Ev08MFMKH6".into(),
            user_id: "U2147483697".into(),
            user_name: None,
            chat_id: "C2147483705".into(),
            thread_id: Some("1700000001.000200".into()),
            text: "How much is Premium?".into(),
            sent_at: Utc.timestamp_opt(1_700_000_001, 200_000).unwrap(),
            reply_context: json!({"team_id": "T1DC2JH3J", "ts": "1700000001.000200"}),
        }))
    );
}

#[test]
fn parse_answers_a_thread_reply_in_its_thread() {
    let mut event = channel_message();
    event["thread_ts"] = json!("1699999999.000100");
    let message = parse_message(&event_callback(event), None);
    assert_eq!(message.thread_id.as_deref(), Some("1699999999.000100"));
}

#[test]
fn parse_strips_the_leading_mention_of_an_app_mention() {
    let mut event = channel_message();
    event["type"] = json!("app_mention");
    event["text"] = json!("<@U0BOT>  what's the fee for <@U123>?");
    let message = parse_message(&event_callback(event), None);
    assert_eq!(message.text, "what's the fee for <@U123>?");
    // A plain message keeps its text as written.
    let mut event = channel_message();
    event["text"] = json!("<@U0BOT> hi");
    assert_eq!(
        parse_message(&event_callback(event), None).text,
        "<@U0BOT> hi"
    );
}

#[test]
fn parse_records_a_redelivery_number() {
    let delivery = event_callback(channel_message());
    let message = parse_message(&delivery, Some("2"));
    assert_eq!(message.reply_context["retry_num"], json!(2));
    assert_eq!(message.dedup_id, "Ev08MFMKH6");
    // The header is not signed: junk in it is left out, not fatal.
    let message = parse_message(&delivery, Some("two"));
    assert_eq!(message.reply_context.get("retry_num"), None);
}

#[test]
fn parse_falls_back_to_event_time_when_ts_is_not_a_time() {
    let mut event = channel_message();
    event["ts"] = json!("later");
    let message = parse_message(&event_callback(event), None);
    assert_eq!(
        message.sent_at,
        Utc.timestamp_opt(1_700_000_000, 0).unwrap()
    );
}

#[test]
fn parse_ignores_bots_edits_and_other_events() {
    let with = |field: &str, value: Value| {
        let mut event = channel_message();
        event[field] = value;
        event_callback(event)
    };
    let cases = [
        ("bot_id", with("bot_id", json!("B0PARLEY"))),
        ("bot_message", with("subtype", json!("bot_message"))),
        ("message_changed", with("subtype", json!("message_changed"))),
        ("message_deleted", with("subtype", json!("message_deleted"))),
        ("channel_join", with("subtype", json!("channel_join"))),
        ("empty text", with("text", json!(""))),
        ("reaction", with("type", json!("reaction_added"))),
        (
            "rate limited",
            json!({"token": "x", "type": "app_rate_limited", "team_id": "T1",
                   "minute_rate_limited": 1518467820, "api_app_id": "A0PARLEY"}),
        ),
    ];
    for (name, delivery) in cases {
        let result = parse_json(&delivery, None);
        assert!(
            matches!(result, Ok(Delivery::Ignored(_))),
            "{name}: {result:?}"
        );
    }
}

#[test]
fn parse_rejects_what_is_not_an_event_delivery() {
    let without = |field: &str| {
        let mut event = channel_message();
        event.as_object_mut().unwrap().remove(field);
        event_callback(event)
    };
    let mut no_event_id = event_callback(channel_message());
    no_event_id.as_object_mut().unwrap().remove("event_id");
    let mut no_event = event_callback(channel_message());
    no_event.as_object_mut().unwrap().remove("event");
    let mut bad_time = event_callback(channel_message());
    bad_time["event"]["ts"] = json!("later");
    bad_time.as_object_mut().unwrap().remove("event_time");
    let cases = [
        ("not json", b"token=abc&type=event_callback".to_vec()),
        ("no type", b"{\"challenge\":\"x\"}".to_vec()),
        (
            "challenge missing",
            b"{\"type\":\"url_verification\"}".to_vec(),
        ),
        ("no event_id", no_event_id.to_string().into_bytes()),
        ("no event", no_event.to_string().into_bytes()),
        ("no user", without("user").to_string().into_bytes()),
        ("no channel", without("channel").to_string().into_bytes()),
        ("no ts", without("ts").to_string().into_bytes()),
        ("no time at all", bad_time.to_string().into_bytes()),
    ];
    for (name, body) in cases {
        let result = parse(&body, None);
        assert!(
            matches!(result, Err(ConnectorError::Malformed(_))),
            "{name}: {result:?}"
        );
    }
}

// ---------------------------------------------------------------- the fake Web API

#[derive(Default)]
struct WebApi {
    next_ts: u32,
    /// (channel, ts) -> text
    messages: HashMap<(String, String), String>,
}

fn slack_ok(mut body: Value) -> Reply {
    body["ok"] = json!(true);
    Reply::json(200, body)
}

/// Slack reports errors with HTTP 200.
fn slack_error(error: &str) -> Reply {
    Reply::json(200, json!({"ok": false, "error": error}))
}

impl WebApi {
    fn answer(&mut self, request: &Recorded) -> Reply {
        if request.header("authorization") != Some(format!("Bearer {BOT_TOKEN}").as_str()) {
            return slack_error("invalid_auth");
        }
        if request.method != Method::POST {
            return slack_error("method_not_supported_for_channel_type");
        }
        let params = request.json();
        let text = params["text"].as_str().unwrap_or_default().to_owned();
        let channel = params["channel"].as_str().unwrap_or_default().to_owned();
        match request.path.as_str() {
            "/api/auth.test" => slack_ok(json!({"url": "https://cards.slack.com/",
                "team": "Cards", "user": "parley", "team_id": "T1DC2JH3J",
                "user_id": "U0BOT", "bot_id": "B0PARLEY", "is_enterprise_install": false})),
            "/api/chat.postMessage" => {
                if channel != "C2147483705" {
                    return slack_error("channel_not_found");
                }
                if text.is_empty() {
                    return slack_error("no_text");
                }
                self.next_ts += 1;
                let ts = format!("1700000100.{:06}", self.next_ts);
                self.messages
                    .insert((channel.clone(), ts.clone()), text.clone());
                slack_ok(json!({"channel": channel, "ts": ts,
                                "message": {"type": "message", "text": text, "user": "U0BOT",
                                            "bot_id": "B0PARLEY", "ts": ts}}))
            }
            "/api/chat.update" => {
                let ts = params["ts"].as_str().unwrap_or_default().to_owned();
                match self.messages.get_mut(&(channel.clone(), ts.clone())) {
                    None => slack_error("message_not_found"),
                    Some(current) => {
                        *current = text.clone();
                        slack_ok(json!({"channel": channel, "ts": ts, "text": text}))
                    }
                }
            }
            _ => Reply::json(404, json!({"ok": false, "error": "unknown_method"})),
        }
    }
}

async fn fake_slack() -> Fake {
    let state = Arc::new(Mutex::new(WebApi::default()));
    Fake::start(move |request| state.lock().unwrap().answer(request)).await
}

fn client(fake: &Fake) -> SlackClient {
    SlackClient::new(
        reqwest::Client::new(),
        &format!("{}/api", fake.base),
        BOT_TOKEN,
    )
}

fn assert_json_post(request: &Recorded, method: &str, body: Value) {
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path, format!("/api/{method}"));
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {BOT_TOKEN}").as_str())
    );
    assert_eq!(
        request.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(request.json(), body);
}

// ---------------------------------------------------------------- client calls

#[tokio::test]
async fn auth_test_tells_whose_token_it_is() {
    let fake = fake_slack().await;
    assert_eq!(
        client(&fake).auth_test().await,
        Ok(AuthTest {
            team_id: "T1DC2JH3J".into(),
            user_id: "U0BOT".into(),
            bot_id: Some("B0PARLEY".into()),
        })
    );
    assert_json_post(&fake.single_request(), "auth.test", json!({}));
}

#[tokio::test]
async fn post_message_sends_channel_and_text_and_returns_the_ts() {
    let fake = fake_slack().await;
    let sent = client(&fake)
        .post_message("C2147483705", "Premium costs €12.90 a month.", None)
        .await
        .unwrap();
    assert_eq!(
        sent,
        Sent {
            message_id: "1700000100.000001".into()
        }
    );
    assert_json_post(
        &fake.single_request(),
        "chat.postMessage",
        json!({"channel": "C2147483705", "text": "Premium costs €12.90 a month."}),
    );
}

#[tokio::test]
async fn post_message_answers_in_a_thread() {
    let fake = fake_slack().await;
    client(&fake)
        .post_message("C2147483705", "In the thread.", Some("1700000001.000200"))
        .await
        .unwrap();
    assert_json_post(
        &fake.single_request(),
        "chat.postMessage",
        json!({"channel": "C2147483705", "text": "In the thread.",
               "thread_ts": "1700000001.000200"}),
    );
}

#[tokio::test]
async fn update_replaces_a_messages_text() {
    let fake = fake_slack().await;
    let client = client(&fake);
    let sent = client
        .post_message("C2147483705", "Thinking…", None)
        .await
        .unwrap();
    let updated = client
        .update("C2147483705", &sent.message_id, "Premium costs €12.90.")
        .await
        .unwrap();
    assert_eq!(updated, sent);
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_json_post(
        &requests[1],
        "chat.update",
        json!({"channel": "C2147483705", "ts": "1700000100.000001",
               "text": "Premium costs €12.90."}),
    );
}

// ---------------------------------------------------------------- errors

#[tokio::test]
async fn ok_false_is_refused_with_slacks_error() {
    let fake = fake_slack().await;
    let client = client(&fake);
    assert_eq!(
        client.post_message("C0NOWHERE", "hi", None).await,
        Err(ConnectorError::Refused {
            platform: "slack",
            status: 200,
            code: "channel_not_found".into(),
            message: "chat.postMessage failed".into(),
        })
    );
    assert_eq!(
        client.update("C2147483705", "1.000000", "hi").await,
        Err(ConnectorError::Refused {
            platform: "slack",
            status: 200,
            code: "message_not_found".into(),
            message: "chat.update failed".into(),
        })
    );
    fake.queue(Reply::json(
        200,
        json!({"ok": false, "error": "missing_scope", "needed": "chat:write",
               "provided": "channels:history"}),
    ));
    assert_eq!(
        client.post_message("C2147483705", "hi", None).await,
        Err(ConnectorError::Refused {
            platform: "slack",
            status: 200,
            code: "missing_scope".into(),
            message: "chat.postMessage needs scope chat:write".into(),
        })
    );
}

#[tokio::test]
async fn a_wrong_token_is_refused_as_invalid_auth() {
    let fake = fake_slack().await;
    let wrong = SlackClient::new(
        reqwest::Client::new(),
        &format!("{}/api", fake.base),
        "xoxb-wrong",
    );
    let err = wrong.auth_test().await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Refused { code, .. } if code == "invalid_auth"),
        "{err:?}"
    );
}

#[tokio::test]
async fn rate_limits_wait_as_long_as_retry_after_says() {
    let fake = fake_slack().await;
    fake.queue(
        Reply {
            status: 429,
            headers: vec![],
            body: String::new(),
        }
        .with_header("retry-after", "30"),
    );
    assert_eq!(
        client(&fake).post_message("C2147483705", "hi", None).await,
        Err(ConnectorError::RateLimited(Duration::from_secs(30)))
    );
}

#[tokio::test]
async fn unreadable_answers_are_transport_errors() {
    let fake = fake_slack().await;
    fake.queue(Reply {
        status: 503,
        headers: vec![],
        body: "<html>Service Unavailable</html>".into(),
    });
    fake.queue(Reply::json(200, json!({"ok": true})));
    let client = client(&fake);
    let unreadable = client
        .post_message("C2147483705", "hi", None)
        .await
        .unwrap_err();
    assert!(
        matches!(unreadable, ConnectorError::Transport(_)),
        "{unreadable:?}"
    );
    assert!(unreadable.to_string().contains("503"), "{unreadable}");
    // ok:true without a ts is not something we can use either.
    let without_ts = client
        .post_message("C2147483705", "hi", None)
        .await
        .unwrap_err();
    assert!(
        matches!(without_ts, ConnectorError::Transport(_)),
        "{without_ts:?}"
    );
}

#[tokio::test]
async fn the_bot_token_never_appears_in_errors() {
    let fake = fake_slack().await;
    let dead = SlackClient::new(reqwest::Client::new(), &dead_base().await, BOT_TOKEN);
    let errors = [
        dead.auth_test().await.unwrap_err(),
        dead.post_message("C1", "hi", Some("1.2"))
            .await
            .unwrap_err(),
        client(&fake)
            .post_message("C0NOWHERE", "hi", None)
            .await
            .unwrap_err(),
    ];
    assert!(
        matches!(errors[0], ConnectorError::Transport(_)),
        "{:?}",
        errors[0]
    );
    for err in &errors {
        let shown = format!("{err} / {err:?}");
        assert!(!shown.contains(BOT_TOKEN), "{shown}");
    }
    assert!(!format!("{dead:?}").contains(BOT_TOKEN));
}
