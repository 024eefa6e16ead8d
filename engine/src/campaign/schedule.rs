//! When a planned communication may start: a base time plus an offset, pushed into the
//! allowed daily window of the scheduling time zone (the participant's, else the
//! campaign's). Everything here is a pure function of its inputs, `now` included, so the
//! actors can use an injectable clock and tests can pin any instant.

use chrono::{
    DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc,
};
use chrono_tz::Tz;

/// The daily window, in local wall-clock time, in which a communication may start.
///
/// `from` is inclusive and `to` exclusive. When `to <= from` the window crosses midnight
/// (`22:00`–`06:00` is open late evening and early morning); `from == to` is open all day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: NaiveTime,
    pub to: NaiveTime,
}

impl Window {
    /// Whether a local time of day lies inside the window.
    pub fn contains(&self, time: NaiveTime) -> bool {
        if self.from < self.to {
            self.from <= time && time < self.to
        } else {
            time >= self.from || time < self.to
        }
    }
}

/// What a communication's start is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleBase {
    /// A point in time ("now", a datetime field): the offset is added as elapsed time.
    Instant(DateTime<Utc>),
    /// A calendar date ("today", a date field): midnight in the scheduling time zone, and
    /// the offset is added on the wall clock so "+1 day" lands on the next calendar day
    /// even across a daylight-saving change.
    Date(NaiveDate),
}

/// The earliest instant at or after both `base + offset` and `now` that lies inside
/// `window` in `tz`; outside the window it waits for the window's next opening.
///
/// An opening that falls into a spring-forward gap starts at the first valid local time
/// after the gap; one that falls into a fall-back overlap takes the earlier of the two
/// instants, unless that one has already passed.
pub fn next_start(
    base: ScheduleBase,
    offset: Duration,
    window: Window,
    tz: Tz,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let planned = match base {
        ScheduleBase::Instant(at) => at.checked_add_signed(offset),
        ScheduleBase::Date(date) => date
            .and_time(NaiveTime::MIN)
            .checked_add_signed(offset)
            .map(|local| resolve_local(tz, local)),
    };
    let Some(planned) = planned else {
        return DateTime::<Utc>::MAX_UTC;
    };
    let candidate = planned.max(now);
    let local = candidate.with_timezone(&tz).naive_local();
    if window.contains(local.time()) {
        return candidate;
    }
    let day = if local.time() < window.from {
        Some(local.date())
    } else {
        local.date().succ_opt()
    };
    let Some(day) = day else {
        return DateTime::<Utc>::MAX_UTC;
    };
    let (earliest, latest) = local_instants(tz, day.and_time(window.from));
    if earliest >= candidate {
        earliest
    } else {
        latest.max(candidate)
    }
}

/// When a communication planned for `planned` is cancelled if it has not started.
pub fn expires_at(planned: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    planned
        .checked_add_signed(duration)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The calendar date in `tz` at `now`: what "today" means for ±N-days checks.
pub fn today_in(tz: Tz, now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&tz).date_naive()
}

/// Parses an IANA time zone name such as `Europe/Berlin`.
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| format!("{name:?} is not an IANA time zone (such as \"Europe/London\")"))
}

/// Parses a time of day written `HH:MM` (window bounds such as `09:30`).
pub fn parse_time_of_day(text: &str) -> Result<NaiveTime, String> {
    let (hours, minutes) = split_hhmm(text)?;
    if hours > 23 {
        return Err(format!(
            "{text:?} is not a time of day (hours go up to 23; use 00:00 for midnight)"
        ));
    }
    NaiveTime::from_hms_opt(hours, minutes, 0)
        .ok_or_else(|| format!("{text:?} is not a time of day"))
}

/// Parses a duration written `HH:MM` (a communication's open window such as `48:00`).
pub fn parse_duration_hhmm(text: &str) -> Result<Duration, String> {
    let (hours, minutes) = split_hhmm(text)?;
    let total = Duration::hours(i64::from(hours)) + Duration::minutes(i64::from(minutes));
    if total.is_zero() {
        return Err(format!("{text:?} is an empty duration"));
    }
    Ok(total)
}

