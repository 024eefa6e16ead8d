//! WebSockets: a session's live stream (and a way to chat on it), and a customer's
//! conversation events.

use std::sync::Arc;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use parley_actors::events::SessionEvent;
use parley_actors::session::TurnRequest;
use parley_actors::{NodeError, Route};
use parley_engine::model::{AgentId, SessionId};
use parley_engine::registry::RegistryStats;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use super::chat::{check_idempotency_key, check_message};
use super::error::{ApiError, ApiResult};
use super::extract::{
    agent_auth, bearer, log_reader, parse_id, query_token, AgentCaller, ClientAddress,
    WS_BEARER_PROTOCOL,
};
use super::forward;
use super::AppState;

/// Initial read buffer of a socket (it grows for larger messages). tungstenite's default of
/// 128 KiB made each open socket cost about 150 KiB of server memory (measured).
const WS_READ_BUFFER: usize = 4 * 1024;

/// Customer messages of one socket queued or in progress at most: one socket's turns run
/// one after another, in the order sent; past this the socket is not read until a turn
/// ends (TCP pushes back on the client).
const WS_TURNS_IN_FLIGHT: usize = 4;

/// Largest frame a session socket takes: a message of `max_message_chars` characters
/// (4 bytes each at most) with its JSON envelope and idempotency key.
fn session_frame_limit(max_message_chars: usize) -> usize {
    max_message_chars.saturating_mul(4) + 4096
}

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
    agent_id: Option<String>,
}

pub async fn session_ws(
    State(st): State<AppState>,
    caller: AgentCaller,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let (agent, session) = (caller.agent, caller.session()?);
    if !forward::is_forwarded(&headers) {
        st.opens.take(agent, address)?;
    }
    st.node.session(agent, session).await?;
    serve_session_socket(st, agent, session, &headers, &uri, ws, Arc::new(to_text)).await
}

/// How a socket writes a session event as a frame.
pub type Render = Arc<dyn Fn(&SessionEvent) -> WsMessage + Send + Sync>;

