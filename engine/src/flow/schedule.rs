//! When a start_communication goes out: base date plus offset, moved into the daily
//! window in the scheduling time zone, canceled after its duration. The time-zone
//! arithmetic (DST gaps and overlaps) is [`crate::campaign`]'s.

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::compiled::Property;
pub use crate::campaign::Window;
use crate::campaign::{expires_at, next_start, ScheduleBase};

/// What a communication's planned time counts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseDate {
    /// Midnight at the start of the day the node runs.
    Today,
    /// A date property (its midnight) or a datetime property (that moment).
    Property(Property),
}

/// A compiled communication schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub base: BaseDate,
    /// Added to the base (`days` and `minutes` of the definition together).
    pub offset: TimeDelta,
    /// `None`: any time of day.
    pub window: Option<Window>,
    /// How long after its planned start an unstarted communication is canceled.
    pub duration: TimeDelta,
}

/// The outcome of [`Schedule::plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub start: DateTime<Utc>,
    /// Cancel the communication if it has not started by then.
    pub cancel_at: DateTime<Utc>,
}

impl Schedule {
    /// Plans a communication whose base (see [`BaseDate`]) resolved to `base`, in the
    /// scheduling time zone `tz`, at `now`: base plus offset, not before now (a past time
    /// means as soon as allowed), moved to the next opening of the window.
    pub fn plan(&self, base: ScheduleBase, tz: Tz, now: DateTime<Utc>) -> Plan {
        // `from == to` is the whole day to the scheduler (validation never lets a flow's
        // own window be empty).
        let window = self.window.unwrap_or(Window {
            from: NaiveTime::MIN,
            to: NaiveTime::MIN,
        });
        let start = next_start(base, self.offset, window, tz, now);
        Plan {
            start,
            cancel_at: expires_at(start, self.duration),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone};

    use super::*;

    fn local(tz: Tz, s: &str) -> DateTime<Utc> {
        let t = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        tz.from_local_datetime(&t).unwrap().with_timezone(&Utc)
    }

    fn window(from: &str, to: &str) -> Window {
        Window {
            from: NaiveTime::parse_from_str(from, "%H:%M").unwrap(),
            to: NaiveTime::parse_from_str(to, "%H:%M").unwrap(),
        }
    }

    fn date(s: &str) -> ScheduleBase {
        ScheduleBase::Date(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    }

    #[test]
    fn plans_from_the_base_into_the_window_in_the_time_zone() {
        let tz = chrono_tz::Europe::Berlin;
        let s = Schedule {
            base: BaseDate::Today,
            offset: TimeDelta::days(-2),
            window: Some(window("09:00", "20:00")),
            duration: TimeDelta::hours(4),
        };
        // Due 2026-06-30: two days before, at the window's opening, Berlin time.
        let p = s.plan(date("2026-06-30"), tz, local(tz, "2026-06-01 15:00"));
        assert_eq!(p.start, local(tz, "2026-06-28 09:00"));
        assert_eq!(p.cancel_at, local(tz, "2026-06-28 13:00"));
        // Already past: as soon as the window allows.
        let p = s.plan(date("2026-06-02"), tz, local(tz, "2026-06-01 15:00"));
        assert_eq!(p.start, local(tz, "2026-06-01 15:00"));
        let p = s.plan(date("2026-06-02"), tz, local(tz, "2026-06-01 21:00"));
        assert_eq!(p.start, local(tz, "2026-06-02 09:00"));
    }

    #[test]
    fn plans_without_a_window_and_with_minutes() {
        let s = Schedule {
            base: BaseDate::Today,
            offset: TimeDelta::minutes(90),
            window: None,
            duration: TimeDelta::minutes(30),
        };
        let tz = chrono_tz::UTC;
        let base = ScheduleBase::Instant(local(tz, "2026-06-01 10:00"));
        let p = s.plan(base, tz, local(tz, "2026-06-01 08:00"));
        assert_eq!(p.start, local(tz, "2026-06-01 11:30"));
        assert_eq!(p.cancel_at, local(tz, "2026-06-01 12:00"));
        // Late at night with no window: at once.
        let p = s.plan(base, tz, local(tz, "2026-06-01 23:50"));
        assert_eq!(p.start, local(tz, "2026-06-01 23:50"));
    }
}
