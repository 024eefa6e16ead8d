//! When an operator is on shift: weekdays and hours in the tenant's time zone (a shift
//! may run past midnight; it then belongs to the weekday it starts on).

use chrono::{DateTime, Datelike, NaiveTime, TimeDelta, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSchedule {
    /// `mon` … `sun`.
    #[serde(with = "weekdays")]
    pub days: Vec<Weekday>,
    /// `HH:MM`.
    #[serde(with = "hhmm")]
    pub from: NaiveTime,
    /// `HH:MM`; equal to `from`: the whole day.
    #[serde(with = "hhmm")]
    pub to: NaiveTime,
}

impl OperatorSchedule {
    /// Why the schedule cannot work, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.days.is_empty() {
            return Err("schedule.days: at least one weekday".into());
        }
        Ok(())
    }

    /// Whether `now` falls in a shift, read in `tz`.
    pub fn on_shift(&self, tz: Tz, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&tz);
        let (day, time) = (local.weekday(), local.time());
        if self.from == self.to {
            return self.days.contains(&day);
        }
        if self.from < self.to {
            return self.days.contains(&day) && time >= self.from && time < self.to;
        }
        // Overnight: the evening part is today's shift, the morning part yesterday's.
        let yesterday = (local - TimeDelta::days(1)).weekday();
        (self.days.contains(&day) && time >= self.from)
            || (self.days.contains(&yesterday) && time < self.to)
    }
}

mod weekdays {
    use super::*;

    const NAMES: [(&str, Weekday); 7] = [
        ("mon", Weekday::Mon),
        ("tue", Weekday::Tue),
        ("wed", Weekday::Wed),
        ("thu", Weekday::Thu),
        ("fri", Weekday::Fri),
        ("sat", Weekday::Sat),
        ("sun", Weekday::Sun),
    ];

    pub fn serialize<S: Serializer>(days: &[Weekday], s: S) -> Result<S::Ok, S::Error> {
        let names: Vec<&str> = days
            .iter()
            .filter_map(|d| NAMES.iter().find(|(_, w)| w == d).map(|(n, _)| *n))
            .collect();
        names.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Weekday>, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        let mut days = Vec::new();
        for n in names {
            let day = NAMES
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(n.trim()))
                .map(|(_, w)| *w)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{n:?} is not a weekday (mon, tue, wed, thu, fri, sat, sun)"
                    ))
                })?;
            if !days.contains(&day) {
                days.push(day);
            }
        }
        Ok(days)
    }
}

mod hhmm {
    use super::*;

    pub fn serialize<S: Serializer>(t: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
        t.format("%H:%M").to_string().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        let s = String::deserialize(d)?;
        NaiveTime::parse_from_str(s.trim(), "%H:%M")
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a time of day (HH:MM)")))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn schedule(v: serde_json::Value) -> OperatorSchedule {
        serde_json::from_value(v).unwrap()
    }

    fn berlin(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        // June 2026: the 1st is a Monday.
        chrono_tz::Europe::Berlin
            .with_ymd_and_hms(2026, 6, d, h, m, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn day_shifts_hold_from_the_opening_to_just_before_the_close() {
        let s = schedule(
            json!({"days": ["mon", "Tue", "wed", "thu", "fri"], "from": "09:00", "to": "18:00"}),
        );
        let tz = chrono_tz::Europe::Berlin;
        assert!(!s.on_shift(tz, berlin(1, 8, 59)));
        assert!(s.on_shift(tz, berlin(1, 9, 0)));
        assert!(s.on_shift(tz, berlin(1, 17, 59)));
        assert!(!s.on_shift(tz, berlin(1, 18, 0)));
        assert!(!s.on_shift(tz, berlin(6, 12, 0)), "Saturday");
        // The same instant read in New York is 06:00: off shift there.
        assert!(!s.on_shift(chrono_tz::America::New_York, berlin(1, 12, 0)));
    }

    #[test]
    fn night_shifts_belong_to_the_day_they_start() {
        let s = schedule(json!({"days": ["fri"], "from": "22:00", "to": "06:00"}));
        let tz = chrono_tz::Europe::Berlin;
        assert!(s.on_shift(tz, berlin(5, 23, 0)), "Friday night");
        assert!(
            s.on_shift(tz, berlin(6, 5, 59)),
            "Saturday morning, Friday's shift"
        );
        assert!(!s.on_shift(tz, berlin(6, 6, 0)));
        assert!(
            !s.on_shift(tz, berlin(5, 5, 0)),
            "Friday morning is Thursday's"
        );
        let all_day = schedule(json!({"days": ["sun"], "from": "00:00", "to": "00:00"}));
        assert!(all_day.on_shift(tz, berlin(7, 3, 0)));
        assert!(!all_day.on_shift(tz, berlin(6, 23, 59)));
    }

    #[test]
    fn bad_schedules_are_refused() {
        assert!(serde_json::from_value::<OperatorSchedule>(
            json!({"days": ["funday"], "from": "09:00", "to": "17:00"})
        )
        .is_err());
        assert!(serde_json::from_value::<OperatorSchedule>(
            json!({"days": ["mon"], "from": "9am", "to": "17:00"})
        )
        .is_err());
        assert!(
            schedule(json!({"days": [], "from": "09:00", "to": "17:00"}))
                .check()
                .is_err()
        );
        let s = schedule(json!({"days": ["mon", "mon"], "from": "09:00", "to": "17:00"}));
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"days": ["mon"], "from": "09:00", "to": "17:00"})
        );
    }
}
