//! The seed's AI-backend webhook contract: one JSON POST per turn with the recent messages,
//! the customer and the bot; the answer carries the reply text and optional workflow
//! actions.
//!
//! The request-building helpers here are shared with the OpenAI backend.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Map, Value};

use super::{
    snippet, DeltaSink, Generation, LlmBackend, LlmError, TurnInput, DEFAULT_CONTEXT_WINDOW,
    DEFAULT_TIMEOUT,
};
use crate::agent::BackendDef;
use crate::model::{CloseStatus, Message, Role};
use crate::workflow::{Action, TurnContext};

pub struct WebhookBackend {
    client: reqwest::Client,
    url: String,
    headers: HeaderMap,
    timeout: Duration,
    context_window: usize,
}

impl WebhookBackend {
    pub fn new(def: &BackendDef, client: reqwest::Client) -> Result<Self, LlmError> {
        let url = def
            .url
            .clone()
            .ok_or_else(|| LlmError::Config("webhook backend needs a url".into()))?;
        Ok(WebhookBackend {
            client,
            url,
            headers: header_map(def)?,
            timeout: request_timeout(def)?,
            context_window: def.context_window.unwrap_or(DEFAULT_CONTEXT_WINDOW),
        })
    }

    fn request_body(&self, input: &TurnInput<'_>, ctx: &TurnContext<'_>) -> Value {
        let s = input.session;
        json!({
            "messages": chat_history(input.history, self.context_window),
            "conversation_id": s.id.to_string(),
            "user": {"id": s.user_id, "platform": s.ext_type, "name": s.name},
            "bot": {"id": input.agent_id.to_string(), "name": ctx.agent().definition.name},
            "metadata": {
                "channel": s.ext_type,
                "chat_id": s.channel_id.as_deref().unwrap_or(&s.user_id),
            },
            "state": ctx.state().name,
            "results": ctx.results(),
        })
    }
}

/// The backend's request timeout; validation normally rejects bad values, this keeps
/// `Duration` from panicking on an unvalidated definition.
pub(super) fn request_timeout(def: &BackendDef) -> Result<Duration, LlmError> {
    match def.timeout_secs {
        None => Ok(DEFAULT_TIMEOUT),
        Some(t) => Duration::try_from_secs_f64(t)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| LlmError::Config("timeout_secs must be a positive number".into())),
    }
}

/// The definition's extra headers. Values are secrets: errors name only the header, and
/// values are marked sensitive so reqwest keeps them out of debug output.
pub(super) fn header_map(def: &BackendDef) -> Result<HeaderMap, LlmError> {
    let mut map = HeaderMap::new();
    for (name, value) in &def.headers {
        let bad = || LlmError::Config(format!("header {name:?} has an invalid name or value"));
        let key = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        let mut v = HeaderValue::from_str(value).map_err(|_| bad())?;
        v.set_sensitive(true);
        map.insert(key, v);
    }
    Ok(map)
}

/// The last `window` messages the model should see, as chat roles. Operators speak for
/// the bot; notes and copilot suggestions are internal and left out before windowing, so
/// the window counts only messages that are sent.
pub(super) fn chat_history(history: &[Message], window: usize) -> Vec<Value> {
    let sent: Vec<Value> = history
        .iter()
        .filter_map(|m| {
            let role = match m.role {
                Role::Human => "user",
                Role::Ai | Role::Operator => "assistant",
                Role::Notes | Role::Copilot => return None,
            };
            Some(json!({"role": role, "content": m.text}))
        })
        .collect();
    let skip = sent.len().saturating_sub(window);
    sent.into_iter().skip(skip).collect()
}

/// A webhook answer, checked in full before anything is applied.
struct Reply {
    content: String,
    metadata: Value,
    /// In the order they are applied; `Err` is an action refused before reaching the
    /// workflow (an unknown close status).
    actions: Vec<Result<Action, String>>,
}

fn parse_reply(body: &str) -> Result<Reply, LlmError> {
    let invalid = |m: &str| LlmError::InvalidResponse(m.to_string());
    let v: Value = serde_json::from_str(body)
        .map_err(|e| LlmError::InvalidResponse(format!("not JSON ({e}): {}", snippet(body))))?;
    let content = v
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("`content` must be a string"))?
        .to_string();
    let metadata = v.get("metadata").cloned().unwrap_or(Value::Null);
    let actions = match v.get("actions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(a)) => parse_actions(a)?,
        Some(_) => return Err(invalid("`actions` must be an object")),
    };
    Ok(Reply {
        content,
        metadata,
        actions,
    })
}

