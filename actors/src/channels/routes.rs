//! Where a connection's customer messages go, remembered by its chat workers so that a
//! message in a chat with a live session asks the store nothing before its turn: the
//! connection's inbound agent, and each chat's session.
//!
//! The inbound agent is forgotten when agents' channels change on this node (the
//! directory's generation moves); each chat's session when a campaign opens a new one for
//! the chat here, when the session closes on this node, and when the connection restarts
//! (a new actor, new routes). A session closed elsewhere is found out by its turn, which
//! answers SessionClosed. In a cluster another node may change either, so there they are
//! checked against the store once they are older than [`CLUSTER_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parley_engine::model::{AgentId, SessionId};

/// How long a node of a cluster trusts what it remembers without asking the store.
pub const CLUSTER_TTL: Duration = Duration::from_secs(2);
/// A chat not heard from for this long is forgotten (its next message asks the store).
const CHAT_IDLE: Duration = Duration::from_secs(600);

/// The session a chat talks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatSession {
    pub session: SessionId,
    pub agent: AgentId,
    /// When the chat's session started (Discord keeps one for `session_duration_ms`).
    pub started_at: DateTime<Utc>,
    /// Opened by a campaign: it goes on with the campaign's agent whoever answers the
    /// connection.
    pub campaign: bool,
}

#[derive(Default)]
pub struct Routes {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The inbound agent, the directory's generation it was read in, and when.
    inbound: Option<(Option<AgentId>, u64, Instant)>,
    /// Chat key -> its session, when it was last confirmed and last used.
    chats: HashMap<String, Remembered>,
    /// Session -> chat key, to forget a closed session's chat.
    by_session: HashMap<SessionId, String>,
}

struct Remembered {
    chat: ChatSession,
    confirmed: Instant,
    used: Instant,
}

/// Whether something confirmed at `at` is still trusted (`ttl`: None on a node alone).
fn fresh(at: Instant, ttl: Option<Duration>) -> bool {
    ttl.is_none_or(|ttl| at.elapsed() < ttl)
}

impl Routes {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The inbound agent, if it is known for the directory's `generation`.
    pub fn inbound(&self, generation: u64, ttl: Option<Duration>) -> Option<Option<AgentId>> {
        match self.inner().inbound {
            Some((agent, g, at)) if g == generation && fresh(at, ttl) => Some(agent),
            _ => None,
        }
    }

    /// Remembers the inbound agent as read from the store in `generation` (read before
    /// the store was asked, so a change meanwhile is not lost).
    pub fn set_inbound(&self, generation: u64, agent: Option<AgentId>) {
        self.inner().inbound = Some((agent, generation, Instant::now()));
    }

    /// The chat's session and whether it is confirmed recently enough to use unchecked.
    pub fn chat(&self, key: &str, ttl: Option<Duration>) -> Option<(ChatSession, bool)> {
        let mut inner = self.inner();
        let r = inner.chats.get_mut(key)?;
        r.used = Instant::now();
        Some((r.chat, fresh(r.confirmed, ttl)))
    }

    /// Remembers the chat's session, as confirmed now.
    pub fn remember(&self, key: &str, chat: ChatSession) {
        let mut inner = self.inner();
        let now = Instant::now();
        let before = inner.chats.insert(
            key.to_string(),
            Remembered {
                chat,
                confirmed: now,
                used: now,
            },
        );
        if let Some(b) = before.filter(|b| b.chat.session != chat.session) {
            inner.by_session.remove(&b.chat.session);
        }
        inner.by_session.insert(chat.session, key.to_string());
    }

    /// Forgets the chat's session (another was opened for it, or it closed).
    pub fn forget_chat(&self, key: &str) {
        let mut inner = self.inner();
        if let Some(r) = inner.chats.remove(key) {
            inner.by_session.remove(&r.chat.session);
        }
    }

    /// Forgets the chat of a session that closed.
    pub fn closed(&self, session: SessionId) {
        let mut inner = self.inner();
        if let Some(key) = inner.by_session.remove(&session) {
            inner.chats.remove(&key);
        }
    }

    /// Forgets chats not heard from for a while.
    pub fn prune(&self) {
        let mut inner = self.inner();
        let Inner {
            chats, by_session, ..
        } = &mut *inner;
        chats.retain(|_, r| {
            let keep = r.used.elapsed() < CHAT_IDLE;
            if !keep {
                by_session.remove(&r.chat.session);
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(n: u128) -> ChatSession {
        ChatSession {
            session: SessionId::from_u128(n),
            agent: AgentId::from_u128(100),
            started_at: DateTime::UNIX_EPOCH,
            campaign: false,
        }
    }

    #[test]
    fn a_closed_or_replaced_session_is_forgotten_with_its_chat() {
        let routes = Routes::default();
        routes.remember("a/a", chat(1));
        routes.remember("b/b", chat(2));
        assert_eq!(routes.chat("a/a", None), Some((chat(1), true)));
        // A cluster's node checks it against the store after a while.
        assert_eq!(
            routes.chat("a/a", Some(Duration::ZERO)),
            Some((chat(1), false))
        );
        routes.closed(SessionId::from_u128(1));
        assert_eq!(routes.chat("a/a", None), None);
        assert!(routes.chat("b/b", None).is_some());
        // A chat's new session replaces the old one: closing the old one changes nothing.
        routes.remember("b/b", chat(3));
        routes.closed(SessionId::from_u128(2));
        assert_eq!(
            routes.chat("b/b", None).map(|(c, _)| c.session),
            Some(chat(3).session)
        );
        routes.forget_chat("b/b");
        assert_eq!(routes.chat("b/b", None), None);
    }

    #[test]
    fn the_inbound_agent_holds_for_its_generation_only() {
        let routes = Routes::default();
        assert_eq!(routes.inbound(0, None), None);
        let agent = AgentId::from_u128(7);
        routes.set_inbound(4, Some(agent));
        assert_eq!(routes.inbound(4, None), Some(Some(agent)));
        assert_eq!(routes.inbound(5, None), None);
        // A cluster's node trusts it for a while only.
        assert_eq!(routes.inbound(4, Some(Duration::ZERO)), None);
        routes.set_inbound(5, None);
        assert_eq!(routes.inbound(5, None), Some(None));
    }
}
