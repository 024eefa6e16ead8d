//! Admin API: agents (tenant admin key).

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header::CONTENT_TYPE, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use parley_actors::node::Transferred;
use parley_engine::agent::archive::ExportOptions;
use parley_engine::agent::{AgentDefinition, Format};
use parley_engine::store::AgentRecord;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{optional_json, parse_id, AdminAuth};
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

/// `POST /api/v1/agents/{id}/export` with the options (JSON, all optional): the archive
/// as `application/zip`; the key that opens its secrets comes once, in
/// `x-parley-export-key`.
pub async fn export(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let options: ExportOptions = optional_json(&body)?;
    let (record, bytes, key) = st
        .node
        .export_agent(tenant.id, parse_id(&id, "agent")?, options)
        .await?;
    let filename: String = record
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut r = bytes.into_response();
    let headers = r.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    for (name, value) in [
        (
            "content-disposition",
            format!("attachment; filename=\"agent-{filename}.zip\""),
        ),
        (EXPORT_KEY_HEADER, key),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    Ok(r)
}

/// The header an export's key comes in, and an import may give it in.
pub const EXPORT_KEY_HEADER: &str = "x-parley-export-key";

fn transferred_json(t: &Transferred) -> Value {
    let mut v = with_definition(&t.record, &t.definition);
    if let Some(token) = &t.token {
        v["token"] = json!(token);
    }
    v["notes"] = json!(t.notes);
    v["secrets_removed"] = json!(t.secrets_removed);
    v
}

/// `POST /api/v1/agents/import`: multipart with `file` (the archive) and `secret_key`,
/// or the archive itself as the body with the key in `x-parley-export-key`.
pub async fn import(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    req: Request,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let multipart = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("multipart/form-data"));
    let (bytes, key) = if multipart {
        let mut form = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::invalid(e.body_text()))?;
        let (mut file, mut key) = (None, None);
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| ApiError::invalid(e.body_text()))?
        {
            match field.name() {
                Some("file") => {
                    file = Some(
                        field
                            .bytes()
                            .await
                            .map_err(|e| ApiError::invalid(e.body_text()))?,
                    )
                }
                Some("secret_key") => {
                    key = Some(
                        field
                            .text()
                            .await
                            .map_err(|e| ApiError::invalid(e.body_text()))?,
                    )
                }
                _ => {}
            }
        }
        (
            file.ok_or_else(|| ApiError::invalid("file: the archive is missing"))?,
            key.ok_or_else(|| ApiError::invalid("secret_key: required"))?,
        )
    } else {
        let key = req
            .headers()
            .get(EXPORT_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| ApiError::invalid(format!("{EXPORT_KEY_HEADER}: required")))?;
        let bytes = Bytes::from_request(req, &())
            .await
            .map_err(|e| ApiError::from_rejection(e.status(), e.body_text()))?;
        (bytes, key)
    };
    let t = st.node.import_agent(tenant.id, &bytes, key.trim()).await?;
    let status = if t.token.is_some() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(transferred_json(&t))))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyRequest {
    name: Option<String>,
}

/// `POST /api/v1/agents/{id}/copy` `{name?}`: a new agent with the same configuration.
pub async fn copy(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let req: CopyRequest = optional_json(&body)?;
    let t = st
        .node
        .copy_agent(tenant.id, parse_id(&id, "agent")?, req.name)
        .await?;
    Ok((StatusCode::CREATED, Json(transferred_json(&t))))
}
