//! The operators' conversations API: the inbox, taking over from the AI and giving back,
//! assignment, operator messages and notes, resolve and escalate, and the live events
//! WebSocket.

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use parley_actors::node::Caller;
use parley_engine::model::{CloseStatus, Mode, Role, Session};
use parley_engine::store::{Assignee, ConversationQuery};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::chat::{message_json, session_json};
use super::error::{ApiError, ApiResult};
use super::extract::{
    bearer, log_reader, page_limit, parse_id, ApiJson, ClientAddress, WS_BEARER_PROTOCOL,
};
use super::AppState;

const MAX_PAGE: u64 = 500;

fn conversation_json(s: &Session) -> Value {
    let mut v = session_json(s);
    v["mode"] = json!(s.mode.as_str());
    v["assignee"] = json!(s.assignee);
    v
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxQuery {
    mode: Option<String>,
    /// `active` or `closed`.
    status: Option<String>,
    /// `me`, `none` or a user id.
    assignee: Option<String>,
    offset: Option<u64>,
    limit: Option<u64>,
}

fn parse_mode(s: &str) -> ApiResult<Mode> {
    Mode::parse(s).ok_or_else(|| {
        ApiError::invalid(format!(
            "mode: {s:?} is not one of REGULAR, OPERATOR, COPILOT"
        ))
    })
}

/// `GET /api/v1/conversations?mode=&status=&assignee=&offset=&limit=`
pub async fn inbox(
    State(st): State<AppState>,
    caller: Caller,
    q: Result<Query<InboxQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = page_limit(q.limit, 50, MAX_PAGE)?;
    let active = match q.status.as_deref() {
        None => None,
        Some("active") => Some(true),
        Some("closed") => Some(false),
        Some(s) => {
            return Err(ApiError::invalid(format!(
                "status: {s:?} is not active or closed"
            )))
        }
    };
    let assignee = match q.assignee.as_deref() {
        None => None,
        Some("none") => Some(Assignee::Nobody),
        Some("me") => Some(Assignee::User(caller.user.ok_or_else(|| {
            ApiError::invalid("assignee: `me` needs a signed-in user")
        })?)),
        Some(id) => {
            Some(Assignee::User(uuid::Uuid::parse_str(id).map_err(|_| {
                ApiError::invalid("assignee: me, none or a user id")
            })?))
        }
    };
    let query = ConversationQuery {
        mode: q.mode.as_deref().map(parse_mode).transpose()?,
        active,
        assignee,
        offset: q.offset.unwrap_or(0),
        limit,
    };
    let (page, total) = st.node.inbox(caller.tenant, &query).await?;
    Ok(Json(json!({
        "conversations": page.iter().map(conversation_json).collect::<Vec<_>>(),
        "total": total, "offset": query.offset, "limit": limit,
    })))
}

/// `GET /api/v1/conversations/{session_id}`: the conversation and its whole log.
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (s, messages) = st
        .node
        .conversation(caller.tenant, parse_id(&id, "conversation")?)
        .await?;
    let mut v = conversation_json(&s);
    v["messages"] = json!(messages.iter().map(message_json).collect::<Vec<_>>());
    Ok(Json(v))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeBody {
    mode: String,
}

pub async fn set_mode(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ModeBody>,
) -> ApiResult<Json<Value>> {
    let s = st
        .node
        .set_conversation_mode(
            caller.tenant,
            parse_id(&id, "conversation")?,
            parse_mode(&body.mode)?,
        )
        .await?;
    Ok(Json(conversation_json(&s)))
}

/// Back to the AI, with the whole history.
pub async fn give_back(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = st
        .node
        .set_conversation_mode(caller.tenant, parse_id(&id, "conversation")?, Mode::Regular)
        .await?;
    Ok(Json(conversation_json(&s)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// Default: the caller.
    user_id: Option<String>,
    #[serde(default)]
    unassign: bool,
}

pub async fn assign(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AssignBody>,
) -> ApiResult<Json<Value>> {
    let user = body
        .user_id
        .as_deref()
        .map(|u| parse_id(u, "user"))
        .transpose()?;
    let s = st
        .node
        .assign_conversation(caller, parse_id(&id, "conversation")?, user, body.unassign)
        .await?;
    Ok(Json(conversation_json(&s)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    text: String,
    /// OPERATOR (default: to the customer) or NOTES (internal).
    role: Option<String>,
}

pub async fn send(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MessageBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let role = match body.role.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("OPERATOR") => Role::Operator,
        Some("NOTES") => Role::Notes,
        Some(r) => {
            return Err(ApiError::invalid(format!(
                "role: {r:?} is not OPERATOR or NOTES"
            )))
        }
    };
    let m = st
        .node
        .operator_message(caller, parse_id(&id, "conversation")?, role, &body.text)
        .await?;
    Ok((StatusCode::CREATED, Json(message_json(&m))))
}

async fn finish(
    st: &AppState,
    caller: Caller,
    id: &str,
    status: CloseStatus,
) -> ApiResult<Json<Value>> {
    let s = st
        .node
        .finish_conversation(caller.tenant, parse_id(id, "conversation")?, status)
        .await?;
    Ok(Json(conversation_json(&s)))
}

pub async fn resolve(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    finish(&st, caller, &id, CloseStatus::ResolvedByOperator).await
}

pub async fn escalate(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    finish(&st, caller, &id, CloseStatus::EscalatedByOperator).await
}

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

/// `GET /ws/conversations`: every conversation event of the tenant, live (new messages,
/// mode and assignment changes), for operators.
pub async fn events_ws(
    State(st): State<AppState>,
    Query(q): Query<WsQuery>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let token = bearer(&headers, q.token.as_deref()).ok_or_else(ApiError::unauthorized)?;
    let tenant = log_reader(&st, &token).await?;
    st.opens.take(tenant, address)?;
    let mut events = st.node.events().subscribe_operators(tenant);
    Ok(ws
        .max_message_size(64 * 1024)
        .protocols([WS_BEARER_PROTOCOL])
        .on_upgrade(move |mut socket| async move {
            loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Ok(ev) => {
                            let text = serde_json::to_string(&*ev).unwrap_or_default();
                            if socket.send(WsMessage::Text(text.into())).await.is_err() { break }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    msg = socket.recv() => match msg {
                        Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => {}
                    },
                }
            }
            drop(events);
            st.node.events().unsubscribe_operators(tenant);
        }))
}
