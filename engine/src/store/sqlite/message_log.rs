//! The SQLite store's message log (migrations/sqlite/0011_message_log.sql).
//!
//! A group commit appends its messages to `message_log`, which has no index but its
//! sequence, so a commit dirties a few pages at the log's end instead of one index page per
//! session in the batch. About once a second (or every [`FOLD_ROWS`] rows) the writer folds
//! the log into `messages` in one statement sorted by session, where each session's index
//! page is written once for all its new messages. Messages with an idempotency key skip the
//! log: `messages`' unique index is what answers a repeated key.
//!
//! What the log holds is tracked here in memory: for each session with rows in it, the
//! first row's sequence and what those rows add to the session (its newest message id and
//! newest customer message). A read looks here first, so a session without log rows reads
//! `messages` alone and one with rows scans only the log's tail from its first row. The log
//! changes only on the store's single writer connection, and this index only while that
//! connection is held: after a commit (before its waiters hear of it) and after a fold.
//! Reopening the store rebuilds it from the table.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{Connection, SqliteConnection};

use super::{col, map_err, parse_ts, parse_uuid, MESSAGE_COLS as COLS};
use crate::model::{Role, Session, SessionId};
use crate::store::StoreResult;
use crate::telemetry;

/// Log rows that trigger a fold (about 32,000 turns). Larger folds cost less per row (each
/// session's index pages are visited once per fold) but hold the writer longer: at this
/// size a fold takes 100-200 ms on the 2-core reference machine.
pub(super) const FOLD_ROWS: u64 = 64 * 1024;

/// The longest a message stays in the log while commits keep coming.
pub(super) const FOLD_AGE: Duration = Duration::from_secs(1);

/// How long to wait before folding again after a fold failed.
const FOLD_RETRY: Duration = Duration::from_secs(30);

/// What one session has in the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Span {
    /// No row of the session has a smaller sequence.
    pub first_seq: i64,
    /// The session's newest message id (in the log or in `messages`).
    pub last_id: i64,
    /// When its newest customer message in the log was written.
    pub last_human: Option<DateTime<Utc>>,
}

impl Span {
    /// Brings a session read from its row and `messages` up to date with its log rows.
    pub fn apply(&self, session: &mut Session) {
        session.message_count = session.message_count.max(self.last_id);
        if let Some(t) = self.last_human {
            session.last_activity = session.last_activity.max(t);
        }
    }
}

/// One message a commit wrote, as the index needs it.
pub(super) struct Appended {
    pub session: SessionId,
    /// Its log sequence; None for a message written to `messages` directly.
    pub seq: Option<i64>,
    pub id: i64,
    /// Its time if it is the customer's.
    pub human_at: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct State {
    spans: HashMap<SessionId, Span>,
    /// Folds so far: a read that patched its sessions from `spans` knows whether a fold
    /// moved rows between its query and the patch.
    folds: u64,
    rows: u64,
    next_seq: i64,
    /// When the oldest row now in the log was appended.
    since: Option<Instant>,
    /// No fold before this (after one failed).
    not_before: Option<Instant>,
}

#[derive(Default)]
pub(super) struct MessageLog {
    state: Mutex<State>,
}

impl MessageLog {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain data updated in single steps, so a panic elsewhere cannot
        // leave it half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn span(&self, session: SessionId) -> Option<Span> {
        self.state().spans.get(&session).copied()
    }

    pub fn folds(&self) -> u64 {
        self.state().folds
    }

    /// Applies the log to sessions read since `folds` was taken; false if a fold happened
    /// meanwhile (the read may have missed rows moving from the log to `messages`, so it
    /// must be repeated).
    pub fn patch(&self, sessions: &mut [Session], folds: u64) -> bool {
        let state = self.state();
        if state.folds != folds {
            return false;
        }
        for s in sessions {
            if let Some(span) = state.spans.get(&s.id) {
                span.apply(s);
            }
        }
        true
    }

    /// The newest message ids the index knows, for the sessions that have log rows.
    pub fn last_ids(&self, sessions: impl Iterator<Item = SessionId>) -> HashMap<SessionId, i64> {
        let state = self.state();
        sessions
            .filter_map(|s| state.spans.get(&s).map(|span| (s, span.last_id)))
            .collect()
    }

    /// Reserves `n` sequences and returns the first. Call with the writer held.
    pub fn reserve(&self, n: usize) -> i64 {
        let mut state = self.state();
        let first = state.next_seq.max(1);
        state.next_seq = first + n as i64;
        first
    }

