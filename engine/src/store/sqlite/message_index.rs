//! The SQLite store's message index (migrations/sqlite/0012_message_index.sql).
//!
//! A group commit appends its messages to `messages`, which is keyed by a sequence in
//! commit order and has no index on the hot path, so a commit dirties a few pages at the
//! table's end instead of one index page per session in the batch. About once a second (or
//! every [`FOLD_ROWS`] messages) the writer folds the new rows into `message_index`
//! (session, id -> sequence): small entries, sorted by session, so each session's index
//! page is written once for all its new messages. The rows themselves never move. The
//! `message_fold` watermark, written in the same transaction, says which rows are indexed.
//!
//! The rows above the watermark are tracked here in memory: their entries, waiting for the
//! fold, and for each session with such rows the first one's sequence and what they add to
//! the session (its newest message id and newest customer message). A read looks here
//! first, so a session without unindexed rows reads through the index alone and one with
//! such rows also scans the table's tail from its first. This changes only on the store's
//! single writer connection, and only while that connection is held: after a commit
//! (before its waiters hear of it) and after a fold. Opening the store rebuilds it from
//! the rows above the watermark.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, TransactionBehavior};
use sqlx::SqliteConnection;

use super::{col, map_err, parse_ts, parse_uuid};
use crate::model::{Role, Session, SessionId};
use crate::store::{StoreError, StoreResult};
use crate::telemetry;

/// Unindexed messages that trigger a fold (about 32,000 turns). Larger folds cost less per
/// message (each session's index page is visited once per fold) but hold the writer longer.
pub(super) const FOLD_ROWS: usize = 64 * 1024;

/// The longest a message stays unindexed while commits keep coming.
pub(super) const FOLD_AGE: Duration = Duration::from_secs(1);

/// How long to wait before folding again after a fold failed.
const FOLD_RETRY: Duration = Duration::from_secs(30);

/// The columns of a message row, with the session and id taken from the index (`i`), whose
/// order they then follow.
const INDEXED_COLS: &str = "i.session_id, i.id, m.role, m.text, m.ts, m.attachments, \
    m.metadata, m.feedback, m.idempotency_key";

/// What one session has above the watermark.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Span {
    /// No unindexed row of the session has a smaller sequence.
    pub first_seq: i64,
    /// The session's newest message id (indexed or not).
    pub last_id: i64,
    /// When its newest unindexed customer message was written.
    pub last_human: Option<DateTime<Utc>>,
}

impl Span {
    /// Brings a session read from its row and the index up to date with its newer rows.
    pub fn apply(&self, session: &mut Session) {
        session.message_count = session.message_count.max(self.last_id);
        if let Some(t) = self.last_human {
            session.last_activity = session.last_activity.max(t);
        }
    }
}

/// One message a commit wrote.
pub(super) struct Appended {
    pub session: SessionId,
    pub seq: i64,
    pub id: i64,
    /// Its time if it is the customer's.
    pub human_at: Option<DateTime<Utc>>,
}

/// An index entry waiting for the fold.
#[derive(Clone, Copy)]
struct Entry {
    session: SessionId,
    id: i64,
    seq: i64,
}

#[derive(Default)]
struct State {
    spans: HashMap<SessionId, Span>,
    /// In sequence order.
    entries: Vec<Entry>,
    /// Folds so far: a read that patched its sessions from `spans` knows whether a fold
    /// moved rows under the watermark between its query and the patch.
    folds: u64,
    next_seq: i64,
    /// When the oldest unindexed row was appended.
    since: Option<Instant>,
    /// No fold before this (after one failed).
    not_before: Option<Instant>,
}

/// The messages above the watermark (see the module docs).
#[derive(Default)]
pub(super) struct Unindexed {
    state: Mutex<State>,
}

impl Unindexed {
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

    /// Applies the unindexed rows to sessions read since `folds` was taken; false if a fold
    /// happened meanwhile (the read may have missed rows the fold indexed, so it must be
    /// repeated).
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

    /// The newest message ids known here, for the sessions that have unindexed rows.
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
        if appended.is_empty() {
            return;
        }
        let mut guard = self.state();
        let state = &mut *guard;
        state.entries.reserve(appended.len());
        for a in appended {
            let span = state.spans.entry(a.session).or_insert(Span {
                first_seq: a.seq,
                last_id: a.id,
                last_human: None,
            });
            span.last_id = span.last_id.max(a.id);
            if a.human_at.is_some() {
                span.last_human = a.human_at;
            }
            state.entries.push(Entry {
                session: a.session,
                id: a.id,
                seq: a.seq,
            });
        }
        state.since.get_or_insert_with(Instant::now);
    }

    /// Drops what is known of `sessions`, whose rows were deleted. Call with the writer
    /// held, after the deletion is committed.
    pub fn forget(&self, sessions: &[SessionId]) {
        // An agent may have many sessions: a set keeps this linear in the pending entries.
        let gone: HashSet<SessionId> = sessions.iter().copied().collect();
        let mut state = self.state();
        state.spans.retain(|s, _| !gone.contains(s));
        state.entries.retain(|e| !gone.contains(&e.session));
    }

    /// True when every committed message is indexed.
    pub fn is_empty(&self) -> bool {
        self.state().entries.is_empty()
    }

    pub fn fold_due(&self) -> bool {
        let state = self.state();
        let waited = state.not_before.is_none_or(|t| Instant::now() >= t);
        let full = state.entries.len() >= FOLD_ROWS;
        let old = state.since.is_some_and(|t| t.elapsed() >= FOLD_AGE);
        waited && (full || old)
    }

    /// Records that every entry up to `watermark` is indexed.
    fn folded(&self, watermark: i64) {
        let mut state = self.state();
        // The writer was held since the entries were read, so they were all folded.
        debug_assert!(state.entries.last().is_none_or(|e| e.seq == watermark));
        state.entries.clear();
        state.spans.clear();
        state.folds += 1;
        state.since = None;
        state.not_before = None;
    }

    fn fold_failed(&self) {
        self.state().not_before = Some(Instant::now() + FOLD_RETRY);
    }
}

