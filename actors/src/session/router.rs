//! Finds a session's actor: a lock-free lookup for live sessions, activation through the
//! session's shard otherwise. A message that reaches an actor which is passivating is
//! rejected unprocessed and simply routed again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use dashmap::DashMap;
use parley_engine::model::{SessionId, TenantId};
use ractor::rpc::CallResult;
use ractor::{ActorRef, MessagingErr, RpcReplyPort};

use super::actor::SessionMsg;
use super::shard::ShardMsg;
use crate::error::{NodeError, NodeResult};

/// How often a message is re-routed after landing on a passivating actor.
const ROUTE_ATTEMPTS: usize = 5;

/// Resident sessions looked at when sampling mailbox depth, so a scrape stays cheap on a
/// node with a million sessions.
const MAILBOX_SAMPLE: usize = 10_000;

/// Counts one request as pending on its session while alive.
struct Pending<'a> {
    router: &'a SessionRouter,
    id: SessionId,
}

impl<'a> Pending<'a> {
    fn new(router: &'a SessionRouter, id: SessionId) -> Self {
        if let Some(e) = router.live.get(&id) {
            e.pending.fetch_add(1, Ordering::Relaxed);
        }
        Pending { router, id }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(e) = self.router.live.get(&self.id) {
            let _ = e
                .pending
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
}

pub(crate) struct LiveEntry {
    pub actor: ActorRef<SessionMsg>,
    /// Seconds since the router's epoch when the session was last routed to.
    pub last_used: AtomicU32,
    /// Requests sent to the actor and not answered yet: its mailbox depth (approximately:
    /// ractor does not expose the mailbox itself).
    pub pending: AtomicU32,
    /// Seconds since the router's epoch when the actor was activated.
    pub since: u32,
    /// The session's tenant, known once the actor has loaded it: tenant admins see and
    /// act on their own sessions only.
    pub tenant: OnceLock<TenantId>,
}

pub struct SessionRouter {
    epoch: Instant,
    pub(crate) live: DashMap<SessionId, LiveEntry>,
    /// Owners on other nodes seen lately, with when they were last used (seconds since
    /// `epoch`): requests for them are forwarded without asking the registry.
    remote: DashMap<SessionId, (Arc<str>, AtomicU32)>,
    shards: RwLock<Vec<ActorRef<ShardMsg>>>,
    /// What each shard reports about itself (for introspection).
    pub(crate) shard_stats: RwLock<Vec<Arc<ShardStats>>>,
    /// Restarts of sessions that are resident now (forgotten when they passivate).
    pub(crate) restarts: DashMap<SessionId, u32>,
}

/// A shard's own figures, published for introspection without asking the shard.
#[derive(Debug)]
pub struct ShardStats {
    pub children: std::sync::atomic::AtomicUsize,
    pub started: Instant,
}

impl Default for SessionRouter {
    fn default() -> Self {
        SessionRouter {
            epoch: Instant::now(),
            live: DashMap::new(),
            remote: DashMap::new(),
            shards: RwLock::new(Vec::new()),
            shard_stats: RwLock::new(Vec::new()),
            restarts: DashMap::new(),
        }
    }
}

impl SessionRouter {
    pub(crate) fn now_secs(&self) -> u32 {
        self.epoch.elapsed().as_secs() as u32
    }

    pub(crate) fn set_shards(&self, shards: Vec<ActorRef<ShardMsg>>) {
        *self.shards.write().unwrap_or_else(|e| e.into_inner()) = shards;
    }

    pub(crate) fn set_shard_stats(&self, index: usize, stats: Arc<ShardStats>) {
        let mut all = self.shard_stats.write().unwrap_or_else(|e| e.into_inner());
        if all.len() <= index {
            all.resize_with(index + 1, || stats.clone());
        }
        all[index] = stats;
    }

    pub(crate) fn shard_stats(&self, index: usize) -> Option<Arc<ShardStats>> {
        self.shard_stats
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(index)
            .cloned()
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shards.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub(crate) fn replace_shard(&self, index: usize, shard: ActorRef<ShardMsg>) {
        if let Some(s) = self
            .shards
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(index)
        {
            *s = shard;
        }
    }

    pub(crate) fn shard(&self, index: usize) -> Option<ActorRef<ShardMsg>> {
        self.shards
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(index)
            .cloned()
    }

    pub fn shard_of(&self, id: &SessionId) -> usize {
        let n = self
            .shards
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
            .max(1);
        (id.as_u128() as u64 % n as u64) as usize
    }

    /// Sessions with a live actor on this node.
    pub fn resident(&self) -> usize {
        self.live.len()
    }

    pub fn is_resident(&self, id: &SessionId) -> bool {
        self.live.contains_key(id)
    }

    /// Records the tenant of a resident session once its actor has loaded it.
    pub(crate) fn set_tenant(&self, id: &SessionId, tenant: TenantId) {
        if let Some(e) = self.live.get(id) {
            let _ = e.tenant.set(tenant);
        }
    }

    /// The tenant of a resident, loaded session.
    pub fn tenant_of(&self, id: &SessionId) -> Option<TenantId> {
        self.live.get(id).and_then(|e| e.tenant.get().copied())
    }

    pub(crate) fn known_owner(&self, id: &SessionId) -> Option<Arc<str>> {
        let e = self.remote.get(id)?;
        e.1.store(self.now_secs(), Ordering::Relaxed);
        Some(e.0.clone())
    }

    pub(crate) fn remember_owner(&self, id: SessionId, url: &str) {
        self.remote
            .insert(id, (Arc::from(url), AtomicU32::new(self.now_secs())));
    }

    pub(crate) fn forget_owner(&self, id: &SessionId) {
        self.remote.remove(id);
    }

    /// Drops remembered owners not used for `idle`, so the map stays as small as the
    /// traffic this node forwards.
    pub(crate) fn forget_idle_owners(&self, idle: std::time::Duration) {
        let now = self.now_secs();
        let idle = idle.as_secs() as u32;
        self.remote
            .retain(|_, (_, used)| now.saturating_sub(used.load(Ordering::Relaxed)) < idle);
    }

    /// Lets go of a session that now belongs to another node: its actor finishes what is
    /// queued (answering Moved) and stops.
    pub(crate) fn evict(&self, id: SessionId) {
        if let Some(shard) = self.shard(self.shard_of(&id)) {
            let _ = shard.send_message(ShardMsg::Evict(id));
        }
    }

    pub(crate) fn insert(&self, id: SessionId, actor: ActorRef<SessionMsg>) {
        self.live.insert(
            id,
            LiveEntry {
                actor,
                last_used: AtomicU32::new(self.now_secs()),
                pending: AtomicU32::new(0),
                since: self.now_secs(),
                tenant: OnceLock::new(),
            },
        );
    }

    async fn actor_for(&self, id: SessionId) -> NodeResult<ActorRef<SessionMsg>> {
        if let Some(e) = self.live.get(&id) {
            e.last_used.store(self.now_secs(), Ordering::Relaxed);
            return Ok(e.actor.clone());
        }
        let shard = {
            let shards = self.shards.read().unwrap_or_else(|e| e.into_inner());
            shards
                .get(self.shard_of(&id))
                .cloned()
                .ok_or_else(|| NodeError::Unavailable("the node is shutting down".into()))?
        };
        match shard.call(|r| ShardMsg::Activate(id, r), None).await {
            Ok(CallResult::Success(r)) => r,
            _ => Err(NodeError::Unavailable("session shard unavailable".into())),
        }
    }

    /// Sends a request to the session's actor and waits for its answer.
    pub async fn call<T: Send + 'static>(
        &self,
        id: SessionId,
        make: impl Fn(RpcReplyPort<NodeResult<T>>) -> SessionMsg,
    ) -> NodeResult<T> {
        for _ in 0..ROUTE_ATTEMPTS {
            let actor = self.actor_for(id).await?;
            let _pending = Pending::new(self, id);
            match actor.call(&make, None).await {
                Ok(CallResult::Success(r)) => return r,
                // Dropped with the request unprocessed-or-mid-way: the actor failed.
                Ok(CallResult::SenderError) | Ok(CallResult::Timeout) => {
                    return Err(NodeError::SessionCrashed)
                }
                // Not delivered: the actor is passivating; route again.
                Err(MessagingErr::SendErr(_)) | Err(MessagingErr::ChannelClosed) => {
                    self.live
                        .remove_if(&id, |_, e| e.actor.get_id() == actor.get_id());
                    tokio::task::yield_now().await;
                }
                Err(e) => return Err(NodeError::Internal(e.to_string())),
            }
        }
        Err(NodeError::Unavailable(
            "session is being moved; retry".into(),
        ))
    }

    /// The deepest mailbox among (a sample of) the resident sessions.
    pub fn deepest_mailbox(&self) -> u32 {
        self.live
            .iter()
            .take(MAILBOX_SAMPLE)
            .map(|e| e.pending.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// Sends a message without waiting (timer ticks).
    pub async fn tell(&self, id: SessionId, msg: SessionMsg) -> NodeResult<()> {
        let actor = self.actor_for(id).await?;
        actor
            .send_message(msg)
            .map_err(|_| NodeError::Unavailable("session is passivating".into()))
    }
}
