//! The PersistenceActor: group commit for every session and connection of the node.
//!
//! Sessions hand their writes to the actor's writer and wait for the commit; connections
//! hand theirs (deliveries recorded, done marks, event-log lines), which commit in the
//! same transactions. The writer
//! runs on a thread of its own: it takes everything queued (up to `max_batch` requests),
//! commits it in one transaction and releases every waiter; whatever arrives meanwhile is
//! the next batch. Batch size thus follows load, and an idle node commits each turn at once.
//! Keeping the writer off the shared runtime matters: a transaction is several round trips
//! to the database driver, and on the runtime each would queue behind every runnable
//! session, stretching every commit under load.
//!
//! One request's bad writes fail that request only (see `commit_isolating`), so no write
//! can kill the writer. The actor still supervises it: if the writer dies the actor fails,
//! and the node supervisor starts a new one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use parley_engine::store::{
    commit_isolating, ConnectionWrite, RequestOutcome, SessionWrites, Store, StoreError,
    StoreResult, Write,
};
use parley_engine::telemetry;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, oneshot, Notify};

/// Why a commit did not happen.
#[derive(Debug, Clone)]
pub enum CommitError {
    /// The session was claimed by another owner since these writes' epoch.
    Fenced,
    /// The store failed or refused these writes (or the writer is restarting).
    Failed(StoreError),
}

/// A committed request's writes go back to its session, which still needs its messages and
/// lets them drop off the writer's thread.
type Reply = oneshot::Sender<Result<Vec<Write>, CommitError>>;

/// A connection's request is answered with one flag per write (see
/// [`parley_engine::store::Committed::applied`]).
type ConnectionReply = oneshot::Sender<StoreResult<Vec<bool>>>;

enum Job {
    Session(SessionWrites, Reply),
    Connection(Vec<ConnectionWrite>, ConnectionReply),
}

fn restarting() -> StoreError {
    StoreError::Unavailable("the persistence writer is restarting".into())
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the persistence writer stopped".into())
}

/// What sessions and connections use to commit: a clone of the writer's queue.
#[derive(Clone)]
pub struct CommitQueue {
    tx: mpsc::UnboundedSender<Job>,
    /// Requests sent and not yet taken by the writer (the queue is unbounded, so this is
    /// what shows a writer falling behind).
    depth: Arc<AtomicUsize>,
}

impl CommitQueue {
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.depth.fetch_add(1, Ordering::Relaxed);
        self.tx.send(job).map_err(|_| {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            restarting()
        })
    }

    /// Commits the writes (in one transaction with whatever else is queued), waits, and
    /// hands them back.
    pub async fn commit(&self, writes: SessionWrites) -> Result<Vec<Write>, CommitError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Session(writes, tx))
            .map_err(CommitError::Failed)?;
        rx.await
            .unwrap_or_else(|_| Err(CommitError::Failed(stopped())))
    }

    /// Queues a connection's writes to commit in order, in one transaction with whatever
    /// else is queued; the answer (one flag per write) resolves once they are committed.
    /// The writes are queued at once: whatever is queued after them commits after them.
    pub fn commit_connection(
        &self,
        writes: Vec<ConnectionWrite>,
    ) -> impl std::future::Future<Output = StoreResult<Vec<bool>>> {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(Job::Connection(writes, tx));
        async move {
            sent?;
            rx.await.unwrap_or_else(|_| Err(stopped()))
        }
    }
}

pub enum PersistMsg {
    /// The writer's queue (sessions keep a clone).
    Queue(RpcReplyPort<CommitQueue>),
    /// Batch statistics so far (for benchmarks and diagnostics).
    Stats(RpcReplyPort<BatchStats>),
    /// The writer thread ended unexpectedly.
    WriterDied(String),
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchStats {
    pub batches: u64,
    /// Sessions' and connections' requests.
    pub requests: u64,
    pub writes: u64,
    pub largest_batch: u64,
    pub commit_seconds: f64,
}

impl BatchStats {
    pub fn mean_batch(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.requests as f64 / self.batches as f64
        }
    }
}

pub struct PersistenceActor;

pub struct PersistenceArgs {
    pub store: Arc<dyn Store>,
    /// Requests per batch at most.
    pub max_batch: usize,
}

