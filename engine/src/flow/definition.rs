//! A campaign flow as operators write it (YAML or JSON), field for field.
//!
//! Every node is one flat object: `id`, `type` and the fields of that type. The fields are
//! all optional here so that a missing or misplaced one comes back from validation as a
//! path-addressed error (`nodes[3].operator: is required for field_check`) instead of an
//! opaque parse failure; [`super::validate`] turns a definition into the typed
//! [`super::CompiledFlow`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::agent::{Format, ValidationError, ValidationErrors};
use crate::document;

/// A flow: a graph of nodes, started by its trigger nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowDefinition {
    pub nodes: Vec<NodeDef>,
}

/// One node. Fields apply to the node types named beside them; validation rejects a field
/// set on a type that does not use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDef {
    /// Unique within the flow; edges name nodes by it.
    pub id: String,
    #[serde(rename = "type")]
    pub node_type: NodeType,
    /// Every type but field_check: the node that follows. Absent: the flow ends here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,

    /// field_check: `customer.<name>`, `participant.<name>` or `result.<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// field_check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<Operator>,
    /// field_check: the operand; an array for `in`, absent for `is_set` / `is_not_set`.
    /// `"today"` is the date of the check (shifted by `days`), except on a string property.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub value: Option<Value>,
    /// field_check: days added to `"today"` (negative for the past).
    /// start_communication: days added to the base `date`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<i64>,
    /// field_check: where the flow goes when the condition holds. Absent: it ends.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub on_match: Option<String>,
    /// field_check: where the flow goes when it does not. Absent: it ends.
    #[serde(default, rename = "else", skip_serializing_if = "Option::is_none")]
    pub on_else: Option<String>,

    /// start_communication: the communication's name, UPPER_SNAKE, unique in the flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// start_communication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// start_communication: the agent (a UUID) that conducts the conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// start_communication: the connection (a UUID) it goes out on; every channel but chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    /// start_communication: the base date, `"today"` (the default) or a date or datetime
    /// property; `days` and `minutes` are added to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// start_communication: minutes added to the base date (negative for earlier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minutes: Option<i64>,
    /// start_communication: "HH:MM", start of the daily window in the scheduling timezone.
    /// Set together with `to`; both absent means any time of day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// start_communication: "HH:MM", end of the daily window (exclusive). Before `from`
    /// means a window across midnight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// start_communication: "HH:MM" (hours may exceed 23); a communication not started this
    /// long after its planned start is canceled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// start_communication: the opening message, with `{{ attribute }}` placeholders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_phrase: Option<String>,
    /// start_communication: customer and participant properties passed to the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<String>>,
    /// start_communication: the WhatsApp message template (required for whatsapp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateDef>,

    /// update_field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignments: Option<Vec<AssignmentDef>>,

    /// to_another_flow: the name of the flow (in the same campaign) to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,

    /// http_action: the http(s) URL that is POSTed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// http_action: sent along with the participant's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Map<String, Value>>,
    /// http_action: response values written to properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<Vec<WriteDef>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeType {
    ParticipantCreated,
    ParticipantUpdated,
    CommunicationEnded,
    CommunicationUpdated,
    IncomingSession,
    FromAnotherFlow,
    FieldCheck,
    StartCommunication,
    CancelCommunications,
    UpdateField,
    ToAnotherFlow,
    HttpAction,
}

/// The campaign events that start a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerType {
    ParticipantCreated,
    ParticipantUpdated,
    CommunicationEnded,
    CommunicationUpdated,
    IncomingSession,
    FromAnotherFlow,
}

impl TriggerType {
    pub const ALL: [TriggerType; 6] = [
        TriggerType::ParticipantCreated,
        TriggerType::ParticipantUpdated,
        TriggerType::CommunicationEnded,
        TriggerType::CommunicationUpdated,
        TriggerType::IncomingSession,
        TriggerType::FromAnotherFlow,
    ];

    pub fn as_str(self) -> &'static str {
        NodeType::from(self).as_str()
    }
}

