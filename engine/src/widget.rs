//! The web chat widget of an agent: its settings (what the admin configures), the public
//! subset a page may read, and the credentials of its visitors — a signed visitor token
//! bound to one widget and one visitor, and the host page's HMAC user hash.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::model::{AgentId, TenantId};

type HmacSha256 = Hmac<Sha256>;

/// UI languages the widget ships strings for.
pub const LOCALES: [&str; 8] = ["en", "de", "fr", "es", "ru", "zh", "ar", "he"];
/// Origins one widget may allow at most.
pub const MAX_ORIGINS: usize = 50;
/// Default and largest size of one visitor attachment.
pub const DEFAULT_ATTACHMENT_BYTES: u64 = 5 * 1024 * 1024;
pub const MAX_ATTACHMENT_BYTES: u64 = 10 * 1024 * 1024;
/// How long a visitor token is good for; each start or resume issues a fresh one.
pub const VISITOR_TOKEN_DAYS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    Left,
    #[default]
    Right,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WidgetMode {
    #[default]
    Floating,
    Embedded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Rtl {
    #[default]
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Colors {
    pub primary: String,
    pub on_primary: String,
    pub background: String,
    pub text: String,
}

impl Default for Colors {
    fn default() -> Self {
        Colors {
            primary: "#2563eb".into(),
            on_primary: "#ffffff".into(),
            background: "#ffffff".into(),
            text: "#111827".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttachmentSettings {
    pub enabled: bool,
    pub max_bytes: u64,
}

impl Default for AttachmentSettings {
    fn default() -> Self {
        AttachmentSettings {
            enabled: true,
            max_bytes: DEFAULT_ATTACHMENT_BYTES,
        }
    }
}

/// Speech-to-text for the mic button: an OpenAI-compatible `/audio/transcriptions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct VoiceSettings {
    pub enabled: bool,
    pub stt_base_url: Option<String>,
    pub stt_model: Option<String>,
}

/// What an admin configures, secrets aside (they live sealed in [`WidgetRecord`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WidgetSettings {
    pub enabled: bool,
    /// `scheme://host[:port]` of the pages the widget may run on.
    pub allowed_origins: Vec<String>,
    pub title: Option<String>,
    pub subtitle: Option<String>,
    pub avatar_url: Option<String>,
    pub colors: Colors,
    pub position: Position,
    pub mode: WidgetMode,
    pub launcher_label: Option<String>,
    /// Shown before the first message instead of the agent's greeting.
    pub greeting: Option<String>,
    pub locale: String,
    pub rtl: Rtl,
    pub placeholder: Option<String>,
    pub attachments: AttachmentSettings,
    pub voice: VoiceSettings,
    pub identity_verification: bool,
}

impl Default for WidgetSettings {
    fn default() -> Self {
        WidgetSettings {
            enabled: false,
            allowed_origins: Vec::new(),
            title: None,
            subtitle: None,
            avatar_url: None,
            colors: Colors::default(),
            position: Position::default(),
            mode: WidgetMode::default(),
            launcher_label: None,
            greeting: None,
            locale: "en".into(),
            rtl: Rtl::default(),
            placeholder: None,
            attachments: AttachmentSettings::default(),
            voice: VoiceSettings::default(),
            identity_verification: false,
        }
    }
}

/// A write-only secret in a settings update: absent keeps it, `null` removes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SecretChange {
    #[default]
    Keep,
    Remove,
    Set(String),
}

impl<'de> Deserialize<'de> for SecretChange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<String>::deserialize(d)? {
            None => SecretChange::Remove,
            Some(s) => SecretChange::Set(s),
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityUpdate {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub secret: SecretChange,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceUpdate {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub stt_base_url: Option<String>,
    #[serde(default)]
    pub stt_model: Option<String>,
    #[serde(default)]
    pub stt_api_key: SecretChange,
}

/// The body of `PUT /api/v1/agents/{id}/widget`: the whole settings (omitted fields take
/// their defaults), secrets write-only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WidgetUpdate {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    pub title: Option<String>,
    pub subtitle: Option<String>,
    pub avatar_url: Option<String>,
    #[serde(default)]
    pub colors: Colors,
    #[serde(default)]
    pub position: Position,
    #[serde(default)]
    pub mode: WidgetMode,
    pub launcher_label: Option<String>,
    pub greeting: Option<String>,
    pub locale: Option<String>,
    #[serde(default)]
    pub rtl: Rtl,
    pub placeholder: Option<String>,
    #[serde(default)]
    pub attachments: AttachmentSettings,
    #[serde(default)]
    pub voice: VoiceUpdate,
    #[serde(default)]
    pub identity_verification: IdentityUpdate,
}

/// An agent's widget as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WidgetRecord {
    pub agent_id: AgentId,
    pub tenant_id: TenantId,
    /// Public, in the page's script tag: names the widget, grants nothing.
    pub widget_id: String,
    pub settings: WidgetSettings,
    /// Sealed secrets: `identity_secret`, `stt_api_key`.
    pub secrets: WidgetSecrets,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WidgetSecrets {
    pub identity_secret: Option<String>,
    pub stt_api_key: Option<String>,
}

/// A new public widget id: `wgt_` and 20 random base32-ish characters.
pub fn new_widget_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    let tail: String = (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("wgt_{tail}")
}

/// Whether `id` has the shape of a widget id (checked before any lookup).
pub fn is_widget_id(id: &str) -> bool {
    id.len() == 24 && id.starts_with("wgt_") && id[4..].bytes().all(|b| b.is_ascii_alphanumeric())
}

fn bounded(field: &str, value: &Option<String>, max: usize) -> Result<Option<String>, String> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) if v.chars().count() > max => Err(format!("{field}: at most {max} characters")),
        Some(v) if v.chars().any(|c| c.is_control() && c != '\n') => {
            Err(format!("{field}: must not contain control characters"))
        }
        Some(v) => Ok(Some(v.to_string())),
    }
}

