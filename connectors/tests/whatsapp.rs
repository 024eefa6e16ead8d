//! WhatsApp Cloud API: handshake, signature, notification parsing, and the Graph client
//! against a fake Graph API on loopback.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use chrono::DateTime;
use parley_connectors::whatsapp::{self, PhoneNumber, WhatsAppClient};
use parley_connectors::{ConnectorError, Delivery, Sent};
use parley_engine::inbound::InboundMessage;
use serde_json::{json, Value};
use support::{dead_base, multibyte_text, Fake, Recorded, Reply};

const TOKEN: &str = "EAAG-secret-access-token";
const PHONE_NUMBER_ID: &str = "106540352242922";

fn assert_no_secret(error: &ConnectorError, secret: &str) {
    assert!(!error.to_string().contains(secret), "{error}");
    assert!(!format!("{error:?}").contains(secret), "{error:?}");
}

#[test]
fn subscription_handshake_echoes_the_challenge_only_for_our_token() {
    let challenge =
        whatsapp::verify_subscription("subscribe", "my-verify", "1158201444", "my-verify");
    assert_eq!(challenge, Ok("1158201444".to_string()));

    let wrong =
        whatsapp::verify_subscription("subscribe", "guess", "1158201444", "my-verify").unwrap_err();
    assert_eq!(
        wrong,
        ConnectorError::Unauthorized("hub.verify_token does not match".into())
    );
    assert_no_secret(&wrong, "my-verify");
    let prefix = whatsapp::verify_subscription("subscribe", "my-verif", "1", "my-verify");
    assert!(matches!(prefix, Err(ConnectorError::Unauthorized(_))));

    let mode = whatsapp::verify_subscription("unsubscribe", "my-verify", "1", "my-verify");
    assert_eq!(
        mode,
        Err(ConnectorError::Unauthorized(
            "hub.mode is not subscribe".into()
        ))
    );
}

#[test]
fn signature_matches_the_published_vector() {
    let secret = "It's a Secret to Everybody";
    let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert_eq!(whatsapp::verify(secret, header, b"Hello, World!"), Ok(()));

    let unauthorized = |reason: &str| Err(ConnectorError::Unauthorized(reason.into()));
    assert_eq!(
        whatsapp::verify(secret, header, b"Hello, World?"),
        unauthorized("X-Hub-Signature-256 does not match")
    );
    assert_eq!(
        whatsapp::verify("another secret", header, b"Hello, World!"),
        unauthorized("X-Hub-Signature-256 does not match")
    );
    assert_eq!(
        whatsapp::verify(secret, &header["sha256=".len()..], b"Hello, World!"),
        unauthorized("X-Hub-Signature-256 is not sha256=<hex>")
    );
    assert_eq!(
        whatsapp::verify(secret, "sha256=zz", b"Hello, World!"),
        unauthorized("X-Hub-Signature-256 is not sha256=<hex>")
    );
    assert_eq!(
        whatsapp::verify(secret, "sha256=757107ea", b"Hello, World!"),
        unauthorized("X-Hub-Signature-256 does not match")
    );
    let error = whatsapp::verify(secret, "sha256=00", b"x").unwrap_err();
    assert_no_secret(&error, secret);
}

#[test]
fn a_text_message_becomes_an_inbound_message() {
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {
                        "display_phone_number": "15550783881",
                        "phone_number_id": PHONE_NUMBER_ID
                    },
                    "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
                    "messages": [{
                        "from": "16505551234",
                        "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
                        "timestamp": "1749416383",
                        "type": "text",
                        "text": {"body": "Does it come in another color? ¿Azul? 🙂"}
                    }]
                }
            }]
        }]
    });
    let deliveries = whatsapp::parse(body.to_string().as_bytes()).unwrap();
    assert_eq!(
        deliveries,
        vec![Delivery::Message(InboundMessage {
            platform: parley_connectors::whatsapp::PLATFORM,
            dedup_id: "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=".into(),
            user_id: "16505551234".into(),
            user_name: Some("Sheena Nelson".into()),
            chat_id: "16505551234".into(),
            thread_id: None,
            text: "Does it come in another color? ¿Azul? 🙂".into(),
            sent_at: DateTime::from_timestamp(1_749_416_383, 0).unwrap(),
            reply_context: json!({"phone_number_id": PHONE_NUMBER_ID}),
        })]
    );
}

