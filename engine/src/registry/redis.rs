//! The Redis registry. Keys (all under the cluster's prefix):
//! - `{prefix}:node:{id}` = the node's URL, with a TTL its heartbeat renews (the lease);
//! - `{prefix}:owner:{session}` = the owning node's id. A claim is valid only while that
//!   node's lease key exists, so a dead node's sessions are free the moment its lease
//!   expires, and a draining node frees them all by deleting its lease;
//! - `{prefix}:attempts:{key}` = sign-in attempts (a sorted set of attempt ids scored by
//!   Redis's clock in ms), expiring with the throttle's window.
//!
//! Every decision (claim, lookup, release) is one Lua script, so it is atomic and one
//! round trip.

use std::collections::HashSet;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::Script;
use async_trait::async_trait;
use tokio::sync::{mpsc, Mutex};

use super::{
    AttemptAnswer, Claim, Lease, NodeInfo, Registry, RegistryError, RegistryResult, RegistryStats,
};
use crate::model::SessionId;

/// A claim outlives passivation only by accident (a crash before release); this bounds how
/// long such a leftover key stays.
const OWNER_KEY_TTL_SECS: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone)]
pub struct RedisRegistryConfig {
    pub url: String,
    /// Key prefix, so several clusters (or test runs) can share one Redis.
    pub prefix: String,
    /// How long a lease lasts without a heartbeat.
    pub lease_ttl: Duration,
    /// How long one command may take before the registry counts as unreachable.
    pub timeout: Duration,
}

/// Answers `{owner, url}` of the session's live owner, or claims it for ARGV[1].
const CLAIM: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  local url = redis.call('GET', ARGV[2] .. cur)
  if url then return {cur, url} end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
if cur and cur ~= ARGV[1] then return {ARGV[1], '', 'takeover'} end
return {ARGV[1], ''}
"#;

/// Answers `{owner, url}` if a live node other than ARGV[1] owns the session.
const LOOKUP: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  local url = redis.call('GET', ARGV[2] .. cur)
  if url then return {cur, url} end
end
return {}
"#;

/// Counts attempt ARGV[3] unless ARGV[1] attempts are within the last ARGV[2] ms; then
/// answers the ms until the oldest leaves the window (-1: counted). Redis's own clock,
/// so every node measures the same window.
const ATTEMPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) + window - now
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return -1
"#;

/// Deletes the claim if it is still ARGV[1]'s.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

pub struct RedisRegistry {
    node: NodeInfo,
    cfg: RedisRegistryConfig,
    client: ::redis::Client,
    /// Made on first use, so a node starts while Redis is down; once made, it reconnects
    /// by itself.
    conn: Mutex<Option<ConnectionManager>>,
    claim: Script,
    lookup: Script,
    release: Script,
    attempt: Script,
    stats: RegistryStats,
}

impl RedisRegistry {
    /// Checks the URL; connects lazily.
    pub fn new(node: NodeInfo, cfg: RedisRegistryConfig) -> RegistryResult<Self> {
        let client = ::redis::Client::open(cfg.url.as_str())
            .map_err(|e| RegistryError::Unavailable(format!("--redis-url: {e}")))?;
        Ok(RedisRegistry {
            node,
            cfg,
            client,
            conn: Mutex::new(None),
            claim: Script::new(CLAIM),
            lookup: Script::new(LOOKUP),
            release: Script::new(RELEASE),
            attempt: Script::new(ATTEMPT),
            stats: RegistryStats::default(),
        })
    }

    fn node_key(&self, id: &str) -> String {
        format!("{}:node:{id}", self.cfg.prefix)
    }

    fn node_key_prefix(&self) -> String {
        format!("{}:node:", self.cfg.prefix)
    }

    fn watching_key(&self, node: &str) -> String {
        format!("{}:watching:{node}", self.cfg.prefix)
    }

    fn user_events_channel(&self) -> String {
        format!("{}:user-events", self.cfg.prefix)
    }

    fn owner_key(&self, session: SessionId) -> String {
        format!("{}:owner:{session}", self.cfg.prefix)
    }

    fn attempts_key(&self, key: &str) -> String {
        format!("{}:attempts:{key}", self.cfg.prefix)
    }

