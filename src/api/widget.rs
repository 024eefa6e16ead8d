//! The web widget's routes: its settings for admins, and the public routes a page's widget
//! calls — checked against the widget's allowed origins (CORS included), rate-limited per
//! address and per visitor, and reaching only the visitor's own conversations.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Path, Query, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use parley_actors::events::SessionEvent;
use parley_actors::node::{Conversation, PublicWidget};
use parley_actors::session::{NewAttachment, TurnRequest};
use parley_engine::model::{AttachmentMeta, Message, SessionState};
use parley_engine::widget::{
    is_widget_id, normalize_origin, user_hash_matches, VisitorToken, WidgetUpdate,
    VISITOR_TOKEN_DAYS,
};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::chat::{idempotency_key, read_message};
use super::error::{ApiError, ApiResult};
use super::extract::{bearer, optional_json, parse_id, AdminAuth, ApiJson, ClientAddress};
use super::ws::{serve_session_socket, to_text, Render};
use super::{forward, AppState};

/// Attachments one visitor message may carry.
const MAX_VISITOR_ATTACHMENTS: usize = 5;
/// How long an attachment link stays good; links are issued for whole hours so a page's
/// images keep one URL (and the browser's cache) for a while.
const LINK_HOURS: i64 = 24;

fn forbidden(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, code, message)
}

// ---- Admin ----

pub async fn get_settings(
    State(st): State<AppState>,
    AdminAuth(t): AdminAuth,
    Path(agent): Path<String>,
) -> ApiResult<Json<Value>> {
    let agent = parse_id(&agent, "agent")?;
    Ok(Json(match st.node.widget_settings(t.id, agent).await? {
        Some(w) => w.admin_view(),
        None => {
            let mut v = serde_json::to_value(parley_engine::widget::WidgetSettings::default())
                .unwrap_or_default();
            v["widget_id"] = Value::Null;
            v["agent_id"] = json!(agent);
            v["identity_verification"] = json!({"enabled": false, "secret_set": false});
            v["voice"]["stt_api_key_set"] = json!(false);
            v
        }
    }))
}

pub async fn put_settings(
    State(st): State<AppState>,
    AdminAuth(t): AdminAuth,
    Path(agent): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let agent = parse_id(&agent, "agent")?;
    let update: WidgetUpdate = serde_json::from_value(body)
        .map_err(|e| ApiError::invalid(format!("invalid widget settings: {e}")))?;
    let w = st.node.put_widget(t.id, agent, update).await?;
    Ok(Json(w.admin_view()))
}

// ---- The page's origin ----

/// The widget a public request names, found and admitted by [`check_origin`].
#[derive(Clone)]
pub struct WidgetCtx(pub Arc<PublicWidget>);

impl FromRequestParts<AppState> for WidgetCtx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<WidgetCtx>()
            .cloned()
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "widget not found"))
    }
}

fn cors_headers(headers: &mut HeaderMap, origin: &HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("retry-after, idempotent-replayed"),
    );
}

/// Layer of the widget's public routes: the widget must exist and be enabled, and the
/// page's `Origin` must be one it allows (403 otherwise). Preflights are answered only
/// for allowed origins. Refusals carry the page's origin in CORS headers so the widget can
/// read why and say so; they reveal nothing a page could not see anyway.
pub async fn check_origin(
    State(st): State<AppState>,
    params: RawPathParams,
    ClientAddress(address): ClientAddress,
    mut req: Request,
    next: Next,
) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let own_page = own_origins(req.headers());
    let preflight = req.method() == Method::OPTIONS;
    let forwarded = forward::is_forwarded(req.headers());
    let admitted = async {
        let id = params
            .iter()
            .find(|(k, _)| *k == "widget_id")
            .map_or("", |(_, v)| v);
        if !is_widget_id(id) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "widget not found",
            ));
        }
        if !forwarded {
            st.visitor_limits.take_address(address)?;
        }
        let widget = st.node.public_widget(id).await?;
        let allowed = match origin.as_ref() {
            Some(o) => o.to_str().is_ok_and(|o| widget.record.allows_origin(o)),
            None => own_page.iter().any(|o| widget.record.allows_origin(o)),
        };
        if !allowed {
            return Err(forbidden(
                "origin_not_allowed",
                "this page's origin may not use the widget (allowed_origins)",
            ));
        }
        if !widget.record.settings.enabled {
            return Err(forbidden("widget_disabled", "the widget is disabled"));
        }
        Ok(widget)
    }
    .await;
    let mut response = match admitted {
        Ok(_) if preflight => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type, idempotency-key"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            r
        }
        Ok(widget) => {
            req.extensions_mut().insert(WidgetCtx(widget));
            next.run(req).await
        }
        // A refused preflight gets no CORS headers: the browser then sends nothing.
        Err(e) if preflight => return e.into_response(),
        Err(e) => e.into_response(),
    };
    if let Some(o) = &origin {
        cors_headers(response.headers_mut(), o);
    }
    response
}

