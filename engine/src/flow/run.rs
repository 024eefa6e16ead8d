//! One participant's way through a flow after a trigger: conditions are decided as they
//! are reached, and each action is handed to the caller, which performs it (an
//! update_field or http_action changes the data later conditions read) before asking for
//! the next. Flows are acyclic, so a walk always ends.

use super::compiled::{CompiledFlow, Node, NodeId, NodeKind, Outcome};
use super::eval::{check, EvalContext};

/// A walk from one trigger node.
#[derive(Debug, Clone)]
pub struct Walk<'f> {
    flow: &'f CompiledFlow,
    pending: Option<NodeId>,
    /// Every node passed, in order (for per-node counts).
    visited: Vec<NodeId>,
}

impl<'f> Walk<'f> {
    /// A walk starting at `trigger`, a trigger node of `flow`.
    pub fn new(flow: &'f CompiledFlow, trigger: NodeId) -> Walk<'f> {
        Walk {
            flow,
            pending: Some(trigger),
            visited: Vec::new(),
        }
    }

    /// The next action to perform, deciding the conditions on the way with `ctx`; `None`
    /// when the flow ends for this participant (no node, or an unconnected port).
    pub fn next_action(&mut self, ctx: &EvalContext<'_>) -> Option<&'f Node> {
        loop {
            let node = self.flow.get(self.pending?);
            self.visited.push(node.index);
            match &node.kind {
                NodeKind::Trigger(_) => {
                    self.pending = self.flow.next(node, Outcome::Done).map(|n| n.index)
                }
                NodeKind::FieldCheck(cond) => {
                    let outcome = Outcome::from(check(cond, ctx));
                    self.pending = self.flow.next(node, outcome).map(|n| n.index);
                }
                _ => {
                    self.pending = self.flow.next(node, Outcome::Done).map(|n| n.index);
                    return Some(node);
                }
            }
        }
    }

    /// The nodes passed so far, in order.
    pub fn visited(&self) -> impl Iterator<Item = &'f Node> + '_ {
        self.visited.iter().map(|&i| self.flow.get(i))
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use serde_json::{json, Map, Value};

    use super::*;
    use crate::agent::Format;
    use crate::flow::{parse_and_validate, TriggerType, ValueKind};

    const FLOW: &str = r#"
nodes:
  - {id: created, type: participant_created, next: paid}
  - {id: paid, type: field_check, property: participant.paid, operator: eq, value: false, match: mark, else: stop}
  - id: mark
    type: update_field
    assignments: [{property: participant.paid, value: true}]
    next: again
  - {id: again, type: field_check, property: participant.paid, operator: eq, value: true, match: stop}
  - {id: stop, type: cancel_communications}
"#;

    fn schema(path: &str) -> Option<ValueKind> {
        (path == "participant.paid").then_some(ValueKind::Bool)
    }

    #[test]
    fn actions_come_one_at_a_time_and_later_checks_see_their_effect() {
        let flow = parse_and_validate(FLOW, Format::Yaml, &schema).unwrap();
        let start = flow.triggers_for(TriggerType::ParticipantCreated)[0];
        let empty = Map::new();
        let mut participant: Map<String, Value> =
            json!({"paid": false}).as_object().unwrap().clone();
        let today = NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();
        let mut walk = Walk::new(&flow, start);
        let ctx = EvalContext {
            customer: &empty,
            participant: &participant,
            result: &empty,
            today,
        };
        let first = walk.next_action(&ctx).unwrap();
        assert_eq!(first.id, "mark");
        // The caller performs the update before asking for the next action.
        participant.insert("paid".into(), json!(true));
        let ctx = EvalContext {
            customer: &empty,
            participant: &participant,
            result: &empty,
            today,
        };
        assert_eq!(walk.next_action(&ctx).unwrap().id, "stop");
        assert!(walk.next_action(&ctx).is_none());
        assert!(
            walk.next_action(&ctx).is_none(),
            "an ended walk stays ended"
        );
        let passed: Vec<&str> = walk.visited().map(|n| n.id.as_str()).collect();
        assert_eq!(passed, ["created", "paid", "mark", "again", "stop"]);
    }

    #[test]
    fn an_unconnected_port_ends_the_walk() {
        let flow = parse_and_validate(FLOW, Format::Yaml, &schema).unwrap();
        let start = flow.triggers_for(TriggerType::ParticipantCreated)[0];
        let empty = Map::new();
        let participant = json!({"paid": "unknown"}).as_object().unwrap().clone();
        let ctx = EvalContext {
            customer: &empty,
            participant: &participant,
            result: &empty,
            today: NaiveDate::from_ymd_opt(2026, 6, 1).unwrap(),
        };
        let mut walk = Walk::new(&flow, start);
        // Not a bool: eq false does not hold, so the else port: cancel.
        assert_eq!(walk.next_action(&ctx).unwrap().id, "stop");
        assert!(walk.next_action(&ctx).is_none());
    }
}
