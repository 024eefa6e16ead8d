//! The web widget's public routes, measured against the chat API in the same run:
//! - visitor conversations started per second — a new visitor (`POST …/visitors`), its
//!   conversation (`POST …/conversations`) and its first turn (`POST …/messages`) — against
//!   chat-API sessions with their first turn (`POST /chatbot/{agent}/session`, `run_v2`),
//!   same server, agent (builtin backend) and concurrency;
//! - server memory per open idle widget socket at 10,000 sockets (target ≤ 16 KiB),
//!   read from the resident size of a `parley serve` process, beside the chat API's own
//!   session socket in the same process.
//!
//! `cargo bench --bench widget` (PARLEY_BENCH_SOCKETS overrides the socket count) prints
//! criterion's figures, then a summary with `ratio widget / chat API: X` and the KiB per
//! socket.

#[allow(dead_code, reason = "each bench uses part of the shared support")]
mod support;

#[allow(dead_code, reason = "the platform helpers are the channels bench's")]
#[path = "support/server.rs"]
mod server;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use futures::StreamExt;
use parley::api::open_limits::OpenRate;
use reqwest::{Client, Method};
use serde_json::{json, Value};
use server::{Agent, BenchServer, ADMIN_KEY};
use support::Totals;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Conversations started at once.
const CONCURRENCY: usize = 50;
/// Conversations per measured iteration.
const PER_ITERATION: usize = 1000;
const PAGE: &str = "https://shop.example";
const QUESTION: &str = "How much does the Premium card cost?";
const AGENT: &str = include_str!("../examples/agents/debit-cards.yaml");

static WIDGET: Totals = Totals::new();
static CHAT_API: Totals = Totals::new();

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
});

struct Setup {
    server: BenchServer,
    agent: Agent,
    widget: String,
    http: Client,
}