/// Results first, then the state change, then finishing: results belong to the state the
/// webhook saw, and finishing is allowed or not by the state the turn ends in.
fn parse_actions(a: &Map<String, Value>) -> Result<Vec<Result<Action, String>>, LlmError> {
    let invalid = |m: &str| LlmError::InvalidResponse(m.to_string());
    let mut out = Vec::new();
    match a.get("results") {
        None | Some(Value::Null) => {}
        Some(Value::Object(results)) => {
            for (field, value) in results {
                out.push(Ok(Action::SetResult {
                    field: field.clone(),
                    value: value.clone(),
                }));
            }
        }
        Some(_) => return Err(invalid("`actions.results` must be an object")),
    }
    match a.get("state") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => out.push(Ok(Action::ChangeState(s.clone()))),
        Some(_) => return Err(invalid("`actions.state` must be a state name")),
    }
    match a.get("finish") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => out.push(Ok(Action::FinishSession(CloseStatus::Completed))),
        Some(Value::String(s)) => out.push(
            CloseStatus::parse(s)
                .map(Action::FinishSession)
                .ok_or_else(|| format!("unknown close status {s:?}")),
        ),
        Some(_) => return Err(invalid("`actions.finish` must be true or a close status")),
    }
    match a.get("transfer_to_operator") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => out.push(Ok(Action::TransferToOperator)),
        Some(_) => return Err(invalid("`actions.transfer_to_operator` must be a boolean")),
    }
    Ok(out)
}

#[async_trait]
impl LlmBackend for WebhookBackend {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn generate(
        &self,
        input: &TurnInput<'_>,
        ctx: &mut TurnContext<'_>,
        deltas: DeltaSink<'_>,
    ) -> Result<Generation, LlmError> {
        let body = self.request_body(input, ctx);
        // One deadline for connecting, sending and reading the whole answer.
        let exchange = async {
            let resp = self
                .client
                .post(&self.url)
                .headers(self.headers.clone())
                .json(&body)
                .send()
                .await?;
            let status = resp.status();
            Ok::<_, reqwest::Error>((status, resp.text().await?))
        };
        let (status, text) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| LlmError::Timeout(self.timeout))?
            .map_err(|e| LlmError::from_reqwest(e, self.timeout))?;
        if !status.is_success() {
            return Err(LlmError::Status {
                status: status.as_u16(),
                body: snippet(&text),
            });
        }
        let reply = parse_reply(&text)?;
        for action in reply.actions {
            // Refusals are kept in ctx.rejected; the reply still goes out.
            match action {
                Ok(a) => {
                    let _ = ctx.apply(a);
                }
                Err(reason) => ctx.rejected.push(reason),
            }
        }
        if !reply.content.is_empty() {
            deltas(&reply.content);
        }
        Ok(Generation {
            content: reply.content,
            metadata: reply.metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::agent::BackendKind;
    use crate::llm::testkit::{self, Fake, FakeReply};

    fn def(fake: &Fake) -> BackendDef {
        let mut d = BackendDef::new(BackendKind::Webhook);
        d.url = Some(format!("{}/hook", fake.url));
        d
    }

    fn greeting_history(s: &crate::model::Session) -> Vec<Message> {
        testkit::history(
            s,
            &[(Role::Human, "Hi"), (Role::Ai, "Hello! How can I help?")],
        )
    }

    #[tokio::test]
    async fn sends_the_seed_contract_and_returns_content() {
        let fake = Fake::start(vec![FakeReply::json(
            200,
            json!({"content": "Sure, which card?", "metadata": {"trace": [1, 2]}}),
        )])
        .await;
        let mut d = def(&fake);
        d.context_window = Some(3);
        d.headers.insert("X-Api-Key".into(), "hook-secret".into());
        let backend = WebhookBackend::new(&d, testkit::client()).unwrap();
        let agent = testkit::agent();
        let session = testkit::session();
        let history = testkit::history(
            &session,
            &[
                (Role::Human, "Hi"),
                (Role::Ai, "Hello! How can I help?"),
                (Role::Notes, "internal note"),
                (Role::Operator, "An operator here."),
                (Role::Copilot, "suggestion"),
                (Role::Human, "I want a card"),
            ],
        );

        let t = testkit::turn(&backend, &agent, &session, &history).await;

        let g = t.result.unwrap();
        assert_eq!(g.content, "Sure, which card?");
        assert_eq!(g.metadata, json!({"trace": [1, 2]}));
        assert_eq!(t.deltas, vec!["Sure, which card?"]);
        let reqs = fake.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].path, "/hook");
        assert_eq!(reqs[0].headers["x-api-key"], "hook-secret");
        assert_eq!(
            reqs[0].body,
            json!({
                "messages": [
                    {"role": "assistant", "content": "Hello! How can I help?"},
                    {"role": "assistant", "content": "An operator here."},
                    {"role": "user", "content": "I want a card"},
                ],
                "conversation_id": session.id.to_string(),
                "user": {"id": "u-42", "platform": "telegram", "name": "Ann"},
                "bot": {"id": session.agent_id.to_string(), "name": "Card Helper"},
                "metadata": {"channel": "telegram", "chat_id": "chat-7"},
                "state": "Greeting",
                "results": {"Budget": "500"},
            })
        );
    }