/// Serves a session's socket for a caller already checked: here, or through the node
/// that owns the session.
pub async fn serve_session_socket(
    st: AppState,
    agent: AgentId,
    session: SessionId,
    headers: &HeaderMap,
    uri: &Uri,
    ws: WebSocketUpgrade,
    render: Render,
) -> ApiResult<Response> {
    let forwarded = forward::is_forwarded(headers);
    if !forwarded {
        if let Route::Remote(owner) = st.node.route(session).await? {
            return proxy(&st, session, &owner, uri, headers, ws).await;
        }
    }
    // In a cluster the socket keeps the session resident (and claimed) here, so turns sent
    // to any node reach this node and their events reach the socket. A node alone runs
    // every turn itself: the actor starts with the next turn, and an idle socket holds none.
    if st.node.registry().clustered() {
        match st.node.activate_session(session).await {
            Ok(()) => {}
            Err(NodeError::Moved(Some(owner))) if !forwarded => {
                return proxy(&st, session, &owner, uri, headers, ws).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Subscribe before upgrading so nothing published after this answer is missed.
    let events = st.node.events().subscribe_session(session);
    let limit = session_frame_limit(st.limits.max_message_chars);
    let ws = ws
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(WS_READ_BUFFER)
        .protocols([WS_BEARER_PROTOCOL]);
    Ok(ws.on_upgrade(move |socket| async move {
        session_socket(&st, agent, session, socket, events, render).await;
        st.node.events().unsubscribe_session(session);
    }))
}

/// What a client may send on the session socket: `{"type":"message","message":"…"}`
/// (or just the text).
#[derive(Debug, Deserialize)]
struct ClientMessage {
    message: String,
    #[serde(default)]
    idempotency_key: Option<String>,
}

pub fn to_text<T: Serialize + ?Sized>(v: &T) -> WsMessage {
    WsMessage::Text(serde_json::to_string(v).unwrap_or_default().into())
}

/// A customer message from the socket, checked as the REST route checks it.
fn client_turn(st: &AppState, agent: AgentId, text: &str) -> ApiResult<TurnRequest> {
    let cm = serde_json::from_str::<ClientMessage>(text).or_else(|_| {
        if text.trim_start().starts_with('{') {
            Err(ApiError::invalid(
                "send {\"type\":\"message\",\"message\":\"…\"} or plain text",
            ))
        } else {
            Ok(ClientMessage {
                message: text.to_string(),
                idempotency_key: None,
            })
        }
    })?;
    check_message(&cm.message, st.limits.max_message_chars, false)?;
    if let Some(k) = &cm.idempotency_key {
        check_idempotency_key(k)?;
    }
    Ok(TurnRequest {
        agent_id: agent,
        text: cm.message,
        attachments: Vec::new(),
        idempotency_key: cm.idempotency_key,
        new_key: false,
    })
}

/// A socket's turns: one worker runs them in order and their replies arrive as events,
/// so the socket keeps streaming meanwhile. Started with the socket's first message, so
/// an idle socket holds no task and no queues.
struct Turns {
    queue: mpsc::Sender<TurnRequest>,
    /// Turn errors come back here so they interleave with events in order.
    errors: mpsc::UnboundedReceiver<ApiError>,
    worker: tokio::task::JoinHandle<()>,
}

impl Turns {
    fn start(st: &AppState, session: SessionId) -> Turns {
        let (err_tx, errors) = mpsc::unbounded_channel::<ApiError>();
        let (queue, mut turn_rx) = mpsc::channel::<TurnRequest>(WS_TURNS_IN_FLIGHT);
        let node = st.node.clone();
        let worker = tokio::spawn(async move {
            while let Some(req) = turn_rx.recv().await {
                if let Err(e) = node.turn(session, req).await {
                    let _ = err_tx.send(e.into());
                }
            }
        });
        Turns {
            queue,
            errors,
            worker,
        }
    }
}

/// The next turn error, if the socket has turns at all.
async fn next_error(turns: &mut Option<Turns>) -> ApiError {
    match turns {
        Some(t) => match t.errors.recv().await {
            Some(e) => e,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

fn error_frame(e: &ApiError) -> WsMessage {
    to_text(
        &json!({"type": "error", "error": {"code": e.code, "message": e.message, "status": e.status.as_u16()}}),
    )
}

async fn session_socket(
    st: &AppState,
    agent: AgentId,
    session: SessionId,
    socket: WebSocket,
    mut events: broadcast::Receiver<Arc<SessionEvent>>,
    render: Render,
) {
    use futures::{SinkExt, StreamExt};
    let (mut tx, mut rx) = socket.split();
    let mut turns: Option<Turns> = None;
    loop {
        // Read only while the worker can take another turn.
        let can_take = turns.as_ref().is_none_or(|t| t.queue.capacity() > 0);
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) => {
                    let closing = matches!(*ev, SessionEvent::Close { .. });
                    if tx.send(render(&ev)).await.is_err() || closing {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let lagged = json!({"type": "error", "error": {"code": "lagged", "message": format!("{n} events were dropped; fetch the session's messages")}});
                    if tx.send(to_text(&lagged)).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            e = next_error(&mut turns) => {
                if tx.send(error_frame(&e)).await.is_err() {
                    break;
                }
            }
            msg = rx.next(), if can_take => match msg {
                Some(Ok(WsMessage::Text(t))) => match client_turn(st, agent, &t) {
                    Ok(req) => {
                        let t = turns.get_or_insert_with(|| Turns::start(st, session));
                        if t.queue.try_send(req).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        if tx.send(error_frame(&e)).await.is_err() {
                            break;
                        }
                    }
                },
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    // Turns already accepted still run to their commit; their answers stay in the log.
    if let Some(t) = turns {
        drop(t.queue);
        let _ = t.worker.await;
    }
}

/// Serves the socket through the node that owns the session: frames are relayed both
/// ways until either side closes.
async fn proxy(
    st: &AppState,
    session: SessionId,
    owner: &str,
    uri: &Uri,
    headers: &HeaderMap,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let target = format!(
        "{}{}",
        owner.replacen("http", "ws", 1),
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut request = target
        .into_client_request()
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "owner_failed", e.to_string()))?;
    // The owner reads the credential from the header, whichever way the client sent it.
    if let Some(auth) = bearer(headers, query_token(uri))
        .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
    {
        request.headers_mut().insert(header::AUTHORIZATION, auth);
    }
    // The owner checks a widget socket's page origin as this node did.
    if let Some(origin) = headers.get(header::ORIGIN) {
        request.headers_mut().insert(header::ORIGIN, origin.clone());
    }
    let me = HeaderValue::from_str(&st.node.registry().node().id)
        .unwrap_or_else(|_| HeaderValue::from_static("node"));
    request.headers_mut().insert(forward::FORWARDED_BY, me);
    let (upstream, _) =
        match tokio_tungstenite::connect_async_with_config(request, None, true).await {
            Ok(c) => c,
            Err(e) => {
                st.node.forget_owner(session);
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "owner_unreachable",
                    format!("the node that owns the session does not answer ({e}); retry"),
                ));
            }
        };
    RegistryStats::bump(&st.node.registry().stats().forwards);
    let limit = session_frame_limit(st.limits.max_message_chars);
    let ws = ws
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(WS_READ_BUFFER)
        .protocols([WS_BEARER_PROTOCOL]);
    Ok(ws.on_upgrade(move |socket| relay(socket, upstream)))
}

async fn relay<S>(socket: WebSocket, upstream: tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Up;
    let (mut down_tx, mut down_rx) = socket.split();
    let (mut up_tx, mut up_rx) = upstream.split();
    loop {
        tokio::select! {
            m = down_rx.next() => {
                let m = match m {
                    Some(Ok(WsMessage::Text(t))) => Up::text(t.as_str()),
                    Some(Ok(WsMessage::Binary(b))) => Up::binary(b),
                    Some(Ok(WsMessage::Ping(p))) => Up::Ping(p),
                    Some(Ok(WsMessage::Pong(p))) => Up::Pong(p),
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                };
                if up_tx.send(m).await.is_err() {
                    break;
                }
            }
            m = up_rx.next() => {
                let m = match m {
                    Some(Ok(Up::Text(t))) => WsMessage::Text(t.as_str().into()),
                    Some(Ok(Up::Binary(b))) => WsMessage::Binary(b),
                    Some(Ok(Up::Ping(p))) => WsMessage::Ping(p),
                    Some(Ok(Up::Pong(p))) => WsMessage::Pong(p),
                    Some(Ok(Up::Frame(_))) => continue,
                    Some(Ok(Up::Close(_))) | None | Some(Err(_)) => break,
                };
                if down_tx.send(m).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = up_tx.close().await;
    let _ = down_tx.close().await;
}

pub async fn user_ws(
    State(st): State<AppState>,
    Path(user_id): Path<String>,
    Query(q): Query<WsQuery>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    // An agent's token hears only that agent's conversations with the customer; the
    // tenant's log readers hear all of them.
    let (tenant, only_agent) = match q.agent_id.as_deref() {
        Some(a) => {
            let agent = parse_id(a, "agent")?;
            let tenant = agent_auth(&st, &headers, q.token.as_deref(), agent).await?;
            (tenant, Some(agent))
        }
        None => {
            let key = bearer(&headers, q.token.as_deref()).ok_or_else(ApiError::unauthorized)?;
            (log_reader(&st, &key).await?, None)
        }
    };
    st.opens.take(only_agent.unwrap_or(tenant), address)?;
    let mut events = st.node.events().subscribe_user(tenant, &user_id);
    // Customers only listen here; anything they send is ignored, so keep it small.
    let ws = ws
        .max_message_size(64 * 1024)
        .read_buffer_size(WS_READ_BUFFER)
        .protocols([WS_BEARER_PROTOCOL]);
    Ok(ws.on_upgrade(move |mut socket| async move {
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Ok(ev) if only_agent.is_some_and(|a| ev.agent_id() != Some(a)) => {}
                    Ok(ev) => if socket.send(to_text(&*ev)).await.is_err() { break },
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
        st.node.events().unsubscribe_user(tenant, &user_id);
    }))
}
