//! The Chat API (agent token): sessions and messages, as the seed documents them.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header::CONTENT_TYPE, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use parley_actors::node::CreateSession;
use parley_actors::session::{NewAttachment, SessionPatch, TurnRequest};
use parley_engine::model::{CloseStatus, Message, Session};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{optional_json, AgentCaller, ApiJson, ClientAddress};
use super::AppState;

pub fn session_json(s: &Session) -> Value {
    s.to_api_json(&Utc::now().format("%Y-%m-%d %a").to_string())
}

pub fn message_json(m: &Message) -> Value {
    json!({
        "id": m.id,
        "timestamp": m.timestamp.to_rfc3339(),
        "role": m.role.as_str(),
        "text": m.text,
        "attachments": m.attachments,
        "metadata": m.metadata,
        "feedback": m.feedback,
    })
}

pub async fn create_session(
    State(st): State<AppState>,
    caller: AgentCaller,
    ClientAddress(address): ClientAddress,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    st.opens.take(caller.agent, address)?;
    // An empty body is a session with every field defaulted.
    let req: CreateSession = if body.iter().all(u8::is_ascii_whitespace) {
        CreateSession::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("invalid session request: {e}")))?
    };
    let s = st.node.create_session(caller.agent, req).await?;
    Ok((StatusCode::CREATED, Json(session_json(&s))))
}

pub async fn get_session(
    State(st): State<AppState>,
    caller: AgentCaller,
) -> ApiResult<Json<Value>> {
    let s = st.node.session(caller.agent, caller.session()?).await?;
    Ok(Json(session_json(&s)))
}

pub async fn update_session(
    State(st): State<AppState>,
    caller: AgentCaller,
    ApiJson(patch): ApiJson<SessionPatch>,
) -> ApiResult<Json<Value>> {
    let s = st
        .node
        .update_session(caller.agent, caller.session()?, patch)
        .await?;
    Ok(Json(session_json(&s)))
}

#[derive(Debug, Default, Deserialize)]
pub struct CloseQuery {
    status: Option<String>,
}

pub async fn close_session(
    State(st): State<AppState>,
    caller: AgentCaller,
    Query(q): Query<CloseQuery>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    // The status may come as ?status= or as {"status": …}.
    let body_status = optional_json::<CloseQuery>(&body)?.status;
    let status = match q.status.or(body_status) {
        None => CloseStatus::Completed,
        Some(s) => CloseStatus::parse(&s).ok_or_else(|| {
            ApiError::invalid(format!(
                "status: unknown close status {s:?} (one of {})",
                CloseStatus::ALL.map(|c| c.as_str()).join(", ")
            ))
        })?,
    };
    let s = st
        .node
        .close_session(caller.agent, caller.session()?, status)
        .await?;
    Ok(Json(session_json(&s)))
}

#[derive(Deserialize)]
struct MessageBody {
    message: Option<String>,
}

/// The customer message of a run_v2 request, from multipart, JSON or a urlencoded form.
pub(super) async fn read_message(
    st: &AppState,
    req: Request,
) -> ApiResult<(String, Vec<NewAttachment>)> {
    let ct = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut message: Option<String> = None;
    let mut attachments = Vec::new();
    if ct.starts_with("multipart/form-data") {
        let mut mp = Multipart::from_request(req, st)
            .await
            .map_err(|r| ApiError::from_rejection(r.status(), r.body_text()))?;
        loop {
            let field = match mp.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(ApiError::from_rejection(e.status(), e.body_text())),
            };
            match field.name().unwrap_or("") {
                "message" => {
                    message = Some(
                        field
                            .text()
                            .await
                            .map_err(|e| ApiError::from_rejection(e.status(), e.body_text()))?,
                    );
                }
                "attachments" => {
                    let filename = field.file_name().unwrap_or("attachment").to_string();
                    let content_type = field
                        .content_type()
                        .unwrap_or("application/octet-stream")
                        .to_string();
                    let bytes = field
                        .bytes()
                        .await
                        .map_err(|e| ApiError::from_rejection(e.status(), e.body_text()))?;
                    attachments.push(NewAttachment {
                        filename,
                        content_type,
                        bytes,
                    });
                }
                _ => {}
            }
        }
    } else if ct.starts_with("application/json") {
        let ApiJson(b) = ApiJson::<MessageBody>::from_request(req, st).await?;
        message = b.message;
    } else if ct.starts_with("application/x-www-form-urlencoded") {
        let axum::Form(b) = axum::Form::<MessageBody>::from_request(req, st)
            .await
            .map_err(|r| ApiError::from_rejection(r.status(), r.body_text()))?;
        message = b.message;
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send multipart/form-data (message, attachments) or application/json {\"message\": …}",
        ));
    }
    let message = message.unwrap_or_default();
    check_message(
        &message,
        st.limits.max_message_chars,
        !attachments.is_empty(),
    )?;
    Ok((message, attachments))
}