impl From<TriggerType> for NodeType {
    fn from(t: TriggerType) -> NodeType {
        match t {
            TriggerType::ParticipantCreated => NodeType::ParticipantCreated,
            TriggerType::ParticipantUpdated => NodeType::ParticipantUpdated,
            TriggerType::CommunicationEnded => NodeType::CommunicationEnded,
            TriggerType::CommunicationUpdated => NodeType::CommunicationUpdated,
            TriggerType::IncomingSession => NodeType::IncomingSession,
            TriggerType::FromAnotherFlow => NodeType::FromAnotherFlow,
        }
    }
}

impl NodeType {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::ParticipantCreated => "participant_created",
            NodeType::ParticipantUpdated => "participant_updated",
            NodeType::CommunicationEnded => "communication_ended",
            NodeType::CommunicationUpdated => "communication_updated",
            NodeType::IncomingSession => "incoming_session",
            NodeType::FromAnotherFlow => "from_another_flow",
            NodeType::FieldCheck => "field_check",
            NodeType::StartCommunication => "start_communication",
            NodeType::CancelCommunications => "cancel_communications",
            NodeType::UpdateField => "update_field",
            NodeType::ToAnotherFlow => "to_another_flow",
            NodeType::HttpAction => "http_action",
        }
    }

    /// The trigger this node type is, if it is one.
    pub fn trigger(self) -> Option<TriggerType> {
        TriggerType::ALL
            .into_iter()
            .find(|t| NodeType::from(*t) == self)
    }

    /// The optional fields a node of this type may set (besides `id` and `type`).
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            NodeType::FieldCheck => &["property", "operator", "value", "days", "match", "else"],
            NodeType::StartCommunication => &[
                "next",
                "name",
                "channel",
                "agent_id",
                "connection_id",
                "date",
                "days",
                "minutes",
                "from",
                "to",
                "duration",
                "start_phrase",
                "context",
                "template",
            ],
            NodeType::UpdateField => &["next", "assignments"],
            NodeType::ToAnotherFlow => &["next", "flow"],
            NodeType::HttpAction => &["next", "url", "params", "writes"],
            NodeType::ParticipantCreated
            | NodeType::ParticipantUpdated
            | NodeType::CommunicationEnded
            | NodeType::CommunicationUpdated
            | NodeType::IncomingSession
            | NodeType::FromAnotherFlow
            | NodeType::CancelCommunications => &["next"],
        }
    }
}

impl NodeDef {
    /// The names of the optional fields this node sets, in declaration order.
    pub fn present_fields(&self) -> Vec<&'static str> {
        [
            ("next", self.next.is_some()),
            ("property", self.property.is_some()),
            ("operator", self.operator.is_some()),
            ("value", self.value.is_some()),
            ("days", self.days.is_some()),
            ("match", self.on_match.is_some()),
            ("else", self.on_else.is_some()),
            ("name", self.name.is_some()),
            ("channel", self.channel.is_some()),
            ("agent_id", self.agent_id.is_some()),
            ("connection_id", self.connection_id.is_some()),
            ("date", self.date.is_some()),
            ("minutes", self.minutes.is_some()),
            ("from", self.from.is_some()),
            ("to", self.to.is_some()),
            ("duration", self.duration.is_some()),
            ("start_phrase", self.start_phrase.is_some()),
            ("context", self.context.is_some()),
            ("template", self.template.is_some()),
            ("assignments", self.assignments.is_some()),
            ("flow", self.flow.is_some()),
            ("url", self.url.is_some()),
            ("params", self.params.is_some()),
            ("writes", self.writes.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    /// The outgoing edges as (port, target id): `next`, or `match` and `else`.
    pub fn edges(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("next", &self.next),
            ("match", &self.on_match),
            ("else", &self.on_else),
        ]
        .into_iter()
        .filter_map(|(port, target)| target.as_deref().map(|t| (port, t)))
    }

    /// A node of `node_type` with no optional field set (for building flows in code).
    pub fn new(id: impl Into<String>, node_type: NodeType) -> NodeDef {
        NodeDef {
            id: id.into(),
            node_type,
            next: None,
            property: None,
            operator: None,
            value: None,
            days: None,
            on_match: None,
            on_else: None,
            name: None,
            channel: None,
            agent_id: None,
            connection_id: None,
            date: None,
            minutes: None,
            from: None,
            to: None,
            duration: None,
            start_phrase: None,
            context: None,
            template: None,
            assignments: None,
            flow: None,
            url: None,
            params: None,
            writes: None,
        }
    }
}

/// field_check operators. Which apply depends on the property's kind (see
/// [`super::ValueKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Contains,
    In,
    IsSet,
    IsNotSet,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Eq => "eq",
            Operator::Ne => "ne",
            Operator::Gt => "gt",
            Operator::Ge => "ge",
            Operator::Lt => "lt",
            Operator::Le => "le",
            Operator::Contains => "contains",
            Operator::In => "in",
            Operator::IsSet => "is_set",
            Operator::IsNotSet => "is_not_set",
        }
    }

    /// gt, ge, lt, le.
    pub fn is_ordering(self) -> bool {
        matches!(
            self,
            Operator::Gt | Operator::Ge | Operator::Lt | Operator::Le
        )
    }

    /// is_set, is_not_set: the operators without a value.
    pub fn is_presence(self) -> bool {
        matches!(self, Operator::IsSet | Operator::IsNotSet)
    }
}