async fn enable_widget(http: &Client, base: &str, agent: &str) -> String {
    let w: Value = http
        .put(format!("{base}/api/v1/agents/{agent}/widget"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"enabled": true, "allowed_origins": [PAGE]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    w["widget_id"].as_str().unwrap().to_string()
}

async fn setup() -> Setup {
    let unlimited = OpenRate {
        per_second: 0,
        burst: 0,
    };
    let server = server::start(|c| {
        c.limits.widget_per_address = unlimited;
        c.limits.widget_per_visitor = unlimited;
    })
    .await;
    let http = server::client();
    let agent = server.agent(&http, AGENT).await;
    let widget = enable_widget(&http, &server.base, &agent.id).await;
    Setup {
        server,
        agent,
        widget,
        http,
    }
}

async fn post(http: &Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut rb = http.post(url).header("origin", PAGE).json(&body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// A new visitor, its conversation and first answer: the widget's start.
async fn widget_start(s: &Setup) {
    let base = &s.server.base;
    let w = &s.widget;
    let v = post(
        &s.http,
        format!("{base}/widget/v1/{w}/visitors"),
        None,
        json!({}),
    )
    .await;
    let token = v["token"].as_str().unwrap();
    let c = post(
        &s.http,
        format!("{base}/widget/v1/{w}/conversations"),
        Some(token),
        json!({}),
    )
    .await;
    let sid = c["session_id"].as_str().unwrap();
    post(
        &s.http,
        format!("{base}/widget/v1/{w}/conversations/{sid}/messages"),
        Some(token),
        json!({"message": QUESTION}),
    )
    .await;
}

/// The same over the chat API: a session and its first answer.
async fn chat_api_start(s: &Setup) {
    let sid = s.server.session(&s.http, &s.agent).await;
    server::say(&s.http, &s.server.base, &s.agent, &sid, QUESTION).await;
}

async fn run_many<F, Fut>(n: usize, start: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let began = Instant::now();
    let per_worker = n / CONCURRENCY;
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let start = start.clone();
            tokio::spawn(async move {
                for _ in 0..per_worker {
                    start().await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    began.elapsed()
}

fn starts(c: &mut Criterion) {
    let s: &'static Setup = Box::leak(Box::new(RT.block_on(setup())));
    let mut g = c.benchmark_group("widget_starts");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .throughput(Throughput::Elements(PER_ITERATION as u64));
    g.bench_function("widget: visitor + conversation + first turn", |b| {
        b.iter_custom(|iters| {
            RT.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let d = run_many(PER_ITERATION, move || widget_start(s)).await;
                    WIDGET.record(PER_ITERATION as u64, d);
                    total += d;
                }
                total
            })
        })
    });
    g.bench_function("chat API: session + first turn", |b| {
        b.iter_custom(|iters| {
            RT.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let d = run_many(PER_ITERATION, move || chat_api_start(s)).await;
                    CHAT_API.record(PER_ITERATION as u64, d);
                    total += d;
                }
                total
            })
        })
    });
    g.finish();
}

/// A `parley serve` process of its own, so its resident size is the server's alone.
struct ServerProc {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl ServerProc {
    fn start(sockets: usize) -> ServerProc {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
            .args(["serve", "--listen", "127.0.0.1:0", "--no-examples"])
            .args(["--admin-key", ADMIN_KEY, "--log-level", "warn"])
            .args(["--passivate-after", "3600"])
            .args(["--max-connections", &(sockets + 1000).to_string()])
            .args([
                "--open-rate-per-credential",
                "0",
                "--open-rate-per-address",
                "0",
            ])
            .args([
                "--widget-rate-per-address",
                "0",
                "--widget-rate-per-visitor",
                "0",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("parley starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.split("listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server starts");
        ServerProc {
            child,
            base,
            _dir: dir,
        }
    }

    fn rss(&self) -> u64 {
        let statm =
            std::fs::read_to_string(format!("/proc/{}/statm", self.child.id())).unwrap_or_default();
        statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(0)
            * 4096
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_socket(url: String, token: String, origin: bool) -> Socket {
    let mut req = url.into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert(
        "sec-websocket-protocol",
        format!("bearer, {token}").parse().unwrap(),
    );
    if origin {
        h.insert("origin", PAGE.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// Opens `n` idle sockets with `open(i)` (at most 200 handshakes at once); answers the
/// server's resident bytes per socket, and keeps them open until measured.
async fn per_socket<F, Fut>(server: &ServerProc, n: usize, open: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Socket>,
{
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss();
    let sockets: Vec<Socket> = futures::stream::iter(0..n)
        .map(open)
        .buffer_unordered(200)
        .collect()
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.rss();
    drop(sockets);
    after.saturating_sub(before) as f64 / n as f64
}

/// Memory per idle socket: widget sockets, then chat-API sockets, each on sessions of
/// their own that exist before the sockets open.
fn memory() -> (f64, f64, usize) {
    let n: usize = std::env::var("PARLEY_BENCH_SOCKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    RT.block_on(async {
        let server = ServerProc::start(n);
        let http = server::client();
        let base = server.base.clone();
        let bench = BenchServerRef { base: &base };
        let agent = bench.agent(&http).await;
        let w = enable_widget(&http, &base, &agent.id).await;
        // Widget visitors, each with a conversation.
        let visitors: Vec<(String, String)> = futures::stream::iter(0..n)
            .map(|_| {
                let (http, base, w) = (http.clone(), base.clone(), w.clone());
                async move {
                    let v = post(
                        &http,
                        format!("{base}/widget/v1/{w}/visitors"),
                        None,
                        json!({}),
                    )
                    .await;
                    let token = v["token"].as_str().unwrap().to_string();
                    let c = post(
                        &http,
                        format!("{base}/widget/v1/{w}/conversations"),
                        Some(&token),
                        json!({}),
                    )
                    .await;
                    (token, c["session_id"].as_str().unwrap().to_string())
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let ws = base.replacen("http", "ws", 1);
        let widget = per_socket(&server, n, |i| {
            let (token, sid) = visitors[i].clone();
            open_socket(
                format!("{ws}/widget/v1/{w}/conversations/{sid}/ws"),
                token,
                true,
            )
        })
        .await;
        let sessions: Vec<String> = futures::stream::iter(0..n)
            .map(|_| {
                let (http, base, agent) = (http.clone(), base.clone(), agent.clone());
                async move {
                    let s = post(
                        &http,
                        format!("{base}/chatbot/{}/session", agent.id),
                        Some(&agent.token),
                        json!({}),
                    )
                    .await;
                    s["session_id"].as_str().unwrap().to_string()
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let chat = per_socket(&server, n, |i| {
            open_socket(
                format!("{ws}/chatbot/{}/ws/{}", agent.id, sessions[i]),
                agent.token.clone(),
                false,
            )
        })
        .await;
        (widget, chat, n)
    })
}

/// The admin calls of [`BenchServer`] against a server in another process.
struct BenchServerRef<'a> {
    base: &'a str,
}

impl BenchServerRef<'_> {
    async fn agent(&self, http: &Client) -> Agent {
        let body: Value = http
            .post(format!("{}/api/v1/agents", self.base))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "application/yaml")
            .body(AGENT)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let agent = Agent {
            id: body["id"].as_str().unwrap().into(),
            token: body["token"].as_str().unwrap().into(),
        };
        let started = http
            .request(
                Method::POST,
                format!("{}/api/v1/agents/{}/start", self.base, agent.id),
            )
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        assert!(started.status().is_success());
        agent
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    starts(&mut c);
    c.final_summary();
    let (widget, chat, n) = memory();
    let (w, d) = (WIDGET.rate(), CHAT_API.rate());
    println!("\nsummary");
    println!("  widget starts (visitor + conversation + first turn): {w:.0}/s");
    println!("  chat API starts (session + first turn):              {d:.0}/s");
    println!("  ratio widget / chat API: {:.2}", w / d);
    println!(
        "  server memory per idle socket at {n}: widget {:.1} KiB, chat API {:.1} KiB (ratio {:.2}; target ≤ 16 KiB)",
        widget / 1024.0,
        chat / 1024.0,
        widget / chat
    );
}
