//! OpenAI-compatible chat completions (`/chat/completions`, streamed), with the workflow
//! tools of the current state offered as function tools.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};

use super::webhook::{chat_history, header_map, request_timeout};
use super::{
    snippet, DeltaSink, Generation, LlmBackend, LlmError, TurnInput, DEFAULT_CONTEXT_WINDOW,
};
use crate::agent::BackendDef;
use crate::model::CloseStatus;
use crate::results::FieldType;
use crate::workflow::{Action, Tool, TurnContext};

const DEFAULT_MAX_TOOL_ROUNDS: u32 = 4;
/// Knowledge passages put into the system message.
const KNOWLEDGE_HITS: usize = 3;

pub struct OpenAiBackend {
    client: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    api_key_env: Option<String>,
    headers: HeaderMap,
    timeout: Duration,
    context_window: usize,
    max_tool_rounds: u32,
    temperature: Option<f32>,
}

impl OpenAiBackend {
    pub fn new(def: &BackendDef, client: reqwest::Client) -> Result<Self, LlmError> {
        let base = def
            .base_url
            .as_deref()
            .ok_or_else(|| LlmError::Config("openai backend needs a base_url".into()))?;
        let model = def
            .model
            .clone()
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(|| LlmError::Config("openai backend needs a model".into()))?;
        Ok(OpenAiBackend {
            client,
            url: format!("{}/chat/completions", base.trim_end_matches('/')),
            model,
            api_key: def.api_key.clone(),
            api_key_env: def.api_key_env.clone(),
            headers: header_map(def)?,
            timeout: request_timeout(def)?,
            context_window: def.context_window.unwrap_or(DEFAULT_CONTEXT_WINDOW),
            max_tool_rounds: def.max_tool_rounds.unwrap_or(DEFAULT_MAX_TOOL_ROUNDS),
            temperature: def.temperature,
        })
    }

    /// The request headers with the API key, read from the environment at call time so a
    /// rotated key is picked up without rebuilding the agent.
    fn request_headers(&self) -> Result<HeaderMap, LlmError> {
        let key = match (&self.api_key, &self.api_key_env) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                LlmError::Config(format!(
                    "environment variable {var} (api_key_env) is not set"
                ))
            })?),
            (None, None) => None,
        };
        let mut headers = self.headers.clone();
        if let Some(key) = key {
            let mut v = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| LlmError::Config("the API key is not a valid header value".into()))?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        Ok(headers)
    }

    fn request_body(&self, ctx: &TurnContext<'_>, knowledge: &str, convo: &[Value]) -> Value {
        let mut messages = Vec::with_capacity(convo.len() + 1);
        messages.push(json!({"role": "system", "content": system_prompt(ctx, knowledge)}));
        messages.extend_from_slice(convo);
        let mut body = json!({
            "model": self.model,
            "stream": true,
            // Without this, streamed answers carry no token usage.
            "stream_options": {"include_usage": true},
            "messages": messages,
        });
        let tools = tool_specs(ctx);
        // An empty `tools` array is rejected by OpenAI, so it is left out.
        if !tools.is_empty() {
            body["tools"] = Value::Array(tools);
        }
        if let Some(t) = self.temperature {
            // Via the decimal text, so 0.7f32 is sent as 0.7 and not 0.699999988.
            body["temperature"] = json!(t.to_string().parse::<f64>().unwrap_or(f64::from(t)));
        }
        body
    }

    /// Sends one request and reads its event stream to the end, streaming text to `reply`.
    async fn round(
        &self,
        body: &Value,
        headers: HeaderMap,
        reply: &mut Reply<'_>,
    ) -> Result<Round, LlmError> {
        let to_llm = |e: reqwest::Error| LlmError::from_reqwest(e, self.timeout);
        let resp = self
            .client
            .post(&self.url)
            .headers(headers)
            .json(body)
            .send()
            .await
            .map_err(to_llm)?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.map_err(to_llm)?;
            return Err(LlmError::Status {
                status: status.as_u16(),
                body: snippet(&text),
            });
        }
        let mut stream = resp.bytes_stream();
        let mut lines = SseLines::default();
        let mut round = Round::default();
        while let Some(chunk) = stream.next().await {
            for data in lines.push(&chunk.map_err(to_llm)?) {
                if round.absorb(&data, reply)? {
                    return Ok(round);
                }
            }
        }
        if let Some(data) = lines.finish() {
            if round.absorb(&data, reply)? {
                return Ok(round);
            }
        }
        // Some servers close without [DONE]; a finish reason still marks a whole answer.
        if round.finish_reason.is_some() {
            Ok(round)
        } else {
            Err(LlmError::InvalidResponse(
                "the stream ended before the answer was complete".into(),
            ))
        }
    }
}

