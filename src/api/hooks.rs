//! `POST /hooks/{connection_id}` (and `GET`, WhatsApp's subscription check): platform
//! deliveries. No API key: each delivery is verified by its platform's signature or
//! secret, in the node.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use parley_actors::channels::hooks::{HookAnswer, HookBody, HookRequest};
use parley_actors::Route;

use super::error::ApiResult;
use super::extract::parse_id;
use super::{forward, AppState};

fn respond(answer: HookAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match answer.body {
        HookBody::Json(v) => (status, Json(v)).into_response(),
        HookBody::Text(t) => (status, t).into_response(),
    }
}

pub async fn deliver(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let id = parse_id(&id, "connection")?;
    let req = HookRequest {
        get: false,
        headers,
        query,
        body,
    };
    // In a cluster a chat's deliveries go to the node that owns its session, where its
    // turns run in order; that node verifies the delivery again.
    if !forward::is_forwarded(&req.headers) {
        if let Some(session) = st.node.hook_session(id, &req).await {
            if let Ok(Route::Remote(owner)) = st.node.route(session).await {
                let out = forward::Outgoing {
                    method: Method::POST,
                    path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
                    headers: req.headers.clone(),
                    body: req.body.clone(),
                };
                if let Ok(response) = forward::send_to_owner(&st, session, owner, out).await {
                    return Ok(response);
                }
            }
        }
    }
    Ok(respond(st.node.receive_hook(id, req).await))
}

pub async fn verify(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let id = parse_id(&id, "connection")?;
    let req = HookRequest {
        get: true,
        headers,
        query,
        body: Bytes::new(),
    };
    Ok(respond(st.node.receive_hook(id, req).await))
}
