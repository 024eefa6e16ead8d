//! The agent definition as operators write it (YAML or JSON), field for field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::compile::{ValidationError, ValidationErrors};
use crate::egress::EgressPolicy;

/// What secret values look like in API responses. Sending it back in a PUT keeps the
/// stored secret.
pub const REDACTED: &str = "********";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDefinition {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default)]
    pub identity: String,
    #[serde(default)]
    pub speech_style: String,
    #[serde(default)]
    pub task: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting: Option<String>,
    /// Sent to the customer when every LLM backend failed.
    #[serde(default = "default_error_message")]
    pub error_message: String,
    pub workflow: Vec<StateDef>,
    #[serde(default)]
    pub conversation_results: Vec<FieldDef>,
    #[serde(default)]
    pub knowledge: KnowledgeDef,
    #[serde(default)]
    pub session: SessionDef,
    /// LLM backends; empty means one `builtin` backend.
    #[serde(default)]
    pub llm: Vec<BackendDef>,
}

fn default_error_message() -> String {
    "Sorry, I can't answer right now. Please try again in a moment.".into()
}

/// One workflow state, written as the seed documents write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateDef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_name: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub init_state: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub available_tools: ToolsDef,
    #[serde(default)]
    pub transitions: Vec<TransitionDef>,
}

/// `available_tools` either grouped under an agent-kind key (as in the seed's example) or
/// as a plain list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolsDef {
    Plain(Vec<String>),
    Grouped(BTreeMap<String, Vec<String>>),
}

impl Default for ToolsDef {
    fn default() -> Self {
        ToolsDef::Plain(Vec::new())
    }
}

/// A transition: a target state name, or a target with keywords the builtin backend
/// follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TransitionDef {
    Target(String),
    Rule {
        to: String,
        #[serde(default)]
        when_keywords: Vec<String>,
    },
}

impl TransitionDef {
    pub fn target(&self) -> &str {
        match self {
            TransitionDef::Target(t) => t,
            TransitionDef::Rule { to, .. } => to,
        }
    }

    pub fn keywords(&self) -> &[String] {
        match self {
            TransitionDef::Target(_) => &[],
            TransitionDef::Rule { when_keywords, .. } => when_keywords,
        }
    }
}

/// A conversation result field (the seed's FormInfoField).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    pub field_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_title: Option<String>,
    #[serde(default)]
    pub field_description: String,
    /// Defaults to `str`, as the seed's examples omit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeDef {
    #[serde(default)]
    pub faq: Vec<FaqEntry>,
    #[serde(default)]
    pub texts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaqEntry {
    pub question: String,
    pub answer: String,
}

/// Session limits, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionDef {
    /// Close with `user_timeout` after this long without a customer message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_timeout: Option<u64>,
    /// Close with `timeout` this long after the start.
    #[serde(default = "default_max_duration", alias = "timeout")]
    pub max_duration: u64,
    /// Sessions the agent starts per day (in the tenant's time zone); past it a start is
    /// recorded as `daily_limit_exceeded` and never activated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_limit: Option<u64>,
}

fn default_max_duration() -> u64 {
    259_200
}

impl Default for SessionDef {
    fn default() -> Self {
        SessionDef {
            user_timeout: None,
            max_duration: default_max_duration(),
            daily_limit: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Builtin,
    Webhook,
    Openai,
}

/// One LLM backend of an agent. Fields apply to the kinds named beside them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendDef {
    /// Unique within the agent; defaults to `{kind}-{index}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub kind: BackendKind,
    /// Share of new sessions (A/B tests); the choice is sticky per session.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Used only when the session's backend fails or times out.
    #[serde(default)]
    pub fallback: bool,
    /// builtin: the reply when nothing in the knowledge matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reply: Option<String>,
    /// webhook: the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// webhook, openai: extra request headers (values are secrets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// webhook, openai: request timeout (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
    /// webhook, openai: how many recent messages are sent (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<usize>,
    /// openai: base URL up to and including `/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// openai: model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// openai: API key (a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// openai: name of an environment variable holding the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// openai: tool-call rounds allowed per turn (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tool_rounds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
}

fn default_weight() -> u32 {
    1
}

impl BackendDef {
    pub fn new(kind: BackendKind) -> Self {
        BackendDef {
            name: None,
            kind,
            weight: 1,
            fallback: false,
            fallback_reply: None,
            url: None,
            headers: BTreeMap::new(),
            timeout_secs: None,
            context_window: None,
            base_url: None,
            model: None,
            api_key: None,
            api_key_env: None,
            max_tool_rounds: None,
            temperature: None,
        }
    }
}

impl AgentDefinition {
    /// A copy safe to show: header values and API keys replaced by [`REDACTED`].
    pub fn redacted(&self) -> AgentDefinition {
        let mut d = self.clone();
        for b in &mut d.llm {
            for v in b.headers.values_mut() {
                *v = REDACTED.into();
            }
            if b.api_key.is_some() {
                b.api_key = Some(REDACTED.into());
            }
        }
        d
    }

