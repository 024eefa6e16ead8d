//! Admin API: the live actor tree of this node, and actions on one actor.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use parley_actors::node::{ActorPage, ActorQuery, ActorScope};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::page_limit;
use super::AppState;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorsQuery {
    parent: Option<String>,
    kind: Option<String>,
    status: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

const KINDS: [&str; 10] = [
    "node_supervisor",
    "persistence",
    "agent_supervisor",
    "agent",
    "channel_supervisor",
    "channel",
    "campaign_supervisor",
    "campaign",
    "session_shard",
    "session",
];

/// `?parent=shard:3&kind=session&status=running&offset=0&limit=100`
pub async fn list(
    State(st): State<AppState>,
    scope: ActorScope,
    q: Result<Query<ActorsQuery>, QueryRejection>,
) -> ApiResult<Json<ActorPage>> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    if let Some(k) = q.kind.as_deref().filter(|k| !KINDS.contains(k)) {
        return Err(ApiError::invalid(format!(
            "kind: unknown kind {k:?} (one of {})",
            KINDS.join(", ")
        )));
    }
    let limit = page_limit(q.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let page = st.node.actors(&ActorQuery {
        scope,
        parent: q.parent,
        kind: q.kind,
        status: q.status,
        offset: q.offset.unwrap_or(0),
        limit,
    })?;
    Ok(Json(page))
}

pub async fn stop(
    State(st): State<AppState>,
    scope: ActorScope,
    Path(actor): Path<String>,
) -> ApiResult<Json<Value>> {
    st.node.stop_actor(&actor, scope).await?;
    Ok(Json(json!({"actor": actor, "stopped": true})))
}

pub async fn restart(
    State(st): State<AppState>,
    scope: ActorScope,
    Path(actor): Path<String>,
) -> ApiResult<Json<Value>> {
    st.node.restart_actor(&actor, scope).await?;
    Ok(Json(json!({"actor": actor, "restarted": true})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassivateQuery {
    idle_secs: Option<u32>,
}

/// Passivates sessions idle for `idle_secs` (default 0: every idle session) now.
pub async fn passivate(
    State(st): State<AppState>,
    scope: ActorScope,
    q: Result<Query<PassivateQuery>, QueryRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let (before, after) = st
        .node
        .passivate_idle(q.idle_secs.unwrap_or(0), scope)
        .await;
    Ok((
        StatusCode::OK,
        Json(json!({"resident_before": before, "resident_after": after})),
    ))
}