#[test]
fn one_notification_carries_messages_statuses_and_other_types_in_order() {
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [
            {"id": "1", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": "111"},
                "contacts": [
                    {"profile": {"name": "Ann"}, "wa_id": "4911"},
                    {"profile": {"name": "Bo"}, "wa_id": "4922"}
                ],
                "messages": [
                    {"from": "4922", "id": "wamid.1", "timestamp": "1700000000",
                     "type": "text", "text": {"body": "first"}},
                    {"from": "4911", "id": "wamid.2", "timestamp": "1700000001",
                     "type": "image", "image": {"id": "media-1", "mime_type": "image/jpeg"}},
                    {"from": "4911", "id": "wamid.3", "timestamp": "1700000002",
                     "type": "text", "text": {"body": "second"}}
                ]
            }}]},
            {"id": "1", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783882", "phone_number_id": "222"},
                "statuses": [
                    {"id": "wamid.out1", "status": "delivered", "timestamp": "1700000003",
                     "recipient_id": "4911"},
                    {"id": "wamid.out2", "status": "failed", "timestamp": "1700000004",
                     "recipient_id": "4922", "errors": [{
                        "code": 131047,
                        "title": "Re-engagement message",
                        "message": "Re-engagement message",
                        "error_data": {"details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number."}
                     }]},
                    {"id": "wamid.out3", "status": "failed", "timestamp": "1700000005",
                     "recipient_id": "4922", "errors": [{"code": 131026, "message": "Message undeliverable"}]}
                ]
            }}]}
        ]
    });
    let deliveries = whatsapp::parse(body.to_string().as_bytes()).unwrap();
    let message = |id: &str, from: &str, name: &str, text: &str, at: i64| {
        Delivery::Message(InboundMessage {
            platform: parley_connectors::whatsapp::PLATFORM,
            dedup_id: id.into(),
            user_id: from.into(),
            user_name: Some(name.into()),
            chat_id: from.into(),
            thread_id: None,
            text: text.into(),
            sent_at: DateTime::from_timestamp(at, 0).unwrap(),
            reply_context: json!({"phone_number_id": "111"}),
        })
    };
    let status = |id: &str, status: &str, error: Option<&str>| Delivery::Status {
        message_id: id.into(),
        status: status.into(),
        error: error.map(str::to_string),
    };
    assert_eq!(
        deliveries,
        vec![
            message("wamid.1", "4922", "Bo", "first", 1_700_000_000),
            Delivery::Ignored("whatsapp message is not text"),
            message("wamid.3", "4911", "Ann", "second", 1_700_000_002),
            status("wamid.out1", "delivered", None),
            status(
                "wamid.out2",
                "failed",
                Some("131047: Re-engagement message")
            ),
            status(
                "wamid.out3",
                "failed",
                Some("131026: Message undeliverable")
            ),
        ]
    );
}

#[test]
fn a_lone_contact_names_the_sender_even_when_wa_id_differs() {
    let body = json!({"entry": [{"changes": [{"value": {
        "metadata": {"phone_number_id": "111"},
        "contacts": [{"profile": {"name": "Bia"}, "wa_id": "5511987654321"}],
        "messages": [{"from": "551187654321", "id": "wamid.9", "timestamp": "1700000000",
                      "type": "text", "text": {"body": "oi"}}]
    }}]}]});
    let deliveries = whatsapp::parse(body.to_string().as_bytes()).unwrap();
    let [Delivery::Message(message)] = deliveries.as_slice() else {
        panic!("expected one message: {deliveries:?}");
    };
    assert_eq!(message.user_name.as_deref(), Some("Bia"));
    assert_eq!(message.user_id, "551187654321");
}

