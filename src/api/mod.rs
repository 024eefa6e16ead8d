//! The HTTP and WebSocket API. Every route is declared once in [`routes`], with the
//! documentation `/api/openapi.json` is built from, so the two cannot drift apart.

mod actors;
mod agents;
mod campaigns;
mod chat;
mod cluster;
mod connections;
mod conversations;
pub mod error;
mod extract;
pub mod forward;
mod hooks;
mod identity;
mod observe;
pub mod open_limits;
mod openapi;
mod public;
pub mod relay;
mod widget;
mod widget_assets;
mod ws;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::MethodRouter;
use axum::Router;
use parley_actors::Node;
use parley_engine::identity::Role;

use error::ApiError;

/// Largest CSV upload.
const MAX_UPLOAD_BYTES: usize = 4 << 30;

#[derive(Clone)]
pub struct AppState {
    pub node: Node,
    pub limits: Limits,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: std::sync::Arc<[ipnet::IpNet]>,
    /// Client for requests forwarded to the node that owns a session.
    pub forwarder: reqwest::Client,
    /// What nodes authenticate the deliveries they hand each other with.
    pub node_key: std::sync::Arc<relay::NodeKey>,
    /// SHA-256 of the deployment's super key, if one is set.
    pub super_key_hash: Option<String>,
    /// Rate limits on opening sessions and sockets.
    pub opens: std::sync::Arc<open_limits::OpenLimits>,
    /// Signs and checks widget visitors' tokens and attachment links.
    pub visitors: std::sync::Arc<parley_engine::widget::VisitorKeys>,
    /// Rate limits of the widget's public routes.
    pub visitor_limits: std::sync::Arc<open_limits::VisitorLimits>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body (multipart attachments included).
    pub max_body_bytes: usize,
    /// Longest customer message, in characters.
    pub max_message_chars: usize,
    /// Sessions and sockets one credential (an agent, a tenant) may open.
    pub open_per_credential: open_limits::OpenRate,
    /// Sessions and sockets one client address may open.
    pub open_per_address: open_limits::OpenRate,
    /// Requests to the widget's public routes from one client address.
    pub widget_per_address: open_limits::OpenRate,
    /// Conversations, messages and sockets one widget visitor may start.
    pub widget_per_visitor: open_limits::OpenRate,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 10 * 1024 * 1024,
            max_message_chars: 16 * 1024,
            open_per_credential: open_limits::OpenRate {
                per_second: 50,
                burst: 500,
            },
            open_per_address: open_limits::OpenRate {
                per_second: 100,
                burst: 1000,
            },
            widget_per_address: open_limits::OpenRate {
                per_second: 20,
                burst: 200,
            },
            widget_per_visitor: open_limits::OpenRate {
                per_second: 2,
                burst: 20,
            },
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    /// Signed in with one of these roles (the tenant's admin API key counts as Admin).
    Roles(&'static [Role]),
    /// Anyone signed in, even with a temporary password still to change (sign-out,
    /// the password change, one's own profile).
    Profile,
    /// The agent's chat API token, or a signed-in user of the agent's tenant who may
    /// use the playground (admin, user, viewer).
    Agent,
    /// The agent's token (with `agent_id`), or the tenant's admin key or a signed-in
    /// admin, viewer or operator (session logs).
    Public,
    /// The deployment's super key (`--super-key`): hosting providers creating tenants.
    Super,
    /// A tenant admin, for the tenant's own actors; or the super key, for the whole node.
    NodeAdmin,
    /// A widget's public route: no credential, but the page's `Origin` must be one the
    /// widget allows.
    Widget,
    /// A widget visitor's token (and an allowed `Origin`): the visitor's own
    /// conversations with the widget's agent.
    Visitor,
}

/// The seed's role matrix, by area.
const ADMIN: Auth = Auth::Roles(&[Role::Admin]);
/// Agents' configurations, knowledge and session logs: viewers read them too.
const VIEWERS: Auth = Auth::Roles(&[Role::Admin, Role::Viewer]);
/// The agents list: whoever may pick an agent to test in the playground, too.
const PLAYGROUND: Auth = Auth::Roles(&[Role::Admin, Role::User, Role::Viewer]);
/// Campaigns and customer profiles (view): viewers and operators read them.
const CAMPAIGN_READERS: Auth = Auth::Roles(&[Role::Admin, Role::Viewer, Role::Operator]);
/// Conversations (inbox, assign, resolve, send messages).
const CONVERSATIONS: Auth = Auth::Roles(&[Role::Admin, Role::Viewer, Role::Operator]);
/// One's own profile, fully signed in.
const SIGNED_IN: Auth = Auth::Roles(&Role::ALL);
const NONE: Auth = Auth::None;
const PROFILE: Auth = Auth::Profile;
const AGENT: Auth = Auth::Agent;
const PUBLIC: Auth = Auth::Public;
const SUPER: Auth = Auth::Super;
const NODE_ADMIN: Auth = Auth::NodeAdmin;
const WIDGET: Auth = Auth::Widget;
const VISITOR: Auth = Auth::Visitor;

/// Roles that may chat with an agent without its token (the playground).
pub const PLAYGROUND_ROLES: &[Role] = &[Role::Admin, Role::User, Role::Viewer];
/// Roles that may read customers' conversations without an agent's token.
pub const LOG_READER_ROLES: &[Role] = &[Role::Admin, Role::Viewer, Role::Operator];

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
                auth: $auth,
                tag: $tag,
            },
            axum::routing::$m($handler),
        )
    };
}

