//! Group commit that one bad request cannot sink.
//!
//! A batch commits in one transaction, so a request the store refuses (a duplicate id, a
//! value the database cannot hold) or whose handling panics would fail every request
//! beside it, from every tenant. When the batch fails, its transaction is gone (rolled
//! back) and each request is committed on its own: the good ones commit and each bad one
//! gets its own error. A successful batch costs nothing more.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use super::{SessionWrites, Store, StoreError, StoreResult};
use crate::model::SessionId;

/// What became of one request of a batch.
#[derive(Debug, Clone)]
pub enum RequestOutcome {
    Committed,
    /// Left out: the session was claimed by a newer owner since the request's epoch.
    Fenced,
    Failed(StoreError),
}

#[derive(Debug, Clone)]
pub struct BatchOutcome {
    /// One per request, in batch order.
    pub requests: Vec<RequestOutcome>,
    /// The batch failed as a whole and its requests were committed one by one.
    pub isolated: bool,
}

/// Commits the batch; if that fails, commits each request alone. Never panics: a panic in
/// the store is that request's `Refused` error.
pub async fn commit_isolating(store: &dyn Store, batch: &[SessionWrites]) -> BatchOutcome {
    let error = match guarded(store, batch).await {
        Ok(fenced) => {
            return BatchOutcome {
                requests: outcomes(batch, &fenced),
                isolated: false,
            }
        }
        Err(e) => e,
    };
    if batch.len() == 1 {
        return BatchOutcome {
            requests: vec![RequestOutcome::Failed(error)],
            isolated: false,
        };
    }
    tracing::warn!(error = %error, requests = batch.len(), "group commit failed; committing its requests one by one");
    let mut requests = Vec::with_capacity(batch.len());
    let mut unavailable: Option<StoreError> = None;
    for group in batch {
        // An unreachable store fails every request alike: trying each would only make
        // the whole queue wait on it again.
        if let Some(e) = &unavailable {
            requests.push(RequestOutcome::Failed(e.clone()));
            continue;
        }
        let one = std::slice::from_ref(group);
        let outcome = match guarded(store, one).await {
            Ok(fenced) => outcomes(one, &fenced).remove(0),
            Err(e) => {
                if matches!(e, StoreError::Unavailable(_)) {
                    unavailable = Some(e.clone());
                } else {
                    tracing::error!(session = %group.session, error = %e, "a session's writes were refused");
                }
                RequestOutcome::Failed(e)
            }
        };
        requests.push(outcome);
    }
    BatchOutcome {
        requests,
        isolated: true,
    }
}

/// `store.commit`, with a panic turned into an error (the transaction is dropped, and so
/// rolled back, while unwinding).
async fn guarded(store: &dyn Store, batch: &[SessionWrites]) -> StoreResult<Vec<SessionId>> {
    match AssertUnwindSafe(store.commit(batch)).catch_unwind().await {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %what, requests = batch.len(), "the store panicked committing a batch");
            Err(StoreError::Refused(
                "committing these writes failed unexpectedly".into(),
            ))
        }
    }
}

fn outcomes(batch: &[SessionWrites], fenced: &[SessionId]) -> Vec<RequestOutcome> {
    batch
        .iter()
        .map(|g| {
            if fenced.contains(&g.session) {
                RequestOutcome::Fenced
            } else {
                RequestOutcome::Committed
            }
        })
        .collect()
}