#[test]
fn malformed_notifications_are_rejected() {
    let malformed = |body: &str| match whatsapp::parse(body.as_bytes()) {
        Err(ConnectorError::Malformed(reason)) => reason,
        other => panic!("expected Malformed for {body}: {other:?}"),
    };
    assert!(malformed("not json").starts_with("whatsapp notification: "));
    let bad_time = json!({"entry": [{"changes": [{"value": {
        "metadata": {"phone_number_id": "111"},
        "messages": [{"from": "1", "id": "w", "timestamp": "yesterday", "type": "text",
                      "text": {"body": "x"}}]
    }}]}]});
    assert_eq!(
        malformed(&bad_time.to_string()),
        "message timestamp is not unix seconds"
    );
    let no_metadata = json!({"entry": [{"changes": [{"value": {
        "messages": [{"from": "1", "id": "w", "timestamp": "1", "type": "text",
                      "text": {"body": "x"}}]
    }}]}]});
    assert_eq!(
        malformed(&no_metadata.to_string()),
        "message without metadata"
    );
    // A notification about something else (account updates) carries no messages.
    assert_eq!(
        whatsapp::parse(br#"{"object":"whatsapp_business_account","entry":[]}"#),
        Ok(vec![])
    );
}

/// A fake Graph API: checks the bearer token, answers sends with `{messages:[{id}]}`
/// numbered from 1, and answers recipients named after errors with those errors.
async fn fake_graph() -> Fake {
    let sent = Arc::new(AtomicUsize::new(0));
    Fake::start(move |request: &Recorded| {
        if request.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return graph_error(401, 190, "OAuthException", "Invalid OAuth access token.");
        }
        if request.method == Method::GET {
            return Reply::json(
                200,
                json!({
                    "verified_name": "Parley Demo",
                    "code_verification_status": "VERIFIED",
                    "display_phone_number": "+1 555-078-3881",
                    "quality_rating": "GREEN",
                    "platform_type": "CLOUD_API",
                    "throughput": {"level": "STANDARD"},
                    "id": PHONE_NUMBER_ID
                }),
            );
        }
        let to = request.json()["to"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match to.as_str() {
            "outside-window" => graph_error(
                400,
                131047,
                "OAuthException",
                "(#131047) Re-engagement message",
            ),
            "throughput" => graph_error(400, 130429, "OAuthException", "(#130429) Rate limit hit"),
            "pair" => graph_error(
                400,
                131056,
                "OAuthException",
                "(#131056) Pair rate limit hit",
            ),
            "busy" => Reply::json(429, json!({})).with_header("retry-after", "17"),
            "busy-unnamed" => Reply::json(429, json!({})),
            "gateway" => Reply {
                status: 502,
                headers: vec![],
                body: "<html>Bad Gateway</html>".into(),
            },
            _ => {
                let n = sent.fetch_add(1, Ordering::SeqCst) + 1;
                Reply::json(
                    200,
                    json!({
                        "messaging_product": "whatsapp",
                        "contacts": [{"input": to, "wa_id": to}],
                        "messages": [{"id": format!("wamid.{n}")}]
                    }),
                )
            }
        }
    })
    .await
}

fn graph_error(status: u16, code: i64, kind: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"error": {
            "message": message,
            "type": kind,
            "code": code,
            "error_subcode": 2494010,
            "fbtrace_id": "AbCdEf123"
        }}),
    )
}

fn client(fake: &Fake) -> WhatsAppClient {
    WhatsAppClient::new(
        reqwest::Client::new(),
        format!("{}/v21.0", fake.base),
        TOKEN,
    )
}

#[tokio::test]
async fn send_text_posts_a_graph_message() {
    let fake = fake_graph().await;
    let sent = client(&fake)
        .send_text(PHONE_NUMBER_ID, "16505551234", "Grüße 👋")
        .await;
    assert_eq!(
        sent,
        Ok(Sent {
            message_id: "wamid.1".into()
        })
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path, format!("/v21.0/{PHONE_NUMBER_ID}/messages"));
    assert_eq!(
        request.header("authorization"),
        Some(&*format!("Bearer {TOKEN}"))
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.json(),
        json!({
            "messaging_product": "whatsapp",
            "to": "16505551234",
            "type": "text",
            "text": {"body": "Grüße 👋"}
        })
    );
}

#[tokio::test]
async fn long_text_goes_as_several_messages_keeping_every_character_in_order() {
    let fake = fake_graph().await;
    let text = multibyte_text(2 * whatsapp::MAX_TEXT_CHARS + 100);
    let sent = client(&fake)
        .send_text(PHONE_NUMBER_ID, "4911", &text)
        .await;
    assert_eq!(
        sent,
        Ok(Sent {
            message_id: "wamid.3".into()
        })
    );

    let parts: Vec<String> = fake
        .requests()
        .iter()
        .map(|request| request.json()["text"]["body"].as_str().unwrap().to_string())
        .collect();
    let lengths: Vec<usize> = parts.iter().map(|part| part.chars().count()).collect();
    assert_eq!(lengths, [4096, 4096, 100]);
    assert_eq!(parts.concat(), text);
}

#[tokio::test]
async fn long_text_breaks_after_a_line_when_it_can() {
    let fake = fake_graph().await;
    let first_line = format!("{}\n", multibyte_text(3000));
    let text = format!("{first_line}{}", multibyte_text(2000));
    client(&fake)
        .send_text(PHONE_NUMBER_ID, "4911", &text)
        .await
        .unwrap();

    let parts: Vec<Value> = fake
        .requests()
        .iter()
        .map(|request| request.json()["text"]["body"].clone())
        .collect();
    assert_eq!(parts, [json!(first_line), json!(multibyte_text(2000))]);
}

