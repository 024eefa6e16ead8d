use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use serde_json::{json, Map, Value};

use super::*;
use crate::flow::{
    BaseDate, Channel, DateOperand, EvalContext, Operand, Outcome, Property, Scope, Source,
};

const AGENT: &str = "0190f5a4-0000-7000-8000-000000000001";
const CONNECTION: &str = "0190f5a4-0000-7000-8000-000000000002";

/// The seed's "Payment reminder" example.
const PAYMENT_REMINDER: &str = r#"
nodes:
  - id: created
    type: participant_created
    next: unpaid
  - id: unpaid
    type: field_check
    property: participant.is_payment_received
    operator: eq
    value: false
    match: early
    else: stop
  - id: early
    type: field_check
    property: participant.due_date
    operator: ge
    value: today
    days: 3
    match: remind_early
    else: on_time
  - id: on_time
    type: field_check
    property: participant.due_date
    operator: ge
    value: today
    days: 0
    match: remind_due
  - id: remind_early
    type: start_communication
    name: REMINDED_BEFORE_2D
    channel: whatsapp
    agent_id: 0190f5a4-0000-7000-8000-000000000001
    connection_id: 0190f5a4-0000-7000-8000-000000000002
    date: participant.due_date
    days: -2
    from: "09:00"
    to: "20:00"
    duration: "04:00"
    start_phrase: "Hello {{ name }}, your payment of {{ participant.amount }} is due on {{ due_date }}."
    context: [participant.due_date, participant.amount, customer.name]
    template:
      name: payment_reminder
      language: en_US
      components:
        - type: body
          parameters:
            - type: text
              text: "{{ name }}"
  - id: remind_due
    type: start_communication
    name: REMINDED_DUE_DATE
    channel: whatsapp
    agent_id: 0190f5a4-0000-7000-8000-000000000001
    connection_id: 0190f5a4-0000-7000-8000-000000000002
    from: "09:00"
    to: "20:00"
    duration: "04:00"
    template: {name: payment_due_today, language: en_US}
  - id: stop
    type: cancel_communications
"#;

fn schema(path: &str) -> Option<ValueKind> {
    Some(match path {
        "participant.is_payment_received" | "participant.is_paid" => ValueKind::Bool,
        "participant.due_date" => ValueKind::Date,
        "participant.called_at" => ValueKind::DateTime,
        "participant.amount" | "customer.score" => ValueKind::Number,
        "participant.status" | "participant.note" | "customer.name" | "customer.phone" => {
            ValueKind::String
        }
        _ => return None,
    })
}

fn compile_yaml(text: &str) -> Result<CompiledFlow, ValidationErrors> {
    parse_and_validate(text, Format::Yaml, &schema)
}

