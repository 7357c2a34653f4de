//! Timestamps on the wire: RFC 3339 with an offset.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// `instant` as RFC 3339 in the offset `tz` has at that instant, e.g.
/// `2028-03-01T00:00:00+08:00`.
pub fn render(instant: Timestamp, tz: &TimeZone) -> String {
    instant
        .display_with_offset(tz.to_offset(instant))
        .to_string()
}

/// Parses RFC 3339 with an explicit offset (`Z` or `±hh:mm`), for instants in
/// the UTC years 1000 to 9998: stored in UTC they keep four-digit years (so
/// they read back), and every month end after them is representable.
pub fn parse(s: &str) -> Option<Timestamp> {
    // jiff also takes RFC 9557 annotations and lower-case separators; insist on plain RFC 3339.
    let looks_rfc3339 = s.len() >= 20 && s.as_bytes().get(10) == Some(&b'T') && !s.contains('[');
    let instant: Timestamp = looks_rfc3339.then(|| s.parse().ok()).flatten()?;
    /// 1000-01-01T00:00:00Z and 9999-01-01T00:00:00Z in Unix seconds.
    const UTC_YEARS_1000_TO_9998: std::ops::Range<i64> = -30_610_224_000..253_370_764_800;
    UTC_YEARS_1000_TO_9998
        .contains(&instant.as_second())
        .then_some(instant)
}

/// Serde for stored timestamps (UTC, RFC 3339).
pub mod serde_rfc3339 {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(ts)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        super::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{s:?} is not an RFC 3339 timestamp with offset, like \"2027-01-20T10:00:00+08:00\""
            ))
        })
    }
}

/// Serde for optional stored timestamps (UTC, RFC 3339).
pub mod serde_rfc3339_option {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match ts {
            Some(ts) => super::serde_rfc3339::serialize(ts, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::serde_rfc3339")] Timestamp);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(ts)| ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_outside_four_digit_utc_years_are_refused() {
        // Year 0 at +08:00 is year -1 in UTC: stored, it would not read back.
        assert_eq!(parse("0000-01-01T00:00:00+08:00"), None);
        assert_eq!(parse("0999-12-31T23:59:59Z"), None);
        assert_eq!(parse("9999-01-01T00:00:00Z"), None);
        for ok in ["1000-01-01T00:00:00Z", "9998-12-31T23:59:59Z"] {
            let instant = parse(ok).expect(ok);
            assert_eq!(parse(&instant.to_string()), Some(instant));
        }
    }

    #[test]
    fn renders_in_the_zone_offset_of_the_instant() {
        let shanghai = TimeZone::get("Asia/Shanghai").expect("zone");
        let ts = parse("2028-02-29T15:59:59.999Z").expect("ts");
        assert_eq!(render(ts, &shanghai), "2028-02-29T23:59:59.999+08:00");
        let ny = TimeZone::get("America/New_York").expect("zone");
        assert_eq!(
            render(parse("2027-07-01T04:00:00Z").expect("ts"), &ny),
            "2027-07-01T00:00:00-04:00"
        );
    }

    #[test]
    fn only_rfc3339_with_offset_parses() {
        assert!(parse("2027-01-20T10:00:00+08:00").is_some());
        assert!(parse("2027-01-20T10:00:00Z").is_some());
        for bad in [
            "2027-01-20T10:00:00",
            "2027-01-20",
            "2027-01-20 10:00:00Z",
            "2027-01-20T10:00:00+08:00[Asia/Shanghai]",
            "yesterday",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
