//! Evaluating field_check conditions against a participant's data.
//!
//! Semantics, chosen so that a participant with incomplete data never matches by accident:
//! - An attribute that is missing, `null` or `""` is *not set*: `is_set` is false,
//!   `is_not_set` true, and every comparison is false, `ne` included. `ne` is therefore
//!   not the negation of `eq`; route missing data with `is_not_set` or the else port.
//! - An attribute that cannot be read as the operand's type (text where a number is
//!   expected, an unparsable date) makes every comparison false, `ne` included.
//! - Numbers compare numerically, integers exactly; a numeric string attribute (from a
//!   CSV import or a conversation result) is read as a number. Booleans accept `true` /
//!   `false` and those two strings.
//! - Text compares case-sensitively; `contains` is a substring test on text and a
//!   membership test on arrays.
//! - Dates are `YYYY-MM-DD`; a datetime attribute (RFC 3339, or without offset) compared
//!   with a date or with today±N counts by its calendar date as written, in its own offset.
//!   Datetimes compared with a datetime operand compare as instants.

use std::cmp::Ordering;

use chrono::{DateTime, Days, FixedOffset, NaiveDate, NaiveDateTime};
use serde_json::{Map, Number, Value};

use super::compiled::{Condition, DateOperand, Operand, Property, Scope};
use super::definition::Operator;
use super::template::render;

/// The data a condition reads. `today` is the current date in the participant's timezone,
/// else the tenant's.
#[derive(Debug, Clone, Copy)]
pub struct EvalContext<'a> {
    pub customer: &'a Map<String, Value>,
    pub participant: &'a Map<String, Value>,
    /// The results of the participant's last communication.
    pub result: &'a Map<String, Value>,
    pub today: NaiveDate,
}

impl<'a> EvalContext<'a> {
    /// The property's value if it is set (present, not `null`, not `""`).
    pub fn get(&self, property: &Property) -> Option<&'a Value> {
        let map = match property.scope {
            Scope::Customer => self.customer,
            Scope::Participant => self.participant,
            Scope::Result => self.result,
        };
        map.get(&property.name).filter(|v| is_set(v))
    }

    /// A template attribute: a property path, or a bare name looked up on the participant,
    /// then the customer.
    pub fn attribute(&self, name: &str) -> Option<&'a Value> {
        match Property::parse(name) {
            Some(p) => self.get(&p),
            None => [self.participant, self.customer]
                .into_iter()
                .find_map(|m| m.get(name).filter(|v| is_set(v))),
        }
    }

    /// Renders `{{ attribute }}` placeholders with this context's data.
    pub fn render(&self, text: &str) -> String {
        render(text, |name| self.attribute(name).map(display))
    }
}

fn is_set(v: &Value) -> bool {
    !(v.is_null() || v.as_str() == Some(""))
}

/// How a value reads in text: strings as they are, everything else as JSON.
pub fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `cond` holds for the participant in `ctx`.
pub fn check(cond: &Condition, ctx: &EvalContext<'_>) -> bool {
    let value = ctx.get(&cond.property);
    let Some(value) = value else {
        return cond.operator == Operator::IsNotSet;
    };
    let ordering = || compare(value, &cond.operand, ctx.today);
    match cond.operator {
        Operator::IsSet => true,
        Operator::IsNotSet => false,
        Operator::Eq => ordering() == Some(Ordering::Equal),
        Operator::Ne => ordering().is_some_and(Ordering::is_ne),
        Operator::Gt => ordering().is_some_and(Ordering::is_gt),
        Operator::Ge => ordering().is_some_and(Ordering::is_ge),
        Operator::Lt => ordering().is_some_and(Ordering::is_lt),
        Operator::Le => ordering().is_some_and(Ordering::is_le),
        Operator::In => match &cond.operand {
            Operand::List(items) => items
                .iter()
                .any(|item| compare(value, item, ctx.today) == Some(Ordering::Equal)),
            _ => false,
        },
        Operator::Contains => contains(value, &cond.operand, ctx.today),
    }
}

