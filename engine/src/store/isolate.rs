//! Group commit that one bad request cannot sink.
//!
//! A batch commits in one transaction, so a request the store refuses (a duplicate id, a
//! value the database cannot hold) or whose handling panics would fail every request
//! beside it, from every tenant. When the batch fails, its transaction is gone (rolled
//! back) and each request is committed on its own: the good ones commit and each bad one
//! gets its own error. A successful batch costs nothing more.
//!
//! A request is one session's writes, or a group of connection writes (a delivery with
//! its log line, a done mark with its reply's line, ...).

use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use super::{Committed, ConnectionWrite, SessionWrites, Store, StoreError, StoreResult};
use crate::model::SessionId;

/// What became of one session's request of a batch.
#[derive(Debug, Clone)]
pub enum RequestOutcome {
    Committed,
    /// Left out: the session was claimed by a newer owner since the request's epoch.
    Fenced,
    Failed(StoreError),
}

#[derive(Debug, Clone)]
pub struct BatchOutcome {
    /// One per session request, in batch order.
    pub sessions: Vec<RequestOutcome>,
    /// One per connection request, in batch order: its writes' answers (see
    /// [`Committed::applied`]) once committed.
    pub connections: Vec<StoreResult<Vec<bool>>>,
    /// The batch failed as a whole and its requests were committed one by one.
    pub isolated: bool,
}

impl BatchOutcome {
    /// Whether any request failed.
    pub fn failed(&self) -> bool {
        self.sessions
            .iter()
            .any(|r| matches!(r, RequestOutcome::Failed(_)))
            || self.connections.iter().any(Result::is_err)
    }
}

/// Commits the batch: the sessions' requests and the connections' (their writes one
/// request after another in `connections`, `sizes` saying how many each has). If that
/// fails, commits each request alone. Never panics: a panic in the store is that
/// request's `Refused` error.
pub async fn commit_isolating(
    store: &dyn Store,
    sessions: &[SessionWrites],
    connections: &[ConnectionWrite],
    sizes: &[usize],
) -> BatchOutcome {
    let error = match guarded(store, sessions, connections).await {
        Ok(done) => {
            return BatchOutcome {
                sessions: session_outcomes(sessions, &done.fenced),
                connections: split_applied(sizes, done.applied),
                isolated: false,
            }
        }
        Err(e) => e,
    };
    if sessions.len() + sizes.len() == 1 {
        let (sessions, connections) = if sessions.is_empty() {
            (Vec::new(), vec![Err(error)])
        } else {
            (vec![RequestOutcome::Failed(error)], Vec::new())
        };
        return BatchOutcome {
            sessions,
            connections,
            isolated: false,
        };
    }
    let requests = sessions.len() + sizes.len();
    tracing::warn!(error = %error, requests, "group commit failed; committing its requests one by one");
    // An unreachable store fails every request alike: trying each would only make the
    // whole queue wait on it again.
    let mut unavailable: Option<StoreError> = None;
    let mut session_outcomes_one = Vec::with_capacity(sessions.len());
    for group in sessions {
        let outcome = match &unavailable {
            Some(e) => RequestOutcome::Failed(e.clone()),
            None => match guarded(store, std::slice::from_ref(group), &[]).await {
                Ok(done) => session_outcome(group, &done.fenced),
                Err(e) => {
                    refused(&e, &mut unavailable, || {
                        format!("session {}", group.session)
                    });
                    RequestOutcome::Failed(e)
                }
            },
        };
        session_outcomes_one.push(outcome);
    }
    let mut connection_outcomes = Vec::with_capacity(sizes.len());
    let mut start = 0;
    for &n in sizes {
        let end = (start + n).min(connections.len());
        let writes = &connections[start..end];
        start = end;
        let outcome = match &unavailable {
            Some(e) => Err(e.clone()),
            None => match guarded(store, &[], writes).await {
                Ok(done) => Ok(done.applied),
                Err(e) => {
                    refused(&e, &mut unavailable, || connection_of(writes));
                    Err(e)
                }
            },
        };
        connection_outcomes.push(outcome);
    }
    BatchOutcome {
        sessions: session_outcomes_one,
        connections: connection_outcomes,
        isolated: true,
    }
}

/// `store.commit_all`, with a panic turned into an error (the transaction is dropped, and
/// so rolled back, while unwinding).
async fn guarded(
    store: &dyn Store,
    sessions: &[SessionWrites],
    connections: &[ConnectionWrite],
) -> StoreResult<Committed> {
    match AssertUnwindSafe(store.commit_all(sessions, connections))
        .catch_unwind()
        .await
    {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %what, sessions = sessions.len(), connection_writes = connections.len(), "the store panicked committing a batch");
            Err(StoreError::Refused(
                "committing these writes failed unexpectedly".into(),
            ))
        }
    }
}

/// Notes a request's failure; an unreachable store is remembered, to fail the rest alike.
fn refused(e: &StoreError, unavailable: &mut Option<StoreError>, what: impl FnOnce() -> String) {
    if matches!(e, StoreError::Unavailable(_)) {
        *unavailable = Some(e.clone());
    } else {
        tracing::error!(error = %e, request = %what(), "a request's writes were refused");
    }
}

fn session_outcome(group: &SessionWrites, fenced: &[SessionId]) -> RequestOutcome {
    if fenced.contains(&group.session) {
        RequestOutcome::Fenced
    } else {
        RequestOutcome::Committed
    }
}

fn session_outcomes(batch: &[SessionWrites], fenced: &[SessionId]) -> Vec<RequestOutcome> {
    batch.iter().map(|g| session_outcome(g, fenced)).collect()
}

/// The connection requests' shares of a batch's answers.
fn split_applied(sizes: &[usize], applied: Vec<bool>) -> Vec<StoreResult<Vec<bool>>> {
    let mut answers = applied.into_iter();
    sizes
        .iter()
        .map(|&n| Ok(answers.by_ref().take(n).collect()))
        .collect()
}

/// Which connection a request's writes are for, for the log.
fn connection_of(writes: &[ConnectionWrite]) -> String {
    let id = writes.first().map(|w| match w {
        ConnectionWrite::Inbox { connection, .. } | ConnectionWrite::Done { connection, .. } => {
            *connection
        }
        ConnectionWrite::Line(l) => l.event.connection_id,
        ConnectionWrite::Repeated { event, .. } => event.connection_id,
    });
    id.map_or_else(|| "none".into(), |c| format!("connection {c}"))
}
