//! Sessions: one SessionActor per live session, under sharded SessionShard supervisors;
//! the [`SessionRouter`] finds (or activates) a session's actor.

mod actor;
mod router;
mod shard;

pub use actor::{
    customer_visible, Handoff, NewAttachment, SessionActor, SessionMsg, SessionPatch, TurnReply,
    TurnRequest, NO_OPERATOR_NOTICE, RETURN_NOTICE, TRANSFER_NOTICE,
};
pub use router::SessionRouter;
pub use shard::{SessionShard, ShardArgs, ShardMsg};
