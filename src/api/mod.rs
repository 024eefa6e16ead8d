//! The HTTP and WebSocket API. Every route is declared once in [`routes`], with the
//! documentation `/api/openapi.json` is built from, so the two cannot drift apart.

mod actors;
mod agents;
mod campaigns;
mod chat;
mod cluster;
mod connections;
pub mod error;
mod extract;
pub mod forward;
mod hooks;
mod observe;
mod openapi;
mod public;
mod ws;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::MethodRouter;
use axum::Router;
use parley_actors::Node;

use error::ApiError;

/// Largest CSV upload.
const MAX_UPLOAD_BYTES: usize = 4 << 30;

#[derive(Clone)]
pub struct AppState {
    pub node: Node,
    pub limits: Limits,
    /// Client for requests forwarded to the node that owns a session.
    pub forwarder: reqwest::Client,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body (multipart attachments included).
    pub max_body_bytes: usize,
    /// Longest customer message, in characters.
    pub max_message_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 10 * 1024 * 1024,
            max_message_chars: 16 * 1024,
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    /// The tenant's admin API key.
    Admin,
    /// The agent's chat API token.
    Agent,
    /// The agent's token (with `agent_id`) or the admin key.
    Public,
}

/// One documented route.
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    pub tag: &'static str,
}

macro_rules! route {
    ($m:ident, $path:literal, $handler:expr, $auth:ident, $tag:literal, $summary:literal) => {
        (
            RouteDoc {
                method: stringify!($m),
                path: $path,
                summary: $summary,
                auth: Auth::$auth,
                tag: $tag,
            },
            axum::routing::$m($handler),
        )
    };
}