fn idempotency_key_error() -> ApiError {
    ApiError::invalid("Idempotency-Key: 1 to 255 visible ASCII characters")
}

/// The `Idempotency-Key` header of a send, if any, checked.
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let k = v.to_str().map_err(|_| idempotency_key_error())?;
    check_idempotency_key(k)?;
    Ok(Some(k.to_string()))
}

/// An idempotency key as every way in takes it (the REST header, the WebSocket field).
pub fn check_idempotency_key(key: &str) -> ApiResult<()> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(idempotency_key_error());
    }
    Ok(())
}

/// A customer message's text as every way in takes it: not blank (unless attachments
/// carry the message), no NUL, within the configured length.
pub fn check_message(text: &str, max_chars: usize, blank_ok: bool) -> ApiResult<()> {
    if text.trim().is_empty() && !blank_ok {
        return Err(ApiError::invalid("message: required and must not be empty"));
    }
    // Postgres text cannot hold NUL; refusing it here keeps one bad message from failing
    // the group commit it would share with other sessions' turns.
    if text.contains('\0') {
        return Err(ApiError::invalid(
            "message: must not contain NUL characters",
        ));
    }
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(ApiError::too_large(format!(
            "message: {chars} characters, at most {max_chars} allowed"
        )));
    }
    Ok(())
}

pub async fn run_v2(
    State(st): State<AppState>,
    caller: AgentCaller,
    req: Request,
) -> ApiResult<Response> {
    let session = caller.session()?;
    let idempotency_key = idempotency_key(req.headers())?;
    let (text, attachments) = read_message(&st, req).await?;
    let reply = st
        .node
        .turn(
            session,
            TurnRequest {
                agent_id: caller.agent,
                text,
                attachments,
                idempotency_key,
                new_key: false,
            },
        )
        .await?;
    let mut metadata = match reply.metadata {
        Value::Object(m) => Value::Object(m),
        _ => json!({}),
    };
    metadata["mode"] = json!(reply.mode);
    metadata["message_id"] = json!(reply.ai_id);
    metadata["human_message_id"] = json!(reply.human_id);
    metadata["session_status"] = json!(reply.status);
    let mut resp = Json(json!({"response": reply.response, "metadata": metadata})).into_response();
    if reply.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

pub async fn messages(State(st): State<AppState>, caller: AgentCaller) -> ApiResult<Json<Value>> {
    let session = caller.session()?;
    let log = st.node.messages(caller.agent, session).await?;
    Ok(Json(json!({
        "session_id": session,
        "logs": log.iter().map(message_json).collect::<Vec<_>>(),
    })))
}

/// Authentication is the whole check here: the answer is the same for every agent.
pub async fn capabilities(_caller: AgentCaller) -> ApiResult<Json<Value>> {
    Ok(Json(json!({
        "has_stt": false,
        "has_tts": false,
        "streaming": true,
        "attachments": true,
    })))
}