    async fn conn(&self) -> RegistryResult<ConnectionManager> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.cfg.timeout)
            .set_response_timeout(self.cfg.timeout)
            .set_number_of_retries(1)
            .set_max_delay(200);
        let made = tokio::time::timeout(
            self.cfg.timeout * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| RegistryError::Unavailable("connecting to Redis timed out".into()))?
        .map_err(|e| self.failed(e))?;
        *slot = Some(made.clone());
        Ok(made)
    }

    fn failed(&self, e: ::redis::RedisError) -> RegistryError {
        RegistryStats::bump(&self.stats.errors);
        RegistryError::Unavailable(e.to_string())
    }

    /// Runs one command (a round trip).
    async fn run<T: ::redis::FromRedisValue>(
        &self,
        f: impl AsyncFnOnce(&mut ConnectionManager) -> ::redis::RedisResult<T>,
    ) -> RegistryResult<T> {
        let mut conn = self.conn().await?;
        match tokio::time::timeout(self.cfg.timeout, f(&mut conn)).await {
            Ok(r) => r.map_err(|e| self.failed(e)),
            Err(_) => {
                RegistryStats::bump(&self.stats.errors);
                Err(RegistryError::Unavailable(
                    "Redis did not answer in time".into(),
                ))
            }
        }
    }

    fn ttl_millis(&self) -> u64 {
        self.cfg.lease_ttl.as_millis().max(1) as u64
    }
}

#[async_trait]
impl Registry for RedisRegistry {
    fn node(&self) -> &NodeInfo {
        &self.node
    }

    fn clustered(&self) -> bool {
        true
    }

    async fn join(&self) -> RegistryResult<()> {
        self.heartbeat().await.map(|_| ())
    }

    async fn claim(&self, session: SessionId) -> RegistryResult<Claim> {
        RegistryStats::bump(&self.stats.claims);
        RegistryStats::bump(&self.stats.commands);
        let (key, prefix) = (self.owner_key(session), self.node_key_prefix());
        let answer: Vec<String> = self
            .run(async |c| {
                self.claim
                    .key(&key)
                    .arg(&self.node.id)
                    .arg(&prefix)
                    .arg(OWNER_KEY_TTL_SECS)
                    .invoke_async(c)
                    .await
            })
            .await?;
        match answer.as_slice() {
            [owner, url] if *owner != self.node.id => {
                RegistryStats::bump(&self.stats.claims_lost);
                Ok(Claim::Owned(NodeInfo {
                    id: owner.clone(),
                    url: url.clone(),
                }))
            }
            [_, _, takeover] if takeover == "takeover" => {
                RegistryStats::bump(&self.stats.takeovers);
                Ok(Claim::Mine)
            }
            _ => Ok(Claim::Mine),
        }
    }

    async fn reserve_attempt(
        &self,
        key: &str,
        id: &str,
        limit: u32,
        window: std::time::Duration,
    ) -> RegistryResult<Option<AttemptAnswer>> {
        let key = self.attempts_key(key);
        let window_ms = window.as_millis().max(1) as u64;
        let wait_ms: i64 = self
            .run(async |c| {
                self.attempt
                    .key(&key)
                    .arg(limit)
                    .arg(window_ms)
                    .arg(id)
                    .invoke_async(c)
                    .await
            })
            .await?;
        Ok(Some(match u64::try_from(wait_ms) {
            Ok(ms) => AttemptAnswer::Wait(std::time::Duration::from_millis(ms.max(1))),
            Err(_) => AttemptAnswer::Counted,
        }))
    }

    async fn release_attempt(&self, key: &str, id: &str) -> RegistryResult<()> {
        let key = self.attempts_key(key);
        self.run(async |c| ::redis::cmd("ZREM").arg(&key).arg(id).query_async(c).await)
            .await
    }

    async fn clear_attempts(&self, key: &str) -> RegistryResult<()> {
        let key = self.attempts_key(key);
        self.run(async |c| ::redis::cmd("DEL").arg(&key).query_async(c).await)
            .await
    }

    async fn remote_owner(&self, session: SessionId) -> RegistryResult<Option<NodeInfo>> {
        RegistryStats::bump(&self.stats.lookups);
        RegistryStats::bump(&self.stats.commands);
        let (key, prefix) = (self.owner_key(session), self.node_key_prefix());
        let answer: Vec<String> = self
            .run(async |c| {
                self.lookup
                    .key(&key)
                    .arg(&self.node.id)
                    .arg(&prefix)
                    .invoke_async(c)
                    .await
            })
            .await?;
        Ok(match answer.as_slice() {
            [owner, url] => Some(NodeInfo {
                id: owner.clone(),
                url: url.clone(),
            }),
            _ => None,
        })
    }

