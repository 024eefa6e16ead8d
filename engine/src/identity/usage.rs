//! The periods session limits and billing count in: the calendar month and the day in
//! the tenant's time zone.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// The instant a local midnight starts in `tz` (the first instant of that date when
/// the clocks skip midnight).
fn midnight(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let local = date.and_hms_opt(0, 0, 0).expect("midnight exists");
    match tz.from_local_datetime(&local).earliest() {
        Some(t) => t.with_timezone(&Utc),
        // Midnight skipped (a DST jump at 00:00): the day starts when the clocks resume.
        None => (1..=180)
            .find_map(|m| {
                tz.from_local_datetime(&(local + chrono::TimeDelta::minutes(m)))
                    .earliest()
            })
            .expect("a day has some local time")
            .with_timezone(&Utc),
    }
}

/// The calendar month around `now` in `tz`: [start, end).
pub fn month_period(tz: Tz, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let today = now.with_timezone(&tz).date_naive();
    let first = NaiveDate::from_ymd_opt(today.year(), today.month(), 1).expect("day 1");
    let next = if today.month() == 12 {
        NaiveDate::from_ymd_opt(today.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(today.year(), today.month() + 1, 1)
    }
    .expect("day 1");
    (midnight(tz, first), midnight(tz, next))
}

/// The day around `now` in `tz`: [start, end).
pub fn day_period(tz: Tz, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let today = now.with_timezone(&tz).date_naive();
    let tomorrow = today.succ_opt().expect("a next day");
    (midnight(tz, today), midnight(tz, tomorrow))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_days_are_local() {
        let tz = chrono_tz::Europe::Berlin;
        // 31 Dec 2026 23:30 UTC is already January in Berlin.
        let now = Utc.with_ymd_and_hms(2026, 12, 31, 23, 30, 0).unwrap();
        let (from, to) = month_period(tz, now);
        assert_eq!(from, Utc.with_ymd_and_hms(2026, 12, 31, 23, 0, 0).unwrap());
        assert_eq!(to, Utc.with_ymd_and_hms(2027, 1, 31, 23, 0, 0).unwrap());
        let (from, to) = day_period(tz, now);
        assert_eq!(from, Utc.with_ymd_and_hms(2026, 12, 31, 23, 0, 0).unwrap());
        assert_eq!(to, Utc.with_ymd_and_hms(2027, 1, 1, 23, 0, 0).unwrap());
        // The March month is an hour shorter in Berlin (DST).
        let (from, to) = month_period(tz, Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap());
        assert_eq!((to - from).num_hours(), 31 * 24 - 1);
        let (from, to) = day_period(
            chrono_tz::UTC,
            Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap(),
        );
        assert_eq!(
            (from, to),
            (
                Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(2026, 6, 2, 0, 0, 0).unwrap()
            )
        );
    }

    #[test]
    fn a_skipped_midnight_starts_the_day_when_the_clocks_resume() {
        // Santiago moved its clocks from 00:00 to 01:00 on 6 Sep 2026.
        let tz = chrono_tz::America::Santiago;
        let (from, _) = day_period(tz, Utc.with_ymd_and_hms(2026, 9, 6, 12, 0, 0).unwrap());
        assert_eq!(
            from.with_timezone(&tz).time(),
            chrono::NaiveTime::from_hms_opt(1, 0, 0).unwrap()
        );
    }
}