fn check_color(field: &str, c: &str) -> Result<String, String> {
    let hex = c.strip_prefix('#').unwrap_or("");
    if (hex.len() == 3 || hex.len() == 6) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(c.to_ascii_lowercase())
    } else {
        Err(format!("colors.{field}: a colour like #2563eb"))
    }
}

fn http_url(field: &str, url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|_| format!("{field}: not a URL: {url:?}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{field}: an http or https URL"));
    }
    if url.len() > 2048 {
        return Err(format!("{field}: at most 2048 characters"));
    }
    Ok(parsed)
}

/// An origin as browsers send it in `Origin`: `scheme://host[:port]`, the default port
/// left out.
pub fn normalize_origin(raw: &str) -> Result<String, String> {
    let url = http_url("allowed_origins", raw.trim())?;
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "allowed_origins: {raw:?} is not an origin (scheme://host[:port], no path)"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "allowed_origins: {raw:?} must not carry credentials"
        ));
    }
    Ok(url.origin().ascii_serialization())
}

impl WidgetUpdate {
    /// Checks the update and turns it into settings plus the secret changes.
    pub fn checked(self) -> Result<(WidgetSettings, SecretChange, SecretChange), String> {
        if self.allowed_origins.len() > MAX_ORIGINS {
            return Err(format!("allowed_origins: at most {MAX_ORIGINS}"));
        }
        let mut origins = Vec::new();
        for o in &self.allowed_origins {
            let o = normalize_origin(o)?;
            if !origins.contains(&o) {
                origins.push(o);
            }
        }
        let locale = self.locale.unwrap_or_else(|| "en".into());
        if !LOCALES.contains(&locale.as_str()) {
            return Err(format!("locale: one of {}", LOCALES.join(", ")));
        }
        if self.attachments.max_bytes == 0 || self.attachments.max_bytes > MAX_ATTACHMENT_BYTES {
            return Err(format!(
                "attachments.max_bytes: 1 to {MAX_ATTACHMENT_BYTES}"
            ));
        }
        let avatar_url = bounded("avatar_url", &self.avatar_url, 2048)?;
        if let Some(a) = &avatar_url {
            http_url("avatar_url", a)?;
        }
        let stt_base_url = bounded("voice.stt_base_url", &self.voice.stt_base_url, 2048)?;
        if let Some(u) = &stt_base_url {
            http_url("voice.stt_base_url", u)?;
        }
        if self.voice.enabled && stt_base_url.is_none() {
            return Err("voice.stt_base_url: required when voice is enabled".into());
        }
        if let SecretChange::Set(s) = &self.identity_verification.secret {
            if !(16..=256).contains(&s.len()) {
                return Err("identity_verification.secret: 16 to 256 characters".into());
            }
        }
        if let SecretChange::Set(s) = &self.voice.stt_api_key {
            if s.is_empty() || s.len() > 1024 {
                return Err("voice.stt_api_key: 1 to 1024 characters".into());
            }
        }
        let colors = Colors {
            primary: check_color("primary", &self.colors.primary)?,
            on_primary: check_color("on_primary", &self.colors.on_primary)?,
            background: check_color("background", &self.colors.background)?,
            text: check_color("text", &self.colors.text)?,
        };
        let settings = WidgetSettings {
            enabled: self.enabled,
            allowed_origins: origins,
            title: bounded("title", &self.title, 80)?,
            subtitle: bounded("subtitle", &self.subtitle, 120)?,
            avatar_url,
            colors,
            position: self.position,
            mode: self.mode,
            launcher_label: bounded("launcher_label", &self.launcher_label, 40)?,
            greeting: bounded("greeting", &self.greeting, 2000)?,
            locale,
            rtl: self.rtl,
            placeholder: bounded("placeholder", &self.placeholder, 80)?,
            attachments: self.attachments,
            voice: VoiceSettings {
                enabled: self.voice.enabled,
                stt_base_url,
                stt_model: bounded("voice.stt_model", &self.voice.stt_model, 100)?,
            },
            identity_verification: self.identity_verification.enabled,
        };
        Ok((
            settings,
            self.identity_verification.secret,
            self.voice.stt_api_key,
        ))
    }
}

