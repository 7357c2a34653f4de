//! Month-end arithmetic: when a coupon stops being usable.
//!
//! A coupon expires at the first instant of the month after its claim month
//! (or after a fixed month) in the campaign's time zone. "First instant" is
//! midnight where midnight exists, and the first moment after the gap where a
//! daylight-saving change skips it.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
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

    /// The first instant of the month after this one, in `tz`.
    pub fn end(self, tz: &TimeZone) -> Timestamp {
        let (year, month) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        // Both are valid by construction: year <= 9999, month in 1..=12, day 1.
        let first = Date::new(year, month, 1).unwrap_or(Date::MAX);
        // `to_zoned_datetime` resolves a midnight inside a gap to the first instant after it.
        first
            .to_zoned_datetime(tz.clone())
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MAX)
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
}

impl ExpiryRule {
    /// The instant a coupon issued at `issued_at` stops being usable.
    pub fn expires_at(&self, issued_at: Timestamp, tz: &TimeZone) -> Timestamp {
        match *self {
            ExpiryRule::EndOfClaimMonth => YearMonth::of(issued_at, tz).end(tz),
            ExpiryRule::EndOfMonth { month } => month.end(tz),
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
    fn months_parse_strictly() {
        assert!(YearMonth::parse("2027-02").is_some());
        for bad in [
            "2027-2", "2027-13", "2027-00", "27-02", "2027/02", "+027-02", "9999-12", "",
        ] {
            assert!(YearMonth::parse(bad).is_none(), "{bad}");
        }
    }
}
