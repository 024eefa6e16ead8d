//! The SQLite group commit: one transaction for a batch of sessions' and connections'
//! writes, run on the caller's thread through the writer connection's raw handle.
//!
//! The PersistenceActor calls it from a thread of its own. Going through rusqlite on the
//! handle (locked away from sqlx's worker meanwhile) saves a thread hop per statement and
//! lets every row reuse one prepared single-row statement; sqlx serves every other query.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use chrono::DateTime;

use super::message_index::{Appended, Unindexed};
use super::{parse_ts, ts};
use crate::connection::ConnectionId;
use crate::model::{Message, Role, Session, SessionId};
use crate::store::encoding::{deadline_millis, feedback_str, parse_json, to_json};
use crate::store::{
    fold_repeats, Committed, ConnectionWrite, Epoch, NewConnectionEvent, RepeatedConnectionEvent,
    SessionWrites, StoreError, StoreResult, Write,
};

/// tenant_id, agent_id and created_at never change, so the upsert leaves them (and the
/// index entries on them) alone. The epoch is set when the row is created; later claims
/// raise it (claim_session).
const UPSERT_SESSION: &str = "INSERT INTO sessions (id, tenant_id, agent_id, user_id, \
    ext_type, state, next_deadline, created_at, updated_at, data, epoch, closed_at, mode, \
    assignee) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
    ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, \
    ext_type = excluded.ext_type, state = excluded.state, \
    next_deadline = excluded.next_deadline, updated_at = excluded.updated_at, \
    data = excluded.data, closed_at = excluded.closed_at, mode = excluded.mode, \
    assignee = excluded.assignee";

const APPEND_MESSAGE: &str = "INSERT INTO messages (seq, session_id, id, role, text, ts, \
    attachments, metadata, feedback, idempotency_key) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

const INSERT_ATTACHMENT: &str = "INSERT INTO attachments (id, session_id, filename, \
    content_type, size, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

const INSERT_DELIVERY: &str = "INSERT INTO connector_inbox (connection_id, dedup_id, \
    received_at, message) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (connection_id, dedup_id) DO NOTHING";

const MARK_DONE: &str =
    "UPDATE connector_inbox SET done = 1 WHERE connection_id = ?1 AND dedup_id = ?2";

const APPEND_LINE: &str =
    "INSERT INTO connection_events (connection_id, at, kind, detail) VALUES (?1, ?2, ?3, ?4)";

/// Everything from the (keep+1)-th newest line on; with fewer lines the bound is NULL and
/// nothing goes.
const TRIM_LOG: &str = "DELETE FROM connection_events WHERE connection_id = ?1 AND id <= \
    (SELECT id FROM connection_events WHERE connection_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)";

const NEWEST_OF_KIND: &str = "SELECT id, at, detail FROM connection_events \
    WHERE connection_id = ?1 AND kind = ?2 ORDER BY id DESC LIMIT 1";

