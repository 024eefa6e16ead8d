//! Extractors that answer bad input with JSON errors, and the two kinds of credentials.

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parley_actors::node::{ActorScope, Caller};
use parley_actors::NodeError;
use parley_engine::auth::verify_secret;
use parley_engine::identity::Role;
use parley_engine::model::{AgentId, SessionId, TenantId};
use serde::de::DeserializeOwned;

use super::error::{ApiError, ApiResult};
use super::{AppState, Auth, LOG_READER_ROLES, PLAYGROUND_ROLES};

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

/// The WebSocket subprotocol that carries a token: a browser cannot set headers on an
/// upgrade, so it offers `Sec-WebSocket-Protocol: bearer, <token>` and the server selects
/// `bearer`.
pub const WS_BEARER_PROTOCOL: &str = "bearer";

/// The bearer token of a request: `Authorization: Bearer …`, else the token offered after
/// the `bearer` WebSocket subprotocol, else `?token=` — an agent's chat token only: admin
/// keys and sign-ins in URLs end up in proxies' logs.
pub fn bearer(headers: &HeaderMap, query_token: Option<&str>) -> Option<String> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
        .or_else(|| ws_protocol_token(headers))
        .or_else(|| {
            query_token
                .filter(|t| t.starts_with("pat_"))
                .map(str::to_string)
        })
        .filter(|t| !t.is_empty())
}

fn ws_protocol_token(headers: &HeaderMap) -> Option<String> {
    let offered = headers
        .get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)?
        .to_str()
        .ok()?;
    let mut parts = offered.split(',').map(str::trim);
    parts.find(|p| *p == WS_BEARER_PROTOCOL)?;
    parts.next().map(str::to_string)
}

/// A request that passed its route's role check (see [`authorize`]): the caller's
/// tenant. Handlers that care who called take [`Caller`] instead.
pub struct AdminAuth(pub CallerTenant);

#[derive(Debug, Clone, Copy)]
pub struct CallerTenant {
    pub id: TenantId,
}

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let c = parts
            .extensions
            .get::<Caller>()
            .ok_or_else(ApiError::unauthorized)?;
        Ok(AdminAuth(CallerTenant { id: c.tenant }))
    }
}

/// Whose actors an [`Auth::NodeAdmin`] route's caller reaches: the whole node with the
/// super key (no [`Caller`] then), else the admin's own tenant.
impl FromRequestParts<AppState> for ActorScope {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(match parts.extensions.get::<Caller>() {
            Some(c) => ActorScope::Tenant(c.tenant),
            None => ActorScope::Node,
        })
    }
}

/// The caller as [`authorize`] found it, with the token it presented.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .copied()
            .ok_or_else(ApiError::unauthorized)
    }
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// Checks a route's credentials before its handler runs: the super key for
/// [`Auth::Super`]; otherwise the tenant's admin key or a sign-in, whose role the route
/// must allow (a temporary-password sign-in reaches [`Auth::Profile`] routes only).
pub async fn authorize(
    State((state, auth)): State<(AppState, Auth)>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = bearer(req.headers(), None);
    let checked = async {
        let token = token.ok_or_else(ApiError::unauthorized)?;
        if auth == Auth::Super {
            return match &state.super_key_hash {
                Some(h) if verify_secret(&token, h) => Ok(None),
                Some(_) => Err(ApiError::unauthorized()),
                None => Err(forbidden(
                    "no super key is set on this deployment (--super-key)",
                )),
            };
        }
        if auth == Auth::NodeAdmin
            && state
                .super_key_hash
                .as_ref()
                .is_some_and(|h| verify_secret(&token, h))
        {
            return Ok(None);
        }
        let auth = match auth {
            Auth::NodeAdmin => Auth::Roles(&[Role::Admin]),
            other => other,
        };
        let caller = state.node.authenticate(&token).await?;
        if caller.password_change_only && auth != Auth::Profile {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "password_change_required",
                "change the temporary password first: POST /api/v1/auth/password",
            ));
        }
        if let Auth::Roles(roles) = auth {
            if !roles.contains(&caller.role) {
                return Err(forbidden(format!(
                    "the {} role may not do this",
                    caller.role.as_str()
                )));
            }
        }
        Ok(Some(caller))
    }
    .await;
    match checked {
        Ok(caller) => {
            if let Some(c) = caller {
                req.extensions_mut().insert(c);
            }
            next.run(req).await
        }
        Err(e) => e.into_response(),
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
        agent_auth(state, &parts.headers, query_token(&parts.uri), agent).await?;
        let session = params
            .get("session_id")
            .map(|s| parse_id(s, "session"))
            .transpose()?;
        Ok(AgentCaller { agent, session })
    }
}

