//! Checks the configuration of one node and builds its typed [`NodeKind`]; the graph
//! (ids, edges, cycles, reachability) is [`super::validate`]'s part.

use std::collections::HashMap;

use chrono::{NaiveDate, NaiveTime, TimeDelta};
use serde_json::Value;
use uuid::Uuid;

use super::compiled::{
    Assignment, Communication, Condition, DateOperand, HttpAction, NodeKind, Operand, Property,
    Scope, Source, ValueKind,
};
use super::definition::{Channel, NodeDef, NodeType, Operator};
use super::eval::read_datetime;
use super::schedule::{BaseDate, Schedule, Window};
use super::template::placeholders;
use crate::agent::ValidationError;
use crate::campaign::{parse_duration_hhmm, parse_time_of_day};

/// Offsets beyond a century are typos, and bounding them keeps date arithmetic in range.
const MAX_DAYS: i64 = 36_500;
const MAX_MINUTES: i64 = MAX_DAYS * 24 * 60;

/// Collects path-addressed errors while checking nodes against the campaign's schema.
pub(super) struct Checker<'s> {
    schema: &'s dyn Fn(&str) -> Option<ValueKind>,
    pub(super) errors: Vec<ValidationError>,
}

impl<'s> Checker<'s> {
    pub(super) fn new(schema: &'s dyn Fn(&str) -> Option<ValueKind>) -> Checker<'s> {
        Checker {
            schema,
            errors: Vec::new(),
        }
    }

    pub(super) fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn required<'v, T: ?Sized>(
        &mut self,
        path: &str,
        field: &str,
        node: &NodeDef,
        value: Option<&'v T>,
    ) -> Option<&'v T> {
        if value.is_none() {
            self.err(
                format!("{path}.{field}"),
                format!("is required for {}", node.node_type.as_str()),
            );
        }
        value
    }

    /// Parses and looks up a property. The kind is `None` for free-form `result.`
    /// properties, which only some fields take (`allow_result`).
    fn property(
        &mut self,
        path: &str,
        text: &str,
        allow_result: bool,
    ) -> Option<(Property, Option<ValueKind>)> {
        let Some(property) = Property::parse(text) else {
            let prefixes = if allow_result {
                "customer., participant. or result."
            } else {
                "customer. or participant."
            };
            self.err(path, format!("{text:?} must start with {prefixes}"));
            return None;
        };
        if property.scope == Scope::Result {
            if !allow_result {
                self.err(
                    path,
                    format!("{text:?} is a communication result; only customer. and participant. properties are allowed here"),
                );
                return None;
            }
            return Some((property, None));
        }
        match (self.schema)(text) {
            Some(kind) => Some((property, Some(kind))),
            None => {
                self.err(path, format!("unknown property {text:?}"));
                None
            }
        }
    }

    /// Checks that every `{{ placeholder }}` in `text` names a known attribute.
    fn placeholders(&mut self, path: &str, text: &str) {
        for name in placeholders(text) {
            let known = match Property::parse(name) {
                Some(p) if p.scope == Scope::Result => true,
                Some(_) => (self.schema)(name).is_some(),
                None => ["participant", "customer"]
                    .iter()
                    .any(|scope| (self.schema)(&format!("{scope}.{name}")).is_some()),
            };
            if !known {
                self.err(
                    path,
                    format!("unknown attribute {name:?} in {{{{ {name} }}}}"),
                );
            }
        }
    }

    /// The typed form of `node`'s configuration; `None` after reporting its errors.
    pub(super) fn node_kind(&mut self, path: &str, node: &NodeDef) -> Option<NodeKind> {
        match node.node_type {
            NodeType::FieldCheck => self.condition(path, node).map(NodeKind::FieldCheck),
            NodeType::StartCommunication => self
                .communication(path, node)
                .map(NodeKind::StartCommunication),
            NodeType::CancelCommunications => Some(NodeKind::CancelCommunications),
            NodeType::UpdateField => self.assignments(path, node).map(NodeKind::UpdateField),
            NodeType::ToAnotherFlow => {
                let flow = self.required(path, "flow", node, node.flow.as_deref())?;
                if flow.trim().is_empty() {
                    self.err(format!("{path}.flow"), "must not be empty");
                    return None;
                }
                Some(NodeKind::ToAnotherFlow(flow.to_string()))
            }
            NodeType::HttpAction => self.http_action(path, node).map(NodeKind::HttpAction),
            trigger => trigger.trigger().map(NodeKind::Trigger),
        }
    }

    fn condition(&mut self, path: &str, node: &NodeDef) -> Option<Condition> {
        let property = self.required(path, "property", node, node.property.as_deref());
        let operator = self.required(path, "operator", node, node.operator.as_ref());
        let (property, kind) = self.property(&format!("{path}.property"), property?, true)?;
        let operator = *operator?;
        if let Some(kind) = kind {
            if !applies(operator, kind) {
                let allowed: Vec<&str> = ALL_OPERATORS
                    .into_iter()
                    .filter(|op| applies(*op, kind))
                    .map(Operator::as_str)
                    .collect();
                self.err(
                    format!("{path}.operator"),
                    format!(
                        "{} does not apply to {} property \"{property}\" (use {})",
                        operator.as_str(),
                        kind.as_str(),
                        allowed.join(", ")
                    ),
                );
                return None;
            }
        }
        let operand = self.operand(path, node, operator, kind)?;
        Some(Condition {
            property,
            operator,
            operand,
        })
    }

    fn operand(
        &mut self,
        path: &str,
        node: &NodeDef,
        operator: Operator,
        kind: Option<ValueKind>,
    ) -> Option<Operand> {
        let op = operator.as_str();
        if operator.is_presence() {
            if node.value.is_some() {
                self.err(format!("{path}.value"), format!("not used with {op}"));
            }
            if node.days.is_some() {
                self.err(format!("{path}.days"), format!("not used with {op}"));
            }
            return (node.value.is_none() && node.days.is_none()).then_some(Operand::None);
        }
        let value = match &node.value {
            None | Some(Value::Null) => {
                self.err(
                    format!("{path}.value"),
                    format!("is required for {op} (use is_set / is_not_set to test for a missing value)"),
                );
                return None;
            }
            Some(v) => v,
        };
        if operator == Operator::In {
            return self.list_operand(path, node, value, kind);
        }
        if value.as_str() == Some("today") && kind != Some(ValueKind::String) {
            if operator == Operator::Contains {
                self.err(
                    format!("{path}.value"),
                    "\"today\" does not apply to contains",
                );
                return None;
            }
            let days = node.days.unwrap_or(0);
            if !self.in_range(&format!("{path}.days"), days, MAX_DAYS) {
                return None;
            }
            return Some(Operand::Date(DateOperand::Today(days)));
        }
        if node.days.is_some() {
            self.err(
                format!("{path}.days"),
                "only applies with value \"today\" on a date, datetime or result property",
            );
            return None;
        }
        let operand = match kind {
            Some(ValueKind::String) | None if operator == Operator::Contains => scalar(kind, value),
            Some(ValueKind::Date) => {
                plain_date(value).map(|d| Operand::Date(DateOperand::Fixed(d)))
            }
            Some(ValueKind::DateTime) => date_or_instant(value),
            None if operator.is_ordering() => match value {
                Value::Number(n) => Some(Operand::Number(n.clone())),
                _ => date_or_instant(value),
            },
            _ => scalar(kind, value),
        };
        if operand.is_none() {
            let expected = match kind {
                Some(ValueKind::Date) => "\"today\" or a date YYYY-MM-DD".into(),
                Some(ValueKind::DateTime) => {
                    "\"today\", a date YYYY-MM-DD or an RFC 3339 datetime".into()
                }
                None if operator.is_ordering() => {
                    "a number, \"today\", a date YYYY-MM-DD or an RFC 3339 datetime".into()
                }
                _ => scalar_expectation(kind),
            };
            self.err(format!("{path}.value"), format!("expected {expected}"));
        }
        operand
    }

    /// The members of an `in` list, each a scalar of the property's kind.
    fn list_operand(
        &mut self,
        path: &str,
        node: &NodeDef,
        value: &Value,
        kind: Option<ValueKind>,
    ) -> Option<Operand> {
        let Some(items) = value.as_array().filter(|a| !a.is_empty()) else {
            self.err(format!("{path}.value"), "in needs a non-empty array");
            return None;
        };
        let before = self.errors.len();
        if node.days.is_some() {
            self.err(format!("{path}.days"), "not used with in");
        }
        let mut members = Vec::with_capacity(items.len());
        for (k, item) in items.iter().enumerate() {
            match scalar(kind, item) {
                Some(member) => members.push(member),
                None => self.err(
                    format!("{path}.value[{k}]"),
                    format!("expected {}", scalar_expectation(kind)),
                ),
            }
        }
        (self.errors.len() == before).then_some(Operand::List(members))
    }

    fn in_range(&mut self, path: &str, v: i64, max: i64) -> bool {
        let ok = (-max..=max).contains(&v);
        if !ok {
            self.err(path, format!("must be between -{max} and {max}"));
        }
        ok
    }

    fn communication(&mut self, path: &str, node: &NodeDef) -> Option<Communication> {
        let before = self.errors.len();
        let name = self.required(path, "name", node, node.name.as_deref());
        let channel = self.required(path, "channel", node, node.channel.as_ref());
        let agent = self.required(path, "agent_id", node, node.agent_id.as_deref());
        let duration = self.required(path, "duration", node, node.duration.as_deref());

        if let Some(n) = name.filter(|n| !is_upper_snake(n)) {
            self.err(
                format!("{path}.name"),
                format!("{n:?} is not UPPER_SNAKE (A-Z, 0-9, _; starting with a letter)"),
            );
        }
        let agent_id = agent.and_then(|a| self.uuid(&format!("{path}.agent_id"), a));
        let connection_id = match (channel, node.connection_id.as_deref()) {
            (Some(Channel::Chat), Some(_)) => {
                self.err(format!("{path}.connection_id"), "not used by channel chat");
                None
            }
            (Some(c), None) if *c != Channel::Chat => {
                self.err(
                    format!("{path}.connection_id"),
                    format!("is required for channel {}", c.as_str()),
                );
                None
            }
            (_, Some(id)) => self.uuid(&format!("{path}.connection_id"), id),
            (_, None) => None,
        };
        match (channel, &node.template) {
            (Some(Channel::Whatsapp), None) => self.err(
                format!("{path}.template"),
                "is required for channel whatsapp (WhatsApp starts conversations only with an approved template)",
            ),
            (Some(c), Some(_)) if *c != Channel::Whatsapp => self.err(
                format!("{path}.template"),
                format!("not used by channel {}", c.as_str()),
            ),
            _ => self.template(path, node),
        }
        let schedule = self.schedule(path, node, duration);
        if let Some(phrase) = &node.start_phrase {
            self.placeholders(&format!("{path}.start_phrase"), phrase);
        }
        let context = self.context(path, node);

        if self.errors.len() != before {
            return None;
        }
        Some(Communication {
            name: name?.to_string(),
            channel: *channel?,
            agent_id: agent_id?,
            connection_id,
            schedule: schedule?,
            start_phrase: node.start_phrase.clone(),
            context,
            template: node.template.clone(),
        })
    }

    /// Checks the template's own fields.
    fn template(&mut self, path: &str, node: &NodeDef) {
        let Some(t) = &node.template else { return };
        if t.name.trim().is_empty() {
            self.err(format!("{path}.template.name"), "must not be empty");
        }
        if t.language.trim().is_empty() {
            self.err(format!("{path}.template.language"), "must not be empty");
        }
        for (k, component) in t.components.iter().flatten().enumerate() {
            let mut texts = Vec::new();
            strings_in(component, &mut texts);
            for text in texts {
                self.placeholders(&format!("{path}.template.components[{k}]"), text);
            }
        }
    }

    fn schedule(&mut self, path: &str, node: &NodeDef, duration: Option<&str>) -> Option<Schedule> {
        let before = self.errors.len();
        let base = match node.date.as_deref() {
            None | Some("today") => Some(BaseDate::Today),
            Some(text) => {
                let field = format!("{path}.date");
                match self.property(&field, text, true) {
                    Some((p, None | Some(ValueKind::Date | ValueKind::DateTime))) => {
                        Some(BaseDate::Property(p))
                    }
                    Some((_, Some(kind))) => {
                        self.err(
                            field,
                            format!("{text:?} is a {} property; expected \"today\" or a date or datetime property", kind.as_str()),
                        );
                        None
                    }
                    None => None,
                }
            }
        };
        let days = node.days.unwrap_or(0);
        let minutes = node.minutes.unwrap_or(0);
        self.in_range(&format!("{path}.days"), days, MAX_DAYS);
        self.in_range(&format!("{path}.minutes"), minutes, MAX_MINUTES);

        let window = match (node.from.as_deref(), node.to.as_deref()) {
            (None, None) => None,
            (Some(_), None) => {
                self.err(format!("{path}.to"), "is required with from");
                None
            }
            (None, Some(_)) => {
                self.err(format!("{path}.from"), "is required with to");
                None
            }
            (Some(from), Some(to)) => {
                let from = self.clock(&format!("{path}.from"), from);
                let to = self.clock(&format!("{path}.to"), to);
                match (from, to) {
                    (Some(from), Some(to)) if from == to => {
                        self.err(
                            format!("{path}.to"),
                            "must differ from from (omit both for any time of day)",
                        );
                        None
                    }
                    (Some(from), Some(to)) => Some(Window { from, to }),
                    _ => None,
                }
            }
        };
        let duration = duration.and_then(|d| match parse_duration_hhmm(d) {
            Err(e) => {
                self.err(format!("{path}.duration"), e);
                None
            }
            Ok(t) => Some(t),
        });
        if self.errors.len() != before {
            return None;
        }
        Some(Schedule {
            base: base?,
            offset: TimeDelta::days(days) + TimeDelta::minutes(minutes),
            window,
            duration: duration?,
        })
    }

    fn context(&mut self, path: &str, node: &NodeDef) -> Vec<Property> {
        let mut seen = HashMap::new();
        let mut context = Vec::new();
        for (k, text) in node.context.iter().flatten().enumerate() {
            let field = format!("{path}.context[{k}]");
            let Some((p, _)) = self.property(&field, text, false) else {
                continue;
            };
            if let Some(first) = seen.insert(p.clone(), k) {
                self.err(
                    field,
                    format!("{text:?} listed twice (first at context[{first}])"),
                );
            } else {
                context.push(p);
            }
        }
        context
    }

    fn assignments(&mut self, path: &str, node: &NodeDef) -> Option<Vec<Assignment>> {
        let list = self.required(path, "assignments", node, node.assignments.as_deref())?;
        if list.is_empty() {
            self.err(
                format!("{path}.assignments"),
                "needs at least one assignment",
            );
            return None;
        }
        let before = self.errors.len();
        let mut targets = HashMap::new();
        let mut out = Vec::new();
        for (k, a) in list.iter().enumerate() {
            let at = format!("{path}.assignments[{k}]");
            let target = self.property(&format!("{at}.property"), &a.property, false);
            if let Some((p, _)) = &target {
                if let Some(first) = targets.insert(p.clone(), k) {
                    self.err(
                        format!("{at}.property"),
                        format!(
                            "{:?} is assigned twice (first at assignments[{first}])",
                            a.property
                        ),
                    );
                }
            }
            let kind = target.as_ref().and_then(|(_, kind)| *kind);
            let source = match (&a.value, &a.from_property) {
                (None, None) => {
                    self.err(at, "needs value or from_property");
                    None
                }
                (Some(_), Some(_)) => {
                    self.err(at, "value and from_property exclude each other");
                    None
                }
                (Some(v), None) => {
                    let ok = v.is_null() || kind.is_none_or(|k| fits(k, v));
                    if !ok {
                        self.err(
                            format!("{at}.value"),
                            format!(
                                "expected {} for {:?} (or null to clear it)",
                                kind_expectation(kind),
                                a.property
                            ),
                        );
                    }
                    ok.then(|| Source::Value(v.clone()))
                }
                (None, Some(from)) => {
                    let field = format!("{at}.from_property");
                    match self.property(&field, from, true) {
                        Some((_, Some(from_kind))) if kind.is_some_and(|k| k != from_kind) => {
                            self.err(
                                field,
                                format!(
                                    "{from:?} is a {} property but {:?} is a {} property",
                                    from_kind.as_str(),
                                    a.property,
                                    kind.map_or("", ValueKind::as_str)
                                ),
                            );
                            None
                        }
                        Some((p, _)) => Some(Source::Property(p)),
                        None => None,
                    }
                }
            };
            if let (Some((target, _)), Some(source)) = (target, source) {
                out.push(Assignment { target, source });
            }
        }
        (self.errors.len() == before).then_some(out)
    }

    fn http_action(&mut self, path: &str, node: &NodeDef) -> Option<HttpAction> {
        let url = self.required(path, "url", node, node.url.as_deref());
        let before = self.errors.len();
        if let Some(u) = url {
            let host = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"));
            if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
                self.err(
                    format!("{path}.url"),
                    format!("{u:?} is not an http(s) URL"),
                );
            }
        }
        let mut targets = HashMap::new();
        let mut writes = Vec::new();
        for (k, w) in node.writes.iter().flatten().enumerate() {
            let at = format!("{path}.writes[{k}]");
            if !(w.from.is_empty() || w.from.starts_with('/')) {
                self.err(
                    format!("{at}.from"),
                    format!(
                        "{:?} is not a JSON pointer (like /data/score, or \"\" for the whole body)",
                        w.from
                    ),
                );
            }
            let Some((p, _)) = self.property(&format!("{at}.property"), &w.property, false) else {
                continue;
            };
            if let Some(first) = targets.insert(p.clone(), k) {
                self.err(
                    format!("{at}.property"),
                    format!(
                        "{:?} is written twice (first at writes[{first}])",
                        w.property
                    ),
                );
            }
            writes.push((w.from.clone(), p));
        }
        if self.errors.len() != before {
            return None;
        }
        Some(HttpAction {
            url: url?.to_string(),
            params: node.params.clone().unwrap_or_default(),
            writes,
        })
    }

    fn uuid(&mut self, path: &str, text: &str) -> Option<Uuid> {
        let parsed = Uuid::parse_str(text).ok();
        if parsed.is_none() {
            self.err(path, format!("{text:?} is not a UUID"));
        }
        parsed
    }

    fn clock(&mut self, path: &str, text: &str) -> Option<NaiveTime> {
        parse_time_of_day(text).map_err(|e| self.err(path, e)).ok()
    }
}

