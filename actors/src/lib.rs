//! parley's actor tree (ractor): the node supervisor, the persistence batcher, one actor per
//! running agent and one per live session under sharded supervisors.
//!
//! ```text
//! NodeSupervisor
//!  ├─ PersistenceActor        group-commits the writes of every session
//!  ├─ AgentSupervisor ── AgentActor(agent_id)
//!  ├─ ChannelSupervisor ── ChannelActor(connection_id)
//!  ├─ CampaignSupervisor ── CampaignActor(campaign_id) ── ParticipantActor(participant_id)
//!  └─ SessionShard(0..N) ── SessionActor(session_id)
//! ```

pub mod agents;
pub mod campaigns;
pub mod channels;
pub mod clock;
pub mod error;
pub mod events;
pub mod node;
pub mod persistence;
pub mod session;

pub use clock::Clock;
pub use error::NodeError;
pub use node::{Node, NodeConfig, Route};