/// Every route of the API with its documentation.
pub fn routes() -> Vec<(RouteDoc, MethodRouter<AppState>)> {
    vec![
        route!(post, "/api/v1/agents", agents::create, Admin, "agents", "Create an agent from its YAML or JSON definition; answers its chat API token once"),
        route!(get, "/api/v1/agents", agents::list, Admin, "agents", "List the tenant's agents"),
        route!(get, "/api/v1/agents/{agent_id}", agents::get, Admin, "agents", "An agent with its current definition (secrets redacted)"),
        route!(put, "/api/v1/agents/{agent_id}", agents::update, Admin, "agents", "Store a new version of the definition; new sessions use it at once"),
        route!(delete, "/api/v1/agents/{agent_id}", agents::delete, Admin, "agents", "Stop and delete an agent with its sessions"),
        route!(post, "/api/v1/agents/{agent_id}/start", agents::start, Admin, "agents", "Start an agent (status Running, or Error with the reason)"),
        route!(post, "/api/v1/agents/{agent_id}/stop", agents::stop, Admin, "agents", "Stop an agent"),
        route!(put, "/api/v1/agents/{agent_id}/channels", connections::set_channels, Admin, "agents", "Set the connections the agent talks on: `[{connection_id, inbound}]`; a connection takes one inbound agent at most (409)"),
        route!(get, "/api/v1/agents/{agent_id}/channels", connections::channels, Admin, "agents", "The connections the agent talks on"),
        route!(post, "/api/v1/agents/{agent_id}/token", agents::rotate_token, Admin, "agents", "Rotate the agent's chat API token; answers the new token once"),
        route!(get, "/api/v1/admin/actors", actors::list, Admin, "admin", "The node's actor tree: an actor (default the node; `parent=`) and a page of its children, filtered by `kind` and `status`"),
        route!(post, "/api/v1/admin/actors/{actor}/stop", actors::stop, Admin, "admin", "Stop one session actor now (`session:<id>`); the next request activates it again"),
        route!(post, "/api/v1/admin/actors/{actor}/restart", actors::restart, Admin, "admin", "Stop one session actor and activate it again from the store"),
        route!(post, "/api/v1/admin/sessions/passivate", actors::passivate, Admin, "admin", "Passivate idle sessions now (`idle_secs`, default 0)"),
        route!(get, "/api/v1/admin/cluster", cluster::status, Admin, "admin", "This node, the cluster's live nodes and the registry's counters"),
        route!(post, "/api/v1/connections", connections::create, Admin, "connections", "Create a platform connection (secrets are write-only)"),
        route!(get, "/api/v1/connections", connections::list, Admin, "connections", "List connections (`platform`, `status`, `q` filters) with summary counts"),
        route!(get, "/api/v1/connections/{connection_id}", connections::get, Admin, "connections", "A connection; secrets appear as `<name>_set` flags"),
        route!(patch, "/api/v1/connections/{connection_id}", connections::update, Admin, "connections", "Change a connection; secrets given are rotated, `null` removes an optional field"),
        route!(delete, "/api/v1/connections/{connection_id}", connections::delete, Admin, "connections", "Delete a connection"),
        route!(post, "/api/v1/connections/{connection_id}/test", connections::test, Admin, "connections", "Check the connection with a real call to its platform: `{ok, platform, detail | error}`"),
        route!(post, "/api/v1/connections/{connection_id}/start", connections::start, Admin, "connections", "Start the connection (Telegram setWebhook or polling, Discord command, credentials check): status Connected, or Error with the reason"),
        route!(post, "/api/v1/connections/{connection_id}/stop", connections::stop, Admin, "connections", "Stop the connection (Telegram deleteWebhook): status Disconnected"),
        route!(post, "/api/v1/connections/{connection_id}/retry", connections::retry, Admin, "connections", "Start a connection in Error or Disconnected again"),
        route!(get, "/api/v1/connections/{connection_id}/events", connections::events, Admin, "connections", "The connection's event log (deliveries, duplicates, rejections, replies, errors, status changes), newest first; `before`, `limit` page it; the newest 1000 are kept"),
        route!(post, "/api/v1/connections/{connection_id}/setup", connections::setup, Admin, "connections", "Discord: bulk-overwrite the application's slash command with the connection's handle"),
        route!(post, "/api/v1/connections/{connection_id}/templates/send", connections::send_template, Admin, "connections", "WhatsApp: send an approved template `{to, name, language, components?, phone_number_id?}` (the way to reach a customer outside the 24-hour window)"),
        route!(post, "/hooks/{connection_id}", hooks::deliver, None, "hooks", "A platform delivery, verified by the platform's signature or secret (401 otherwise); 404 unknown, 410 disabled"),
        route!(get, "/hooks/{connection_id}", hooks::verify, None, "hooks", "WhatsApp's subscription check (`hub.mode`, `hub.verify_token`, `hub.challenge`)"),
        route!(post, "/api/v1/campaigns", campaigns::create, Admin, "campaigns", "Create a campaign `{name, description?, timezone?, fields?}` (draft)"),
        route!(get, "/api/v1/campaigns", campaigns::list, Admin, "campaigns", "The tenant's campaigns"),
        route!(get, "/api/v1/campaigns/{campaign_id}", campaigns::get, Admin, "campaigns", "A campaign with its data fields (system fields listed apart)"),
        route!(patch, "/api/v1/campaigns/{campaign_id}", campaigns::update, Admin, "campaigns", "Change name, description or timezone"),
        route!(delete, "/api/v1/campaigns/{campaign_id}", campaigns::delete, Admin, "campaigns", "Delete a campaign that is not running, with its flows, participants and uploads (customer profiles stay)"),
        route!(put, "/api/v1/campaigns/{campaign_id}/fields", campaigns::set_fields, Admin, "campaigns", "Replace the data fields `[{title, name, description, type, level, import, required}]`; stored flows must still validate"),
        route!(get, "/api/v1/campaigns/{campaign_id}/flows", campaigns::list_flows, Admin, "campaigns", "The campaign's flows"),
        route!(put, "/api/v1/campaigns/{campaign_id}/flows/{flow}", campaigns::put_flow, Admin, "campaigns", "Store a flow (YAML or JSON `{nodes: [...]}`), validated against the fields with path-addressed errors; locked while the campaign runs"),
        route!(get, "/api/v1/campaigns/{campaign_id}/flows/{flow}", campaigns::get_flow, Admin, "campaigns", "A flow as written"),
        route!(delete, "/api/v1/campaigns/{campaign_id}/flows/{flow}", campaigns::delete_flow, Admin, "campaigns", "Delete a flow"),
        route!(post, "/api/v1/campaigns/{campaign_id}/flows/{flow}/activate", campaigns::activate_flow, Admin, "campaigns", "Activate a flow (not while the campaign runs)"),
        route!(post, "/api/v1/campaigns/{campaign_id}/flows/{flow}/deactivate", campaigns::deactivate_flow, Admin, "campaigns", "Deactivate a flow (not while the campaign runs)"),
        route!(post, "/api/v1/campaigns/{campaign_id}/start", campaigns::start, Admin, "campaigns", "Start the campaign: at least one active flow, all valid, flow hand-offs resolvable"),
        route!(post, "/api/v1/campaigns/{campaign_id}/stop", campaigns::stop, Admin, "campaigns", "Stop the campaign"),
        route!(post, "/api/v1/campaigns/{campaign_id}/participants", campaigns::add_participants, Admin, "campaigns", "Add or update participants `[{attributes, timezone?, object_id?}]`; answers per item"),
        route!(get, "/api/v1/campaigns/{campaign_id}/participants", campaigns::list_participants, Admin, "campaigns", "Participants with their customer profiles, status (pending, active, idle) and communications count (`name`, `status`, `external_id`, `email`, `phone`, `upload_id`, `created_from`, `created_to`, `offset`, `limit`)"),
        route!(delete, "/api/v1/campaigns/{campaign_id}/participants/{participant_id}", campaigns::delete_participant, Admin, "campaigns", "Remove a participant (its customer profile stays)"),
        route!(get, "/api/v1/campaigns/{campaign_id}/participants/{participant_id}/communications", campaigns::communications, Admin, "campaigns", "The participant's communications: name, status (Planned … Failed) with the reason, channel, agent, scheduled time, session, results"),
        route!(get, "/api/v1/campaigns/{campaign_id}/stats", campaigns::stats, Admin, "campaigns", "Participants (and those whose trigger has not run yet), communications by status and channel, passes per flow node"),
        route!(post, "/api/v1/campaigns/{campaign_id}/uploads", campaigns::upload, Admin, "campaigns", "Upload participants as CSV (multipart `file`, or a text/csv body), streamed; answers counts and bad rows with their row numbers"),
        route!(get, "/api/v1/campaigns/{campaign_id}/uploads", campaigns::uploads, Admin, "campaigns", "The campaign's uploads, newest first, with progress"),
        route!(get, "/api/v1/campaigns/{campaign_id}/uploads/{upload_id}", campaigns::get_upload, Admin, "campaigns", "One upload and its progress"),
        route!(get, "/api/v1/customers", campaigns::customers, Admin, "campaigns", "Customer profiles shared by the tenant's campaigns (`offset`, `limit`)"),
        route!(get, "/api/v1/customers/{customer_id}", campaigns::customer, Admin, "campaigns", "One customer profile"),
        route!(post, "/chatbot/{agent_id}/session", chat::create_session, Agent, "chat", "Start a session"),
        route!(get, "/chatbot/{agent_id}/session/{session_id}", chat::get_session, Agent, "chat", "Session metadata"),
        route!(put, "/chatbot/{agent_id}/session/{session_id}", chat::update_session, Agent, "chat", "Update session metadata"),
        route!(delete, "/chatbot/{agent_id}/session/{session_id}", chat::close_session, Agent, "chat", "Close the session (optional status, default completed)"),
        route!(post, "/chatbot/{agent_id}/session/{session_id}/run_v2", chat::run_v2, Agent, "chat", "Send a customer message (multipart: message, attachments; or JSON); answers after the turn is committed"),
        route!(get, "/chatbot/{agent_id}/session/{session_id}/messages", chat::messages, Agent, "chat", "The session's log in order"),
        route!(get, "/chatbot/{agent_id}/capabilities", chat::capabilities, Agent, "chat", "What the agent supports"),
        route!(get, "/chatbot/{agent_id}/ws/{session_id}", ws::session_ws, Agent, "websocket", "WebSocket: token deltas, messages, timeout and close events; send messages too"),
        route!(get, "/ws/{user_id}", ws::user_ws, Public, "websocket", "WebSocket: a customer's conversation events"),
        route!(get, "/api/v1/public/conversations", public::conversations, Public, "public", "A customer's conversations with their logs"),
        route!(get, "/api/v1/public/conversations/attachments/{attachment_id}", public::attachment, Public, "public", "Download an attachment of the customer's"),
        route!(patch, "/api/v1/public/sessions/{session_id}/logs/{log_id}", public::feedback, Public, "public", "Set the customer's reaction (GOOD, BAD, NONE) to a message"),
        route!(get, "/api/openapi.json", openapi::spec, None, "system", "This document"),
        route!(get, "/healthz", health, None, "system", "Liveness"),
        route!(get, "/readyz", observe::readyz, None, "system", "Readiness: 200 when the store and the registry answer, else 503 saying which does not"),
        route!(get, "/metrics", observe::metrics, None, "system", "Prometheus metrics (text exposition format)"),
    ]
}

async fn health() -> &'static str {
    "ok"
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

pub fn router(state: AppState) -> Router {
    let mut by_path: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for (doc, handler) in routes() {
        match by_path.iter_mut().find(|(p, _)| *p == doc.path) {
            Some((_, mr)) => *mr = std::mem::take(mr).merge(handler),
            None => by_path.push((doc.path, handler)),
        }
    }
    let mut app = Router::new();
    for (path, mr) in by_path {
        let mut mr = mr.fallback(method_not_allowed);
        if path.ends_with("/uploads") {
            // CSV uploads stream up to 4 GB; every other route keeps the body limit.
            mr = mr.layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES));
        }
        if path.contains("{session_id}") {
            mr = mr.route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                forward::session_routing,
            ));
        }
        app = app.route(path, mr);
    }
    observe::prometheus();
    app.fallback(not_found)
        .layer(axum::middleware::from_fn(observe::track))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .with_state(state)
}