/// Splits `H..:MM` into hours and minutes; minutes must be two digits below 60.
fn split_hhmm(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{text:?} is not in HH:MM form");
    let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || h.len() > 4 || !digits(m) || m.len() != 2 {
        return Err(bad());
    }
    let hours: u32 = h.parse().map_err(|_| bad())?;
    let minutes: u32 = m.parse().map_err(|_| bad())?;
    if minutes > 59 {
        return Err(format!("{text:?} has more than 59 minutes"));
    }
    Ok((hours, minutes))
}

/// The instant a local wall-clock time denotes in `tz`: the earlier one when the clock
/// was turned back, the end of the gap when the time was skipped.
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    local_instants(tz, local).0
}

/// The earliest and latest instants showing `local` on the clocks of `tz`; both are the
/// end of the gap for a skipped time.
fn local_instants(tz: Tz, local: NaiveDateTime) -> (DateTime<Utc>, DateTime<Utc>) {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(at) => {
            let at = at.with_timezone(&Utc);
            (at, at)
        }
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
            (a.min(b), a.max(b))
        }
        LocalResult::None => {
            let end = gap_end(tz, local);
            (end, end)
        }
    }
}

/// The instant the clocks jumped over the skipped local time `local`.
///
/// With the offsets in force before (`b`) and after (`a`) the jump, the transition lies
/// in `(local - a, local - b]`; the time zone database is not exposed as a list of
/// transitions, so bisect that interval on the offset, to the second.
fn gap_end(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let margin = Duration::days(2);
    let offset_at = |at: NaiveDateTime| tz.offset_from_utc_datetime(&at).fix();
    let before = offset_at(local.checked_sub_signed(margin).unwrap_or(local));
    let after = offset_at(local.checked_add_signed(margin).unwrap_or(local));
    let as_utc = |offset: chrono::FixedOffset| {
        Utc.from_utc_datetime(&local) - Duration::seconds(i64::from(offset.local_minus_utc()))
    };
    let (mut lo, mut hi) = (as_utc(after), as_utc(before));
    if lo >= hi {
        // Not a forward jump after all (two transitions close together); keep the
        // earlier offset's reading rather than guess.
        return hi;
    }
    while hi - lo > Duration::seconds(1) {
        let mid = lo + (hi - lo) / 2;
        if tz.offset_from_utc_datetime(&mid.naive_utc()).fix() == before {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn tz(name: &str) -> Tz {
        parse_timezone(name).unwrap()
    }

    fn window(from: &str, to: &str) -> Window {
        Window {
            from: parse_time_of_day(from).unwrap(),
            to: parse_time_of_day(to).unwrap(),
        }
    }

    fn start_at(now: &str, w: Window, zone: &str) -> DateTime<Utc> {
        let now = utc(now);
        next_start(
            ScheduleBase::Instant(now),
            Duration::zero(),
            w,
            tz(zone),
            now,
        )
    }

    #[test]
    fn inside_the_window_starts_now() {
        let got = start_at("2026-06-10T10:15:00Z", window("09:00", "17:00"), "UTC");
        assert_eq!(got, utc("2026-06-10T10:15:00Z"));
        // `from` is inclusive.
        let got = start_at("2026-06-10T09:00:00Z", window("09:00", "17:00"), "UTC");
        assert_eq!(got, utc("2026-06-10T09:00:00Z"));
    }

    #[test]
    fn before_the_window_waits_for_its_opening_the_same_day() {
        let got = start_at("2026-06-10T05:00:00Z", window("09:00", "17:00"), "UTC");
        assert_eq!(got, utc("2026-06-10T09:00:00Z"));
        // Berlin is UTC+2 in summer: 06:00 local is before 09:00 local (07:00 UTC).
        let got = start_at(
            "2026-06-10T04:00:00Z",
            window("09:00", "17:00"),
            "Europe/Berlin",
        );
        assert_eq!(got, utc("2026-06-10T07:00:00Z"));
    }

    #[test]
    fn after_the_window_waits_for_the_next_day() {
        let got = start_at("2026-06-10T18:00:00Z", window("09:00", "17:00"), "UTC");
        assert_eq!(got, utc("2026-06-11T09:00:00Z"));
        // `to` is exclusive.
        let got = start_at("2026-06-10T17:00:00Z", window("09:00", "17:00"), "UTC");
        assert_eq!(got, utc("2026-06-11T09:00:00Z"));
        // The last day of the year rolls into the next year.
        let got = start_at("2026-12-31T20:00:00Z", window("09:00", "17:00"), "UTC");
        assert_eq!(got, utc("2027-01-01T09:00:00Z"));
    }

    #[test]
    fn windows_across_midnight() {
        let w = window("22:00", "06:00");
        assert!(w.contains(parse_time_of_day("23:30").unwrap()));
        assert!(w.contains(parse_time_of_day("00:00").unwrap()));
        assert!(w.contains(parse_time_of_day("05:59").unwrap()));
        assert!(!w.contains(parse_time_of_day("06:00").unwrap()));
        assert!(!w.contains(parse_time_of_day("21:59").unwrap()));
        assert_eq!(
            start_at("2026-06-10T23:00:00Z", w, "UTC"),
            utc("2026-06-10T23:00:00Z")
        );
        assert_eq!(
            start_at("2026-06-10T03:00:00Z", w, "UTC"),
            utc("2026-06-10T03:00:00Z")
        );
        assert_eq!(
            start_at("2026-06-10T12:00:00Z", w, "UTC"),
            utc("2026-06-10T22:00:00Z")
        );
        assert_eq!(
            start_at("2026-06-10T06:00:00Z", w, "UTC"),
            utc("2026-06-10T22:00:00Z")
        );
    }

    #[test]
    fn equal_bounds_are_open_all_day() {
        let w = window("00:00", "00:00");
        for t in ["00:00", "12:00", "23:59"] {
            assert!(w.contains(parse_time_of_day(t).unwrap()));
        }
        assert_eq!(
            start_at("2026-06-10T13:37:00Z", w, "Asia/Tokyo"),
            utc("2026-06-10T13:37:00Z")
        );
    }

    #[test]
    fn a_future_base_plus_offset_wins_over_now() {
        let now = utc("2026-06-10T10:00:00Z");
        let got = next_start(
            ScheduleBase::Instant(utc("2026-06-10T11:00:00Z")),
            Duration::hours(2),
            window("09:00", "17:00"),
            Tz::UTC,
            now,
        );
        assert_eq!(got, utc("2026-06-10T13:00:00Z"));
        // Base plus offset past the window's end waits for the next day.
        let got = next_start(
            ScheduleBase::Instant(utc("2026-06-10T11:00:00Z")),
            Duration::hours(7),
            window("09:00", "17:00"),
            Tz::UTC,
            now,
        );
        assert_eq!(got, utc("2026-06-11T09:00:00Z"));
    }

    #[test]
    fn a_past_base_starts_from_now() {
        let now = utc("2026-06-10T10:00:00Z");
        let got = next_start(
            ScheduleBase::Instant(utc("2026-06-01T00:00:00Z")),
            Duration::hours(1),
            window("09:00", "17:00"),
            Tz::UTC,
            now,
        );
        assert_eq!(got, now);
    }

    #[test]
    fn date_bases_are_local_midnight_plus_wall_clock_offset() {
        let now = utc("2026-01-01T00:00:00Z");
        let berlin = tz("Europe/Berlin");
        let all_day = window("00:00", "00:00");
        let date = NaiveDate::from_ymd_opt(2026, 6, 30).unwrap();
        // Midnight in Berlin summer time is 22:00 UTC the day before.
        let got = next_start(
            ScheduleBase::Date(date),
            Duration::zero(),
            all_day,
            berlin,
            now,
        );
        assert_eq!(got, utc("2026-06-29T22:00:00Z"));
        // "+1 day" lands on local midnight on both sides of the spring-forward night.
        let date = NaiveDate::from_ymd_opt(2026, 3, 28).unwrap();
        let got = next_start(
            ScheduleBase::Date(date),
            Duration::days(1),
            all_day,
            berlin,
            now,
        );
        assert_eq!(got, utc("2026-03-28T23:00:00Z"));
        let got = next_start(
            ScheduleBase::Date(date),
            Duration::days(2),
            all_day,
            berlin,
            now,
        );
        assert_eq!(got, utc("2026-03-29T22:00:00Z"));
        // A date plus hours, then pushed into the window.
        let date = NaiveDate::from_ymd_opt(2026, 6, 30).unwrap();
        let got = next_start(
            ScheduleBase::Date(date),
            Duration::hours(20),
            window("09:00", "18:00"),
            berlin,
            now,
        );
        assert_eq!(got, utc("2026-07-01T07:00:00Z"));
    }

    #[test]
    fn berlin_spring_forward() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST at 01:00 UTC.
        // A window opening at 02:30 does not exist that night: start at 03:00 CEST.
        let got = start_at(
            "2026-03-29T00:30:00Z",
            window("02:30", "05:00"),
            "Europe/Berlin",
        );
        assert_eq!(got, utc("2026-03-29T01:00:00Z"));
        // A 09:00 opening the day after the change is 09:00 CEST (07:00 UTC), not CET.
        let got = start_at(
            "2026-03-28T17:00:00Z",
            window("09:00", "17:00"),
            "Europe/Berlin",
        );
        assert_eq!(got, utc("2026-03-29T07:00:00Z"));
        // Inside the window just after the jump: start now.
        let got = start_at(
            "2026-03-29T01:00:00Z",
            window("02:30", "05:00"),
            "Europe/Berlin",
        );
        assert_eq!(got, utc("2026-03-29T01:00:00Z"));
    }

    #[test]
    fn berlin_fall_back() {
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET at 01:00 UTC; 02:30 happens twice.
        // Waiting from before the overlap picks the earlier 02:30 (CEST, 00:30 UTC).
        let got = start_at(
            "2026-10-25T00:00:00Z",
            window("02:30", "04:00"),
            "Europe/Berlin",
        );
        assert_eq!(got, utc("2026-10-25T00:30:00Z"));
        // From 02:10 CET (the second pass), the first 02:30 is gone: take the second.
        let got = start_at(
            "2026-10-25T01:10:00Z",
            window("02:30", "04:00"),
            "Europe/Berlin",
        );
        assert_eq!(got, utc("2026-10-25T01:30:00Z"));
        // The day after, 09:00 is CET again (08:00 UTC).
        let got = start_at(
            "2026-10-25T17:00:00Z",
            window("09:00", "17:00"),
            "Europe/Berlin",
        );
        assert_eq!(got, utc("2026-10-26T08:00:00Z"));
    }

    #[test]
    fn new_york_spring_forward() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT at 07:00 UTC.
        let got = start_at(
            "2026-03-08T06:30:00Z",
            window("02:15", "06:00"),
            "America/New_York",
        );
        assert_eq!(got, utc("2026-03-08T07:00:00Z"));
        let got = start_at(
            "2026-03-07T23:00:00Z",
            window("09:00", "17:00"),
            "America/New_York",
        );
        assert_eq!(got, utc("2026-03-08T13:00:00Z"));
    }

    #[test]
    fn new_york_fall_back() {
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST at 06:00 UTC; 01:30 happens twice.
        let got = start_at(
            "2026-11-01T04:00:00Z",
            window("01:30", "03:00"),
            "America/New_York",
        );
        assert_eq!(got, utc("2026-11-01T05:30:00Z"));
        // Inside the window during the second 01:xx hour: start now.
        let got = start_at(
            "2026-11-01T06:40:00Z",
            window("01:30", "03:00"),
            "America/New_York",
        );
        assert_eq!(got, utc("2026-11-01T06:40:00Z"));
    }

    #[test]
    fn time_zones_far_from_utc() {
        // Kiritimati is UTC+14: 12:00 UTC on 1 June is 02:00 on 2 June there.
        let kiritimati = tz("Pacific/Kiritimati");
        let now = utc("2026-06-01T12:00:00Z");
        assert_eq!(
            today_in(kiritimati, now),
            NaiveDate::from_ymd_opt(2026, 6, 2).unwrap()
        );
        assert_eq!(
            start_at(
                "2026-06-01T12:00:00Z",
                window("09:00", "18:00"),
                "Pacific/Kiritimati"
            ),
            utc("2026-06-01T19:00:00Z")
        );
        // Pago Pago is UTC-11: 05:00 UTC on 1 June is 18:00 on 31 May there.
        let pago = tz("Pacific/Pago_Pago");
        let now = utc("2026-06-01T05:00:00Z");
        assert_eq!(
            today_in(pago, now),
            NaiveDate::from_ymd_opt(2026, 5, 31).unwrap()
        );
        assert_eq!(
            start_at(
                "2026-06-01T05:00:00Z",
                window("09:00", "17:00"),
                "Pacific/Pago_Pago"
            ),
            utc("2026-06-01T20:00:00Z")
        );
        // "Today" at local midnight, scheduled on both sides of the date line.
        let date = NaiveDate::from_ymd_opt(2026, 6, 2).unwrap();
        let all_day = window("00:00", "00:00");
        let early = utc("2020-01-01T00:00:00Z");
        assert_eq!(
            next_start(
                ScheduleBase::Date(date),
                Duration::zero(),
                all_day,
                kiritimati,
                early
            ),
            utc("2026-06-01T10:00:00Z")
        );
        assert_eq!(
            next_start(
                ScheduleBase::Date(date),
                Duration::zero(),
                all_day,
                pago,
                early
            ),
            utc("2026-06-02T11:00:00Z")
        );
    }

    #[test]
    fn a_skipped_calendar_day_starts_when_the_clocks_resume() {
        // Kiritimati moved across the date line: 1994-12-31 never happened there; the
        // clocks went from 30 Dec 23:59:59 (-10) to 1 Jan 00:00 (+14).
        let date = NaiveDate::from_ymd_opt(1994, 12, 31).unwrap();
        let got = next_start(
            ScheduleBase::Date(date),
            Duration::hours(9),
            window("00:00", "00:00"),
            tz("Pacific/Kiritimati"),
            utc("1990-01-01T00:00:00Z"),
        );
        assert_eq!(got, utc("1994-12-31T10:00:00Z"));
    }

    #[test]
    fn expiry_today_and_overflow() {
        let planned = utc("2026-06-10T09:00:00Z");
        assert_eq!(
            expires_at(planned, parse_duration_hhmm("02:30").unwrap()),
            utc("2026-06-10T11:30:00Z")
        );
        assert_eq!(
            expires_at(DateTime::<Utc>::MAX_UTC, Duration::hours(1)),
            DateTime::<Utc>::MAX_UTC
        );
        assert_eq!(
            today_in(Tz::UTC, planned),
            NaiveDate::from_ymd_opt(2026, 6, 10).unwrap()
        );
        let got = next_start(
            ScheduleBase::Instant(planned),
            Duration::MAX,
            window("09:00", "17:00"),
            Tz::UTC,
            planned,
        );
        assert_eq!(got, DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn parses_hh_mm() {
        assert_eq!(
            parse_time_of_day("09:30").unwrap(),
            NaiveTime::from_hms_opt(9, 30, 0).unwrap()
        );
        assert_eq!(
            parse_time_of_day(" 7:05 ").unwrap(),
            NaiveTime::from_hms_opt(7, 5, 0).unwrap()
        );
        assert!(parse_time_of_day("24:00").unwrap_err().contains("00:00"));
        assert!(parse_time_of_day("09:60")
            .unwrap_err()
            .contains("59 minutes"));
        for bad in ["0930", "09:3", "aa:bb", "-1:00", "09:30:00", ""] {
            assert!(parse_time_of_day(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration_hhmm("48:00").unwrap(), Duration::hours(48));
        assert_eq!(parse_duration_hhmm("00:45").unwrap(), Duration::minutes(45));
        assert!(parse_duration_hhmm("00:00").unwrap_err().contains("empty"));
        assert!(parse_duration_hhmm("1h").is_err());
    }

    #[test]
    fn parses_time_zones() {
        assert_eq!(parse_timezone("Europe/London").unwrap(), Tz::Europe__London);
        assert_eq!(parse_timezone("UTC").unwrap(), Tz::UTC);
        assert!(parse_timezone("Mars/Olympus")
            .unwrap_err()
            .contains("not an IANA time zone"));
        assert!(parse_timezone("").is_err());
    }

    #[test]
    fn resolves_local_times() {
        let berlin = tz("Europe/Berlin");
        let at = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        assert_eq!(
            resolve_local(berlin, at("2026-06-10 12:00")),
            utc("2026-06-10T10:00:00Z")
        );
        assert_eq!(
            resolve_local(berlin, at("2026-03-29 02:15")),
            utc("2026-03-29T01:00:00Z")
        );
        assert_eq!(
            resolve_local(berlin, at("2026-10-25 02:15")),
            utc("2026-10-25T00:15:00Z")
        );
    }
}
