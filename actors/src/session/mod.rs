//! Sessions: one SessionActor per live session, under sharded SessionShard supervisors;
//! the [`SessionRouter`] finds (or activates) a session's actor.

mod actor;
mod router;
mod shard;

pub use actor::{NewAttachment, SessionActor, SessionMsg, SessionPatch, TurnReply, TurnRequest};
pub use router::SessionRouter;
pub use shard::{SessionShard, ShardArgs, ShardMsg};
