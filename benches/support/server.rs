//! The `parley` HTTP server on loopback, started in-process as the e2e tests start it, and
//! the admin and chat-API calls the benches make to it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use parley::api::open_limits::OpenRate;
use parley::server::{self, ServeConfig, Server};
use reqwest::{Client, Method};
use serde_json::{json, Value};

pub const ADMIN_KEY: &str = "pk_bench_admin_key_0123456789";

/// One client for every call: keep-alive connections, as platforms and API clients hold.
pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

pub struct BenchServer {
    pub server: Server,
    pub base: String,
    pub dir: tempfile::TempDir,
}

#[derive(Debug, Clone)]
pub struct Agent {
    pub id: String,
    pub token: String,
}

/// A server on 127.0.0.1:0 with a fresh data dir; `tweak` adjusts the config.
pub async fn start(tweak: impl FnOnce(&mut ServeConfig)) -> BenchServer {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServeConfig::new(dir.path().to_path_buf());
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.admin_key = Some(ADMIN_KEY.into());
    cfg.load_examples = false;
    // Telegram's webhook mode needs a public address to register (with the fake).
    cfg.node.public_url = Some("https://bench.example".into());
    // Sessions stay resident for the whole run.
    cfg.node.passivate_after = Duration::from_secs(3600);
    // Fake platforms run on loopback, which the default egress policy denies.
    cfg.node.egress =
        parley_engine::egress::EgressPolicy::new(true, &["127.0.0.0/8".into()]).unwrap();
    // Every simulated customer comes from loopback with one agent's token.
    let unlimited = OpenRate {
        per_second: 0,
        burst: 0,
    };
    cfg.limits.open_per_credential = unlimited;
    cfg.limits.open_per_address = unlimited;
    tweak(&mut cfg);
    let server = server::start(cfg).await.expect("server starts");
    BenchServer {
        base: format!("http://{}", server.addr),
        server,
        dir,
    }
}

impl BenchServer {
    /// The SQLite database of a server on the embedded store.
    pub fn sqlite_path(&self) -> PathBuf {
        self.dir.path().join("parley.db")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An admin call that must succeed; answers its JSON.
    pub async fn admin(&self, http: &Client, method: Method, path: &str, body: Value) -> Value {
        let mut rb = http.request(method, self.url(path)).bearer_auth(ADMIN_KEY);
        if !body.is_null() {
            rb = rb.json(&body);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Creates an agent from YAML and starts it.
    pub async fn agent(&self, http: &Client, yaml: &str) -> Agent {
        let resp = http
            .post(self.url("/api/v1/agents"))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "application/yaml")
            .body(yaml.to_string())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
        let body: Value = resp.json().await.unwrap();
        let agent = Agent {
            id: body["id"].as_str().unwrap().into(),
            token: body["token"].as_str().unwrap().into(),
        };
        let path = format!("/api/v1/agents/{}/start", agent.id);
        self.admin(http, Method::POST, &path, Value::Null).await;
        agent
    }

    /// Creates an enabled connection with no outbound rate limits (this measures parley,
    /// not the platforms' quotas); answers its id.
    pub async fn connection(&self, http: &Client, platform: &str, config: Value) -> String {
        let body = json!({"name": format!("{platform} bench"), "platform": platform,
            "enabled": true, "config": config,
            "rate_limits": {"per_second": null, "per_chat_per_second": null, "queue": 100000}});
        let c = self
            .admin(http, Method::POST, "/api/v1/connections", body)
            .await;
        c["id"].as_str().unwrap().to_string()
    }

    /// Makes `connections` the agent's inbound channels, then starts them.
    pub async fn listen(&self, http: &Client, agent: &Agent, connections: &[&str]) {
        let channels: Vec<Value> = connections
            .iter()
            .map(|c| json!({"connection_id": c, "inbound": true}))
            .collect();
        let path = format!("/api/v1/agents/{}/channels", agent.id);
        self.admin(http, Method::PUT, &path, json!(channels)).await;
        for c in connections {
            let path = format!("/api/v1/connections/{c}/start");
            let started = self.admin(http, Method::POST, &path, Value::Null).await;
            assert_eq!(started["status"], "Connected", "{started}");
        }
    }

    /// Opens a chat-API session; answers its id.
    pub async fn session(&self, http: &Client, agent: &Agent) -> String {
        let resp = http
            .post(self.url(&format!("/chatbot/{}/session", agent.id)))
            .bearer_auth(&agent.token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
        let body: Value = resp.json().await.unwrap();
        body["session_id"].as_str().unwrap().to_string()
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }
}

/// One chat-API turn (`run_v2`) on `base`; panics unless it is answered.
pub async fn say(http: &Client, base: &str, agent: &Agent, session: &str, text: &str) {
    let resp = http
        .post(format!(
            "{base}/chatbot/{}/session/{session}/run_v2",
            agent.id
        ))
        .bearer_auth(&agent.token)
        .json(&json!({ "message": text }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert!(status.is_success(), "run_v2: {status} {body}");
}
