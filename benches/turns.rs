//! Committed turns per second through the whole actor path (router -> SessionActor ->
//! builtin backend -> PersistenceActor group commit -> SQLite), against a bare baseline
//! measured in the same run: the rows an ordinary turn writes (the customer's message and
//! the answer, with metadata like the actor path's) written straight to SQLite in one
//! transaction per batch, with no actors, no backend and no routing.
//!
//! `cargo bench --bench turns` prints criterion's figures and a summary with the ratio and
//! the group-commit batch sizes.

mod support;

use std::time::{Duration, Instant};

// The allocator the server binary ships with (src/main.rs), so the bench measures the path
// as it runs in production; the bare baseline shares it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chrono::Utc;
use criterion::{criterion_group, Criterion, Throughput};
use parley_actors::session::TurnRequest;
use parley_actors::Node;
use parley_engine::model::{Feedback, Message, Role, SessionId};
use parley_engine::store::{Epoch, SessionWrites, SqliteStore, Store, Write};
use support::{bench_node, BenchNode, Totals};
use uuid::Uuid;

/// Sessions driven concurrently (each has at most one turn in flight, like a customer).
const SESSIONS: usize = 2000;

static ACTOR: Totals = Totals::new();
static BARE: Totals = Totals::new();

struct Fixture {
    node: Node,
    agent: Uuid,
    sessions: Vec<SessionId>,
    _bench: BenchNode,
}

async fn fixture() -> Fixture {
    let bench = bench_node().await;
    let node = bench.node.clone();
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        let s = node
            .create_session(bench.agent, Default::default())
            .await
            .unwrap();
        sessions.push(s.id);
    }
    Fixture {
        node,
        agent: bench.agent,
        sessions,
        _bench: bench,
    }
}

const QUESTIONS: [&str; 4] = [
    "How much does the Premium card cost?",
    "What is the daily spending limit?",
    "Can I use Apple Pay?",
    "How much is an ATM withdrawal with Basic Debit?",
];

async fn drive(f: &Fixture, turns: u64) -> Duration {
    let per_session = turns.div_ceil(SESSIONS as u64);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(SESSIONS);
    for (i, &sid) in f.sessions.iter().enumerate() {
        let node = f.node.clone();
        let agent = f.agent;
        tasks.push(tokio::spawn(async move {
            for n in 0..per_session {
                let req = TurnRequest {
                    agent_id: agent,
                    text: QUESTIONS[(i + n as usize) % QUESTIONS.len()].to_string(),
                    attachments: Vec::new(),
                    idempotency_key: None,
                    new_key: false,
                };
                node.turn(sid, req).await.expect("turn committed");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let d = start.elapsed();
    ACTOR.record(per_session * SESSIONS as u64, d);
    d.mul_f64(turns as f64 / (per_session * SESSIONS as u64) as f64)
}

/// The rows a turn writes, committed in batches as large as the actor path's mean batch.
async fn bare(
    store: &SqliteStore,
    sessions: &[SessionId],
    next_id: &mut i64,
    turns: u64,
    batch: usize,
) -> Duration {
    let start = Instant::now();
    let mut done = 0u64;
    while done < turns {
        let n = batch.min((turns - done) as usize);
        let mut groups = Vec::with_capacity(n);
        for k in 0..n {
            let session_id = sessions[k % sessions.len()];
            let mut writes = Vec::with_capacity(2);
            *next_id += 2;
            for (role, id) in [(Role::Human, *next_id - 1), (Role::Ai, *next_id)] {
                let metadata = if role == Role::Ai {
                    serde_json::json!({"backend": "knowledge-base", "state": "SalesSupport",
                        "backend_metadata": {"source": "faq", "score": 4.942}})
                } else {
                    serde_json::Value::Null
                };
                writes.push(Write::Message(Box::new(Message {
                    id,
                    session_id,
                    role,
                    text: QUESTIONS[k % 4].to_string(),
                    timestamp: Utc::now(),
                    attachments: Vec::new(),
                    metadata,
                    feedback: Feedback::None,
                    idempotency_key: None,
                })));
            }
            // The newest epoch there can be: the baseline is never fenced.
            groups.push(SessionWrites {
                session: session_id,
                epoch: Epoch::MAX,
                writes,
            });
        }
        store.commit(&groups).await.unwrap();
        done += n as u64;
    }
    let d = start.elapsed();
    BARE.record(turns, d);
    d
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(fixture());

    let mut g = c.benchmark_group("turns");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("actor_path_builtin_sqlite", |b| {
        b.iter_custom(|iters| rt.block_on(drive(&f, iters)))
    });
    let stats = rt.block_on(f.node.shared().persistence().stats()).unwrap();
    let mean_batch = stats.mean_batch().round().max(1.0) as usize;

    // The baseline writes into a fresh store of its own.
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(async {
        let s = SqliteStore::open(&dir.path().join("bare.db"))
            .await
            .unwrap();
        s.migrate().await.unwrap();
        s
    });
    // One conversation per turn of a batch, as on the actor path.
    let sessions: Vec<SessionId> = (0..mean_batch.max(1)).map(|_| Uuid::now_v7()).collect();
    let mut next_id = 0i64;
    g.bench_function("bare_sqlite_same_rows", |b| {
        b.iter_custom(|iters| rt.block_on(bare(&store, &sessions, &mut next_id, iters, mean_batch)))
    });
    g.finish();

    let (actor, bare_rate) = (ACTOR.rate(), BARE.rate());
    println!("\n== summary (this run) ==");
    println!("actor path, builtin backend, SQLite group commit: {actor:>10.0} committed turns/s ({SESSIONS} concurrent sessions)");
    println!("bare SQLite, same rows, same batch size:          {bare_rate:>10.0} turns/s");
    println!(
        "ratio actor path / bare store:                    {:>10.3}",
        actor / bare_rate
    );
    println!(
        "group commit: {} batches, mean {:.1} turns/batch, largest {}, mean commit {:.2} ms",
        stats.batches,
        stats.mean_batch(),
        stats.largest_batch,
        stats.commit_seconds * 1000.0 / stats.batches.max(1) as f64
    );
}

criterion_group!(turns, benches);

fn main() {
    turns();
    Criterion::default().configure_from_args().final_summary();
}
