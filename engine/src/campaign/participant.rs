//! One participant as an upload delivers it (an API body item or a CSV row), checked
//! against the campaign's fields and split into customer-profile and participant data.

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::model::{find_field, is_blank, CustomerKey, DataField, FieldLevel};
use super::schedule::parse_timezone;

/// One item of `POST …/participants`: `{"attributes": {…}, "timezone"?, "object_id"?}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantInput {
    /// Field name to value; names are the campaign's field names.
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// IANA zone for this participant's local datetimes and schedules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Lets one customer take part once per object (a loan, an order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
}

/// A participant whose attributes passed every check, ready for the upsert.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedParticipant {
    pub key: CustomerKey,
    /// Values for the shared customer profile (system fields included).
    pub customer: Map<String, Value>,
    /// Values for this campaign's participant record.
    pub participant: Map<String, Value>,
    /// The participant's own zone; `None` follows the campaign's.
    pub timezone: Option<Tz>,
    pub object_id: Option<String>,
}

impl ParticipantInput {
    /// Checks the input against the campaign's `fields` (system fields need not be
    /// listed) and returns every problem found, each prefixed with the attribute's name.
    ///
    /// Blank values (null, empty text) count as absent: they are dropped, never stored,
    /// and fail a required field. Local datetimes are read in the participant's own zone,
    /// else in `tz_default`.
    pub fn check(
        &self,
        fields: &[DataField],
        tz_default: Tz,
    ) -> Result<CheckedParticipant, Vec<String>> {
        let mut errs = Vec::new();
        let timezone = match self.timezone.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(name) => match parse_timezone(name) {
                Ok(tz) => Some(tz),
                Err(e) => {
                    errs.push(format!("timezone: {e}"));
                    None
                }
            },
        };
        let tz = timezone.unwrap_or(tz_default);

        let mut customer = Map::new();
        let mut participant = Map::new();
        for (name, value) in &self.attributes {
            if is_blank(value) {
                continue;
            }
            let Some(field) = find_field(fields, name) else {
                errs.push(format!(
                    "{name}: unknown attribute (not a field of this campaign)"
                ));
                continue;
            };
            if !field.import {
                errs.push(format!(
                    "{name}: this field is not imported (import is off)"
                ));
                continue;
            }
            match field.field_type.coerce(value, tz) {
                Ok(v) => {
                    let target = match field.level {
                        FieldLevel::CustomerProfile => &mut customer,
                        FieldLevel::Participant => &mut participant,
                    };
                    target.insert(name.clone(), v);
                }
                Err(e) => errs.push(format!("{name}: {e}")),
            }
        }
        for f in fields.iter().filter(|f| f.required) {
            let present = self.attributes.get(&f.name).is_some_and(|v| !is_blank(v));
            if !present {
                errs.push(format!("{}: is required", f.name));
            }
        }

        let key = match CustomerKey::from_attributes(&customer) {
            Ok(key) => Some(key),
            Err(e) => {
                // A bad e-mail or phone is reported above already; only say what is missing.
                if !errs
                    .iter()
                    .any(|m| m.starts_with("email: ") || m.starts_with("phone: "))
                {
                    errs.push(e);
                }
                None
            }
        };

        let object_id = self
            .object_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        match key {
            Some(key) if errs.is_empty() => Ok(CheckedParticipant {
                key,
                customer,
                participant,
                timezone,
                object_id,
            }),
            _ => Err(errs),
        }
    }
}

