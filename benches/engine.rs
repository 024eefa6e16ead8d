//! The engine's own steps, without actors, HTTP or a store: compiling an agent definition
//! (what a PUT of an agent costs) and one workflow step on the builtin backend (retrieval,
//! the state's tools, the reply). The baseline in the same run is parsing the same YAML
//! into untyped values, so the compile figure reads as "validation and compilation cost
//! N× a bare parse".
//!
//! `cargo bench --bench engine`

use std::collections::BTreeMap;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use parley_engine::agent::{parse_and_compile, Format};
use parley_engine::llm::{Backends, TurnInput};
use parley_engine::model::{Feedback, Message, Mode, Role, Session, SessionState};
use uuid::Uuid;

const AGENT: &str = include_str!("../examples/agents/debit-cards.yaml");

fn session(state: &str) -> Session {
    let now = Utc::now();
    Session {
        id: Uuid::new_v4(),
        tenant_id: Uuid::new_v4(),
        agent_id: Uuid::new_v4(),
        agent_version: 1,
        session_type: "chat".into(),
        mode: Mode::Regular,
        ext_type: "web".into(),
        user_id: "bench".into(),
        name: None,
        email: None,
        phone: None,
        channel_id: None,
        timeout: 3600,
        user_timeout: None,
        greeting_text: None,
        start_phrase: None,
        language: None,
        llm_backend: None,
        workflow_state: state.into(),
        conversation_result: BTreeMap::new(),
        kwargs: serde_json::Map::new(),
        user_info: serde_json::Value::Null,
        created_at: now,
        last_activity: now,
        closed_at: None,
        state: SessionState::Active,
        message_count: 0,
        assignee: None,
        channel: None,
    }
}

fn message(s: &Session, id: i64, role: Role, text: &str) -> Message {
    Message {
        id,
        session_id: s.id,
        role,
        text: text.into(),
        timestamp: Utc::now(),
        attachments: Vec::new(),
        metadata: serde_json::Value::Null,
        feedback: Feedback::None,
        idempotency_key: None,
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.bench_function("agent_yaml_parse_untyped_baseline", |b| {
        b.iter(|| serde_yaml::from_str::<serde_yaml::Value>(AGENT).unwrap())
    });
    g.bench_function("agent_compile", |b| {
        b.iter(|| parse_and_compile(AGENT, Format::Yaml).unwrap())
    });

    let agent = parse_and_compile(AGENT, Format::Yaml).unwrap();
    let backends = Backends::build(&agent, &reqwest::Client::new()).unwrap();
    let s = session(agent.init_state_name());
    let questions = [
        "How much does the Premium card cost?",
        "Can I use it abroad?",
        "What is the daily limit?",
        "How do I block a lost card?",
    ];
    let mut history = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        history.push(message(&s, 2 * i as i64 + 1, Role::Human, q));
        history.push(message(&s, 2 * i as i64 + 2, Role::Ai, "An answer."));
    }
    history.push(message(&s, 9, Role::Human, questions[0]));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    g.bench_function("workflow_step_builtin", |b| {
        b.iter(|| {
            let input = TurnInput {
                agent_id: s.agent_id,
                session: &s,
                history: &history,
            };
            rt.block_on(backends.run(&agent, None, &input, &|_| {}))
                .map(|o| o.generation.content.len())
                .unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = engine;
    config = Criterion::default().sample_size(30);
    targets = benches
}
criterion_main!(engine);
