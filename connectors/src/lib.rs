//! Channel connectors, one module per platform behind one interface ([`platform`]):
//! config schema, verify an inbound delivery and parse it into the engine's
//! [`InboundMessage`](parley_engine::inbound::InboundMessage), answer the platform, send
//! or edit messages through its API with its errors mapped. No actors here: the actor
//! layer owns queues, rate limits and retries. Every platform's base URL is configurable,
//! so tests (and self-hosted API servers) work.

pub mod discord;
pub mod error;
pub mod platform;
pub mod slack;
pub mod teams;
pub mod telegram;
pub mod text;
pub mod webhook;
pub mod whatsapp;

pub use error::{ConnectorError, ConnectorResult};
pub use platform::{
    Activation, Channel, Connect, EventSink, HookAnswer, HookBody, HookRequest, PlatformKind,
    Polled, Received, Target, Template,
};
pub use text::split_message;

use parley_engine::inbound::InboundMessage;

/// What an inbound delivery turned out to be, once verified.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// A customer's message: run a turn.
    Message(InboundMessage),
    /// The platform checks the endpoint: answer with this body (Slack url_verification
    /// challenge, WhatsApp hub.challenge, Discord PONG as JSON).
    Handshake(String),
    /// A delivery status of a message we sent (WhatsApp statuses).
    Status {
        message_id: String,
        status: String,
        error: Option<String>,
    },
    /// Verified but nothing to do (our own bot's messages, edits, unsupported types).
    Ignored(&'static str),
}

/// A message the platform accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The platform's id of the message (to edit it later).
    pub message_id: String,
}

/// Every platform parley has, in the order they are listed: a platform is its module
/// above and its line here.
fn platforms() -> Vec<&'static dyn PlatformKind> {
    vec![
        &telegram::Telegram,
        &discord::Discord,
        &slack::Slack,
        &whatsapp::Whatsapp,
        &teams::Teams,
        &webhook::Webhook,
    ]
}
