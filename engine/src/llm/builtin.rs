//! The offline, deterministic backend: answers from the agent's knowledge, follows
//! keyword transitions and picks out e-mail, phone and Literal results.

use async_trait::async_trait;
use serde_json::json;

use super::{DeltaSink, Generation, LlmBackend, LlmError, TurnInput};
use crate::agent::BackendDef;
use crate::results::{find_email, find_phone, FieldType};
use crate::workflow::{Action, Tool, TurnContext};

const DEFAULT_FALLBACK: &str =
    "I'm sorry, I don't have information about that. Could you rephrase your question?";

pub struct BuiltinBackend {
    fallback_reply: String,
}

impl BuiltinBackend {
    pub fn new(def: &BackendDef) -> Self {
        BuiltinBackend {
            fallback_reply: def
                .fallback_reply
                .clone()
                .unwrap_or_else(|| DEFAULT_FALLBACK.to_string()),
        }
    }
}

/// Whether `keyword` occurs in the message: phrases by substring, words by token.
fn mentions(lower: &str, tokens: &[String], keyword: &str) -> bool {
    if keyword.contains(char::is_whitespace) {
        lower.contains(keyword)
    } else {
        tokens.iter().any(|t| t == keyword)
    }
}

/// What customers write when they want a person rather than the bot.
const HUMAN_REQUESTS: [&str; 8] = [
    "human",
    "operator",
    "real person",
    "live agent",
    "talk to someone",
    "speak to someone",
    "a person",
    "representative",
];

#[async_trait]
impl LlmBackend for BuiltinBackend {
    fn kind(&self) -> &'static str {
        "builtin"
    }

    async fn generate(
        &self,
        input: &TurnInput<'_>,
        ctx: &mut TurnContext<'_>,
        deltas: DeltaSink<'_>,
    ) -> Result<Generation, LlmError> {
        let text = input.last_human_text();
        let lower = text.to_lowercase();
        let tokens: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let agent = ctx.agent();

        // Results first, so a state change below does not hide SetResult of this state.
        if ctx.state().tools.contains(&Tool::SetResult) {
            for f in &agent.fields {
                if ctx.results().contains_key(&f.name) {
                    continue;
                }
                let found = match &f.field_type {
                    FieldType::Email => find_email(text),
                    FieldType::Phone => find_phone(text),
                    FieldType::Literal(values) => values
                        .iter()
                        .find(|v| mentions(&lower, &tokens, &v.to_lowercase()))
                        .cloned(),
                    _ => None,
                };
                if let Some(v) = found {
                    let _ = ctx.apply(Action::SetResult {
                        field: f.name.clone(),
                        value: json!(v),
                    });
                }
            }
        }

        // A customer asking for a person is handed over, where the state allows it.
        if ctx.state().tools.contains(&Tool::TransferToOperator)
            && HUMAN_REQUESTS.iter().any(|p| mentions(&lower, &tokens, p))
        {
            let _ = ctx.apply(Action::TransferToOperator);
        }

        if ctx.state().tools.contains(&Tool::ChangeState) {
            let target = ctx
                .state()
                .transitions
                .iter()
                .find(|t| t.keywords.iter().any(|k| mentions(&lower, &tokens, k)))
                .map(|t| agent.states[t.target].name.clone());
            if let Some(target) = target {
                let _ = ctx.apply(Action::ChangeState(target));
            }
        }

        let hit = agent.knowledge.search(text, 1).into_iter().next();
        let (content, source, score) = match hit {
            Some(h) => (
                h.passage.answer.clone(),
                match h.passage.kind {
                    crate::knowledge::PassageKind::Faq => "faq",
                    crate::knowledge::PassageKind::Text => "text",
                },
                h.score,
            ),
            None => (self.fallback_reply.clone(), "fallback", 0.0),
        };
        for piece in content.split_inclusive(' ') {
            deltas(piece);
        }
        Ok(Generation {
            metadata: json!({
                "source": source,
                "score": (score * 1000.0).round() / 1000.0,
            }),
            content,
        })
    }
}
