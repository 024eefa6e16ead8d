//! One agent's set of backends: weighted, sticky choice per session and fallback order.

use std::sync::Arc;

use uuid::Uuid;

use super::{
    BuiltinBackend, DeltaSink, Generation, LlmBackend, LlmError, OpenAiBackend, TurnInput,
    WebhookBackend,
};
use crate::agent::{BackendDef, BackendKind, CompiledAgent};
use crate::telemetry;
use crate::workflow::TurnContext;

pub struct NamedBackend {
    pub name: String,
    pub weight: u32,
    pub fallback: bool,
    pub backend: Arc<dyn LlmBackend>,
}

/// The backends of one agent version, in definition order.
pub struct Backends {
    list: Vec<NamedBackend>,
}

/// A successful turn: which backend answered, its answer and the workflow outcome.
pub struct TurnOutcome<'a> {
    pub backend: String,
    pub generation: Generation,
    pub ctx: TurnContext<'a>,
    /// Backends that failed before this one answered.
    pub failures: Vec<(String, LlmError)>,
}

/// Every backend tried failed.
#[derive(Debug)]
pub struct TurnFailure {
    pub failures: Vec<(String, LlmError)>,
}

impl Backends {
    /// Builds the agent's backends; an agent without any gets one `builtin`.
    pub fn build(agent: &CompiledAgent, client: &reqwest::Client) -> Result<Backends, LlmError> {
        let defs: Vec<BackendDef> = if agent.definition.llm.is_empty() {
            vec![BackendDef::new(BackendKind::Builtin)]
        } else {
            agent.definition.llm.clone()
        };
        let mut list = Vec::with_capacity(defs.len());
        for (i, d) in defs.iter().enumerate() {
            let name = d
                .name
                .clone()
                .unwrap_or_else(|| format!("{:?}-{i}", d.kind).to_lowercase());
            let backend: Arc<dyn LlmBackend> = match d.kind {
                BackendKind::Builtin => Arc::new(BuiltinBackend::new(d)),
                BackendKind::Webhook => Arc::new(WebhookBackend::new(d, client.clone())?),
                BackendKind::Openai => Arc::new(OpenAiBackend::new(d, client.clone())?),
            };
            list.push(NamedBackend {
                name,
                weight: d.weight,
                fallback: d.fallback,
                backend,
            });
        }
        Ok(Backends { list })
    }

    /// Picks the primary backend of a new session by weight. The pick is a function of the
    /// session id (its random bits), so it is stable for the session.
    pub fn choose(&self, session_id: Uuid) -> &str {
        let primaries = || self.list.iter().filter(|b| !b.fallback && b.weight > 0);
        let total: u64 = primaries().map(|b| u64::from(b.weight)).sum();
        if total == 0 {
            return &self.list[0].name;
        }
        let mut point = (session_id.as_u128() as u64) % total;
        for b in primaries() {
            let w = u64::from(b.weight);
            if point < w {
                return &b.name;
            }
            point -= w;
        }
        &self.list[0].name
    }

    /// The session's backend first, then the fallbacks in definition order.
    fn order(&self, primary: Option<&str>) -> Vec<&NamedBackend> {
        let first = primary
            .and_then(|p| self.list.iter().find(|b| b.name == p))
            .or_else(|| self.list.iter().find(|b| !b.fallback))
            .or(self.list.first());
        let first_name = first.map(|b| b.name.as_str());
        first
            .into_iter()
            .chain(
                self.list
                    .iter()
                    .filter(|b| b.fallback && Some(b.name.as_str()) != first_name),
            )
            .collect()
    }

    /// Runs the turn on the session's backend, then on each fallback until one answers.
    /// Each attempt starts from the session's workflow position, so a failed attempt leaves
    /// no half-applied actions.
    pub async fn run<'a>(
        &self,
        agent: &'a CompiledAgent,
        primary: Option<&str>,
        input: &TurnInput<'_>,
        deltas: DeltaSink<'_>,
    ) -> Result<TurnOutcome<'a>, TurnFailure> {
        let mut failures = Vec::new();
        for b in self.order(primary) {
            let mut ctx = TurnContext::new(
                agent,
                &input.session.workflow_state,
                &input.session.conversation_result,
            );
            let started = std::time::Instant::now();
            let result = b.backend.generate(input, &mut ctx, deltas).await;
            let kind = b.backend.kind();
            metrics::histogram!(telemetry::LLM_SECONDS, "backend" => kind)
                .record(started.elapsed().as_secs_f64());
            let outcome = result.as_ref().map_or_else(|e| e.kind(), |_| "ok");
            metrics::counter!(telemetry::LLM_REQUESTS_TOTAL, "backend" => kind, "outcome" => outcome)
                .increment(1);
            match result {
                Ok(generation) => {
                    return Ok(TurnOutcome {
                        backend: b.name.clone(),
                        generation,
                        ctx,
                        failures,
                    })
                }
                Err(e) => {
                    tracing::warn!(backend = %b.name, kind = b.backend.kind(), error = %e, "LLM backend failed");
                    failures.push((b.name.clone(), e));
                }
            }
        }
        Err(TurnFailure { failures })
    }
}
