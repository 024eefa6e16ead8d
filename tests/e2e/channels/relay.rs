//! The internal route nodes hand each other verified customer messages on
//! (`POST /internal/v1/deliveries/{connection_id}`): taken only when signed with the
//! cluster's key for this node and this connection, fresh, and once; an unreadable body
//! is refused; what it takes is recorded once, without the platform's signature.

use chrono::Utc;
use parley::api::relay::{NodeKey, Signed, SIGNATURE, WINDOW_MS};
use parley_actors::channels::hooks::Recorded;
use parley_engine::inbound::InboundMessage;
use parley_engine::secrets::SecretBox;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::*;
use crate::support::*;

const IN_SECRET: &str = "whsec_cGFybGV5LWUyZS1pbmNvbWluZy1zaWduaW5nLWtleSE=";

fn master() -> String {
    "cd".repeat(32)
}

async fn started(t: &TestServer, name: &str) -> String {
    let id = connection_named(
        t,
        name,
        "webhook",
        json!({"incoming_secret": IN_SECRET}),
        json!({}),
    )
    .await;
    assert_eq!(act(t, &id, "start").await["status"], "Connected");
    id
}

fn message(dedup_id: &str, text: &str) -> InboundMessage {
    InboundMessage {
        platform: parley_connectors::webhook::PLATFORM,
        dedup_id: dedup_id.into(),
        user_id: "u1".into(),
        user_name: Some("Ada".into()),
        chat_id: "u1".into(),
        thread_id: None,
        text: text.into(),
        sent_at: Utc::now(),
        reply_context: json!({"ticket": 7}),
    }
}

/// Posts a hand-over to `connection`'s internal route, signed as `signed` says (or not
/// at all); answers the status, headers and body.
async fn post(
    t: &TestServer,
    connection: &str,
    signature: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut rb = t
        .http
        .post(t.url(&format!("/internal/v1/deliveries/{connection}")))
        .header("content-type", "application/octet-stream")
        .body(body);
    if let Some(s) = signature {
        rb = rb.header(SIGNATURE, s);
    }
    let resp = rb.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

async fn refused(
    t: &TestServer,
    connection: &str,
    signed: &Signed,
    status: StatusCode,
    code: &str,
) {
    let (got, _, body) = post(t, connection, Some(&signed.header), signed.body.clone()).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(got, status, "{body}");
    assert_eq!(error_code(&body), code, "{body}");
}

async fn deliveries(t: &TestServer, connection: &str) -> usize {
    events(t, connection)
        .await
        .iter()
        .filter(|e| e["kind"] == "delivery")
        .count()
}

#[tokio::test]
async fn handovers_are_taken_signed_fresh_once_and_for_their_connection_only() {
    let t = TestServer::start_with(|c| c.secret_key = Some(master())).await;
    let agent = t.agent(&basic_agent("")).await;
    let (a, b) = (started(&t, "a").await, started(&t, "b").await);
    let (status, body) = t
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/agents/{}/channels", agent.id),
            Some(json!([{"connection_id": a, "inbound": true},
                        {"connection_id": b, "inbound": true}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let key = NodeKey::new(&SecretBox::from_text(&master()).unwrap());
    let me = t.base.clone();
    let a_id: uuid::Uuid = a.parse().unwrap();
    let msgs = [message("h1", "handed over")];
    let now = Utc::now().timestamp_millis();
    let good = key.request(&me, a_id, &msgs, now).unwrap();

    // Unsigned, signed with another deployment's key, stale, from the future, for another
    // node, for another connection, or altered on the way: 401.
    let (status, _, body) = post(&t, &a, None, good.body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        error_code(&serde_json::from_slice(&body).unwrap()),
        "unauthorized"
    );
    for header in [
        "t=1,v1=00",
        &format!("t={},v1={}", i64::MIN, "00".repeat(32)),
    ] {
        let (status, _, _) = post(&t, &a, Some(header), good.body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{header}");
    }
    let other = NodeKey::new(&SecretBox::from_text(&SecretBox::generate_key()).unwrap());
    let forged = other.request(&me, a_id, &msgs, now).unwrap();
    refused(&t, &a, &forged, StatusCode::UNAUTHORIZED, "unauthorized").await;
    for t_ms in [now - WINDOW_MS - 5_000, now + WINDOW_MS + 5_000] {
        let stale = key.request(&me, a_id, &msgs, t_ms).unwrap();
        refused(&t, &a, &stale, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let elsewhere = key.request("http://127.0.0.1:9", a_id, &msgs, now).unwrap();
    refused(&t, &a, &elsewhere, StatusCode::UNAUTHORIZED, "unauthorized").await;
    refused(&t, &b, &good, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let mut altered = good.body.clone();
    *altered.last_mut().unwrap() ^= 1;
    let (status, _, _) = post(&t, &a, Some(&good.header), altered).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Signed but unreadable, or of a layout this node does not read: 400.
    let garbage = key.sign(&me, &a, vec![1, 0xff, 0xff, 0xff], now);
    refused(&t, &a, &garbage, StatusCode::BAD_REQUEST, "malformed").await;
    let newer = key.sign(&me, &a, vec![9, 0], now);
    refused(&t, &a, &newer, StatusCode::BAD_REQUEST, "malformed").await;
    assert_eq!(deliveries(&t, &a).await, 0, "nothing refused is recorded");
    assert_eq!(deliveries(&t, &b).await, 0);

    // The genuine hand-over is recorded, with a signed answer; once.
    let (status, headers, body) = post(&t, &a, Some(&good.header), good.body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        key.read_answer(&good.mac, &headers, &body).unwrap(),
        [Recorded::Accepted]
    );
    assert!(
        other.read_answer(&good.mac, &headers, &body).is_err(),
        "the answer is authenticated too"
    );
    refused(&t, &a, &good, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // The same message handed over anew is a duplicate.
    let again = key.request(&me, a_id, &msgs, now + 1).unwrap();
    let (status, headers, body) = post(&t, &a, Some(&again.header), again.body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        key.read_answer(&again.mac, &headers, &body).unwrap(),
        [Recorded::Duplicate]
    );

    let session = replied_session(&t, &a, "h1").await;
    let humans: Vec<String> = session_texts(&t, &agent, &session)
        .await
        .into_iter()
        .filter(|(role, _)| role == "HUMAN")
        .map(|(_, text)| text)
        .collect();
    assert_eq!(humans, ["handed over"]);
    assert_eq!(deliveries(&t, &a).await, 1);
    assert_eq!(
        deliveries(&t, &b).await,
        0,
        "connection b's chats got nothing"
    );
}

#[tokio::test]
async fn a_handover_for_an_unknown_connection_is_answered_as_a_hook_would_be() {
    let t = TestServer::start_with(|c| c.secret_key = Some(master())).await;
    let key = NodeKey::new(&SecretBox::from_text(&master()).unwrap());
    let unknown = uuid::Uuid::now_v7();
    let signed = key
        .request(
            &t.base,
            unknown,
            &[message("h2", "hi")],
            Utc::now().timestamp_millis(),
        )
        .unwrap();
    refused(
        &t,
        &unknown.to_string(),
        &signed,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}
