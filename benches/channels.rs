//! Platform messages answered per second through a connection — the Telegram hook
//! (secret check, parse, dedup inbox, event log), the chat worker (session mapping), the
//! turn, and the answer sent to a local Bot API fake over loopback HTTP — against the
//! bare baseline measured in the same run: the same turns sent straight to the session
//! actors (`Node::turn`), with the same agent, store and concurrency.
//!
//! `cargo bench --bench channels` prints criterion's figures and a summary with the ratio.

#[allow(dead_code, reason = "each bench uses part of the shared support")]
mod support;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use criterion::{criterion_group, Criterion, Throughput};
use parley_actors::channels::hooks::HookRequest;
use parley_actors::node::NewConnection;
use parley_actors::session::TurnRequest;
use parley_actors::{Node, NodeConfig};
use parley_engine::connection::ConnectionId;
use parley_engine::inbound::Platform;
use parley_engine::model::SessionId;
use parley_engine::store::AgentChannel;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};
use support::{bench_node_with, BenchNode, Totals};
use tokio::sync::Notify;

/// Chats (and, for the baseline, sessions) driven at once.
const CHATS: usize = 200;
const TOKEN: &str = "42:bench";
const QUESTION: &str = "How much does the Premium card cost?";

static CHANNEL: Totals = Totals::new();
static DIRECT: Totals = Totals::new();
/// Group commits (store transactions) and messages of the channel runs.
static CHANNEL_COMMITS: AtomicU64 = AtomicU64::new(0);
static CHANNEL_MESSAGES: AtomicU64 = AtomicU64::new(0);

/// Answers sent to the fake Bot API, and a wake-up when they reach a target.
struct Sent {
    count: AtomicU64,
    target: AtomicU64,
    reached: Notify,
}

