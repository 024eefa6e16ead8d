//! Live events for WebSocket subscribers: per session (token deltas, messages, timers) and
//! per customer (the conversation events). Publishing costs one map lookup when nobody
//! listens.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock, RwLock};

use dashmap::DashMap;
use parley_engine::model::{AgentId, AttachmentMeta, Message, SessionId, TenantId};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

const CHANNEL_CAPACITY: usize = 256;
/// Events a session's subscribers may fall behind by. Smaller than the others: every
/// open session socket holds one such buffer, and deltas come coalesced
/// ([`DeltaCoalescer`]), so a long answer is a few dozen events.
const SESSION_CAPACITY: usize = 64;
/// A streamed answer's pieces are published once this many bytes are waiting…
const DELTA_FLUSH_BYTES: usize = 256;
/// …or this long after the last publication, whichever comes first.
const DELTA_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(16);

/// What `/chatbot/{agent}/ws/{session}` subscribers receive.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionEvent {
    /// A piece of the reply being generated.
    Delta { session_id: SessionId, text: String },
    /// A message that is now in the log (committed).
    Message {
        session_id: SessionId,
        id: i64,
        role: &'static str,
        text: String,
        timestamp: String,
        metadata: Value,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<AttachmentMeta>,
    },
    /// A timer closed the session (`user_timeout` or `timeout`).
    Timeout {
        session_id: SessionId,
        status: &'static str,
    },
    /// The session ended, with the results it collected.
    Close {
        session_id: SessionId,
        status: &'static str,
        conversation_result: BTreeMap<String, Value>,
    },
}

impl SessionEvent {
    pub fn message(m: &Message) -> SessionEvent {
        SessionEvent::Message {
            session_id: m.session_id,
            id: m.id,
            role: m.role.as_str(),
            text: m.text.clone(),
            timestamp: m.timestamp.to_rfc3339(),
            metadata: m.metadata.clone(),
            attachments: m.attachments.clone(),
        }
    }
}

/// What `/ws/{user_id}` subscribers receive.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UserEvent {
    ConversationCreated {
        session_id: SessionId,
        agent_id: AgentId,
    },
    ConversationClosed {
        session_id: SessionId,
        agent_id: AgentId,
        status: &'static str,
        conversation_result: BTreeMap<String, Value>,
    },
    ConversationNewMessage {
        session_id: SessionId,
        agent_id: AgentId,
        id: i64,
        role: &'static str,
        text: String,
    },
    ConversationBotStatusModified {
        session_id: Option<SessionId>,
        agent_id: AgentId,
        status: String,
    },
    /// An event another node produced for a customer whose socket is on this node, as that
    /// node serialised it.
    #[serde(untagged)]
    Relayed(Value),
}

/// What the operators' WebSocket (`/ws/conversations`) receives: every conversation of
/// the tenant.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperatorEvent {
    NewMessage {
        session_id: SessionId,
        agent_id: AgentId,
        id: i64,
        role: &'static str,
        text: String,
    },
    /// The mode or the assignee changed.
    ModeChanged {
        session_id: SessionId,
        mode: &'static str,
        assignee: Option<uuid::Uuid>,
    },
}

impl UserEvent {
    /// The agent whose conversation the event is about (an agent's token sees only those).
    pub fn agent_id(&self) -> Option<AgentId> {
        match self {
            UserEvent::ConversationCreated { agent_id, .. }
            | UserEvent::ConversationClosed { agent_id, .. }
            | UserEvent::ConversationNewMessage { agent_id, .. }
            | UserEvent::ConversationBotStatusModified { agent_id, .. } => Some(*agent_id),
            UserEvent::Relayed(v) => v
                .get("agent_id")
                .and_then(Value::as_str)
                .and_then(|a| a.parse().ok()),
        }
    }
}

type Sender<T> = broadcast::Sender<Arc<T>>;

fn user_key(tenant: TenantId, user_id: &str) -> String {
    format!("{tenant}/{user_id}")
}

#[derive(Default)]
pub struct EventHub {
    sessions: DashMap<SessionId, Sender<SessionEvent>>,
    users: DashMap<String, Sender<UserEvent>>,
    operators: DashMap<TenantId, Sender<OperatorEvent>>,
    /// Customers whose sockets are on other nodes of the cluster (refreshed every second).
    elsewhere: RwLock<Arc<HashSet<String>>>,
    /// Where events for those customers go to be relayed (cluster only).
    outbox: OnceLock<mpsc::UnboundedSender<(String, String)>>,
    /// Where every conversation event also goes while outgoing webhooks run.
    tap: Tap,
    /// …and while campaigns run here (replies, closes and new sessions concern them).
    campaign_tap: Tap,
}

/// A consumer of every conversation event, switched on while it has work.
#[derive(Default)]
struct Tap {
    tx: OnceLock<mpsc::UnboundedSender<Arc<UserEvent>>>,
    on: std::sync::atomic::AtomicBool,
}

