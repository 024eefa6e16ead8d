//! Connection configs are validated by their platform's schema from the registry:
//! secrets split off, defaults filled, every problem named by its path, URLs held to the
//! egress policy.

use std::collections::BTreeMap;

use parley_connectors::platform;
use parley_engine::agent::ValidationErrors;
use parley_engine::connection::{
    apply_config, check_egress, check_secrets_follow, public_view, CheckedConfig, Field,
};
use parley_engine::egress::EgressPolicy;
use parley_engine::inbound::Platform;
use serde_json::{json, Map, Value};

fn kind(name: &str) -> &'static dyn platform::PlatformKind {
    platform::kind(Platform::parse(name).unwrap()).unwrap()
}

fn fields(name: &str) -> &'static [Field] {
    kind(name).fields()
}

/// What creating or changing a connection checks: the schema, then the platform's own
/// checks.
fn config(
    name: &str,
    current: &CheckedConfig,
    changes: &Map<String, Value>,
) -> Result<CheckedConfig, ValidationErrors> {
    let k = kind(name);
    let next = apply_config(k.platform(), k.fields(), current, changes)?;
    let errors = k.check_config(&next);
    if errors.is_empty() {
        Ok(next)
    } else {
        Err(ValidationErrors(errors))
    }
}

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
    let c = config(
        "telegram",
        &empty(),
        &map(json!({"bot_token": "123:abc", "mode": "polling"})),
    )
    .unwrap();
    assert_eq!(c.secrets["bot_token"], "123:abc");
    assert_eq!(c.public["mode"], "polling");
    assert_eq!(c.public["streaming"], true);
    let view = public_view(fields("telegram"), &c);
    assert_eq!(view["bot_token_set"], true);
    assert!(!view.contains_key("bot_token"));
    assert!(!Value::Object(view).to_string().contains("123:abc"));
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let e = config(
        "discord",
        &empty(),
        &map(json!({"bot_token": "", "session_duration_ms": 2_592_000_001u64, "colour": "red"})),
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
    let base = config(
        "slack",
        &empty(),
        &map(json!({"bot_token": "xoxb-1", "signing_secret": "s1", "channel_id": "C1"})),
    )
    .unwrap();
    let next = config(
        "slack",
        &base,
        &map(json!({"bot_token": "xoxb-2", "channel_id": null})),
    )
    .unwrap();
    assert_eq!(next.secrets["bot_token"], "xoxb-2");
    assert_eq!(next.secrets["signing_secret"], "s1");
    assert!(!next.public.contains_key("channel_id"));
    let e = config("slack", &base, &map(json!({"signing_secret": null}))).unwrap_err();
    assert_eq!(e.0[0].path, "config.signing_secret");
}

#[test]
fn private_urls_are_refused_unless_allowed() {
    let c = config(
        "telegram",
        &empty(),
        &map(json!({"bot_token": "1:a", "api_base": "http://10.1.2.3:8081"})),
    )
    .unwrap();
    let e = check_egress(fields("telegram"), &c, &EgressPolicy::default()).unwrap_err();
    assert_eq!(e.0[0].path, "config.api_base");
    let allowed = EgressPolicy::new(true, &["10.0.0.0/8".into()]).unwrap();
    assert!(check_egress(fields("telegram"), &c, &allowed).is_ok());
}

#[test]
fn a_secret_does_not_follow_a_url_to_another_host_unless_entered_again() {
    let base = config(
        "telegram",
        &empty(),
        &map(json!({"bot_token": "1:a", "api_base": "https://tg.example"})),
    )
    .unwrap();
    let moved = map(json!({"api_base": "https://evil.example/bot"}));
    let next = config("telegram", &base, &moved).unwrap();
    let e = check_secrets_follow(fields("telegram"), &base, &next, &moved).unwrap_err();
    assert_eq!(e.0[0].path, "config.bot_token");
    let reentered = map(json!({"api_base": "https://evil.example", "bot_token": "1:b"}));
    let next = config("telegram", &base, &reentered).unwrap();
    assert!(check_secrets_follow(fields("telegram"), &base, &next, &reentered).is_ok());
    let same_host = map(json!({"api_base": "https://tg.example/v2"}));
    let next = config("telegram", &base, &same_host).unwrap();
    assert!(check_secrets_follow(fields("telegram"), &base, &next, &same_host).is_ok());
}

#[test]
fn webhook_secrets_follow_standard_webhooks() {
    assert!(config("webhook", &empty(), &map(json!({"secret": "plain"}))).is_err());
    assert!(config(
        "webhook",
        &empty(),
        &map(json!({"url": "https://example.com/in", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}))
    )
    .is_ok());
    assert!(config("whatsapp", &empty(), &map(json!({"phone_number_ids": []}))).is_err());
}

#[test]
fn every_platform_is_registered_once_with_a_schema_a_form_can_draw() {
    let names: Vec<&str> = platform::registry()
        .iter()
        .map(|k| k.platform().as_str())
        .collect();
    assert_eq!(
        names,
        ["telegram", "discord", "slack", "whatsapp", "teams", "webhook"]
    );
    for k in platform::registry() {
        let schema = serde_json::to_value(k.fields()).unwrap();
        let fields = schema.as_array().unwrap();
        assert!(!fields.is_empty(), "{}", k.platform());
        for f in fields {
            assert!(f["name"].is_string() && f["type"].is_string(), "{f}");
            assert!(
                f["required"].is_boolean() && f["secret"].is_boolean(),
                "{f}"
            );
        }
        // Every platform's API address is configurable, so fakes and self-hosted servers
        // work, and it is a URL the egress policy checks.
        assert!(
            fields
                .iter()
                .any(|f| f["name"] == "api_base" && f["type"] == "url"),
            "{}",
            k.platform()
        );
    }
    let discord = serde_json::to_value(fields("discord")).unwrap();
    let duration = discord
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "session_duration_ms")
        .unwrap();
    assert_eq!(
        duration,
        &json!({"name": "session_duration_ms", "type": "int", "max": 2_592_000_000u64,
                "required": false, "secret": false, "default": 86_400_000})
    );
}

#[test]
fn an_unknown_platform_is_named_with_the_known_ones() {
    let icq = Platform::parse("icq").unwrap();
    assert!(platform::kind(icq).is_none());
    let e = platform::kind_or_err(icq).err().unwrap();
    assert!(e.contains("icq") && e.contains("telegram, discord"), "{e}");
    assert!(Platform::parse("Not A Name").is_err());
    assert!(Platform::parse(&"x".repeat(33)).is_err());
}