/// `SELECT`s a session's messages: the indexed ones, and the unindexed ones from the first
/// sequence (NULL when the session has none). Binds: the session id, then that sequence.
/// `tail` follows (ORDER BY id, LIMIT). The watermark is read in the same statement, so a
/// fold between the caller's look at its span and the query neither hides nor doubles a row.
pub(super) fn select_messages(tail: &str) -> String {
    format!(
        "SELECT {INDEXED_COLS} FROM message_index i JOIN messages m ON m.seq = i.seq \
         WHERE i.session_id = ?1 UNION ALL \
         SELECT {cols} FROM messages WHERE seq >= ?2 \
         AND seq > (SELECT watermark FROM message_fold) AND session_id = ?1 {tail}",
        cols = super::MESSAGE_COLS
    )
}

/// Indexes every unindexed message in one transaction, sorted so that each session's
/// index page is visited once. Call with the writer held. A failure leaves the rows
/// unindexed (reads still find them) and holds folds off for a while.
pub(super) fn fold(db: &Connection, unindexed: &Unindexed) {
    let started = Instant::now();
    let mut entries = unindexed.state().entries.clone();
    let Some(watermark) = entries.last().map(|e| e.seq) else {
        return;
    };
    // A uuid's hyphenated text sorts as its bytes do, so this is the index's order.
    entries.sort_unstable_by_key(|e| (e.session, e.id));
    match write_entries(db, &entries, watermark) {
        Ok(()) => {
            unindexed.folded(watermark);
            let elapsed = started.elapsed();
            metrics::histogram!(telemetry::INDEX_FOLD_SECONDS).record(elapsed.as_secs_f64());
            metrics::counter!(telemetry::INDEXED_TOTAL).increment(entries.len() as u64);
            tracing::debug!(
                messages = entries.len(),
                ms = elapsed.as_millis() as u64,
                "message index folded"
            );
        }
        Err(e) => {
            unindexed.fold_failed();
            tracing::error!(error = %e, "folding the message index failed; the messages stay readable and the fold is retried later");
        }
    }
}

fn write_entries(db: &Connection, entries: &[Entry], watermark: i64) -> StoreResult<()> {
    let tx = rusqlite::Transaction::new_unchecked(db, TransactionBehavior::Immediate)
        .map_err(fold_err)?;
    let mut insert = tx
        .prepare("INSERT INTO message_index (session_id, id, seq) VALUES (?1, ?2, ?3)")
        .map_err(fold_err)?;
    let mut text = uuid::Uuid::encode_buffer();
    for e in entries {
        let session = e.session.hyphenated().encode_lower(&mut text);
        insert
            .execute(params![&*session, e.id, e.seq])
            .map_err(fold_err)?;
    }
    drop(insert);
    tx.execute("UPDATE message_fold SET watermark = ?1", [watermark])
        .map_err(fold_err)?;
    tx.commit().map_err(fold_err)
}

fn fold_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("folding the message index: {e}"))
}

/// Rebuilds what is kept here from the rows above the watermark (at open, and after
/// migrations). Call with the writer held.
pub(super) async fn rebuild(conn: &mut SqliteConnection, unindexed: &Unindexed) -> StoreResult<()> {
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'message_fold'",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    let mut appended = Vec::new();
    let mut next_seq = 1;
    if exists.is_some() {
        let watermark: i64 = sqlx::query_scalar("SELECT watermark FROM message_fold")
            .fetch_one(&mut *conn)
            .await
            .map_err(map_err)?;
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM messages")
            .fetch_one(&mut *conn)
            .await
            .map_err(map_err)?;
        // Rows at the watermark may have been deleted since; their sequences stay used.
        next_seq = last.unwrap_or(0).max(watermark) + 1;
        let rows = sqlx::query(
            "SELECT seq, session_id, id, role, ts FROM messages WHERE seq > ? ORDER BY seq",
        )
        .bind(watermark)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
        for r in &rows {
            let human = col::<&str>(r, "role")? == Role::Human.as_str();
            appended.push(Appended {
                session: parse_uuid(col(r, "session_id")?)?,
                seq: col(r, "seq")?,
                id: col(r, "id")?,
                human_at: human.then(|| parse_ts(col(r, "ts")?)).transpose()?,
            });
        }
    }
    {
        let mut state = unindexed.state();
        // Replaced as a fold replaces the spans, so reads under way repeat.
        *state = State {
            folds: state.folds + 1,
            next_seq,
            ..State::default()
        };
    }
    unindexed.record(&appended);
    Ok(())
}
