//! Nodes as separate `parley serve` processes on loopback ports, sharing one fresh Postgres
//! database and one Redis (under a key prefix of their own), plus HTTP helpers.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_engine::store::pg_testing::{self, TestDatabase};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

pub const ADMIN_KEY: &str = "pk_cluster_admin_key_0123456789";

/// A minimal agent on the builtin backend (`llm` lines may be appended).
pub fn agent_yaml(extra: &str) -> String {
    format!(
        r#"
name: Cluster Agent
greeting: Hi there!
workflow:
  - name: Main
    kind: StateConfig
    init_state: true
    description: Answer questions.
    available_tools: [SendChatMessage]
knowledge:
  faq:
    - question: What are your opening hours?
      answer: We are open from 9 to 17.
{extra}
"#
    )
}

fn required() -> bool {
    std::env::var(pg_testing::REQUIRE_VAR).is_ok_and(|v| v == "1")
}

pub fn redis_url() -> String {
    std::env::var("PARLEY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn redis_reachable(url: &str) -> bool {
    let addr = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_string();
    tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// Postgres and Redis for one cluster, or None (after a notice) when either is missing.
pub struct Services {
    pub db: TestDatabase,
    pub redis_url: String,
    pub cluster: String,
}

impl Services {
    /// Options for nodes of this cluster with the given lease.
    pub fn nodes(&self, lease_ttl_ms: u64) -> NodeOptions<'_> {
        NodeOptions {
            database_url: self.db.url(),
            redis_url: &self.redis_url,
            cluster: &self.cluster,
            lease_ttl_ms,
        }
    }

    pub async fn get() -> Option<Services> {
        let redis_url = redis_url();
        if !redis_reachable(&redis_url).await {
            if required() {
                panic!("redis unreachable at {redis_url} and PARLEY_REQUIRE_SERVICES=1");
            }
            eprintln!("skipping: redis unreachable at {redis_url}");
            return None;
        }
        let db = pg_testing::fresh_database().await?;
        Some(Services {
            db,
            redis_url,
            cluster: format!("parley-cluster-test-{}", uuid::Uuid::new_v4().simple()),
        })
    }
}

/// One `parley serve` process.
pub struct NodeProc {
    pub id: String,
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

pub struct NodeOptions<'a> {
    pub database_url: &'a str,
    pub redis_url: &'a str,
    pub cluster: &'a str,
    pub lease_ttl_ms: u64,
}

/// Starts one node per id, in order (the first bootstraps the tenant).
pub fn start_nodes(ids: &[&str], o: &NodeOptions<'_>) -> Vec<NodeProc> {
    ids.iter().map(|id| NodeProc::start(id, o)).collect()
}

impl NodeProc {
    pub fn start(id: &str, o: &NodeOptions<'_>) -> NodeProc {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
            .args(["serve", "--listen", "127.0.0.1:0", "--no-examples"])
            .args(["--node-id", id, "--cluster", o.cluster])
            .args(["--database-url", o.database_url, "--redis-url", o.redis_url])
            .args(["--admin-key", ADMIN_KEY, "--log-level", "warn"])
            .args(["--secret-key", &"ab".repeat(32)])
            .args(["--lease-ttl-ms", &o.lease_ttl_ms.to_string()])
            // Fake platforms and LLMs run on loopback, which the default policy denies.
            .args(["--egress-allow", "127.0.0.0/8"])
            // Every simulated customer comes from loopback with one agent's token.
            .args([
                "--open-rate-per-credential",
                "0",
                "--open-rate-per-address",
                "0",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("parley starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the banner for the bound address, then keeps the pipe drained.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.split("listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                let log = std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default();
                panic!("node {id} did not start:\n{log}")
            });
        NodeProc {
            id: id.into(),
            url,
            child,
            _dir: dir,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    pub fn kill9(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("node {} did not exit after SIGTERM", self.id);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("node.log")).unwrap_or_default()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone)]
pub struct Agent {
    pub id: String,
    pub token: String,
}

pub async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
    (status, v)
}

pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Creates and starts an agent through `base`.
pub async fn create_agent(http: &Client, base: &str, yaml: &str) -> Agent {
    let (status, body) = json_of(
        http.post(format!("{base}/api/v1/agents"))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "application/yaml")
            .body(yaml.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let agent = Agent {
        id: body["id"].as_str().unwrap().into(),
        token: body["token"].as_str().unwrap().into(),
    };
    let (status, body) = json_of(
        http.post(format!("{base}/api/v1/agents/{}/start", agent.id))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    agent
}

pub async fn create_session(http: &Client, base: &str, agent: &Agent) -> String {
    let (status, body) = json_of(
        http.post(format!("{base}/chatbot/{}/session", agent.id))
            .bearer_auth(&agent.token)
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["session_id"].as_str().unwrap().into()
}

/// One run_v2; Err(text) for a transport error.
pub async fn say(
    http: &Client,
    base: &str,
    agent: &Agent,
    session: &str,
    text: &str,
    key: Option<&str>,
) -> Result<(StatusCode, Value), String> {
    let mut rb = http
        .post(format!(
            "{base}/chatbot/{}/session/{session}/run_v2",
            agent.id
        ))
        .bearer_auth(&agent.token)
        .json(&json!({ "message": text }));
    if let Some(k) = key {
        rb = rb.header("Idempotency-Key", k);
    }
    match rb.send().await {
        Ok(r) => Ok(json_of(r).await),
        Err(e) => Err(e.to_string()),
    }
}

/// The session's customer messages, in log order.
pub async fn human_texts(http: &Client, base: &str, agent: &Agent, session: &str) -> Vec<String> {
    let log = messages(http, base, agent, session).await;
    log.iter()
        .filter(|m| m["role"] == "HUMAN")
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect()
}

pub async fn messages(http: &Client, base: &str, agent: &Agent, session: &str) -> Vec<Value> {
    let (status, body) = json_of(
        http.get(format!(
            "{base}/chatbot/{}/session/{session}/messages",
            agent.id
        ))
        .bearer_auth(&agent.token)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["logs"].as_array().unwrap().clone()
}

pub async fn cluster_status(http: &Client, base: &str) -> Value {
    let (status, body) = json_of(
        http.get(format!("{base}/api/v1/admin/cluster"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Sends until a 200 (same Idempotency-Key every time), over `bases` in turn, for at most
/// `secs`; answers the 200's body and when it came.
pub async fn say_until_ok(
    http: &Client,
    bases: &[String],
    agent: &Agent,
    session: &str,
    text: &str,
    key: &str,
    secs: u64,
) -> (Value, Instant) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut i = 0;
    let mut last = String::new();
    while Instant::now() < deadline {
        let base = &bases[i % bases.len()];
        i += 1;
        match say(http, base, agent, session, text, Some(key)).await {
            Ok((StatusCode::OK, body)) => return (body, Instant::now()),
            Ok((status, body)) => last = format!("{status} {body}"),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{text:?} never succeeded; last answer: {last}");
}

/// A TCP proxy in front of a server that can cut every connection and refuse new ones,
/// the way a database restart looks from its clients.
pub struct Proxy {
    pub port: u16,
    state: Arc<Mutex<(bool, Vec<JoinHandle<()>>)>>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state: Arc<Mutex<(bool, Vec<JoinHandle<()>>)>> = Arc::default();
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut guard = st.lock().await;
                if guard.0 {
                    continue; // down: the connection is dropped at once
                }
                let target = target.clone();
                guard.1.push(tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Proxy { port, state }
    }

    pub async fn cut(&self) {
        let mut guard = self.state.lock().await;
        guard.0 = true;
        for h in guard.1.drain(..) {
            h.abort();
        }
    }

    pub async fn restore(&self) {
        self.state.lock().await.0 = false;
    }
}
