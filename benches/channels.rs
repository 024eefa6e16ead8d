//! Platform messages answered per second through a connection, end to end over loopback
//! HTTP: the platform posts to the `parley` server's hook (`POST /hooks/{connection}`,
//! keep-alive), the delivery becomes a turn, and the answer is sent to a local fake of the
//! platform's API. Measured in the same run, on the same server, agent (builtin backend)
//! and concurrency (200 chats or sessions, each with its messages in order):
//! - Telegram: an update with the secret token header, answered with sendMessage;
//! - Slack: a signed Events API delivery (a message in a thread), answered with
//!   chat.postMessage in that thread;
//! - the baselines: REST chat-API turns (`run_v2`, one HTTP exchange per turn, where a
//!   platform message costs two: the hook and the platform call) and in-process
//!   `Node::turn`;
//! - a 2-node cluster on Postgres and Redis: Telegram deliveries posted to the node that
//!   does not own the chat's session, which forwards them, against REST turns posted to
//!   the owner (skipped with a notice without Postgres or Redis);
//! - store round trips per steady-state message on each path (support/store_counts.rs).
//!
//! `cargo bench --bench channels` prints criterion's figures, then a summary with one
//! `ratio channel / <baseline>: X` line per baseline.

#[allow(dead_code, reason = "each bench uses part of the shared support")]
mod support;

#[path = "support/platforms.rs"]
mod platforms;
#[path = "support/server.rs"]
mod server;
#[path = "support/store_counts.rs"]
mod store_counts;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use parley_actors::session::TurnRequest;
use parley_actors::Node;
use parley_engine::model::SessionId;
use platforms::Answers;
use reqwest::Client;
use serde_json::json;
use server::{Agent, BenchServer};
use store_counts::{Kind, StatementCounter, Statements};
use support::Totals;
use uuid::Uuid;

// The allocator the server binary ships with (src/main.rs): the paths run as in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Chats (and, for the baselines, sessions) driven at once.
const CHATS: usize = 200;
const QUESTION: &str = "How much does the Premium card cost?";
/// Messages per chat (or session) in each phase whose store round trips are counted.
const COUNTED_PER_CHAT: u64 = 2;
/// Quiet time around a counted phase, so that background writes of the previous phase
/// are done before it and its own (the journal's, after the answers) land inside it.
const SETTLE: Duration = Duration::from_millis(700);

static TELEGRAM: Totals = Totals::new();
static SLACK: Totals = Totals::new();
static REST: Totals = Totals::new();
static DIRECT: Totals = Totals::new();
static FORWARDED: Totals = Totals::new();
static CLUSTER_REST: Totals = Totals::new();

/// Telegram update ids and Slack event numbers: unique in the run, so no delivery is
/// taken for a platform's retry of an earlier one.
static NEXT_DELIVERY: AtomicU64 = AtomicU64::new(1);

/// The secret Telegram sends with each update, as parley registered it with setWebhook.
static TELEGRAM_SECRET: LazyLock<String> =
    LazyLock::new(|| parley_connectors::telegram::webhook_secret(platforms::TELEGRAM_TOKEN));

#[derive(Clone, Copy, PartialEq, Eq)]
enum Platform {
    Telegram,
    Slack,
}

/// Where each chat's deliveries go, and the fake that receives the answers.
struct Channel {
    platform: Platform,
    /// The hook URL chat `i` posts to.
    hooks: Vec<String>,
    answers: Arc<Answers>,
}

/// Posts one delivery of chat `chat`; panics unless the hook accepts it.
async fn deliver(http: &Client, ch: &Channel, chat: usize) {
    let n = NEXT_DELIVERY.fetch_add(1, Ordering::Relaxed);
    let rb = http
        .post(&ch.hooks[chat])
        .header("content-type", "application/json");
    let rb = match ch.platform {
        Platform::Telegram => rb
            .header("x-telegram-bot-api-secret-token", TELEGRAM_SECRET.as_str())
            .body(platforms::telegram_update(n as i64, chat, QUESTION)),
        Platform::Slack => {
            let (timestamp, signature, body) = platforms::slack_event(n, chat, QUESTION);
            rb.header("x-slack-request-timestamp", timestamp)
                .header("x-slack-signature", signature)
                .body(body)
        }
    };
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert!(status.is_success(), "hook: {status} {body}");
}

