//! Month-end arithmetic: when a coupon stops being usable.
//!
//! A coupon expires at the first instant of the month after its claim month
//! (or after a fixed month) in the campaign's time zone. "First instant" is
//! midnight where midnight exists, the first moment after the gap where a
//! daylight-saving change skips it, and the last midnight where the clock
//! falls back across it into the old month. An operator may also end a
//! campaign's coupons at a given instant (a re-dating to end them early).

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A calendar month, like `2027-02`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct YearMonth {
    year: i16,
    month: i8,
}

impl YearMonth {
    /// Parses `YYYY-MM` (years 1000 to 9998, so the next month always exists).
    pub fn parse(s: &str) -> Option<YearMonth> {
        let (year, month) = s.split_once('-')?;
        if year.len() != 4
            || month.len() != 2
            || !(year.bytes().chain(month.bytes())).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let (year, month): (i16, i8) = (year.parse().ok()?, month.parse().ok()?);
        ((1000..=9998).contains(&year) && (1..=12).contains(&month))
            .then_some(YearMonth { year, month })
    }

    /// The month `instant` falls in, as seen in `tz`.
    pub fn of(instant: Timestamp, tz: &TimeZone) -> YearMonth {
        let date = instant.to_zoned_datetime(tz.clone()).date();
        YearMonth {
            year: date.year(),
            month: date.month(),
        }
    }

    /// The month after this one.
    pub fn next(self) -> YearMonth {
        match self.month {
            12 => YearMonth {
                year: self.year + 1,
                month: 1,
            },
            month => YearMonth {
                month: month + 1,
                ..self
            },
        }
    }

    /// The first instant of the month after this one, in `tz`.
    pub fn end(self, tz: &TimeZone) -> Timestamp {
        let (year, month) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        // Valid by construction: year <= 9999, month in 1..=12, day 1.
        let first = Date::new(year, month, 1).unwrap_or(Date::MAX);
        let midnight = tz.to_ambiguous_timestamp(first.to_datetime(Time::midnight()));
        // A midnight inside a gap resolves to the first instant after it; a
        // midnight that happens twice, to the earlier one…
        let Ok(end) = midnight.compatible() else {
            return Timestamp::MAX;
        };
        // …unless the clock falls back into this month after it (Newfoundland,
        // 2009-11-01 00:01): then only the later midnight ends the month.
        match midnight.later() {
            Ok(later)
                if later > end
                    && YearMonth::of(later - SignedDuration::from_nanos(1), tz) == self =>
            {
                later
            }
            _ => end,
        }
    }
}

impl fmt::Display for YearMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl Serialize for YearMonth {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for YearMonth {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        YearMonth::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("{s:?} is not a month like \"2027-02\""))
        })
    }
}

/// When a campaign's coupons expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExpiryRule {
    /// At the end of the month the coupon was claimed in.
    EndOfClaimMonth,
    /// At the end of a fixed month, whenever it was claimed.
    EndOfMonth { month: YearMonth },
    /// At a given instant, whenever it was claimed.
    At {
        #[serde(with = "crate::time::serde_rfc3339")]
        at: Timestamp,
    },
}

impl ExpiryRule {
    /// The instant a coupon issued at `issued_at` stops being usable.
    pub fn expires_at(&self, issued_at: Timestamp, tz: &TimeZone) -> Timestamp {
        self.expiry_of_claim_month(YearMonth::of(issued_at, tz), tz)
    }