/// The public subset of the settings: how to draw the widget.
pub async fn config(WidgetCtx(w): WidgetCtx) -> Json<Value> {
    Json(
        w.record
            .public_view(&w.agent_name, w.agent_greeting.as_deref()),
    )
}

/// Browsers send no `Origin` on a same-origin GET: a page served by parley itself (the
/// demo page) is then recognised by `Sec-Fetch-Site`, which pages cannot set, and the
/// `Host` it was loaded from. Anything else without an `Origin` is no page at all.
fn own_origins(headers: &HeaderMap) -> Vec<String> {
    let same_origin = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"same-origin");
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) if same_origin => ["http", "https"]
            .iter()
            .filter_map(|scheme| normalize_origin(&format!("{scheme}://{host}")).ok())
            .collect(),
        _ => Vec::new(),
    }
}

// ---- Visitors ----

/// A request with a valid visitor token of the widget it names.
pub struct Visitor {
    pub widget: Arc<PublicWidget>,
    pub token: VisitorToken,
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        let WidgetCtx(widget) = WidgetCtx::from_request_parts(parts, st).await?;
        let raw = bearer(&parts.headers, None).ok_or_else(ApiError::unauthorized)?;
        let token = st
            .visitors
            .check(&raw, Utc::now())
            .filter(|t| {
                t.widget_id == widget.record.widget_id && t.agent_id == widget.record.agent_id
            })
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Visitor { widget, token })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    token: Option<String>,
    user: Option<HostUser>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostUser {
    id: String,
    hash: Option<String>,
}

fn anonymous_id() -> String {
    format!("wv_{}", Uuid::new_v4().simple())
}

fn issue(
    st: &AppState,
    w: &PublicWidget,
    user_id: String,
    verified: bool,
) -> (String, VisitorToken) {
    let token = VisitorToken {
        widget_id: w.record.widget_id.clone(),
        agent_id: w.record.agent_id,
        user_id,
        verified,
        expires: (Utc::now() + chrono::Duration::days(VISITOR_TOKEN_DAYS)).timestamp(),
    };
    (st.visitors.issue(&token), token)
}

/// Starts or resumes a visitor: the stored token's, a verified host user's, or a new
/// anonymous one; answers a fresh token and the newest conversation.
pub async fn start(
    State(st): State<AppState>,
    WidgetCtx(w): WidgetCtx,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body: StartBody = optional_json(&body)?;
    let now = Utc::now();
    let resumed = body
        .token
        .as_deref()
        .and_then(|t| st.visitors.check(t, now))
        .filter(|t| t.widget_id == w.record.widget_id && t.agent_id == w.record.agent_id);
    let mut verified_user = None;
    if let Some(user) = &body.user {
        if user.id.trim().is_empty() || user.id.len() > 256 {
            return Err(ApiError::invalid("user.id: 1 to 256 characters"));
        }
        // Without identity verification a page's user id is only a name: the visitor
        // stays anonymous and bound to this browser.
        if w.record.settings.identity_verification {
            let secret = st
                .node
                .widget_identity_secret(&w.record)?
                .unwrap_or_default();
            let ok = user
                .hash
                .as_deref()
                .is_some_and(|h| !secret.is_empty() && user_hash_matches(&secret, &user.id, h));
            if !ok {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "identity_invalid",
                    "user.hash is not HMAC-SHA256(secret, user.id)",
                ));
            }
            verified_user = Some(user.id.clone());
        }
    }
    let (raw, token) = match (verified_user, resumed) {
        (Some(id), _) => issue(&st, &w, id, true),
        (None, Some(t)) => issue(&st, &w, t.user_id, t.verified),
        (None, None) => issue(&st, &w, anonymous_id(), false),
    };
    let latest = st.node.visitor_latest(&w.record, &token.user_id).await?;
    Ok(Json(json!({
        "token": raw,
        "visitor": {"id": token.user_id, "verified": token.verified},
        "conversation": latest.map(|c| conversation_json(&st, &w, &c)),
    })))
}