/// Commits the batch; answers the sessions whose writes were refused because a newer
/// owner claimed them, and the connection writes' answers. Any error rolls the whole batch
/// back.
pub(super) fn write_batch(
    db: &Connection,
    unindexed: &Unindexed,
    batch: &[SessionWrites],
    connections: &[ConnectionWrite],
) -> StoreResult<Committed> {
    // IMMEDIATE takes SQLite's write lock now, so no claim can slip in between the epoch
    // check and the writes.
    let tx = rusqlite::Transaction::new_unchecked(db, TransactionBehavior::Immediate)
        .map_err(map_err)?;
    let stored = stored_epochs(&tx, batch)?;
    let current = |g: &&SessionWrites| stored.get(&g.session).is_none_or(|&e| g.epoch >= e);
    let fenced: Vec<SessionId> = batch
        .iter()
        .filter(|g| !current(g))
        .map(|g| g.session)
        .collect();
    // Group by kind. A session written several times keeps its first slot and its last
    // version.
    let mut sessions: Vec<(&Session, Epoch)> = Vec::new();
    let mut slot: HashMap<SessionId, usize> = HashMap::new();
    let mut messages: Vec<&Message> = Vec::new();
    let mut attachments = Vec::new();
    for group in batch.iter().filter(current) {
        for write in &group.writes {
            match write {
                Write::Session(s) => match slot.get(&s.id) {
                    Some(&i) => sessions[i] = (s, group.epoch),
                    None => {
                        slot.insert(s.id, sessions.len());
                        sessions.push((s, group.epoch));
                    }
                },
                Write::Message(m) => messages.push(m),
                Write::Attachment {
                    session_id,
                    meta,
                    bytes,
                } => attachments.push((*session_id, meta, bytes)),
            }
        }
    }
    check_new_ids(&tx, unindexed, &messages)?;

    let updated_at = ts(Utc::now());
    let mut upsert = tx.prepare_cached(UPSERT_SESSION).map_err(map_err)?;
    for (s, epoch) in sessions {
        upsert
            .execute(params![
                s.id.to_string(),
                s.tenant_id.to_string(),
                s.agent_id.to_string(),
                s.user_id,
                s.ext_type,
                s.status_str(),
                s.next_deadline().map(deadline_millis),
                ts(s.created_at),
                updated_at,
                to_json(s, "session")?,
                epoch,
                s.closed_at.map(ts),
                s.mode.as_str(),
                s.assignee.map(|u| u.to_string()),
            ])
            .map_err(map_err)?;
    }
    drop(upsert);

    // Appended in commit order; the fold indexes them later (a repeated idempotency key
    // is refused now, by its own unique index).
    let first_seq = unindexed.reserve(messages.len());
    let mut appended = Vec::with_capacity(messages.len());
    let mut append = tx.prepare_cached(APPEND_MESSAGE).map_err(map_err)?;
    for (seq, m) in (first_seq..).zip(&messages) {
        // Empty lists and null metadata (the common case) are stored as NULL.
        let files = (!m.attachments.is_empty())
            .then(|| to_json(&m.attachments, "attachments"))
            .transpose()?;
        let metadata = (!m.metadata.is_null())
            .then(|| to_json(&m.metadata, "metadata"))
            .transpose()?;
        let (sid, role, at) = (m.session_id.to_string(), m.role.as_str(), ts(m.timestamp));
        let feedback = feedback_str(m.feedback);
        let key = m.idempotency_key.as_deref();
        append
            .execute(params![
                seq, sid, m.id, role, m.text, at, files, metadata, feedback, key
            ])
            .map_err(map_err)?;
        appended.push(Appended {
            session: m.session_id,
            seq,
            id: m.id,
            human_at: (m.role == Role::Human).then_some(m.timestamp),
        });
    }
    drop(append);

    let mut insert = tx.prepare_cached(INSERT_ATTACHMENT).map_err(map_err)?;
    for (session_id, meta, bytes) in attachments {
        let size = i64::try_from(meta.size)
            .map_err(|_| StoreError::Corrupt(format!("attachment size {}", meta.size)))?;
        insert
            .execute(params![
                meta.id.to_string(),
                session_id.to_string(),
                meta.filename,
                meta.content_type,
                size,
                &bytes[..],
            ])
            .map_err(map_err)?;
    }
    drop(insert);
    let applied = write_connections(&tx, connections)?;
    tx.commit().map_err(map_err)?;
    unindexed.record(&appended);
    Ok(Committed { fenced, applied })
}

/// Connections' writes: deliveries first, then the log lines (those of new deliveries
/// among them), repeated lines, done marks. Answers one flag per write.
fn write_connections(db: &Connection, writes: &[ConnectionWrite]) -> StoreResult<Vec<bool>> {
    let mut applied = Vec::with_capacity(writes.len());
    let mut lines = Vec::new();
    for w in writes {
        match w {
            ConnectionWrite::Inbox {
                connection,
                message,
                at,
                line,
            } => {
                let json = to_json(message.as_ref(), "inbound message")?;
                let inserted = db
                    .prepare_cached(INSERT_DELIVERY)
                    .and_then(|mut q| {
                        q.execute(params![
                            connection.to_string(),
                            message.dedup_id,
                            ts(*at),
                            json
                        ])
                    })
                    .map_err(map_err)?;
                applied.push(inserted > 0);
                if inserted > 0 {
                    lines.extend(line.as_ref().map(|l| (&l.event, l.keep)));
                }
            }
            ConnectionWrite::Line(l) => {
                lines.push((&l.event, l.keep));
                applied.push(true);
            }
            ConnectionWrite::Done { .. } | ConnectionWrite::Repeated { .. } => applied.push(true),
        }
    }
    append_lines(db, &lines)?;
    for (event, since, keep) in fold_repeats(writes) {
        count_repeated(db, &event, since, keep)?;
    }
    let mut done = db.prepare_cached(MARK_DONE).map_err(map_err)?;
    for w in writes {
        if let ConnectionWrite::Done {
            connection,
            dedup_id,
        } = w
        {
            done.execute(params![connection.to_string(), dedup_id])
                .map_err(map_err)?;
        }
    }
    Ok(applied)
}

/// Appends lines in order and trims each connection's log to the fewest lines any of them
/// keeps.
fn append_lines(db: &Connection, lines: &[(&NewConnectionEvent, u32)]) -> StoreResult<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut touched: Vec<(ConnectionId, u32)> = Vec::new();
    let mut append = db.prepare_cached(APPEND_LINE).map_err(map_err)?;
    for &(e, keep) in lines {
        let detail = to_json(&e.detail, "event detail")?;
        append
            .execute(params![
                e.connection_id.to_string(),
                ts(e.at),
                e.kind,
                detail
            ])
            .map_err(map_err)?;
        match touched.iter_mut().find(|(c, _)| *c == e.connection_id) {
            Some((_, k)) => *k = (*k).min(keep),
            None => touched.push((e.connection_id, keep)),
        }
    }
    let mut trim = db.prepare_cached(TRIM_LOG).map_err(map_err)?;
    for (c, keep) in touched {
        trim.execute(params![c.to_string(), i64::from(keep)])
            .map_err(map_err)?;
    }
    Ok(())
}

