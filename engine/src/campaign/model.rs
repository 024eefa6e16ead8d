//! Campaigns and their data fields: what an operator configures before uploading
//! participants, and how one attribute value is checked against its field's type.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::schedule::{parse_timezone, resolve_local};
use crate::agent::{ValidationError, ValidationErrors};
use crate::model::TenantId;
use crate::results::FieldType as ContactType;

pub type CampaignId = Uuid;

/// A campaign's lifecycle; flows are locked while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CampaignStatus {
    Draft,
    Running,
    Stopped,
}

impl CampaignStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignStatus::Draft => "draft",
            CampaignStatus::Running => "running",
            CampaignStatus::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<CampaignStatus> {
        [
            CampaignStatus::Draft,
            CampaignStatus::Running,
            CampaignStatus::Stopped,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: CampaignId,
    pub tenant_id: TenantId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub status: CampaignStatus,
    /// The IANA zone that schedules and date checks use for participants without their own.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn default_timezone() -> String {
    "UTC".into()
}

impl Campaign {
    /// A new draft campaign in UTC with a time-ordered id.
    pub fn new(tenant_id: TenantId, name: impl Into<String>, now: DateTime<Utc>) -> Campaign {
        Campaign {
            id: Uuid::now_v7(),
            tenant_id,
            name: name.into(),
            description: String::new(),
            status: CampaignStatus::Draft,
            timezone: default_timezone(),
            created_at: now,
            updated_at: now,
        }
    }

    /// Checks what an operator can set: a name and a known time zone.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = Vec::new();
        if self.name.trim().is_empty() {
            errs.push(error("name", "must not be empty".into()));
        }
        if let Err(e) = parse_timezone(&self.timezone) {
            errs.push(error("timezone", e));
        }
        finish(errs)
    }

    /// The campaign's scheduling zone; an invalid stored name falls back to UTC so a bad
    /// row cannot stop the scheduler (`validate` keeps such names out).
    pub fn tz(&self) -> Tz {
        parse_timezone(&self.timezone).unwrap_or(Tz::UTC)
    }
}

/// A data field's value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Email,
    Phone,
    Int,
    Float,
    Bool,
    Date,
    Datetime,
}

/// Where a field's value lives: on the customer profile shared by every campaign, or on
/// this campaign's participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldLevel {
    CustomerProfile,
    Participant,
}

/// One column of a campaign's Data tab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataField {
    #[serde(default)]
    pub title: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    pub level: FieldLevel,
    /// Whether uploads (CSV and API) may set it.
    #[serde(default)]
    pub import: bool,
    /// Whether every uploaded participant must carry it; only with `import`.
    #[serde(default)]
    pub required: bool,
}

/// The identity and channel fields every campaign has: (name, title, type).
const SYSTEM_FIELDS: [(&str, &str, FieldType); 7] = [
    ("external_id", "External ID", FieldType::String),
    ("email", "Email", FieldType::Email),
    ("phone", "Phone", FieldType::Phone),
    ("telegram_id", "Telegram ID", FieldType::String),
    ("web_id", "Web ID", FieldType::String),
    ("telegram_username", "Telegram Username", FieldType::String),
    ("whatsapp_id", "WhatsApp ID", FieldType::String),
];

/// Upload columns with a meaning of their own, so no field may take their names.
const RESERVED_NAMES: [&str; 2] = ["timezone", "object_id"];

fn system_field(name: &str) -> Option<DataField> {
    SYSTEM_FIELDS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(name, title, field_type)| DataField {
            title: title.into(),
            name: name.into(),
            description: String::new(),
            field_type,
            level: FieldLevel::CustomerProfile,
            import: true,
            required: false,
        })
}

/// The locked system fields as they are when a campaign does not list them: customer
/// profile level, importable, optional.
pub fn system_fields() -> Vec<DataField> {
    SYSTEM_FIELDS
        .iter()
        .filter_map(|(name, _, _)| system_field(name))
        .collect()
}

/// The field an attribute name refers to: the campaign's own entry, else the system
/// field's defaults.
pub(crate) fn find_field(fields: &[DataField], name: &str) -> Option<DataField> {
    fields
        .iter()
        .find(|f| f.name == name)
        .cloned()
        .or_else(|| system_field(name))
}

