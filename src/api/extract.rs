//! Extractors that answer bad input with JSON errors, and the two kinds of credentials.

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use parley_engine::model::{AgentId, SessionId, TenantId};
use parley_engine::store::Tenant;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ApiResult};
use super::AppState;

/// `axum::Json` whose rejections are JSON errors (422 for bad JSON, 413 for size).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(ApiError::from_rejection(r.status(), r.body_text())),
        }
    }
}

/// The bearer token of a request: `Authorization: Bearer …`, else `?token=` (browsers
/// cannot set headers on WebSocket upgrades).
pub fn bearer(headers: &HeaderMap, query_token: Option<&str>) -> Option<String> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
        .or_else(|| query_token.map(str::to_string))
        .filter(|t| !t.is_empty())
}

/// A request made with the tenant's admin API key.
pub struct AdminAuth(pub Tenant);

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers, None).ok_or_else(ApiError::unauthorized)?;
        Ok(AdminAuth(state.node.tenant_for_key(&token).await?))
    }
}

/// A Chat API caller: the `{agent_id}` (and `{session_id}`) of the path, checked against
/// the agent's token (`Authorization: Bearer`, or `?token=` on WebSocket upgrades).
pub struct AgentCaller {
    pub agent: AgentId,
    session: Option<SessionId>,
}

impl AgentCaller {
    /// The `{session_id}` of the path (routes without one never ask).
    pub fn session(&self) -> ApiResult<SessionId> {
        self.session
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "session not found"))
    }
}

impl FromRequestParts<AppState> for AgentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|r| ApiError::from_rejection(r.status(), r.body_text()))?;
        let agent = parse_id(params.get("agent_id").map_or("", String::as_str), "agent")?;
        let query_token = parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .map(str::to_string)
        });
        agent_auth(state, &parts.headers, query_token.as_deref(), agent).await?;
        let session = params
            .get("session_id")
            .map(|s| parse_id(s, "session"))
            .transpose()?;
        Ok(AgentCaller { agent, session })
    }
}

/// Checks an agent's chat API token; answers the agent's tenant.
pub async fn agent_auth(
    state: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
    agent: AgentId,
) -> ApiResult<TenantId> {
    let token = bearer(headers, query_token).ok_or_else(ApiError::unauthorized)?;
    Ok(state.node.authorize_agent(agent, &token).await?)
}

/// Public routes take the agent's token (with `agent_id`) or the tenant's admin key.
pub async fn public_auth(
    state: &AppState,
    headers: &HeaderMap,
    agent: Option<AgentId>,
) -> ApiResult<(TenantId, Option<AgentId>)> {
    let token = bearer(headers, None).ok_or_else(ApiError::unauthorized)?;
    match agent {
        Some(a) => Ok((state.node.authorize_agent(a, &token).await?, Some(a))),
        None => Ok((state.node.tenant_for_key(&token).await?.id, None)),
    }
}

pub fn parse_id(raw: &str, what: &'static str) -> ApiResult<uuid::Uuid> {
    uuid::Uuid::parse_str(raw).map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    })
}
