//! Standard Webhooks: the published signature vector, verification, incoming messages, and
//! delivery to a receiver on loopback that checks signatures with our own `verify`.

mod support;

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method};
use chrono::{DateTime, Utc};
use parley_connectors::webhook::{self, WebhookSecret, WebhookSender};
use parley_connectors::{ConnectorError, Delivery};
use parley_engine::inbound::InboundMessage;
use serde_json::json;
use support::{dead_base, Fake, Recorded, Reply};

const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const VECTOR_TIMESTAMP: i64 = 1_614_265_330;
const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn secret() -> WebhookSecret {
    WebhookSecret::parse(VECTOR_SECRET).unwrap()
}

fn headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("webhook-id", id),
        ("webhook-timestamp", timestamp),
        ("webhook-signature", signature),
    ] {
        headers.insert(name, HeaderValue::from_str(value).unwrap());
    }
    headers
}

fn vector_headers(signature: &str) -> HeaderMap {
    headers(VECTOR_ID, &VECTOR_TIMESTAMP.to_string(), signature)
}

fn unauthorized(reason: &str) -> Result<(), ConnectorError> {
    Err(ConnectorError::Unauthorized(reason.into()))
}

#[test]
fn sign_matches_the_published_vector() {
    let signature = webhook::sign(&secret(), VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY);
    assert_eq!(signature, VECTOR_SIGNATURE);
    // The prefix is optional, as in the reference libraries.
    let bare = WebhookSecret::parse(&VECTOR_SECRET["whsec_".len()..]).unwrap();
    assert_eq!(bare, secret());
}

#[test]
fn verify_accepts_the_vector_within_five_minutes_either_way() {
    let headers = vector_headers(VECTOR_SIGNATURE);
    for now in [
        VECTOR_TIMESTAMP,
        VECTOR_TIMESTAMP - 300,
        VECTOR_TIMESTAMP + 300,
    ] {
        assert_eq!(
            webhook::verify(&secret(), &headers, VECTOR_BODY, now),
            Ok(())
        );
    }
    for now in [VECTOR_TIMESTAMP - 301, VECTOR_TIMESTAMP + 301, 0, i64::MAX] {
        assert_eq!(
            webhook::verify(&secret(), &headers, VECTOR_BODY, now),
            unauthorized("webhook-timestamp is more than 5 minutes from now"),
            "now = {now}"
        );
    }
}

#[test]
fn any_of_several_signatures_may_match() {
    let rotated = format!(
        "v1,Zm9vYmFy v2,{} v1a,xyz {VECTOR_SIGNATURE}",
        &VECTOR_SIGNATURE[3..]
    );
    let headers = vector_headers(&rotated);
    assert_eq!(
        webhook::verify(&secret(), &headers, VECTOR_BODY, VECTOR_TIMESTAMP),
        Ok(())
    );
}

#[test]
fn verify_rejects_tampering_and_missing_parts() {
    let now = VECTOR_TIMESTAMP;
    let good = vector_headers(VECTOR_SIGNATURE);
    let no_match = unauthorized("no webhook-signature matches");
    assert_eq!(
        webhook::verify(&secret(), &good, br#"{"test": 2432232315}"#, now),
        no_match
    );
    let other_secret = WebhookSecret::parse("whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM=").unwrap();
    assert_eq!(
        webhook::verify(&other_secret, &good, VECTOR_BODY, now),
        no_match
    );
    let other_id = headers("msg_other", &now.to_string(), VECTOR_SIGNATURE);
    assert_eq!(
        webhook::verify(&secret(), &other_id, VECTOR_BODY, now),
        no_match
    );
    let shifted = headers(VECTOR_ID, &(now + 1).to_string(), VECTOR_SIGNATURE);
    assert_eq!(
        webhook::verify(&secret(), &shifted, VECTOR_BODY, now),
        no_match
    );
    // The same signature under another version is not a v1 signature.
    let v2 = vector_headers(&format!("v2,{}", &VECTOR_SIGNATURE[3..]));
    assert_eq!(webhook::verify(&secret(), &v2, VECTOR_BODY, now), no_match);
    let garbage = vector_headers("v1,not base64!");
    assert_eq!(
        webhook::verify(&secret(), &garbage, VECTOR_BODY, now),
        no_match
    );

    let not_a_number = headers(VECTOR_ID, "2021-02-21T15:02:10Z", VECTOR_SIGNATURE);
    assert_eq!(
        webhook::verify(&secret(), &not_a_number, VECTOR_BODY, now),
        unauthorized("webhook-timestamp is not unix seconds")
    );
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut missing = good.clone();
        missing.remove(name);
        assert_eq!(
            webhook::verify(&secret(), &missing, VECTOR_BODY, now),
            unauthorized(&format!("missing {name} header"))
        );
    }
}

