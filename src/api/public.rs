//! Public conversation routes: a customer's conversations, attachments and reactions.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use parley_engine::model::Feedback;
use serde::Deserialize;
use serde_json::{json, Value};

use super::chat::message_json;
use super::error::{ApiError, ApiResult};
use super::extract::{parse_id, public_auth, ApiJson};
use super::AppState;

#[derive(Debug, Deserialize)]
pub struct CustomerQuery {
    ext_id: Option<String>,
    ext_type: Option<String>,
    agent_id: Option<String>,
}

fn ext_id(q: &CustomerQuery) -> ApiResult<&str> {
    q.ext_id
        .as_deref()
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ApiError::invalid("ext_id: required"))
}

fn agent_param(q: &Option<String>) -> ApiResult<Option<uuid::Uuid>> {
    q.as_deref().map(|a| parse_id(a, "agent")).transpose()
}

pub async fn conversations(
    State(st): State<AppState>,
    Query(q): Query<CustomerQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let (tenant, agent) = public_auth(&st, &headers, agent_param(&q.agent_id)?).await?;
    let ext_id = ext_id(&q)?;
    let ext_type = q.ext_type.as_deref().unwrap_or("web");
    let convs = st
        .node
        .conversations(tenant, agent, ext_id, ext_type)
        .await?;
    let user_name = convs.iter().find_map(|c| c.session.name.clone());
    Ok(Json(json!({
        "user_id": ext_id,
        "user_name": user_name,
        "conversations": convs.iter().map(|c| json!({
            "session_id": c.session.id,
            "agent_id": c.session.agent_id,
            "bot_url": format!("/chatbot/{}", c.session.agent_id),
            "start_time": c.session.created_at.to_rfc3339(),
            "status": c.session.status_str(),
            "mode": c.session.mode,
            "conversation_result": c.session.conversation_result,
            "logs": c.messages.iter().map(message_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })))
}

pub async fn attachment(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<CustomerQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (tenant, _) = public_auth(&st, &headers, agent_param(&q.agent_id)?).await?;
    let (meta, bytes) = st
        .node
        .attachment(tenant, parse_id(&id, "attachment")?, ext_id(&q)?)
        .await?;
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&meta.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    let safe_name: String = meta
        .filename
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe_name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
pub struct FeedbackBody {
    feedback: Feedback,
    ext_id: String,
    /// The seed's clients also send `tenant_id`; the token decides the tenant.
    agent_id: Option<String>,
}

pub async fn feedback(
    State(st): State<AppState>,
    Path((session, log_id)): Path<(String, String)>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<FeedbackBody>,
) -> ApiResult<Json<Value>> {
    let (tenant, _) = public_auth(&st, &headers, agent_param(&body.agent_id)?).await?;
    let session = parse_id(&session, "session")?;
    let log_id: i64 = log_id.parse().map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            "message not found",
        )
    })?;
    st.node
        .set_feedback(tenant, session, log_id, &body.ext_id, body.feedback)
        .await?;
    Ok(Json(
        json!({"session_id": session, "log_id": log_id, "feedback": body.feedback}),
    ))
}
