//! The PersistenceActor: group commit for every session of the node.
//!
//! Sessions send their writes and wait. The actor buffers what arrives and commits it in
//! one transaction when it handles its own `Flush` message, which it queues behind the
//! writes already in its mailbox. So while one batch commits, the next one gathers: batch
//! size follows load, and an idle node commits each turn at once.

use std::sync::Arc;
use std::time::Instant;

use parley_engine::store::{Store, Write};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

pub enum PersistMsg {
    Commit(Vec<Write>, RpcReplyPort<Result<(), String>>),
    Flush,
    /// Batch statistics so far (for benchmarks and diagnostics).
    Stats(RpcReplyPort<BatchStats>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchStats {
    pub batches: u64,
    pub requests: u64,
    pub writes: u64,
    pub largest_batch: u64,
    pub commit_seconds: f64,
}

impl BatchStats {
    pub fn mean_batch(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.requests as f64 / self.batches as f64
        }
    }
}

pub struct PersistenceActor;

pub struct PersistenceArgs {
    pub store: Arc<dyn Store>,
    /// Requests per batch at most; beyond it the batch commits without waiting.
    pub max_batch: usize,
}

pub struct PersistenceState {
    store: Arc<dyn Store>,
    max_batch: usize,
    writes: Vec<Write>,
    waiters: Vec<RpcReplyPort<Result<(), String>>>,
    flush_queued: bool,
    stats: BatchStats,
}

impl PersistenceState {
    async fn flush(&mut self) {
        self.flush_queued = false;
        if self.waiters.is_empty() {
            return;
        }
        let writes = std::mem::take(&mut self.writes);
        let waiters = std::mem::take(&mut self.waiters);
        let started = Instant::now();
        let result = self.store.commit(&writes).await;
        self.stats.batches += 1;
        self.stats.requests += waiters.len() as u64;
        self.stats.writes += writes.len() as u64;
        self.stats.largest_batch = self.stats.largest_batch.max(waiters.len() as u64);
        self.stats.commit_seconds += started.elapsed().as_secs_f64();
        let result = result.map_err(|e| {
            tracing::error!(error = %e, requests = waiters.len(), "group commit failed");
            e.to_string()
        });
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

impl Actor for PersistenceActor {
    type Msg = PersistMsg;
    type State = PersistenceState;
    type Arguments = PersistenceArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(PersistenceState {
            store: args.store,
            max_batch: args.max_batch.max(1),
            writes: Vec::new(),
            waiters: Vec::new(),
            flush_queued: false,
            stats: BatchStats::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PersistMsg::Commit(writes, reply) => {
                state.writes.extend(writes);
                state.waiters.push(reply);
                if state.waiters.len() >= state.max_batch {
                    state.flush().await;
                } else if !state.flush_queued {
                    state.flush_queued = true;
                    myself.send_message(PersistMsg::Flush)?;
                }
            }
            PersistMsg::Flush => state.flush().await,
            PersistMsg::Stats(reply) => {
                let _ = reply.send(state.stats);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Whatever was accepted but not yet committed is committed before the actor goes.
        state.flush().await;
        Ok(())
    }
}
