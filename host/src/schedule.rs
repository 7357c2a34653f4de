//! Cron schedules for the work the host starts by itself (the expiry sweep of
//! `up --sweep-schedule`).
//!
//! An expression has five fields, `minute hour day-of-month month
//! day-of-week`, or six with `second` first, as Spin's cron trigger takes
//! them. Each field is `*`, `*/n`, `a`, `a-b`, `a-b/n` or `a/n` (`a` to the
//! field's last value), or a comma list of those; day-of-week runs 0-7, where
//! 0 and 7 are Sunday. When both day fields are restricted (neither is `*`),
//! a day matching either one fires, as in classic cron.
//!
//! A `CRON_TZ=<IANA zone> ` prefix evaluates the fields in that zone (default
//! UTC). Where the zone's clocks jump:
//! - a wall time skipped by a jump forward does not fire that day;
//! - a wall time repeated by a jump back fires once, at its first occurrence,
//!   unless the hour field is `*`: then the repeated hour fires again, so
//!   hourly and finer rhythms keep their pace in real time.

use anyhow::{Context, Result, bail};
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};
use std::fmt;

/// How far ahead [`Schedule::next_after`] looks: every schedule that parses
/// fires within a Gregorian cycle (400 years).
const HORIZON: SignedDuration = SignedDuration::from_hours(400 * 366 * 24);

/// A parsed cron expression: which wall times fire, in which zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    zone: TimeZone,
    seconds: Values,
    minutes: Values,
    hours: Values,
    days_of_month: Values,
    months: Values,
    days_of_week: Values,
    /// Both day fields are restricted: a day matching either fires.
    either_day_field: bool,
    /// The hour field is `*`: a repeated wall time fires at both occurrences.
    every_hour: bool,
}

impl Schedule {
    /// Parses `[CRON_TZ=<zone> ]<fields>`. Errors name the field and its value.
    pub fn parse(expression: &str) -> Result<Schedule> {
        let text = expression.trim();
        let (zone, fields) = match text.strip_prefix("CRON_TZ=") {
            Some(rest) => {
                let (name, fields) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                let zone = TimeZone::get(name).with_context(|| {
                    format!("CRON_TZ={name}: not a known time zone (use an IANA name such as Asia/Shanghai or UTC)")
                })?;
                (zone, fields)
            }
            None => (TimeZone::UTC, text),
        };
        let fields: Vec<&str> = fields.split_whitespace().collect();
        let (second, minute, hour, day_of_month, month, day_of_week) = match fields[..] {
            [minute, hour, dom, month, dow] => ("0", minute, hour, dom, month, dow),
            [second, minute, hour, dom, month, dow] => (second, minute, hour, dom, month, dow),
            _ => bail!(
                "cron expression {text:?} has {} fields; expected 5 (minute hour day-of-month month day-of-week) or 6 (second first)",
                fields.len()
            ),
        };
        let schedule = Schedule {
            text: text.to_owned(),
            zone,
            seconds: SECOND.parse(second)?,
            minutes: MINUTE.parse(minute)?,
            hours: HOUR.parse(hour)?,
            days_of_month: DAY_OF_MONTH.parse(day_of_month)?,
            months: MONTH.parse(month)?,
            days_of_week: DAY_OF_WEEK.parse(day_of_week)?,
            either_day_field: !is_star(day_of_month) && !is_star(day_of_week),
            every_hour: is_star(hour),
        };
        // Only day-of-month and month together can ask for a day that never
        // comes (`30 2`); with day-of-week restricted too, any such day fires.
        let smallest_day = schedule.days_of_month.from(1).next().unwrap_or(1);
        let day_exists = (1..=12)
            .filter(|&m| schedule.months.contains(m))
            .any(|m| smallest_day <= longest_month(m));
        if !is_star(day_of_month) && is_star(day_of_week) && !day_exists {
            bail!(
                "day-of-month field {day_of_month:?} with month field {month:?}: no such day, so {text:?} would never fire"
            );
        }
        Ok(schedule)
    }

