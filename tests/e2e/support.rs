//! A server per test on 127.0.0.1:0 with its own data dir, plus small HTTP helpers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use parley::server::{self, ServeConfig, Server};
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

pub const ADMIN_KEY: &str = "pk_test_admin_key_0123456789";
/// The deployment's super key of servers that need one ([`TestServer::with_super_key`]).
pub const SUPER_KEY: &str = "sk_test_super_key_of_the_node";

pub struct TestServer {
    pub server: Option<Server>,
    pub base: String,
    pub http: Client,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

pub fn config(dir: PathBuf) -> ServeConfig {
    let mut cfg = ServeConfig::new(dir);
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.admin_key = Some(ADMIN_KEY.into());
    cfg.load_examples = false;
    cfg.node.timer_sweep = Duration::from_millis(100);
    cfg.node.shards = 4;
    // Fake platforms and LLMs run on loopback, which the default egress policy denies.
    cfg.node.egress = loopback_allowed();
    cfg
}

pub fn loopback_allowed() -> parley_engine::egress::EgressPolicy {
    parley_engine::egress::EgressPolicy::new(true, &["127.0.0.0/8".into()]).unwrap()
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// A server with [`SUPER_KEY`] set, so tests can create more tenants.
    pub async fn with_super_key() -> TestServer {
        Self::start_with(|c| c.super_key = Some(SUPER_KEY.into())).await
    }

    /// A new tenant (needs [`TestServer::with_super_key`]): answers its admin key.
    pub async fn tenant(&self, name: &str) -> String {
        let (status, b) = self
            .call_as(
                reqwest::Method::POST,
                "/api/v1/tenants",
                SUPER_KEY,
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{b}");
        b["admin_key"].as_str().unwrap().to_string()
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServeConfig)) -> TestServer {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut t = Self::start_in(dir, tweak).await;
        t._tmp = Some(tmp);
        t
    }

    /// A server on an existing data dir (restart tests).
    pub async fn start_in(dir: PathBuf, tweak: impl FnOnce(&mut ServeConfig)) -> TestServer {
        let mut cfg = config(dir.clone());
        tweak(&mut cfg);
        let server = server::start(cfg).await.expect("server starts");
        TestServer {
            base: format!("http://{}", server.addr),
            server: Some(server),
            http: Client::new(),
            dir,
            _tmp: None,
        }
    }

    pub fn node(&self) -> &parley_actors::Node {
        &self.server.as_ref().expect("running").node
    }

    /// Stops the server, keeping the data dir (returned with its temp guard).
    pub async fn stop(mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
        (self.dir.clone(), self._tmp.take())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(ADMIN_KEY)
    }

    /// A call with `token` and a YAML body (agent definitions, flows); answers the status
    /// and the JSON.
    pub async fn call_yaml(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        yaml: &str,
    ) -> (StatusCode, Value) {
        json_of(
            self.http
                .request(method, self.url(path))
                .bearer_auth(token)
                .header("content-type", "application/yaml")
                .body(yaml.to_string())
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// A call with `token` (any credentials) and an optional JSON body; answers the
    /// status and the JSON.
    pub async fn call_as(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        json_of(rb.send().await.unwrap()).await
    }

    /// Adds a user (with `schedule`, if not null) with the admin key, signs them in and
    /// changes their temporary password: answers their id and token.
    pub async fn staff(&self, role: &str, email: &str, schedule: Value) -> (String, String) {
        self.staff_with(ADMIN_KEY, role, email, schedule).await
    }

    /// [`TestServer::staff`], added by the admin whose credentials are `key`.
    pub async fn staff_with(
        &self,
        key: &str,
        role: &str,
        email: &str,
        schedule: Value,
    ) -> (String, String) {
        let mut body = json!({"name": format!("{role} {email}"), "email": email, "role": role,
                              "password": "temporary-pass-1"});
        if !schedule.is_null() {
            body["schedule"] = schedule;
        }
        let (status, u) = self
            .call_as(reqwest::Method::POST, "/api/v1/users", key, Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{u}");
        let (status, s) = json_of(
            self.http
                .post(self.url("/api/v1/auth/login"))
                .json(&json!({"email": email, "password": "temporary-pass-1"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{s}");
        let (status, s) = self
            .call_as(
                reqwest::Method::POST,
                "/api/v1/auth/password",
                s["token"].as_str().unwrap(),
                Some(json!({"current_password": "temporary-pass-1",
                            "new_password": "a-better-password"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{s}");
        (
            u["id"].as_str().unwrap().to_string(),
            s["token"].as_str().unwrap().to_string(),
        )
    }

    /// An admin API call with an optional JSON body; answers the status and the JSON.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self.admin(method, path);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        json_of(rb.send().await.unwrap()).await
    }

    /// Creates an agent from YAML and starts it.
    pub async fn agent(&self, yaml: &str) -> Agent {
        self.agent_as(ADMIN_KEY, yaml).await
    }

    /// Creates an agent from YAML in the tenant of `key` and starts it.
    pub async fn agent_as(&self, key: &str, yaml: &str) -> Agent {
        let resp = self
            .http
            .post(self.url("/api/v1/agents"))
            .bearer_auth(key)
            .header("content-type", "application/yaml")
            .body(yaml.to_string())
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(resp).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().unwrap().to_string();
        let token = body["token"].as_str().unwrap().to_string();
        let (status, body) = json_of(
            self.http
                .post(self.url(&format!("/api/v1/agents/{id}/start")))
                .bearer_auth(key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "Running");
        Agent { id, token }
    }

    pub async fn session(&self, agent: &Agent, body: Value) -> String {
        let (status, s) = json_of(
            self.http
                .post(self.url(&format!("/chatbot/{}/session", agent.id)))
                .bearer_auth(&agent.token)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{s}");
        s["session_id"].as_str().unwrap().to_string()
    }

    pub fn run(&self, agent: &Agent, session: &str, message: &str) -> RequestBuilder {
        self.http
            .post(self.url(&format!("/chatbot/{}/session/{session}/run_v2", agent.id)))
            .bearer_auth(&agent.token)
            .multipart(reqwest::multipart::Form::new().text("message", message.to_string()))
    }

    /// Sends a message and expects 200; returns the answer body.
    pub async fn say(&self, agent: &Agent, session: &str, message: &str) -> Value {
        let (status, body) = json_of(self.run(agent, session, message).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn log(&self, agent: &Agent, session: &str) -> Vec<Value> {
        let (status, body) = json_of(
            self.http
                .get(self.url(&format!("/chatbot/{}/session/{session}/messages", agent.id)))
                .bearer_auth(&agent.token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["logs"].as_array().unwrap().clone()
    }

    pub async fn get_session(&self, agent: &Agent, session: &str) -> Value {
        let (status, body) = json_of(
            self.http
                .get(self.url(&format!("/chatbot/{}/session/{session}", agent.id)))
                .bearer_auth(&agent.token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

#[derive(Debug, Clone)]
pub struct Agent {
    pub id: String,
    pub token: String,
}

pub async fn json_of(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
    (status, v)
}

/// Asserts a JSON error of the documented shape and returns its code.
pub fn error_code(body: &Value) -> &str {
    let e = &body["error"];
    assert!(e["message"].is_string(), "error without message: {body}");
    e["code"]
        .as_str()
        .unwrap_or_else(|| panic!("error without code: {body}"))
}

/// Polls until `check` holds (at most `secs`).
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A minimal agent on the builtin backend.
pub fn basic_agent(extra: &str) -> String {
    format!(
        r#"
name: Test Agent
greeting: Hi there!
workflow:
  - name: Main
    kind: StateConfig
    init_state: true
    description: Answer questions.
    available_tools: [SendChatMessage, SetResult, ChangeState, FinishSession]
    transitions:
      - to: Human
        when_keywords: [operator, human]
  - name: Human
    available_tools: [SendChatMessage, ChangeState]
    transitions: [Main]
conversation_results:
  - field_name: HumanEmail
    field_type: email
knowledge:
  faq:
    - question: What are your opening hours?
      answer: We are open from 9 to 17.
{extra}
"#
    )
}

/// Serves a router on 127.0.0.1:0 (a fake platform or LLM backend); returns its base URL.
pub async fn serve_fake(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket with `token` offered the way browsers can: as the `bearer`
/// subprotocol (`Sec-WebSocket-Protocol: bearer, <token>`).
pub async fn ws_with_token(
    t: &TestServer,
    path: &str,
    token: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}{path}", t.base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("bearer, {token}").parse().unwrap(),
    );
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}
