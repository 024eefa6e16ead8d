//! The store writes of connections, group-committed: deliveries recorded (the platform
//! is answered after), deliveries marked done, event-log lines. Under load each kind
//! commits in one transaction per batch instead of one per message, as turns do through
//! the persistence actor; alone, a write goes out at once.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use parley_engine::connection::ConnectionId;
use parley_engine::inbound::InboundMessage;
use parley_engine::store::{
    NewConnectionEvent, RepeatedConnectionEvent, Store, StoreError, StoreResult,
};
use tokio::sync::{mpsc, oneshot};

use super::chats::EVENTS_KEPT;

/// Most writes one round takes.
const MAX_BATCH: usize = 1024;

/// Repeated lines (rejected deliveries) count into one line per this long, so a flood
/// adds at most 24 lines a day to a log that keeps [`EVENTS_KEPT`].
const REPEATS_WINDOW: TimeDelta = TimeDelta::hours(1);

enum Op {
    Insert(
        ConnectionId,
        InboundMessage,
        oneshot::Sender<StoreResult<bool>>,
    ),
    Done(ConnectionId, String, oneshot::Sender<StoreResult<()>>),
    /// With a reply: the writer answers once the line is committed (or failed).
    Event(NewConnectionEvent, Option<oneshot::Sender<()>>),
    /// Counted into the window's line of its kind; answered once written.
    Repeated(NewConnectionEvent, oneshot::Sender<()>),
}

/// Hands writes to the journal's writer task.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::UnboundedSender<Op>,
}

fn gone() -> StoreError {
    StoreError::Unavailable("the connector journal stopped".into())
}

impl Journal {
    /// Starts the writer task (it ends when every handle is dropped).
    pub fn start(store: Arc<dyn Store>) -> Journal {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(store, rx));
        Journal { tx }
    }

    /// Records a delivery; false for a duplicate. Answers once it is committed.
    pub async fn insert(&self, connection: ConnectionId, msg: InboundMessage) -> StoreResult<bool> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Op::Insert(connection, msg, reply))
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Marks a delivery done; answers once it is committed.
    pub async fn done(&self, connection: ConnectionId, dedup_id: String) -> StoreResult<()> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Op::Done(connection, dedup_id, reply))
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Appends a line to a connection's event log without waiting (a failure is traced).
    pub fn event(&self, event: NewConnectionEvent) {
        let _ = self.tx.send(Op::Event(event, None));
    }

    /// Appends a line stamped now: it is queued at once (lines keep their order), and
    /// the answer resolves once it is written, for whoever must find it in the log before
    /// being answered (a platform, an operator).
    pub fn log(
        &self,
        connection: ConnectionId,
        kind: &str,
        detail: serde_json::Value,
    ) -> impl std::future::Future<Output = ()> {
        let event = stamped(connection, kind, detail);
        self.queue(|reply| Op::Event(event, Some(reply)))
    }

    /// [`Journal::log`] for what may come in floods (rejected deliveries): counted into
    /// the connection's line of this kind of the current window, with the latest detail
    /// as the sample, instead of a line each.
    pub fn log_repeated(
        &self,
        connection: ConnectionId,
        kind: &str,
        detail: serde_json::Value,
    ) -> impl std::future::Future<Output = ()> {
        let event = stamped(connection, kind, detail);
        self.queue(|reply| Op::Repeated(event, reply))
    }

    /// Queues `op` now; the future resolves once the writer has written it.
    fn queue(
        &self,
        op: impl FnOnce(oneshot::Sender<()>) -> Op,
    ) -> impl std::future::Future<Output = ()> {
        let (reply, written) = oneshot::channel();
        let _ = self.tx.send(op(reply));
        async move {
            let _ = written.await;
        }
    }
}

fn stamped(connection: ConnectionId, kind: &str, detail: serde_json::Value) -> NewConnectionEvent {
    NewConnectionEvent {
        connection_id: connection,
        at: Utc::now(),
        kind: kind.to_string(),
        detail,
    }
}

/// Folds a batch's repeated lines into one per connection and kind.
fn fold_repeats(events: Vec<NewConnectionEvent>) -> Vec<RepeatedConnectionEvent> {
    let mut folded: Vec<RepeatedConnectionEvent> = Vec::new();
    for e in events {
        match folded
            .iter_mut()
            .find(|r| r.connection_id == e.connection_id && r.kind == e.kind)
        {
            Some(r) => {
                r.count += 1;
                r.last_at = e.at;
                r.sample = e.detail;
            }
            None => folded.push(RepeatedConnectionEvent {
                connection_id: e.connection_id,
                kind: e.kind,
                first_at: e.at,
                last_at: e.at,
                count: 1,
                sample: e.detail,
            }),
        }
    }
    folded
}

async fn write(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut ops = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut ops, MAX_BATCH).await > 0 {
        let mut inserts = Vec::new();
        let mut insert_replies = Vec::new();
        let mut dones = Vec::new();
        let mut done_replies = Vec::new();
        let mut events = Vec::new();
        let mut event_replies = Vec::new();
        let mut repeats = Vec::new();
        for op in ops.drain(..) {
            match op {
                Op::Insert(c, m, reply) => {
                    inserts.push((c, m));
                    insert_replies.push(reply);
                }
                Op::Done(c, d, reply) => {
                    dones.push((c, d));
                    done_replies.push(reply);
                }
                Op::Event(e, reply) => {
                    events.push(e);
                    event_replies.extend(reply);
                }
                Op::Repeated(e, reply) => {
                    repeats.push(e);
                    event_replies.push(reply);
                }
            }
        }
        // Events first: a delivery's line lands before its reply's.
        if !events.is_empty() {
            if let Err(e) = store.add_connection_events(&events, EVENTS_KEPT).await {
                tracing::warn!(error = %e, lines = events.len(), "could not write connection events");
            }
        }
        if !repeats.is_empty() {
            let since = Utc::now() - REPEATS_WINDOW;
            for r in fold_repeats(repeats) {
                let written = store
                    .add_repeated_connection_event(&r, since, EVENTS_KEPT)
                    .await;
                if let Err(e) = written {
                    tracing::warn!(error = %e, count = r.count, "could not count repeated connection events");
                }
            }
        }
        for reply in event_replies {
            let _ = reply.send(());
        }
        if !inserts.is_empty() {
            match store.inbox_insert_many(&inserts, Utc::now()).await {
                Ok(fresh) => {
                    for (reply, f) in insert_replies.into_iter().zip(fresh) {
                        let _ = reply.send(Ok(f));
                    }
                }
                Err(e) => {
                    for reply in insert_replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
        if !dones.is_empty() {
            let outcome = store.inbox_done_many(&dones).await;
            for reply in done_replies {
                let _ = reply.send(outcome.clone());
            }
        }
    }
}