pub struct PersistenceState {
    queue: CommitQueue,
    stats: Arc<Mutex<BatchStats>>,
    stop: Arc<Notify>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// Commits batches until told to stop, then commits what is still queued and returns.
async fn writer(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    depth: Arc<AtomicUsize>,
    max_batch: usize,
    stats: Arc<Mutex<BatchStats>>,
    stop: Arc<Notify>,
) {
    let mut requests = Vec::with_capacity(max_batch);
    let mut stopping = false;
    loop {
        if stopping {
            while requests.len() < max_batch {
                match rx.try_recv() {
                    Ok(r) => requests.push(r),
                    Err(_) => break,
                }
            }
            if requests.is_empty() {
                return;
            }
        } else {
            tokio::select! {
                n = rx.recv_many(&mut requests, max_batch) => if n == 0 { return },
                _ = stop.notified() => { stopping = true; continue; }
            }
        }
        depth.fetch_sub(requests.len(), Ordering::Relaxed);
        let mut sessions = Vec::with_capacity(requests.len());
        let mut waiters = Vec::with_capacity(requests.len());
        let mut connections = Vec::new();
        let mut sizes = Vec::new();
        let mut connection_waiters = Vec::new();
        for job in requests.drain(..) {
            match job {
                Job::Session(w, reply) => {
                    sessions.push(w);
                    waiters.push(reply);
                }
                Job::Connection(w, reply) => {
                    sizes.push(w.len());
                    connections.extend(w);
                    connection_waiters.push(reply);
                }
            }
        }
        let started = Instant::now();
        let outcome = commit_isolating(store.as_ref(), &sessions, &connections, &sizes).await;
        let elapsed = started.elapsed().as_secs_f64();
        let taken = waiters.len() + connection_waiters.len();
        metrics::histogram!(telemetry::COMMIT_SECONDS).record(elapsed);
        metrics::histogram!(telemetry::COMMIT_BATCH).record(taken as f64);
        let label = match (outcome.isolated, outcome.failed()) {
            (false, false) => "ok",
            (true, _) => "isolated",
            (false, true) => "error",
        };
        metrics::counter!(telemetry::COMMITS_TOTAL, "outcome" => label).increment(1);
        let fenced = outcome
            .sessions
            .iter()
            .filter(|r| matches!(r, RequestOutcome::Fenced))
            .count();
        metrics::counter!(telemetry::FENCED_TOTAL).increment(fenced as u64);
        if let Ok(mut s) = stats.lock() {
            s.batches += 1;
            s.requests += taken as u64;
            s.writes += sessions.iter().map(|g| g.writes.len() as u64).sum::<u64>()
                + connections.len() as u64;
            s.largest_batch = s.largest_batch.max(taken as u64);
            s.commit_seconds += elapsed;
        }
        for ((group, w), r) in sessions.into_iter().zip(waiters).zip(outcome.sessions) {
            let r = match r {
                RequestOutcome::Committed => Ok(group.writes),
                RequestOutcome::Fenced => {
                    tracing::warn!(session = %group.session, epoch = group.epoch, "writes refused: the session has a newer owner");
                    Err(CommitError::Fenced)
                }
                RequestOutcome::Failed(e) => Err(CommitError::Failed(e)),
            };
            let _ = w.send(r);
        }
        for (w, r) in connection_waiters.into_iter().zip(outcome.connections) {
            if let Err(e) = &r {
                // Lines are often queued without waiting: their loss shows here.
                tracing::warn!(error = %e, "could not write a connection's deliveries or log lines");
            }
            let _ = w.send(r);
        }
    }
}

impl Actor for PersistenceActor {
    type Msg = PersistMsg;
    type State = PersistenceState;
    type Arguments = PersistenceArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (tx, rx) = mpsc::unbounded_channel();
        let depth = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(Mutex::new(BatchStats::default()));
        let stop = Arc::new(Notify::new());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (store, max_batch) = (args.store, args.max_batch.max(1));
        let (st, sp, d) = (stats.clone(), stop.clone(), depth.clone());
        let writer = std::thread::Builder::new()
            .name("parley-commit".into())
            .spawn(move || {
                let done = rt.block_on(async move {
                    tokio::spawn(writer(store, rx, d, max_batch, st, sp)).await
                });
                if let Err(e) = done {
                    let _ = myself.send_message(PersistMsg::WriterDied(e.to_string()));
                }
            })?;
        Ok(PersistenceState {
            queue: CommitQueue { tx, depth },
            stats,
            stop,
            writer: Some(writer),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PersistMsg::Queue(reply) => {
                let _ = reply.send(state.queue.clone());
            }
            PersistMsg::Stats(reply) => {
                let _ = reply.send(state.stats.lock().map(|s| *s).unwrap_or_default());
            }
            PersistMsg::WriterDied(e) => return Err(format!("persistence writer died: {e}").into()),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Whatever was queued is committed before the actor is gone.
        state.stop.notify_one();
        if let Some(w) = state.writer.take() {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        Ok(())
    }
}