    /// The first fire time strictly after `after` (fire times are whole
    /// seconds); `None` only past the end of the representable time.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let next_second = after.as_second() + i64::from(after.subsec_nanosecond() >= 0);
        let mut from = Timestamp::from_second(next_second).ok()?;
        let horizon = from.checked_add(HORIZON).unwrap_or(Timestamp::MAX);
        // Between two transitions of the zone its offset is fixed, and wall
        // time runs with real time: search one such stretch at a time.
        while from < horizon {
            let offset = self.zone.to_offset(from);
            let stretch_end = self.zone.following(from).next().map(|t| t.timestamp());
            let wall_end = offset.to_datetime(stretch_end.unwrap_or(horizon));
            let Some(wall) = self.next_wall_time(offset.to_datetime(from), wall_end) else {
                from = stretch_end?;
                continue;
            };
            let at = offset.to_timestamp(wall).ok()?;
            match self.zone.to_ambiguous_timestamp(wall).offset() {
                AmbiguousOffset::Fold {
                    before,
                    after: later,
                } if later == offset && !self.every_hour => {
                    // The second occurrence of a repeated wall time: it fired
                    // at the first. Go on from the end of the repeated times.
                    let jump_back = self
                        .zone
                        .preceding(at.checked_add(SignedDuration::from_nanos(1)).ok()?)
                        .next()?;
                    let repeated =
                        SignedDuration::from_secs(i64::from(before.seconds() - later.seconds()));
                    from = jump_back.timestamp().checked_add(repeated).ok()?;
                }
                _ => return Some(at),
            }
        }
        None
    }

    /// The first matching wall time at or after `start` and before `end`.
    fn next_wall_time(&self, start: DateTime, end: DateTime) -> Option<DateTime> {
        let mut date = start.date();
        let mut earliest = start.time();
        while date <= end.date() {
            if !self.months.contains(date.month()) {
                date = date.last_of_month().tomorrow().ok()?;
                earliest = Time::midnight();
                continue;
            }
            if self.day_matches(date)
                && let Some(time) = self.first_time_from(earliest)
            {
                let wall = date.to_datetime(time);
                return (wall < end).then_some(wall);
            }
            date = date.tomorrow().ok()?;
            earliest = Time::midnight();
        }
        None
    }

    /// Whether `date` fires by its day fields (either one if both are
    /// restricted, else both).
    fn day_matches(&self, date: Date) -> bool {
        let by_month_day = self.days_of_month.contains(date.day());
        let by_week_day = self
            .days_of_week
            .contains(date.weekday().to_sunday_zero_offset());
        if self.either_day_field {
            by_month_day || by_week_day
        } else {
            by_month_day && by_week_day
        }
    }

    /// The first matching time of day at or after `earliest`.
    fn first_time_from(&self, earliest: Time) -> Option<Time> {
        let (h0, m0, s0) = (earliest.hour(), earliest.minute(), earliest.second());
        for hour in self.hours.from(h0) {
            let minute_floor = if hour == h0 { m0 } else { 0 };
            for minute in self.minutes.from(minute_floor) {
                let second_floor = if (hour, minute) == (h0, m0) { s0 } else { 0 };
                if let Some(second) = self.seconds.from(second_floor).next() {
                    return Time::new(hour, minute, second, 0).ok();
                }
            }
        }
        None
    }
}

/// The expression as given.
impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `*` (or `*/1`): the field restricts nothing.
fn is_star(field: &str) -> bool {
    field == "*" || field == "*/1"
}