/// Every route of the API with its documentation.
pub fn routes() -> Vec<(RouteDoc, MethodRouter<AppState>)> {
    vec![
        route!(post, "/api/v1/agents", agents::create, ADMIN, "agents", "Create an agent from its YAML or JSON definition; answers its chat API token once"),
        route!(get, "/api/v1/agents", agents::list, PLAYGROUND, "agents", "List the tenant's agents"),
        route!(get, "/api/v1/agents/{agent_id}", agents::get, VIEWERS, "agents", "An agent with its current definition (secrets redacted)"),
        route!(put, "/api/v1/agents/{agent_id}", agents::update, ADMIN, "agents", "Store a new version of the definition; new sessions use it at once"),
        route!(delete, "/api/v1/agents/{agent_id}", agents::delete, ADMIN, "agents", "Stop and delete an agent with its sessions"),
        route!(post, "/api/v1/agents/{agent_id}/start", agents::start, ADMIN, "agents", "Start an agent (status Running, or Error with the reason)"),
        route!(post, "/api/v1/agents/{agent_id}/stop", agents::stop, ADMIN, "agents", "Stop an agent"),
        route!(put, "/api/v1/agents/{agent_id}/channels", connections::set_channels, ADMIN, "agents", "Set the connections the agent talks on: `[{connection_id, inbound}]`; a connection takes one inbound agent at most (409)"),
        route!(get, "/api/v1/agents/{agent_id}/channels", connections::channels, VIEWERS, "agents", "The connections the agent talks on"),
        route!(post, "/api/v1/agents/{agent_id}/export", agents::export, ADMIN, "agents", "Export the agent as a ZIP (definition YAML, knowledge, channel assignments) with options `{remove_sensitive_data, force_update_agent, force_update_integrations}`; secrets are sealed under a generated key, answered once in `x-parley-export-key`"),
        route!(post, "/api/v1/agents/import", agents::import, ADMIN, "agents", "Import an exported agent: multipart `file` + `secret_key` (or the ZIP as the body and the key in `x-parley-export-key`); a new agent (201, with its token), or with `force_update_agent` a new version of the one of the same name (200); answers `notes` on what was not carried over"),
        route!(post, "/api/v1/agents/{agent_id}/copy", agents::copy, ADMIN, "agents", "Copy an agent `{name?}`: secrets redacted, inbound channel assignments left with the original (see `notes`)"),
        route!(post, "/api/v1/agents/{agent_id}/token", agents::rotate_token, ADMIN, "agents", "Rotate the agent's chat API token; answers the new token once"),
        route!(post, "/api/v1/auth/login", identity::login, NONE, "identity", "Sign in `{email, password, tenant_id?}` (an address is unique per tenant; `tenant_id` picks one): a bearer token for 12 hours (with a temporary password, one that only changes it: `password_change_required`); repeated failures per account and per address answer 429 with Retry-After"),
        route!(post, "/api/v1/auth/password", identity::change_password, PROFILE, "identity", "Change one's password `{current_password, new_password}`; other sign-ins end; answers a new token"),
        route!(post, "/api/v1/auth/logout", identity::logout, PROFILE, "identity", "End this sign-in"),
        route!(get, "/api/v1/me", identity::me, PROFILE, "identity", "The caller: tenant, role and, for a signed-in user, the profile"),
        route!(patch, "/api/v1/me", identity::update_me, SIGNED_IN, "identity", "Change one's own name `{name}`"),
        route!(get, "/api/v1/users", identity::list_users, ADMIN, "identity", "The tenant's users"),
        route!(post, "/api/v1/users", identity::create_user, ADMIN, "identity", "Add a user `{name, email, role, password, schedule?}` with a temporary password (changed at the first sign-in); `schedule {days, from, to}` for operators"),
        route!(get, "/api/v1/users/{user_id}", identity::get_user, ADMIN, "identity", "One user"),
        route!(patch, "/api/v1/users/{user_id}", identity::update_user, ADMIN, "identity", "Change a user's name, e-mail, role, schedule, or set a new temporary password; the tenant keeps at least one admin (409)"),
        route!(delete, "/api/v1/users/{user_id}", identity::delete_user, ADMIN, "identity", "Remove a user (not the tenant's last admin: 409)"),
        route!(get, "/api/v1/tenant", identity::get_tenant, ADMIN, "identity", "The caller's tenant and its settings"),
        route!(patch, "/api/v1/tenant", identity::update_tenant, ADMIN, "identity", "Change the tenant's name and settings (description, phone, billing_email, country, street, zip, website, timezone)"),
        route!(post, "/api/v1/tenant/key", identity::rotate_key, ADMIN, "identity", "A new admin API key, shown once; the old one stops working"),
        route!(patch, "/api/v1/tenants/{tenant_id}", identity::set_limits, SUPER, "identity", "Set a tenant's monthly session limit `{monthly_session_limit: n | null}`; past it new sessions answer 429 until it is raised or the month ends"),
        route!(get, "/api/v1/billing/usage", identity::usage, ADMIN, "identity", "This month's sessions (tenant time zone), billable sessions (one per started 24 hours of each session), refused starts and the limit"),
        route!(post, "/api/v1/tenants", identity::create_tenant, SUPER, "identity", "Create a tenant `{name, …settings}` with the deployment's super key; answers its admin API key once"),
        route!(get, "/api/v1/admin/actors", actors::list, NODE_ADMIN, "admin", "The node's actor tree: an actor (default the node; `parent=`) and a page of its children, filtered by `kind` and `status`. A tenant admin sees a `tenant:<id>` root with the tenant's own agents, channels, campaigns and sessions; the node's own actors need the super key (403)"),
        route!(post, "/api/v1/admin/actors/{actor}/stop", actors::stop, NODE_ADMIN, "admin", "Stop one session actor now (`session:<id>`; a tenant admin: the tenant's own); the next request activates it again"),
        route!(post, "/api/v1/admin/actors/{actor}/restart", actors::restart, NODE_ADMIN, "admin", "Stop one session actor and activate it again from the store (a tenant admin: the tenant's own)"),
        route!(post, "/api/v1/admin/sessions/passivate", actors::passivate, NODE_ADMIN, "admin", "Passivate idle sessions now (`idle_secs`, default 0): a tenant admin's own, or with the super key every session of the node"),
        route!(get, "/api/v1/admin/cluster", cluster::status, ADMIN, "admin", "This node, the cluster's live nodes and the registry's counters"),
        route!(get, "/api/v1/platforms", connections::platforms, ADMIN, "connections", "Every platform a connection can be made for: `{name, fields: [{name, type, required, secret, default?, max?, values?}], rate_limits}` (what a connection form is drawn from)"),
        route!(post, "/api/v1/connections", connections::create, ADMIN, "connections", "Create a platform connection (secrets are write-only)"),
        route!(get, "/api/v1/connections", connections::list, ADMIN, "connections", "List connections (`platform`, `status`, `q` filters) with summary counts"),
        route!(get, "/api/v1/connections/{connection_id}", connections::get, ADMIN, "connections", "A connection; secrets appear as `<name>_set` flags"),
        route!(patch, "/api/v1/connections/{connection_id}", connections::update, ADMIN, "connections", "Change a connection; secrets given are rotated, `null` removes an optional field"),
        route!(delete, "/api/v1/connections/{connection_id}", connections::delete, ADMIN, "connections", "Delete a connection"),
        route!(post, "/api/v1/connections/{connection_id}/test", connections::test, ADMIN, "connections", "Check the connection with a real call to its platform: `{ok, platform, detail | error}`"),
        route!(post, "/api/v1/connections/{connection_id}/start", connections::start, ADMIN, "connections", "Start the connection (Telegram setWebhook or polling, Discord command, credentials check): status Connected, or Error with the reason"),
        route!(post, "/api/v1/connections/{connection_id}/stop", connections::stop, ADMIN, "connections", "Stop the connection (Telegram deleteWebhook): status Disconnected"),
        route!(post, "/api/v1/connections/{connection_id}/retry", connections::retry, ADMIN, "connections", "Start a connection in Error or Disconnected again"),
        route!(get, "/api/v1/connections/{connection_id}/events", connections::events, ADMIN, "connections", "The connection's event log (deliveries, duplicates, rejections, replies, errors, status changes), newest first; `before`, `limit` page it; the newest 1000 are kept"),
        route!(post, "/api/v1/connections/{connection_id}/setup", connections::setup, ADMIN, "connections", "Run the platform's set-up step again (Discord: bulk-overwrite the application's slash command with the connection's handle); 422 for platforms without one"),
        route!(post, "/api/v1/connections/{connection_id}/templates/send", connections::send_template, ADMIN, "connections", "WhatsApp: send an approved template `{to, name, language, components?, phone_number_id?}` (the way to reach a customer outside the 24-hour window)"),
        route!(post, "/hooks/{connection_id}", hooks::deliver, NONE, "hooks", "A platform delivery, verified by the platform's signature or secret (401 otherwise); 404 unknown, 410 disabled"),
        route!(get, "/hooks/{connection_id}", hooks::verify, NONE, "hooks", "WhatsApp's subscription check (`hub.mode`, `hub.verify_token`, `hub.challenge`)"),
        route!(post, "/api/v1/campaigns", campaigns::create, ADMIN, "campaigns", "Create a campaign `{name, description?, timezone?, fields?}` (draft)"),
        route!(get, "/api/v1/campaigns", campaigns::list, CAMPAIGN_READERS, "campaigns", "The tenant's campaigns"),
        route!(get, "/api/v1/campaigns/{campaign_id}", campaigns::get, CAMPAIGN_READERS, "campaigns", "A campaign with its data fields (system fields listed apart)"),
        route!(patch, "/api/v1/campaigns/{campaign_id}", campaigns::update, ADMIN, "campaigns", "Change name, description or timezone"),
        route!(delete, "/api/v1/campaigns/{campaign_id}", campaigns::delete, ADMIN, "campaigns", "Delete a campaign that is not running, with its flows, participants and uploads (customer profiles stay)"),
        route!(put, "/api/v1/campaigns/{campaign_id}/fields", campaigns::set_fields, ADMIN, "campaigns", "Replace the data fields `[{title, name, description, type, level, import, required}]`; stored flows must still validate"),
        route!(get, "/api/v1/campaigns/{campaign_id}/flows", campaigns::list_flows, CAMPAIGN_READERS, "campaigns", "The campaign's flows"),
        route!(put, "/api/v1/campaigns/{campaign_id}/flows/{flow}", campaigns::put_flow, ADMIN, "campaigns", "Store a flow (YAML or JSON `{nodes: [...]}`), validated against the fields with path-addressed errors; locked while the campaign runs"),
        route!(get, "/api/v1/campaigns/{campaign_id}/flows/{flow}", campaigns::get_flow, CAMPAIGN_READERS, "campaigns", "A flow as written"),
        route!(delete, "/api/v1/campaigns/{campaign_id}/flows/{flow}", campaigns::delete_flow, ADMIN, "campaigns", "Delete a flow"),
        route!(post, "/api/v1/campaigns/{campaign_id}/flows/{flow}/activate", campaigns::activate_flow, ADMIN, "campaigns", "Activate a flow (not while the campaign runs)"),
        route!(post, "/api/v1/campaigns/{campaign_id}/flows/{flow}/deactivate", campaigns::deactivate_flow, ADMIN, "campaigns", "Deactivate a flow (not while the campaign runs)"),
        route!(post, "/api/v1/campaigns/{campaign_id}/start", campaigns::start, ADMIN, "campaigns", "Start the campaign: at least one active flow, all valid, flow hand-offs resolvable"),
        route!(post, "/api/v1/campaigns/{campaign_id}/stop", campaigns::stop, ADMIN, "campaigns", "Stop the campaign"),
        route!(post, "/api/v1/campaigns/{campaign_id}/participants", campaigns::add_participants, ADMIN, "campaigns", "Add or update participants `[{attributes, timezone?, object_id?}]`; answers per item"),
        route!(get, "/api/v1/campaigns/{campaign_id}/participants", campaigns::list_participants, CAMPAIGN_READERS, "campaigns", "Participants with their customer profiles, status (pending, active, idle) and communications count (`name`, `status`, `external_id`, `email`, `phone`, `upload_id`, `created_from`, `created_to`, `offset`, `limit`)"),
        route!(delete, "/api/v1/campaigns/{campaign_id}/participants/{participant_id}", campaigns::delete_participant, ADMIN, "campaigns", "Remove a participant (its customer profile stays)"),
        route!(get, "/api/v1/campaigns/{campaign_id}/participants/{participant_id}/communications", campaigns::communications, CAMPAIGN_READERS, "campaigns", "The participant's communications: name, status (Planned … Failed) with the reason, channel, agent, scheduled time, session, results"),
        route!(get, "/api/v1/campaigns/{campaign_id}/stats", campaigns::stats, CAMPAIGN_READERS, "campaigns", "Participants (and those whose trigger has not run yet), communications by status and channel, passes per flow node"),
        route!(post, "/api/v1/campaigns/{campaign_id}/uploads", campaigns::upload, ADMIN, "campaigns", "Upload participants as CSV (multipart `file`, or a text/csv body), streamed; answers counts and bad rows with their row numbers"),
        route!(get, "/api/v1/campaigns/{campaign_id}/uploads", campaigns::uploads, CAMPAIGN_READERS, "campaigns", "The campaign's uploads, newest first, with progress"),
        route!(get, "/api/v1/campaigns/{campaign_id}/uploads/{upload_id}", campaigns::get_upload, CAMPAIGN_READERS, "campaigns", "One upload and its progress"),
        route!(get, "/api/v1/customers", campaigns::customers, CAMPAIGN_READERS, "campaigns", "Customer profiles shared by the tenant's campaigns (`offset`, `limit`)"),
        route!(get, "/api/v1/customers/{customer_id}", campaigns::customer, CAMPAIGN_READERS, "campaigns", "One customer profile"),
        route!(get, "/api/v1/conversations", conversations::inbox, CONVERSATIONS, "conversations", "The operators' inbox: the tenant's conversations, most recently changed first (`mode` REGULAR|OPERATOR|COPILOT, `status` active|closed, `assignee` me|none|<user id>, `offset`, `limit`)"),
        route!(get, "/api/v1/conversations/{session_id}", conversations::get, CONVERSATIONS, "conversations", "A conversation with its whole log (operator messages, notes and drafts included)"),
        route!(post, "/api/v1/conversations/{session_id}/mode", conversations::set_mode, CONVERSATIONS, "conversations", "`{mode}`: OPERATOR (a person answers; the customer is told), COPILOT (the AI drafts, a person sends), REGULAR (back to the AI)"),
        route!(post, "/api/v1/conversations/{session_id}/return", conversations::give_back, CONVERSATIONS, "conversations", "Give the conversation back to the AI (REGULAR) with its whole history"),
        route!(post, "/api/v1/conversations/{session_id}/assign", conversations::assign, CONVERSATIONS, "conversations", "`{user_id?}` (default: the caller): an operator on shift per their schedule (409 otherwise); `{unassign: true}` leaves it to nobody"),
        route!(post, "/api/v1/conversations/{session_id}/messages", conversations::send, CONVERSATIONS, "conversations", "`{text, role?}`: OPERATOR (default) goes to the customer on their channel, in order with their messages; NOTES stay internal"),
        route!(post, "/api/v1/conversations/{session_id}/resolve", conversations::resolve, CONVERSATIONS, "conversations", "Close as resolved_by_operator"),
        route!(post, "/api/v1/conversations/{session_id}/escalate", conversations::escalate, CONVERSATIONS, "conversations", "Close as escalated_by_operator"),
        route!(get, "/ws/conversations", conversations::events_ws, PUBLIC, "websocket", "WebSocket for operators (`?token=`: admin, viewer or operator): NEW_MESSAGE and MODE_CHANGED events of every conversation of the tenant"),
        route!(post, "/chatbot/{agent_id}/session", chat::create_session, AGENT, "chat", "Start a session (rate-limited per agent and per client address: 429 with Retry-After)"),
        route!(get, "/chatbot/{agent_id}/session/{session_id}", chat::get_session, AGENT, "chat", "Session metadata"),
        route!(put, "/chatbot/{agent_id}/session/{session_id}", chat::update_session, AGENT, "chat", "Update session metadata"),
        route!(delete, "/chatbot/{agent_id}/session/{session_id}", chat::close_session, AGENT, "chat", "Close the session (optional status, default completed)"),
        route!(post, "/chatbot/{agent_id}/session/{session_id}/run_v2", chat::run_v2, AGENT, "chat", "Send a customer message (multipart: message, attachments; or JSON); answers after the turn is committed"),
        route!(get, "/chatbot/{agent_id}/session/{session_id}/messages", chat::messages, AGENT, "chat", "The session's log in order"),
        route!(get, "/chatbot/{agent_id}/capabilities", chat::capabilities, AGENT, "chat", "What the agent supports"),
        route!(get, "/chatbot/{agent_id}/ws/{session_id}", ws::session_ws, AGENT, "websocket", "WebSocket: token deltas, messages, timeout and close events; send messages too"),
        route!(get, "/ws/{user_id}", ws::user_ws, PUBLIC, "websocket", "WebSocket: a customer's conversation events"),
        route!(get, "/api/v1/public/conversations", public::conversations, PUBLIC, "public", "A customer's conversations with their logs"),
        route!(get, "/api/v1/public/conversations/attachments/{attachment_id}", public::attachment, PUBLIC, "public", "Download an attachment of the customer's"),
        route!(patch, "/api/v1/public/sessions/{session_id}/logs/{log_id}", public::feedback, PUBLIC, "public", "Set the customer's reaction (GOOD, BAD, NONE) to a message"),
        route!(get, "/api/v1/agents/{agent_id}/widget", widget::get_settings, ADMIN, "widget", "The agent's web widget settings (defaults and `widget_id: null` until first saved); secrets appear as `secret_set` / `stt_api_key_set`"),
        route!(put, "/api/v1/agents/{agent_id}/widget", widget::put_settings, ADMIN, "widget", "Replace the agent's widget settings `{enabled, allowed_origins, title, subtitle, avatar_url, colors, position, mode, launcher_label, greeting, locale, rtl, placeholder, attachments{enabled, max_bytes}, voice{enabled, stt_base_url, stt_model, stt_api_key}, identity_verification{enabled, secret}}`; secrets are write-only (absent keeps, `null` removes); the first save assigns the public `widget_id`"),
        route!(get, "/widget.js", widget_assets::widget_js, NONE, "widget", "The widget script for `<script src=…/widget.js data-widget-id=… async>` (ETag, gzip)"),
        route!(get, "/widget.css", widget_assets::widget_css, NONE, "widget", "The widget's stylesheet (loaded into its shadow root)"),
        route!(get, "/widget/demo.css", widget_assets::demo_css, NONE, "widget", "The demo page's stylesheet"),
        route!(get, "/widget/demo/{widget_id}", widget_assets::demo, NONE, "widget", "A demo page with the widget in floating and embedded mode on parley's own origin (which the widget must allow)"),
        route!(get, "/widget/v1/{widget_id}/config", widget::config, WIDGET, "widget", "What the page's widget draws itself from (the public subset of the settings); the page's Origin must be allowed (403 `origin_not_allowed`), 403 `widget_disabled`"),
        route!(post, "/widget/v1/{widget_id}/visitors", widget::start, WIDGET, "widget", "Start or resume a visitor `{token?, user?: {id, name?, email?, hash?}}`: a visitor token and the visitor's newest conversation; with identity verification `hash` = hex HMAC-SHA256(secret, user.id) (401 `identity_invalid`)"),
        route!(post, "/widget/v1/{widget_id}/conversations", widget::new_conversation, VISITOR, "widget", "Open a new conversation for the visitor `{name?, email?}` (201, the greeting first); rate-limited per visitor"),
        route!(get, "/widget/v1/{widget_id}/conversations/{session_id}", widget::conversation, VISITOR, "widget", "One of the visitor's conversations with its messages after `after` (a message id)"),
        route!(post, "/widget/v1/{widget_id}/conversations/{session_id}/messages", widget::send, VISITOR, "widget", "Send a visitor message (JSON `{message}` or multipart `message`, `attachments`; an audio attachment alone is transcribed); `Idempotency-Key` honoured; answers after the turn is committed"),
        route!(get, "/widget/v1/{widget_id}/conversations/{session_id}/ws", widget::socket, VISITOR, "widget", "WebSocket of the visitor's conversation (token in the `bearer` subprotocol): deltas, messages (operators' too), timeout and close events; send messages too"),
        route!(get, "/widget/v1/{widget_id}/attachments/{attachment_id}", widget::attachment, NONE, "widget", "An attachment of a widget conversation by its signed, expiring link (as the conversation routes give it)"),
        route!(get, "/api/openapi.json", openapi::spec, NONE, "system", "This document"),
        route!(get, "/healthz", health, NONE, "system", "Liveness"),
        route!(get, "/readyz", observe::readyz, NONE, "system", "Readiness: 200 when the store and the registry answer, else 503 saying which does not"),
        route!(get, "/metrics", observe::metrics, NONE, "system", "Prometheus metrics (text exposition format)"),
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
    for (doc, mut handler) in routes() {
        if doc.path.contains("{session_id}") {
            // Inside the role check: only a caller the route admits may cost a registry
            // lookup or a forward to another node.
            handler = handler.route_layer(axum::middleware::from_fn_with_state(
                (state.clone(), doc.auth),
                forward::session_routing,
            ));
        }
        let handler = match doc.auth {
            Auth::Roles(_) | Auth::Profile | Auth::Super | Auth::NodeAdmin => handler.route_layer(
                axum::middleware::from_fn_with_state((state.clone(), doc.auth), extract::authorize),
            ),
            Auth::None | Auth::Agent | Auth::Public | Auth::Widget | Auth::Visitor => handler,
        };
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
        if path.starts_with("/widget/v1/") && !path.contains("/attachments/") {
            // Outside the method routing, so preflights (OPTIONS) meet the origin check.
            mr = mr.layer(axum::middleware::from_fn_with_state(
                state.clone(),
                widget::check_origin,
            ));
        }
        app = app.route(path, mr);
    }
    // Between nodes only: not in the API document.
    app = app.route(
        relay::PATH,
        axum::routing::post(relay::receive).fallback(method_not_allowed),
    );
    observe::prometheus();
    app.fallback(not_found)
        .layer(axum::middleware::from_fn(observe::track))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .with_state(state)
}