    /// Records a committed batch. Call with the writer held, before the commit is
    /// acknowledged.
    pub fn record(&self, appended: &[Appended]) {
        let mut guard = self.state();
        let state = &mut *guard;
        let mut rows = 0;
        for a in appended {
            let span = match a.seq {
                Some(seq) => state.spans.entry(a.session).or_insert(Span {
                    first_seq: seq,
                    last_id: a.id,
                    last_human: None,
                }),
                // Straight into `messages`, which reads see anyway; only a session with log
                // rows needs its newest id here.
                None => match state.spans.get_mut(&a.session) {
                    Some(span) => span,
                    None => continue,
                },
            };
            span.last_id = span.last_id.max(a.id);
            if a.human_at.is_some() {
                span.last_human = a.human_at;
            }
            rows += u64::from(a.seq.is_some());
        }
        if rows > 0 {
            state.rows += rows;
            state.since.get_or_insert_with(Instant::now);
        }
    }

    /// True when no committed row is in the log.
    pub fn is_empty(&self) -> bool {
        self.state().rows == 0
    }

    pub fn fold_due(&self) -> bool {
        let state = self.state();
        let waited = state.not_before.is_none_or(|t| Instant::now() >= t);
        let full = state.rows >= FOLD_ROWS;
        let old = state.since.is_some_and(|t| t.elapsed() >= FOLD_AGE);
        waited && (full || old)
    }

    fn folded(&self) {
        let mut state = self.state();
        state.spans.clear();
        state.folds += 1;
        state.rows = 0;
        state.since = None;
        state.not_before = None;
    }

    fn fold_failed(&self) {
        self.state().not_before = Some(Instant::now() + FOLD_RETRY);
    }
}

/// `SELECT`s a session's messages: from `messages`, and from the log if it has rows there.
/// Binds: the session id, then the first log sequence if `span` is given. `tail` follows
/// (ORDER BY, LIMIT).
pub(super) fn select_messages(span: Option<Span>, tail: &str) -> String {
    match span {
        None => format!("SELECT {COLS} FROM messages WHERE session_id = ?1 {tail}"),
        Some(_) => format!(
            "SELECT {COLS} FROM messages WHERE session_id = ?1 UNION ALL \
             SELECT {COLS} FROM message_log WHERE seq >= ?2 AND session_id = ?1 {tail}"
        ),
    }
}

/// Moves every log row into `messages` in one transaction, sorted so that each session's
/// index pages are visited once. A failure leaves the log as it was (reads still see it) and
/// holds folds off for a while.
pub(super) async fn fold(conn: &mut SqliteConnection, log: &MessageLog) {
    let started = Instant::now();
    match move_rows(conn).await {
        Ok(rows) => {
            log.folded();
            let elapsed = started.elapsed();
            metrics::histogram!(telemetry::LOG_FOLD_SECONDS).record(elapsed.as_secs_f64());
            metrics::counter!(telemetry::LOG_FOLDED_TOTAL).increment(rows);
            tracing::debug!(rows, ms = elapsed.as_millis() as u64, "message log folded");
        }
        Err(e) => {
            log.fold_failed();
            tracing::error!(error = %e, "folding the message log failed; it stays readable and is retried later");
        }
    }
}

async fn move_rows(conn: &mut SqliteConnection) -> StoreResult<u64> {
    let mut tx = conn.begin().await.map_err(map_err)?;
    let moved = sqlx::query(&format!(
        "INSERT INTO messages ({COLS}) SELECT {COLS} FROM message_log ORDER BY session_id, id"
    ))
    .execute(&mut *tx)
    .await
    .map_err(map_err)?
    .rows_affected();
    // Without a WHERE clause SQLite drops the table's pages at once.
    sqlx::query("DELETE FROM message_log")
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    Ok(moved)
}

/// Rebuilds the index from the table (at open, and after migrations). Call with the writer
/// held.
pub(super) async fn rebuild(conn: &mut SqliteConnection, log: &MessageLog) -> StoreResult<()> {
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'message_log'",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    let mut appended = Vec::new();
    let mut last_seq = 0;
    if exists.is_some() {
        let rows =
            sqlx::query("SELECT seq, session_id, id, role, ts FROM message_log ORDER BY seq")
                .fetch_all(&mut *conn)
                .await
                .map_err(map_err)?;
        for r in &rows {
            let seq: i64 = col(r, "seq")?;
            let human = col::<&str>(r, "role")? == Role::Human.as_str();
            appended.push(Appended {
                session: parse_uuid(col(r, "session_id")?)?,
                seq: Some(seq),
                id: col(r, "id")?,
                human_at: human.then(|| parse_ts(col(r, "ts")?)).transpose()?,
            });
            last_seq = seq;
        }
    }
    {
        let mut state = log.state();
        // The spans are replaced as a fold replaces them, so reads under way repeat.
        *state = State {
            folds: state.folds + 1,
            next_seq: last_seq + 1,
            ..State::default()
        };
    }
    log.record(&appended);
    Ok(())
}