/// Counts occurrences into the connection's newest line of their kind if it started at or
/// after `since`, else appends a line for them.
fn count_repeated(
    db: &Connection,
    event: &RepeatedConnectionEvent,
    since: DateTime<chrono::Utc>,
    keep: u32,
) -> StoreResult<()> {
    let newest: Option<(i64, String, String)> = db
        .prepare_cached(NEWEST_OF_KIND)
        .and_then(|mut q| {
            q.query_row(params![event.connection_id.to_string(), event.kind], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(map_err)?;
    let joined = match newest {
        Some((id, at, detail)) if parse_ts(&at)? >= since => Some((
            id,
            parse_json::<serde_json::Value>(&detail, "event detail")?,
        )),
        _ => None,
    };
    match joined {
        Some((id, detail)) => {
            let detail = to_json(&event.detail(Some(&detail)), "event detail")?;
            db.prepare_cached("UPDATE connection_events SET detail = ?1 WHERE id = ?2")
                .and_then(|mut q| q.execute(params![detail, id]))
                .map_err(map_err)?;
            Ok(())
        }
        None => {
            let line = event.new_line();
            append_lines(db, &[(&line, keep)])
        }
    }
}

/// The stored epochs of the batch's sessions (those that exist).
fn stored_epochs(
    db: &Connection,
    batch: &[SessionWrites],
) -> StoreResult<HashMap<SessionId, Epoch>> {
    let ids: HashSet<SessionId> = batch.iter().map(|g| g.session).collect();
    let mut q = db
        .prepare_cached("SELECT epoch FROM sessions WHERE id = ?1")
        .map_err(map_err)?;
    let mut stored = HashMap::with_capacity(ids.len());
    for id in ids {
        let epoch: Option<Epoch> = q
            .query_row([id.to_string()], |r| r.get(0))
            .optional()
            .map_err(map_err)?;
        if let Some(e) = epoch {
            stored.insert(id, e);
        }
    }
    Ok(stored)
}

/// A message id must be new in its session, else the batch is a Conflict. Sessions write
/// their ids in order, so the check is usually that the id is above the session's newest;
/// only an id at or below it is looked up (in the batch, the index and the unindexed rows).
fn check_new_ids(db: &Connection, unindexed: &Unindexed, messages: &[&Message]) -> StoreResult<()> {
    let ids: HashSet<SessionId> = messages.iter().map(|m| m.session_id).collect();
    let mut newest = unindexed.last_ids(ids.iter().copied());
    let mut last_stored = db
        .prepare_cached(
            "SELECT id FROM message_index WHERE session_id = ?1 ORDER BY id DESC LIMIT 1",
        )
        .map_err(map_err)?;
    let unknown: Vec<SessionId> = ids
        .into_iter()
        .filter(|s| !newest.contains_key(s))
        .collect();
    for s in unknown {
        let id: Option<i64> = last_stored
            .query_row([s.to_string()], |r| r.get(0))
            .optional()
            .map_err(map_err)?;
        newest.insert(s, id.unwrap_or(0));
    }
    for (i, m) in messages.iter().enumerate() {
        let last = newest.entry(m.session_id).or_insert(0);
        if m.id > *last {
            *last = m.id;
            continue;
        }
        let in_batch = messages[..i]
            .iter()
            .any(|o| o.session_id == m.session_id && o.id == m.id);
        let sid = m.session_id.to_string();
        let indexed = db
            .prepare_cached("SELECT 1 FROM message_index WHERE session_id = ?1 AND id = ?2")
            .and_then(|mut q| q.exists(params![sid, m.id]))
            .map_err(map_err)?;
        let not_yet_indexed = match unindexed.span(m.session_id) {
            Some(span) => db
                .prepare_cached(
                    "SELECT 1 FROM messages WHERE seq >= ?3 AND session_id = ?1 AND id = ?2",
                )
                .and_then(|mut q| q.exists(params![sid, m.id, span.first_seq]))
                .map_err(map_err)?,
            None => false,
        };
        if in_batch || indexed || not_yet_indexed {
            return Err(StoreError::Conflict(format!(
                "message {} of session {} exists already",
                m.id, m.session_id
            )));
        }
    }
    Ok(())
}

/// Sorts rusqlite errors into the store's kinds.
pub(super) fn map_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::ConstraintViolation => StoreError::Conflict(e.to_string()),
            ErrorCode::TooBig => StoreError::Refused(e.to_string()),
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase | ErrorCode::TypeMismatch => {
                StoreError::Corrupt(e.to_string())
            }
            _ => StoreError::Unavailable(e.to_string()),
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}