impl Tap {
    fn active(&self) -> Option<&mpsc::UnboundedSender<Arc<UserEvent>>> {
        self.tx
            .get()
            .filter(|_| self.on.load(std::sync::atomic::Ordering::Relaxed))
    }
}

fn subscribe<K, T>(
    map: &DashMap<K, Sender<T>>,
    key: K,
    capacity: usize,
) -> broadcast::Receiver<Arc<T>>
where
    K: std::hash::Hash + Eq,
{
    map.entry(key)
        .or_insert_with(|| broadcast::channel(capacity).0)
        .subscribe()
}

/// Drops a channel whose last subscriber left, so a socket that closes leaves nothing
/// behind even if no event ever comes for its key again.
fn unsubscribe<K, T>(map: &DashMap<K, Sender<T>>, key: &K)
where
    K: std::hash::Hash + Eq,
{
    map.remove_if(key, |_, tx| tx.receiver_count() == 0);
}

/// Builds the event only when someone listens.
fn publish<K, T>(map: &DashMap<K, Sender<T>>, key: &K, event: impl FnOnce() -> T)
where
    K: std::hash::Hash + Eq,
{
    publish_arc(map, key, || Arc::new(event()));
}

fn publish_arc<K, T>(map: &DashMap<K, Sender<T>>, key: &K, event: impl FnOnce() -> Arc<T>)
where
    K: std::hash::Hash + Eq,
{
    let gone = match map.get(key) {
        Some(tx) => tx.send(event()).is_err(),
        None => return,
    };
    // The last subscriber left: drop the channel (unless someone subscribed meanwhile).
    if gone {
        map.remove_if(key, |_, tx| tx.receiver_count() == 0);
    }
}

impl EventHub {
    pub fn subscribe_session(&self, id: SessionId) -> broadcast::Receiver<Arc<SessionEvent>> {
        subscribe(&self.sessions, id, SESSION_CAPACITY)
    }

    /// Customers are keyed per tenant: user ids are only unique within one.
    pub fn subscribe_user(
        &self,
        tenant: TenantId,
        user_id: &str,
    ) -> broadcast::Receiver<Arc<UserEvent>> {
        subscribe(&self.users, user_key(tenant, user_id), CHANNEL_CAPACITY)
    }

    /// Every conversation event of the tenant, for its operators.
    pub fn subscribe_operators(&self, tenant: TenantId) -> broadcast::Receiver<Arc<OperatorEvent>> {
        subscribe(&self.operators, tenant, CHANNEL_CAPACITY)
    }

    pub fn operators(&self, tenant: TenantId, event: impl FnOnce() -> OperatorEvent) {
        publish(&self.operators, &tenant, event);
    }

    /// Called after a session socket dropped its receiver.
    pub fn unsubscribe_session(&self, id: SessionId) {
        unsubscribe(&self.sessions, &id);
    }

    /// Called after a customer socket dropped its receiver.
    pub fn unsubscribe_user(&self, tenant: TenantId, user_id: &str) {
        unsubscribe(&self.users, &user_key(tenant, user_id));
    }

    /// Called after an operators' socket dropped its receiver.
    pub fn unsubscribe_operators(&self, tenant: TenantId) {
        unsubscribe(&self.operators, &tenant);
    }

    /// Channels kept for subscribers (sessions, customers, operators), for tests and
    /// diagnostics.
    pub fn channels(&self) -> usize {
        self.sessions.len() + self.users.len() + self.operators.len()
    }

    pub fn has_session_subscribers(&self, id: &SessionId) -> bool {
        self.sessions
            .get(id)
            .is_some_and(|tx| tx.receiver_count() > 0)
    }

    pub fn session(&self, id: SessionId, event: impl FnOnce() -> SessionEvent) {
        publish(&self.sessions, &id, event);
    }

    pub fn user(&self, tenant: TenantId, user_id: &str, event: impl FnOnce() -> UserEvent) {
        let taps = [self.tap.active(), self.campaign_tap.active()];
        let tapped = taps.iter().any(Option::is_some);
        // Only a node of a cluster relays; a node alone never looks at the watch list.
        let elsewhere = self
            .outbox
            .get()
            .map(|outbox| {
                (
                    outbox,
                    self.elsewhere
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone(),
                )
            })
            .filter(|(_, keys)| !keys.is_empty());
        if self.users.is_empty() && elsewhere.is_none() && !tapped {
            return;
        }
        let key = user_key(tenant, user_id);
        let relay = elsewhere
            .filter(|(_, keys)| keys.contains(&key))
            .map(|(outbox, _)| outbox);
        if relay.is_none() && !tapped {
            publish(&self.users, &key, event);
            return;
        }
        let event = Arc::new(event());
        if !matches!(*event, UserEvent::Relayed(_)) {
            for tap in taps.into_iter().flatten() {
                let _ = tap.send(event.clone());
            }
        }
        if let Some(outbox) = relay {
            if let Ok(json) = serde_json::to_string(&*event) {
                let _ = outbox.send((key.clone(), json));
            }
        }
        publish_arc(&self.users, &key, || event);
    }

