//! Conversation results: the typed fields an agent collects (the seed's FormInfoField).

use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

/// A result field's type as written in `field_type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    Str,
    Int,
    Float,
    Bool,
    Email,
    Phone,
    Literal(Vec<String>),
}

fn email_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"(?i)^[a-z0-9._%+\-]+@[a-z0-9.\-]+\.[a-z]{2,}$").unwrap())
}

fn phone_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^\+?[0-9]{7,15}$").unwrap())
}

/// Finds e-mail addresses inside free text.
pub fn find_email(text: &str) -> Option<String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"(?i)[a-z0-9._%+\-]+@[a-z0-9.\-]+\.[a-z]{2,}").unwrap());
    re.find(text).map(|m| m.as_str().to_string())
}

/// Finds a phone number inside free text (7–15 digits, optional +, common separators).
pub fn find_phone(text: &str) -> Option<String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"\+?[0-9][0-9 ()\-.]{5,20}[0-9]").unwrap());
    re.find_iter(text)
        .map(|m| normalize_phone(m.as_str()))
        .find(|p| phone_re().is_match(p))
}

fn normalize_phone(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect()
}

impl FieldType {
    /// Parses `str`, `int`, `float`, `bool`, `email`, `phone` or `Literal['a', 'b']`.
    pub fn parse(s: &str) -> Result<FieldType, String> {
        let t = s.trim();
        Ok(match t {
            "str" => FieldType::Str,
            "int" => FieldType::Int,
            "float" => FieldType::Float,
            "bool" => FieldType::Bool,
            "email" => FieldType::Email,
            "phone" => FieldType::Phone,
            _ => {
                let inner = t
                    .strip_prefix("Literal[")
                    .and_then(|r| r.strip_suffix(']'))
                    .ok_or_else(|| {
                        format!("unknown field type {t:?} (expected str, int, float, bool, email, phone or Literal['a', 'b', ...])")
                    })?;
                let mut values = Vec::new();
                for part in inner.split(',') {
                    let p = part.trim();
                    let unq = p
                        .strip_prefix('\'')
                        .and_then(|r| r.strip_suffix('\''))
                        .or_else(|| p.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
                        .ok_or_else(|| format!("Literal value {p:?} must be quoted"))?;
                    if unq.is_empty() {
                        return Err("Literal values must not be empty".into());
                    }
                    if values.iter().any(|v| v == unq) {
                        return Err(format!("Literal value {unq:?} is repeated"));
                    }
                    values.push(unq.to_string());
                }
                if values.is_empty() {
                    return Err("Literal[...] needs at least one value".into());
                }
                FieldType::Literal(values)
            }
        })
    }

    /// Checks a value against the type and returns it normalised (numbers from strings,
    /// trimmed e-mails, digits-only phones).
    pub fn coerce(&self, value: &Value) -> Result<Value, String> {
        let as_text = match value {
            Value::String(s) => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        let text = as_text.ok_or_else(|| format!("expected a scalar value, got {value}"))?;
        match self {
            FieldType::Str => Ok(Value::String(text)),
            FieldType::Int => text
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("{text:?} is not an integer")),
            FieldType::Float => text
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Value::from)
                .ok_or_else(|| format!("{text:?} is not a number")),
            FieldType::Bool => match text.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(Value::Bool(true)),
                "false" | "no" | "0" => Ok(Value::Bool(false)),
                _ => Err(format!("{text:?} is not a boolean")),
            },
            FieldType::Email => {
                if email_re().is_match(&text) {
                    Ok(Value::String(text.to_ascii_lowercase()))
                } else {
                    Err(format!("{text:?} is not an e-mail address"))
                }
            }
            FieldType::Phone => {
                let p = normalize_phone(&text);
                if phone_re().is_match(&p) {
                    Ok(Value::String(p))
                } else {
                    Err(format!("{text:?} is not a phone number"))
                }
            }
            FieldType::Literal(values) => values
                .iter()
                .find(|v| **v == text)
                .map(|v| Value::String(v.clone()))
                .ok_or_else(|| format!("{text:?} is not one of {values:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_type() {
        assert_eq!(FieldType::parse("str").unwrap(), FieldType::Str);
        assert_eq!(
            FieldType::parse("Literal['500', '1000', \"2000\"]").unwrap(),
            FieldType::Literal(vec!["500".into(), "1000".into(), "2000".into()])
        );
        assert!(FieldType::parse("Literal[]").is_err());
        assert!(FieldType::parse("Literal[a]").is_err());
        assert!(FieldType::parse("string")
            .unwrap_err()
            .contains("unknown field type"));
    }

    #[test]
    fn coerces_and_rejects() {
        assert_eq!(FieldType::Int.coerce(&json!("42")).unwrap(), json!(42));
        assert!(FieldType::Int.coerce(&json!("4.2")).is_err());
        assert_eq!(FieldType::Float.coerce(&json!("4.5")).unwrap(), json!(4.5));
        assert_eq!(FieldType::Bool.coerce(&json!("Yes")).unwrap(), json!(true));
        assert_eq!(
            FieldType::Email
                .coerce(&json!(" Ann@Example.org "))
                .unwrap(),
            json!("ann@example.org")
        );
        assert!(FieldType::Email.coerce(&json!("ann@")).is_err());
        assert_eq!(
            FieldType::Phone
                .coerce(&json!("+1 (555) 123-4567"))
                .unwrap(),
            json!("+15551234567")
        );
        let lit = FieldType::parse("Literal['a','b']").unwrap();
        assert!(lit.coerce(&json!("c")).is_err());
        assert!(FieldType::Str.coerce(&json!({"x": 1})).is_err());
    }

    #[test]
    fn finds_contacts_in_text() {
        assert_eq!(
            find_email("mail me at bob.smith@bank.de please").as_deref(),
            Some("bob.smith@bank.de")
        );
        assert_eq!(
            find_phone("call +49 151 2345 6789 tomorrow").as_deref(),
            Some("+4915123456789")
        );
        assert_eq!(find_phone("I want 2 cards"), None);
    }
}
