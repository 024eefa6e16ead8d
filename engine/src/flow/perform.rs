//! The pure side of performing a flow's actions: a participant's data as a walk reads
//! and changes it (collecting the changes as patches for the store), where an
//! update_field takes its values from, and when a start_communication goes out.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use super::compiled::{Assignment, Property, Scope, Source};
use super::eval::EvalContext;
use super::schedule::{BaseDate, Plan, Schedule};
use crate::campaign::ScheduleBase;

/// A participant's data during a flow run, with what the run changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParticipantData {
    pub customer: Map<String, Value>,
    pub participant: Map<String, Value>,
    /// The results of the participant's latest ended communication (read-only).
    pub result: Map<String, Value>,
    /// What the run wrote (`null`: removed), for the store to merge.
    pub customer_patch: Map<String, Value>,
    pub participant_patch: Map<String, Value>,
}

impl ParticipantData {
    pub fn new(
        customer: Map<String, Value>,
        participant: Map<String, Value>,
        result: Map<String, Value>,
    ) -> ParticipantData {
        ParticipantData {
            customer,
            participant,
            result,
            ..ParticipantData::default()
        }
    }

    pub fn context(&self, today: NaiveDate) -> EvalContext<'_> {
        EvalContext {
            customer: &self.customer,
            participant: &self.participant,
            result: &self.result,
            today,
        }
    }

    /// Writes a customer or participant attribute; `null` removes it. Results are the
    /// agent's and are never written by a flow (validation rejects such targets).
    pub fn set(&mut self, property: &Property, value: Value) {
        let (map, patch) = match property.scope {
            Scope::Customer => (&mut self.customer, &mut self.customer_patch),
            Scope::Participant => (&mut self.participant, &mut self.participant_patch),
            Scope::Result => return,
        };
        if value.is_null() {
            map.remove(&property.name);
        } else {
            map.insert(property.name.clone(), value.clone());
        }
        patch.insert(property.name.clone(), value);
    }

    /// Performs an update_field: each assignment in order, so a later one sees an
    /// earlier one's value. A source property that is not set clears the target.
    pub fn assign(&mut self, assignments: &[Assignment], today: NaiveDate) {
        for a in assignments {
            let value = match &a.source {
                Source::Value(v) => v.clone(),
                Source::Property(p) => self.context(today).get(p).cloned().unwrap_or(Value::Null),
            };
            self.set(&a.target, value);
        }
    }

    /// What a communication's schedule counts from: today (a calendar date in `tz`), or a
    /// date or datetime property. An error says why it cannot be planned.
    pub fn schedule_base(
        &self,
        base: &BaseDate,
        tz: Tz,
        now: DateTime<Utc>,
    ) -> Result<ScheduleBase, String> {
        match base {
            BaseDate::Today => Ok(ScheduleBase::Date(crate::campaign::today_in(tz, now))),
            BaseDate::Property(p) => {
                let today = crate::campaign::today_in(tz, now);
                let ctx = self.context(today);
                let value = ctx
                    .get(p)
                    .ok_or_else(|| format!("{p} is not set: nothing to schedule from"))?;
                let text = value
                    .as_str()
                    .ok_or_else(|| format!("{p} is not a date: {value}"))?;
                if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                    return Ok(ScheduleBase::Date(d));
                }
                DateTime::parse_from_rfc3339(text)
                    .map(|t| ScheduleBase::Instant(t.with_timezone(&Utc)))
                    .map_err(|_| format!("{p} is neither a date nor a datetime: {text:?}"))
            }
        }
    }

    /// When a communication with `schedule` starts and is canceled, planned at `now` in
    /// the scheduling zone `tz`.
    pub fn plan(&self, schedule: &Schedule, tz: Tz, now: DateTime<Utc>) -> Result<Plan, String> {
        let base = self.schedule_base(&schedule.base, tz, now)?;
        Ok(schedule.plan(base, tz, now))
    }

    /// The values of `properties` that are set, keyed by their paths (the customer
    /// context a communication passes to its agent).
    pub fn context_values(&self, properties: &[Property], today: NaiveDate) -> Map<String, Value> {
        let ctx = self.context(today);
        properties
            .iter()
            .filter_map(|p| ctx.get(p).map(|v| (p.to_string(), v.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};
    use serde_json::json;

    use super::*;
    use crate::flow::Window;

    fn prop(path: &str) -> Property {
        Property::parse(path).unwrap()
    }

    fn data() -> ParticipantData {
        ParticipantData::new(
            json!({"name": "Ann", "phone": "4917"})
                .as_object()
                .unwrap()
                .clone(),
            json!({"due_date": "2026-06-30", "amount": 120, "called_at": "2026-06-01T10:00:00Z"})
                .as_object()
                .unwrap()
                .clone(),
            json!({"outcome": "promised"}).as_object().unwrap().clone(),
        )
    }

    #[test]
    fn assignments_apply_in_order_and_are_collected_as_patches() {
        let mut d = data();
        let today = NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();
        d.assign(
            &[
                Assignment {
                    target: prop("participant.status"),
                    source: Source::Property(prop("result.outcome")),
                },
                Assignment {
                    target: prop("customer.last_status"),
                    source: Source::Property(prop("participant.status")),
                },
                Assignment {
                    target: prop("participant.amount"),
                    source: Source::Value(Value::Null),
                },
                Assignment {
                    target: prop("participant.note"),
                    source: Source::Property(prop("participant.missing")),
                },
            ],
            today,
        );
        assert_eq!(d.participant["status"], json!("promised"));
        assert_eq!(d.customer["last_status"], json!("promised"));
        assert!(!d.participant.contains_key("amount"));
        assert_eq!(
            Value::Object(d.participant_patch.clone()),
            json!({"status": "promised", "amount": null, "note": null})
        );
        assert_eq!(
            Value::Object(d.customer_patch.clone()),
            json!({"last_status": "promised"})
        );
        d.set(&prop("result.outcome"), json!("x"));
        assert_eq!(
            d.result["outcome"],
            json!("promised"),
            "results are read-only"
        );
    }

    #[test]
    fn plans_from_a_date_a_datetime_or_today() {
        let d = data();
        let tz = chrono_tz::Europe::Berlin;
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 5, 0, 0).unwrap();
        let schedule = |base| Schedule {
            base,
            offset: TimeDelta::days(-2),
            window: Some(Window {
                from: chrono::NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
                to: chrono::NaiveTime::from_hms_opt(20, 0, 0).unwrap(),
            }),
            duration: TimeDelta::hours(4),
        };
        let p = d
            .plan(
                &schedule(BaseDate::Property(prop("participant.due_date"))),
                tz,
                now,
            )
            .unwrap();
        // 28 June 09:00 in Berlin (UTC+2).
        assert_eq!(p.start, Utc.with_ymd_and_hms(2026, 6, 28, 7, 0, 0).unwrap());
        assert_eq!(
            p.cancel_at,
            Utc.with_ymd_and_hms(2026, 6, 28, 11, 0, 0).unwrap()
        );
        // Today minus two days is past: as soon as the window opens today.
        let p = d.plan(&schedule(BaseDate::Today), tz, now).unwrap();
        assert_eq!(p.start, Utc.with_ymd_and_hms(2026, 6, 1, 7, 0, 0).unwrap());
        let err = d
            .plan(
                &schedule(BaseDate::Property(prop("participant.paid_on"))),
                tz,
                now,
            )
            .unwrap_err();
        assert!(err.contains("participant.paid_on is not set"), "{err}");
        let base = d
            .schedule_base(&BaseDate::Property(prop("participant.called_at")), tz, now)
            .unwrap();
        assert_eq!(
            base,
            ScheduleBase::Instant(Utc.with_ymd_and_hms(2026, 6, 1, 10, 0, 0).unwrap())
        );
    }

    #[test]
    fn context_values_keep_the_set_ones_by_path() {
        let d = data();
        let today = NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();
        let v = d.context_values(
            &[
                prop("participant.amount"),
                prop("customer.name"),
                prop("customer.email"),
            ],
            today,
        );
        assert_eq!(
            Value::Object(v),
            json!({"participant.amount": 120, "customer.name": "Ann"})
        );
    }
}
