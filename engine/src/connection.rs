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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Bool,
    /// A non-negative integer up to this bound.
    Int(u64),
    OneOf(&'static [&'static str]),
    TextList,
}

/// One config field of a platform.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub required: bool,
    pub secret: bool,
    kind: Kind,
    default: Option<DefaultValue>,
}

#[derive(Debug, Clone, Copy)]
enum DefaultValue {
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

const fn f(name: &'static str, required: bool, secret: bool, kind: Kind) -> Field {
    Field {
        name,
        required,
        secret,
        kind,
        default: None,
    }
}

const fn d(name: &'static str, kind: Kind, default: DefaultValue) -> Field {
    Field {
        name,
        required: false,
        secret: false,
        kind,
        default: Some(default),
    }
}

/// Discord's longest session per user (30 days, in ms).
pub const DISCORD_MAX_SESSION_MS: u64 = 2_592_000_000;

const TELEGRAM: &[Field] = &[
    f("bot_token", true, true, Kind::Text),
    f("bot_username", false, false, Kind::Text),
    f("chat_id", false, false, Kind::Text),
    d(
        "mode",
        Kind::OneOf(&["webhook", "polling"]),
        DefaultValue::Text("webhook"),
    ),
    d("streaming", Kind::Bool, DefaultValue::Bool(true)),
    f("api_base", false, false, Kind::Text),
];
const DISCORD: &[Field] = &[
    f("application_id", true, false, Kind::Text),
    f("public_key", true, false, Kind::Text),
    f("bot_token", true, true, Kind::Text),
    f("guild_id", false, false, Kind::Text),
    f("client_id", false, false, Kind::Text),
    d("handle", Kind::Text, DefaultValue::Text("ask")),
    d("ephemeral", Kind::Bool, DefaultValue::Bool(false)),
    d(
        "session_duration_ms",
        Kind::Int(DISCORD_MAX_SESSION_MS),
        DefaultValue::Int(86_400_000),
    ),
    d("stream", Kind::Bool, DefaultValue::Bool(true)),
    f("api_base", false, false, Kind::Text),
];
const SLACK: &[Field] = &[
    f("bot_token", true, true, Kind::Text),
    f("signing_secret", true, true, Kind::Text),
    f("app_token", false, true, Kind::Text),
    f("channel_id", false, false, Kind::Text),
    f("api_base", false, false, Kind::Text),
];
const WHATSAPP: &[Field] = &[
    f("app_id", true, false, Kind::Text),
    f("app_secret", true, true, Kind::Text),
    f("access_token", true, true, Kind::Text),
    f("phone_number_ids", true, false, Kind::TextList),
    f("business_account_id", true, false, Kind::Text),
    f("verify_token", true, true, Kind::Text),
    f("api_base", false, false, Kind::Text),
];
const TEAMS: &[Field] = &[
    f("app_id", true, false, Kind::Text),
    f("app_password", true, true, Kind::Text),
    f("tenant_id", false, false, Kind::Text),
    f("openid_metadata_url", false, false, Kind::Text),
    f("api_base", false, false, Kind::Text),
];
const WEBHOOK: &[Field] = &[
    f("url", false, false, Kind::Text),
    f("secret", false, true, Kind::Text),
    f("incoming_secret", false, true, Kind::Text),
    f("api_base", false, false, Kind::Text),
];

/// The config fields of a platform.
pub fn fields(platform: Platform) -> &'static [Field] {
    match platform {
        Platform::Telegram => TELEGRAM,
        Platform::Discord => DISCORD,
        Platform::Slack => SLACK,
        Platform::Whatsapp => WHATSAPP,
        Platform::Teams => TEAMS,
        Platform::Webhook => WEBHOOK,
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
        Kind::Text => v.as_str().is_some_and(|s| !s.trim().is_empty()),
        Kind::Bool => v.is_boolean(),
        Kind::Int(max) => v.as_u64().is_some_and(|n| n <= max),
        Kind::OneOf(allowed) => v.as_str().is_some_and(|s| allowed.contains(&s)),
        Kind::TextList => v.as_array().is_some_and(|a| {
            !a.is_empty() && a.iter().all(|x| x.as_str().is_some_and(|s| !s.is_empty()))
        }),
    };
    if ok {
        return Ok(());
    }
    Err(match field.kind {
        Kind::Text => "must be a non-empty string".into(),
        Kind::Bool => "must be true or false".into(),
        Kind::Int(max) => format!("must be a whole number from 0 to {max}"),
        Kind::OneOf(allowed) => format!("must be one of {}", allowed.join(", ")),
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
    current: &CheckedConfig,
    changes: &Map<String, Value>,
) -> Result<CheckedConfig, ValidationErrors> {
    let spec = fields(platform);
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
    if platform == Platform::Webhook {
        if let Some(secret) = next.secrets.get("secret") {
            if !secret.starts_with("whsec_") {
                errors.push(err("config.secret".into(), "must start with whsec_"));
            }
        }
    }
    if errors.is_empty() {
        Ok(next)
    } else {
        Err(ValidationErrors(errors))
    }
}

/// The config fields outbound calls go to.
const URL_FIELDS: &[&str] = &["api_base", "url", "openid_metadata_url"];

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
pub fn check_egress(config: &CheckedConfig, policy: &EgressPolicy) -> Result<(), ValidationErrors> {
    let errors: Vec<ValidationError> = URL_FIELDS
        .iter()
        .filter_map(|f| {
            let url = config.public.get(*f)?.as_str()?;
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
    current: &CheckedConfig,
    next: &CheckedConfig,
    changes: &Map<String, Value>,
) -> Result<(), ValidationErrors> {
    let Some(moved) = URL_FIELDS
        .iter()
        .find(|f| host_of(current, f) != host_of(next, f))
    else {
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
pub fn public_view(platform: Platform, config: &CheckedConfig) -> Map<String, Value> {
    let mut out = config.public.clone();
    for field in fields(platform).iter().filter(|f| f.secret) {
        out.insert(
            format!("{}_set", field.name),
            Value::Bool(config.secrets.contains_key(field.name)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn empty() -> CheckedConfig {
        CheckedConfig {
            public: Map::new(),
            secrets: BTreeMap::new(),
        }
    }

    #[test]
    fn secrets_are_split_off_and_defaults_filled() {
        let c = apply_config(
            Platform::Telegram,
            &empty(),
            &map(json!({"bot_token": "123:abc", "mode": "polling"})),
        )
        .unwrap();
        assert_eq!(c.secrets["bot_token"], "123:abc");
        assert_eq!(c.public["mode"], "polling");
        assert_eq!(c.public["streaming"], true);
        let view = public_view(Platform::Telegram, &c);
        assert_eq!(view["bot_token_set"], true);
        assert!(!view.contains_key("bot_token"));
        assert!(!Value::Object(view).to_string().contains("123:abc"));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let e = apply_config(
            Platform::Discord,
            &empty(),
            &map(
                json!({"bot_token": "", "session_duration_ms": 2_592_000_001u64, "colour": "red"}),
            ),
        )
        .unwrap_err();
        let paths: Vec<&str> = e.0.iter().map(|x| x.path.as_str()).collect();
        for p in [
            "config.bot_token",
            "config.session_duration_ms",
            "config.colour",
            "config.application_id",
            "config.public_key",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
    }

    #[test]
    fn a_patch_keeps_stored_secrets_rotates_given_ones_and_removes_nulls() {
        let base = apply_config(
            Platform::Slack,
            &empty(),
            &map(json!({"bot_token": "xoxb-1", "signing_secret": "s1", "channel_id": "C1"})),
        )
        .unwrap();
        let next = apply_config(
            Platform::Slack,
            &base,
            &map(json!({"bot_token": "xoxb-2", "channel_id": null})),
        )
        .unwrap();
        assert_eq!(next.secrets["bot_token"], "xoxb-2");
        assert_eq!(next.secrets["signing_secret"], "s1");
        assert!(!next.public.contains_key("channel_id"));
        let e = apply_config(
            Platform::Slack,
            &base,
            &map(json!({"signing_secret": null})),
        )
        .unwrap_err();
        assert_eq!(e.0[0].path, "config.signing_secret");
    }

    #[test]
    fn private_urls_are_refused_unless_allowed() {
        let c = apply_config(
            Platform::Telegram,
            &empty(),
            &map(json!({"bot_token": "1:a", "api_base": "http://10.1.2.3:8081"})),
        )
        .unwrap();
        let e = check_egress(&c, &EgressPolicy::default()).unwrap_err();
        assert_eq!(e.0[0].path, "config.api_base");
        let allowed = EgressPolicy::new(true, &["10.0.0.0/8".into()]).unwrap();
        assert!(check_egress(&c, &allowed).is_ok());
    }

    #[test]
    fn a_secret_does_not_follow_a_url_to_another_host_unless_entered_again() {
        let base = apply_config(
            Platform::Telegram,
            &empty(),
            &map(json!({"bot_token": "1:a", "api_base": "https://tg.example"})),
        )
        .unwrap();
        let moved = map(json!({"api_base": "https://evil.example/bot"}));
        let next = apply_config(Platform::Telegram, &base, &moved).unwrap();
        let e = check_secrets_follow(&base, &next, &moved).unwrap_err();
        assert_eq!(e.0[0].path, "config.bot_token");
        let reentered = map(json!({"api_base": "https://evil.example", "bot_token": "1:b"}));
        let next = apply_config(Platform::Telegram, &base, &reentered).unwrap();
        assert!(check_secrets_follow(&base, &next, &reentered).is_ok());
        let same_host = map(json!({"api_base": "https://tg.example/v2"}));
        let next = apply_config(Platform::Telegram, &base, &same_host).unwrap();
        assert!(check_secrets_follow(&base, &next, &same_host).is_ok());
    }

    #[test]
    fn webhook_secrets_follow_standard_webhooks() {
        assert!(apply_config(
            Platform::Webhook,
            &empty(),
            &map(json!({"secret": "plain"}))
        )
        .is_err());
        assert!(apply_config(
            Platform::Webhook,
            &empty(),
            &map(json!({"url": "https://example.com/in", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}))
        )
        .is_ok());
        assert!(apply_config(
            Platform::Whatsapp,
            &empty(),
            &map(json!({"phone_number_ids": []}))
        )
        .is_err());
    }
}