impl WidgetRecord {
    /// The settings as an admin reads them: secrets as `…_set` flags.
    pub fn admin_view(&self) -> Value {
        let s = &self.settings;
        let mut v = serde_json::to_value(s).unwrap_or_default();
        v["widget_id"] = json!(self.widget_id);
        v["agent_id"] = json!(self.agent_id);
        v["identity_verification"] = json!({
            "enabled": s.identity_verification,
            "secret_set": self.secrets.identity_secret.is_some(),
        });
        v["voice"]["stt_api_key_set"] = json!(self.secrets.stt_api_key.is_some());
        v["updated_at"] = json!(self.updated_at.to_rfc3339());
        v
    }

    /// What any page may read: how to draw the widget, nothing about who may use it.
    pub fn public_view(&self, agent_name: &str, agent_greeting: Option<&str>) -> Value {
        let s = &self.settings;
        json!({
            "widget_id": self.widget_id,
            "agent_name": agent_name,
            "title": s.title.as_deref().unwrap_or(agent_name),
            "subtitle": s.subtitle,
            "avatar_url": s.avatar_url,
            "colors": s.colors,
            "position": s.position,
            "mode": s.mode,
            "launcher_label": s.launcher_label,
            "greeting": s.greeting.as_deref().or(agent_greeting),
            "locale": s.locale,
            "rtl": s.rtl,
            "placeholder": s.placeholder,
            "attachments": s.attachments,
            "voice": {"enabled": self.transcribes()},
            "identity_verification": s.identity_verification,
        })
    }

    /// Whether visitors' audio is turned into text (the mic button shows).
    pub fn transcribes(&self) -> bool {
        self.settings.voice.enabled && self.settings.voice.stt_base_url.is_some()
    }

    /// Whether a page of `origin` may use the widget.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.settings.allowed_origins.iter().any(|o| o == origin)
    }
}

fn mac(key: &[u8; 32], kind: &str) -> HmacSha256 {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(kind.as_bytes());
    m.update(b"\0");
    m
}

/// Checks a host page's user hash: hex HMAC-SHA256(secret, user_id), compared in
/// constant time.
pub fn user_hash_matches(secret: &str, user_id: &str, hash: &str) -> bool {
    let Ok(given) = hex::decode(hash.trim()) else {
        return false;
    };
    let mut m =
        <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    m.update(user_id.as_bytes());
    m.verify_slice(&given).is_ok()
}

