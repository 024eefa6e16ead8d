//! Short runs over real HTTP on loopback: against a parley server started in this process,
//! against the bare echo baseline, and against fakes that lose turns or serve /metrics.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use parley::server::{self, ServeConfig, Server};
use parley_loadtest::baseline::{self, EchoServer};
use parley_loadtest::cli::{Args, Transport};
use parley_loadtest::distribution::Dist;
use parley_loadtest::report::Report;
use parley_loadtest::stats::Recorder;
use parley_loadtest::{capacity, run};
use serde_json::{json, Value};

const ADMIN_KEY: &str = "pk_loadtest_admin_0123456789";

async fn parley() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServeConfig::new(dir.path().to_path_buf());
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.admin_key = Some(ADMIN_KEY.into());
    cfg.load_examples = false;
    // The mock LLM backends listen on loopback, which the default egress policy denies.
    cfg.node.egress =
        parley_engine::egress::EgressPolicy::new(true, &["127.0.0.0/8".into()]).unwrap();
    (server::start(cfg).await.expect("parley starts"), dir)
}

async fn run_against(server: &Server, extra: &[&str]) -> Report {
    let base = format!("http://{}", server.addr);
    let mut argv = vec![
        "parley-loadtest",
        "--target",
        &base,
        "--admin-key",
        ADMIN_KEY,
    ];
    argv.extend_from_slice(extra);
    run(Args::parse_from(argv))
        .await
        .expect("the run completes")
}

