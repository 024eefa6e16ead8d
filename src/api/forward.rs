//! Routing between nodes. A request that changes a session is served by the node that owns
//! the session: a node that receives one for a session owned elsewhere forwards it over
//! internal HTTP (kept-alive connections between nodes) and answers the caller with the
//! owner's response. WebSockets are proxied frame by frame (see `ws.rs`).
//!
//! Reads (GET) are served by any node from the shared store: every acknowledged change is
//! committed there before its answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parley_actors::Route;
use parley_engine::model::SessionId;
use parley_engine::registry::RegistryStats;
use uuid::Uuid;

use super::error::{ApiError, MovedTo, SESSION_MOVED_HEADER};
use super::extract::{agent_auth, parse_id, public_auth, query_token};
use super::{AppState, Auth};

/// Marks a forwarded request (with the forwarding node's id): its receiver serves it
/// itself and never forwards it again.
pub const FORWARDED_BY: &str = "x-parley-forwarded-by";

/// How long forwarding keeps retrying an owner that does not answer (connection refused)
/// beyond the lease: by then the lease has expired and this node can claim the session.
const RETRY_BEYOND_LEASE: Duration = Duration::from_secs(2);
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The HTTP client for node-to-node requests.
pub fn client() -> reqwest::Client {
    // Peers are private addresses by nature: timeouts, but no egress policy.
    let timeouts = parley_engine::egress::Timeouts {
        connect: Duration::from_secs(1),
        ..parley_engine::egress::Timeouts::default()
    };
    parley_engine::egress::builder(None, timeouts)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()
        .expect("a client without TLS settings builds")
}

fn session_param(params: &RawPathParams) -> Option<SessionId> {
    params
        .iter()
        .find(|(k, _)| *k == "session_id")
        .and_then(|(_, v)| Uuid::parse_str(v).ok())
}

pub fn is_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED_BY)
}

/// Middleware of the session routes: serves here, or forwards to the owner once the
/// caller is admitted (routes with roles are checked before this runs).
pub async fn session_routing(
    State((st, auth)): State<(AppState, Auth)>,
    params: RawPathParams,
    req: Request,
    next: Next,
) -> Response {
    let Some(id) = session_param(&params) else {
        return next.run(req).await;
    };
    // A node alone has nowhere to forward to: no buffering, no lookups.
    if !st.node.registry().clustered() {
        return next.run(req).await;
    }
    if req.method() == Method::GET || is_forwarded(req.headers()) {
        return serve_here(&st, id, req, next).await;
    }
    let req = match admit(&st, auth, &params, req).await {
        Ok(req) => req,
        Err(refused) => return refused.into_response(),
    };
    match st.node.route(id).await {
        Ok(Route::Local) => serve_or_forward(&st, id, req, next).await,
        Ok(Route::Remote(url)) => forward(&st, id, url, req, next).await,
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Checks the credentials of routes whose handlers check them (the agent's token, the
/// public routes' token), so an unauthenticated request costs no registry lookup and is
/// never forwarded. The handler (here or on the owner) checks them again.
async fn admit(
    st: &AppState,
    auth: Auth,
    params: &RawPathParams,
    req: Request,
) -> Result<Request, ApiError> {
    match auth {
        Auth::Agent => {
            let agent = params
                .iter()
                .find(|(k, _)| *k == "agent_id")
                .map_or("", |(_, v)| v);
            let agent = parse_id(agent, "agent")?;
            agent_auth(st, req.headers(), query_token(req.uri()), agent).await?;
            Ok(req)
        }
        Auth::Public => {
            // The agent the caller names is in the body (feedback): read it, bounded.
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, st.limits.max_body_bytes)
                .await
                .map_err(|_| ApiError::too_large("request body is too large"))?;
            let agent = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v.get("agent_id")
                        .and_then(|a| a.as_str())
                        .map(str::to_string)
                });
            let agent = agent.map(|a| parse_id(&a, "agent")).transpose()?;
            public_auth(st, &parts.headers, agent).await?;
            Ok(Request::from_parts(parts, Body::from(body)))
        }
        Auth::Visitor => {
            // The origin layer found the widget; the token must be one of its visitors'.
            let (mut parts, body) = req.into_parts();
            super::widget::Visitor::from_request_parts(&mut parts, st).await?;
            Ok(Request::from_parts(parts, body))
        }
        Auth::None
        | Auth::Roles(_)
        | Auth::Profile
        | Auth::Super
        | Auth::NodeAdmin
        | Auth::Widget => Ok(req),
    }
}

