//! Platform connections: what an operator configures so an agent can talk on Telegram,
//! Discord, Slack, WhatsApp, Teams or through webhooks. Each platform has its own config
//! fields; secret fields are write-only (sealed at rest, never answered back).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::agent::{ValidationError, ValidationErrors};
use crate::egress::EgressPolicy;
use crate::inbound::Platform;
use crate::model::TenantId;

pub type ConnectionId = uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectionStatus {
    /// Configured, not connected yet.
    Active,
    Connected,
    Disconnected,
    Error,
}

impl ConnectionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Active => "Active",
            ConnectionStatus::Connected => "Connected",
            ConnectionStatus::Disconnected => "Disconnected",
            ConnectionStatus::Error => "Error",
        }
    }

    pub fn parse(s: &str) -> Option<ConnectionStatus> {
        [
            ConnectionStatus::Active,
            ConnectionStatus::Connected,
            ConnectionStatus::Disconnected,
            ConnectionStatus::Error,
        ]
        .into_iter()
        .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }
}

/// A connection as stored: public config in clear, secrets sealed (see
/// [`crate::secrets::SecretBox`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    pub id: ConnectionId,
    pub tenant_id: TenantId,
    pub name: String,
    pub platform: Platform,
    pub description: Option<String>,
    pub enabled: bool,
    pub status: ConnectionStatus,
    pub status_error: Option<String>,
    pub status_at: DateTime<Utc>,
    /// The platform's non-secret fields.
    pub config: Map<String, Value>,
    /// The secret fields as sealed JSON (`{"bot_token": "…"}` sealed as one value).
    pub secrets_sealed: String,
    pub advanced: Value,
    pub rate_limits: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What values a config field takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
    Text,
    /// An address parley calls: checked against the egress policy, and stored secrets
    /// do not follow it to another host.
    Url,
    Bool,
    /// A non-negative integer up to `max`.
    Int {
        max: u64,
    },
    OneOf {
        values: &'static [&'static str],
    },
    TextList,
}

/// A field's value when the operator gives none.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DefaultValue {
    Bool(bool),
    Int(u64),
    Text(&'static str),
}

impl DefaultValue {
    fn to_json(self) -> Value {
        match self {
            DefaultValue::Bool(b) => Value::Bool(b),
            DefaultValue::Int(n) => Value::from(n),
            DefaultValue::Text(t) => Value::from(t),
        }
    }
}

/// One config field of a platform: what validation checks and what a form draws.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Field {
    pub name: &'static str,
    #[serde(flatten)]
    pub kind: Kind,
    pub required: bool,
    /// Write-only: sealed at rest, never answered back.
    pub secret: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<DefaultValue>,
}

impl Field {
    pub const fn new(name: &'static str, kind: Kind) -> Field {
        Field {
            name,
            kind,
            required: false,
            secret: false,
            default: None,
        }
    }

    pub const fn text(name: &'static str) -> Field {
        Field::new(name, Kind::Text)
    }

    pub const fn url(name: &'static str) -> Field {
        Field::new(name, Kind::Url)
    }

    pub const fn required(mut self) -> Field {
        self.required = true;
        self
    }

    pub const fn secret(mut self) -> Field {
        self.secret = true;
        self
    }

    pub const fn or(mut self, default: DefaultValue) -> Field {
        self.default = Some(default);
        self
    }
}

fn err(path: String, message: impl Into<String>) -> ValidationError {
    ValidationError {
        path,
        message: message.into(),
    }
}

fn check(field: &Field, v: &Value) -> Result<(), String> {
    let ok = match field.kind {
        Kind::Text | Kind::Url => v.as_str().is_some_and(|s| !s.trim().is_empty()),
        Kind::Bool => v.is_boolean(),
        Kind::Int { max } => v.as_u64().is_some_and(|n| n <= max),
        Kind::OneOf { values } => v.as_str().is_some_and(|s| values.contains(&s)),
        Kind::TextList => v.as_array().is_some_and(|a| {
            !a.is_empty() && a.iter().all(|x| x.as_str().is_some_and(|s| !s.is_empty()))
        }),
    };
    if ok {
        return Ok(());
    }
    Err(match field.kind {
        Kind::Text | Kind::Url => "must be a non-empty string".into(),
        Kind::Bool => "must be true or false".into(),
        Kind::Int { max } => format!("must be a whole number from 0 to {max}"),
        Kind::OneOf { values } => format!("must be one of {}", values.join(", ")),
        Kind::TextList => "must be a non-empty list of strings".into(),
    })
}