/// The `?token=` of a WebSocket upgrade (browsers cannot set its headers).
pub fn query_token(uri: &axum::http::Uri) -> Option<&str> {
    uri.query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
}

/// Checks an agent's chat API token, or a sign-in of the agent's tenant whose role may
/// use the playground; answers the agent's tenant.
pub async fn agent_auth(
    state: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
    agent: AgentId,
) -> ApiResult<TenantId> {
    let token = bearer(headers, query_token).ok_or_else(ApiError::unauthorized)?;
    match state.node.authorize_agent(agent, &token).await {
        Err(NodeError::Unauthorized) if !token.starts_with("pat_") => {
            let caller = signed_in(state, &token, PLAYGROUND_ROLES).await?;
            let tenant = state.node.agent_tenant(agent).await?;
            if tenant != caller.tenant {
                // Another tenant's agent is not there at all for this caller.
                return Err(NodeError::NotFound("agent").into());
            }
            Ok(tenant)
        }
        other => Ok(other?),
    }
}

/// A sign-in (or the admin key) whose role is one of `roles`, fully signed in.
async fn signed_in(state: &AppState, token: &str, roles: &[Role]) -> ApiResult<Caller> {
    let caller = state.node.authenticate(token).await?;
    if caller.password_change_only {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "password_change_required",
            "change the temporary password first: POST /api/v1/auth/password",
        ));
    }
    if !roles.contains(&caller.role) {
        return Err(forbidden(format!(
            "the {} role may not do this",
            caller.role.as_str()
        )));
    }
    Ok(caller)
}

/// The tenant whose customers' conversations a token may read without an agent: the
/// admin key's, or a signed-in admin's, viewer's or operator's.
pub async fn log_reader(state: &AppState, token: &str) -> ApiResult<TenantId> {
    Ok(signed_in(state, token, LOG_READER_ROLES).await?.tenant)
}

/// Public routes take the agent's token (with `agent_id`), or without one the tenant's
/// admin key or a signed-in admin, viewer or operator.
pub async fn public_auth(
    state: &AppState,
    headers: &HeaderMap,
    agent: Option<AgentId>,
) -> ApiResult<(TenantId, Option<AgentId>)> {
    let token = bearer(headers, None).ok_or_else(ApiError::unauthorized)?;
    match agent {
        Some(a) => Ok((agent_auth(state, headers, None, a).await?, Some(a))),
        None => Ok((log_reader(state, &token).await?, None)),
    }
}

/// A JSON body that may be left out: an empty (or blank) body is `T::default()`.
pub fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid body: {e}")))
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

/// A page size from a query: `given`, else `default`; 1 to `max`, else a 422 naming the
/// bounds.
pub fn page_limit<T>(given: Option<T>, default: T, max: T) -> ApiResult<T>
where
    T: Copy + PartialOrd + Default + std::fmt::Display,
{
    let limit = given.unwrap_or(default);
    if limit == T::default() || limit > max {
        return Err(ApiError::invalid(format!("limit: 1 to {max}")));
    }
    Ok(limit)
}

/// The client's address of a request (see [`client_ip`]), when the server knows it.
pub struct ClientAddress(pub Option<std::net::IpAddr>);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(client_ip(parts, &st.trusted_proxies)))
    }
}

/// The client's address: the peer the connection came from or, when that peer is a
/// trusted proxy (`--trusted-proxy`), the nearest address in `X-Forwarded-For` that is not
/// one (the entries further left are the client's to write).
pub fn client_ip(parts: &Parts, trusted_proxies: &[ipnet::IpNet]) -> Option<std::net::IpAddr> {
    let axum::extract::ConnectInfo(peer) = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()?;
    let trusted = |ip: &std::net::IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    let mut client = peer.ip();
    if trusted(&client) {
        let hops = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .rev();
        for hop in hops {
            match hop.trim().parse::<std::net::IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !trusted(&ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
    Some(client)
}