#[async_trait]
impl LlmBackend for OpenAiBackend {
    fn kind(&self) -> &'static str {
        "openai"
    }

    async fn generate(
        &self,
        input: &TurnInput<'_>,
        ctx: &mut TurnContext<'_>,
        deltas: DeltaSink<'_>,
    ) -> Result<Generation, LlmError> {
        let headers = self.request_headers()?;
        let knowledge = knowledge_section(ctx, input.last_human_text());
        let mut convo = chat_history(input.history, self.context_window);
        let mut reply = Reply::new(deltas);
        let mut usage = Usage::default();
        let mut tool_rounds = 0;
        loop {
            // Rebuilt each round: the state, its tools and the results may have changed.
            let body = self.request_body(ctx, &knowledge, &convo);
            let round =
                tokio::time::timeout(self.timeout, self.round(&body, headers.clone(), &mut reply))
                    .await
                    .map_err(|_| LlmError::Timeout(self.timeout))??;
            reply.end_part();
            usage.add(round.usage.as_ref());
            if round.calls.is_empty() {
                break;
            }
            if tool_rounds == self.max_tool_rounds {
                return Err(LlmError::ToolRounds(self.max_tool_rounds));
            }
            tool_rounds += 1;
            let calls: Vec<ToolCall> = round
                .calls
                .into_values()
                .enumerate()
                .map(|(i, mut c)| {
                    if c.id.is_empty() {
                        c.id = format!("call_{tool_rounds}_{i}");
                    }
                    c
                })
                .collect();
            convo.push(json!({
                "role": "assistant",
                "content": if round.text.is_empty() { Value::Null } else { Value::String(round.text) },
                "tool_calls": calls.iter().map(|c| json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                })).collect::<Vec<_>>(),
            }));
            for call in &calls {
                let result = run_tool(ctx, call, &mut reply);
                convo.push(json!({"role": "tool", "tool_call_id": call.id, "content": result}));
            }
        }
        let mut metadata = json!({"model": self.model, "tool_rounds": tool_rounds});
        if let Some(u) = usage.to_json() {
            metadata["usage"] = u;
        }
        Ok(Generation {
            content: reply.text,
            metadata,
        })
    }
}

/// The reply text of a turn, streamed as it grows. Parts (the text of a round, each
/// SendChatMessage) are joined by a blank line, which is streamed too so the deltas always
/// add up to the content.
struct Reply<'a> {
    text: String,
    sink: DeltaSink<'a>,
    in_part: bool,
}

impl<'a> Reply<'a> {
    fn new(sink: DeltaSink<'a>) -> Self {
        Reply {
            text: String::new(),
            sink,
            in_part: false,
        }
    }

    fn push(&mut self, piece: &str) {
        if piece.is_empty() {
            return;
        }
        if !self.in_part {
            if !self.text.is_empty() {
                self.text.push_str("\n\n");
                (self.sink)("\n\n");
            }
            self.in_part = true;
        }
        self.text.push_str(piece);
        (self.sink)(piece);
    }

    fn end_part(&mut self) {
        self.in_part = false;
    }
}

/// Splits a byte stream into the payloads of `data:` lines. Lines are cut on bytes, so a
/// line (or a character) split across network reads is only decoded once whole.
#[derive(Default)]
struct SseLines {
    buf: Vec<u8>,
}

impl SseLines {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            out.extend(data_payload(&line));
        }
        out
    }

    /// A last line without a newline.
    fn finish(self) -> Option<String> {
        data_payload(&self.buf)
    }
}

fn data_payload(line: &[u8]) -> Option<String> {
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end_matches(['\r', '\n']);
    // Other fields (event:, id:, comments) carry nothing chat completions need.
    let data = line.strip_prefix("data:")?;
    Some(data.strip_prefix(' ').unwrap_or(data).to_string())
}

