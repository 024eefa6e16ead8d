//! Property tests for what callers write: agent definitions (YAML and JSON), campaign flows
//! and CSV uploads. Valid documents are mutated with hostile values (huge and negative
//! numbers, NUL and control characters, deep nesting, YAML anchors, wrong types) and fed
//! to the same parsers the API uses. Each must answer a result, never panic; proptest
//! reports any panic as a failure with the smallest input that caused it.

use chrono_tz::Tz;
use parley_engine::agent::{parse_and_compile, Format};
use parley_engine::campaign::{CsvImport, DataField, FieldLevel, FieldType};
use parley_engine::flow::{parse_and_validate, ValueKind};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Cases per property: enough to walk every mutation point several times, few enough for
/// the test suite (a couple of seconds each).
const CASES: u32 = 256;

fn base_agent() -> Value {
    json!({
        "name": "Support",
        "greeting": "Hi",
        "session": {"max_duration": 3600, "user_timeout": 600, "daily_limit": 10},
        "workflow": [
            {"name": "Main", "init_state": true, "description": "Answer.",
             "available_tools": ["SendChatMessage", "ChangeState", "FinishSession"],
             "transitions": [{"to": "Human", "when_keywords": ["human"]}]},
            {"name": "Human", "available_tools": ["SendChatMessage"], "transitions": ["Main"]}
        ],
        "conversation_results": [{"field_name": "Email", "field_type": "email"}],
        "knowledge": {"faq": [{"question": "Hours?", "answer": "9 to 5"}]},
        "llm": [{"name": "main", "kind": "openai", "base_url": "https://llm.example/v1",
                 "model": "m", "api_key": "sk-x", "weight": 1, "timeout_secs": 30}]
    })
}

fn base_flow() -> Value {
    json!({"nodes": [
        {"id": "created", "type": "participant_created", "next": "check"},
        {"id": "check", "type": "field_check", "property": "participant.due",
         "operator": "ge", "value": "today", "days": 3, "match": "talk", "else": "update"},
        {"id": "talk", "type": "start_communication", "name": "HELLO", "channel": "chat",
         "agent_id": "0190f1d2-0000-7000-8000-000000000001", "duration": "04:00",
         "from": "09:00", "to": "20:00", "days": -2, "date": "participant.due",
         "start_phrase": "Hello {{ name }}"},
        {"id": "update", "type": "update_field",
         "assignments": [{"property": "participant.note", "value": "x"}]}
    ]})
}

/// Values no well-behaved caller sends.
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(100_000_000_000_000u64)),
        Just(json!(-1)),
        Just(json!(0)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
        "[\\x00-\\x1f\"'{}\\[\\]:&*!|>-]{0,16}".prop_map(Value::from),
        Just(json!("a\u{0}b")),
        Just(json!("\u{202e}rtl\u{202c} and 😀")),
        Just(json!("99999999:99")),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every place in `v` a value can be replaced at, as JSON pointers.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                pointers(c, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                pointers(c, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// `base` with up to three of its values (or its root) replaced.
fn mutated(base: Value) -> impl Strategy<Value = Value> {
    let mut points = Vec::new();
    pointers(&base, String::new(), &mut points);
    prop::collection::vec((prop::sample::select(points), hostile_value()), 1..4).prop_map(
        move |changes| {
            let mut doc = base.clone();
            for (pointer, value) in changes {
                if pointer.is_empty() {
                    doc = value;
                } else if let Some(slot) = doc.pointer_mut(&pointer) {
                    *slot = value;
                }
            }
            doc
        },
    )
}

/// A document as a caller may send it: JSON, YAML, or YAML with anchors and aliases.
fn as_text(doc: &Value, style: u8) -> (String, Format) {
    match style % 3 {
        0 => (doc.to_string(), Format::Json),
        1 => (serde_yaml::to_string(doc).unwrap_or_default(), Format::Yaml),
        _ => (
            format!(
                "a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\n{}",
                serde_yaml::to_string(doc).unwrap_or_default()
            ),
            Format::Yaml,
        ),
    }
}

proptest! {
    // No regression files written next to the sources (CI runs on a clean checkout).
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn agent_definitions_never_panic(doc in mutated(base_agent()), style in any::<u8>()) {
        let (text, format) = as_text(&doc, style);
        let _ = parse_and_compile(&text, format);
    }

    #[test]
    fn arbitrary_text_as_an_agent_definition_never_panics(text in "\\PC{0,400}", yaml in any::<bool>()) {
        let format = if yaml { Format::Yaml } else { Format::Json };
        let _ = parse_and_compile(&text, format);
    }

    #[test]
    fn deeply_nested_definitions_are_refused_not_overflowed(depth in 50usize..5000) {
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        prop_assert!(parse_and_compile(&text, Format::Json).is_err());
        let yaml = format!("{}x{}", "[".repeat(depth), "]".repeat(depth));
        prop_assert!(parse_and_compile(&yaml, Format::Yaml).is_err());
    }

    #[test]
    fn flows_never_panic(doc in mutated(base_flow()), style in any::<u8>()) {
        let (text, format) = as_text(&doc, style);
        let schema = |p: &str| match p {
            "participant.due" => Some(ValueKind::Date),
            p if p.starts_with("participant.") || p.starts_with("customer.") => Some(ValueKind::String),
            _ => None,
        };
        let _ = parse_and_validate(&text, format, &schema);
    }

    #[test]
    fn csv_rows_never_panic(
        header in prop::sample::subsequence(vec!["external_id", "name", "due", "amount", "timezone", "object_id", "bogus"], 0..7),
        rows in prop::collection::vec(prop::collection::vec("[^\\r]{0,12}|\"[^\"]{0,8}|[\\x00-\\x7f]{0,6}", 0..9), 0..20),
        bom in any::<bool>(),
    ) {
        let mut csv = if bom { "\u{feff}".to_string() } else { String::new() };
        csv.push_str(&header.join(","));
        for row in &rows {
            csv.push('\n');
            csv.push_str(&row.join(","));
        }
        let fields = vec![
            field("external_id", FieldType::String, FieldLevel::CustomerProfile, false),
            field("name", FieldType::String, FieldLevel::CustomerProfile, false),
            field("due", FieldType::Date, FieldLevel::Participant, true),
            field("amount", FieldType::Float, FieldLevel::Participant, false),
        ];
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let read = rt.block_on(async {
            let mut import = match CsvImport::open(csv.as_bytes(), &fields, Tz::UTC).await {
                Ok(i) => i,
                Err(_) => return 0,
            };
            let mut n = 0;
            while let Ok(Some(_)) = import.next_row().await {
                n += 1;
            }
            n
        });
        // Each record is read once: no row is produced out of nothing.
        prop_assert!(read <= csv.matches(['\n', '\r']).count());
    }
}

fn field(name: &str, field_type: FieldType, level: FieldLevel, required: bool) -> DataField {
    DataField {
        title: name.to_string(),
        name: name.to_string(),
        description: String::new(),
        field_type,
        level,
        import: true,
        required,
    }
}