    /// The instant every coupon claimed in `claim_month` stops being usable:
    /// one instant per claim month, so the sweep's index is by claim month.
    pub fn expiry_of_claim_month(&self, claim_month: YearMonth, tz: &TimeZone) -> Timestamp {
        match *self {
            ExpiryRule::EndOfClaimMonth => claim_month.end(tz),
            ExpiryRule::EndOfMonth { month } => month.end(tz),
            ExpiryRule::At { at } => at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).expect("zone in the bundled database")
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    #[test]
    fn leap_february_in_shanghai_ends_on_march_first() {
        let shanghai = tz("Asia/Shanghai");
        let rule = ExpiryRule::EndOfClaimMonth;
        let expiry = rule.expires_at(ts("2028-02-10T10:00:00+08:00"), &shanghai);
        assert_eq!(expiry, ts("2028-03-01T00:00:00+08:00"));
    }

    #[test]
    fn the_last_millisecond_of_a_month_expires_at_its_end() {
        let shanghai = tz("Asia/Shanghai");
        let issued = ts("2027-02-28T23:59:59.999+08:00");
        assert_eq!(
            ExpiryRule::EndOfClaimMonth.expires_at(issued, &shanghai),
            ts("2027-03-01T00:00:00+08:00")
        );
        // The same instant is already March in Tokyo.
        let tokyo = tz("Asia/Tokyo");
        assert_eq!(
            ExpiryRule::EndOfClaimMonth.expires_at(issued, &tokyo),
            ts("2027-04-01T00:00:00+09:00")
        );
    }

    #[test]
    fn december_rolls_into_the_next_year() {
        let ny = tz("America/New_York");
        let issued = ts("2027-12-31T23:00:00-05:00");
        assert_eq!(
            ExpiryRule::EndOfClaimMonth.expires_at(issued, &ny),
            ts("2028-01-01T00:00:00-05:00")
        );
    }

    #[test]
    fn a_fixed_month_ignores_the_claim_date() {
        let rule = ExpiryRule::EndOfMonth {
            month: YearMonth::parse("2027-02").expect("month"),
        };
        let shanghai = tz("Asia/Shanghai");
        assert_eq!(
            rule.expires_at(ts("2027-01-05T00:00:00Z"), &shanghai),
            ts("2027-03-01T00:00:00+08:00")
        );
    }

    #[test]
    fn a_midnight_that_does_not_exist_resolves_to_the_first_instant_after_the_gap() {
        // Cuba sprang forward at 00:00 on 2012-04-01: that day has no midnight,
        // and March's coupons expire at 01:00 -04:00, the day's first instant.
        let havana = tz("America/Havana");
        let march = YearMonth::parse("2012-03").expect("month");
        assert_eq!(march.end(&havana), ts("2012-04-01T01:00:00-04:00"));
    }

    #[test]
    fn the_last_millisecond_of_a_leap_february_expires_on_march_first() {
        let shanghai = tz("Asia/Shanghai");
        let issued = ts("2028-02-29T23:59:59.999+08:00");
        assert_eq!(
            ExpiryRule::EndOfClaimMonth.expires_at(issued, &shanghai),
            ts("2028-03-01T00:00:00+08:00")
        );
    }

    #[test]
    fn new_years_eve_ends_at_local_midnight_on_both_sides_of_utc() {
        // The last millisecond of 2027 is 2027-12-31T09:59:59.999Z in
        // Kiritimati and 2028-01-01T10:59:59.999Z in Pago Pago.
        let kiritimati = tz("Pacific/Kiritimati");
        assert_eq!(
            ExpiryRule::EndOfClaimMonth
                .expires_at(ts("2027-12-31T23:59:59.999+14:00"), &kiritimati),
            ts("2028-01-01T00:00:00+14:00")
        );
        let pago_pago = tz("Pacific/Pago_Pago");
        assert_eq!(
            ExpiryRule::EndOfClaimMonth.expires_at(ts("2027-12-31T23:59:59.999-11:00"), &pago_pago),
            ts("2028-01-01T00:00:00-11:00")
        );
        let december = ExpiryRule::EndOfMonth {
            month: YearMonth::parse("2027-12").expect("month"),
        };
        assert_eq!(
            december.expires_at(ts("2027-06-01T00:00:00Z"), &pago_pago),
            ts("2028-01-01T00:00:00-11:00")
        );
    }

    #[test]
    fn months_whose_next_first_has_no_midnight_end_where_the_gap_ends() {
        // Each zone moved its clocks forward at 00:00 on the 1st.
        for (zone, month, end) in [
            // Paraguay, summer time -04 -> -03.
            ("America/Asuncion", "2023-09", "2023-10-01T01:00:00-03:00"),
            // Nepal, +05:30 -> +05:45 for good.
            ("Asia/Kathmandu", "1985-12", "1986-01-01T00:15:00+05:45"),
            // Lord Howe Island, +10 -> +10:30.
            (
                "Australia/Lord_Howe",
                "1981-02",
                "1981-03-01T00:30:00+10:30",
            ),
            // Line Islands, -10:40 -> -10.
            ("Pacific/Kiritimati", "1979-09", "1979-10-01T00:40:00-10:00"),
        ] {
            let month = YearMonth::parse(month).expect("month");
            assert_eq!(month.end(&tz(zone)), ts(end), "{zone} {month}");
        }
    }

    #[test]
    fn a_midnight_that_happens_twice_ends_the_month_at_its_first_occurrence() {
        // Cuba fell back from 01:00 -04 to 00:00 -05 on 2015-11-01: that day
        // has two midnights, both already November.
        let havana = tz("America/Havana");
        let october = YearMonth::parse("2015-10").expect("month");
        assert_eq!(october.end(&havana), ts("2015-11-01T00:00:00-04:00"));
        // A claim in the repeated hour is a November claim.
        assert_eq!(
            ExpiryRule::EndOfClaimMonth.expires_at(ts("2015-11-01T00:30:00-05:00"), &havana),
            ts("2015-12-01T00:00:00-05:00")
        );
    }

    #[test]
    fn a_month_that_comes_back_after_midnight_ends_at_the_last_midnight() {
        // Newfoundland fell back from 00:01 -02:30 to 23:01 -03:30 on
        // 2009-11-01: after a minute of November, clocks showed October 31
        // again for an hour. October ends at the midnight after that hour;
        // the first midnight would expire a claim at 23:30 -03:30 before it
        // was made.
        let st_johns = tz("America/St_Johns");
        let october = YearMonth::parse("2009-10").expect("month");
        assert_eq!(october.end(&st_johns), ts("2009-11-01T00:00:00-03:30"));
        let issued = ts("2009-10-31T23:30:00-03:30");
        assert!(ExpiryRule::EndOfClaimMonth.expires_at(issued, &st_johns) > issued);
    }

    #[test]
    fn months_parse_strictly() {
        assert!(YearMonth::parse("2027-02").is_some());
        for bad in [
            "2027-2", "2027-13", "2027-00", "27-02", "2027/02", "+027-02", "2027-+2", "9999-12", "",
        ] {
            assert!(YearMonth::parse(bad).is_none(), "{bad}");
        }
    }
}

/// Properties of month ends over random claims and zones, and an exhaustive
/// sweep of every month from 1970 to 2100 in every zone of the bundled tzdb.
///
/// The oracle only reads wall clocks (instant to civil time, which is never
/// ambiguous) and the zone's transitions; it never converts a civil time back
/// to an instant, which is the step under test.
#[cfg(test)]
mod month_end_properties {
    use super::*;
    use jiff::SignedDuration;
    use jiff::civil::{DateTime, Time};
    use jiff::tz::AmbiguousOffset;
    use proptest::prelude::*;