/// A tool call assembled from stream fragments.
#[derive(Default)]
struct ToolCall {
    id: String,
    name: String,
    arguments: String,
}

/// What one streamed answer held.
#[derive(Default)]
struct Round {
    text: String,
    /// By the `index` the stream gives each call.
    calls: BTreeMap<u64, ToolCall>,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

impl Round {
    /// Takes one event's data; true at `[DONE]`.
    fn absorb(&mut self, data: &str, reply: &mut Reply<'_>) -> Result<bool, LlmError> {
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        let v: Value = serde_json::from_str(data).map_err(|e| {
            LlmError::InvalidResponse(format!("bad stream event ({e}): {}", snippet(data)))
        })?;
        if let Some(err) = v.get("error") {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| err.to_string(), str::to_string);
            return Err(LlmError::InvalidResponse(format!(
                "error in stream: {}",
                snippet(&msg)
            )));
        }
        if v.get("usage").is_some_and(Value::is_object) {
            self.usage = Some(v["usage"].clone());
        }
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            return Ok(false);
        };
        let delta = &choice["delta"];
        if let Some(piece) = delta.get("content").and_then(Value::as_str) {
            self.text.push_str(piece);
            reply.push(piece);
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for (pos, c) in calls.iter().enumerate() {
                let index = c["index"].as_u64().unwrap_or(pos as u64);
                let call = self.calls.entry(index).or_default();
                // Id and name come whole (some servers repeat them in every fragment);
                // only the arguments arrive in pieces.
                if let Some(id) = c["id"].as_str().filter(|s| !s.is_empty()) {
                    call.id = id.to_string();
                }
                if let Some(name) = c["function"]["name"].as_str().filter(|s| !s.is_empty()) {
                    call.name = name.to_string();
                }
                if let Some(args) = c["function"]["arguments"].as_str() {
                    call.arguments.push_str(args);
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        Ok(false)
    }
}

/// Token counts summed over the rounds of a turn.
#[derive(Default)]
struct Usage {
    seen: bool,
    prompt: u64,
    completion: u64,
    total: u64,
}

impl Usage {
    fn add(&mut self, u: Option<&Value>) {
        let Some(u) = u else { return };
        let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
        self.seen = true;
        self.prompt += n("prompt_tokens");
        self.completion += n("completion_tokens");
        self.total += n("total_tokens");
    }

    fn to_json(&self) -> Option<Value> {
        self.seen.then(|| {
            json!({
                "prompt_tokens": self.prompt,
                "completion_tokens": self.completion,
                "total_tokens": self.total,
            })
        })
    }
}

/// Applies one tool call and returns what the model is told. Every refusal, including bad
/// arguments, ends up in `ctx.rejected`.
fn run_tool(ctx: &mut TurnContext<'_>, call: &ToolCall, reply: &mut Reply<'_>) -> String {
    let outcome = match tool_action(call) {
        Err(reason) => {
            ctx.rejected.push(reason.clone());
            Err(reason)
        }
        // Sent as part of this reply rather than kept in ctx.messages, so it reaches the
        // customer exactly once, in order with the rest of the answer.
        Ok(Action::SendChatMessage(text)) => {
            if ctx.state().tools.contains(&Tool::SendChatMessage) {
                reply.push(&text);
                reply.end_part();
                Ok("message sent".to_string())
            } else {
                let reason = format!(
                    "tool SendChatMessage is not available in state {:?}",
                    ctx.state().name
                );
                ctx.rejected.push(reason.clone());
                Err(reason)
            }
        }
        Ok(action) => ctx.apply(action),
    };
    outcome.unwrap_or_else(|reason| format!("error: {reason}"))
}

fn tool_action(call: &ToolCall) -> Result<Action, String> {
    let tool = Tool::parse(&call.name).ok_or_else(|| format!("unknown tool {:?}", call.name))?;
    // Calls without parameters may come with no arguments at all.
    let args: Value = if call.arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(&call.arguments)
            .map_err(|e| format!("{} arguments are not valid JSON: {e}", call.name))?
    };
    let text = |key: &str| -> Result<String, String> {
        args.get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("{} needs a string {key:?}", call.name))
    };
    Ok(match tool {
        Tool::ChangeState => Action::ChangeState(text("state")?),
        Tool::SetResult => Action::SetResult {
            field: text("field")?,
            value: args
                .get("value")
                .cloned()
                .ok_or_else(|| "SetResult needs a \"value\"".to_string())?,
        },
        Tool::SendChatMessage => Action::SendChatMessage(text("text")?),
        Tool::FinishSession => match args.get("status") {
            None | Some(Value::Null) => Action::FinishSession(CloseStatus::Completed),
            Some(_) => {
                let s = text("status")?;
                Action::FinishSession(
                    CloseStatus::parse(&s).ok_or_else(|| format!("unknown close status {s:?}"))?,
                )
            }
        },
        Tool::TransferToOperator => Action::TransferToOperator,
    })
}