/// The upsert rule: `new` values replace `existing` ones, but blank or absent values
/// never overwrite (an empty CSV cell leaves the stored value alone).
pub fn merge(existing: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut merged = existing.clone();
    for (name, value) in new {
        if !is_blank(value) {
            merged.insert(name.clone(), value.clone());
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::model::FieldType;
    use serde_json::json;

    fn field(name: &str, field_type: FieldType, level: FieldLevel, required: bool) -> DataField {
        DataField {
            title: String::new(),
            name: name.into(),
            description: String::new(),
            field_type,
            level,
            import: true,
            required,
        }
    }

    fn fields() -> Vec<DataField> {
        vec![
            field(
                "name",
                FieldType::String,
                FieldLevel::CustomerProfile,
                false,
            ),
            field("due_date", FieldType::Date, FieldLevel::Participant, true),
            field("paid", FieldType::Bool, FieldLevel::Participant, false),
            field(
                "remind_at",
                FieldType::Datetime,
                FieldLevel::Participant,
                false,
            ),
            DataField {
                import: false,
                ..field("score", FieldType::Int, FieldLevel::Participant, false)
            },
        ]
    }

    fn input(v: Value) -> ParticipantInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn parses_the_seed_body() {
        let body: Vec<ParticipantInput> = serde_json::from_value(json!([{
            "attributes": {
                "external_id": "cust_123",
                "email": "alex@example.com",
                "due_date": "2026-06-30"
            },
            "timezone": "Europe/London",
            "object_id": "loan_456"
        }]))
        .unwrap();
        let p = body[0].check(&fields(), Tz::UTC).unwrap();
        assert_eq!(p.key, CustomerKey::ExternalId("cust_123".into()));
        assert_eq!(
            Value::Object(p.customer),
            json!({"external_id": "cust_123", "email": "alex@example.com"})
        );
        assert_eq!(
            Value::Object(p.participant),
            json!({"due_date": "2026-06-30"})
        );
        assert_eq!(p.timezone, Some(Tz::Europe__London));
        assert_eq!(p.object_id.as_deref(), Some("loan_456"));
        assert!(serde_json::from_value::<ParticipantInput>(json!({"attrs": {}})).is_err());
    }

    #[test]
    fn splits_and_coerces_by_level_and_type() {
        let p = input(json!({"attributes": {
            "phone": "+1 (555) 123-4567",
            "name": "  Alex ",
            "due_date": "2026-06-30",
            "paid": "no",
            "remind_at": "2026-06-29 09:00",
            "telegram_id": 12345
        }, "timezone": "America/New_York"}))
        .check(&fields(), Tz::UTC)
        .unwrap();
        assert_eq!(p.key, CustomerKey::Phone("+15551234567".into()));
        assert_eq!(
            Value::Object(p.customer),
            json!({"phone": "+15551234567", "name": "Alex", "telegram_id": "12345"})
        );
        // The local datetime is read in the participant's zone (EDT, UTC-4).
        assert_eq!(
            Value::Object(p.participant),
            json!({"due_date": "2026-06-30", "paid": false, "remind_at": "2026-06-29T13:00:00Z"})
        );
    }

    #[test]
    fn local_datetimes_default_to_the_campaign_zone() {
        let p = input(json!({"attributes": {
            "email": "a@b.io", "due_date": "2026-01-10", "remind_at": "2026-01-09 09:00"
        }}))
        .check(&fields(), Tz::Europe__Berlin)
        .unwrap();
        assert_eq!(p.timezone, None);
        assert_eq!(p.participant["remind_at"], json!("2026-01-09T08:00:00Z"));
    }

    #[test]
    fn reports_every_problem() {
        // Keys in name order, so the report reads the same whatever map order serde_json uses.
        let errs = input(json!({"attributes": {
            "due_date": "",
            "email": "not-an-email",
            "nickname": "Al",
            "paid": "perhaps",
            "score": 5
        }, "timezone": "Moon/Base"}))
        .check(&fields(), Tz::UTC)
        .unwrap_err();
        assert_eq!(
            errs,
            vec![
                "timezone: \"Moon/Base\" is not an IANA time zone (such as \"Europe/London\")",
                "email: \"not-an-email\" is not an e-mail address",
                "nickname: unknown attribute (not a field of this campaign)",
                "paid: \"perhaps\" is not a boolean (true/false, yes/no or 1/0)",
                "score: this field is not imported (import is off)",
                "due_date: is required",
            ]
        );
    }

    #[test]
    fn needs_an_identity() {
        let errs = input(json!({"attributes": {"name": "Alex", "due_date": "2026-06-30"}}))
            .check(&fields(), Tz::UTC)
            .unwrap_err();
        assert_eq!(
            errs,
            vec!["a participant needs external_id, email or phone"]
        );
        let errs = input(json!({"attributes": {"external_id": "  ", "due_date": "2026-06-30"}}))
            .check(&fields(), Tz::UTC)
            .unwrap_err();
        assert_eq!(
            errs,
            vec!["a participant needs external_id, email or phone"]
        );
    }

    #[test]
    fn listed_system_fields_can_be_required() {
        let mut fs = fields();
        fs.push(field(
            "phone",
            FieldType::Phone,
            FieldLevel::CustomerProfile,
            true,
        ));
        let errs = input(json!({"attributes": {"email": "a@b.io", "due_date": "2026-06-30"}}))
            .check(&fs, Tz::UTC)
            .unwrap_err();
        assert_eq!(errs, vec!["phone: is required"]);
    }

    #[test]
    fn blank_object_id_and_timezone_are_absent() {
        let p = input(json!({
            "attributes": {"email": "a@b.io", "due_date": "2026-06-30", "name": null},
            "timezone": " ", "object_id": ""
        }))
        .check(&fields(), Tz::UTC)
        .unwrap();
        assert_eq!(p.timezone, None);
        assert_eq!(p.object_id, None);
        assert!(!p.customer.contains_key("name"));
    }

    #[test]
    fn merge_never_overwrites_with_blanks() {
        let existing = json!({"name": "Alex", "city": "Berlin", "score": 3});
        let new = json!({"name": "", "city": "Paris", "score": null, "paid": false, "tag": "  "});
        let merged = merge(existing.as_object().unwrap(), new.as_object().unwrap());
        assert_eq!(
            Value::Object(merged),
            json!({"name": "Alex", "city": "Paris", "score": 3, "paid": false})
        );
        assert!(merge(&Map::new(), &Map::new()).is_empty());
    }
}