    /// Sends every conversation event to `tap` as well, from now on (outgoing webhooks).
    pub fn tap_into(&self, tap: mpsc::UnboundedSender<Arc<UserEvent>>) {
        let _ = self.tap.tx.set(tap);
    }

    /// Turns the tap on or off (on while any outgoing webhook runs here).
    pub fn set_tapping(&self, on: bool) {
        self.tap.on.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sends every conversation event to `tap` as well while campaigns run here.
    pub fn campaign_tap_into(&self, tap: mpsc::UnboundedSender<Arc<UserEvent>>) {
        let _ = self.campaign_tap.tx.set(tap);
    }

    pub fn set_campaign_tapping(&self, on: bool) {
        self.campaign_tap
            .on
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Relays this node's events for customers watched on other nodes through `outbox`.
    pub fn relay_to(&self, outbox: mpsc::UnboundedSender<(String, String)>) {
        let _ = self.outbox.set(outbox);
    }

    pub fn set_watched_elsewhere(&self, keys: HashSet<String>) {
        *self.elsewhere.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }

    /// Customers with a socket on this node.
    pub fn watched_here(&self) -> HashSet<String> {
        self.users
            .iter()
            .filter(|e| e.value().receiver_count() > 0)
            .map(|e| e.key().clone())
            .collect()
    }

    /// Delivers an event another node relayed.
    pub fn relayed(&self, key: &str, json: &str) {
        if let Ok(v) = serde_json::from_str::<Value>(json) {
            publish(&self.users, &key.to_string(), || UserEvent::Relayed(v));
        }
    }

    /// Sends an event to every connected customer (agent status changes).
    pub fn all_users(&self, event: impl Fn() -> UserEvent) {
        for entry in self.users.iter() {
            let _ = entry.value().send(Arc::new(event()));
        }
    }
}

/// Gathers a streamed answer's pieces into fewer delta events: a burst (the builtin
/// backend hands over a whole answer at once) becomes pieces of about
/// [`DELTA_FLUSH_BYTES`], while a slow stream still goes out piece by piece. The turn
/// calls [`DeltaCoalescer::flush`] when the generation ends, so nothing stays behind.
pub struct DeltaCoalescer {
    events: Arc<EventHub>,
    session: SessionId,
    pending: std::sync::Mutex<(String, std::time::Instant)>,
}

impl DeltaCoalescer {
    pub fn new(events: Arc<EventHub>, session: SessionId) -> DeltaCoalescer {
        DeltaCoalescer {
            events,
            session,
            pending: std::sync::Mutex::new((String::new(), std::time::Instant::now())),
        }
    }

    pub fn push(&self, piece: &str) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.0.push_str(piece);
        if p.0.len() >= DELTA_FLUSH_BYTES || p.1.elapsed() >= DELTA_FLUSH_EVERY {
            self.publish(&mut p);
        }
    }

    pub fn flush(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !p.0.is_empty() {
            self.publish(&mut p);
        }
    }

    fn publish(&self, p: &mut (String, std::time::Instant)) {
        let text = std::mem::take(&mut p.0);
        p.1 = std::time::Instant::now();
        let session_id = self.session;
        self.events
            .session(session_id, || SessionEvent::Delta { session_id, text });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut broadcast::Receiver<Arc<SessionEvent>>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            if let SessionEvent::Delta { text, .. } = &*ev {
                out.push(text.clone());
            }
        }
        out
    }

    #[test]
    fn a_burst_is_coalesced_and_nothing_stays_behind() {
        let hub = Arc::new(EventHub::default());
        let id = uuid::Uuid::now_v7();
        let mut rx = hub.subscribe_session(id);
        let d = DeltaCoalescer::new(hub.clone(), id);
        let words: Vec<String> = (0..1000).map(|i| format!("w{i} ")).collect();
        for w in &words {
            d.push(w);
        }
        d.flush();
        let got = drain(&mut rx);
        assert_eq!(got.concat(), words.concat());
        // About one event per DELTA_FLUSH_BYTES, within the subscribers' buffer.
        assert!(got.len() < SESSION_CAPACITY, "{} events", got.len());
        assert!(got.len() > 1);
    }

    #[test]
    fn a_slow_stream_goes_out_piece_by_piece() {
        let hub = Arc::new(EventHub::default());
        let id = uuid::Uuid::now_v7();
        let mut rx = hub.subscribe_session(id);
        let d = DeltaCoalescer::new(hub.clone(), id);
        for piece in ["Hello ", "there, ", "friend."] {
            std::thread::sleep(DELTA_FLUSH_EVERY + std::time::Duration::from_millis(5));
            d.push(piece);
            assert_eq!(drain(&mut rx), [piece], "published as it came");
        }
        d.flush();
        assert!(drain(&mut rx).is_empty());
    }
}