/// The most days month `month` can have (29 for February).
fn longest_month(month: i8) -> i8 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The values a field allows, bit `v` for value `v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Values(u64);

impl Values {
    fn contains(self, value: i8) -> bool {
        (0..64).contains(&value) && self.0 & (1 << value) != 0
    }

    /// The allowed values from `first` on, ascending.
    fn from(self, first: i8) -> impl Iterator<Item = i8> {
        let mut rest = self.0 & u64::MAX.checked_shl(first.max(0) as u32).unwrap_or(0);
        std::iter::from_fn(move || {
            let value = (rest != 0).then(|| rest.trailing_zeros() as i8)?;
            rest &= rest - 1;
            Some(value)
        })
    }
}

/// One field of an expression: its name in errors and its range.
struct Field {
    name: &'static str,
    min: u8,
    max: u8,
    /// Where `*` ends: `max`, but 6 for day-of-week (its 7 is Sunday again).
    star_max: u8,
}

const SECOND: Field = Field::new("second", 0, 59);
const MINUTE: Field = Field::new("minute", 0, 59);
const HOUR: Field = Field::new("hour", 0, 23);
const DAY_OF_MONTH: Field = Field::new("day-of-month", 1, 31);
const MONTH: Field = Field::new("month", 1, 12);
const DAY_OF_WEEK: Field = Field {
    star_max: 6,
    ..Field::new("day-of-week", 0, 7)
};

impl Field {
    const fn new(name: &'static str, min: u8, max: u8) -> Field {
        Field {
            name,
            min,
            max,
            star_max: max,
        }
    }

    /// Parses a comma list of `*`, `*/n`, `a`, `a-b`, `a/n` and `a-b/n`.
    fn parse(&self, text: &str) -> Result<Values> {
        let mut bits = 0u64;
        for element in text.split(',') {
            let (range, step) = match element.split_once('/') {
                Some((range, step)) => (range, Some(self.step(text, step)?)),
                None => (element, None),
            };
            let (first, last) = if range == "*" {
                (self.min, self.star_max)
            } else if let Some((first, last)) = range.split_once('-') {
                let (first, last) = (self.number(text, first)?, self.number(text, last)?);
                if first > last {
                    bail!(
                        "{} field {text:?}: the range {first}-{last} runs backwards",
                        self.name
                    );
                }
                (first, last)
            } else {
                let first = self.number(text, range)?;
                // `a/n` runs from `a` to the field's end.
                let last = if step.is_some() {
                    self.star_max.max(first)
                } else {
                    first
                };
                (first, last)
            };
            for value in (first..=last).step_by(step.unwrap_or(1)) {
                bits |= 1 << value;
            }
        }
        if self.name == DAY_OF_WEEK.name && bits & (1 << 7) != 0 {
            bits = (bits & !(1 << 7)) | 1; // 7 is Sunday, like 0
        }
        Ok(Values(bits))
    }

    /// One value of the field, within its range.
    fn number(&self, text: &str, value: &str) -> Result<u8> {
        let Field { name, min, max, .. } = *self;
        if value.is_empty() {
            bail!("{name} field {text:?}: a number is missing");
        }
        if !value.bytes().all(|b| b.is_ascii_digit()) {
            bail!("{name} field {text:?}: {value:?} is not a number in {min}-{max}");
        }
        match value.parse::<u8>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => bail!("{name} field {text:?}: {value} is not in {min}-{max}"),
        }
    }

    /// The `n` of `/n`: at least 1.
    fn step(&self, text: &str, step: &str) -> Result<usize> {
        match step.parse::<usize>() {
            Ok(n) if n >= 1 && step.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => bail!(
                "{} field {text:?}: the step {step:?} is not a number of 1 or more",
                self.name
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first `count` fire times after `after`, as wall times with their
    /// offset in the schedule's zone.
    fn fires(expression: &str, after: &str, count: usize) -> Vec<String> {
        let schedule = Schedule::parse(expression).expect("a valid expression");
        let mut at: Timestamp = after.parse().expect("a timestamp");
        (0..count)
            .map(|_| {
                at = schedule.next_after(at).expect("a next fire time");
                at.to_zoned_datetime(schedule.zone.clone())
                    .strftime("%Y-%m-%d %H:%M:%S %:z")
                    .to_string()
            })
            .collect()
    }

    fn error(expression: &str) -> String {
        match Schedule::parse(expression) {
            Ok(_) => panic!("{expression:?} should not parse"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn star_fires_every_minute_at_second_zero() {
        assert_eq!(
            fires("* * * * *", "2024-01-01T00:00:00Z", 3),
            [
                "2024-01-01 00:01:00 +00:00",
                "2024-01-01 00:02:00 +00:00",
                "2024-01-01 00:03:00 +00:00"
            ]
        );
    }

    #[test]
    fn next_after_is_strictly_after_in_whole_seconds() {
        let every_second = "* * * * * *";
        assert_eq!(
            fires(every_second, "2024-01-01T00:00:00Z", 1),
            ["2024-01-01 00:00:01 +00:00"]
        );
        assert_eq!(
            fires(every_second, "2024-01-01T00:00:00.5Z", 1),
            ["2024-01-01 00:00:01 +00:00"]
        );
        assert_eq!(
            fires(every_second, "1969-12-31T23:59:59.5Z", 1),
            ["1970-01-01 00:00:00 +00:00"]
        );
    }

    #[test]
    fn each_field_form() {
        let at = "2024-01-01T00:00:00Z";
        // A value.
        assert_eq!(
            fires("5 * * * *", at, 2),
            ["2024-01-01 00:05:00 +00:00", "2024-01-01 01:05:00 +00:00"]
        );
        // */n.
        assert_eq!(
            fires("*/20 * * * *", at, 4),
            [
                "2024-01-01 00:20:00 +00:00",
                "2024-01-01 00:40:00 +00:00",
                "2024-01-01 01:00:00 +00:00",
                "2024-01-01 01:20:00 +00:00"
            ]
        );
        // a-b.
        assert_eq!(
            fires("0 22-23 * * *", at, 3),
            [
                "2024-01-01 22:00:00 +00:00",
                "2024-01-01 23:00:00 +00:00",
                "2024-01-02 22:00:00 +00:00"
            ]
        );
        // a-b/n.
        assert_eq!(
            fires("0 9-17/4 * * *", at, 4),
            [
                "2024-01-01 09:00:00 +00:00",
                "2024-01-01 13:00:00 +00:00",
                "2024-01-01 17:00:00 +00:00",
                "2024-01-02 09:00:00 +00:00"
            ]
        );
        // a/n: from a to the field's end.
        assert_eq!(
            fires("50/4 0 * * *", at, 4),
            [
                "2024-01-01 00:50:00 +00:00",
                "2024-01-01 00:54:00 +00:00",
                "2024-01-01 00:58:00 +00:00",
                "2024-01-02 00:50:00 +00:00"
            ]
        );
        // Months.
        assert_eq!(
            fires("0 0 1 */3 *", at, 4),
            [
                "2024-04-01 00:00:00 +00:00",
                "2024-07-01 00:00:00 +00:00",
                "2024-10-01 00:00:00 +00:00",
                "2025-01-01 00:00:00 +00:00"
            ]
        );
        // `*/1` is `*`.
        assert_eq!(fires("*/1 * * * *", at, 1), fires("* * * * *", at, 1));
    }

    #[test]
    fn lists_mix_the_forms() {
        assert_eq!(
            fires("1,3,10-12,50-59/5 0 * * *", "2024-01-01T00:00:00Z", 8),
            [
                "2024-01-01 00:01:00 +00:00",
                "2024-01-01 00:03:00 +00:00",
                "2024-01-01 00:10:00 +00:00",
                "2024-01-01 00:11:00 +00:00",
                "2024-01-01 00:12:00 +00:00",
                "2024-01-01 00:50:00 +00:00",
                "2024-01-01 00:55:00 +00:00",
                "2024-01-02 00:01:00 +00:00",
            ]
        );
    }

    #[test]
    fn six_fields_put_seconds_first() {
        assert_eq!(
            fires("*/20 * * * * *", "2024-01-01T00:00:00Z", 4),
            [
                "2024-01-01 00:00:20 +00:00",
                "2024-01-01 00:00:40 +00:00",
                "2024-01-01 00:01:00 +00:00",
                "2024-01-01 00:01:20 +00:00"
            ]
        );
        assert_eq!(
            fires("30 0 12 * * *", "2024-01-01T12:00:30Z", 1),
            ["2024-01-02 12:00:30 +00:00"]
        );
        // The expiry sweep of `cargo up`: second 0 of every minute.
        assert_eq!(
            fires("0 * * * * *", "2024-01-01T00:00:00Z", 1),
            fires("* * * * *", "2024-01-01T00:00:00Z", 1)
        );
    }

    #[test]
    fn feb_29_fires_only_in_leap_years() {
        assert_eq!(
            fires("0 0 29 2 *", "2023-01-01T00:00:00Z", 3),
            [
                "2024-02-29 00:00:00 +00:00",
                "2028-02-29 00:00:00 +00:00",
                "2032-02-29 00:00:00 +00:00"
            ]
        );
        // 2100 is not a leap year.
        assert_eq!(
            fires("0 0 29 2 *", "2096-03-01T00:00:00Z", 1),
            ["2104-02-29 00:00:00 +00:00"]
        );
    }

    #[test]
    fn the_31st_skips_shorter_months() {
        assert_eq!(
            fires("0 0 31 * *", "2024-01-31T00:00:00Z", 3),
            [
                "2024-03-31 00:00:00 +00:00",
                "2024-05-31 00:00:00 +00:00",
                "2024-07-31 00:00:00 +00:00"
            ]
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_restricted() {
        // 2024-09-01 is a Sunday; the 13th is a Friday.
        let at = "2024-09-01T00:00:00Z";
        assert_eq!(
            fires("0 0 13 * 5", at, 3),
            [
                "2024-09-06 00:00:00 +00:00",
                "2024-09-13 00:00:00 +00:00",
                "2024-09-20 00:00:00 +00:00"
            ]
        );
        // Day-of-week `*`: the month day alone.
        assert_eq!(
            fires("0 0 13 * *", at, 2),
            ["2024-09-13 00:00:00 +00:00", "2024-10-13 00:00:00 +00:00"]
        );
        // Day-of-month `*`: the week day alone.
        assert_eq!(
            fires("0 0 * * 5", at, 2),
            ["2024-09-06 00:00:00 +00:00", "2024-09-13 00:00:00 +00:00"]
        );
        // A step restricts: every 10th day from the 1st, or a Monday.
        assert_eq!(
            fires("0 0 */10 * 1", at, 4),
            [
                "2024-09-02 00:00:00 +00:00",
                "2024-09-09 00:00:00 +00:00",
                "2024-09-11 00:00:00 +00:00",
                "2024-09-16 00:00:00 +00:00"
            ]
        );
        // Feb 30 never comes, but the Mondays of February do.
        assert_eq!(fires("0 0 30 2 1", at, 1), ["2025-02-03 00:00:00 +00:00"]);
    }

    #[test]
    fn sunday_is_0_and_7() {
        let at = "2024-09-01T00:00:00Z"; // a Sunday
        assert_eq!(fires("0 0 * * 0", at, 2), fires("0 0 * * 7", at, 2));
        assert_eq!(
            fires("0 0 * * 5-7", at, 4),
            [
                "2024-09-06 00:00:00 +00:00",
                "2024-09-07 00:00:00 +00:00",
                "2024-09-08 00:00:00 +00:00",
                "2024-09-13 00:00:00 +00:00"
            ]
        );
        assert_eq!(fires("0 0 * * 0-7", at, 1), fires("0 0 * * *", at, 1));
    }

    #[test]
    fn month_starts_in_shanghai_are_16_00_utc_the_day_before() {
        let schedule = Schedule::parse("CRON_TZ=Asia/Shanghai 0 0 1 * *").expect("valid");
        let mut at: Timestamp = "2024-01-15T00:00:00Z".parse().expect("a timestamp");
        let mut utc = Vec::new();
        for _ in 0..3 {
            at = schedule.next_after(at).expect("a fire time");
            utc.push(at.to_string());
        }
        assert_eq!(
            utc,
            [
                "2024-01-31T16:00:00Z",
                "2024-02-29T16:00:00Z",
                "2024-03-31T16:00:00Z"
            ]
        );
    }

    #[test]
    fn a_wall_time_skipped_by_dst_does_not_fire_that_day() {
        // New York springs forward on 2024-03-10 at 02:00 to 03:00.
        assert_eq!(
            fires(
                "CRON_TZ=America/New_York 30 2 * * *",
                "2024-03-09T05:00:00Z",
                3
            ),
            [
                "2024-03-09 02:30:00 -05:00",
                "2024-03-11 02:30:00 -04:00",
                "2024-03-12 02:30:00 -04:00"
            ]
        );
        // Hourly: the skipped hour is skipped, the pace in real time kept.
        assert_eq!(
            fires(
                "CRON_TZ=America/New_York 30 * * * *",
                "2024-03-10T05:00:00Z",
                3
            ),
            [
                "2024-03-10 00:30:00 -05:00",
                "2024-03-10 01:30:00 -05:00",
                "2024-03-10 03:30:00 -04:00"
            ]
        );
    }

    #[test]
    fn a_wall_time_repeated_by_dst_fires_once_unless_every_hour() {
        // New York falls back on 2024-11-03 at 02:00 to 01:00.
        assert_eq!(
            fires(
                "CRON_TZ=America/New_York 30 1 * * *",
                "2024-11-03T04:00:00Z",
                2
            ),
            ["2024-11-03 01:30:00 -04:00", "2024-11-04 01:30:00 -05:00"]
        );
        // Every second of 01:xx: the repeated hour is passed over in one step.
        assert_eq!(
            fires(
                "CRON_TZ=America/New_York * * 1 * * *",
                "2024-11-03T05:59:58Z",
                2
            ),
            ["2024-11-03 01:59:59 -04:00", "2024-11-04 01:00:00 -05:00"]
        );
        // Hour `*`: the repeated hour fires again.
        assert_eq!(
            fires(
                "CRON_TZ=America/New_York 30 * * * *",
                "2024-11-03T04:00:00Z",
                4
            ),
            [
                "2024-11-03 00:30:00 -04:00",
                "2024-11-03 01:30:00 -04:00",
                "2024-11-03 01:30:00 -05:00",
                "2024-11-03 02:30:00 -05:00"
            ]
        );
    }

    /// Checks `next_after` against the definition, minute by minute, over
    /// three days around each transition: a minute fires when its wall time
    /// matches, unless it is the second occurrence of a repeated wall time
    /// and the hour field is not `*`.
    #[test]
    fn every_minute_around_transitions_agrees_with_the_definition() {
        let expressions = [
            "30 2 * * *",
            "30 1 * * *",
            "*/20 * * * *",
            "0 * * * *",
            "15,45 1-3 * * *",
            "* 1 * * *",
            "0,30 2 * * *",
        ];
        let windows = [
            ("America/New_York", "2024-03-09T00:00:00Z"),
            ("America/New_York", "2024-11-02T00:00:00Z"),
            // Half-hour shifts: 02:00 -> 02:30 in October, 02:00 -> 01:30 in April.
            ("Australia/Lord_Howe", "2024-04-05T12:00:00Z"),
            ("Australia/Lord_Howe", "2024-10-05T12:00:00Z"),
            ("Europe/London", "2024-10-26T00:00:00Z"),
        ];
        for (zone_name, start) in windows {
            let zone = TimeZone::get(zone_name).expect("a zone");
            let start: Timestamp = start.parse().expect("a timestamp");
            for fields in expressions {
                let schedule =
                    Schedule::parse(&format!("CRON_TZ={zone_name} {fields}")).expect("valid");
                let mut expected = Vec::new();
                for minute in 1..=3 * 24 * 60 {
                    let at = start
                        .checked_add(SignedDuration::from_mins(minute))
                        .expect("in range");
                    let wall = zone.to_datetime(at);
                    let matches = schedule.months.contains(wall.month())
                        && schedule.day_matches(wall.date())
                        && schedule.hours.contains(wall.hour())
                        && schedule.minutes.contains(wall.minute());
                    let second_occurrence = matches!(
                        zone.to_ambiguous_timestamp(wall).offset(),
                        AmbiguousOffset::Fold { after, .. } if after == zone.to_offset(at)
                    );
                    if matches && (!second_occurrence || schedule.every_hour) {
                        expected.push(at);
                    }
                }
                let end = start
                    .checked_add(SignedDuration::from_mins(3 * 24 * 60))
                    .expect("in range");
                let mut actual = Vec::new();
                let mut at = start;
                while let Some(next) = schedule.next_after(at).filter(|next| *next <= end) {
                    actual.push(next);
                    at = next;
                }
                assert_eq!(actual, expected, "{schedule} from {start}");
            }
        }
    }

    #[test]
    fn cron_tz_utc_is_the_default() {
        let at = "2024-06-01T00:00:00Z";
        assert_eq!(
            fires("CRON_TZ=UTC 0 12 * * *", at, 2),
            fires("0 12 * * *", at, 2)
        );
        assert_eq!(
            Schedule::parse("  CRON_TZ=UTC   0 12 * * * ")
                .expect("valid")
                .to_string(),
            "CRON_TZ=UTC   0 12 * * *"
        );
    }

    #[test]
    fn errors_name_the_field_and_value() {
        let cases = [
            ("61 * * * *", r#"minute field "61": 61 is not in 0-59"#),
            ("60 * * * * *", r#"second field "60": 60 is not in 0-59"#),
            ("* 24 * * *", r#"hour field "24": 24 is not in 0-23"#),
            ("* * 0 * *", r#"day-of-month field "0": 0 is not in 1-31"#),
            ("* * * 1,13 *", r#"month field "1,13": 13 is not in 1-12"#),
            ("* * * * 8", r#"day-of-week field "8": 8 is not in 0-7"#),
            (
                "* * * * MON",
                r#"day-of-week field "MON": "MON" is not a number in 0-7"#,
            ),
            (
                "*/0 * * * *",
                r#"minute field "*/0": the step "0" is not a number of 1 or more"#,
            ),
            (
                "*/x * * * *",
                r#"minute field "*/x": the step "x" is not a number of 1 or more"#,
            ),
            (
                "5-3 * * * *",
                r#"minute field "5-3": the range 5-3 runs backwards"#,
            ),
            (
                "1,,2 * * * *",
                r#"minute field "1,,2": a number is missing"#,
            ),
            ("-5 * * * *", r#"minute field "-5": a number is missing"#),
            (
                "+5 * * * *",
                r#"minute field "+5": "+5" is not a number in 0-59"#,
            ),
            (
                "* * 999999999999 * *",
                r#"day-of-month field "999999999999": 999999999999 is not in 1-31"#,
            ),
            (
                "* * * *",
                r#"cron expression "* * * *" has 4 fields; expected 5"#,
            ),
            ("", r#"cron expression "" has 0 fields"#),
            (
                "CRON_TZ=UTC",
                r#"cron expression "CRON_TZ=UTC" has 0 fields"#,
            ),
            (
                "CRON_TZ=Mars/Olympus 0 * * * *",
                "CRON_TZ=Mars/Olympus: not a known time zone",
            ),
            (
                "0 0 30 2 *",
                r#"day-of-month field "30" with month field "2": no such day"#,
            ),
            (
                "0 0 31 4,6,9,11 *",
                r#"day-of-month field "31" with month field "4,6,9,11": no such day"#,
            ),
        ];
        for (expression, expected) in cases {
            let error = error(expression);
            assert!(error.contains(expected), "{expression:?}: {error}");
        }
    }
}
