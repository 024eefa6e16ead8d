//! parley's domain core: agents and their workflows, campaign flows, knowledge retrieval,
//! LLM backends and the durable store. Nothing in this crate knows about actors.

pub mod agent;
pub mod auth;
pub mod campaign;
pub mod connection;
pub mod document;
pub mod egress;
pub mod flow;
pub mod identity;
pub mod inbound;
pub mod knowledge;
pub mod llm;
pub mod model;
pub mod rate_limits;
pub mod registry;
pub mod results;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod widget;
pub mod workflow;
