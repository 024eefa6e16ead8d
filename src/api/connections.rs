//! Admin API: platform connections (tenant admin key). Secrets are write-only: answers
//! carry `<secret>_set` flags instead.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use parley_actors::node::{
    ConnectionFilter, ConnectionPatch, NewConnection, TemplateSend, MAX_EVENTS_PAGE,
};
use parley_engine::connection::ConnectionStatus;
use parley_engine::inbound::Platform;
use parley_engine::model::TenantId;
use parley_engine::store::AgentChannel;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{page_limit, parse_id, AdminAuth, ApiJson};
use super::AppState;

pub async fn create(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    ApiJson(req): ApiJson<NewConnection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let c = st.node.create_connection(tenant.id, req).await?;
    Ok((StatusCode::CREATED, Json(st.node.connection_json(&c)?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    platform: Option<String>,
    status: Option<String>,
    q: Option<String>,
}

/// `GET /api/v1/platforms`: every platform with its config schema and default limits,
/// what a form for a new connection is drawn from. The same for every tenant.
pub async fn platforms(AdminAuth(_tenant): AdminAuth) -> Json<Value> {
    let platforms: Vec<Value> = parley_connectors::platform::registry()
        .iter()
        .map(|k| {
            json!({
                "name": k.platform(),
                "fields": k.fields(),
                "rate_limits": k.rate_limits(),
            })
        })
        .collect();
    Json(json!({ "platforms": platforms }))
}

pub async fn list(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let platform = q
        .platform
        .map(|p| {
            Platform::parse(&p)
                .ok()
                .filter(|p| parley_connectors::platform::kind(*p).is_some())
                .ok_or_else(|| ApiError::invalid(format!("platform: unknown platform {p:?}")))
        })
        .transpose()?;
    let status = q
        .status
        .map(|s| {
            ConnectionStatus::parse(&s)
                .ok_or_else(|| ApiError::invalid(format!("status: unknown status {s:?}")))
        })
        .transpose()?;
    let filter = ConnectionFilter {
        platform,
        status,
        q: q.q.filter(|s| !s.is_empty()),
    };
    let (shown, summary) = st.node.list_connections(tenant.id, &filter).await?;
    let connections = shown
        .iter()
        .map(|c| st.node.connection_json(c))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(
        json!({"connections": connections, "summary": summary}),
    ))
}

pub async fn get(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = st
        .node
        .connection(tenant.id, parse_id(&id, "connection")?)
        .await?;
    Ok(Json(st.node.connection_json(&c)?))
}

pub async fn update(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<ConnectionPatch>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id, "connection")?;
    let c = st.node.update_connection(tenant.id, id, patch).await?;
    Ok(Json(st.node.connection_json(&c)?))
}

pub async fn delete(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    st.node
        .delete_connection(tenant.id, parse_id(&id, "connection")?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A real call to the platform with the stored credentials.
pub async fn test(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let result = st
        .node
        .test_connection(tenant.id, parse_id(&id, "connection")?)
        .await?;
    Ok(Json(result))
}

/// `PUT /api/v1/agents/{id}/channels` with `[{"connection_id", "inbound"}]`.
pub async fn set_channels(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(agent): Path<String>,
    ApiJson(channels): ApiJson<Vec<AgentChannel>>,
) -> ApiResult<Json<Vec<AgentChannel>>> {
    let agent = parse_id(&agent, "agent")?;
    Ok(Json(
        st.node
            .set_agent_channels(tenant.id, agent, channels)
            .await?,
    ))
}

pub async fn channels(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(agent): Path<String>,
) -> ApiResult<Json<Vec<AgentChannel>>> {
    let agent = parse_id(&agent, "agent")?;
    Ok(Json(st.node.agent_channels(tenant.id, agent).await?))
}

/// Start, stop or retry: the connection as it is afterwards.
async fn act(st: &AppState, tenant: TenantId, id: &str, action: Action) -> ApiResult<Json<Value>> {
    let id = parse_id(id, "connection")?;
    let c = match action {
        Action::Start => st.node.start_connection(tenant, id).await?,
        Action::Stop => st.node.stop_connection(tenant, id).await?,
        Action::Retry => st.node.retry_connection(tenant, id).await?,
    };
    Ok(Json(st.node.connection_json(&c)?))
}

enum Action {
    Start,
    Stop,
    Retry,
}

pub async fn start(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    act(&st, tenant.id, &id, Action::Start).await
}

pub async fn stop(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    act(&st, tenant.id, &id, Action::Stop).await
}

pub async fn retry(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    act(&st, tenant.id, &id, Action::Retry).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    before: Option<i64>,
    limit: Option<u32>,
}

/// The event log, newest first; `before` (an event id) pages on.
pub async fn events(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = page_limit(q.limit, 100, MAX_EVENTS_PAGE)?;
    let events = st
        .node
        .connection_events(tenant.id, parse_id(&id, "connection")?, q.before, limit)
        .await?;
    let next = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    Ok(Json(json!({"events": events, "next_before": next})))
}

pub async fn setup(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        st.node
            .setup_connection(tenant.id, parse_id(&id, "connection")?)
            .await?,
    ))
}

pub async fn send_template(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<TemplateSend>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        st.node
            .send_template(tenant.id, parse_id(&id, "connection")?, req)
            .await?,
    ))
}
