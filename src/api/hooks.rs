//! `POST /hooks/{connection_id}` (and `GET`, WhatsApp's subscription check): platform
//! deliveries. No API key: each delivery is verified by its platform's signature or
//! secret, once, on the node it reaches; customer messages whose chat's session another
//! node owns are handed to that node verified (see `relay.rs`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use parley_actors::channels::hooks::{HookAnswer, HookBody, HookRequest};

use super::error::ApiResult;
use super::extract::parse_id;
use super::relay::Handing;
use super::AppState;

pub(super) fn respond(answer: HookAnswer) -> Response {
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
    Ok(respond(st.node.receive_hook(id, req, &Handing(&st)).await))
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
    Ok(respond(st.node.receive_hook(id, req, &Handing(&st)).await))
}