/// Checks a campaign's field list; reports every problem, addressed as `fields[i].…`.
pub fn validate_fields(fields: &[DataField]) -> Result<(), ValidationErrors> {
    let mut errs = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        let at = |part: &str| format!("fields[{i}].{part}");
        if !valid_name(&f.name) {
            errs.push(error(
                &at("name"),
                format!(
                    "{:?} must start with a lower-case letter and use only a-z, 0-9 and _ (64 at most)",
                    f.name
                ),
            ));
        } else if let Some(first) = fields[..i].iter().position(|o| o.name == f.name) {
            errs.push(error(
                &at("name"),
                format!(
                    "duplicate field name {:?} (first at fields[{first}])",
                    f.name
                ),
            ));
        } else if RESERVED_NAMES.contains(&f.name.as_str()) {
            errs.push(error(
                &at("name"),
                format!(
                    "{:?} is reserved for the upload column of that name",
                    f.name
                ),
            ));
        }
        if let Some(sys) = system_field(&f.name) {
            if f.field_type != sys.field_type {
                errs.push(error(
                    &at("type"),
                    format!(
                        "{:?} is a system field; its type is {} and cannot change",
                        f.name,
                        sys.field_type.as_str()
                    ),
                ));
            }
            if f.level != sys.level {
                errs.push(error(
                    &at("level"),
                    format!(
                        "{:?} is a system field; it lives on the customer profile",
                        f.name
                    ),
                ));
            }
        }
        if f.required && !f.import {
            errs.push(error(
                &at("required"),
                "only imported fields can be required (set import too)".into(),
            ));
        }
    }
    finish(errs)
}

/// `^[a-z][a-z0-9_]{0,63}$`, spelled out.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn error(path: &str, message: String) -> ValidationError {
    ValidationError {
        path: path.into(),
        message,
    }
}

fn finish(errs: Vec<ValidationError>) -> Result<(), ValidationErrors> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errs))
    }
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Email => "email",
            FieldType::Phone => "phone",
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::Bool => "bool",
            FieldType::Date => "date",
            FieldType::Datetime => "datetime",
        }
    }

    /// Checks a JSON value against the type and returns it in its stored form. Local
    /// datetimes are read in `tz`.
    pub fn coerce(self, value: &Value, tz: Tz) -> Result<Value, String> {
        match (self, value) {
            (_, Value::String(text)) => self.parse_text(text, tz),
            (FieldType::Int, Value::Number(n)) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0)
                        .and_then(float_to_i64)
                })
                .map(Value::from)
                .ok_or_else(|| format!("{n} is not an integer")),
            (FieldType::Float, Value::Number(_)) => Ok(value.clone()),
            (FieldType::Bool, Value::Bool(_)) => Ok(value.clone()),
            (FieldType::Bool, Value::Number(n)) => match n.as_i64() {
                Some(0) => Ok(Value::Bool(false)),
                Some(1) => Ok(Value::Bool(true)),
                _ => Err(format!("{n} is not a boolean")),
            },
            (FieldType::String | FieldType::Phone, Value::Number(n)) => {
                self.parse_text(&n.to_string(), tz)
            }
            (FieldType::String, Value::Bool(b)) => Ok(Value::String(b.to_string())),
            (_, other) => Err(format!("expected {}, got {other}", self.expectation())),
        }
    }

    /// Checks a text value (a CSV cell, a JSON string) and returns it in its stored form:
    /// numbers and booleans typed, e-mails lower-cased, phones as `+` and digits, dates as
    /// `YYYY-MM-DD`, datetimes as RFC 3339 UTC (local ones read in `tz`).
    pub fn parse_text(self, text: &str, tz: Tz) -> Result<Value, String> {
        let t = text.trim();
        match self {
            FieldType::String => Ok(Value::String(t.to_string())),
            FieldType::Email => ContactType::Email.coerce(&Value::String(t.to_string())),
            FieldType::Phone => ContactType::Phone.coerce(&Value::String(t.to_string())),
            FieldType::Int => t
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("{t:?} is not an integer")),
            FieldType::Float => t
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| format!("{t:?} is not a number")),
            FieldType::Bool => match t.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Value::Bool(true)),
                "false" | "0" | "no" => Ok(Value::Bool(false)),
                _ => Err(format!(
                    "{t:?} is not a boolean (true/false, yes/no or 1/0)"
                )),
            },
            FieldType::Date => parse_date(t).map(|d| Value::String(d.to_string())),
            FieldType::Datetime => parse_datetime(t, tz)
                .map(|d| Value::String(d.to_rfc3339_opts(SecondsFormat::AutoSi, true))),
        }
    }

    fn expectation(self) -> &'static str {
        match self {
            FieldType::String | FieldType::Email | FieldType::Phone => "text",
            FieldType::Int => "an integer",
            FieldType::Float => "a number",
            FieldType::Bool => "a boolean",
            FieldType::Date => "a date (YYYY-MM-DD)",
            FieldType::Datetime => "a datetime (RFC 3339 or YYYY-MM-DD HH:MM[:SS])",
        }
    }
}