/// `per_chat` deliveries of every chat (each chat's next one once the hook answered the
/// previous), timed until the platform has received every answer.
async fn through_channel(http: &Client, ch: &Arc<Channel>, per_chat: u64) -> Duration {
    let target = ch.answers.count() + per_chat * CHATS as u64;
    let start = Instant::now();
    let tasks: Vec<_> = (0..CHATS)
        .map(|chat| {
            let (http, ch) = (http.clone(), ch.clone());
            tokio::spawn(async move {
                for _ in 0..per_chat {
                    deliver(&http, &ch, chat).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    ch.answers.wait_for(target).await;
    start.elapsed()
}

/// A chat-API session and the server it is asked on.
struct RestSession {
    base: String,
    id: String,
}

/// `per_session` `run_v2` turns of every session, each after the previous one's answer.
async fn through_rest(
    http: &Client,
    agent: &Agent,
    sessions: &Arc<Vec<RestSession>>,
    per_session: u64,
) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..sessions.len())
        .map(|i| {
            let (http, agent, sessions) = (http.clone(), agent.clone(), sessions.clone());
            tokio::spawn(async move {
                let s = &sessions[i];
                for _ in 0..per_session {
                    server::say(&http, &s.base, &agent, &s.id, QUESTION).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// `per_session` turns of every session sent straight to its actor, in-process.
async fn through_node(
    node: &Node,
    agent: Uuid,
    sessions: &[SessionId],
    per_session: u64,
) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = sessions
        .iter()
        .map(|&sid| {
            let node = node.clone();
            tokio::spawn(async move {
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
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// Runs `rounds` rounds (one message from every chat, or one turn of every session, per
/// round), records them in `totals`, and answers the time they took.
fn timed<F, Fut>(rt: &tokio::runtime::Runtime, totals: &Totals, rounds: u64, run: F) -> Duration
where
    F: FnOnce(u64) -> Fut,
    Fut: Future<Output = Duration>,
{
    let d = rt.block_on(run(rounds));
    totals.record(rounds * CHATS as u64, d);
    d
}

/// Criterion's settings for a group of these benches: an iteration is a round of
/// [`CHATS`] messages, and every sample runs whole rounds, as many in each (flat
/// sampling: a round takes tens or hundreds of milliseconds).
fn configure(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.throughput(Throughput::Elements(CHATS as u64));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(2));
    g.measurement_time(Duration::from_secs(8));
}

/// The store (and, in a cluster, registry) round trips of one counted phase.
struct Counted {
    messages: u64,
    statements: Statements,
    /// What the probe's counters moved by over the phase.
    moved: Snapshot,
}

impl Counted {
    fn per(&self, n: u64) -> f64 {
        n as f64 / self.messages as f64
    }
}

/// The counters a counted phase reads before and after itself.
#[derive(Clone, Copy)]
struct Snapshot {
    /// SQLite write transactions committed (None on Postgres).
    commits: Option<u64>,
    /// Group commits of the persistence actors.
    batches: u64,
    /// Round trips to the cluster registry for sessions (Redis; heartbeats apart).
    registry: u64,
    /// Requests forwarded to a session's owner.
    forwards: u64,
}

impl Snapshot {
    fn since(self, before: Snapshot) -> Snapshot {
        Snapshot {
            // The WAL index's counter is 32 bits and wraps.
            commits: before
                .commits
                .zip(self.commits)
                .map(|(b, a)| (a as u32).wrapping_sub(b as u32).into()),
            batches: self.batches - before.batches,
            registry: self.registry - before.registry,
            forwards: self.forwards - before.forwards,
        }
    }
}

/// Where a counted phase reads its counters.
struct Probe {
    nodes: Vec<Node>,
    sqlite: Option<PathBuf>,
}

impl Probe {
    async fn read(&self) -> Snapshot {
        let mut snap = Snapshot {
            commits: self
                .sqlite
                .as_deref()
                .and_then(store_counts::sqlite_commits)
                .map(u64::from),
            batches: 0,
            registry: 0,
            forwards: 0,
        };
        for node in &self.nodes {
            snap.batches += node.shared().persistence().stats().await.unwrap().batches;
            let registry = node.registry().stats().snapshot();
            snap.registry += registry.commands;
            snap.forwards += registry.forwards;
        }
        snap
    }
}

/// Counts the round trips of `run` (which handles `messages` messages) in steady state.
async fn counted(
    counter: &StatementCounter,
    probe: &Probe,
    messages: u64,
    run: impl Future<Output = Duration>,
) -> Counted {
    tokio::time::sleep(SETTLE).await;
    let before = probe.read().await;
    counter.start();
    run.await;
    tokio::time::sleep(SETTLE).await;
    let statements = counter.stop();
    Counted {
        messages,
        statements,
        moved: probe.read().await.since(before),
    }
}

/// Counts the round trips of [`COUNTED_PER_CHAT`] deliveries of every chat, and checks
/// that each got exactly one answer, in its thread.
async fn count_channel(
    counter: &StatementCounter,
    probe: &Probe,
    http: &Client,
    ch: &Arc<Channel>,
) -> Counted {
    let before = ch.answers.count();
    let messages = COUNTED_PER_CHAT * CHATS as u64;
    let run = through_channel(http, ch, COUNTED_PER_CHAT);
    let counted = counted(counter, probe, messages, run).await;
    let answered = ch.answers.count() - before;
    assert_eq!(
        answered, messages,
        "answers received for {messages} messages"
    );
    assert_eq!(ch.answers.unthreaded(), 0, "answers outside their thread");
    counted
}

/// Counts the round trips of [`COUNTED_PER_CHAT`] turns of every session.
async fn count_rest(
    counter: &StatementCounter,
    probe: &Probe,
    http: &Client,
    agent: &Agent,
    sessions: &Arc<Vec<RestSession>>,
) -> Counted {
    let run = through_rest(http, agent, sessions, COUNTED_PER_CHAT);
    counted(counter, probe, COUNTED_PER_CHAT * CHATS as u64, run).await
}

struct SingleNode {
    telegram: Counted,
    slack: Counted,
    rest: Counted,
}

fn single_node(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    counter: &StatementCounter,
) -> SingleNode {
    let http = server::client();
    let (srv, agent, telegram, slack) = rt.block_on(async {
        let telegram_answers = Arc::new(Answers::default());
        let slack_answers = Arc::new(Answers::default());
        let telegram_api = platforms::telegram(telegram_answers.clone()).await;
        let slack_api = platforms::slack(slack_answers.clone()).await;
        let srv = server::start(|_| {}).await;
        let agent = srv.agent(&http, parley::bootstrap::DEMO_AGENT).await;
        let tg = srv
            .connection(
                &http,
                "telegram",
                // Answers only at the end: the engine's cost, not the pacing of streamed edits.
                json!({"bot_token": platforms::TELEGRAM_TOKEN, "api_base": telegram_api,
                       "streaming": false}),
            )
            .await;
        let sl = srv
            .connection(
                &http,
                "slack",
                json!({"bot_token": platforms::SLACK_BOT_TOKEN,
                       "signing_secret": platforms::SLACK_SIGNING_SECRET,
                       "api_base": slack_api}),
            )
            .await;
        srv.listen(&http, &agent, &[&tg, &sl]).await;
        let channel = |platform, id: &str, answers| {
            Arc::new(Channel {
                platform,
                hooks: vec![srv.url(&format!("/hooks/{id}")); CHATS],
                answers,
            })
        };
        let telegram = channel(Platform::Telegram, &tg, telegram_answers);
        let slack = channel(Platform::Slack, &sl, slack_answers);
        (srv, agent, telegram, slack)
    });
    let agent_id: Uuid = agent.id.parse().unwrap();
    let sessions: Arc<Vec<RestSession>> = Arc::new(rt.block_on(async {
        let mut sessions = Vec::with_capacity(CHATS);
        for _ in 0..CHATS {
            let id = srv.session(&http, &agent).await;
            sessions.push(RestSession {
                base: srv.base.clone(),
                id,
            });
        }
        sessions
    }));
    let session_ids: Vec<SessionId> = sessions.iter().map(|s| s.id.parse().unwrap()).collect();
    let node = srv.server.node.clone();

    // Each chat's first message opens its session (and may be greeted): not steady state.
    rt.block_on(async {
        for ch in [&telegram, &slack] {
            through_channel(&http, ch, 1).await;
        }
        through_rest(&http, &agent, &sessions, 1).await;
        tokio::time::sleep(SETTLE).await;
    });

    let mut g = c.benchmark_group("channels");
    configure(&mut g);
    g.bench_function("telegram_hook_to_answer_http", |b| {
        b.iter_custom(|rounds| {
            timed(rt, &TELEGRAM, rounds, |n| {
                through_channel(&http, &telegram, n)
            })
        })
    });
    g.bench_function("slack_event_to_thread_reply_http", |b| {
        b.iter_custom(|rounds| timed(rt, &SLACK, rounds, |n| through_channel(&http, &slack, n)))
    });
    g.bench_function("rest_chat_api_turn_http", |b| {
        b.iter_custom(|rounds| {
            timed(rt, &REST, rounds, |n| {
                through_rest(&http, &agent, &sessions, n)
            })
        })
    });
    g.bench_function("node_turn_in_process", |b| {
        b.iter_custom(|rounds| {
            timed(rt, &DIRECT, rounds, |n| {
                through_node(&node, agent_id, &session_ids, n)
            })
        })
    });
    g.finish();

    let probe = Probe {
        nodes: vec![node.clone()],
        sqlite: Some(srv.sqlite_path()),
    };
    let counts = rt.block_on(async {
        SingleNode {
            telegram: count_channel(counter, &probe, &http, &telegram).await,
            slack: count_channel(counter, &probe, &http, &slack).await,
            rest: count_rest(counter, &probe, &http, &agent, &sessions).await,
        }
    });
    rt.block_on(srv.stop());
    counts
}

struct ClusterCounts {
    forwarded: Counted,
    rest: Counted,
}

/// Redis for the cluster, or None (after a notice) when it cannot be reached.
async fn redis_url() -> Option<String> {
    let url =
        std::env::var("PARLEY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let addr = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_string();
    let reachable =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
            .is_ok_and(|r| r.is_ok());
    if !reachable {
        println!("cluster part skipped: Redis unreachable at {url}");
        return None;
    }
    Some(url)
}

fn cluster(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    counter: &StatementCounter,
) -> Option<ClusterCounts> {
    let redis = rt.block_on(redis_url())?;
    let Some(db) = rt.block_on(parley_engine::store::pg_testing::fresh_database()) else {
        println!("cluster part skipped: Postgres unreachable");
        return None;
    };
    let http = server::client();
    let name = format!("parley-bench-{}", Uuid::new_v4().simple());
    let answers = Arc::new(Answers::default());
    let (nodes, agent, telegram) = rt.block_on(async {
        let api = platforms::telegram(answers.clone()).await;
        let mut nodes: Vec<BenchServer> = Vec::new();
        // In order: the first bootstraps the tenant.
        for id in ["bench-1", "bench-2"] {
            let srv = server::start(|cfg| {
                cfg.database_url = Some(db.url().to_string());
                cfg.secret_key = Some("ab".repeat(32));
                cfg.cluster.redis_url = Some(redis.clone());
                cfg.cluster.node_id = Some(id.into());
                cfg.cluster.name = name.clone();
            })
            .await;
            nodes.push(srv);
        }
        let agent = nodes[0].agent(&http, parley::bootstrap::DEMO_AGENT).await;
        let tg = nodes[0]
            .connection(
                &http,
                "telegram",
                json!({"bot_token": platforms::TELEGRAM_TOKEN, "api_base": api,
                       "streaming": false}),
            )
            .await;
        nodes[0].listen(&http, &agent, &[&tg]).await;
        let hook = |i: usize| nodes[i].url(&format!("/hooks/{tg}"));
        // Chat i's session opens on node i % 2 ...
        let owners = Channel {
            platform: Platform::Telegram,
            hooks: (0..CHATS).map(|chat| hook(chat % 2)).collect(),
            answers: answers.clone(),
        };
        through_channel(&http, &Arc::new(owners), 1).await;
        // ... and its deliveries go to the other node from then on.
        let telegram = Arc::new(Channel {
            platform: Platform::Telegram,
            hooks: (0..CHATS).map(|chat| hook(1 - chat % 2)).collect(),
            answers,
        });
        (nodes, agent, telegram)
    });
    // Chat-API sessions spread the same way, each asked on the node that owns it.
    let sessions: Arc<Vec<RestSession>> = Arc::new(rt.block_on(async {
        let mut sessions = Vec::with_capacity(CHATS);
        for i in 0..CHATS {
            let owner = &nodes[i % 2];
            let id = owner.session(&http, &agent).await;
            sessions.push(RestSession {
                base: owner.base.clone(),
                id,
            });
        }
        sessions
    }));
    rt.block_on(async {
        // The forwarding nodes learn the owners.
        through_channel(&http, &telegram, 1).await;
        through_rest(&http, &agent, &sessions, 1).await;
        tokio::time::sleep(SETTLE).await;
    });

    let mut g = c.benchmark_group("channels_cluster");
    configure(&mut g);
    g.bench_function("telegram_forwarded_delivery_http", |b| {
        b.iter_custom(|rounds| {
            timed(rt, &FORWARDED, rounds, |n| {
                through_channel(&http, &telegram, n)
            })
        })
    });
    g.bench_function("rest_chat_api_turn_on_owner_http", |b| {
        b.iter_custom(|rounds| {
            timed(rt, &CLUSTER_REST, rounds, |n| {
                through_rest(&http, &agent, &sessions, n)
            })
        })
    });
    g.finish();

    let probe = Probe {
        nodes: nodes.iter().map(|n| n.server.node.clone()).collect(),
        sqlite: None,
    };
    let counts = rt.block_on(async {
        ClusterCounts {
            forwarded: count_channel(counter, &probe, &http, &telegram).await,
            rest: count_rest(counter, &probe, &http, &agent, &sessions).await,
        }
    });
    // The paths measured are the ones meant: every delivery went through the other node,
    // no REST turn did.
    let forwarded = &counts.forwarded;
    assert_eq!(
        forwarded.moved.forwards, forwarded.messages,
        "deliveries forwarded"
    );
    assert_eq!(counts.rest.moved.forwards, 0, "REST turns forwarded");
    rt.block_on(async {
        for n in nodes {
            n.stop().await;
        }
        db.drop_now().await;
    });
    Some(counts)
}

fn rate_line(what: &str, totals: &Totals, unit: &str) -> f64 {
    let rate = totals.rate();
    println!("{what:<58} {rate:>9.0} {unit}/s");
    rate
}

fn ratio_line(platform: &str, baseline: &str, channel: f64, base: f64) {
    println!(
        "{platform}: ratio channel / {baseline}: {:.3}",
        channel / base
    );
}

/// One line of per-message counts: reads, writes, then the write transactions (SQLite)
/// or explicit transactions (Postgres, by their COMMITs) and the group commits among them,
/// and in a cluster the registry round trips and forwards.
fn counts_line(what: &str, c: &Counted) {
    let (s, m) = (&c.statements, &c.moved);
    let mut line = format!(
        "  {what:<26} reads {:>6.3}  writes {:>6.3}",
        c.per(s.count(Kind::Read)),
        c.per(s.count(Kind::Write))
    );
    match m.commits {
        Some(commits) => {
            line += &format!(
                "  write transactions {:>6.3} (group commits {:>6.3}, others {:>6.3})",
                c.per(commits),
                c.per(m.batches),
                c.per(commits.saturating_sub(m.batches))
            )
        }
        None => {
            line += &format!(
                "  COMMIT {:>6.3} (group commits {:>6.3})  Redis {:>6.3}  forwards {:>6.3}",
                c.per(s.count(Kind::Commit)),
                c.per(m.batches),
                c.per(m.registry),
                c.per(m.forwards)
            )
        }
    }
    println!("{line}");
}

/// The statements `path` ran per message beyond those `base` ran per turn.
fn beyond(what: &str, path: &Counted, base: &Counted) {
    let mut extra: Vec<(f64, &str)> = path
        .statements
        .0
        .iter()
        .map(|(s, &n)| {
            let theirs = base.statements.0.get(s).copied().unwrap_or(0);
            (path.per(n) - base.per(theirs), s.as_str())
        })
        .filter(|(d, _)| d.abs() >= 0.01)
        .collect();
    extra.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("  statements per {what} message beyond the REST turn's:");
    if extra.is_empty() {
        println!("    none");
    }
    for (d, s) in extra {
        println!("    {d:>+7.3}  {s}");
    }
}

fn main() {
    let counter = StatementCounter::install();
    let mut c = Criterion::default().configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let single = single_node(&mut c, &rt, &counter);
    let cluster = cluster(&mut c, &rt, &counter);

    println!("\n== summary (this run) ==");
    println!("one node, SQLite, builtin backend, {CHATS} chats or sessions at once, loopback HTTP");
    let telegram = rate_line(
        "Telegram hook -> turn -> answer sent (sendMessage)",
        &TELEGRAM,
        "messages",
    );
    let slack = rate_line(
        "Slack event -> turn -> thread reply (chat.postMessage)",
        &SLACK,
        "messages",
    );
    let rest = rate_line("REST chat-API turns (run_v2)", &REST, "turns");
    let direct = rate_line("in-process turns (Node::turn)", &DIRECT, "turns");
    ratio_line("Telegram", "REST", telegram, rest);
    ratio_line("Telegram", "Node::turn", telegram, direct);
    ratio_line("Slack", "REST", slack, rest);
    ratio_line("Slack", "Node::turn", slack, direct);
    println!(
        "store round trips per steady-state message ({} each; statements through sqlx, \
         transactions from the WAL index):",
        single.rest.messages
    );
    counts_line("REST turn", &single.rest);
    counts_line("Telegram message", &single.telegram);
    counts_line("Slack message", &single.slack);
    beyond("Telegram", &single.telegram, &single.rest);
    beyond("Slack", &single.slack, &single.rest);

    if let Some(cl) = cluster {
        println!("two nodes, Postgres + Redis, builtin backend, {CHATS} chats or sessions at once");
        let forwarded = rate_line(
            "Telegram delivery to the other node, forwarded -> answer",
            &FORWARDED,
            "deliveries",
        );
        let rest = rate_line(
            "REST chat-API turns on the owner (run_v2)",
            &CLUSTER_REST,
            "turns",
        );
        ratio_line("Cluster (forwarded Telegram)", "REST", forwarded, rest);
        println!(
            "store round trips per steady-state message (both nodes, statements through sqlx):"
        );
        counts_line("REST turn on the owner", &cl.rest);
        counts_line("forwarded delivery", &cl.forwarded);
        beyond("forwarded", &cl.forwarded, &cl.rest);
    }
    c.final_summary();
}