/// The function tools of the current state. ChangeState without transitions and SetResult
/// without fields are left out: an empty `enum` is not a valid schema.
fn tool_specs(ctx: &TurnContext<'_>) -> Vec<Value> {
    let agent = ctx.agent();
    let state = ctx.state();
    let function = |name: &str, description: &str, parameters: Value| {
        json!({
            "type": "function",
            "function": {"name": name, "description": description, "parameters": parameters},
        })
    };
    let mut specs = Vec::new();
    for tool in &state.tools {
        match tool {
            Tool::ChangeState => {
                let targets: Vec<&str> = state
                    .transitions
                    .iter()
                    .map(|t| agent.states[t.target].name.as_str())
                    .collect();
                if targets.is_empty() {
                    continue;
                }
                specs.push(function(
                    "ChangeState",
                    "Move the conversation to another workflow state.",
                    json!({
                        "type": "object",
                        "properties": {"state": {"type": "string", "enum": targets}},
                        "required": ["state"],
                    }),
                ));
            }
            Tool::SetResult => {
                let fields: Vec<&str> = agent.fields.iter().map(|f| f.name.as_str()).collect();
                if fields.is_empty() {
                    continue;
                }
                specs.push(function(
                    "SetResult",
                    "Record a conversation result the customer gave.",
                    json!({
                        "type": "object",
                        "properties": {
                            "field": {"type": "string", "enum": fields},
                            "value": {"type": "string"},
                        },
                        "required": ["field", "value"],
                    }),
                ));
            }
            Tool::SendChatMessage => specs.push(function(
                "SendChatMessage",
                "Send a message to the customer.",
                json!({
                    "type": "object",
                    "properties": {"text": {"type": "string"}},
                    "required": ["text"],
                }),
            )),
            Tool::FinishSession => specs.push(function(
                "FinishSession",
                "End the conversation after this reply (status defaults to completed).",
                json!({
                    "type": "object",
                    "properties": {
                        "status": {
                            "type": "string",
                            "enum": CloseStatus::ALL.map(CloseStatus::as_str),
                        },
                    },
                }),
            )),
            Tool::TransferToOperator => specs.push(function(
                "TransferToOperator",
                "Hand the conversation to a human operator (when the customer asks for one, or you cannot help).",
                json!({"type": "object", "properties": {}}),
            )),
        }
    }
    specs
}

/// The agent's instructions and where the conversation stands.
fn system_prompt(ctx: &TurnContext<'_>, knowledge: &str) -> String {
    let def = &ctx.agent().definition;
    let state = ctx.state();
    let mut s = String::new();
    for (label, text) in [
        ("", &def.identity),
        ("Speech style: ", &def.speech_style),
        ("Task: ", &def.task),
    ] {
        if !text.trim().is_empty() {
            let _ = writeln!(s, "{label}{}", text.trim());
        }
    }
    let _ = write!(s, "\nCurrent workflow state: {}\n", state.name);
    if !state.description.trim().is_empty() {
        let _ = writeln!(s, "{}", state.description.trim());
    }
    let missing: Vec<_> = ctx
        .agent()
        .fields
        .iter()
        .filter(|f| !ctx.results().contains_key(&f.name))
        .collect();
    if !missing.is_empty() {
        s.push_str("\nResults still to collect:\n");
        for f in missing {
            let _ = write!(s, "- {} ({})", f.name, type_label(&f.field_type));
            if !f.description.trim().is_empty() {
                let _ = write!(s, ": {}", f.description.trim());
            }
            s.push('\n');
        }
    }
    if !ctx.results().is_empty() {
        let collected = serde_json::to_string(ctx.results()).unwrap_or_default();
        let _ = writeln!(s, "\nResults collected so far: {collected}");
    }
    s.push_str(knowledge);
    s
}