/// The error lines for a flow that must not validate.
fn errors(text: &str) -> Vec<String> {
    match compile_yaml(text) {
        Ok(_) => panic!("validated:\n{text}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// A one-trigger flow around `node` (id `n`), which the trigger leads to.
fn around(node: &str) -> String {
    format!("nodes:\n  - id: t\n    type: participant_created\n    next: n\n  - id: n\n{node}")
}

fn node_errors(node: &str) -> Vec<String> {
    errors(&around(node))
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// Runs the flow from its participant_created trigger through its conditions, as the
/// participant actor will, and returns the node ids visited.
fn walk(flow: &CompiledFlow, participant: Value, today: &str) -> Vec<String> {
    let empty = Map::new();
    let ctx = EvalContext {
        customer: &empty,
        participant: participant.as_object().unwrap(),
        result: &empty,
        today: date(today),
    };
    let start = flow.triggers_for(TriggerType::ParticipantCreated)[0];
    let mut walk = crate::flow::Walk::new(flow, start);
    while walk.next_action(&ctx).is_some() {}
    walk.visited().map(|n| n.id.clone()).collect()
}

#[test]
fn payment_reminder_compiles() {
    let flow = compile_yaml(PAYMENT_REMINDER).expect("valid");
    assert_eq!(flow.nodes().len(), 7);
    assert_eq!(
        flow.triggers_for(TriggerType::ParticipantCreated),
        &[flow.node("created").unwrap().index]
    );
    assert!(flow
        .triggers_for(TriggerType::ParticipantUpdated)
        .is_empty());

    let NodeKind::FieldCheck(early) = &flow.node("early").unwrap().kind else {
        panic!("early is a field_check");
    };
    assert_eq!(early.operand, Operand::Date(DateOperand::Today(3)));

    let NodeKind::StartCommunication(c) = &flow.node("remind_early").unwrap().kind else {
        panic!("remind_early starts a communication");
    };
    assert_eq!(c.name, "REMINDED_BEFORE_2D");
    assert_eq!(c.channel, Channel::Whatsapp);
    assert_eq!(c.agent_id.to_string(), AGENT);
    assert_eq!(
        c.connection_id.map(|u| u.to_string()).as_deref(),
        Some(CONNECTION)
    );
    assert_eq!(
        c.schedule.base,
        BaseDate::Property(Property::parse("participant.due_date").unwrap())
    );
    assert_eq!(c.schedule.offset, TimeDelta::days(-2));
    assert_eq!(c.schedule.duration, TimeDelta::hours(4));
    assert_eq!(c.context.len(), 3);
    assert_eq!(c.template.as_ref().unwrap().name, "payment_reminder");

    // The due-date reminder counts from today, so it goes out as soon as the window allows.
    let NodeKind::StartCommunication(due) = &flow.node("remind_due").unwrap().kind else {
        panic!("remind_due starts a communication");
    };
    assert_eq!(due.schedule.base, BaseDate::Today);
    let tz = chrono_tz::America::New_York;
    let at = |s: &str| {
        let t = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        chrono::TimeZone::from_local_datetime(&tz, &t)
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let today =
        crate::campaign::ScheduleBase::Date(chrono::NaiveDate::from_ymd_opt(2026, 6, 10).unwrap());
    let plan = due.schedule.plan(today, tz, at("2026-06-10 07:15"));
    assert_eq!(plan.start, at("2026-06-10 09:00"));
    assert_eq!(plan.cancel_at, at("2026-06-10 13:00"));
}

#[test]
fn payment_reminder_routes_participants() {
    let flow = compile_yaml(PAYMENT_REMINDER).unwrap();
    let today = "2026-06-10";
    let cases = [
        (
            json!({"is_payment_received": true, "due_date": "2026-06-20"}),
            vec!["created", "unpaid", "stop"],
        ),
        (
            json!({"is_payment_received": false, "due_date": "2026-06-20"}),
            vec!["created", "unpaid", "early", "remind_early"],
        ),
        // Exactly today + 3 is "on or after".
        (
            json!({"is_payment_received": false, "due_date": "2026-06-13"}),
            vec!["created", "unpaid", "early", "remind_early"],
        ),
        (
            json!({"is_payment_received": false, "due_date": "2026-06-12"}),
            vec!["created", "unpaid", "early", "on_time", "remind_due"],
        ),
        (
            json!({"is_payment_received": false, "due_date": "2026-06-10"}),
            vec!["created", "unpaid", "early", "on_time", "remind_due"],
        ),
        // Overdue: the unconnected else port ends the flow.
        (
            json!({"is_payment_received": false, "due_date": "2026-06-09"}),
            vec!["created", "unpaid", "early", "on_time"],
        ),
        // No due date: every comparison is false.
        (
            json!({"is_payment_received": false}),
            vec!["created", "unpaid", "early", "on_time"],
        ),
        // Payment status unknown: neither eq false nor anything else, so the else port.
        (
            json!({"due_date": "2026-06-20"}),
            vec!["created", "unpaid", "stop"],
        ),
    ];
    for (participant, expected) in cases {
        assert_eq!(
            walk(&flow, participant.clone(), today),
            expected,
            "{participant}"
        );
    }
    // The same participant a week later.
    assert_eq!(
        walk(
            &flow,
            json!({"is_payment_received": false, "due_date": "2026-06-20"}),
            "2026-06-18"
        ),
        vec!["created", "unpaid", "early", "on_time", "remind_due"]
    );
}

#[test]
fn payment_reminder_from_json_matches_yaml() {
    let yaml_def = parse_definition(PAYMENT_REMINDER, Format::Yaml).unwrap();
    let json = serde_json::to_string_pretty(&yaml_def).unwrap();
    let flow = parse_and_validate(&json, Format::Json, &schema).expect("valid JSON");
    assert_eq!(flow.definition, yaml_def);
    assert_eq!(
        walk(
            &flow,
            json!({"is_payment_received": false, "due_date": "2026-06-12"}),
            "2026-06-10"
        ),
        vec!["created", "unpaid", "early", "on_time", "remind_due"]
    );
    // Written by hand, as the issue shows it.
    let flow = parse_and_validate(
        r#"{"nodes":[
            {"id":"t","type":"participant_updated","next":"c1"},
            {"id":"c1","type":"field_check","property":"participant.is_paid","operator":"eq","value":false,"match":"a1","else":"a2"},
            {"id":"a1","type":"to_another_flow","flow":"dunning"},
            {"id":"a2","type":"update_field","assignments":[{"property":"participant.status","value":"paid"}]}
        ]}"#,
        Format::Json,
        &schema,
    )
    .expect("valid");
    let c1 = flow.node("c1").unwrap();
    assert_eq!(flow.next(c1, Outcome::Match).unwrap().id, "a1");
    assert_eq!(flow.next(c1, Outcome::Else).unwrap().id, "a2");
    assert!(flow.next(c1, Outcome::Done).is_none());
    assert!(flow.next(flow.node("a1").unwrap(), Outcome::Done).is_none());
    let refs: Vec<_> = flow
        .flow_references()
        .map(|(n, f)| (n.id.as_str(), f))
        .collect();
    assert_eq!(refs, vec![("a1", "dunning")]);
}

#[test]
fn ids_must_be_unique_and_non_empty() {
    let m = errors(
        "nodes:\n  - {id: t, type: participant_created, next: a}\n  - {id: a, type: cancel_communications}\n  - {id: a, type: cancel_communications}\n  - {id: ' ', type: cancel_communications}\n  - {id: 'x y', type: cancel_communications}\n",
    );
    assert_eq!(
        m,
        vec![
            "nodes[2].id: duplicate node id \"a\" (first at nodes[1])",
            "nodes[3].id: must not be empty",
            "nodes[4].id: \"x y\" must not contain whitespace",
            "nodes[2]: node \"a\" is not reachable from any trigger",
            "nodes[3]: node \" \" is not reachable from any trigger",
            "nodes[4]: node \"x y\" is not reachable from any trigger",
        ]
    );
}

#[test]
fn a_flow_needs_a_trigger_that_leads_somewhere() {
    assert_eq!(
        errors("nodes: []\n"),
        vec!["nodes: a flow needs at least one trigger (participant_created, participant_updated, communication_ended, communication_updated, incoming_session, from_another_flow)"]
    );
    let m = errors("nodes:\n  - {id: a, type: cancel_communications}\n");
    assert_eq!(m.len(), 2, "{m:?}");
    assert!(
        m[0].starts_with("nodes: a flow needs at least one trigger"),
        "{m:?}"
    );
    assert_eq!(
        m[1],
        "nodes[0]: node \"a\" is not reachable from any trigger"
    );
    assert_eq!(
        errors("nodes:\n  - {id: t, type: incoming_session}\n"),
        vec!["nodes[0].next: a trigger must lead to a node"]
    );
}

#[test]
fn every_trigger_type_is_indexed() {
    let mut text = String::from("nodes:\n  - {id: end, type: cancel_communications}\n");
    for t in TriggerType::ALL {
        text += &format!("  - {{id: {0}, type: {0}, next: end}}\n", t.as_str());
    }
    text += "  - {id: again, type: participant_created, next: end}\n";
    let flow = compile_yaml(&text).unwrap();
    for t in TriggerType::ALL {
        let ids: Vec<&str> = flow
            .triggers_for(t)
            .iter()
            .map(|&i| flow.get(i).id.as_str())
            .collect();
        let mut expected = vec![t.as_str()];
        if t == TriggerType::ParticipantCreated {
            expected.push("again");
        }
        assert_eq!(ids, expected);
    }
}

#[test]
fn references_must_name_nodes_and_not_triggers() {
    let m = errors(
        "nodes:\n  - {id: t, type: participant_created, next: c}\n  - {id: t2, type: from_another_flow, next: t}\n  - {id: c, type: field_check, property: participant.is_paid, operator: is_set, match: a9, else: t2}\n",
    );
    assert_eq!(
        m,
        vec![
            "nodes[1].next: leads into trigger \"t\"; triggers only start a flow",
            "nodes[2].match: unknown node \"a9\"",
            "nodes[2].else: leads into trigger \"t2\"; triggers only start a flow",
        ]
    );
}

#[test]
fn cycles_are_rejected() {
    let m = errors(
        "nodes:\n  - {id: t, type: participant_created, next: a}\n  - {id: a, type: update_field, assignments: [{property: participant.note, value: x}], next: c}\n  - {id: c, type: field_check, property: participant.is_paid, operator: eq, value: true, match: b, else: a}\n  - {id: b, type: cancel_communications, next: b}\n",
    );
    assert_eq!(
        m,
        vec![
            "nodes[2].else: closes the cycle a -> c -> a; a flow must not loop",
            "nodes[3].next: closes the cycle b -> b; a flow must not loop",
        ]
    );
}

#[test]
fn diamonds_are_not_cycles() {
    let flow = compile_yaml(
        "nodes:\n  - {id: t, type: participant_created, next: c}\n  - {id: c, type: field_check, property: participant.is_paid, operator: eq, value: true, match: a, else: b}\n  - {id: a, type: cancel_communications, next: end}\n  - {id: b, type: to_another_flow, flow: other, next: end}\n  - {id: end, type: update_field, assignments: [{property: participant.note, value: done}]}\n  - {id: t2, type: communication_ended, next: end}\n",
    );
    assert!(flow.is_ok(), "{:?}", flow.err());
}

#[test]
fn long_chains_validate_without_recursion() {
    let mut text = String::from("nodes:\n  - {id: t, type: participant_created, next: n0}\n");
    for i in 0..20_000 {
        text += &format!(
            "  - {{id: n{i}, type: cancel_communications, next: n{}}}\n",
            i + 1
        );
    }
    text += "  - {id: n20000, type: cancel_communications, next: n0}\n";
    let m = errors(&text);
    assert_eq!(m.len(), 1);
    assert!(
        m[0].starts_with("nodes[20001].next: closes the cycle n0 -> n1 -> "),
        "{}",
        &m[0][..80]
    );
}

#[test]
fn unreachable_nodes_are_named() {
    let m = errors(
        "nodes:\n  - {id: t, type: participant_created, next: a}\n  - {id: a, type: cancel_communications}\n  - {id: orphan, type: cancel_communications, next: a}\n  - {id: island1, type: cancel_communications, next: island2}\n  - {id: island2, type: cancel_communications, next: island1}\n",
    );
    assert!(
        m.contains(&"nodes[2]: node \"orphan\" is not reachable from any trigger".to_string()),
        "{m:?}"
    );
    assert!(
        m.contains(&"nodes[3]: node \"island1\" is not reachable from any trigger".to_string()),
        "{m:?}"
    );
    assert!(
        m.contains(&"nodes[4]: node \"island2\" is not reachable from any trigger".to_string()),
        "{m:?}"
    );
    assert!(m.iter().any(|e| e.starts_with("nodes[4].next: closes the cycle island1 -> island2 -> island1")), "{m:?}");
}

#[test]
fn fields_of_other_node_types_are_rejected() {
    assert_eq!(
        errors("nodes:\n  - {id: t, type: participant_created, next: a, match: a, url: 'http://x'}\n  - {id: a, type: cancel_communications, flow: x}\n"),
        vec![
            "nodes[0].match: not used by participant_created nodes",
            "nodes[0].url: not used by participant_created nodes",
            "nodes[1].flow: not used by cancel_communications nodes",
        ]
    );
    assert_eq!(
        node_errors("    type: field_check\n    property: participant.is_paid\n    operator: is_set\n    next: t\n"),
        vec!["nodes[1].next: not used by field_check nodes"]
    );
}

// field_check

#[test]
fn field_check_needs_property_and_operator() {
    assert_eq!(
        node_errors("    type: field_check\n"),
        vec![
            "nodes[1].property: is required for field_check",
            "nodes[1].operator: is required for field_check",
        ]
    );
}

#[test]
fn field_check_properties() {
    let check = |property: &str| {
        node_errors(&format!(
            "    type: field_check\n    property: {property}\n    operator: is_set\n"
        ))
    };
    assert_eq!(
        check("due_date"),
        vec!["nodes[1].property: \"due_date\" must start with customer., participant. or result."]
    );
    assert_eq!(
        check("participant.nope"),
        vec!["nodes[1].property: unknown property \"participant.nope\""]
    );
    assert_eq!(
        check("customer.due_date"),
        vec!["nodes[1].property: unknown property \"customer.due_date\""]
    );
    // Results are free-form.
    let flow = compile_yaml(&around(
        "    type: field_check\n    property: result.anything_at_all\n    operator: is_set\n",
    ))
    .unwrap();
    let NodeKind::FieldCheck(c) = &flow.node("n").unwrap().kind else {
        panic!()
    };
    assert_eq!(c.property.scope, Scope::Result);
    assert_eq!(c.operand, Operand::None);
}

fn operand(property: &str, operator: &str, rest: &str) -> Result<Operand, Vec<String>> {
    let text = around(&format!(
        "    type: field_check\n    property: {property}\n    operator: {operator}\n{rest}"
    ));
    match compile_yaml(&text) {
        Ok(flow) => match &flow.node("n").unwrap().kind {
            NodeKind::FieldCheck(c) => Ok(c.operand.clone()),
            other => panic!("{other:?}"),
        },
        Err(e) => Err(e.0.iter().map(ToString::to_string).collect()),
    }
}

fn one_error(property: &str, operator: &str, rest: &str) -> String {
    match operand(property, operator, rest) {
        Ok(o) => panic!("{property} {operator} {rest}: compiled to {o:?}"),
        Err(mut e) => {
            assert_eq!(e.len(), 1, "{e:?}");
            e.remove(0)
        }
    }
}

#[test]
fn operators_by_kind() {
    assert_eq!(
        one_error("participant.is_paid", "gt", "    value: true\n"),
        "nodes[1].operator: gt does not apply to bool property \"participant.is_paid\" (use eq, ne, is_set, is_not_set)"
    );
    assert_eq!(
        one_error("participant.status", "lt", "    value: b\n"),
        "nodes[1].operator: lt does not apply to string property \"participant.status\" (use eq, ne, contains, in, is_set, is_not_set)"
    );
    assert_eq!(
        one_error("participant.amount", "contains", "    value: 1\n"),
        "nodes[1].operator: contains does not apply to number property \"participant.amount\" (use eq, ne, gt, ge, lt, le, in, is_set, is_not_set)"
    );
    assert!(
        one_error("participant.due_date", "in", "    value: [today]\n")
            .starts_with("nodes[1].operator: in does not apply to date property")
    );
    assert_eq!(
        operand("participant.amount", "ge", "    value: 10.5\n"),
        Ok(Operand::Number(serde_json::Number::from_f64(10.5).unwrap()))
    );
    assert_eq!(
        operand("participant.status", "contains", "    value: late\n"),
        Ok(Operand::Text("late".into()))
    );
}

#[test]
fn values_must_match_the_kind() {
    assert_eq!(
        one_error("participant.is_paid", "eq", "    value: 'false'\n"),
        "nodes[1].value: expected a bool"
    );
    assert_eq!(
        one_error("participant.amount", "eq", "    value: '10'\n"),
        "nodes[1].value: expected a number"
    );
    assert_eq!(
        one_error("participant.status", "eq", "    value: 3\n"),
        "nodes[1].value: expected a string"
    );
    assert_eq!(
        one_error("participant.due_date", "ge", "    value: 2026-6-1\n"),
        "nodes[1].value: expected \"today\" or a date YYYY-MM-DD"
    );
    assert_eq!(
        one_error(
            "participant.due_date",
            "ge",
            "    value: '2026-06-01T10:00:00Z'\n"
        ),
        "nodes[1].value: expected \"today\" or a date YYYY-MM-DD"
    );
    assert_eq!(
        one_error("participant.called_at", "ge", "    value: yesterday\n"),
        "nodes[1].value: expected \"today\", a date YYYY-MM-DD or an RFC 3339 datetime"
    );
    assert_eq!(
        one_error("result.score", "gt", "    value: high\n"),
        "nodes[1].value: expected a number, \"today\", a date YYYY-MM-DD or an RFC 3339 datetime"
    );
    assert_eq!(
        one_error("result.tags", "contains", "    value: [a]\n"),
        "nodes[1].value: expected a string, number or bool"
    );
}

#[test]
fn value_presence_by_operator() {
    assert_eq!(
        one_error("participant.status", "eq", ""),
        "nodes[1].value: is required for eq (use is_set / is_not_set to test for a missing value)"
    );
    assert_eq!(
        one_error("participant.status", "ne", "    value: null\n"),
        "nodes[1].value: is required for ne (use is_set / is_not_set to test for a missing value)"
    );
    assert_eq!(
        operand(
            "participant.status",
            "is_set",
            "    value: x\n    days: 1\n"
        ),
        Err(vec![
            "nodes[1].value: not used with is_set".to_string(),
            "nodes[1].days: not used with is_set".to_string(),
        ])
    );
    assert_eq!(
        one_error("participant.status", "in", "    value: []\n"),
        "nodes[1].value: in needs a non-empty array"
    );
    assert_eq!(
        one_error("participant.status", "in", "    value: gold\n"),
        "nodes[1].value: in needs a non-empty array"
    );
    assert_eq!(
        operand(
            "participant.status",
            "in",
            "    value: [gold, 1, silver, true]\n"
        ),
        Err(vec![
            "nodes[1].value[1]: expected a string".to_string(),
            "nodes[1].value[3]: expected a string".to_string(),
        ])
    );
    assert_eq!(
        operand("participant.amount", "in", "    value: [1, 2.5]\n"),
        Ok(Operand::List(vec![
            Operand::Number(1.into()),
            Operand::Number(serde_json::Number::from_f64(2.5).unwrap())
        ]))
    );
    assert_eq!(
        operand("result.answer", "in", "    value: [yes, 1, true]\n"),
        Ok(Operand::List(vec![
            Operand::Text("yes".into()),
            Operand::Number(1.into()),
            Operand::Bool(true)
        ]))
    );
    assert_eq!(
        one_error("participant.amount", "in", "    value: [1]\n    days: 2\n"),
        "nodes[1].days: not used with in"
    );
}

#[test]
fn dates_relative_to_today_and_fixed() {
    assert_eq!(
        operand("participant.due_date", "ge", "    value: today\n"),
        Ok(Operand::Date(DateOperand::Today(0)))
    );
    assert_eq!(
        operand(
            "participant.due_date",
            "lt",
            "    value: today\n    days: -7\n"
        ),
        Ok(Operand::Date(DateOperand::Today(-7)))
    );
    assert_eq!(
        operand(
            "participant.called_at",
            "eq",
            "    value: today\n    days: 1\n"
        ),
        Ok(Operand::Date(DateOperand::Today(1)))
    );
    assert_eq!(
        operand("result.callback", "le", "    value: today\n    days: 2\n"),
        Ok(Operand::Date(DateOperand::Today(2)))
    );
    assert_eq!(
        operand("participant.due_date", "eq", "    value: '2026-06-30'\n"),
        Ok(Operand::Date(DateOperand::Fixed(date("2026-06-30"))))
    );
    assert!(matches!(
        operand(
            "participant.called_at",
            "ge",
            "    value: '2026-06-30T09:00:00+02:00'\n"
        ),
        Ok(Operand::Instant(_))
    ));
    assert_eq!(
        operand("participant.called_at", "ge", "    value: '2026-06-30'\n"),
        Ok(Operand::Date(DateOperand::Fixed(date("2026-06-30"))))
    );
    // "today" on a string property is just the word.
    assert_eq!(
        operand("participant.status", "eq", "    value: today\n"),
        Ok(Operand::Text("today".into()))
    );
    assert_eq!(
        one_error(
            "participant.status",
            "eq",
            "    value: today\n    days: 1\n"
        ),
        "nodes[1].days: only applies with value \"today\" on a date, datetime or result property"
    );
    assert_eq!(
        one_error(
            "participant.due_date",
            "eq",
            "    value: '2026-06-30'\n    days: 1\n"
        ),
        "nodes[1].days: only applies with value \"today\" on a date, datetime or result property"
    );
    assert_eq!(
        one_error(
            "participant.due_date",
            "ge",
            "    value: today\n    days: 40000\n"
        ),
        "nodes[1].days: must be between -36500 and 36500"
    );
    assert_eq!(
        one_error("result.note", "contains", "    value: today\n"),
        "nodes[1].value: \"today\" does not apply to contains"
    );
}

// start_communication

/// A valid telegram start_communication with `extra` lines added (a `duration` there
/// replaces the default one).
fn communication(extra: &str) -> String {
    let duration = if extra.contains("duration:") {
        ""
    } else {
        "    duration: '01:00'\n"
    };
    format!(
        "    type: start_communication\n    name: HELLO\n    channel: telegram\n    agent_id: {AGENT}\n    connection_id: {CONNECTION}\n{duration}{extra}"
    )
}

fn compiled_communication(extra: &str) -> crate::flow::Communication {
    let flow = compile_yaml(&around(&communication(extra))).expect("valid");
    match &flow.node("n").unwrap().kind {
        NodeKind::StartCommunication(c) => c.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn start_communication_required_fields() {
    assert_eq!(
        node_errors("    type: start_communication\n"),
        vec![
            "nodes[1].name: is required for start_communication",
            "nodes[1].channel: is required for start_communication",
            "nodes[1].agent_id: is required for start_communication",
            "nodes[1].duration: is required for start_communication",
        ]
    );
    let c = compiled_communication("");
    assert_eq!(c.schedule.base, BaseDate::Today);
    assert_eq!(c.schedule.offset, TimeDelta::zero());
    assert_eq!(c.schedule.window, None);
    assert!(c.context.is_empty() && c.start_phrase.is_none() && c.template.is_none());
}

#[test]
fn start_communication_names_and_ids() {
    let bad = around(
        &communication("")
            .replace("name: HELLO", "name: Hello")
            .replace(AGENT, "agent-7")
            .replace(CONNECTION, "0190f5a4"),
    );
    assert_eq!(
        errors(&bad),
        vec![
            "nodes[1].name: \"Hello\" is not UPPER_SNAKE (A-Z, 0-9, _; starting with a letter)",
            "nodes[1].agent_id: \"agent-7\" is not a UUID",
            "nodes[1].connection_id: \"0190f5a4\" is not a UUID",
        ]
    );
    let twice = format!(
        "nodes:\n  - {{id: t, type: participant_created, next: a}}\n  - id: a\n{}    next: b\n  - id: b\n{}",
        communication(""),
        communication("")
    );
    assert_eq!(
        errors(&twice),
        vec!["nodes[2].name: duplicate communication name \"HELLO\" (first at nodes[1])"]
    );
}

#[test]
fn channel_requirements() {
    let whatsapp = around(&communication("").replace("telegram", "whatsapp"));
    assert_eq!(
        errors(&whatsapp),
        vec!["nodes[1].template: is required for channel whatsapp (WhatsApp starts conversations only with an approved template)"]
    );
    assert_eq!(
        node_errors(&communication("    template: {name: t, language: en}\n")),
        vec!["nodes[1].template: not used by channel telegram"]
    );
    assert_eq!(
        node_errors(&communication("").replace("telegram", "chat")),
        vec!["nodes[1].connection_id: not used by channel chat"]
    );
    let chat = communication("")
        .replace("telegram", "chat")
        .replace(&format!("    connection_id: {CONNECTION}\n"), "");
    let flow = compile_yaml(&around(&chat)).expect("chat needs no connection");
    let NodeKind::StartCommunication(c) = &flow.node("n").unwrap().kind else {
        panic!()
    };
    assert_eq!((c.channel, c.connection_id), (Channel::Chat, None));
    let webhook = communication("")
        .replace("telegram", "webhook")
        .replace(&format!("    connection_id: {CONNECTION}\n"), "");
    assert_eq!(
        node_errors(&webhook),
        vec!["nodes[1].connection_id: is required for channel webhook"]
    );
    assert_eq!(
        node_errors(
            &communication("    template: {name: ' ', language: '', components: [{type: body, text: '{{ nope }}'}]}\n")
                .replace("telegram", "whatsapp")
        ),
        vec![
            "nodes[1].template.name: must not be empty",
            "nodes[1].template.language: must not be empty",
            "nodes[1].template.components[0]: unknown attribute \"nope\" in {{ nope }}",
        ]
    );
}

#[test]
fn schedule_fields() {
    let c = compiled_communication(
        "    date: participant.called_at\n    days: 1\n    minutes: -30\n    from: '22:00'\n    to: '06:00'\n    duration: '30:15'\n",
    );
    assert_eq!(
        c.schedule.base,
        BaseDate::Property(Property::parse("participant.called_at").unwrap())
    );
    assert_eq!(c.schedule.offset, TimeDelta::minutes(24 * 60 - 30));
    let w = c.schedule.window.unwrap();
    assert!(w.from > w.to, "across midnight");
    assert_eq!(c.schedule.duration, TimeDelta::minutes(30 * 60 + 15));
    assert_eq!(
        compiled_communication("    date: result.callback_on\n")
            .schedule
            .base,
        BaseDate::Property(Property::parse("result.callback_on").unwrap())
    );

    let with = |extra: &str| node_errors(&communication(extra));
    assert_eq!(
        with("    duration: '1h'\n    date: participant.status\n"),
        vec![
            "nodes[1].date: \"participant.status\" is a string property; expected \"today\" or a date or datetime property",
            "nodes[1].duration: \"1h\" is not in HH:MM form",
        ]
    );
    assert_eq!(
        with("    duration: '00:00'\n    date: due_date\n"),
        vec![
            "nodes[1].date: \"due_date\" must start with customer., participant. or result.",
            "nodes[1].duration: \"00:00\" is an empty duration",
        ]
    );
    assert_eq!(
        node_errors(&communication("    from: '9:0'\n    to: '24:00'\n")),
        vec![
            "nodes[1].from: \"9:0\" is not in HH:MM form",
            "nodes[1].to: \"24:00\" is not a time of day (hours go up to 23; use 00:00 for midnight)",
        ]
    );
    assert_eq!(
        node_errors(&communication("    from: '09:00'\n")),
        vec!["nodes[1].to: is required with from"]
    );
    assert_eq!(
        node_errors(&communication("    to: '09:00'\n")),
        vec!["nodes[1].from: is required with to"]
    );
    assert_eq!(
        node_errors(&communication("    from: '09:00'\n    to: '09:00'\n")),
        vec!["nodes[1].to: must differ from from (omit both for any time of day)"]
    );
    assert_eq!(
        node_errors(&communication("    days: -40000\n    minutes: 99999999\n")),
        vec![
            "nodes[1].days: must be between -36500 and 36500",
            "nodes[1].minutes: must be between -52560000 and 52560000",
        ]
    );
}

#[test]
fn start_phrase_and_context() {
    let c = compiled_communication(
        "    start_phrase: 'Hi {{ name }} {{customer.phone}} {{ amount }} {{ result.anything }}'\n    context: [participant.amount, customer.score]\n",
    );
    assert_eq!(
        c.context,
        vec![
            Property::parse("participant.amount").unwrap(),
            Property::parse("customer.score").unwrap()
        ]
    );
    assert_eq!(
        node_errors(&communication(
            "    start_phrase: '{{ nope }} {{participant.phone}} {{ name'\n    context: [participant.amount, result.x, amount, participant.amount]\n"
        )),
        vec![
            "nodes[1].start_phrase: unknown attribute \"nope\" in {{ nope }}",
            "nodes[1].start_phrase: unknown attribute \"participant.phone\" in {{ participant.phone }}",
            "nodes[1].context[1]: \"result.x\" is a communication result; only customer. and participant. properties are allowed here",
            "nodes[1].context[2]: \"amount\" must start with customer. or participant.",
            "nodes[1].context[3]: \"participant.amount\" listed twice (first at context[0])",
        ]
    );
}

// update_field, to_another_flow, http_action

#[test]
fn update_field_assignments() {
    let flow = compile_yaml(&around(
        "    type: update_field\n    assignments:\n      - {property: participant.status, value: reminded}\n      - {property: participant.note, value: null}\n      - {property: customer.score, from_property: participant.amount}\n      - {property: participant.due_date, value: '2026-07-01'}\n      - {property: participant.amount, from_property: result.amount}\n",
    ))
    .expect("valid");
    let NodeKind::UpdateField(a) = &flow.node("n").unwrap().kind else {
        panic!()
    };
    assert_eq!(a.len(), 5);
    assert_eq!(a[0].source, Source::Value(json!("reminded")));
    assert_eq!(a[1].source, Source::Value(Value::Null));
    assert_eq!(
        a[2].source,
        Source::Property(Property::parse("participant.amount").unwrap())
    );

    assert_eq!(
        node_errors("    type: update_field\n"),
        vec!["nodes[1].assignments: is required for update_field"]
    );
    assert_eq!(
        node_errors("    type: update_field\n    assignments: []\n"),
        vec!["nodes[1].assignments: needs at least one assignment"]
    );
    assert_eq!(
        node_errors(
            "    type: update_field\n    assignments:\n      - {property: result.x, value: 1}\n      - {property: participant.status}\n      - {property: participant.note, value: a, from_property: customer.name}\n      - {property: participant.amount, value: '12'}\n      - {property: participant.due_date, value: '2026-07-01T00:00:00Z'}\n      - {property: participant.status, from_property: participant.amount}\n      - {property: participant.called_at, from_property: customer.nope}\n      - {property: participant.is_paid, value: true}\n      - {property: participant.is_paid, value: false}\n"
        ),
        vec![
            "nodes[1].assignments[0].property: \"result.x\" is a communication result; only customer. and participant. properties are allowed here",
            "nodes[1].assignments[1]: needs value or from_property",
            "nodes[1].assignments[2]: value and from_property exclude each other",
            "nodes[1].assignments[3].value: expected a number for \"participant.amount\" (or null to clear it)",
            "nodes[1].assignments[4].value: expected a date YYYY-MM-DD for \"participant.due_date\" (or null to clear it)",
            "nodes[1].assignments[5].property: \"participant.status\" is assigned twice (first at assignments[1])",
            "nodes[1].assignments[5].from_property: \"participant.amount\" is a number property but \"participant.status\" is a string property",
            "nodes[1].assignments[6].from_property: unknown property \"customer.nope\"",
            "nodes[1].assignments[8].property: \"participant.is_paid\" is assigned twice (first at assignments[7])",
        ]
    );
}

#[test]
fn to_another_flow_needs_a_flow() {
    assert_eq!(
        node_errors("    type: to_another_flow\n"),
        vec!["nodes[1].flow: is required for to_another_flow"]
    );
    assert_eq!(
        node_errors("    type: to_another_flow\n    flow: ' '\n"),
        vec!["nodes[1].flow: must not be empty"]
    );
}

#[test]
fn http_action_url_and_writes() {
    let flow = compile_yaml(&around(
        "    type: http_action\n    url: https://crm.example/score\n    params: {source: parley, weight: 2}\n    writes:\n      - {from: /data/score, property: customer.score}\n      - {from: '', property: participant.note}\n",
    ))
    .expect("valid");
    let NodeKind::HttpAction(h) = &flow.node("n").unwrap().kind else {
        panic!()
    };
    assert_eq!(h.url, "https://crm.example/score");
    assert_eq!(h.params["weight"], json!(2));
    assert_eq!(
        h.writes,
        vec![
            (
                "/data/score".to_string(),
                Property::parse("customer.score").unwrap()
            ),
            (String::new(), Property::parse("participant.note").unwrap()),
        ]
    );
    let flow = compile_yaml(&around("    type: http_action\n    url: http://x\n")).unwrap();
    let NodeKind::HttpAction(h) = &flow.node("n").unwrap().kind else {
        panic!()
    };
    assert!(h.params.is_empty() && h.writes.is_empty());

    assert_eq!(
        node_errors("    type: http_action\n"),
        vec!["nodes[1].url: is required for http_action"]
    );
    for url in ["ftp://x", "https://", "http:///path", "example.com"] {
        assert_eq!(
            node_errors(&format!("    type: http_action\n    url: '{url}'\n")),
            vec![format!("nodes[1].url: {url:?} is not an http(s) URL")]
        );
    }
    assert_eq!(
        node_errors(
            "    type: http_action\n    url: http://x\n    writes:\n      - {from: data, property: customer.score}\n      - {from: /a, property: result.score}\n      - {from: /b, property: customer.score}\n"
        ),
        vec![
            "nodes[1].writes[0].from: \"data\" is not a JSON pointer (like /data/score, or \"\" for the whole body)",
            "nodes[1].writes[1].property: \"result.score\" is a communication result; only customer. and participant. properties are allowed here",
            "nodes[1].writes[2].property: \"customer.score\" is written twice (first at writes[0])",
        ]
    );
}

#[test]
fn reports_every_problem_at_once() {
    let bad = PAYMENT_REMINDER
        .replace("operator: eq", "operator: gt")
        .replace("name: REMINDED_DUE_DATE", "name: REMINDED_BEFORE_2D")
        .replace("match: remind_due", "match: remind_later")
        .replace("else: stop", "else: created");
    let m = errors(&bad);
    assert_eq!(
        m,
        vec![
            "nodes[1].operator: gt does not apply to bool property \"participant.is_payment_received\" (use eq, ne, is_set, is_not_set)",
            "nodes[5].name: duplicate communication name \"REMINDED_BEFORE_2D\" (first at nodes[4])",
            "nodes[1].else: leads into trigger \"created\"; triggers only start a flow",
            "nodes[3].match: unknown node \"remind_later\"",
            "nodes[5]: node \"remind_due\" is not reachable from any trigger",
            "nodes[6]: node \"stop\" is not reachable from any trigger",
        ]
    );
}