/// The channel a communication goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Telegram,
    Whatsapp,
    Webhook,
    /// parley's own web chat: needs no connection.
    Chat,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Telegram => "telegram",
            Channel::Whatsapp => "whatsapp",
            Channel::Webhook => "webhook",
            Channel::Chat => "chat",
        }
    }
}

/// A WhatsApp message template, as the WhatsApp Business API takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateDef {
    pub name: String,
    /// A language code such as `en_US`.
    pub language: String,
    /// The API's component objects, passed through; string values may hold
    /// `{{ attribute }}` placeholders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<Value>>,
}

/// One update_field assignment: a constant `value` or the value of `from_property`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentDef {
    /// The target: a `customer.` or `participant.` property.
    pub property: String,
    /// The constant to write; `null` clears the property.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_property: Option<String>,
}

/// One http_action write: a value picked from the response stored in a property.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteDef {
    /// A JSON pointer (RFC 6901) into the response body, e.g. `/data/score`.
    pub from: String,
    /// The target: a `customer.` or `participant.` property.
    pub property: String,
}

/// Tells an explicit `null` (`Some(Value::Null)`) from an absent field (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Parses a flow; syntax and type errors come back path-addressed
/// (`nodes[2].operator: unknown variant ...`).
pub fn parse_definition(text: &str, format: Format) -> Result<FlowDefinition, ValidationErrors> {
    let checked = match format {
        Format::Json => document::check_json(text),
        Format::Yaml => document::check_yaml(text),
    };
    if let Err(message) = checked {
        let path = String::new();
        return Err(ValidationErrors(vec![ValidationError { path, message }]));
    }
    let (path, message) = match format {
        Format::Json => {
            let de = &mut serde_json::Deserializer::from_str(text);
            match serde_path_to_error::deserialize(de) {
                Ok(def) => return Ok(def),
                Err(e) => (e.path().to_string(), e.into_inner().to_string()),
            }
        }
        Format::Yaml => {
            let de = serde_yaml::Deserializer::from_str(text);
            match serde_path_to_error::deserialize(de) {
                Ok(def) => return Ok(def),
                Err(e) => (e.path().to_string(), e.into_inner().to_string()),
            }
        }
    };
    let path = if path == "." { String::new() } else { path };
    // serde_yaml already starts its messages with the path.
    let message = match message.strip_prefix(&format!("{path}: ")) {
        Some(rest) if !path.is_empty() => rest.to_string(),
        _ => message,
    };
    Err(ValidationErrors(vec![ValidationError { path, message }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str, format: Format) -> String {
        parse_definition(text, format).unwrap_err().to_string()
    }

    #[test]
    fn yaml_keywords_and_times_parse() {
        let def = parse_definition(
            "nodes:\n  - id: c\n    type: field_check\n    value: false\n    match: a\n    else: b\n  - id: s\n    type: start_communication\n    from: 09:00\n    to: '18:30'\n",
            Format::Yaml,
        )
        .unwrap();
        assert_eq!(def.nodes[0].on_match.as_deref(), Some("a"));
        assert_eq!(def.nodes[0].on_else.as_deref(), Some("b"));
        assert_eq!(def.nodes[0].value, Some(Value::Bool(false)));
        assert_eq!(def.nodes[1].from.as_deref(), Some("09:00"));
        assert_eq!(def.nodes[1].to.as_deref(), Some("18:30"));
    }

    #[test]
    fn parse_errors_are_path_addressed() {
        assert_eq!(
            parse_err(r#"{"nodes":[{"id":"a","type":"teleport"}]}"#, Format::Json)
                .split_once(':')
                .map(|(p, _)| p),
            Some("nodes[0].type")
        );
        let m = parse_err(
            "nodes:\n  - id: a\n    type: field_check\n    operator: gte\n",
            Format::Yaml,
        );
        assert!(
            m.starts_with("nodes[0].operator: unknown variant `gte`"),
            "{m}"
        );
        let m = parse_err(
            r#"{"nodes":[{"id":"a","type":"start_communication","days":"3"}]}"#,
            Format::Json,
        );
        assert!(m.starts_with("nodes[0].days: invalid type"), "{m}");
        let m = parse_err(
            r#"{"nodes":[{"id":"a","type":"update_field","assignments":[{"property":"p","valu":1}]}]}"#,
            Format::Json,
        );
        assert!(
            m.starts_with("nodes[0].assignments[0].valu: unknown field `valu`"),
            "{m}"
        );
        let m = parse_err(
            r#"{"nodes":[{"type":"cancel_communications"}]}"#,
            Format::Json,
        );
        assert!(m.contains("missing field `id`"), "{m}");
        let m = parse_err("nodes: []\nedges: []\n", Format::Yaml);
        assert!(m.contains("unknown field `edges`"), "{m}");
    }

    #[test]
    fn round_trips_through_json() {
        let mut node = NodeDef::new("c1", NodeType::FieldCheck);
        node.property = Some("participant.is_paid".into());
        node.operator = Some(Operator::Eq);
        node.value = Some(Value::Bool(false));
        node.on_match = Some("a1".into());
        let def = FlowDefinition { nodes: vec![node] };
        let json = serde_json::to_string(&def).unwrap();
        assert_eq!(
            json,
            r#"{"nodes":[{"id":"c1","type":"field_check","property":"participant.is_paid","operator":"eq","value":false,"match":"a1"}]}"#
        );
        assert_eq!(parse_definition(&json, Format::Json).unwrap(), def);
    }

    #[test]
    fn present_fields_and_edges() {
        let mut node = NodeDef::new("x", NodeType::FieldCheck);
        node.on_else = Some("b".into());
        node.url = Some("http://x".into());
        assert_eq!(node.present_fields(), vec!["else", "url"]);
        assert_eq!(node.edges().collect::<Vec<_>>(), vec![("else", "b")]);
    }

    #[test]
    fn node_types_know_their_triggers_and_fields() {
        for t in TriggerType::ALL {
            assert_eq!(NodeType::from(t).trigger(), Some(t));
            assert_eq!(NodeType::from(t).fields(), &["next"]);
        }
        assert_eq!(NodeType::FieldCheck.trigger(), None);
        assert_eq!(TriggerType::FromAnotherFlow.as_str(), "from_another_flow");
        for t in [
            NodeType::FieldCheck,
            NodeType::HttpAction,
            NodeType::UpdateField,
        ] {
            let json = serde_json::to_value(t).unwrap();
            assert_eq!(json, Value::String(t.as_str().into()));
        }
    }
}
