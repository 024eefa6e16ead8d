//! Validation of a definition into the compiled form, with path-addressed errors.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::OnceLock;

use regex::Regex;
use serde::Serialize;

use super::definition::{AgentDefinition, BackendKind, ToolsDef};
use super::limits;
use crate::document;
use crate::knowledge::KnowledgeIndex;
use crate::results::FieldType;
use crate::workflow::Tool;

/// One problem in a definition, addressed by its path (`workflow[2].transitions[0]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// YAML unless the file name or content type says JSON.
    pub fn guess(name_or_content_type: &str) -> Format {
        if name_or_content_type.to_ascii_lowercase().contains("json") {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

#[derive(Debug, Clone)]
pub struct CompiledTransition {
    pub target: usize,
    /// Lower-cased keywords that make the builtin backend take this transition.
    pub keywords: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct CompiledState {
    pub name: String,
    pub process_name: Option<String>,
    pub description: String,
    pub tools: Vec<Tool>,
    pub transitions: Vec<CompiledTransition>,
}

#[derive(Debug, Clone)]
pub struct CompiledField {
    pub name: String,
    pub title: String,
    pub description: String,
    pub field_type: FieldType,
}

/// A validated agent, ready for sessions: shared by all sessions of one agent version.
#[derive(Debug)]
pub struct CompiledAgent {
    pub definition: AgentDefinition,
    pub states: Vec<CompiledState>,
    pub init_state: usize,
    pub fields: Vec<CompiledField>,
    pub knowledge: KnowledgeIndex,
    state_by_name: HashMap<String, usize>,
}

impl CompiledAgent {
    pub fn state_index(&self, name: &str) -> Option<usize> {
        self.state_by_name.get(name).copied()
    }

    pub fn init_state_name(&self) -> &str {
        &self.states[self.init_state].name
    }
}

fn identifier_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").unwrap())
}

/// Parses a definition; syntax and type errors come back path-addressed too.
pub fn parse_definition(text: &str, format: Format) -> Result<AgentDefinition, ValidationErrors> {
    let one =
        |path: String, message: String| ValidationErrors(vec![ValidationError { path, message }]);
    match format {
        Format::Json => document::check_json(text),
        Format::Yaml => document::check_yaml(text),
    }
    .map_err(|m| one(String::new(), m))?;
    match format {
        Format::Json => {
            let de = &mut serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = clean_path(&e.path().to_string());
                one(path, e.into_inner().to_string())
            })
        }
        Format::Yaml => {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = clean_path(&e.path().to_string());
                one(path, e.into_inner().to_string())
            })
        }
    }
}

