//! The session registry: which node owns which session. A session lives in exactly one
//! actor of the whole cluster; the registry hands out that ownership. Two implementations:
//! in-process (a single node, nothing to ask) and Redis (several nodes; each node's lease is
//! a key with a TTL that its heartbeat renews, and a claim is only as good as the lease of
//! the node that holds it).
//!
//! The registry decides who may own a session; the store's epochs (see
//! [`crate::store::Epoch`]) make sure a node that lost a claim without noticing can never
//! write after its successor.

mod local;
mod redis;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde::Serialize;

pub use local::LocalRegistry;
pub use redis::{RedisRegistry, RedisRegistryConfig};

use crate::model::SessionId;

/// A node of the cluster and the base URL other nodes forward its sessions' requests to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    pub id: String,
    pub url: String,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This node owns the session now (it may have owned it before).
    Mine,
    /// Another live node owns it.
    Owned(NodeInfo),
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    Renewed,
    /// The lease had expired (the node was paused or cut off, or Redis lost its data), so
    /// other nodes may have claimed this node's sessions meanwhile.
    Lost,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    #[error("registry unavailable: {0}")]
    Unavailable(String),
}

pub type RegistryResult<T> = Result<T, RegistryError>;

/// Counts of what the registry did, for benchmarks and operators.
#[derive(Debug, Default)]
pub struct RegistryStats {
    pub claims: AtomicU64,
    /// Claims that found another live owner.
    pub claims_lost: AtomicU64,
    /// Claims that took a session over from a node whose lease had expired.
    pub takeovers: AtomicU64,
    pub lookups: AtomicU64,
    pub releases: AtomicU64,
    pub heartbeats: AtomicU64,
    /// Requests this node forwarded to a session's owner.
    pub forwards: AtomicU64,
    /// Round trips to the registry's server on behalf of sessions (claims, lookups,
    /// releases): what the turn path may cost. Heartbeats are counted apart, and listing
    /// the nodes (an admin read) not at all.
    pub commands: AtomicU64,
    pub errors: AtomicU64,
}

/// What a cluster-wide attempt counter answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptAnswer {
    Counted,
    Wait(std::time::Duration),
}

/// A copy of [`RegistryStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RegistryCounts {
    pub claims: u64,
    pub claims_lost: u64,
    pub takeovers: u64,
    pub lookups: u64,
    pub releases: u64,
    pub heartbeats: u64,
    pub forwards: u64,
    pub commands: u64,
    pub errors: u64,
}

impl RegistryStats {
    pub fn snapshot(&self) -> RegistryCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RegistryCounts {
            claims: get(&self.claims),
            claims_lost: get(&self.claims_lost),
            takeovers: get(&self.takeovers),
            lookups: get(&self.lookups),
            releases: get(&self.releases),
            heartbeats: get(&self.heartbeats),
            forwards: get(&self.forwards),
            commands: get(&self.commands),
            errors: get(&self.errors),
        }
    }

    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// This node.
    fn node(&self) -> &NodeInfo;
    /// Whether other nodes may exist (forwarding is possible at all).
    fn clustered(&self) -> bool;
    /// Registers the node (its first lease).
    async fn join(&self) -> RegistryResult<()>;
    /// Claims the session for this node unless another live node owns it.
    async fn claim(&self, session: SessionId) -> RegistryResult<Claim>;
    /// The session's owner if it is a live node other than this one.
    async fn remote_owner(&self, session: SessionId) -> RegistryResult<Option<NodeInfo>>;
    /// Gives up this node's claim (the session was passivated here).
    async fn release(&self, session: SessionId) -> RegistryResult<()>;
    /// Renews this node's lease.
    async fn heartbeat(&self) -> RegistryResult<Lease>;
    /// Whether the registry answers (readiness).
    async fn ping(&self) -> RegistryResult<()>;
    /// Leaves the cluster: every claim of this node is free at once.
    async fn leave(&self) -> RegistryResult<()>;
    /// The live nodes.
    async fn nodes(&self) -> RegistryResult<Vec<NodeInfo>>;
    /// How long a lease lasts without a heartbeat.
    fn lease_ttl(&self) -> std::time::Duration;
    fn stats(&self) -> &RegistryStats;

    // Customer events across nodes: a customer's socket (`/ws/{user_id}`) lives on one
    // node, their sessions on any. Nodes publish the customers they watch; a node that
    // produces an event for a customer watched elsewhere relays it.

    /// Replaces the set of customers (`tenant/user` keys) watched on this node: `added`
    /// since the last call, `removed` since the last call.
    async fn update_watched_users(
        &self,
        _added: &[String],
        _removed: &[String],
    ) -> RegistryResult<()> {
        Ok(())
    }
    /// Customers watched on other nodes.
    async fn users_watched_elsewhere(&self) -> RegistryResult<std::collections::HashSet<String>> {
        Ok(std::collections::HashSet::new())
    }
    /// Relays a customer's event (its JSON) to the nodes watching them.
    async fn publish_user_event(&self, _key: &str, _json: &str) -> RegistryResult<()> {
        Ok(())
    }
    // Sign-in throttling across nodes: attempts per account and per address counted in
    // one sliding window for the whole cluster.

    /// Counts attempt `id` under `key` unless `limit` attempts are already within
    /// `window`: then answers how long until the oldest leaves it. `Ok(None)` from a
    /// registry that shares nothing (the caller counts on its own).
    async fn reserve_attempt(
        &self,
        _key: &str,
        _id: &str,
        _limit: u32,
        _window: std::time::Duration,
    ) -> RegistryResult<Option<AttemptAnswer>> {
        Ok(None)
    }
    /// Takes attempt `id` back (it succeeded, or was never made).
    async fn release_attempt(&self, _key: &str, _id: &str) -> RegistryResult<()> {
        Ok(())
    }
    /// Forgets every attempt under `key`.
    async fn clear_attempts(&self, _key: &str) -> RegistryResult<()> {
        Ok(())
    }
    /// The events other nodes relay to this one, as `(key, json)`; None for a node alone.
    /// Call once: it starts the subscription.
    fn relayed_user_events(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<(String, String)>> {
        None
    }
}