/// The customer fields of a new conversation (the page's `setUser` name and e-mail).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConversation {
    name: Option<String>,
    email: Option<String>,
}

pub async fn new_conversation(
    State(st): State<AppState>,
    v: Visitor,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let body: NewConversation = optional_json(&body)?;
    st.visitor_limits
        .take_visitor(&v.widget.record.widget_id, &v.token.user_id)?;
    let c = st
        .node
        .visitor_start(&v.widget.record, &v.token.user_id, body.name, body.email)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(conversation_json(&st, &v.widget, &c)),
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct AfterQuery {
    after: Option<i64>,
}

fn session_param(params: &RawPathParams) -> ApiResult<Uuid> {
    let raw = params
        .iter()
        .find(|(k, _)| *k == "session_id")
        .map_or("", |(_, v)| v);
    parse_id(raw, "conversation")
}

pub async fn conversation(
    State(st): State<AppState>,
    v: Visitor,
    params: RawPathParams,
    Query(q): Query<AfterQuery>,
) -> ApiResult<Json<Value>> {
    let c = st
        .node
        .visitor_conversation(
            &v.widget.record,
            &v.token.user_id,
            session_param(&params)?,
            q.after.unwrap_or(0),
        )
        .await?;
    Ok(Json(conversation_json(&st, &v.widget, &c)))
}

/// Whether `bytes` start like the image type they claim (a page cannot pass a script off
/// as a picture the widget then shows).
fn looks_like(content_type: &str, bytes: &[u8]) -> bool {
    match content_type {
        "image/png" => bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "image/jpeg" => bytes.starts_with(&[0xff, 0xd8, 0xff]),
        "image/gif" => bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a"),
        "image/webp" => bytes.len() > 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP",
        _ => !content_type.starts_with("image/"),
    }
}

fn check_attachments(w: &PublicWidget, attachments: &[NewAttachment]) -> ApiResult<()> {
    if attachments.is_empty() {
        return Ok(());
    }
    let settings = &w.record.settings.attachments;
    if !settings.enabled {
        return Err(ApiError::invalid("attachments: this widget takes none"));
    }
    if attachments.len() > MAX_VISITOR_ATTACHMENTS {
        return Err(ApiError::invalid(format!(
            "attachments: at most {MAX_VISITOR_ATTACHMENTS} per message"
        )));
    }
    for a in attachments {
        if a.bytes.len() as u64 > settings.max_bytes {
            return Err(ApiError::too_large(format!(
                "attachments: {:?} is {} bytes, at most {} allowed",
                a.filename,
                a.bytes.len(),
                settings.max_bytes
            )));
        }
        if !looks_like(&a.content_type, &a.bytes) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("attachments: {:?} is not a {}", a.filename, a.content_type),
            ));
        }
    }
    Ok(())
}