    /// Zones with positive, negative, half- and quarter-hour offsets, and
    /// zones that change offset at or near midnight on the 1st of a month.
    const ZONES: &[&str] = &[
        "UTC",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Australia/Adelaide",
        "America/St_Johns",
        "Pacific/Chatham",
        "Asia/Shanghai",
        "America/New_York",
        "Europe/London",
        "Europe/Dublin",
        "Pacific/Apia",
        "America/Havana",
        "America/Santiago",
        "America/Asuncion",
        "Asia/Tehran",
        "Australia/Lord_Howe",
        "Pacific/Kiritimati",
        "Pacific/Pago_Pago",
        "Africa/Casablanca",
    ];

    const NANOSECOND: SignedDuration = SignedDuration::from_nanos(1);
    const MILLISECOND: SignedDuration = SignedDuration::from_millis(1);

    /// 1970-01-01T00:00:00Z and 2101-01-01T00:00:00Z, in seconds.
    const FIRST_SECOND: i64 = 0;
    const END_SECOND: i64 = 4_133_980_800;

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).expect("zone in the bundled database")
    }

    fn wall_clock(instant: Timestamp, tz: &TimeZone) -> DateTime {
        tz.to_datetime(instant)
    }

    /// The month a wall clock in `tz` shows at `instant`; the oracle's own
    /// reading, independent of `YearMonth::of`.
    fn month_on_the_wall(instant: Timestamp, tz: &TimeZone) -> YearMonth {
        let date = wall_clock(instant, tz).date();
        YearMonth {
            year: date.year(),
            month: date.month(),
        }
    }

    fn first_day_after(month: YearMonth) -> Date {
        let first = Date::new(month.year, month.month, 1).expect("valid month");
        first.last_of_month().tomorrow().expect("in range")
    }

    /// Checks that `end` is where `month` ends in `tz`: the wall clock shows
    /// `month` just before it, the 1st of the next month at it (midnight, or
    /// the end of a gap that swallowed midnight), and never `month` again.
    fn check_month_end(month: YearMonth, end: Timestamp, tz: &TimeZone) -> Result<(), String> {
        let at_end = wall_clock(end, tz);
        let next_first = first_day_after(month);
        if at_end.date() != next_first {
            return Err(format!("{month} ends at {at_end}, not on {next_first}"));
        }
        if at_end.time() != Time::midnight() {
            let midnight = next_first.to_datetime(Time::midnight());
            let midnight_skipped = matches!(
                tz.to_ambiguous_timestamp(midnight).offset(),
                AmbiguousOffset::Gap { .. }
            );
            let at_transition = tz
                .preceding(end + NANOSECOND)
                .next()
                .is_some_and(|t| t.timestamp() == end);
            if !(midnight_skipped && at_transition) {
                return Err(format!("{month} ends at {at_end}, not at midnight"));
            }
        }
        let just_before = end - NANOSECOND;
        if month_on_the_wall(just_before, tz) != month {
            let wall = wall_clock(just_before, tz);
            return Err(format!("{month} ends at {at_end} but {wall} comes before"));
        }
        // Between transitions the wall clock only moves forward, so after
        // `end` it is earliest right at a transition.
        for transition in tz.following(end) {
            if transition.timestamp() > end + SignedDuration::from_hours(48) {
                break;
            }
            let wall = wall_clock(transition.timestamp(), tz);
            if wall.date() < next_first {
                return Err(format!("{month} ends at {at_end} but {wall} comes after"));
            }
        }
        Ok(())
    }

    fn zone() -> impl Strategy<Value = &'static str> {
        prop::sample::select(ZONES)
    }

    fn year_month() -> impl Strategy<Value = YearMonth> {
        (1970..=2100i16, 1..=12i8).prop_map(|(year, month)| YearMonth { year, month })
    }

    /// Any instant from 1970 to 2100, with a bias towards the hours and
    /// nanoseconds around local midnight on the 1st of a month.
    fn claim_in(zone: &'static str) -> impl Strategy<Value = Timestamp> {
        let anywhere = (FIRST_SECOND..END_SECOND, 0..1_000_000_000i32)
            .prop_map(|(second, nanosecond)| Timestamp::new(second, nanosecond).expect("in range"));
        let nanos = |seconds: i64| seconds * 1_000_000_000;
        let offset = prop_oneof![
            -nanos(36 * 3600)..=nanos(36 * 3600),
            -nanos(2)..=nanos(2),
            -1000i64..=1000
        ];
        let near_a_first = (year_month(), offset).prop_map(move |(month, offset)| {
            let first = Date::new(month.year, month.month, 1).expect("valid month");
            let utc_midnight = TimeZone::UTC
                .to_timestamp(first.to_datetime(Time::midnight()))
                .expect("in range");
            // Roughly local midnight; the offset may change right there.
            let local_offset = SignedDuration::from(tz(zone).to_offset(utc_midnight));
            utc_midnight - local_offset + SignedDuration::from_nanos(offset)
        });
        prop_oneof![anywhere, near_a_first]
    }

    fn zone_and_claim() -> impl Strategy<Value = (&'static str, Timestamp)> {
        zone().prop_flat_map(|zone| (Just(zone), claim_in(zone)))
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 10_000,
            // Print failures; do not write regression files into the crate.
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn a_claim_expires_at_the_first_instant_after_its_month(
            (zone, claim) in zone_and_claim(),
        ) {
            let tz = tz(zone);
            let month = month_on_the_wall(claim, &tz);
            let expiry = ExpiryRule::EndOfClaimMonth.expires_at(claim, &tz);
            prop_assert!(claim < expiry, "claimed at {claim}, expires at {expiry}");
            check_month_end(month, expiry, &tz).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn the_last_instants_of_a_month_expire_with_it((zone, claim) in zone_and_claim()) {
            let tz = tz(zone);
            let rule = ExpiryRule::EndOfClaimMonth;
            let month = month_on_the_wall(claim, &tz);
            let expiry = rule.expires_at(claim, &tz);
            for before in [MILLISECOND, NANOSECOND] {
                let last = expiry - before;
                prop_assert_eq!(month_on_the_wall(last, &tz), month, "{:?} before", before);
                prop_assert_eq!(rule.expires_at(last, &tz), expiry, "{:?} before", before);
            }
            // A claim at the expiry instant is the next month's.
            prop_assert_ne!(month_on_the_wall(expiry, &tz), month);
            prop_assert!(rule.expires_at(expiry, &tz) > expiry);
        }

        #[test]
        fn a_fixed_month_ends_at_the_same_instant_for_every_claim(
            (zone, claim, other_claim) in zone()
                .prop_flat_map(|zone| (Just(zone), claim_in(zone), claim_in(zone))),
            month in year_month(),
        ) {
            let tz = tz(zone);
            let rule = ExpiryRule::EndOfMonth { month };
            let expiry = rule.expires_at(claim, &tz);
            prop_assert_eq!(expiry, rule.expires_at(other_claim, &tz));
            check_month_end(month, expiry, &tz).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn a_claim_month_and_the_same_fixed_month_end_together(
            (zone, claim) in zone_and_claim(),
        ) {
            let tz = tz(zone);
            let month = month_on_the_wall(claim, &tz);
            prop_assert_eq!(
                ExpiryRule::EndOfClaimMonth.expires_at(claim, &tz),
                ExpiryRule::EndOfMonth { month }.expires_at(claim, &tz)
            );
        }

        #[test]
        fn only_month_shaped_text_parses(
            text in prop_oneof![
                "[0-9]{4}-[0-9]{2}",
                "[0-9+ -]{4}-[0-9+ -]{2}",
                "[0-9+ /-]{0,9}",
                "\\PC{0,12}",
            ],
        ) {
            let parsed = YearMonth::parse(&text);
            prop_assert_eq!(parsed.is_some(), is_a_valid_month(&text));
            if let Some(month) = parsed {
                prop_assert_eq!(month.to_string(), text);
            }
        }
    }

    /// `YYYY-MM`, year 1000 to 9998, month 01 to 12; written without `parse`.
    fn is_a_valid_month(text: &str) -> bool {
        let bytes = text.as_bytes();
        let number = |digits: &[u8]| {
            digits.iter().try_fold(0u32, |n, &b| {
                b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
            })
        };
        bytes.len() == 7
            && bytes[4] == b'-'
            && number(&bytes[..4]).is_some_and(|year| (1000..=9998).contains(&year))
            && number(&bytes[5..]).is_some_and(|month| (1..=12).contains(&month))
    }

    #[test]
    fn every_seven_character_month_shape_parses_exactly_when_valid() {
        for year in 0..10_000 {
            for month in 0..100 {
                let text = format!("{year:04}-{month:02}");
                match YearMonth::parse(&text) {
                    Some(parsed) => {
                        assert!(is_a_valid_month(&text), "{text} parsed");
                        assert_eq!(parsed.to_string(), text);
                        let json = serde_json::to_string(&parsed).expect("serialize");
                        assert_eq!(json, format!("\"{text}\""));
                        assert_eq!(serde_json::from_str::<YearMonth>(&json).ok(), Some(parsed));
                    }
                    None => assert!(!is_a_valid_month(&text), "{text} rejected"),
                }
            }
        }
    }

    #[test]
    fn every_month_from_1970_to_2100_ends_right_in_every_zone() {
        let mut wrong = Vec::new();
        for name in jiff::tz::db().available() {
            let zone = name.to_string();
            let tz = tz(&zone);
            for year in 1970..=2100 {
                for month in 1..=12 {
                    let month = YearMonth { year, month };
                    if let Err(why) = check_month_end(month, month.end(&tz), &tz) {
                        wrong.push((zone.clone(), month.to_string(), why));
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