    #[tokio::test]
    async fn chat_id_falls_back_to_the_user_and_metadata_is_optional() {
        let fake = Fake::start(vec![FakeReply::json(200, json!({"content": "ok"}))]).await;
        let backend = WebhookBackend::new(&def(&fake), testkit::client()).unwrap();
        let agent = testkit::agent();
        let mut session = testkit::session();
        session.channel_id = None;
        session.name = None;

        let t = testkit::turn(&backend, &agent, &session, &greeting_history(&session)).await;

        assert_eq!(t.result.unwrap().metadata, Value::Null);
        let body = &fake.requests()[0].body;
        assert_eq!(body["metadata"]["chat_id"], "u-42");
        assert_eq!(body["user"]["name"], Value::Null);
        assert_eq!(body["messages"].as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn applies_state_results_and_finish() {
        let fake = Fake::start(vec![FakeReply::json(
            200,
            json!({
                "content": "Thanks, that's all!",
                "actions": {
                    "state": "Ordering",
                    "results": {"Budget": "1000", "HumanEmail": "Ann@Example.org"},
                    "finish": "completed",
                },
            }),
        )])
        .await;
        let backend = WebhookBackend::new(&def(&fake), testkit::client()).unwrap();
        let agent = testkit::agent();
        let session = testkit::session();

        let t = testkit::turn(&backend, &agent, &session, &greeting_history(&session)).await;

        assert_eq!(t.result.unwrap().content, "Thanks, that's all!");
        assert!(t.ctx.rejected.is_empty(), "{:?}", t.ctx.rejected);
        assert_eq!(t.ctx.state().name, "Ordering");
        assert!(t.ctx.state_changed);
        assert_eq!(t.ctx.finish, Some(CloseStatus::Completed));
        assert_eq!(t.ctx.results()["Budget"], json!("1000"));
        assert_eq!(t.ctx.results()["HumanEmail"], json!("ann@example.org"));
    }

    #[tokio::test]
    async fn finish_true_means_completed() {
        let fake = Fake::start(vec![FakeReply::json(
            200,
            json!({"content": "Bye", "actions": {"state": "Ordering", "finish": true}}),
        )])
        .await;
        let backend = WebhookBackend::new(&def(&fake), testkit::client()).unwrap();
        let agent = testkit::agent();
        let session = testkit::session();

        let t = testkit::turn(&backend, &agent, &session, &greeting_history(&session)).await;

        assert!(t.result.is_ok());
        assert_eq!(t.ctx.finish, Some(CloseStatus::Completed));
    }

    #[tokio::test]
    async fn refused_actions_are_recorded_not_errors() {
        // Greeting has no FinishSession, no transition to "Nowhere", and "lots" is no
        // Budget value; "whenever" is no close status.
        let fake = Fake::start(vec![FakeReply::json(
            200,
            json!({
                "content": "Hm.",
                "actions": {"state": "Nowhere", "results": {"Budget": "lots"}, "finish": "whenever"},
            }),
        )])
        .await;
        let backend = WebhookBackend::new(&def(&fake), testkit::client()).unwrap();
        let agent = testkit::agent();
        let session = testkit::session();

        let t = testkit::turn(&backend, &agent, &session, &greeting_history(&session)).await;

        assert_eq!(t.result.unwrap().content, "Hm.");
        assert_eq!(t.ctx.state().name, "Greeting");
        assert_eq!(t.ctx.results()["Budget"], json!("500"));
        assert_eq!(t.ctx.finish, None);
        let r = &t.ctx.rejected;
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(r[0].starts_with("Budget: "), "{r:?}");
        assert_eq!(r[1], "unknown state \"Nowhere\"");
        assert_eq!(r[2], "unknown close status \"whenever\"");
    }

    #[tokio::test]
    async fn slow_webhook_times_out() {
        let fake = Fake::start(vec![
            FakeReply::json(200, json!({"content": "late"})).delayed(Duration::from_secs(2))
        ])
        .await;
        let mut d = def(&fake);
        d.timeout_secs = Some(0.2);
        let backend = WebhookBackend::new(&d, testkit::client()).unwrap();
        let agent = testkit::agent();
        let session = testkit::session();

        let t = testkit::turn(&backend, &agent, &session, &greeting_history(&session)).await;

        match t.result {
            Err(LlmError::Timeout(d)) => assert_eq!(d, Duration::from_millis(200)),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(t.deltas.is_empty());
    }

    #[tokio::test]
    async fn server_error_is_a_status_error_with_a_snippet() {
        let page = format!("<html>{}</html>", "x".repeat(1000));
        let fake = Fake::start(vec![FakeReply::text(500, &page)]).await;
        let mut d = def(&fake);
        d.headers
            .insert("Authorization".into(), "Bearer hook-secret".into());
        let backend = WebhookBackend::new(&d, testkit::client()).unwrap();
        let agent = testkit::agent();
        let session = testkit::session();

        let t = testkit::turn(&backend, &agent, &session, &greeting_history(&session)).await;

        let e = t.result.unwrap_err();
        match &e {
            LlmError::Status { status, body } => {
                assert_eq!(*status, 500);
                assert!(
                    body.starts_with("<html>xxx") && body.ends_with('…'),
                    "{body}"
                );
                assert!(body.len() < 400);
            }
            other => panic!("expected a status error, got {other:?}"),
        }
        assert!(!e.to_string().contains("hook-secret"));
    }

    #[tokio::test]
    async fn answers_without_string_content_are_invalid() {
        let fake = Fake::start(vec![
            FakeReply::json(200, json!({"text": "hi"})),
            FakeReply::json(200, json!({"content": 42})),
            FakeReply::text(200, "hello"),
            FakeReply::json(200, json!({"content": "hi", "actions": ["finish"]})),
        ])
        .await;
        let backend = WebhookBackend::new(&def(&fake), testkit::client()).unwrap();
        let agent = testkit::agent();
        let session = testkit::session();
        for _ in 0..4 {
            let t = testkit::turn(&backend, &agent, &session, &greeting_history(&session)).await;
            assert!(
                matches!(t.result, Err(LlmError::InvalidResponse(_))),
                "{:?}",
                t.result
            );
            assert!(t.deltas.is_empty());
        }
    }

    #[tokio::test]
    async fn unreachable_webhook_is_a_connect_error() {
        let mut d = BackendDef::new(BackendKind::Webhook);
        // Port 9 (discard) is closed on test machines; the request is refused at once.
        d.url = Some("http://127.0.0.1:9/hook".into());
        let backend = WebhookBackend::new(&d, testkit::client()).unwrap();
        let agent = testkit::agent();
        let session = testkit::session();

        let t = testkit::turn(&backend, &agent, &session, &greeting_history(&session)).await;

        assert!(
            matches!(t.result, Err(LlmError::Connect(_))),
            "{:?}",
            t.result
        );
    }

    #[test]
    fn construction_checks_the_definition() {
        let client = testkit::client();
        let d = BackendDef::new(BackendKind::Webhook);
        assert!(matches!(
            WebhookBackend::new(&d, client.clone()),
            Err(LlmError::Config(_))
        ));
        let mut d = BackendDef::new(BackendKind::Webhook);
        d.url = Some("http://127.0.0.1:1/hook".into());
        d.headers.insert("X-Key".into(), "bad\nsecret".into());
        match WebhookBackend::new(&d, client.clone()) {
            Err(LlmError::Config(m)) => {
                assert!(m.contains("X-Key") && !m.contains("secret"), "{m}")
            }
            _ => panic!("expected a config error"),
        }
        d.headers.clear();
        d.timeout_secs = Some(-1.0);
        assert!(matches!(
            WebhookBackend::new(&d, client),
            Err(LlmError::Config(_))
        ));
    }
}
