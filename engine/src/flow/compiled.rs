//! The validated, typed form of a flow that participants run through.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate};
use serde_json::{Map, Number, Value};
use uuid::Uuid;

use super::definition::{Channel, FlowDefinition, Operator, TemplateDef, TriggerType};
use super::schedule::Schedule;

/// The type of a campaign field, as far as flows care. The campaign model maps its field
/// types onto it (int and float -> Number; email and phone -> String).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    String,
    Number,
    Bool,
    /// `YYYY-MM-DD`.
    Date,
    /// RFC 3339.
    DateTime,
}

impl ValueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueKind::String => "string",
            ValueKind::Number => "number",
            ValueKind::Bool => "bool",
            ValueKind::Date => "date",
            ValueKind::DateTime => "datetime",
        }
    }
}

/// Where a property lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The customer profile, shared by all campaigns.
    Customer,
    /// The participant record of this campaign.
    Participant,
    /// The results of the participant's last communication: free-form, not in the schema.
    Result,
}

impl Scope {
    pub fn prefix(self) -> &'static str {
        match self {
            Scope::Customer => "customer",
            Scope::Participant => "participant",
            Scope::Result => "result",
        }
    }
}

/// A property path such as `participant.due_date`: a scope and the attribute's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Property {
    pub scope: Scope,
    pub name: String,
}

impl Property {
    /// Splits `scope.name`; `None` without a known prefix or with an empty name.
    pub fn parse(path: &str) -> Option<Property> {
        let (prefix, name) = path.split_once('.')?;
        let scope = [Scope::Customer, Scope::Participant, Scope::Result]
            .into_iter()
            .find(|s| s.prefix() == prefix)?;
        (!name.is_empty()).then(|| Property {
            scope,
            name: name.to_string(),
        })
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.scope.prefix(), self.name)
    }
}

/// A date a condition compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateOperand {
    /// A fixed calendar date.
    Fixed(NaiveDate),
    /// The date of the check (in the participant's timezone) plus this many days.
    Today(i64),
}

/// The right-hand side of a field_check, typed by validation.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// is_set, is_not_set.
    None,
    Text(String),
    Number(Number),
    Bool(bool),
    /// Compares by calendar date (datetime attributes by their date).
    Date(DateOperand),
    /// Compares instants (datetime attributes only).
    Instant(DateTime<FixedOffset>),
    /// `in`: text, number or bool members.
    List(Vec<Operand>),
}

/// A compiled field_check.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub property: Property,
    pub operator: Operator,
    pub operand: Operand,
}

/// A compiled start_communication.
#[derive(Debug, Clone, PartialEq)]
pub struct Communication {
    pub name: String,
    pub channel: Channel,
    pub agent_id: Uuid,
    /// `None` only for chat.
    pub connection_id: Option<Uuid>,
    pub schedule: Schedule,
    /// With `{{ attribute }}` placeholders; see [`super::render`].
    pub start_phrase: Option<String>,
    /// Properties passed to the agent.
    pub context: Vec<Property>,
    /// Present exactly for whatsapp.
    pub template: Option<TemplateDef>,
}

/// Where an update_field assignment takes its value from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A constant (`null` clears the target).
    Value(Value),
    Property(Property),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// A customer or participant property.
    pub target: Property,
    pub source: Source,
}

/// A compiled http_action.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpAction {
    pub url: String,
    pub params: Map<String, Value>,
    /// (JSON pointer into the response body, customer or participant property).
    pub writes: Vec<(String, Property)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Trigger(TriggerType),
    FieldCheck(Condition),
    StartCommunication(Communication),
    CancelCommunications,
    UpdateField(Vec<Assignment>),
    /// Starts the named flow of the same campaign (through its from_another_flow trigger);
    /// this flow goes on with `next` if that is connected, so a target flow can serve as a
    /// reusable subflow.
    ToAnotherFlow(String),
    HttpAction(HttpAction),
}

/// A node's position in its [`CompiledFlow`]; only meaningful for the flow that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(super) usize);

impl NodeId {
    /// The node's place in the definition's `nodes` list (for path-addressed errors).
    pub fn position(self) -> usize {
        self.0
    }
}

/// How a node was left, choosing the edge to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A trigger or an action finished: follow `next`.
    Done,
    /// A field_check held: follow `match`.
    Match,
    /// A field_check did not hold: follow `else`.
    Else,
}

impl From<bool> for Outcome {
    /// A field_check's result as its outcome.
    fn from(matched: bool) -> Outcome {
        if matched {
            Outcome::Match
        } else {
            Outcome::Else
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The id written in the definition: stable across edits, so it is what the store keeps.
    pub id: String,
    pub index: NodeId,
    pub kind: NodeKind,
    pub(super) next: Option<NodeId>,
    pub(super) on_match: Option<NodeId>,
    pub(super) on_else: Option<NodeId>,
}

/// A validated flow: an acyclic graph in which every node is reachable from a trigger.
#[derive(Debug, Clone)]
pub struct CompiledFlow {
    pub definition: FlowDefinition,
    pub(super) nodes: Vec<Node>,
    pub(super) by_id: HashMap<String, NodeId>,
    pub(super) triggers: HashMap<TriggerType, Vec<NodeId>>,
}

impl CompiledFlow {
    /// The node with this definition id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.by_id.get(id).map(|&i| &self.nodes[i.0])
    }

    /// The node at `index`, which must come from this flow.
    pub fn get(&self, index: NodeId) -> &Node {
        &self.nodes[index.0]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The trigger nodes that start on `trigger`, in definition order.
    pub fn triggers_for(&self, trigger: TriggerType) -> &[NodeId] {
        self.triggers.get(&trigger).map_or(&[], Vec::as_slice)
    }

    /// Where the flow goes when `node` is left with `outcome`; `None` ends the flow (also
    /// for an outcome the node has no port for, such as `Match` on an action).
    pub fn next(&self, node: &Node, outcome: Outcome) -> Option<&Node> {
        let port = match outcome {
            Outcome::Done => node.next,
            Outcome::Match => node.on_match,
            Outcome::Else => node.on_else,
        };
        port.map(|i| self.get(i))
    }

    /// The flows that to_another_flow nodes start, with their nodes: the campaign checks
    /// that each exists and has a from_another_flow trigger.
    /// The start_communication nodes with what they open.
    pub fn communications(&self) -> impl Iterator<Item = (&Node, &Communication)> {
        self.nodes.iter().filter_map(|n| match &n.kind {
            NodeKind::StartCommunication(c) => Some((n, c)),
            _ => None,
        })
    }

    pub fn flow_references(&self) -> impl Iterator<Item = (&Node, &str)> {
        self.nodes.iter().filter_map(|n| match &n.kind {
            NodeKind::ToAnotherFlow(flow) => Some((n, flow.as_str())),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_by_prefix() {
        assert_eq!(
            Property::parse("participant.due_date"),
            Some(Property {
                scope: Scope::Participant,
                name: "due_date".into()
            })
        );
        let nested = Property::parse("result.a.b").unwrap();
        assert_eq!((nested.scope, nested.name.as_str()), (Scope::Result, "a.b"));
        assert_eq!(nested.to_string(), "result.a.b");
        for bad in ["due_date", "customers.name", "customer.", ".name", ""] {
            assert_eq!(Property::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn outcomes_from_checks() {
        assert_eq!(Outcome::from(true), Outcome::Match);
        assert_eq!(Outcome::from(false), Outcome::Else);
    }
}