pub async fn send(
    State(st): State<AppState>,
    v: Visitor,
    params: RawPathParams,
    req: Request,
) -> ApiResult<Response> {
    let session = session_param(&params)?;
    st.visitor_limits
        .take_visitor(&v.widget.record.widget_id, &v.token.user_id)?;
    let idempotency_key = idempotency_key(req.headers())?;
    let (mut text, attachments) = read_message(&st, req).await?;
    check_attachments(&v.widget, &attachments)?;
    st.node
        .visitor_session(&v.widget.record, &v.token.user_id, session)
        .await?;
    // A recording with no text: its transcript becomes the message, the audio stays
    // attached.
    if text.trim().is_empty() {
        if let Some(audio) = attachments
            .iter()
            .find(|a| a.content_type.starts_with("audio/"))
        {
            text = st
                .node
                .transcribe(
                    &v.widget.record,
                    &audio.filename,
                    &audio.content_type,
                    audio.bytes.clone(),
                )
                .await?;
        }
    }
    let reply = st
        .node
        .turn(
            session,
            TurnRequest {
                agent_id: v.widget.record.agent_id,
                text,
                attachments,
                idempotency_key,
                new_key: false,
            },
        )
        .await?;
    let mut resp = Json(json!({
        "response": reply.response,
        "message_id": reply.ai_id,
        "human_message_id": reply.human_id,
        "session_status": reply.status,
        "mode": reply.mode,
    }))
    .into_response();
    if reply.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

pub async fn socket(
    State(st): State<AppState>,
    v: Visitor,
    params: RawPathParams,
    headers: HeaderMap,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let session = session_param(&params)?;
    if !forward::is_forwarded(&headers) {
        st.visitor_limits
            .take_visitor(&v.widget.record.widget_id, &v.token.user_id)?;
    }
    st.node
        .visitor_session(&v.widget.record, &v.token.user_id, session)
        .await?;
    let links = st.clone();
    let widget_id = v.widget.record.widget_id.clone();
    // Message frames carry their attachments' links, as the conversation route does.
    let render: Render = Arc::new(move |ev: &SessionEvent| match ev {
        SessionEvent::Message {
            attachments,
            session_id,
            id,
            role,
            text,
            timestamp,
            ..
        } => to_text(&json!({
            "type": "message",
            "session_id": session_id,
            "id": id,
            "role": role,
            "text": text,
            "timestamp": timestamp,
            "attachments": attachments.iter().map(|a| attachment_json(&links, &widget_id, a)).collect::<Vec<_>>(),
        })),
        other => to_text(other),
    });
    serve_session_socket(
        st,
        v.widget.record.agent_id,
        session,
        &headers,
        &uri,
        ws,
        render,
    )
    .await
}

// ---- Attachments: capability links ----

#[derive(Debug, Deserialize)]
pub struct LinkQuery {
    exp: i64,
    sig: String,
}

fn attachment_json(st: &AppState, widget_id: &str, a: &AttachmentMeta) -> Value {
    let hour = 3600;
    let expires = (Utc::now().timestamp() / hour + 1 + LINK_HOURS) * hour;
    let sig = st.visitors.attachment_sig(widget_id, a.id, expires);
    json!({
        "id": a.id,
        "filename": a.filename,
        "content_type": a.content_type,
        "size": a.size,
        "url": format!("/widget/v1/{widget_id}/attachments/{}?exp={expires}&sig={sig}", a.id),
    })
}

/// Content types a page may show inline; anything else downloads.
const INLINE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

pub async fn attachment(
    State(st): State<AppState>,
    Path((widget_id, attachment)): Path<(String, String)>,
    Query(q): Query<LinkQuery>,
) -> ApiResult<Response> {
    let attachment = parse_id(&attachment, "attachment")?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "attachment not found");
    if !is_widget_id(&widget_id)
        || q.exp < Utc::now().timestamp()
        || !st
            .visitors
            .attachment_sig_matches(&widget_id, attachment, q.exp, &q.sig)
    {
        return Err(not_found());
    }
    let w = st.node.public_widget(&widget_id).await?;
    let (meta, bytes) = st
        .node
        .widget_attachment(&w.record, attachment)
        .await
        .map_err(|_| not_found())?;
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    let inline = INLINE_TYPES.contains(&meta.content_type.as_str());
    let ct = if inline {
        meta.content_type.as_str()
    } else {
        "application/octet-stream"
    };
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(ct).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    let safe_name: String = meta
        .filename
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(100)
        .collect();
    let disposition = format!(
        "{}; filename=\"{}\"",
        if inline { "inline" } else { "attachment" },
        if safe_name.is_empty() {
            "attachment"
        } else {
            &safe_name
        }
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    // Pages of other origins show these images.
    h.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    Ok(resp)
}

// ---- Views ----

fn message_json(st: &AppState, widget_id: &str, m: &Message) -> Value {
    json!({
        "id": m.id,
        "role": m.role.as_str(),
        "text": m.text,
        "timestamp": m.timestamp.to_rfc3339(),
        "attachments": m.attachments.iter().map(|a| attachment_json(st, widget_id, a)).collect::<Vec<_>>(),
    })
}

fn conversation_json(st: &AppState, w: &PublicWidget, c: &Conversation) -> Value {
    let s = &c.session;
    let (status, close_status) = match s.state {
        SessionState::Active => ("active", None),
        SessionState::Closed(cs) => ("closed", Some(cs.as_str())),
    };
    json!({
        "session_id": s.id,
        "status": status,
        "close_status": close_status,
        "mode": s.mode,
        "messages": c.messages.iter().map(|m| message_json(st, &w.record.widget_id, m)).collect::<Vec<_>>(),
    })
}