fn clean_path(p: &str) -> String {
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

/// Parses and validates in one go (what `parley agent validate` and the admin API use).
pub fn parse_and_compile(text: &str, format: Format) -> Result<CompiledAgent, ValidationErrors> {
    compile(parse_definition(text, format)?)
}

/// Validates a definition and builds its compiled form; reports every problem found.
pub fn compile(def: AgentDefinition) -> Result<CompiledAgent, ValidationErrors> {
    let mut errs: Vec<ValidationError> = Vec::new();
    let mut err = |path: String, message: String| errs.push(ValidationError { path, message });

    if def.name.trim().is_empty() {
        err("name".into(), "must not be empty".into());
    }

    // States: unique names, exactly one initial state, known tools, known targets.
    let mut state_by_name: HashMap<String, usize> = HashMap::new();
    if def.workflow.is_empty() {
        err("workflow".into(), "needs at least one state".into());
    }
    for (i, s) in def.workflow.iter().enumerate() {
        if s.name.trim().is_empty() {
            err(format!("workflow[{i}].name"), "must not be empty".into());
        } else if let Some(first) = state_by_name.get(&s.name) {
            err(
                format!("workflow[{i}].name"),
                format!(
                    "duplicate state name {:?} (first at workflow[{first}])",
                    s.name
                ),
            );
        } else {
            state_by_name.insert(s.name.clone(), i);
        }
        if let Some(kind) = &s.kind {
            if kind != "StateConfig" {
                err(
                    format!("workflow[{i}].kind"),
                    format!("must be \"StateConfig\", not {kind:?}"),
                );
            }
        }
    }
    let inits: Vec<usize> = def
        .workflow
        .iter()
        .enumerate()
        .filter(|(_, s)| s.init_state)
        .map(|(i, _)| i)
        .collect();
    match inits.as_slice() {
        [] if !def.workflow.is_empty() => err(
            "workflow".into(),
            "no state has init_state: true (exactly one must)".into(),
        ),
        [_] | [] => {}
        [first, rest @ ..] => {
            for i in rest {
                err(
                    format!("workflow[{i}].init_state"),
                    format!("a second initial state (workflow[{first}] is already initial)"),
                );
            }
        }
    }

    let mut states = Vec::with_capacity(def.workflow.len());
    for (i, s) in def.workflow.iter().enumerate() {
        let mut tools = Vec::new();
        let mut check_tool =
            |path: String, name: &str, tools: &mut Vec<Tool>| match Tool::parse(name) {
                Some(t) if tools.contains(&t) => {
                    err(path, format!("tool {name:?} listed twice"));
                }
                Some(t) => tools.push(t),
                None => err(
                    path,
                    format!(
                        "unknown tool {name:?} (known: {})",
                        Tool::ALL.map(|t| t.name()).join(", ")
                    ),
                ),
            };
        match &s.available_tools {
            ToolsDef::Plain(list) => {
                for (j, t) in list.iter().enumerate() {
                    check_tool(format!("workflow[{i}].available_tools[{j}]"), t, &mut tools);
                }
            }
            ToolsDef::Grouped(groups) => {
                for (kind, list) in groups {
                    if !identifier_re().is_match(kind) {
                        check_tool(
                            format!("workflow[{i}].available_tools"),
                            kind,
                            &mut Vec::new(),
                        );
                    }
                    for (j, t) in list.iter().enumerate() {
                        check_tool(
                            format!("workflow[{i}].available_tools.{kind}[{j}]"),
                            t,
                            &mut tools,
                        );
                    }
                }
            }
        }
        let mut transitions = Vec::new();
        let mut seen = HashSet::new();
        for (j, t) in s.transitions.iter().enumerate() {
            let path = format!("workflow[{i}].transitions[{j}]");
            match state_by_name.get(t.target()) {
                None => err(path, format!("unknown state {:?}", t.target())),
                Some(&target) if !seen.insert(target) => {
                    err(path, format!("transition to {:?} listed twice", t.target()))
                }
                Some(&target) => {
                    let mut keywords = Vec::new();
                    for (k, kw) in t.keywords().iter().enumerate() {
                        let kw = kw.trim().to_lowercase();
                        if kw.is_empty() {
                            err(
                                format!("{path}.when_keywords[{k}]"),
                                "must not be empty".into(),
                            );
                        } else {
                            keywords.push(kw);
                        }
                    }
                    transitions.push(CompiledTransition { target, keywords });
                }
            }
        }
        states.push(CompiledState {
            name: s.name.clone(),
            process_name: s.process_name.clone(),
            description: s.description.clone(),
            tools,
            transitions,
        });
    }

    // Result fields.
    let mut fields = Vec::new();
    let mut field_names = HashMap::new();
    for (i, f) in def.conversation_results.iter().enumerate() {
        let path = format!("conversation_results[{i}]");
        if !identifier_re().is_match(&f.field_name) {
            err(
                format!("{path}.field_name"),
                format!(
                    "{:?} is not a valid name (letters, digits, _; not starting with a digit)",
                    f.field_name
                ),
            );
        } else if let Some(first) = field_names.insert(f.field_name.clone(), i) {
            err(
                format!("{path}.field_name"),
                format!(
                    "duplicate field {:?} (first at conversation_results[{first}])",
                    f.field_name
                ),
            );
        }
        if let Some(kind) = &f.kind {
            if kind != "FormInfoField" {
                err(
                    format!("{path}.kind"),
                    format!("must be \"FormInfoField\", not {kind:?}"),
                );
            }
        }
        match FieldType::parse(f.field_type.as_deref().unwrap_or("str")) {
            Ok(field_type) => fields.push(CompiledField {
                name: f.field_name.clone(),
                title: f
                    .field_title
                    .clone()
                    .unwrap_or_else(|| f.field_name.clone()),
                description: f.field_description.clone(),
                field_type,
            }),
            Err(e) => err(format!("{path}.field_type"), e),
        }
    }

    for (i, q) in def.knowledge.faq.iter().enumerate() {
        if q.question.trim().is_empty() {
            err(
                format!("knowledge.faq[{i}].question"),
                "must not be empty".into(),
            );
        }
        if q.answer.trim().is_empty() {
            err(
                format!("knowledge.faq[{i}].answer"),
                "must not be empty".into(),
            );
        }
    }

    let mut in_range = |path: &str, v: Option<u64>, max: u64, unit: &str| match v {
        Some(0) => err(path.into(), "must be greater than 0".into()),
        Some(v) if v > max => err(path.into(), format!("must be at most {max}{unit}")),
        _ => {}
    };
    in_range(
        "session.max_duration",
        Some(def.session.max_duration),
        limits::MAX_DURATION_SECS,
        " seconds (a year)",
    );
    in_range(
        "session.user_timeout",
        def.session.user_timeout,
        limits::MAX_DURATION_SECS,
        " seconds (a year)",
    );
    in_range(
        "session.daily_limit",
        def.session.daily_limit,
        limits::MAX_DAILY_SESSIONS,
        "",
    );

    // LLM backends.
    let mut backend_names = HashMap::new();
    for (i, b) in def.llm.iter().enumerate() {
        let path = format!("llm[{i}]");
        let name = b
            .name
            .clone()
            .unwrap_or_else(|| format!("{:?}-{i}", b.kind).to_lowercase());
        if let Some(first) = backend_names.insert(name.clone(), i) {
            err(
                format!("{path}.name"),
                format!("duplicate backend name {name:?} (first at llm[{first}])"),
            );
        }
        if !b.fallback && b.weight == 0 {
            err(
                format!("{path}.weight"),
                "must be at least 1 (or mark the backend fallback)".into(),
            );
        }
        if b.weight > limits::MAX_WEIGHT {
            err(
                format!("{path}.weight"),
                format!("must be at most {}", limits::MAX_WEIGHT),
            );
        }
        if let Some(t) = b.timeout_secs {
            if !(t > 0.0 && t <= limits::MAX_BACKEND_TIMEOUT_SECS) {
                err(
                    format!("{path}.timeout_secs"),
                    format!(
                        "must be a positive number of seconds, at most {}",
                        limits::MAX_BACKEND_TIMEOUT_SECS
                    ),
                );
            }
        }
        match b.context_window {
            Some(0) => err(
                format!("{path}.context_window"),
                "must be at least 1".into(),
            ),
            Some(n) if n > limits::MAX_CONTEXT_WINDOW => err(
                format!("{path}.context_window"),
                format!("must be at most {}", limits::MAX_CONTEXT_WINDOW),
            ),
            _ => {}
        }
        if let Some(t) = b.temperature {
            if !(0.0..=limits::MAX_TEMPERATURE).contains(&t) {
                err(
                    format!("{path}.temperature"),
                    format!("must be between 0 and {}", limits::MAX_TEMPERATURE),
                );
            }
        }
        let check_url =
            |field: &str, v: &Option<String>, errs: &mut dyn FnMut(String, String)| match v {
                None => errs(
                    format!("{path}.{field}"),
                    format!("is required for kind {:?}", b.kind).to_lowercase(),
                ),
                Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => errs(
                    format!("{path}.{field}"),
                    format!("{u:?} is not an http(s) URL"),
                ),
                Some(_) => {}
            };
        match b.kind {
            BackendKind::Builtin => {}
            BackendKind::Webhook => check_url("url", &b.url, &mut err),
            BackendKind::Openai => {
                check_url("base_url", &b.base_url, &mut err);
                if b.model.as_deref().is_none_or(|m| m.trim().is_empty()) {
                    err(
                        format!("{path}.model"),
                        "is required for kind openai".into(),
                    );
                }
                match b.max_tool_rounds {
                    Some(0) => err(
                        format!("{path}.max_tool_rounds"),
                        "must be at least 1".into(),
                    ),
                    Some(n) if n > limits::MAX_TOOL_ROUNDS => err(
                        format!("{path}.max_tool_rounds"),
                        format!("must be at most {}", limits::MAX_TOOL_ROUNDS),
                    ),
                    _ => {}
                }
            }
        }
    }
    if !def.llm.is_empty() && def.llm.iter().all(|b| b.fallback) {
        err(
            "llm".into(),
            "needs at least one backend that is not a fallback".into(),
        );
    }

    if !errs.is_empty() {
        return Err(ValidationErrors(errs));
    }
    let knowledge = KnowledgeIndex::build(&def.knowledge);
    Ok(CompiledAgent {
        init_state: inits[0],
        states,
        fields,
        knowledge,
        state_by_name,
        definition: def,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_STYLE: &str = r#"
name: Sales
identity: You are Alex.
workflow:
  - process_name: SalesProcess
    name: SalesSupport
    kind: StateConfig
    init_state: true
    description: |
      - Answer questions about products
    available_tools:
      SingleStatefulOutboundAgent:
        - SendChatMessage
        - FinishSession
        - ChangeState
    transitions:
      - to: Closing
        when_keywords: [buy]
  - name: Closing
    available_tools: [SendChatMessage, SetResult]
    transitions: [SalesSupport]
conversation_results:
  - field_name: Budget
    field_type: Literal['500', '1000', '2000']
    kind: FormInfoField
  - field_name: HumanEmail
    field_type: email
"#;

    fn messages(text: &str) -> Vec<String> {
        match parse_and_compile(text, Format::Yaml) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn compiles_the_seed_style_definition() {
        let a = parse_and_compile(SEED_STYLE, Format::Yaml).expect("valid");
        assert_eq!(a.init_state_name(), "SalesSupport");
        assert_eq!(
            a.states[0].tools,
            vec![
                Tool::SendChatMessage,
                Tool::FinishSession,
                Tool::ChangeState
            ]
        );
        assert_eq!(a.states[0].transitions[0].target, 1);
        assert_eq!(a.states[0].transitions[0].keywords, vec!["buy"]);
        assert_eq!(a.fields.len(), 2);
        assert_eq!(a.definition.session.max_duration, 259_200);
    }

    #[test]
    fn unknown_transition_target_is_path_addressed() {
        let bad = SEED_STYLE.replace(
            "transitions: [SalesSupport]",
            "transitions: [SalesSupport, Sales]",
        );
        assert_eq!(
            messages(&bad),
            vec!["workflow[1].transitions[1]: unknown state \"Sales\""]
        );
    }

    #[test]
    fn reports_every_problem() {
        let bad = SEED_STYLE
            .replace(
                "- name: Closing",
                "- name: SalesSupport\n    init_state: true",
            )
            .replace("- FinishSession", "- Finish")
            .replace("field_type: email", "field_type: mail")
            .replace("field_name: Budget", "field_name: 9Budget");
        let m = messages(&bad);
        assert!(
            m.contains(
                &"workflow[1].name: duplicate state name \"SalesSupport\" (first at workflow[0])"
                    .to_string()
            ),
            "{m:?}"
        );
        assert!(
            m.contains(
                &"workflow[1].init_state: a second initial state (workflow[0] is already initial)"
                    .to_string()
            ),
            "{m:?}"
        );
        assert!(m.iter().any(|e| e.starts_with("workflow[0].available_tools.SingleStatefulOutboundAgent[1]: unknown tool \"Finish\"")), "{m:?}");
        assert!(
            m.iter().any(|e| e
                .starts_with("conversation_results[1].field_type: unknown field type \"mail\"")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|e| e.starts_with("conversation_results[0].field_name:")),
            "{m:?}"
        );
    }

    #[test]
    fn missing_initial_state_and_syntax_errors() {
        let m = messages("name: x\nworkflow:\n  - name: A\n");
        assert_eq!(
            m,
            vec!["workflow: no state has init_state: true (exactly one must)"]
        );
        let m = messages("name: x\nworkflow:\n  - name: A\n    init_state: maybe\n");
        assert!(m[0].starts_with("workflow[0].init_state: "), "{m:?}");
        let m = messages("name: x\nworkflow: []\nbogus: 1\n");
        assert!(m[0].contains("unknown field `bogus`"), "{m:?}");
    }

    #[test]
    fn backend_rules() {
        let base = "name: x\nworkflow:\n  - name: A\n    init_state: true\nllm:\n";
        let m = messages(&format!(
            "{base}  - kind: webhook\n  - kind: openai\n    base_url: ftp://x\n"
        ));
        assert_eq!(
            m,
            vec![
                "llm[0].url: is required for kind webhook",
                "llm[1].base_url: \"ftp://x\" is not an http(s) URL",
                "llm[1].model: is required for kind openai",
            ]
        );
        let m = messages(&format!("{base}  - kind: builtin\n    fallback: true\n"));
        assert_eq!(
            m,
            vec!["llm: needs at least one backend that is not a fallback"]
        );
    }

    #[test]
    fn json_definitions_parse_too() {
        let json = r#"{"name":"j","workflow":[{"name":"A","init_state":true,"available_tools":["SendChatMessage"]}]}"#;
        assert!(parse_and_compile(json, Format::Json).is_ok());
        let err = parse_and_compile(
            r#"{"name":"j","workflow":[{"init_state":true}]}"#,
            Format::Json,
        )
        .unwrap_err();
        assert!(
            err.0[0].to_string().contains("missing field `name`"),
            "{err}"
        );
    }
}