/// Every turn acknowledged, nothing lost, duplicated or reordered, no errors.
fn assert_clean(r: &Report, sessions: u64, turns: u64) {
    let v = r.verification.expect("verified");
    assert!(r.passed(), "{v:?}");
    assert_eq!(v.sessions_checked, sessions, "{v:?}");
    assert_eq!(r.load.errors.total, 0, "{:?}", r.load.errors);
    assert_eq!(r.load.sessions_started, sessions);
    assert_eq!(r.load.turns_ok, sessions * turns);
    assert!(r.load.turns_per_sec > 0.0);
    assert!(r.load.latency.p50_ms > 0.0 && r.load.latency.max_ms >= r.load.latency.p99_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_model_over_rest_and_websocket_loses_nothing() {
    let (server, _dir) = parley().await;
    let common = ["--sessions", "20", "--turns", "5", "--no-baseline"];
    let rest = run_against(&server, &common).await;
    assert_clean(&rest, 20, 5);
    assert_eq!(rest.load.peak_active_sessions, 20);

    let mut ws_args = common.to_vec();
    ws_args.extend(["--transport", "ws", "--think-ms", "uniform:0-5"]);
    let ws = run_against(&server, &ws_args).await;
    assert_clean(&ws, 20, 5);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_through_the_mock_llm_backends() {
    let (server, _dir) = parley().await;
    let webhook = run_against(
        &server,
        &[
            "--sessions",
            "20",
            "--turns",
            "5",
            "--no-baseline",
            "--llm-mock",
            "webhook",
            "--llm-latency-ms",
            "exp:5",
        ],
    )
    .await;
    assert_clean(&webhook, 20, 5);
    assert_eq!(webhook.load.llm_mock_calls, Some(100));

    // The OpenAI mock streams its answer; over WebSocket the deltas are forwarded.
    let openai = run_against(
        &server,
        &[
            "--sessions",
            "10",
            "--turns",
            "3",
            "--no-baseline",
            "--transport",
            "ws",
            "--llm-mock",
            "openai",
            "--llm-latency-ms",
            "2",
        ],
    )
    .await;
    assert_clean(&openai, 10, 3);
    assert_eq!(openai.load.llm_mock_calls, Some(30));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_with_the_baseline_reports_a_ratio() {
    let (server, _dir) = parley().await;
    let r = run_against(
        &server,
        &[
            "--model",
            "open",
            "--rate",
            "40",
            "--duration",
            "1",
            "--ramp-up",
            "0.2",
            "--turns",
            "3",
        ],
    )
    .await;
    let v = r.verification.expect("verified");
    assert!(r.passed(), "{v:?}");
    assert_eq!(r.load.errors.total, 0, "{:?}", r.load.errors);
    // 40/s for 1 s, fewer during the ramp.
    assert!((30..=40).contains(&r.load.sessions_started), "{:?}", r.load);
    assert_eq!(v.sessions_checked, r.load.sessions_started);
    let b = r.baseline.as_ref().expect("baseline ran");
    assert!(b.requests_ok > 0 && b.errors.total == 0, "{b:?}");
    assert!(r.ratio.is_some_and(|x| x > 0.0), "{:?}", r.ratio);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_baseline_answers_over_rest_and_websocket() {
    let echo = EchoServer::start().await.unwrap();
    for transport in [Transport::Rest, Transport::Ws] {
        let rec = Arc::new(Recorder::default());
        let load = baseline::Load {
            transport,
            concurrency: 4,
            duration: Duration::from_millis(300),
            think: Dist::Fixed(0.0),
            timeout: Duration::from_secs(5),
        };
        let took = baseline::drive(reqwest::Client::new(), &echo.url, &load, rec.clone())
            .await
            .unwrap();
        let t = rec.take();
        assert!(t.turns.len() > 10, "{transport:?}: {}", t.turns.len());
        assert!(t.errors.is_empty(), "{transport:?}: {:?}", t.errors);
        assert!(took >= Duration::from_millis(300));
    }
}

/// A fake node that answers every turn but keeps only the odd ones.
fn lossy_parley() -> Router {
    type Logs = Arc<Mutex<Vec<Value>>>;
    let logs: Logs = Arc::default();
    Router::new()
        .route(
            "/api/v1/agents",
            post(|| async { (StatusCode::CREATED, Json(json!({"id": "a", "token": "t"}))) }),
        )
        .route(
            "/api/v1/agents/a/start",
            post(|| async { Json(json!({"status": "Running"})) }),
        )
        .route(
            "/chatbot/a/session",
            post(|| async { (StatusCode::CREATED, Json(json!({"session_id": "s"}))) }),
        )
        .route(
            "/chatbot/a/session/{sid}/run_v2",
            post(
                |State(logs): State<Logs>, Json(b): Json<Value>| async move {
                    let text = b["message"].as_str().unwrap_or_default().to_string();
                    let seq = parley_loadtest::verify::parse_seq(&text).unwrap_or(0);
                    if seq % 2 == 1 {
                        logs.lock().unwrap().push(json!({"role": "HUMAN", "text": text}));
                    }
                    Json(json!({"response": "ok", "metadata": {}}))
                },
            ),
        )
        .route(
            "/chatbot/a/session/{sid}/messages",
            get(|State(logs): State<Logs>| async move {
                Json(json!({"logs": *logs.lock().unwrap()}))
            }),
        )
        .with_state(logs)
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_turns_make_the_binary_exit_non_zero() {
    let url = serve(lossy_parley()).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_parley-loadtest"))
        .args(["--target", &url, "--admin-key", "k", "--sessions", "1"])
        .args(["--turns", "4", "--no-baseline", "--json"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["verification"]["lost"], 2, "{report}");
    assert_eq!(report["load"]["turns_ok"], 4, "{report}");
    assert_eq!(report["load"]["errors"]["total"], 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_reads_memory_and_residency_from_metrics() {
    let body = "# TYPE parley_process_resident_memory_bytes gauge\n\
                parley_process_resident_memory_bytes 5.0e7\n\
                # TYPE parley_sessions_resident gauge\n\
                parley_sessions_resident 12\n";
    let url = serve(Router::new().route("/metrics", get(move || async move { body }))).await;
    let s = capacity::scrape(&reqwest::Client::new(), &[url.clone(), url])
        .await
        .unwrap();
    assert_eq!(s.rss_bytes, 1.0e8);
    assert_eq!(s.resident_sessions, 24.0);

    let missing = serve(Router::new()).await;
    let err = capacity::scrape(&reqwest::Client::new(), &[missing])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/metrics"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_mode_measures_a_real_server() {
    let (server, _dir) = parley().await;
    // Creating a session only stores it; its actor starts with its first turn. On a node
    // alone an idle socket keeps none resident (in a cluster it claims its session).
    let cases: [(&[&str], f64); 4] = [
        (&["--capacity-turns", "0"], 0.0),
        (&["--capacity-turns", "1"], 30.0),
        (&["--capacity-turns", "0", "--transport", "ws"], 0.0),
        (&["--capacity-turns", "1", "--transport", "ws"], 30.0),
    ];
    for (extra, resident) in cases {
        let mut argv = vec!["--capacity", "30", "--hold-secs", "0"];
        argv.extend_from_slice(extra);
        let r = run_against(&server, &argv).await;
        let cap = r.capacity.as_ref().expect("capacity report");
        assert_eq!(cap.sessions_opened, 30, "{cap:?}");
        assert_eq!(r.load.errors.total, 0, "{:?}", r.load.errors);
        assert_eq!(r.load.turns_ok, 30 * u64::from(cap.turns_per_session));
        let grew = cap.after.resident_sessions - cap.before.resident_sessions;
        assert_eq!(grew, resident, "{extra:?}: {cap:?}");
        assert!(cap.before.rss_bytes > 0.0, "{cap:?}");
        assert!(cap.bytes_per_open_session.is_some());
        assert_eq!(cap.bytes_per_resident_session.is_some(), resident > 0.0);
    }
    server.stop().await;
}