#[test]
fn secrets_never_show() {
    let error = WebhookSecret::parse("whsec_not*base64").unwrap_err();
    assert_eq!(
        error,
        ConnectorError::Malformed("webhook secret is not whsec_<base64 key>".into())
    );
    assert!(!format!("{error} {error:?}").contains("not*base64"));
    assert_eq!(
        WebhookSecret::parse("whsec_"),
        Err(ConnectorError::Malformed(
            "webhook secret is not whsec_<base64 key>".into()
        ))
    );
    assert_eq!(format!("{:?}", secret()), "WebhookSecret(..)");
}

#[test]
fn an_incoming_message_becomes_an_inbound_message() {
    let headers = headers("msg_2Kq", "1614265330", "v1,unchecked-here");
    let body = json!({
        "user_id": "cust-42",
        "user_name": "Ann",
        "chat_id": "order-7",
        "text": "Where is my card? 💳",
        "context": {"order": 7}
    });
    assert_eq!(
        webhook::parse(&headers, body.to_string().as_bytes()),
        Ok(Delivery::Message(InboundMessage {
            platform: parley_connectors::webhook::PLATFORM,
            dedup_id: "msg_2Kq".into(),
            user_id: "cust-42".into(),
            user_name: Some("Ann".into()),
            chat_id: "order-7".into(),
            thread_id: None,
            text: "Where is my card? 💳".into(),
            sent_at: DateTime::from_timestamp(1_614_265_330, 0).unwrap(),
            reply_context: json!({"order": 7}),
        }))
    );

    let minimal = webhook::parse(&headers, br#"{"user_id":"cust-42","text":"hi"}"#).unwrap();
    let Delivery::Message(message) = minimal else {
        panic!("expected a message: {minimal:?}");
    };
    assert_eq!(message.chat_id, "cust-42");
    assert_eq!(message.user_name, None);
    assert_eq!(message.reply_context, serde_json::Value::Null);
}

#[test]
fn malformed_incoming_messages_are_rejected() {
    let headers = headers("msg_2Kq", "1614265330", "v1,x");
    let malformed = |headers: &HeaderMap, body: &str| match webhook::parse(headers, body.as_bytes())
    {
        Err(ConnectorError::Malformed(reason)) => reason,
        other => panic!("expected Malformed for {body}: {other:?}"),
    };
    assert!(malformed(&headers, r#"{"text":"hi"}"#).contains("missing field `user_id`"));
    assert!(malformed(&headers, "hi").starts_with("webhook message: "));
    assert_eq!(
        malformed(&headers, r#"{"user_id":"","text":"hi"}"#),
        "user_id is empty"
    );
    assert_eq!(
        malformed(&headers, r#"{"user_id":"u","text":""}"#),
        "text is empty"
    );
    let mut no_id = headers.clone();
    no_id.remove("webhook-id");
    assert_eq!(
        malformed(&no_id, r#"{"user_id":"u","text":"hi"}"#),
        "missing webhook-id"
    );
    let bad_time = self::headers("msg_2Kq", "soon", "v1,x");
    assert_eq!(
        malformed(&bad_time, r#"{"user_id":"u","text":"hi"}"#),
        "webhook-timestamp is not unix seconds"
    );
}

#[test]
fn test_events_are_signed_connection_test_events() {
    let now = DateTime::from_timestamp(VECTOR_TIMESTAMP, 0).unwrap();
    let event = webhook::test_event(&secret(), "msg_test_1", now);
    assert_eq!(event.id, "msg_test_1");
    assert_eq!(event.timestamp, VECTOR_TIMESTAMP);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&event.body).unwrap(),
        json!({
            "type": "connection.test",
            "timestamp": "2021-02-25T15:02:10+00:00",
            "data": {"message": "parley webhook test"}
        })
    );
    assert_eq!(
        event.signature,
        webhook::sign(&secret(), "msg_test_1", VECTOR_TIMESTAMP, &event.body)
    );
    let headers = headers(&event.id, &event.timestamp.to_string(), &event.signature);
    assert_eq!(
        webhook::verify(&secret(), &headers, &event.body, VECTOR_TIMESTAMP),
        Ok(())
    );
}

/// A customer's endpoint: it checks every delivery with our own `verify` (401 when it
/// fails) and answers by path: `/ok` 200, `/gone` 410, `/busy` 429 with Retry-After 30,
/// `/busy-unnamed` 429 without, `/broken` 500.
async fn receiver() -> Fake {
    Fake::start(|request: &Recorded| {
        let now = Utc::now().timestamp();
        if webhook::verify(&secret(), &request.headers, &request.body, now).is_err() {
            return Reply::json(401, json!({"error": "bad signature"}));
        }
        match request.path.as_str() {
            "/ok" => Reply::json(200, json!({})),
            "/gone" => Reply::json(410, json!({"error": "endpoint removed"})),
            "/busy" => Reply::json(429, json!({})).with_header("retry-after", "30"),
            "/busy-unnamed" => Reply::json(429, json!({})),
            _ => Reply::json(500, json!({"error": "boom"})),
        }
    })
    .await
}

#[tokio::test]
async fn deliver_posts_a_signed_event_the_receiver_accepts() {
    let receiver = receiver().await;
    let sender = WebhookSender::new(reqwest::Client::new());
    let payload = json!({"session_id": "s-1", "text": "Your card is on its way ✈"});
    let url = format!("{}/ok", receiver.base);
    let before = Utc::now().timestamp();
    let delivered = sender
        .deliver(
            &url,
            &secret(),
            "msg_out_1",
            "message.created",
            payload.clone(),
        )
        .await;
    assert_eq!(delivered, Ok(()));
    // A retry of the same event carries the same id, so the receiver can drop it.
    let retried = sender
        .deliver(
            &url,
            &secret(),
            "msg_out_1",
            "message.created",
            payload.clone(),
        )
        .await;
    assert_eq!(retried, Ok(()));
    let after = Utc::now().timestamp();

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path, "/ok");
        assert_eq!(request.header("webhook-id"), Some("msg_out_1"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        let timestamp: i64 = request
            .header("webhook-timestamp")
            .unwrap()
            .parse()
            .unwrap();
        assert!((before..=after).contains(&timestamp), "{timestamp}");
        assert_eq!(
            request.header("webhook-signature"),
            Some(&*webhook::sign(
                &secret(),
                "msg_out_1",
                timestamp,
                &request.body
            ))
        );
        let body = request.json();
        assert_eq!(body["type"], "message.created");
        assert_eq!(body["data"], payload);
        let sent_at: DateTime<Utc> = body["timestamp"].as_str().unwrap().parse().unwrap();
        assert!((before..=after).contains(&sent_at.timestamp()));
    }
}

#[tokio::test]
async fn receiver_answers_map_to_outcomes() {
    let receiver = receiver().await;
    let sender = WebhookSender::new(reqwest::Client::new());
    let deliver = |path: &str, secret: WebhookSecret| {
        let (sender, url) = (sender.clone(), format!("{}{path}", receiver.base));
        async move {
            sender
                .deliver(&url, &secret, "msg_x", "message.created", json!({}))
                .await
        }
    };
    assert_eq!(
        deliver("/gone", secret()).await,
        Err(ConnectorError::Refused {
            platform: "webhook",
            status: 410,
            code: "gone".into(),
            message: r#"{"error":"endpoint removed"}"#.into(),
        })
    );
    assert_eq!(
        deliver("/busy", secret()).await,
        Err(ConnectorError::RateLimited(Duration::from_secs(30)))
    );
    assert_eq!(
        deliver("/busy-unnamed", secret()).await,
        Err(ConnectorError::RateLimited(Duration::from_secs(5)))
    );
    assert_eq!(
        deliver("/broken", secret()).await,
        Err(ConnectorError::Refused {
            platform: "webhook",
            status: 500,
            code: "500".into(),
            message: r#"{"error":"boom"}"#.into(),
        })
    );
    let wrong = WebhookSecret::parse("whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM=").unwrap();
    let rejected = deliver("/ok", wrong).await.unwrap_err();
    assert_eq!(
        rejected,
        ConnectorError::Refused {
            platform: "webhook",
            status: 401,
            code: "401".into(),
            message: r#"{"error":"bad signature"}"#.into(),
        }
    );
    assert!(!format!("{rejected} {rejected:?}").contains("c2VjcmV0LWtleS1mb3ItdGVzdHM"));
}

#[tokio::test]
async fn send_delivers_a_prepared_test_event() {
    let receiver = receiver().await;
    let sender = WebhookSender::new(reqwest::Client::new());
    let event = webhook::test_event(&secret(), "msg_test_2", Utc::now());
    let sent = sender.send(&format!("{}/ok", receiver.base), &event).await;
    assert_eq!(sent, Ok(()));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body, event.body);
    assert_eq!(
        requests[0].header("webhook-signature"),
        Some(&*event.signature)
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_transport_error_without_url_or_secret() {
    let sender = WebhookSender::new(reqwest::Client::new());
    let url = format!("{}/hook?access_token=customer-token-123", dead_base().await);
    let error = sender
        .deliver(&url, &secret(), "msg_y", "message.created", json!({}))
        .await
        .unwrap_err();
    let ConnectorError::Transport(text) = &error else {
        panic!("expected Transport: {error:?}");
    };
    assert!(text.starts_with("webhook endpoint unreachable: "), "{text}");
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("customer-token-123"), "{shown}");
    assert!(!shown.contains(&VECTOR_SECRET["whsec_".len()..]), "{shown}");
}