fn contains(value: &Value, operand: &Operand, today: NaiveDate) -> bool {
    match (value, operand) {
        (Value::String(s), Operand::Text(t)) => s.contains(t.as_str()),
        (Value::Array(items), _) => items
            .iter()
            .any(|item| compare(item, operand, today) == Some(Ordering::Equal)),
        _ => false,
    }
}

/// `value` against `operand`; `None` when they cannot be compared.
fn compare(value: &Value, operand: &Operand, today: NaiveDate) -> Option<Ordering> {
    match operand {
        Operand::Text(t) => value.as_str().map(|s| s.cmp(t.as_str())),
        Operand::Number(n) => compare_numbers(&read_number(value)?, n),
        Operand::Bool(b) => read_bool(value).map(|v| v.cmp(b)),
        Operand::Date(d) => {
            let target = match *d {
                DateOperand::Fixed(date) => date,
                DateOperand::Today(days) => add_days(today, days)?,
            };
            Some(read_date(value)?.cmp(&target))
        }
        Operand::Instant(t) => match read_datetime(value) {
            Some(v) => Some(v.cmp(t)),
            // A date-only attribute against an instant: by calendar date.
            None => Some(read_date(value)?.cmp(&t.date_naive())),
        },
        Operand::None | Operand::List(_) => None,
    }
}

fn add_days(date: NaiveDate, days: i64) -> Option<NaiveDate> {
    let n = Days::new(days.unsigned_abs());
    if days >= 0 {
        date.checked_add_days(n)
    } else {
        date.checked_sub_days(n)
    }
}

fn read_number(value: &Value) -> Option<Number> {
    match value {
        Value::Number(n) => Some(n.clone()),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .map(Number::from)
                .or_else(|| s.parse::<f64>().ok().and_then(Number::from_f64))
        }
        _ => None,
    }
}

fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

fn read_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

/// `YYYY-MM-DD`, or the calendar date of a datetime.
fn read_date(value: &Value) -> Option<NaiveDate> {
    let s = value.as_str()?.trim();
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .or_else(|| read_datetime(value).map(|t| t.date_naive()))
        .or_else(|| parse_naive_datetime(s).map(|t| t.date()))
}

/// An RFC 3339 datetime.
pub(super) fn read_datetime(value: &Value) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(value.as_str()?.trim()).ok()
}