const ALL_OPERATORS: [Operator; 10] = [
    Operator::Eq,
    Operator::Ne,
    Operator::Gt,
    Operator::Ge,
    Operator::Lt,
    Operator::Le,
    Operator::Contains,
    Operator::In,
    Operator::IsSet,
    Operator::IsNotSet,
];

/// Which operators a kind takes. Ordering is for numbers and dates only: text has no
/// order operators want to rely on (case, locale), and booleans none at all.
fn applies(op: Operator, kind: ValueKind) -> bool {
    use Operator::*;
    match op {
        Eq | Ne | IsSet | IsNotSet => true,
        Gt | Ge | Lt | Le => matches!(
            kind,
            ValueKind::Number | ValueKind::Date | ValueKind::DateTime
        ),
        Contains => kind == ValueKind::String,
        In => matches!(kind, ValueKind::String | ValueKind::Number),
    }
}

/// A text, number or bool operand of the property's kind (any of them for `result.`).
fn scalar(kind: Option<ValueKind>, v: &Value) -> Option<Operand> {
    match (kind, v) {
        (Some(ValueKind::String) | None, Value::String(s)) => Some(Operand::Text(s.clone())),
        (Some(ValueKind::Number) | None, Value::Number(n)) => Some(Operand::Number(n.clone())),
        (Some(ValueKind::Bool) | None, Value::Bool(b)) => Some(Operand::Bool(*b)),
        _ => None,
    }
}

