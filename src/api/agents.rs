//! Admin API: agents (tenant admin key).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header::CONTENT_TYPE, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use parley_engine::agent::{AgentDefinition, Format};
use parley_engine::store::AgentRecord;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{parse_id, AdminAuth};
use super::AppState;

fn agent_json(r: &AgentRecord) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "status": r.status.as_str(),
        "status_reason": r.status_reason,
        "version": r.current_version,
        "created_at": r.created_at.to_rfc3339(),
        "updated_at": r.updated_at.to_rfc3339(),
    })
}

fn with_definition(r: &AgentRecord, def: &AgentDefinition) -> Value {
    let mut v = agent_json(r);
    v["definition"] = serde_json::to_value(def.redacted()).unwrap_or(Value::Null);
    v
}

/// The definition text and its format (JSON when the content type says so, else YAML).
fn definition_body(headers: &HeaderMap, body: &Bytes) -> ApiResult<(String, Format)> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::invalid("the definition must be UTF-8 text"))?;
    if text.trim().is_empty() {
        return Err(ApiError::invalid(
            "the request body must hold the agent definition (YAML or JSON)",
        ));
    }
    Ok((text.to_string(), Format::guess(ct)))
}

pub async fn create(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let (text, format) = definition_body(&headers, &body)?;
    let (record, def, token) = st.node.create_agent(tenant.id, &text, format).await?;
    let mut v = with_definition(&record, &def);
    v["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(v)))
}

pub async fn list(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
) -> ApiResult<Json<Value>> {
    let agents = st.node.list_agents(tenant.id).await?;
    Ok(Json(json!({
        "total": agents.len(),
        "agents": agents.iter().map(agent_json).collect::<Vec<_>>(),
    })))
}

pub async fn get(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (record, def) = st.node.agent(tenant.id, parse_id(&id, "agent")?).await?;
    Ok(Json(with_definition(&record, &def)))
}

pub async fn update(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id, "agent")?;
    let (text, format) = definition_body(&headers, &body)?;
    st.node.update_agent(tenant.id, id, &text, format).await?;
    let (record, def) = st.node.agent(tenant.id, id).await?;
    Ok(Json(with_definition(&record, &def)))
}

pub async fn delete(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    st.node
        .delete_agent(tenant.id, parse_id(&id, "agent")?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn start(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id, "agent")?;
    Ok(Json(agent_json(&st.node.start_agent(tenant.id, id).await?)))
}

pub async fn stop(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id, "agent")?;
    Ok(Json(agent_json(&st.node.stop_agent(tenant.id, id).await?)))
}

pub async fn rotate_token(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id, "agent")?;
    let token = st.node.rotate_token(tenant.id, id).await?;
    Ok(Json(json!({"id": id, "token": token})))
}