fn parse_naive_datetime(s: &str) -> Option<NaiveDateTime> {
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ]
    .into_iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn cond(property: &str, operator: Operator, operand: Operand) -> Condition {
        Condition {
            property: Property::parse(property).unwrap(),
            operator,
            operand,
        }
    }

    /// Checks `operator operand` against `participant.x` holding `value` (absent if None).
    fn holds(value: Option<Value>, operator: Operator, operand: Operand) -> bool {
        let mut participant = Map::new();
        if let Some(v) = value {
            participant.insert("x".into(), v);
        }
        let empty = Map::new();
        let ctx = EvalContext {
            customer: &empty,
            participant: &participant,
            result: &empty,
            today: date("2026-06-10"),
        };
        check(&cond("participant.x", operator, operand), &ctx)
    }

    fn num(v: Value) -> Operand {
        match v {
            Value::Number(n) => Operand::Number(n),
            _ => unreachable!(),
        }
    }

    fn text(s: &str) -> Operand {
        Operand::Text(s.into())
    }

    #[test]
    fn missing_null_and_empty_are_not_set() {
        for v in [None, Some(Value::Null), Some(json!(""))] {
            assert!(!holds(v.clone(), Operator::IsSet, Operand::None), "{v:?}");
            assert!(holds(v.clone(), Operator::IsNotSet, Operand::None), "{v:?}");
            for op in [
                Operator::Eq,
                Operator::Ne,
                Operator::Gt,
                Operator::Ge,
                Operator::Lt,
                Operator::Le,
                Operator::Contains,
            ] {
                assert!(!holds(v.clone(), op, text("a")), "{v:?} {op:?}");
                assert!(!holds(v.clone(), op, num(json!(0))), "{v:?} {op:?}");
            }
            assert!(!holds(
                v.clone(),
                Operator::In,
                Operand::List(vec![text("")])
            ));
        }
        for v in [json!(0), json!(false), json!(" "), json!([]), json!({})] {
            assert!(
                holds(Some(v.clone()), Operator::IsSet, Operand::None),
                "{v}"
            );
            assert!(!holds(Some(v), Operator::IsNotSet, Operand::None));
        }
    }

    #[test]
    fn numbers_compare_numerically() {
        let x = |v: Value, op, o: Value| holds(Some(v), op, num(o));
        assert!(x(json!(3), Operator::Eq, json!(3.0)));
        assert!(x(json!(10), Operator::Gt, json!(9.5)));
        assert!(x(json!(-1), Operator::Lt, json!(0)));
        assert!(x(json!(2.5), Operator::Ge, json!(2.5)));
        assert!(x(json!(2.5), Operator::Le, json!(3)));
        assert!(x(json!(2), Operator::Ne, json!(3)));
        assert!(!x(json!(2), Operator::Ne, json!(2)));
        // Integers beyond f64's precision stay exact.
        assert!(x(
            json!(9_007_199_254_740_993_i64),
            Operator::Gt,
            json!(9_007_199_254_740_992_i64)
        ));
        assert!(x(json!(u64::MAX), Operator::Gt, json!(-1)));
        // Numeric strings read as numbers, others do not compare at all.
        assert!(x(json!("42"), Operator::Eq, json!(42)));
        assert!(x(json!(" 1.5 "), Operator::Lt, json!(2)));
        assert!(x(json!("007"), Operator::Eq, json!(7)));
        assert!(!x(json!("abc"), Operator::Ne, json!(1)));
        assert!(!x(json!(true), Operator::Eq, json!(1)));
    }

    #[test]
    fn text_is_case_sensitive_and_contains_is_substring() {
        assert!(holds(Some(json!("Gold")), Operator::Eq, text("Gold")));
        assert!(!holds(Some(json!("gold")), Operator::Eq, text("Gold")));
        assert!(holds(Some(json!("gold")), Operator::Ne, text("Gold")));
        assert!(holds(
            Some(json!("Премиум Gold")),
            Operator::Contains,
            text("ум G")
        ));
        assert!(!holds(
            Some(json!("Gold")),
            Operator::Contains,
            text("gold")
        ));
        // Text never equals a number attribute.
        assert!(!holds(Some(json!(7)), Operator::Eq, text("7")));
        assert!(!holds(Some(json!(7)), Operator::Ne, text("7")));
    }

    #[test]
    fn contains_on_arrays_is_membership() {
        let tags = json!(["vip", 3, true]);
        assert!(holds(Some(tags.clone()), Operator::Contains, text("vip")));
        assert!(!holds(Some(tags.clone()), Operator::Contains, text("vi")));
        assert!(holds(
            Some(tags.clone()),
            Operator::Contains,
            num(json!(3.0))
        ));
        assert!(holds(
            Some(tags.clone()),
            Operator::Contains,
            Operand::Bool(true)
        ));
        assert!(!holds(Some(json!(5)), Operator::Contains, num(json!(5))));
    }

    #[test]
    fn in_is_membership_of_the_list() {
        let list = Operand::List(vec![text("gold"), text("silver")]);
        assert!(holds(Some(json!("silver")), Operator::In, list.clone()));
        assert!(!holds(Some(json!("Silver")), Operator::In, list));
        let nums = Operand::List(vec![num(json!(1)), num(json!(2))]);
        assert!(holds(Some(json!(2.0)), Operator::In, nums.clone()));
        assert!(holds(Some(json!("1")), Operator::In, nums.clone()));
        assert!(!holds(Some(json!(3)), Operator::In, nums));
        assert!(!holds(Some(json!("x")), Operator::In, text("x")));
    }

    #[test]
    fn bools_accept_their_strings() {
        assert!(holds(
            Some(json!(false)),
            Operator::Eq,
            Operand::Bool(false)
        ));
        assert!(holds(
            Some(json!("false")),
            Operator::Eq,
            Operand::Bool(false)
        ));
        assert!(holds(Some(json!(true)), Operator::Ne, Operand::Bool(false)));
        assert!(!holds(
            Some(json!("no")),
            Operator::Eq,
            Operand::Bool(false)
        ));
        assert!(!holds(
            Some(json!("no")),
            Operator::Ne,
            Operand::Bool(false)
        ));
        assert!(!holds(Some(json!(0)), Operator::Eq, Operand::Bool(false)));
    }

    #[test]
    fn dates_relative_to_today() {
        // today is 2026-06-10
        let today = |n| Operand::Date(DateOperand::Today(n));
        let due = |s: &str| Some(json!(s));
        assert!(holds(due("2026-06-13"), Operator::Ge, today(3)));
        assert!(!holds(due("2026-06-12"), Operator::Ge, today(3)));
        assert!(holds(due("2026-06-10"), Operator::Eq, today(0)));
        assert!(holds(due("2026-06-09"), Operator::Lt, today(0)));
        assert!(holds(due("2026-06-03"), Operator::Le, today(-7)));
        assert!(holds(due("2026-06-04"), Operator::Gt, today(-7)));
        // Datetimes count by their date as written.
        assert!(holds(
            due("2026-06-13T23:59:00+05:00"),
            Operator::Ge,
            today(3)
        ));
        assert!(holds(
            due("2026-06-10T00:30:00-08:00"),
            Operator::Eq,
            today(0)
        ));
        assert!(holds(due("2026-06-10T08:00:00"), Operator::Eq, today(0)));
        assert!(holds(due("2026-06-10 08:00:00"), Operator::Eq, today(0)));
        // Unparsable dates and offsets beyond the calendar compare as nothing.
        assert!(!holds(due("10/06/2026"), Operator::Ne, today(0)));
        assert!(!holds(Some(json!(20260610)), Operator::Ne, today(0)));
        assert!(!holds(due("2026-06-10"), Operator::Ne, today(i64::MAX)));
    }

    #[test]
    fn fixed_dates_and_instants() {
        let fixed = Operand::Date(DateOperand::Fixed(date("2026-01-01")));
        assert!(holds(
            Some(json!("2026-01-01")),
            Operator::Eq,
            fixed.clone()
        ));
        assert!(holds(
            Some(json!("2026-01-01T22:00:00Z")),
            Operator::Eq,
            fixed.clone()
        ));
        assert!(holds(Some(json!("2025-12-31")), Operator::Lt, fixed));
        let noon_utc =
            Operand::Instant(DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap());
        assert!(holds(
            Some(json!("2026-01-01T13:00:00+02:00")),
            Operator::Lt,
            noon_utc.clone()
        ));
        assert!(holds(
            Some(json!("2026-01-01T12:00:00Z")),
            Operator::Eq,
            noon_utc.clone()
        ));
        // A date-only attribute against an instant compares by date.
        assert!(holds(
            Some(json!("2026-01-01")),
            Operator::Eq,
            noon_utc.clone()
        ));
        assert!(holds(Some(json!("2026-01-02")), Operator::Gt, noon_utc));
    }

    #[test]
    fn scopes_and_template_attributes() {
        let customer = json!({"name": "Alex", "phone": "+100", "tier": ""});
        let participant = json!({"name": "Alex P.", "amount": 120.5, "empty": null});
        let result = json!({"outcome": "promised"});
        let ctx = EvalContext {
            customer: customer.as_object().unwrap(),
            participant: participant.as_object().unwrap(),
            result: result.as_object().unwrap(),
            today: date("2026-06-10"),
        };
        assert!(check(
            &cond("result.outcome", Operator::Eq, text("promised")),
            &ctx
        ));
        assert!(check(
            &cond("customer.name", Operator::Eq, text("Alex")),
            &ctx
        ));
        assert!(!check(
            &cond("customer.outcome", Operator::IsSet, Operand::None),
            &ctx
        ));
        assert_eq!(
            ctx.render("{{ name }} / {{customer.name}} / {{ phone }} / {{ amount }} / {{result.outcome}} / {{tier}}{{empty}}."),
            "Alex P. / Alex / +100 / 120.5 / promised / ."
        );
    }
}
