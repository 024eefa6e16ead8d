//! Verified platform deliveries handed to the node that owns their chat's session
//! (DESIGN.md §4, §7). The node a delivery reaches verifies and parses it, once; a
//! customer message whose session another node owns goes, parsed, to that node's
//! `POST /internal/v1/deliveries/{connection_id}`, which records it without verifying it
//! again. The platform is answered by the first node once the owner has answered.
//!
//! Only parley reads these bodies, so they are bincode, not JSON: a version byte, then
//! the payload. Both directions are authenticated with HMAC-SHA256 under a key each node
//! derives from the master key (`--secret-key`, which the nodes of a cluster share
//! already, to open connection secrets): a request's signature covers its timestamp, the
//! node it is for, the connection and the body, and is taken once within a window of the
//! receiver's clock; an answer's covers the request's signature and the answer's body.
//! The route is internal: it is not in the API document.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use parley_actors::channels::hooks::{Recorded, Relay};
use parley_engine::connection::ConnectionId;
use parley_engine::inbound::{InboundMessage, Platform};
use parley_engine::secrets::SecretBox;
use parley_engine::telemetry;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::error::ApiError;
use super::AppState;

pub const PATH: &str = "/internal/v1/deliveries/{connection_id}";
/// `t=<unix ms>,v1=<hex HMAC>` on a request, `v1=<hex HMAC>` on its answer.
pub const SIGNATURE: &str = "x-parley-node-signature";
/// The layout of the bodies; a change to [`WireMessage`] or [`WireRecorded`] bumps it.
const VERSION: u8 = 1;
/// How far a request's timestamp may be from the receiver's clock: a hand-over is sent as
/// soon as it is signed, and the nodes of a cluster keep their clocks in sync.
pub const WINDOW_MS: i64 = 30_000;
/// How long the owner has to answer: platforms want theirs within 3 s.
const TIMEOUT: Duration = Duration::from_secs(2);
const PURPOSE: &str = "node-to-node hand-over v1";
/// Most bytes a decoded body may claim: bincode allocates the lengths it reads, and a
/// body is never larger than the request body limit.
const DECODE_LIMIT: usize = 64 << 20;
const OCTETS: &str = "application/octet-stream";

type HmacSha256 = Hmac<Sha256>;

/// A customer message as one node hands it to another. Its platform is the connection's,
/// set by the receiver.
#[derive(Serialize, Deserialize)]
struct WireMessage {
    dedup_id: String,
    user_id: String,
    user_name: Option<String>,
    chat_id: String,
    thread_id: Option<String>,
    text: String,
    sent_secs: i64,
    sent_nanos: u32,
    /// As JSON text: bincode is not self-describing, so it cannot decode a
    /// `serde_json::Value`.
    reply_context: String,
}

#[derive(Serialize, Deserialize)]
enum WireRecorded {
    Accepted,
    Duplicate,
    Unavailable,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn handovers_refused() {
    metrics::counter!(telemetry::NODE_HANDOVERS_TOTAL, "outcome" => "refused").increment(1);
}

/// Feeds a field with its length, so no two different field lists sign alike.
fn field(mac: &mut HmacSha256, bytes: &[u8]) {
    mac.update(&(bytes.len() as u64).to_be_bytes());
    mac.update(bytes);
}

/// The key nodes authenticate hand-overs with, and the requests already taken.
pub struct NodeKey {
    key: [u8; 32],
    /// (timestamp, signature) of the requests taken within the window: each is taken once.
    seen: Mutex<BTreeSet<(i64, [u8; 32])>>,
}

/// A signed request: its signature header and body, and the signature the answer's
/// covers.
pub struct Signed {
    pub header: String,
    pub mac: [u8; 32],
    pub body: Vec<u8>,
}

impl NodeKey {
    /// The key every node holding `master` derives.
    pub fn new(master: &SecretBox) -> NodeKey {
        NodeKey {
            key: master.derive_key(PURPOSE),
            seen: Mutex::default(),
        }
    }

    fn mac(&self, kind: &[u8]) -> HmacSha256 {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        field(&mut mac, kind);
        mac
    }

    fn request_mac(&self, t: i64, node: &str, connection: &str, body: &[u8]) -> HmacSha256 {
        let mut mac = self.mac(b"request");
        mac.update(&t.to_be_bytes());
        field(&mut mac, node.as_bytes());
        field(&mut mac, connection.as_bytes());
        field(&mut mac, body);
        mac
    }

    fn answer_mac(&self, request: &[u8; 32], body: &[u8]) -> HmacSha256 {
        let mut mac = self.mac(b"answer");
        mac.update(request);
        field(&mut mac, body);
        mac
    }