    /// Applies `f` to every secret value (API keys, header values), stopping at the first
    /// error.
    pub fn try_map_secrets<E>(
        &mut self,
        mut f: impl FnMut(&str) -> Result<String, E>,
    ) -> Result<(), E> {
        for b in &mut self.llm {
            for v in b.headers.values_mut() {
                *v = f(v)?;
            }
            if let Some(k) = &b.api_key {
                b.api_key = Some(f(k)?);
            }
        }
        Ok(())
    }

    /// Checks the URLs the backends call against the egress policy.
    pub fn check_egress(&self, policy: &EgressPolicy) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        for (i, b) in self.llm.iter().enumerate() {
            for (field, url) in [("url", &b.url), ("base_url", &b.base_url)] {
                if let Some(e) = url.as_deref().and_then(|u| policy.check_url(u).err()) {
                    errors.push(ValidationError {
                        path: format!("llm[{i}].{field}"),
                        message: e.to_string(),
                    });
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }

    /// Where an update sends [`REDACTED`] back, keeps the secret of the same backend (by
    /// name, else position) in `previous` — unless the backend now calls another host:
    /// then each secret sent back redacted must be entered again (the errors name them).
    pub fn restore_secrets(&mut self, previous: &AgentDefinition) -> Result<(), ValidationErrors> {
        let host = |b: &BackendDef| {
            b.url.as_deref().or(b.base_url.as_deref()).map(|u| {
                reqwest::Url::parse(u)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
                    .unwrap_or_else(|| u.to_string())
            })
        };
        let mut errors = Vec::new();
        for (i, b) in self.llm.iter_mut().enumerate() {
            let prev = previous
                .llm
                .iter()
                .find(|p| p.name.is_some() && p.name == b.name)
                .or_else(|| previous.llm.get(i).filter(|p| p.name == b.name));
            let Some(prev) = prev else { continue };
            if host(b) != host(prev) {
                let again = "must be entered again: the backend now calls another host";
                for (k, v) in &b.headers {
                    if v == REDACTED {
                        errors.push(ValidationError {
                            path: format!("llm[{i}].headers.{k}"),
                            message: again.into(),
                        });
                    }
                }
                if b.api_key.as_deref() == Some(REDACTED) {
                    errors.push(ValidationError {
                        path: format!("llm[{i}].api_key"),
                        message: again.into(),
                    });
                }
                continue;
            }
            for (k, v) in b.headers.iter_mut() {
                if v == REDACTED {
                    if let Some(old) = prev.headers.get(k) {
                        *v = old.clone();
                    }
                }
            }
            if b.api_key.as_deref() == Some(REDACTED) {
                b.api_key = prev.api_key.clone();
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::agent::{parse_definition, Format};

    const AGENT: &str = r#"{"name": "A", "workflow": [{"name": "Main", "init_state": true}],
        "llm": [{"name": "gpt", "kind": "openai", "base_url": "https://llm.example/v1",
                 "model": "m", "api_key": "sk-1", "headers": {"X-Org": "org-1"}}]}"#;

    #[test]
    fn redacted_secrets_come_back_only_for_the_same_host() {
        let stored = parse_definition(AGENT, Format::Json).unwrap();
        let mut same = stored.redacted();
        same.llm[0].base_url = Some("https://llm.example/v2".into());
        same.restore_secrets(&stored).unwrap();
        assert_eq!(same.llm[0].api_key.as_deref(), Some("sk-1"));
        assert_eq!(same.llm[0].headers["X-Org"], "org-1");

        let mut moved = stored.redacted();
        moved.llm[0].base_url = Some("https://elsewhere.example/v1".into());
        let e = moved.restore_secrets(&stored).unwrap_err();
        let paths: Vec<&str> = e.0.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(paths, ["llm[0].headers.X-Org", "llm[0].api_key"]);

        let mut reentered = stored.redacted();
        reentered.llm[0].base_url = Some("https://elsewhere.example/v1".into());
        reentered.llm[0].api_key = Some("sk-2".into());
        reentered.llm[0]
            .headers
            .insert("X-Org".into(), "org-2".into());
        reentered.restore_secrets(&stored).unwrap();
        assert_eq!(reentered.llm[0].api_key.as_deref(), Some("sk-2"));
    }
}