#[tokio::test]
async fn send_template_names_template_language_and_components() {
    let fake = fake_graph().await;
    let components = json!([{
        "type": "body",
        "parameters": [{"type": "text", "text": "Ann"}]
    }]);
    let client = client(&fake);
    let sent = client
        .send_template(
            PHONE_NUMBER_ID,
            "4911",
            "order_update",
            "en_US",
            components.clone(),
        )
        .await;
    assert_eq!(
        sent,
        Ok(Sent {
            message_id: "wamid.1".into()
        })
    );
    client
        .send_template(PHONE_NUMBER_ID, "4911", "hello_world", "en_US", Value::Null)
        .await
        .unwrap();

    let requests = fake.requests();
    assert_eq!(
        requests[0].path,
        format!("/v21.0/{PHONE_NUMBER_ID}/messages")
    );
    assert_eq!(
        requests[0].json(),
        json!({
            "messaging_product": "whatsapp",
            "to": "4911",
            "type": "template",
            "template": {
                "name": "order_update",
                "language": {"code": "en_US"},
                "components": components
            }
        })
    );
    assert_eq!(
        requests[1].json()["template"],
        json!({"name": "hello_world", "language": {"code": "en_US"}})
    );
}

#[tokio::test]
async fn phone_number_lookup_reads_the_number() {
    let fake = fake_graph().await;
    let number = client(&fake).phone_number(PHONE_NUMBER_ID).await;
    assert_eq!(
        number,
        Ok(PhoneNumber {
            id: PHONE_NUMBER_ID.into(),
            display_phone_number: "+1 555-078-3881".into(),
            verified_name: Some("Parley Demo".into()),
            quality_rating: Some("GREEN".into()),
        })
    );
    let requests = fake.requests();
    assert_eq!(requests[0].method, Method::GET);
    assert_eq!(requests[0].path, format!("/v21.0/{PHONE_NUMBER_ID}"));
    assert_eq!(
        requests[0].header("authorization"),
        Some(&*format!("Bearer {TOKEN}"))
    );
}

#[tokio::test]
async fn graph_errors_map_to_refusals_and_rate_limits() {
    let fake = fake_graph().await;
    let client = client(&fake);
    let send = |to: &'static str| {
        let client = client.clone();
        async move {
            client
                .send_text(PHONE_NUMBER_ID, to, "hi")
                .await
                .unwrap_err()
        }
    };
    let cases = [
        (
            "outside-window",
            ConnectorError::Refused {
                platform: "whatsapp",
                status: 400,
                code: "131047".into(),
                message: "(#131047) Re-engagement message (fbtrace_id AbCdEf123)".into(),
            },
        ),
        (
            "throughput",
            ConnectorError::RateLimited(Duration::from_secs(1)),
        ),
        ("pair", ConnectorError::RateLimited(Duration::from_secs(6))),
        ("busy", ConnectorError::RateLimited(Duration::from_secs(17))),
        (
            "busy-unnamed",
            ConnectorError::RateLimited(Duration::from_secs(1)),
        ),
        (
            "gateway",
            ConnectorError::Refused {
                platform: "whatsapp",
                status: 502,
                code: "502".into(),
                message: "<html>Bad Gateway</html>".into(),
            },
        ),
    ];
    assert_eq!(whatsapp::OUTSIDE_WINDOW, "131047");
    for (to, expected) in cases {
        let error = send(to).await;
        assert_eq!(error, expected, "sending to {to}");
        assert_no_secret(&error, TOKEN);
    }

    let stranger = WhatsAppClient::new(
        reqwest::Client::new(),
        format!("{}/v21.0", fake.base),
        "stale-token",
    );
    let error = stranger.phone_number(PHONE_NUMBER_ID).await.unwrap_err();
    assert_eq!(
        error,
        ConnectorError::Refused {
            platform: "whatsapp",
            status: 401,
            code: "190".into(),
            message: "Invalid OAuth access token. (fbtrace_id AbCdEf123)".into(),
        }
    );
    assert_no_secret(&error, "stale-token");
}

#[tokio::test]
async fn an_unreachable_graph_is_a_transport_error_without_the_token() {
    let client = WhatsAppClient::new(reqwest::Client::new(), dead_base().await, TOKEN);
    let error = client
        .send_text(PHONE_NUMBER_ID, "4911", "hi")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ConnectorError::Transport(text) if text.starts_with("whatsapp unreachable")),
        "{error:?}"
    );
    assert_no_secret(&error, TOKEN);
}