/// Serves here; if another node won the session meanwhile (two nodes saw it unowned at
/// once, or this node's claim was fenced), sends the request on to the winner, so the
/// caller never sees the race.
async fn serve_or_forward(st: &AppState, id: SessionId, req: Request, next: Next) -> Response {
    let (parts, body, again) = match keep_whole(st, req).await {
        Ok(kept) => kept,
        Err(too_large) => return too_large,
    };
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    if !response.headers().contains_key(SESSION_MOVED_HEADER) {
        return response;
    }
    let owner = match response.extensions().get::<MovedTo>() {
        Some(MovedTo(url)) => Some(Arc::from(url.as_str())),
        None => match st.node.route(id).await {
            Ok(Route::Remote(url)) => Some(url),
            _ => None,
        },
    };
    match owner {
        Some(url) => {
            st.node.remember_owner(id, &url);
            send_to_owner(st, id, url, again).await.unwrap_or(response)
        }
        None => response,
    }
}

/// A request kept whole, so it can be sent (again) to another node.
struct Outgoing {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: axum::body::Bytes,
}

/// Reads the request's body (up to the body limit), keeping the request to serve here and
/// a copy to send to another node.
async fn keep_whole(
    st: &AppState,
    req: Request,
) -> Result<(axum::http::request::Parts, axum::body::Bytes, Outgoing), Response> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, st.limits.max_body_bytes)
        .await
        .map_err(|_| ApiError::too_large("request body is too large").into_response())?;
    let out = Outgoing {
        method: parts.method.clone(),
        path: parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    Ok((parts, body, out))
}

async fn serve_here(st: &AppState, id: SessionId, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    // Lost a race for the session: the caller retries, and the retry goes straight to
    // the owner.
    if let Some(MovedTo(url)) = response.extensions().get::<MovedTo>() {
        st.node.remember_owner(id, url);
    }
    response
}

/// Headers that belong to one connection, not to the request.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

async fn forward(
    st: &AppState,
    id: SessionId,
    owner: Arc<str>,
    req: Request,
    next: Next,
) -> Response {
    // Kept whole, so the request can be sent again if the owner turns out to be gone.
    let (parts, body, out) = match keep_whole(st, req).await {
        Ok(kept) => kept,
        Err(too_large) => return too_large,
    };
    match send_to_owner(st, id, owner, out).await {
        Ok(response) => response,
        // The session is free now: serve it here.
        Err(()) => serve_here(st, id, Request::from_parts(parts, Body::from(body)), next).await,
    }
}

/// Sends the request to the session's owner, following the session if it moves and
/// waiting out an owner that stopped answering until its lease lapses. Err: no other node
/// owns the session any more, so this node should serve it.
async fn send_to_owner(
    st: &AppState,
    id: SessionId,
    mut owner: Arc<str>,
    out: Outgoing,
) -> Result<Response, ()> {
    let node_id = HeaderValue::from_str(&st.node.registry().node().id)
        .unwrap_or_else(|_| HeaderValue::from_static("node"));
    let deadline = Instant::now() + st.node.registry().lease_ttl() + RETRY_BEYOND_LEASE;
    loop {
        let mut rb = st
            .forwarder
            .request(out.method.clone(), format!("{owner}{}", out.path))
            .body(out.body.clone());
        for (k, v) in out.headers.iter().filter(|(k, _)| !hop_by_hop(k)) {
            rb = rb.header(k, v);
        }
        RegistryStats::bump(&st.node.registry().stats().forwards);
        match rb.header(FORWARDED_BY, node_id.clone()).send().await {
            Ok(r) if r.headers().contains_key(SESSION_MOVED_HEADER) => {
                tracing::debug!(session = %id, %owner, "owner no longer has the session");
            }
            Ok(r) => return Ok(relay(r)),
            Err(e) if e.is_connect() => {
                tracing::debug!(session = %id, %owner, error = %e, "owner unreachable");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => {
                st.node.forget_owner(id);
                return Ok(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "owner_failed",
                    format!("the node that owns the session failed while answering ({e}); retry, with an Idempotency-Key so a committed turn is not run twice"),
                )
                .into_response());
            }
        }
        st.node.forget_owner(id);
        if Instant::now() > deadline {
            return Ok(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "owner_unreachable",
                "the node that owns the session does not answer; retry",
            )
            .into_response());
        }
        match st.node.route(id).await {
            Ok(Route::Remote(url)) => owner = url,
            Ok(Route::Local) => return Err(()),
            Err(e) => return Ok(ApiError::from(e).into_response()),
        }
    }
}

/// The owner's response, streamed to the caller.
fn relay(r: reqwest::Response) -> Response {
    let mut out = Response::builder().status(r.status());
    if let Some(h) = out.headers_mut() {
        for (k, v) in r.headers().iter().filter(|(k, _)| !hop_by_hop(k)) {
            h.append(k, v.clone());
        }
    }
    out.body(Body::from_stream(r.bytes_stream()))
        .unwrap_or_else(|_| {
            (
                StatusCode::BAD_GATEWAY,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"error":{"code":"owner_failed","message":"unreadable answer from the owning node"}}"#,
            )
                .into_response()
        })
}