async fn fake_telegram(sent: Arc<Sent>) -> String {
    let next = Arc::new(AtomicI64::new(1));
    let app = Router::new().route(
        "/{bot}/{method}",
        post(move |axum::extract::Path((_bot, method)): axum::extract::Path<(String, String)>, Json(body): Json<Value>| {
            let (sent, next) = (sent.clone(), next.clone());
            async move {
                if method == "sendMessage" {
                    let n = sent.count.fetch_add(1, Ordering::SeqCst) + 1;
                    if n >= sent.target.load(Ordering::SeqCst) {
                        sent.reached.notify_one();
                    }
                    return Json(json!({"ok": true, "result": {"message_id": next.fetch_add(1, Ordering::Relaxed),
                        "date": 0, "chat": {"id": body["chat_id"], "type": "private"}}}));
                }
                Json(json!({"ok": true, "result": true}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

struct Fixture {
    node: Node,
    agent: uuid::Uuid,
    connection: ConnectionId,
    secret: String,
    sent: Arc<Sent>,
    sessions: Vec<SessionId>,
    next_update: AtomicI64,
    _bench: BenchNode,
}

async fn fixture() -> Fixture {
    let sent = Arc::new(Sent {
        count: AtomicU64::new(0),
        target: AtomicU64::new(u64::MAX),
        reached: Notify::new(),
    });
    let base = fake_telegram(sent.clone()).await;
    let bench = bench_node_with(NodeConfig {
        public_url: Some("https://bench.example".into()),
        ..NodeConfig::default()
    })
    .await;
    let node = bench.node.clone();
    let mut config = serde_json::Map::new();
    config.insert("bot_token".into(), json!(TOKEN));
    config.insert("api_base".into(), json!(base));
    // Answers only at the end: the engine's cost, not the pacing of streamed edits.
    config.insert("streaming".into(), json!(false));
    let c = node
        .create_connection(
            bench.tenant,
            NewConnection {
                name: "bench".into(),
                platform: Platform::Telegram,
                description: None,
                enabled: true,
                config,
                advanced: None,
                // No platform limits: this measures parley, not Telegram's quotas.
                rate_limits: Some(
                    json!({"per_second": null, "per_chat_per_second": null, "queue": 100000}),
                ),
            },
        )
        .await
        .unwrap();
    node.set_agent_channels(
        bench.tenant,
        bench.agent,
        vec![AgentChannel {
            connection_id: c.id,
            inbound: true,
        }],
    )
    .await
    .unwrap();
    let started = node.start_connection(bench.tenant, c.id).await.unwrap();
    assert_eq!(
        started.status.as_str(),
        "Connected",
        "{:?}",
        started.status_error
    );
    let mut sessions = Vec::new();
    for _ in 0..CHATS {
        sessions.push(
            node.create_session(bench.agent, Default::default())
                .await
                .unwrap()
                .id,
        );
    }
    Fixture {
        node,
        agent: bench.agent,
        connection: c.id,
        secret: parley_connectors::telegram::webhook_secret(TOKEN),
        sent,
        sessions,
        next_update: AtomicI64::new(1),
        _bench: bench,
    }
}

/// `turns` Telegram updates spread over the chats (each chat's in order), timed until the
/// fake has every answer.
async fn through_channel(f: &Fixture, turns: u64) -> Duration {
    let per_chat = turns.div_ceil(CHATS as u64);
    let total = per_chat * CHATS as u64;
    let before = f.sent.count.load(Ordering::SeqCst);
    f.sent.target.store(before + total, Ordering::SeqCst);
    let batches = || async { f.node.shared().persistence().stats().await.unwrap().batches };
    let batches_before = batches().await;
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-telegram-bot-api-secret-token",
        HeaderValue::from_str(&f.secret).unwrap(),
    );
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(CHATS);
    for chat in 0..CHATS {
        let ids: Vec<i64> = (0..per_chat)
            .map(|_| f.next_update.fetch_add(1, Ordering::Relaxed))
            .collect();
        let (node, id, headers) = (f.node.clone(), f.connection, headers.clone());
        tasks.push(tokio::spawn(async move {
            for update_id in ids {
                let body = json!({"update_id": update_id, "message": {"message_id": update_id,
                    "date": chrono::Utc::now().timestamp(), "chat": {"id": 10_000 + chat, "type": "private"},
                    "from": {"id": 10_000 + chat, "is_bot": false, "first_name": "B"},
                    "text": QUESTION}});
                let answer = node
                    .receive_hook(
                        id,
                        HookRequest {
                            get: false,
                            headers: headers.clone(),
                            query: Default::default(),
                            body: body.to_string().into(),
                        },
                    )
                    .await;
                assert_eq!(answer.status, 200, "{answer:?}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    while f.sent.count.load(Ordering::SeqCst) < before + total {
        let _ = tokio::time::timeout(Duration::from_millis(50), f.sent.reached.notified()).await;
    }
    let d = start.elapsed();
    CHANNEL.record(total, d);
    CHANNEL_COMMITS.fetch_add(batches().await - batches_before, Ordering::Relaxed);
    CHANNEL_MESSAGES.fetch_add(total, Ordering::Relaxed);
    d.mul_f64(turns as f64 / total as f64)
}

/// The same turns sent straight to the session actors.
async fn direct(f: &Fixture, turns: u64) -> Duration {
    let per_session = turns.div_ceil(CHATS as u64);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(CHATS);
    for &sid in &f.sessions {
        let (node, agent) = (f.node.clone(), f.agent);
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_session {
                let req = TurnRequest {
                    agent_id: agent,
                    text: QUESTION.to_string(),
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
    let total = per_session * CHATS as u64;
    DIRECT.record(total, d);
    d.mul_f64(turns as f64 / total as f64)
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(fixture());
    let mut g = c.benchmark_group("channels");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("telegram_hook_to_answer", |b| {
        b.iter_custom(|iters| rt.block_on(through_channel(&f, iters)))
    });
    g.bench_function("direct_turn_baseline", |b| {
        b.iter_custom(|iters| rt.block_on(direct(&f, iters)))
    });
    g.finish();
    let (channel, direct) = (CHANNEL.rate(), DIRECT.rate());
    println!("\n== summary (this run) ==");
    println!("Telegram hook -> turn -> answer sent: {channel:>10.0} messages/s ({CHATS} chats)");
    println!("direct turns (Node::turn):           {direct:>10.0} turns/s ({CHATS} sessions)");
    println!(
        "ratio channel / direct:              {:>10.3}",
        channel / direct
    );
    println!(
        "store transactions per message:      {:>10.3} (the channel's and the turn's writes, group-committed)",
        CHANNEL_COMMITS.load(Ordering::Relaxed) as f64
            / CHANNEL_MESSAGES.load(Ordering::Relaxed).max(1) as f64
    );
}

criterion_group!(channels, benches);

fn main() {
    channels();
    Criterion::default().configure_from_args().final_summary();
}