    async fn release(&self, session: SessionId) -> RegistryResult<()> {
        RegistryStats::bump(&self.stats.releases);
        RegistryStats::bump(&self.stats.commands);
        let key = self.owner_key(session);
        let _: i64 = self
            .run(async |c| {
                self.release
                    .key(&key)
                    .arg(&self.node.id)
                    .invoke_async(c)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn heartbeat(&self) -> RegistryResult<Lease> {
        RegistryStats::bump(&self.stats.heartbeats);
        let (key, ttl) = (self.node_key(&self.node.id), self.ttl_millis());
        // SET … GET answers the previous value: none means the lease had lapsed.
        let previous: Option<String> = self
            .run(async |c| {
                ::redis::cmd("SET")
                    .arg(&key)
                    .arg(&self.node.url)
                    .arg("PX")
                    .arg(ttl)
                    .arg("GET")
                    .query_async(c)
                    .await
            })
            .await?;
        Ok(if previous.is_some() {
            Lease::Renewed
        } else {
            Lease::Lost
        })
    }

    async fn ping(&self) -> RegistryResult<()> {
        let _: String = self
            .run(async |c| ::redis::cmd("PING").query_async(c).await)
            .await?;
        Ok(())
    }

    async fn leave(&self) -> RegistryResult<()> {
        let key = self.node_key(&self.node.id);
        let _: i64 = self
            .run(async |c| ::redis::cmd("DEL").arg(&key).query_async(c).await)
            .await?;
        Ok(())
    }

    async fn nodes(&self) -> RegistryResult<Vec<NodeInfo>> {
        // SCAN rather than KEYS: the keyspace holds a key per owned session, and KEYS
        // would block Redis while it walks them all.
        let prefix = self.node_key_prefix();
        let pattern = format!("{prefix}*");
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .run(async |c| {
                    ::redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(c)
                        .await
                })
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut nodes = Vec::with_capacity(keys.len());
        for key in keys {
            let url: Option<String> = self
                .run(async |c| ::redis::cmd("GET").arg(&key).query_async(c).await)
                .await?;
            if let (Some(id), Some(url)) = (key.strip_prefix(&prefix), url) {
                nodes.push(NodeInfo {
                    id: id.to_string(),
                    url,
                });
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    fn lease_ttl(&self) -> Duration {
        self.cfg.lease_ttl
    }

    fn stats(&self) -> &RegistryStats {
        &self.stats
    }

    async fn update_watched_users(
        &self,
        added: &[String],
        removed: &[String],
    ) -> RegistryResult<()> {
        let key = self.watching_key(&self.node.id);
        // Outlives this node's lease only briefly, so a dead node's watches fade.
        let ttl = self.ttl_millis() * 3;
        let _: () = self
            .run(async |c| {
                let mut p = ::redis::pipe();
                if !added.is_empty() {
                    p.cmd("SADD").arg(&key).arg(added).ignore();
                }
                if !removed.is_empty() {
                    p.cmd("SREM").arg(&key).arg(removed).ignore();
                }
                p.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
                p.query_async(c).await
            })
            .await?;
        Ok(())
    }

    async fn users_watched_elsewhere(&self) -> RegistryResult<HashSet<String>> {
        let others: Vec<String> = self
            .nodes()
            .await?
            .into_iter()
            .filter(|n| n.id != self.node.id)
            .map(|n| self.watching_key(&n.id))
            .collect();
        if others.is_empty() {
            return Ok(HashSet::new());
        }
        self.run(async |c| ::redis::cmd("SUNION").arg(&others).query_async(c).await)
            .await
    }

    async fn publish_user_event(&self, key: &str, json: &str) -> RegistryResult<()> {
        let payload =
            serde_json::json!({"from": self.node.id, "key": key, "event": json}).to_string();
        let channel = self.user_events_channel();
        let _: i64 = self
            .run(async |c| {
                ::redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(&payload)
                    .query_async(c)
                    .await
            })
            .await?;
        Ok(())
    }

    fn relayed_user_events(&self) -> Option<mpsc::UnboundedReceiver<(String, String)>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (client, channel, me) = (
            self.client.clone(),
            self.user_events_channel(),
            self.node.id.clone(),
        );
        tokio::spawn(async move {
            // Resubscribes whenever the connection drops (Redis restarts included), until
            // nobody reads the events any more.
            while !tx.is_closed() {
                if let Err(e) = relay(&client, &channel, &me, &tx).await {
                    tracing::debug!(error = %e, "customer event subscription lost; resubscribing");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Some(rx)
    }
}

/// Forwards relayed customer events from other nodes until the subscription ends.
async fn relay(
    client: &::redis::Client,
    channel: &str,
    me: &str,
    tx: &mpsc::UnboundedSender<(String, String)>,
) -> ::redis::RedisResult<()> {
    use futures::StreamExt;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        let Ok(payload) = msg.get_payload::<String>() else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&payload) else {
            continue;
        };
        if v["from"].as_str() == Some(me) {
            continue;
        }
        if let (Some(key), Some(event)) = (v["key"].as_str(), v["event"].as_str()) {
            if tx.send((key.to_string(), event.to_string())).is_err() {
                break;
            }
        }
    }
    Ok(())
}