    /// A hand-over of `messages` of `connection` to the node advertised at `node`, signed
    /// at `t` (unix ms).
    pub fn request(
        &self,
        node: &str,
        connection: ConnectionId,
        messages: &[InboundMessage],
        t: i64,
    ) -> Result<Signed, String> {
        let wire: Vec<WireMessage> = messages
            .iter()
            .map(|m| WireMessage {
                dedup_id: m.dedup_id.clone(),
                user_id: m.user_id.clone(),
                user_name: m.user_name.clone(),
                chat_id: m.chat_id.clone(),
                thread_id: m.thread_id.clone(),
                text: m.text.clone(),
                sent_secs: m.sent_at.timestamp(),
                sent_nanos: m.sent_at.timestamp_subsec_nanos(),
                reply_context: m.reply_context.to_string(),
            })
            .collect();
        let body = encode(&wire)?;
        Ok(self.sign(node, &connection.to_string(), body, t))
    }

    /// Signs `body` as it is (tests sign bodies no node would send).
    pub fn sign(&self, node: &str, connection: &str, body: Vec<u8>, t: i64) -> Signed {
        let mac: [u8; 32] = self
            .request_mac(t, node, connection, &body)
            .finalize()
            .into_bytes()
            .into();
        Signed {
            header: format!("t={t},v1={}", hex::encode(mac)),
            mac,
            body,
        }
    }

    /// Authenticates a request to this node (advertised at `node`) at `now`: signed with
    /// the cluster's key for this node and this connection, fresh, and not taken before.
    /// Answers its signature.
    fn take(
        &self,
        headers: &HeaderMap,
        node: &str,
        connection: &str,
        body: &[u8],
        now: i64,
    ) -> Result<[u8; 32], &'static str> {
        let value = headers
            .get(SIGNATURE)
            .and_then(|v| v.to_str().ok())
            .ok_or("no node signature")?;
        let (t, mac) = value
            .split_once(',')
            .and_then(|(t, v)| {
                let t = t.strip_prefix("t=")?.parse::<i64>().ok()?;
                let mac: [u8; 32] = hex::decode(v.strip_prefix("v1=")?).ok()?.try_into().ok()?;
                Some((t, mac))
            })
            .ok_or("an unreadable node signature")?;
        if now.abs_diff(t) > WINDOW_MS.unsigned_abs() {
            return Err("a stale node signature (or the nodes' clocks disagree)");
        }
        self.request_mac(t, node, connection, body)
            .verify_slice(&mac)
            .map_err(|_| "a node signature that does not match")?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Older entries would be refused as stale anyway.
        let cutoff = now - WINDOW_MS;
        if seen.first().is_some_and(|(oldest, _)| *oldest < cutoff) {
            *seen = seen.split_off(&(cutoff, [0; 32]));
        }
        if !seen.insert((t, mac)) {
            return Err("a replayed hand-over");
        }
        Ok(mac)
    }

