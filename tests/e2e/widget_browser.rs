//! The web widget in a real browser: a parley server, an OpenAI-compatible fake LLM that
//! streams its answers slowly, host pages on other origins (floating, embedded, Arabic,
//! a strict CSP, one origin that is not allowed) and a TCP proxy the test can cut. The
//! browser part is `tests/browser/widget.test.mjs` (Playwright driving Debian's
//! Chromium); this test starts everything, runs it and asserts that it passes.
//!
//! Without Chromium, Node or `tests/browser/node_modules` it prints `skipping: …` and
//! passes, unless `PARLEY_REQUIRE_SERVICES=1`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::*;

/// Time between two streamed pieces of an answer: slow enough that the browser shows
/// the answer growing in several steps.
const DELTA_GAP: Duration = Duration::from_millis(150);
/// The whole browser suite; it takes well under a minute when things work.
const SUITE_TIMEOUT: Duration = Duration::from_secs(180);

const AGENT: &str = r#"
name: Debit Card Assistant
greeting: Hello, I'm Alex, your debit card assistant. How can I help you today?
workflow:
  - name: Main
    kind: StateConfig
    init_state: true
    description: Answer questions about debit cards.
    available_tools: [SendChatMessage]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_works_in_a_real_browser() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = repo.join("tests/browser");
    let Some(chromium) = prerequisites(&browser_dir).await else {
        return;
    };

    let t = TestServer::start().await;
    let llm = serve_fake(Router::new().route("/v1/chat/completions", post(completions))).await;
    let agent = t
        .agent(&format!(
            "{AGENT}llm:\n  - {{name: gpt, kind: openai, base_url: '{llm}/v1', model: fake-model, api_key: sk-test}}\n"
        ))
        .await;

    // The host pages: one origin allowed, a third one not.
    let parley_addr: SocketAddr = t.base.trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(parley_addr).await;
    let host_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host_url = format!("http://{}", host_listener.local_addr().unwrap());
    let other_url = format!("http://{}", other_listener.local_addr().unwrap());

    let (status, w) = t
        .call(
            Method::PUT,
            &format!("/api/v1/agents/{}/widget", agent.id),
            Some(json!({
                "enabled": true,
                "allowed_origins": [host_url],
                "title": "Debit Card Assistant",
                "subtitle": "Usually answers in seconds",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{w}");
    let widget_id = w["widget_id"].as_str().expect("widget_id").to_string();

    let pages = Pages {
        parley: t.base.clone(),
        proxy: proxy.url.clone(),
        widget_id: widget_id.clone(),
        proxy_ctl: proxy.ctl.clone(),
        csp_reports: Arc::default(),
    };
    for listener in [host_listener, other_listener] {
        let app = pages.clone().router();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }

    let shots = repo.join("target/widget-shots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut node = tokio::process::Command::new("node");
    node.arg("widget.test.mjs")
        .current_dir(&browser_dir)
        .env("CHROMIUM", &chromium)
        .env("PARLEY_URL", &t.base)
        .env("PARLEY_ADMIN_KEY", ADMIN_KEY)
        .env("WIDGET_ID", &widget_id)
        .env("AGENT_ID", &agent.id)
        .env("HOST_URL", &host_url)
        .env("OTHER_URL", &other_url)
        .env("PROXY_URL", &proxy.url)
        .env("SHOTS_DIR", &shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(SUITE_TIMEOUT, node.output())
        .await
        .expect("the browser suite finishes in time")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the browser suite failed ({}); see its output above",
        out.status
    );
    // Reports the browser sent through the CSP page's report-uri (the page itself also
    // listened for violations; this catches any it could not see).
    let reports = pages.csp_reports.lock().unwrap();
    assert!(reports.is_empty(), "CSP violations reported: {reports:?}");
}

/// Chromium's path when the browser suite can run here; None (after saying why) when it
/// is skipped. Panics instead when `PARLEY_REQUIRE_SERVICES=1`.
async fn prerequisites(browser_dir: &Path) -> Option<PathBuf> {
    let chromium = PathBuf::from(
        std::env::var("PARLEY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    let node_ok = tokio::process::Command::new("node")
        .arg("--version")
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    let missing = if !chromium.exists() {
        format!("no Chromium at {}", chromium.display())
    } else if !node_ok {
        "no node on PATH".to_string()
    } else if !browser_dir.join("node_modules/playwright-core").exists()
        || !browser_dir.join("node_modules/axe-core").exists()
    {
        format!("no node_modules in {} (npm ci)", browser_dir.display())
    } else {
        return Some(chromium);
    };
    if std::env::var("PARLEY_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("the widget browser suite needs {missing}");
    }
    println!("skipping: the widget browser suite ({missing})");
    None
}

// ---------------------------------------------------------------------------------------
// The fake LLM

/// `/v1/chat/completions`: echoes the visitor's last message. Streamed (as parley asks) in
/// pieces [`DELTA_GAP`] apart; a request without `stream: true` gets the whole answer.
async fn completions(Json(body): Json<Value>) -> Response {
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    let answer = answer_to(&last);
    if body["stream"] != true {
        return Json(json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "model": "fake-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }))
        .into_response();
    }
    let mut events: Vec<String> = pieces(&answer, 6)
        .into_iter()
        .map(|p| json!({"choices": [{"index": 0, "delta": {"content": p}}]}).to_string())
        .collect();
    events
        .push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).to_string());
    events.push(
        json!({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}})
            .to_string(),
    );
    events.push("[DONE]".into());
    let stream = futures::stream::iter(events.into_iter().enumerate()).then(|(i, e)| async move {
        if i > 0 {
            tokio::time::sleep(DELTA_GAP).await;
        }
        Ok::<_, Infallible>(Bytes::from(format!("data: {e}\n\n")))
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A visitor asking for markdown gets every construct the widget renders, plus HTML and a
/// `javascript:` link that must stay text.
fn answer_to(message: &str) -> String {
    if message.to_lowercase().contains("markdown") {
        "Here is **bold**, *italic* and `code`, with [the guide](https://example.com/guide).\n\n\
         - first point\n- second point\n\n\
         ```\nlet card = 42;\n```\n\
         <img src=x onerror=alert(1)> and [bad](javascript:alert(1))"
            .to_string()
    } else {
        format!(
            "Thanks! You wrote: “{}”. Anything else I can do for you?",
            message.trim()
        )
    }
}

/// `text` cut into about `n` pieces at spaces.
fn pieces(text: &str, n: usize) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    let per = words.len().div_ceil(n).max(1);
    words.chunks(per).map(|c| c.concat()).collect()
}

// ---------------------------------------------------------------------------------------
// Host pages (another origin than parley's) and the test's control endpoints

#[derive(Clone)]
struct Pages {
    parley: String,
    proxy: String,
    widget_id: String,
    proxy_ctl: Arc<ProxyCtl>,
    csp_reports: Arc<Mutex<Vec<String>>>,
}

impl Pages {
    fn router(self) -> Router {
        Router::new()
            .route("/floating", get(floating))
            .route("/embedded", get(embedded))
            .route("/ar", get(arabic))
            .route("/csp", get(strict_csp))
            .route("/proxied", get(proxied))
            .route("/csp-report", post(csp_report))
            .route("/control/cut", post(cut))
            .route("/control/restore", post(restore))
            .with_state(self)
    }

    fn tag(&self, base: &str, attrs: &str) -> String {
        format!(
            r#"<script src="{base}/widget.js" data-widget-id="{}"{attrs} async></script>"#,
            self.widget_id
        )
    }
}

fn page(title: &str, head: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title>{head}</head>\n<body>{body}</body></html>\n"
    )
}

/// Filler content, so screenshots show the widget over a page.
const ARTICLE: &str = "<main><h1>Acme Bank</h1><p>Cards, accounts and everything in between. \
    This page is the host of the chat widget.</p><p class=\"panel launcher bubble\">A page \
    element that uses the widget's own class names.</p><button>A page button</button></main>";

/// Hostile page CSS: it must not reach into the widget.
const HOSTILE_CSS: &str = "<style>* { font-family: 'Comic Sans MS', cursive !important; \
    color: #c026d3 !important; letter-spacing: 2px !important; line-height: 3 !important; \
    box-sizing: content-box !important; } button { background: #facc15 !important; \
    padding: 30px !important; border: 4px dashed red !important; } \
    .panel, .launcher, .bubble { display: none !important; } \
    textarea { font-size: 40px !important; }</style>";

async fn floating(State(p): State<Pages>) -> Html<String> {
    Html(page(
        "Floating",
        HOSTILE_CSS,
        &format!("{ARTICLE}{}", p.tag(&p.parley, "")),
    ))
}

async fn embedded(State(p): State<Pages>) -> Html<String> {
    Html(page(
        "Embedded",
        "",
        &format!(
            "{ARTICLE}<div id=\"chat\" style=\"width: 360px; height: 540px; margin: 24px\"></div>{}",
            p.tag(&p.parley, r##" data-mode="embedded" data-target="#chat""##)
        ),
    ))
}

async fn arabic(State(p): State<Pages>) -> Html<String> {
    Html(page(
        "عربي",
        "",
        &format!(
            "<main dir=\"rtl\" lang=\"ar\"><h1>بنك أكمي</h1><p>صفحة المضيف.</p></main>{}",
            p.tag(&p.parley, r#" data-locale="ar""#)
        ),
    ))
}

/// Only parley may load scripts, styles, images and connections; nothing inline.
async fn strict_csp(State(p): State<Pages>) -> Response {
    let host = p.parley.trim_start_matches("http://");
    let csp = format!(
        "default-src 'none'; script-src {0}; style-src {0}; connect-src {0} ws://{host}; \
         img-src {0} data:; report-uri /csp-report",
        p.parley
    );
    (
        [(header::CONTENT_SECURITY_POLICY, csp)],
        Html(page(
            "Strict CSP",
            "",
            &format!("{ARTICLE}{}", p.tag(&p.parley, "")),
        )),
    )
        .into_response()
}

/// The widget loaded through the cuttable proxy (so its socket goes through it too).
async fn proxied(State(p): State<Pages>) -> Html<String> {
    Html(page(
        "Proxied",
        "",
        &format!("{ARTICLE}{}", p.tag(&p.proxy, "")),
    ))
}

async fn csp_report(State(p): State<Pages>, body: String) -> StatusCode {
    p.csp_reports.lock().unwrap().push(body);
    StatusCode::NO_CONTENT
}

async fn cut(State(p): State<Pages>) -> StatusCode {
    p.proxy_ctl.cut();
    StatusCode::NO_CONTENT
}

async fn restore(State(p): State<Pages>) -> StatusCode {
    p.proxy_ctl.up.store(true, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

// ---------------------------------------------------------------------------------------
// The proxy between the browser and parley

struct Proxy {
    url: String,
    ctl: Arc<ProxyCtl>,
}

struct ProxyCtl {
    /// While false, new connections are closed at once (parley looks down).
    up: AtomicBool,
    /// Bumped to close every open connection.
    generation: watch::Sender<u64>,
}

impl ProxyCtl {
    /// Closes every open connection and refuses new ones until restored.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let ctl = Arc::new(ProxyCtl {
            up: AtomicBool::new(true),
            generation: watch::channel(0).0,
        });
        let c = ctl.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !c.up.load(Ordering::SeqCst) {
                    continue; // dropped: the browser sees the connection close
                }
                let mut cut = c.generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy { url, ctl }
    }
}