/// Only integral floats inside the `i64` range convert; the bounds are exact powers of two.
fn float_to_i64(f: f64) -> Option<i64> {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
    if (-LIMIT..LIMIT).contains(&f) {
        // In range and integral, so the cast is exact.
        Some(f as i64)
    } else {
        None
    }
}

fn parse_date(t: &str) -> Result<NaiveDate, String> {
    // chrono accepts single-digit months and days; insist on the ISO spelling.
    if t.len() == 10 {
        if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
            return Ok(d);
        }
    }
    Err(format!("{t:?} is not a date (YYYY-MM-DD)"))
}

fn parse_datetime(t: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    const LOCAL: [&str; 4] = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ];
    LOCAL
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
        .map(|local| resolve_local(tz, local))
        .ok_or_else(|| {
            format!("{t:?} is not a datetime (RFC 3339, or YYYY-MM-DD HH:MM[:SS] local time)")
        })
}

/// How a participant's customer profile is found: by external id, else e-mail, else phone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum CustomerKey {
    ExternalId(String),
    Email(String),
    Phone(String),
}

impl CustomerKey {
    /// The key from a participant's attributes; e-mail and phone are normalised so the
    /// same person spelled twice finds the same profile.
    pub fn from_attributes(attributes: &Map<String, Value>) -> Result<CustomerKey, String> {
        let present = |name: &str| attributes.get(name).filter(|v| !is_blank(v));
        let text = |name: &str, value: &Value, field_type: FieldType| match field_type
            .coerce(value, Tz::UTC)
        {
            Ok(Value::String(s)) => Ok(s),
            Ok(other) => Err(format!("{name}: expected text, got {other}")),
            Err(e) => Err(format!("{name}: {e}")),
        };
        if let Some(v) = present("external_id") {
            return text("external_id", v, FieldType::String).map(CustomerKey::ExternalId);
        }
        if let Some(v) = present("email") {
            return text("email", v, FieldType::Email).map(CustomerKey::Email);
        }
        if let Some(v) = present("phone") {
            return text("phone", v, FieldType::Phone).map(CustomerKey::Phone);
        }
        Err("a participant needs external_id, email or phone".into())
    }

    pub fn kind(&self) -> &'static str {
        match self {
            CustomerKey::ExternalId(_) => "external_id",
            CustomerKey::Email(_) => "email",
            CustomerKey::Phone(_) => "phone",
        }
    }

    pub fn value(&self) -> &str {
        match self {
            CustomerKey::ExternalId(v) | CustomerKey::Email(v) | CustomerKey::Phone(v) => v,
        }
    }
}