/// A config split into its public part and its secrets, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedConfig {
    pub public: Map<String, Value>,
    pub secrets: BTreeMap<String, String>,
}

/// Validates `changes` on top of an existing config (empty for a new connection): unknown
/// fields, types, required fields (a required secret may be already stored), defaults
/// for what is missing. A `null` removes an optional field.
pub fn apply_config(
    platform: Platform,
    spec: &[Field],
    current: &CheckedConfig,
    changes: &Map<String, Value>,
) -> Result<CheckedConfig, ValidationErrors> {
    let mut errors = Vec::new();
    let mut next = current.clone();
    for (name, v) in changes {
        let path = format!("config.{name}");
        let Some(field) = spec.iter().find(|f| f.name == name) else {
            let known: Vec<&str> = spec.iter().map(|f| f.name).collect();
            errors.push(err(
                path,
                format!(
                    "unknown field for {} (known: {})",
                    platform.as_str(),
                    known.join(", ")
                ),
            ));
            continue;
        };
        if v.is_null() {
            if field.required {
                errors.push(err(path, "is required and cannot be removed"));
            } else if field.secret {
                next.secrets.remove(name.as_str());
            } else {
                next.public.remove(name.as_str());
            }
            continue;
        }
        if let Err(m) = check(field, v) {
            errors.push(err(path, m));
            continue;
        }
        if field.secret {
            next.secrets
                .insert(name.clone(), v.as_str().unwrap_or_default().to_string());
        } else {
            next.public.insert(name.clone(), v.clone());
        }
    }
    for field in spec {
        let present = if field.secret {
            next.secrets.contains_key(field.name)
        } else {
            next.public.contains_key(field.name)
        };
        if present {
            continue;
        }
        if field.required {
            errors.push(err(format!("config.{}", field.name), "is required"));
        } else if let Some(default) = field.default {
            next.public.insert(field.name.into(), default.to_json());
        }
    }
    if errors.is_empty() {
        Ok(next)
    } else {
        Err(ValidationErrors(errors))
    }
}

/// The config fields outbound calls go to.
fn url_fields(spec: &[Field]) -> impl Iterator<Item = &'static str> + '_ {
    spec.iter().filter(|f| f.kind == Kind::Url).map(|f| f.name)
}

fn host_of(config: &CheckedConfig, field: &str) -> Option<String> {
    let url = config.public.get(field)?.as_str()?;
    Some(
        reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            .unwrap_or_else(|| url.to_string()),
    )
}

/// Checks the URLs the connection calls against the egress policy.
pub fn check_egress(
    spec: &[Field],
    config: &CheckedConfig,
    policy: &EgressPolicy,
) -> Result<(), ValidationErrors> {
    let errors: Vec<ValidationError> = url_fields(spec)
        .filter_map(|f| {
            let url = config.public.get(f)?.as_str()?;
            let e = policy.check_url(url).err()?;
            Some(err(format!("config.{f}"), e.to_string()))
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

/// When a change points a URL field at another host, a stored secret must not follow it
/// there unless it is entered again in the same change: names every secret to re-enter.
pub fn check_secrets_follow(
    spec: &[Field],
    current: &CheckedConfig,
    next: &CheckedConfig,
    changes: &Map<String, Value>,
) -> Result<(), ValidationErrors> {
    let Some(moved) = url_fields(spec).find(|f| host_of(current, f) != host_of(next, f)) else {
        return Ok(());
    };
    let errors: Vec<ValidationError> = next
        .secrets
        .keys()
        .filter(|k| !changes.contains_key(k.as_str()))
        .map(|k| {
            err(
                format!("config.{k}"),
                format!("must be entered again: config.{moved} now points at another host"),
            )
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

/// The config as answered to operators: public fields, and `<secret>_set` flags instead
/// of the secrets.
pub fn public_view(spec: &[Field], config: &CheckedConfig) -> Map<String, Value> {
    let mut out = config.public.clone();
    for field in spec.iter().filter(|f| f.secret) {
        out.insert(
            format!("{}_set", field.name),
            Value::Bool(config.secrets.contains_key(field.name)),
        );
    }
    out
}