fn scalar_expectation(kind: Option<ValueKind>) -> String {
    match kind {
        None => "a string, number or bool".into(),
        k => kind_expectation(k),
    }
}

fn kind_expectation(kind: Option<ValueKind>) -> String {
    match kind {
        Some(ValueKind::String) => "a string".into(),
        Some(ValueKind::Number) => "a number".into(),
        Some(ValueKind::Bool) => "a bool".into(),
        Some(ValueKind::Date) => "a date YYYY-MM-DD".into(),
        Some(ValueKind::DateTime) => "an RFC 3339 datetime".into(),
        None => "any value".into(),
    }
}

/// A date (compared by date) or an RFC 3339 datetime (compared as an instant).
fn date_or_instant(v: &Value) -> Option<Operand> {
    match read_datetime(v) {
        Some(t) => Some(Operand::Instant(t)),
        None => plain_date(v).map(|d| Operand::Date(DateOperand::Fixed(d))),
    }
}

/// Exactly `YYYY-MM-DD` (chrono alone would take `2026-6-1`).
fn plain_date(v: &Value) -> Option<NaiveDate> {
    let s = v.as_str()?;
    let shape = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    shape.then(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())?
}

/// Whether a constant suits a property of `kind`.
fn fits(kind: ValueKind, v: &Value) -> bool {
    match kind {
        ValueKind::String => v.is_string(),
        ValueKind::Number => v.is_number(),
        ValueKind::Bool => v.is_boolean(),
        ValueKind::Date => plain_date(v).is_some(),
        ValueKind::DateTime => read_datetime(v).is_some(),
    }
}

fn strings_in<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| strings_in(i, out)),
        Value::Object(map) => map.values().for_each(|i| strings_in(i, out)),
        _ => {}
    }
}

fn is_upper_snake(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_snake_names() {
        for ok in ["A", "REMINDED_BEFORE_2D", "X_1_"] {
            assert!(is_upper_snake(ok), "{ok}");
        }
        for bad in ["", "_A", "1A", "reminded", "A-B", "ÄB", "A B"] {
            assert!(!is_upper_snake(bad), "{bad}");
        }
    }

    #[test]
    fn operator_table() {
        use ValueKind::*;
        assert!(applies(Operator::Contains, String));
        assert!(!applies(Operator::Gt, String));
        assert!(applies(Operator::In, Number));
        assert!(!applies(Operator::In, Date));
        assert!(!applies(Operator::Lt, Bool));
        assert!(applies(Operator::Ge, DateTime));
        assert!(applies(Operator::IsNotSet, Bool));
    }
}