/// "No value": null or text that is empty after trimming. Uploads never store or
/// overwrite with it.
pub fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(name: &str, field_type: FieldType, level: FieldLevel) -> DataField {
        DataField {
            title: name.into(),
            name: name.into(),
            description: String::new(),
            field_type,
            level,
            import: true,
            required: false,
        }
    }

    fn errors(fields: &[DataField]) -> Vec<String> {
        validate_fields(fields)
            .unwrap_err()
            .0
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    fn berlin() -> Tz {
        parse_timezone("Europe/Berlin").unwrap()
    }

    #[test]
    fn campaign_serde_and_defaults() {
        let now = Utc::now();
        let c = Campaign::new(Uuid::now_v7(), "Reminders", now);
        assert_eq!(c.id.get_version_num(), 7);
        assert_eq!(c.status, CampaignStatus::Draft);
        assert_eq!(c.timezone, "UTC");
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["status"], "draft");
        let mut v = v;
        v.as_object_mut().unwrap().remove("timezone");
        v["status"] = json!("running");
        let back: Campaign = serde_json::from_value(v).unwrap();
        assert_eq!(back.timezone, "UTC");
        assert_eq!(back.status, CampaignStatus::Running);
        assert_eq!(
            CampaignStatus::parse("stopped"),
            Some(CampaignStatus::Stopped)
        );
        assert_eq!(CampaignStatus::parse("Stopped"), None);
    }

    #[test]
    fn campaign_validation() {
        let mut c = Campaign::new(Uuid::now_v7(), " ", Utc::now());
        c.timezone = "Europe/Atlantis".into();
        let msgs: Vec<String> = c
            .validate()
            .unwrap_err()
            .0
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(msgs.len(), 2);
        assert!(msgs[0].starts_with("name: "));
        assert!(msgs[1].starts_with("timezone: "));
        assert_eq!(c.tz(), Tz::UTC);
        c.name = "ok".into();
        c.timezone = "Pacific/Kiritimati".into();
        assert!(c.validate().is_ok());
        assert_eq!(c.tz(), Tz::Pacific__Kiritimati);
    }

    #[test]
    fn field_serde_uses_the_documented_spelling() {
        let f: DataField = serde_json::from_value(json!({
            "title": "Due date", "name": "due_date", "type": "date",
            "level": "participant", "import": true, "required": true
        }))
        .unwrap();
        assert_eq!(f.field_type, FieldType::Date);
        assert_eq!(f.level, FieldLevel::Participant);
        assert_eq!(serde_json::to_value(&f).unwrap()["type"], "date");
        let bad = serde_json::from_value::<DataField>(json!({
            "name": "x", "type": "text", "level": "participant"
        }));
        assert!(bad.is_err());
        let unknown = serde_json::from_value::<DataField>(json!({
            "name": "x", "type": "int", "level": "customer_profile", "colour": "red"
        }));
        assert!(unknown.is_err());
    }

    #[test]
    fn valid_fields_pass() {
        let mut email = field("email", FieldType::Email, FieldLevel::CustomerProfile);
        email.required = true;
        let fields = vec![
            email,
            field("due_date", FieldType::Date, FieldLevel::Participant),
            field("name", FieldType::String, FieldLevel::CustomerProfile),
            field(
                &format!("a{}", "b".repeat(63)),
                FieldType::Int,
                FieldLevel::Participant,
            ),
        ];
        assert!(validate_fields(&fields).is_ok());
        assert!(validate_fields(&[]).is_ok());
    }

    #[test]
    fn field_names_are_checked() {
        let fields = vec![
            field("Name", FieldType::String, FieldLevel::Participant),
            field("1st", FieldType::String, FieldLevel::Participant),
            field("", FieldType::String, FieldLevel::Participant),
            field(
                &format!("a{}", "b".repeat(64)),
                FieldType::String,
                FieldLevel::Participant,
            ),
            field("score", FieldType::Int, FieldLevel::Participant),
            field("score", FieldType::Float, FieldLevel::Participant),
            field("timezone", FieldType::String, FieldLevel::Participant),
            field("has-dash", FieldType::String, FieldLevel::Participant),
        ];
        let msgs = errors(&fields);
        assert_eq!(msgs.len(), 7, "{msgs:#?}");
        assert!(msgs[0].starts_with("fields[0].name: \"Name\" must start"));
        assert!(msgs[1].starts_with("fields[1].name: "));
        assert!(msgs[2].starts_with("fields[2].name: "));
        assert!(msgs[3].starts_with("fields[3].name: "));
        assert_eq!(
            msgs[4],
            "fields[5].name: duplicate field name \"score\" (first at fields[4])"
        );
        assert!(msgs[5].starts_with("fields[6].name: \"timezone\" is reserved"));
        assert!(msgs[6].starts_with("fields[7].name: "));
    }

    #[test]
    fn system_fields_are_locked() {
        let fields = vec![
            field(
                "external_id",
                FieldType::String,
                FieldLevel::CustomerProfile,
            ),
            field("phone", FieldType::String, FieldLevel::CustomerProfile),
            field("email", FieldType::Email, FieldLevel::Participant),
        ];
        assert_eq!(
            errors(&fields),
            vec![
                "fields[1].type: \"phone\" is a system field; its type is phone and cannot change",
                "fields[2].level: \"email\" is a system field; it lives on the customer profile",
            ]
        );
    }

    #[test]
    fn required_needs_import() {
        let mut f = field("score", FieldType::Int, FieldLevel::Participant);
        f.import = false;
        f.required = true;
        assert_eq!(
            errors(&[f]),
            vec!["fields[0].required: only imported fields can be required (set import too)"]
        );
    }

    #[test]
    fn system_field_list() {
        let sys = system_fields();
        let names: Vec<&str> = sys.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "external_id",
                "email",
                "phone",
                "telegram_id",
                "web_id",
                "telegram_username",
                "whatsapp_id"
            ]
        );
        assert!(sys
            .iter()
            .all(|f| f.level == FieldLevel::CustomerProfile && f.import && !f.required));
        assert_eq!(sys[1].field_type, FieldType::Email);
        assert_eq!(sys[2].field_type, FieldType::Phone);
        assert!(validate_fields(&sys).is_ok());
        // A listed system field overrides the defaults; others fall back to them.
        let mut phone = sys[2].clone();
        phone.required = true;
        assert!(find_field(&[phone.clone()], "phone").unwrap().required);
        assert_eq!(
            find_field(&[phone], "email").unwrap().field_type,
            FieldType::Email
        );
        assert!(find_field(&[], "nickname").is_none());
    }

    #[test]
    fn coerces_text_of_every_type() {
        let tz = berlin();
        let ok = |t: FieldType, s: &str| t.parse_text(s, tz).unwrap();
        assert_eq!(ok(FieldType::String, "  Alex  "), json!("Alex"));
        assert_eq!(
            ok(FieldType::Email, " Alex@Example.COM "),
            json!("alex@example.com")
        );
        assert_eq!(
            ok(FieldType::Phone, "+49 (151) 2345-6789"),
            json!("+4915123456789")
        );
        assert_eq!(ok(FieldType::Int, " -42 "), json!(-42));
        assert_eq!(ok(FieldType::Float, "2.5"), json!(2.5));
        assert_eq!(ok(FieldType::Float, "1e3"), json!(1000.0));
        for (s, b) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("Yes", true),
            ("false", false),
            ("0", false),
            ("no", false),
        ] {
            assert_eq!(ok(FieldType::Bool, s), json!(b), "{s}");
        }
        assert_eq!(ok(FieldType::Date, "2026-06-30"), json!("2026-06-30"));
        // RFC 3339 keeps its own offset; local datetimes are read in Berlin (UTC+2 in June).
        assert_eq!(
            ok(FieldType::Datetime, "2026-06-30T10:00:00+02:00"),
            json!("2026-06-30T08:00:00Z")
        );
        assert_eq!(
            ok(FieldType::Datetime, "2026-06-30T10:00:00.250Z"),
            json!("2026-06-30T10:00:00.250Z")
        );
        assert_eq!(
            ok(FieldType::Datetime, "2026-06-30 10:00"),
            json!("2026-06-30T08:00:00Z")
        );
        assert_eq!(
            ok(FieldType::Datetime, "2026-01-30 10:00:30"),
            json!("2026-01-30T09:00:30Z")
        );
        assert_eq!(
            FieldType::Datetime
                .parse_text("2026-06-30 10:00", Tz::Pacific__Kiritimati)
                .unwrap(),
            json!("2026-06-29T20:00:00Z")
        );
    }

    #[test]
    fn rejects_bad_text() {
        let tz = berlin();
        let bad = |t: FieldType, s: &str| t.parse_text(s, tz).unwrap_err();
        assert!(bad(FieldType::Email, "alex@").contains("not an e-mail address"));
        assert!(bad(FieldType::Phone, "12-34").contains("not a phone number"));
        assert!(bad(FieldType::Int, "4.5").contains("not an integer"));
        assert!(bad(FieldType::Int, "1,000").contains("not an integer"));
        assert!(bad(FieldType::Int, "99999999999999999999").contains("not an integer"));
        assert!(bad(FieldType::Float, "NaN").contains("not a number"));
        assert!(bad(FieldType::Float, "inf").contains("not a number"));
        assert!(bad(FieldType::Float, "abc").contains("not a number"));
        assert!(bad(FieldType::Bool, "maybe").contains("not a boolean"));
        assert!(bad(FieldType::Date, "2026-6-3").contains("not a date"));
        assert!(bad(FieldType::Date, "2026-02-30").contains("not a date"));
        assert!(bad(FieldType::Date, "30.06.2026").contains("not a date"));
        assert!(bad(FieldType::Datetime, "2026-06-30").contains("not a datetime"));
        assert!(bad(FieldType::Datetime, "yesterday").contains("not a datetime"));
    }

    #[test]
    fn coerces_json_values() {
        let tz = Tz::UTC;
        let ok = |t: FieldType, v: Value| t.coerce(&v, tz).unwrap();
        let bad = |t: FieldType, v: Value| t.coerce(&v, tz).unwrap_err();
        assert_eq!(ok(FieldType::Int, json!(7)), json!(7));
        assert_eq!(ok(FieldType::Int, json!(7.0)), json!(7));
        assert_eq!(ok(FieldType::Int, json!("7")), json!(7));
        assert!(bad(FieldType::Int, json!(7.5)).contains("not an integer"));
        assert!(bad(FieldType::Int, json!(1e300)).contains("not an integer"));
        assert!(bad(FieldType::Int, json!(true)).contains("expected an integer"));
        assert_eq!(ok(FieldType::Float, json!(1.5)), json!(1.5));
        assert_eq!(ok(FieldType::Float, json!(2)), json!(2));
        assert_eq!(ok(FieldType::Bool, json!(false)), json!(false));
        assert_eq!(ok(FieldType::Bool, json!(1)), json!(true));
        assert!(bad(FieldType::Bool, json!(2)).contains("not a boolean"));
        assert_eq!(ok(FieldType::String, json!(12)), json!("12"));
        assert_eq!(ok(FieldType::String, json!(true)), json!("true"));
        assert_eq!(
            ok(FieldType::Phone, json!(4915123456789_i64)),
            json!("4915123456789")
        );
        assert!(bad(FieldType::Email, json!(5)).contains("expected text"));
        assert!(bad(FieldType::Date, json!(20260630)).contains("expected a date"));
        assert!(bad(FieldType::String, json!({"a": 1})).contains("expected text"));
        assert!(bad(FieldType::Float, json!([1])).contains("expected a number"));
        assert!(bad(FieldType::Datetime, Value::Null).contains("expected a datetime"));
    }

    #[test]
    fn customer_keys_prefer_external_id_then_email_then_phone() {
        let attrs = |v: Value| v.as_object().unwrap().clone();
        let all =
            attrs(json!({"external_id": " c1 ", "email": "a@b.io", "phone": "+1 555 123 4567"}));
        assert_eq!(
            CustomerKey::from_attributes(&all).unwrap(),
            CustomerKey::ExternalId("c1".into())
        );
        let email = attrs(json!({"external_id": "", "email": "A@B.io", "phone": "+15551234567"}));
        let key = CustomerKey::from_attributes(&email).unwrap();
        assert_eq!(key, CustomerKey::Email("a@b.io".into()));
        assert_eq!((key.kind(), key.value()), ("email", "a@b.io"));
        let phone = attrs(json!({"email": null, "phone": "+1 (555) 123-4567"}));
        assert_eq!(
            CustomerKey::from_attributes(&phone).unwrap(),
            CustomerKey::Phone("+15551234567".into())
        );
        let numeric = attrs(json!({"external_id": 1234}));
        assert_eq!(
            CustomerKey::from_attributes(&numeric).unwrap(),
            CustomerKey::ExternalId("1234".into())
        );
        assert_eq!(
            CustomerKey::from_attributes(&attrs(json!({"name": "Alex"}))).unwrap_err(),
            "a participant needs external_id, email or phone"
        );
        assert!(
            CustomerKey::from_attributes(&attrs(json!({"email": "nope"})))
                .unwrap_err()
                .starts_with("email: ")
        );
        assert_eq!(
            serde_json::to_value(CustomerKey::Phone("+1555".into())).unwrap(),
            json!({"kind": "phone", "value": "+1555"})
        );
    }

    #[test]
    fn blank_values() {
        assert!(is_blank(&Value::Null));
        assert!(is_blank(&json!("  ")));
        assert!(!is_blank(&json!(0)));
        assert!(!is_blank(&json!(false)));
        assert!(!is_blank(&json!("x")));
    }
}