/// Who a visitor token speaks for: one visitor of one widget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorToken {
    #[serde(rename = "w")]
    pub widget_id: String,
    #[serde(rename = "a")]
    pub agent_id: AgentId,
    /// The sessions' `user_id`: `wv_…` for an anonymous visitor, the host's user id for a
    /// verified one.
    #[serde(rename = "u")]
    pub user_id: String,
    #[serde(rename = "v")]
    pub verified: bool,
    /// Expiry, Unix seconds.
    #[serde(rename = "e")]
    pub expires: i64,
}

/// Prefix of every visitor token.
pub const VISITOR_TOKEN_PREFIX: &str = "wvt_";

/// Signs and checks visitor tokens and attachment links with a key every node derives
/// from the deployment's master key, so any node accepts what another issued.
pub struct VisitorKeys {
    key: [u8; 32],
}

impl VisitorKeys {
    pub fn new(key: [u8; 32]) -> VisitorKeys {
        VisitorKeys { key }
    }

    pub fn issue(&self, token: &VisitorToken) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = b64.encode(serde_json::to_vec(token).unwrap_or_default());
        let mut m = mac(&self.key, "visitor");
        m.update(payload.as_bytes());
        let sig = b64.encode(m.finalize().into_bytes());
        format!("{VISITOR_TOKEN_PREFIX}{payload}.{sig}")
    }

    /// The token's claims when its signature holds and it has not expired.
    pub fn check(&self, raw: &str, now: DateTime<Utc>) -> Option<VisitorToken> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (payload, sig) = raw.strip_prefix(VISITOR_TOKEN_PREFIX)?.split_once('.')?;
        let mut m = mac(&self.key, "visitor");
        m.update(payload.as_bytes());
        m.verify_slice(&b64.decode(sig).ok()?).ok()?;
        let token: VisitorToken = serde_json::from_slice(&b64.decode(payload).ok()?).ok()?;
        (token.expires > now.timestamp()).then_some(token)
    }

    fn attachment_mac(&self, widget_id: &str, attachment: uuid::Uuid, expires: i64) -> HmacSha256 {
        let mut m = mac(&self.key, "attachment");
        m.update(widget_id.as_bytes());
        m.update(b"\0");
        m.update(attachment.as_bytes());
        m.update(&expires.to_be_bytes());
        m
    }

    /// The signature of a link to one attachment of a widget, good until `expires`.
    pub fn attachment_sig(&self, widget_id: &str, attachment: uuid::Uuid, expires: i64) -> String {
        let mac = self.attachment_mac(widget_id, attachment, expires);
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    pub fn attachment_sig_matches(
        &self,
        widget_id: &str,
        attachment: uuid::Uuid,
        expires: i64,
        sig: &str,
    ) -> bool {
        let Ok(given) = hex::decode(sig) else {
            return false;
        };
        given.len() == 16
            && self
                .attachment_mac(widget_id, attachment, expires)
                .verify_truncated_left(&given)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> VisitorKeys {
        VisitorKeys::new([7; 32])
    }

    fn token(expires: i64) -> VisitorToken {
        VisitorToken {
            widget_id: new_widget_id(),
            agent_id: uuid::Uuid::now_v7(),
            user_id: "wv_abc".into(),
            verified: false,
            expires,
        }
    }

    #[test]
    fn visitor_tokens_hold_only_with_their_signature_and_before_expiry() {
        let now = Utc::now();
        let t = token(now.timestamp() + 60);
        let raw = keys().issue(&t);
        assert_eq!(keys().check(&raw, now), Some(t.clone()));
        assert_eq!(VisitorKeys::new([8; 32]).check(&raw, now), None);
        let expired = keys().issue(&token(now.timestamp() - 1));
        assert_eq!(keys().check(&expired, now), None);
        // A payload changed under the old signature (another visitor) is refused.
        let (_, sig) = raw.rsplit_once('.').unwrap();
        let other = VisitorToken {
            user_id: "wv_other".into(),
            ..t
        };
        let forged_payload = keys().issue(&other);
        let (forged, _) = forged_payload.rsplit_once('.').unwrap();
        assert_eq!(keys().check(&format!("{forged}.{sig}"), now), None);
        assert_eq!(keys().check("wvt_garbage", now), None);
        assert_eq!(keys().check("", now), None);
    }

    #[test]
    fn user_hashes_are_hmac_sha256_hex() {
        // HMAC-SHA256("secret-of-the-host-page", "user-42"), computed independently.
        let mut m = <HmacSha256 as Mac>::new_from_slice(b"secret-of-the-host-page").unwrap();
        m.update(b"user-42");
        let hash = hex::encode(m.finalize().into_bytes());
        assert!(user_hash_matches(
            "secret-of-the-host-page",
            "user-42",
            &hash
        ));
        assert!(!user_hash_matches(
            "secret-of-the-host-page",
            "user-43",
            &hash
        ));
        assert!(!user_hash_matches(
            "another-secret-of-a-page",
            "user-42",
            &hash
        ));
        assert!(!user_hash_matches(
            "secret-of-the-host-page",
            "user-42",
            "zz"
        ));
    }

    #[test]
    fn origins_are_normalised_and_paths_refused() {
        assert_eq!(
            normalize_origin("https://Shop.Example.com:443").unwrap(),
            "https://shop.example.com"
        );
        assert_eq!(
            normalize_origin("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(normalize_origin("https://example.com/page").is_err());
        assert!(normalize_origin("ftp://example.com").is_err());
        assert!(normalize_origin("*").is_err());
        assert!(normalize_origin("https://u:p@example.com").is_err());
    }

    #[test]
    fn updates_are_checked_field_by_field() {
        let ok: WidgetUpdate = serde_json::from_value(json!({
            "enabled": true,
            "allowed_origins": ["https://a.example", "https://a.example/"],
            "colors": {"primary": "#ABC"},
            "locale": "ar",
            "identity_verification": {"enabled": true, "secret": "0123456789abcdef"}
        }))
        .unwrap();
        let (s, secret, key) = ok.checked().unwrap();
        assert_eq!(s.allowed_origins, vec!["https://a.example"]);
        assert_eq!(s.colors.primary, "#abc");
        assert_eq!(s.colors.text, "#111827");
        assert_eq!(secret, SecretChange::Set("0123456789abcdef".into()));
        assert_eq!(key, SecretChange::Keep);
        for (body, msg) in [
            (json!({"locale": "xx"}), "locale"),
            (json!({"colors": {"primary": "red"}}), "colors.primary"),
            (
                json!({"attachments": {"max_bytes": 0}}),
                "attachments.max_bytes",
            ),
            (json!({"voice": {"enabled": true}}), "voice.stt_base_url"),
            (
                json!({"identity_verification": {"secret": "short"}}),
                "identity_verification.secret",
            ),
            (json!({"title": "x".repeat(81)}), "title"),
            (json!({"avatar_url": "javascript:alert(1)"}), "avatar_url"),
        ] {
            let u: WidgetUpdate = serde_json::from_value(body).unwrap();
            let err = u.checked().unwrap_err();
            assert!(err.starts_with(msg), "{err}");
        }
        assert!(serde_json::from_value::<WidgetUpdate>(json!({"colour": {}})).is_err());
        let removed: WidgetUpdate =
            serde_json::from_value(json!({"identity_verification": {"secret": null}})).unwrap();
        assert_eq!(removed.identity_verification.secret, SecretChange::Remove);
    }

    #[test]
    fn attachment_links_are_bound_to_widget_attachment_and_expiry() {
        let k = keys();
        let a = uuid::Uuid::now_v7();
        let sig = k.attachment_sig("wgt_a", a, 100);
        assert!(k.attachment_sig_matches("wgt_a", a, 100, &sig));
        assert!(!k.attachment_sig_matches("wgt_b", a, 100, &sig));
        assert!(!k.attachment_sig_matches("wgt_a", a, 101, &sig));
        assert!(!k.attachment_sig_matches("wgt_a", uuid::Uuid::now_v7(), 100, &sig));
    }
}