/// The best knowledge passages for the customer's last message, as a prompt section.
fn knowledge_section(ctx: &TurnContext<'_>, query: &str) -> String {
    let hits = ctx.agent().knowledge.search(query, KNOWLEDGE_HITS);
    if hits.is_empty() {
        return String::new();
    }
    let mut s = String::from("\nKnowledge that may help with the customer's last message:\n");
    for h in hits {
        match &h.passage.question {
            Some(q) => {
                let _ = writeln!(s, "- Q: {q}\n  A: {}", h.passage.answer);
            }
            None => {
                let _ = writeln!(s, "- {}", h.passage.answer);
            }
        }
    }
    s
}

fn type_label(t: &FieldType) -> String {
    match t {
        FieldType::Str => "text".into(),
        FieldType::Int => "integer".into(),
        FieldType::Float => "number".into(),
        FieldType::Bool => "yes/no".into(),
        FieldType::Email => "e-mail address".into(),
        FieldType::Phone => "phone number".into(),
        FieldType::Literal(values) => format!("one of: {}", values.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::agent::BackendKind;
    use crate::llm::testkit::{self, Fake, FakeReply};
    use crate::model::{Message, Role, Session};

    fn def(fake: &Fake) -> BackendDef {
        let mut d = BackendDef::new(BackendKind::Openai);
        // The trailing slash is trimmed.
        d.base_url = Some(format!("{}/v1/", fake.url));
        d.model = Some("gpt-test".into());
        d
    }

    fn chunk(delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "model": "gpt-test",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    /// A streamed text answer, with the usage event OpenAI sends last.
    fn text_answer(pieces: &[&str]) -> FakeReply {
        let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
        events.extend(pieces.iter().map(|p| chunk(json!({"content": p}), None)));
        events.push(chunk(json!({}), Some("stop")));
        events.push(json!({
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
        }));
        FakeReply::sse(&events)
    }

    /// A streamed answer of tool calls `(id, name, arguments)`, each call's arguments
    /// arriving in two fragments, after optional text.
    fn tool_answer(text: &str, calls: &[(&str, &str, &str)]) -> FakeReply {
        let mut events = vec![chunk(json!({"role": "assistant", "content": text}), None)];
        for (i, (id, name, args)) in calls.iter().enumerate() {
            events.push(chunk(
                json!({"tool_calls": [{"index": i, "id": id, "type": "function",
                    "function": {"name": name, "arguments": ""}}]}),
                None,
            ));
            let (a, b) = args.split_at(args.len() / 2);
            for part in [a, b] {
                events.push(chunk(
                    json!({"tool_calls": [{"index": i, "function": {"arguments": part}}]}),
                    None,
                ));
            }
        }
        events.push(chunk(json!({}), Some("tool_calls")));
        FakeReply::sse(&events)
    }

    fn history(s: &Session) -> Vec<Message> {
        testkit::history(
            s,
            &[
                (Role::Human, "Hi"),
                (Role::Ai, "Hello! How can I help?"),
                (Role::Notes, "internal note"),
                (Role::Human, "How much is the gold card?"),
            ],
        )
    }

    fn tool_names(body: &Value) -> Vec<&str> {
        body["tools"]
            .as_array()
            .map(|t| {
                t.iter()
                    .map(|t| t["function"]["name"].as_str().unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn streams_deltas_in_order_and_sends_the_prompt() {
        let fake = Fake::start(vec![text_answer(&["Hel", "lo ", "wörld", "!"])]).await;
        let mut d = def(&fake);
        d.temperature = Some(0.3);
        let backend = OpenAiBackend::new(&d, testkit::client()).unwrap();
        let agent = testkit::agent();
        let session = testkit::session();

        let t = testkit::turn(&backend, &agent, &session, &history(&session)).await;

        let g = t.result.unwrap();
        assert_eq!(t.deltas, vec!["Hel", "lo ", "wörld", "!"]);
        assert_eq!(g.content, "Hello wörld!");
        assert_eq!(
            g.metadata,
            json!({
                "model": "gpt-test",
                "tool_rounds": 0,
                "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
            })
        );
        let reqs = fake.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].path, "/v1/chat/completions");
        assert!(reqs[0].headers.get("authorization").is_none());
        let body = &reqs[0].body;
        assert_eq!(body["model"], "gpt-test");
        assert_eq!(body["stream"], true);
        assert_eq!(body["temperature"], json!(0.3));
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages[0]["role"], "system");
        let system = messages[0]["content"].as_str().unwrap();
        for part in [
            "You are Alex, an assistant of Example Bank.",
            "Speech style: Friendly and brief.",
            "Task: Help customers order a credit card.",
            "Current workflow state: Greeting\nFind out what the customer needs.",
            "- HumanEmail (e-mail address): Where the contract goes",
            "Results collected so far: {\"Budget\":\"500\"}",
            "Q: How much does the gold card cost?\n  A: The gold card costs 5 EUR a month.",
        ] {
            assert!(system.contains(part), "{part:?} missing from:\n{system}");
        }
        assert!(
            !system.contains("- Budget"),
            "Budget is collected:\n{system}"
        );
        assert_eq!(
            messages[1..],
            [
                json!({"role": "user", "content": "Hi"}),
                json!({"role": "assistant", "content": "Hello! How can I help?"}),
                json!({"role": "user", "content": "How much is the gold card?"}),
            ]
        );
        assert_eq!(
            tool_names(body),
            ["ChangeState", "SetResult", "SendChatMessage"]
        );
        let params = |i: usize| &body["tools"][i]["function"]["parameters"]["properties"];
        assert_eq!(params(0)["state"]["enum"], json!(["Ordering"]));
        assert_eq!(params(1)["field"]["enum"], json!(["Budget", "HumanEmail"]));
    }

    #[tokio::test]
    async fn change_state_tool_call_then_answer_in_two_rounds() {
        let fake = Fake::start(vec![
            tool_answer("", &[("call_1", "ChangeState", r#"{"state":"Ordering"}"#)]),
            text_answer(&["Let's ", "order."]),
        ])
        .await;
        let backend = OpenAiBackend::new(&def(&fake), testkit::client()).unwrap();
        let agent = testkit::agent();
        let session = testkit::session();

        let t = testkit::turn(&backend, &agent, &session, &history(&session)).await;

        let g = t.result.unwrap();
        assert_eq!(g.content, "Let's order.");
        assert_eq!(t.deltas.concat(), g.content);
        assert_eq!(g.metadata["tool_rounds"], 1);
        // Usage is summed over rounds; the tool round reported none.
        assert_eq!(g.metadata["usage"]["total_tokens"], 16);
        assert_eq!(t.ctx.state().name, "Ordering");
        assert!(t.ctx.state_changed);
        let reqs = fake.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(
            tool_names(&reqs[0].body),
            ["ChangeState", "SetResult", "SendChatMessage"]
        );
        let second = &reqs[1].body;
        assert_eq!(
            tool_names(second),
            ["SetResult", "SendChatMessage", "FinishSession"]
        );
        let messages = second["messages"].as_array().unwrap();
        assert!(messages[0]["content"]
            .as_str()
            .unwrap()
            .contains("Current workflow state: Ordering"));
        assert_eq!(messages.len(), 6);
        assert_eq!(
            messages[4..],
            [
                json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "ChangeState", "arguments": "{\"state\":\"Ordering\"}"},
                    }],
                }),
                json!({"role": "tool", "tool_call_id": "call_1", "content": "state is now Ordering"}),
            ]
        );
    }

    #[tokio::test]
    async fn set_result_send_message_and_refused_calls() {
        let fake = Fake::start(vec![
            tool_answer(
                "Checking.",
                &[
                    (
                        "c1",
                        "SetResult",
                        r#"{"field":"HumanEmail","value":"Ann@Example.org"}"#,
                    ),
                    ("c2", "SendChatMessage", r#"{"text":"One moment."}"#),
                    ("c3", "ChangeState", r#"{"state": Ordering"#),
                    ("c4", "FinishSession", ""),
                ],
            ),
            text_answer(&["Done."]),
        ])
        .await;
        let backend = OpenAiBackend::new(&def(&fake), testkit::client()).unwrap();
        let agent = testkit::agent();
        let session = testkit::session();

        let t = testkit::turn(&backend, &agent, &session, &history(&session)).await;

        let g = t.result.unwrap();
        assert_eq!(g.content, "Checking.\n\nOne moment.\n\nDone.");
        assert_eq!(t.deltas.concat(), g.content);
        assert!(t.deltas.contains(&"One moment.".to_string()));
        assert_eq!(t.ctx.results()["HumanEmail"], json!("ann@example.org"));
        assert_eq!(t.ctx.state().name, "Greeting");
        assert_eq!(t.ctx.finish, None);
        assert_eq!(t.ctx.rejected.len(), 2, "{:?}", t.ctx.rejected);
        let second = &fake.requests()[1].body;
        let messages = second["messages"].as_array().unwrap();
        assert_eq!(messages[4]["content"], "Checking.");
        let results: Vec<&str> = messages[5..]
            .iter()
            .map(|m| {
                assert_eq!(m["role"], "tool");
                m["content"].as_str().unwrap()
            })
            .collect();
        assert_eq!(results[..2], ["HumanEmail recorded", "message sent"]);
        assert!(
            results[2].starts_with("error: ChangeState arguments are not valid JSON"),
            "{results:?}"
        );
        assert_eq!(
            results[3],
            "error: tool FinishSession is not available in state \"Greeting\""
        );
        // Collected now, so no longer listed as missing.
        let system = messages[0]["content"].as_str().unwrap();
        assert!(!system.contains("- HumanEmail"), "{system}");
    }

    #[tokio::test]
    async fn api_key_is_sent_as_bearer_with_custom_headers() {
        let fake = Fake::start(vec![text_answer(&["ok"])]).await;
        let mut d = def(&fake);
        d.api_key = Some("sk-test-123".into());
        d.headers
            .insert("OpenAI-Organization".into(), "org-7".into());
        let backend = OpenAiBackend::new(&d, testkit::client()).unwrap();
        let agent = testkit::agent();
        let session = testkit::session();

        let t = testkit::turn(&backend, &agent, &session, &history(&session)).await;

        assert!(t.result.is_ok());
        let headers = &fake.requests()[0].headers;
        assert_eq!(headers["authorization"], "Bearer sk-test-123");
        assert_eq!(headers["openai-organization"], "org-7");
    }

    #[tokio::test]
    async fn api_key_env_is_read_when_calling() {
        const VAR: &str = "PARLEY_TEST_OPENAI_KEY_7C1E";
        std::env::remove_var(VAR);
        let fake = Fake::start(vec![text_answer(&["ok"])]).await;
        let mut d = def(&fake);
        d.api_key_env = Some(VAR.into());
        let backend = OpenAiBackend::new(&d, testkit::client()).unwrap();
        let agent = testkit::agent();
        let session = testkit::session();

        let t = testkit::turn(&backend, &agent, &session, &history(&session)).await;
        assert!(
            matches!(&t.result, Err(LlmError::Config(m)) if m.contains(VAR)),
            "{:?}",
            t.result
        );
        assert!(fake.requests().is_empty());

        std::env::set_var(VAR, "sk-from-env");
        let t = testkit::turn(&backend, &agent, &session, &history(&session)).await;
        std::env::remove_var(VAR);
        assert!(t.result.is_ok(), "{:?}", t.result);
        assert_eq!(
            fake.requests()[0].headers["authorization"],
            "Bearer sk-from-env"
        );
    }

    #[tokio::test]
    async fn error_bodies_become_status_errors() {
        let fake = Fake::start(vec![
            FakeReply::json(
                429,
                json!({"error": {"message": "Rate limit reached for gpt-test", "type": "requests"}}),
            ),
            FakeReply::json(
                401,
                json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}),
            ),
        ])
        .await;
        let mut d = def(&fake);
        d.api_key = Some("sk-secret".into());
        let backend = OpenAiBackend::new(&d, testkit::client()).unwrap();
        let agent = testkit::agent();
        let session = testkit::session();

        for (code, text) in [(429, "Rate limit reached"), (401, "Incorrect API key")] {
            let t = testkit::turn(&backend, &agent, &session, &history(&session)).await;
            let e = t.result.unwrap_err();
            match &e {
                LlmError::Status { status, body } => {
                    assert_eq!(*status, code);
                    assert!(body.contains(text), "{body}");
                }
                other => panic!("expected a status error, got {other:?}"),
            }
            assert!(!e.to_string().contains("sk-secret"));
            assert!(t.deltas.is_empty());
        }
    }

    #[tokio::test]
    async fn endless_tool_calls_stop_at_max_tool_rounds() {
        let fake = Fake::start(vec![tool_answer(
            "",
            &[("c", "SetResult", r#"{"field":"Budget","value":"1000"}"#)],
        )])
        .await;
        let mut d = def(&fake);
        d.max_tool_rounds = Some(2);
        let backend = OpenAiBackend::new(&d, testkit::client()).unwrap();
        let agent = testkit::agent();
        let session = testkit::session();

        let t = testkit::turn(&backend, &agent, &session, &history(&session)).await;

        assert!(
            matches!(t.result, Err(LlmError::ToolRounds(2))),
            "{:?}",
            t.result
        );
        assert_eq!(fake.requests().len(), 3);
    }

    #[tokio::test]
    async fn incomplete_streams_are_invalid_unless_finished() {
        let piece = |p: &str, finish: Option<&str>| {
            format!("data: {}\n\n", chunk(json!({"content": p}), finish))
        };
        let fake = Fake::start(vec![
            FakeReply::raw_sse(&[&piece("Hal", None)]),
            FakeReply::raw_sse(&["data: {\"error\": {\"message\": \"overloaded\"}}\n\n"]),
            FakeReply::raw_sse(&["data: {not json}\n\n"]),
            // A finish reason without [DONE] (and without a final newline) is complete.
            FakeReply::raw_sse(&[&piece("Hi", None), piece("!", Some("stop")).trim_end()]),
        ])
        .await;
        let backend = OpenAiBackend::new(&def(&fake), testkit::client()).unwrap();
        let agent = testkit::agent();
        let session = testkit::session();

        for _ in 0..3 {
            let t = testkit::turn(&backend, &agent, &session, &history(&session)).await;
            assert!(
                matches!(t.result, Err(LlmError::InvalidResponse(_))),
                "{:?}",
                t.result
            );
        }
        let t = testkit::turn(&backend, &agent, &session, &history(&session)).await;
        assert_eq!(t.result.unwrap().content, "Hi!");
    }

    #[tokio::test]
    async fn a_stalled_stream_times_out() {
        let first = format!("data: {}\n\n", chunk(json!({"content": "Hel"}), None));
        let fake = Fake::start(vec![
            FakeReply::raw_sse(&[&first, "data: [DONE]\n\n"]).gap(Duration::from_secs(3))
        ])
        .await;
        let mut d = def(&fake);
        d.timeout_secs = Some(0.3);
        let backend = OpenAiBackend::new(&d, testkit::client()).unwrap();
        let agent = testkit::agent();
        let session = testkit::session();

        let t = testkit::turn(&backend, &agent, &session, &history(&session)).await;

        assert!(
            matches!(t.result, Err(LlmError::Timeout(_))),
            "{:?}",
            t.result
        );
        assert_eq!(t.deltas, vec!["Hel"]);
    }

    #[test]
    fn construction_checks_the_definition() {
        let client = testkit::client();
        let mut d = BackendDef::new(BackendKind::Openai);
        d.model = Some("gpt-test".into());
        assert!(matches!(
            OpenAiBackend::new(&d, client.clone()),
            Err(LlmError::Config(_))
        ));
        d.base_url = Some("https://api.example.com/v1/".into());
        let b = OpenAiBackend::new(&d, client.clone()).unwrap();
        assert_eq!(b.url, "https://api.example.com/v1/chat/completions");
        assert_eq!(b.max_tool_rounds, 4);
        d.model = None;
        assert!(matches!(
            OpenAiBackend::new(&d, client),
            Err(LlmError::Config(_))
        ));
    }

    #[test]
    fn sse_lines_survive_any_split() {
        let stream = "data: {\"c\":\"wö\"}\r\n\n: keep-alive\nevent: x\ndata:[DONE]\n";
        let bytes = stream.as_bytes();
        for cut in 1..bytes.len() {
            let mut lines = SseLines::default();
            let mut got = lines.push(&bytes[..cut]);
            got.extend(lines.push(&bytes[cut..]));
            got.extend(lines.finish());
            assert_eq!(got, ["{\"c\":\"wö\"}", "[DONE]"], "cut at {cut}");
        }
    }
}
