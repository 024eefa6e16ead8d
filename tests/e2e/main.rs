//! End-to-end tests: a real server on a loopback port over a real SQLite file.

mod support;

mod actors;
mod admin;
mod agent_transfer;
mod backends;
mod campaign_runs;
mod campaigns;
mod channels;
mod chat;
mod connections;
mod durability;
mod egress;
mod handoff;
mod hostile;
mod identity;
mod isolation;
mod listen;
mod llm_secrets;
mod observe;
mod openapi;
mod public;
mod websocket;
mod widget;
mod widget_browser;