    /// The owner's answer to the request signed `request`: one outcome per message.
    pub fn read_answer(
        &self,
        request: &[u8; 32],
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Vec<Recorded>, String> {
        let mac = headers
            .get(SIGNATURE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("v1="))
            .and_then(|v| hex::decode(v).ok())
            .ok_or("an answer without a node signature")?;
        self.answer_mac(request, body)
            .verify_slice(&mac)
            .map_err(|_| "an answer whose node signature does not match")?;
        let wire: Vec<WireRecorded> = decode(body)?;
        Ok(wire
            .into_iter()
            .map(|r| match r {
                WireRecorded::Accepted => Recorded::Accepted,
                WireRecorded::Duplicate => Recorded::Duplicate,
                WireRecorded::Unavailable => Recorded::Unavailable,
            })
            .collect())
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let mut out = vec![VERSION];
    out.extend(
        bincode::serde::encode_to_vec(value, bincode::config::standard())
            .map_err(|e| format!("encoding a hand-over: {e}"))?,
    );
    Ok(out)
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    match body.split_first() {
        Some((&VERSION, payload)) => {
            let (value, read) = bincode::serde::decode_from_slice(
                payload,
                bincode::config::standard().with_limit::<DECODE_LIMIT>(),
            )
            .map_err(|e| format!("an unreadable hand-over: {e}"))?;
            if read != payload.len() {
                return Err("an unreadable hand-over: bytes after its end".into());
            }
            Ok(value)
        }
        Some((v, _)) => Err(format!(
            "hand-over version {v}; this node reads version {VERSION}"
        )),
        None => Err("an empty hand-over".into()),
    }
}

fn messages(body: &[u8], platform: Platform) -> Result<Vec<InboundMessage>, String> {
    let wire: Vec<WireMessage> = decode(body)?;
    wire.into_iter()
        .map(|w| {
            Ok(InboundMessage {
                platform,
                sent_at: DateTime::from_timestamp(w.sent_secs, w.sent_nanos)
                    .ok_or("a message time out of range")?,
                reply_context: serde_json::from_str(&w.reply_context)
                    .map_err(|e| format!("a message's reply context: {e}"))?,
                dedup_id: w.dedup_id,
                user_id: w.user_id,
                user_name: w.user_name,
                chat_id: w.chat_id,
                thread_id: w.thread_id,
                text: w.text,
            })
        })
        .collect()
}

/// `POST /internal/v1/deliveries/{connection_id}`: customer messages another node of the
/// cluster verified, for chats whose sessions this node owns. 401 unless signed by a node
/// of the cluster for this node and connection, fresh and new; 400 if unreadable.
pub async fn receive(
    State(st): State<AppState>,
    Path(connection): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let me = st.node.registry().node().url.clone();
    let request = match st
        .node_key
        .take(&headers, &me, &connection, &body, now_ms())
    {
        Ok(mac) => mac,
        Err(reason) => {
            handovers_refused();
            return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", reason).into_response();
        }
    };
    let malformed = |message: String| {
        handovers_refused();
        ApiError::new(StatusCode::BAD_REQUEST, "malformed", message).into_response()
    };
    let Ok(id) = uuid::Uuid::parse_str(&connection) else {
        return malformed("not a connection id".into());
    };
    let running = match st.node.handover_channel(id).await {
        Ok(r) => r,
        Err(answer) => return super::hooks::respond(answer),
    };
    let messages = match messages(&body, running.rt.platform()) {
        Ok(m) => m,
        Err(e) => return malformed(e),
    };
    let recorded: Vec<WireRecorded> = st
        .node
        .accept_handed_over(&running, messages)
        .await
        .into_iter()
        .map(|r| match r {
            Recorded::Accepted => WireRecorded::Accepted,
            Recorded::Duplicate => WireRecorded::Duplicate,
            Recorded::Unavailable => WireRecorded::Unavailable,
        })
        .collect();
    let answer = match encode(&recorded) {
        Ok(a) => a,
        Err(e) => {
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e).into_response()
        }
    };
    let mac = st
        .node_key
        .answer_mac(&request, &answer)
        .finalize()
        .into_bytes();
    let signature = HeaderValue::from_str(&format!("v1={}", hex::encode(mac)))
        .expect("hex is a valid header value");
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(OCTETS)),
            (header::HeaderName::from_static(SIGNATURE), signature),
        ],
        answer,
    )
        .into_response()
}

/// Hands messages over with the node's forwarding client (see [`Relay`]).
pub struct Handing<'a>(pub &'a AppState);

impl Relay for Handing<'_> {
    async fn hand_over(
        &self,
        owner: &str,
        connection: ConnectionId,
        messages: &[InboundMessage],
    ) -> Result<Vec<Recorded>, String> {
        let st = self.0;
        let signed = st.node_key.request(owner, connection, messages, now_ms())?;
        let resp = st
            .forwarder
            .post(format!(
                "{owner}{}",
                PATH.replace("{connection_id}", &connection.to_string())
            ))
            .header(SIGNATURE, signed.header)
            .header(header::CONTENT_TYPE, OCTETS)
            .timeout(TIMEOUT)
            .body(signed.body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(format!("{status}: {text}"));
        }
        st.node_key.read_answer(&signed.mac, &headers, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_crosses_the_wire_unchanged() {
        let key = NodeKey::new(&SecretBox::from_text(&"ab".repeat(32)).unwrap());
        let sent_at = DateTime::from_timestamp(1_765_000_000, 123_456_789).unwrap();
        let msg = |dedup_id: &str, user_name: Option<&str>| InboundMessage {
            platform: parley_connectors::slack::PLATFORM,
            dedup_id: dedup_id.into(),
            user_id: "U1".into(),
            user_name: user_name.map(str::to_string),
            chat_id: "C1".into(),
            thread_id: Some("1765000000.000100".into()),
            text: "héllo\nwörld".into(),
            sent_at,
            reply_context: serde_json::json!({"ts": "1.2", "nested": {"list": [1, null, "x"]}}),
        };
        let sent = [msg("Ev1", Some("Ada")), msg("Ev2", None)];
        let signed = key
            .request("http://n2", uuid::Uuid::now_v7(), &sent, 0)
            .unwrap();
        assert_eq!(signed.body[0], VERSION);
        assert_eq!(
            messages(&signed.body, parley_connectors::slack::PLATFORM).unwrap(),
            sent
        );
        assert!(messages(
            &signed.body[..signed.body.len() - 1],
            parley_connectors::slack::PLATFORM
        )
        .is_err());
        assert!(messages(&[], parley_connectors::slack::PLATFORM).is_err());
        // A length claimed past the limit is refused before anything is allocated for it.
        let mut huge = vec![VERSION, 1];
        huge.push(253);
        huge.extend(u64::MAX.to_le_bytes());
        assert!(messages(&huge, parley_connectors::slack::PLATFORM).is_err());
    }
}
