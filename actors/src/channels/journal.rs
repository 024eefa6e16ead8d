//! The store writes of connections: deliveries recorded (the platform is answered after),
//! deliveries marked done, event-log lines. They go through the node's persistence writer
//! and commit in its group-commit transactions beside the sessions' turns, so under load
//! a message costs its connection no transaction of its own; and they keep working when
//! the supervised writer restarts, as sessions' writes do.

use std::future::Future;
use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use parley_engine::connection::ConnectionId;
use parley_engine::inbound::InboundMessage;
use parley_engine::store::{
    ConnectionWrite, LogLine, NewConnectionEvent, RepeatedConnectionEvent, StoreError, StoreResult,
};

use super::chats::EVENTS_KEPT;
use crate::node::PersistenceSlot;

/// Repeated lines (rejected deliveries) count into one line per this long, so a flood
/// adds at most 24 lines a day to a log that keeps [`EVENTS_KEPT`].
const REPEATS_WINDOW: TimeDelta = TimeDelta::hours(1);

/// Hands connections' writes to the persistence writer (whichever runs now).
#[derive(Clone)]
pub struct Journal {
    writer: Arc<PersistenceSlot>,
}

/// A line for a connection's log, stamped now.
pub fn line(connection: ConnectionId, kind: &str, detail: serde_json::Value) -> LogLine {
    LogLine {
        event: NewConnectionEvent {
            connection_id: connection,
            at: Utc::now(),
            kind: kind.to_string(),
            detail,
        },
        keep: EVENTS_KEPT,
    }
}

impl Journal {
    pub(crate) fn new(writer: Arc<PersistenceSlot>) -> Journal {
        Journal { writer }
    }

    /// Queues the writes now (whatever is queued after them commits after them); the
    /// answer, one flag per write, resolves once they are committed.
    pub fn write(
        &self,
        writes: Vec<ConnectionWrite>,
    ) -> impl Future<Output = StoreResult<Vec<bool>>> {
        let queued = self
            .writer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, q)| q.commit_connection(writes));
        async move {
            match queued {
                Some(committed) => committed.await,
                None => Err(StoreError::Unavailable(
                    "the persistence writer is restarting".into(),
                )),
            }
        }
    }

    /// Records a delivery, with `line` for the log if it is new; false for a duplicate.
    /// Answers once it is committed.
    pub async fn insert(
        &self,
        connection: ConnectionId,
        message: InboundMessage,
        line: Option<LogLine>,
    ) -> StoreResult<bool> {
        let write = ConnectionWrite::Inbox {
            connection,
            message: Box::new(message),
            at: Utc::now(),
            line,
        };
        let applied = self.write(vec![write]).await?;
        Ok(applied.first().copied().unwrap_or(false))
    }

    /// Marks a delivery done, with `line` for the log; queued now, answered once
    /// committed.
    pub fn done(
        &self,
        connection: ConnectionId,
        dedup_id: String,
        line: Option<LogLine>,
    ) -> impl Future<Output = StoreResult<()>> {
        let mut writes = vec![ConnectionWrite::Done {
            connection,
            dedup_id,
        }];
        writes.extend(line.map(ConnectionWrite::Line));
        let written = self.write(writes);
        async move { written.await.map(|_| ()) }
    }

    /// Appends a line to a connection's event log without waiting (a failure is traced).
    pub fn event(&self, event: NewConnectionEvent) {
        drop(self.write(vec![ConnectionWrite::Line(LogLine {
            event,
            keep: EVENTS_KEPT,
        })]));
    }

    /// Appends a line stamped now: it is queued at once (lines keep their order), and
    /// the answer resolves once it is written, for whoever must find it in the log before
    /// being answered (a platform, an operator).
    pub fn log(
        &self,
        connection: ConnectionId,
        kind: &str,
        detail: serde_json::Value,
    ) -> impl Future<Output = ()> {
        let written = self.write(vec![ConnectionWrite::Line(line(connection, kind, detail))]);
        async move {
            let _ = written.await;
        }
    }

    /// [`Journal::log`] for what may come in floods (rejected deliveries): counted into
    /// the connection's line of this kind of the current window, with the latest detail
    /// as the sample, instead of a line each.
    pub fn log_repeated(
        &self,
        connection: ConnectionId,
        kind: &str,
        detail: serde_json::Value,
    ) -> impl Future<Output = ()> {
        let now = Utc::now();
        let write = ConnectionWrite::Repeated {
            event: RepeatedConnectionEvent {
                connection_id: connection,
                kind: kind.to_string(),
                first_at: now,
                last_at: now,
                count: 1,
                sample: detail,
            },
            since: now - REPEATS_WINDOW,
            keep: EVENTS_KEPT,
        };
        let written = self.write(vec![write]);
        async move {
            let _ = written.await;
        }
    }
}
