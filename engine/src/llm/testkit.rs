//! Test helpers for the remote backends: a scripted HTTP fake on loopback that records
//! every request, and a small agent, session and history to run turns with.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Uri};
use axum::response::Response;
use axum::Router;
use futures::StreamExt;
use serde_json::Value;
use uuid::Uuid;

use super::{Generation, LlmBackend, LlmError, TurnInput};
use crate::agent::{parse_and_compile, CompiledAgent, Format};
use crate::model::{Feedback, Message, Mode, Role, Session, SessionState};
use crate::workflow::TurnContext;

/// One scripted answer of the fake.
#[derive(Clone)]
pub struct FakeReply {
    status: u16,
    content_type: &'static str,
    chunks: Vec<Bytes>,
    /// Before the response head is sent.
    delay: Duration,
    /// Between body chunks.
    gap: Duration,
}

impl FakeReply {
    pub fn json(status: u16, body: Value) -> FakeReply {
        FakeReply::text(status, &body.to_string()).content_type("application/json")
    }

    pub fn text(status: u16, body: &str) -> FakeReply {
        FakeReply {
            status,
            content_type: "text/plain",
            chunks: vec![Bytes::from(body.to_string())],
            delay: Duration::ZERO,
            gap: Duration::ZERO,
        }
    }

    /// A complete event stream of `events` and `[DONE]`, cut into 16-byte chunks so events
    /// (and multi-byte characters) straddle network reads.
    pub fn sse(events: &[Value]) -> FakeReply {
        let mut text: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        text.push_str("data: [DONE]\n\n");
        let chunks = text
            .as_bytes()
            .chunks(16)
            .map(Bytes::copy_from_slice)
            .collect();
        FakeReply {
            status: 200,
            content_type: "text/event-stream",
            chunks,
            delay: Duration::ZERO,
            gap: Duration::ZERO,
        }
    }

    /// An event stream sent exactly as these chunks.
    pub fn raw_sse(chunks: &[&str]) -> FakeReply {
        FakeReply {
            chunks: chunks.iter().map(|c| Bytes::from(c.to_string())).collect(),
            ..FakeReply::sse(&[])
        }
    }

    pub fn delayed(mut self, d: Duration) -> FakeReply {
        self.delay = d;
        self
    }

    pub fn gap(mut self, d: Duration) -> FakeReply {
        self.gap = d;
        self
    }

    fn content_type(mut self, ct: &'static str) -> FakeReply {
        self.content_type = ct;
        self
    }
}

/// A request the fake received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    /// The JSON body (Null if it was not JSON).
    pub body: Value,
}

struct Shared {
    replies: Vec<FakeReply>,
    requests: Mutex<Vec<Recorded>>,
}

/// An HTTP server on 127.0.0.1 answering the n-th request (any path) with the n-th reply;
/// the last reply repeats.
pub struct Fake {
    /// `http://127.0.0.1:{port}`
    pub url: String,
    shared: Arc<Shared>,
}

impl Fake {
    pub async fn start(replies: Vec<FakeReply>) -> Fake {
        assert!(!replies.is_empty());
        let shared = Arc::new(Shared {
            replies,
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(answer).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Fake { url, shared }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut requests = shared.requests.lock().unwrap();
        requests.push(Recorded {
            path: uri.path().to_string(),
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        shared.replies[(requests.len() - 1).min(shared.replies.len() - 1)].clone()
    };
    tokio::time::sleep(reply.delay).await;
    let gap = reply.gap;
    let body = futures::stream::iter(reply.chunks.into_iter().enumerate()).then(
        move |(i, chunk)| async move {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            Ok::<_, Infallible>(chunk)
        },
    );
    Response::builder()
        .status(reply.status)
        .header(header::CONTENT_TYPE, reply.content_type)
        .body(Body::from_stream(body))
        .unwrap()
}

/// A client that ignores proxy settings of the environment, which would not reach loopback.
pub fn client() -> reqwest::Client {
    crate::egress::builder(None, crate::egress::Timeouts::default())
        .no_proxy()
        .build()
        .unwrap()
}

pub const AGENT_YAML: &str = r#"
name: Card Helper
identity: You are Alex, an assistant of Example Bank.
speech_style: Friendly and brief.
task: Help customers order a credit card.
workflow:
  - name: Greeting
    init_state: true
    description: Find out what the customer needs.
    available_tools: [ChangeState, SetResult, SendChatMessage]
    transitions: [Ordering]
  - name: Ordering
    description: Collect the e-mail address, then finish.
    available_tools: [SetResult, SendChatMessage, FinishSession]
    transitions: [Greeting]
conversation_results:
  - field_name: Budget
    field_type: Literal['500', '1000']
    field_description: Monthly card limit
  - field_name: HumanEmail
    field_type: email
    field_description: Where the contract goes
knowledge:
  faq:
    - question: How much does the gold card cost?
      answer: The gold card costs 5 EUR a month.
"#;

pub fn agent() -> CompiledAgent {
    parse_and_compile(AGENT_YAML, Format::Yaml).unwrap()
}

/// A Telegram session in state Greeting with Budget already collected.
pub fn session() -> Session {
    let now = chrono::Utc::now();
    Session {
        id: Uuid::new_v4(),
        tenant_id: Uuid::new_v4(),
        agent_id: Uuid::new_v4(),
        agent_version: 1,
        session_type: "chat".into(),
        mode: Mode::Regular,
        ext_type: "telegram".into(),
        user_id: "u-42".into(),
        name: Some("Ann".into()),
        email: None,
        phone: None,
        channel_id: Some("chat-7".into()),
        timeout: 3600,
        user_timeout: None,
        greeting_text: None,
        start_phrase: None,
        language: None,
        llm_backend: None,
        workflow_state: "Greeting".into(),
        conversation_result: BTreeMap::from([("Budget".to_string(), Value::from("500"))]),
        kwargs: serde_json::Map::new(),
        user_info: Value::Null,
        created_at: now,
        last_activity: now,
        closed_at: None,
        state: SessionState::Active,
        message_count: 0,
        assignee: None,
        channel: None,
    }
}

pub fn history(session: &Session, entries: &[(Role, &str)]) -> Vec<Message> {
    entries
        .iter()
        .enumerate()
        .map(|(i, (role, text))| Message {
            id: i as i64 + 1,
            session_id: session.id,
            role: *role,
            text: text.to_string(),
            timestamp: chrono::Utc::now(),
            attachments: Vec::new(),
            metadata: Value::Null,
            feedback: Feedback::None,
            idempotency_key: None,
        })
        .collect()
}

/// What one turn produced.
pub struct Turn<'a> {
    pub result: Result<Generation, LlmError>,
    pub deltas: Vec<String>,
    pub ctx: TurnContext<'a>,
}

/// Runs one turn from the session's workflow position, collecting the deltas.
pub async fn turn<'a>(
    backend: &dyn LlmBackend,
    agent: &'a CompiledAgent,
    session: &Session,
    history: &[Message],
) -> Turn<'a> {
    let input = TurnInput {
        agent_id: session.agent_id,
        session,
        history,
    };
    let mut ctx = TurnContext::new(agent, &session.workflow_state, &session.conversation_result);
    let deltas = Mutex::new(Vec::new());
    let sink = |d: &str| deltas.lock().unwrap().push(d.to_string());
    let result = backend.generate(&input, &mut ctx, &sink).await;
    Turn {
        result,
        deltas: deltas.into_inner().unwrap(),
        ctx,
    }
}
