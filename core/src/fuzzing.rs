//! The bodies of the fuzz targets in `fuzz/` (run by `fuzz/run` with cargo
//! fuzz), kept in the core so that `core/tests/fuzz_regressions.rs` replays
//! saved inputs through the very same code under a plain `cargo test`.
//!
//! Each function takes any bytes at all and must not panic on them; each
//! asserts what the code under test promises, so a failed assertion is a bug
//! the fuzzer found, not a harness problem.

use crate::api::{self, Reply};
use crate::auth::{self, MAX_USER_ID_LEN};
use crate::campaign::{Campaign, CampaignId, MAX_SHARDS, MAX_STOCK};
use crate::code::CouponCode;
use crate::discount::Discount;
use crate::error::{Denial, Error};
use crate::expiry::{ExpiryRule, YearMonth};
use crate::money::{Amount, Currency, MAX_AMOUNT};
use crate::ops::claim::ClaimRequest;
use crate::ops::coupons::{MAX_ORDER_ID_LEN, Order, ValidationRequest};
use crate::ops::dating::RedatingRequest;
use crate::ops::expire::ExpirationRequest;
use crate::ops::redeem::RedemptionRequest;
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::de::DeserializeOwned;
use sha2::Sha256;

// ---------------------------------------------------------------------------
// Request parsing

/// Request bodies, headers and query strings: every request type parses the
/// bytes or refuses them with a 400 JSON answer, and what parses keeps the
/// promises of its type.
pub fn requests(data: &[u8]) {
    if let Some(campaign) = parsed::<Campaign>(data) {
        check_campaign(&campaign);
    }
    if let Some(request) = parsed::<ClaimRequest>(data) {
        let id = request.campaign_id.as_str();
        assert_eq!(CampaignId::parse(id).as_ref(), Some(&request.campaign_id));
        let json = serde_json::to_vec(&request).expect("a claim request encodes");
        assert_eq!(parsed::<ClaimRequest>(&json), Some(request));
    }
    if let Some(request) = parsed::<ValidationRequest>(data) {
        check_order(&request.order);
        check_code(&request.code);
    }
    if let Some(request) = parsed::<RedemptionRequest>(data) {
        check_order(&request.order);
        check_code(&request.code);
    }
    if let Some(order) = parsed::<Order>(data) {
        check_order(&order);
    }
    if let Some(request) = parsed::<RedatingRequest>(data) {
        check_rule(request.expiry);
    }
    if let Some(rule) = parsed::<ExpiryRule>(data) {
        check_rule(rule);
    }
    if let Some(discount) = parsed::<Discount>(data) {
        let largest = Amount::new(MAX_AMOUNT).expect("in range");
        assert!(discount.amount_off(largest) <= discount.face_value());
    }
    let _ = parsed::<ExpirationRequest>(data);
    let _ = parsed::<Amount>(data);
    let _ = parsed::<Currency>(data);

    let text = String::from_utf8_lossy(data);
    check_idempotency_key(&text);
    let first_key = text.split(['&', '=']).next().unwrap_or_default();
    for name in ["order_id", first_key] {
        check_query_param(&text, name);
    }
    check_code(&text);
}

/// `api::parse_json::<T>(data)`: a value, or an `invalid_request` answered with 400.
fn parsed<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    match api::parse_json::<T>(data) {
        Ok(value) => Some(value),
        Err(err) => {
            assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
            check_error_reply(&err, 400);
            None
        }
    }
}

/// The error answer is JSON with the error's code, a message, and its field if any.
fn check_error_reply(err: &Error, status: u16) {
    let reply = Reply::error(err);
    assert_eq!(reply.status, status, "{err:?}");
    assert!(
        reply
            .headers
            .contains(&("content-type", "application/json".into()))
    );
    let body: serde_json::Value =
        serde_json::from_slice(&reply.body).expect("an error answer is JSON");
    let detail = &body["error"];
    assert_eq!(detail["code"], err.code(), "{body}");
    assert!(
        detail["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(detail["field"].as_str(), err.field(), "{body}");
}

/// What a campaign that passes `validate` promises, and that it is stored
/// and read back unchanged.
fn check_campaign(campaign: &Campaign) {
    if let Err(err) = campaign.validate() {
        check_error_reply(&err, 400);
        return;
    }
    check_capacity(campaign);
    let tz = campaign.zone().expect("a valid campaign has a zone");
    let (start, end) = (campaign.claim_starts_at, campaign.claim_ends_at);
    assert!(campaign.is_claimable_at(start) && !campaign.is_claimable_at(end));
    let last = end - SignedDuration::from_nanos(1);
    for claim in [start, last] {
        if claims_from() <= claim && claim < claims_until() {
            let expiry = campaign.expiry.expires_at(claim, &tz);
            assert!(claim < expiry, "claimed at {claim}, expires at {expiry}");
        }
    }
    // What `ops::campaigns::create` writes, every later request decodes.
    let stored = serde_json::to_vec(campaign).expect("a campaign encodes");
    let loaded = api::parse_json::<Campaign>(&stored);
    assert_eq!(
        loaded.as_ref(),
        Ok(campaign),
        "stored as {}",
        String::from_utf8_lossy(&stored)
    );
}

fn check_order(order: &Order) {
    assert!(Amount::new(order.amount.minor()).is_some());
    assert_eq!(
        Currency::parse(order.currency.as_str()).ok(),
        Some(order.currency)
    );
    match order.required_id() {
        Ok(id) => {
            let characters = id.chars().count();
            assert!((1..=MAX_ORDER_ID_LEN).contains(&characters), "{id:?}");
            assert!(!id.chars().any(char::is_control), "{id:?}");
        }
        Err(err) => {
            assert_eq!(err.field(), Some("order.id"));
            check_error_reply(&err, 400);
        }
    }
}

/// A code that parses is its upper-case self, parses back in any case, and
/// differs from every code one character away.
fn check_code(text: &str) {
    let Some(code) = CouponCode::parse(text) else {
        return;
    };
    assert_eq!(code.as_str(), text.to_ascii_uppercase());
    assert_eq!(code.as_str().len(), 21);
    assert_eq!(CouponCode::parse(code.as_str()).as_ref(), Some(&code));
    assert_eq!(
        CouponCode::parse(&code.as_str().to_ascii_lowercase()).as_ref(),
        Some(&code)
    );
    for shards in [1, 2, 16, MAX_SHARDS] {
        assert!(code.shard(shards) < shards);
    }
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    for i in 0..code.as_str().len() {
        for &c in ALPHABET {
            let mut typo = code.as_str().as_bytes().to_vec();
            if typo[i] != c {
                typo[i] = c;
                let typo = String::from_utf8(typo).expect("ASCII");
                assert_eq!(CouponCode::parse(&typo), None, "{code} typed as {typo}");
            }
        }
    }
}

fn check_rule(rule: ExpiryRule) {
    if let ExpiryRule::EndOfMonth { month } = rule {
        assert_eq!(YearMonth::parse(&month.to_string()), Some(month));
        assert!(month.end(&TimeZone::UTC) < month.next().end(&TimeZone::UTC));
    }
}

fn check_idempotency_key(text: &str) {
    let well_formed = (1..=api::MAX_IDEMPOTENCY_KEY_LEN).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_graphic());
    match api::idempotency_key(Some(text)) {
        Ok(key) => assert!(well_formed && key == text, "{text:?}"),
        Err(err) => {
            assert!(!well_formed, "{text:?} refused");
            assert_eq!(err.field(), Some("Idempotency-Key"));
            check_error_reply(&err, 400);
        }
    }
}

/// The value of the first `name=` pair, percent-decoded; it survives being
/// percent-encoded again.
fn check_query_param(query: &str, name: &str) {
    let pair = query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| *key == name);
    match api::query_param(query, name) {
        Ok(None) => assert!(pair.is_none(), "{name} in {query:?}"),
        Ok(Some(value)) => {
            let (_, raw) = pair.expect("a value comes from a pair");
            if !raw.contains(['%', '+']) {
                assert_eq!(value, raw);
            }
            let again = format!("{name}={}", percent_encode(&value));
            assert_eq!(api::query_param(&again, name), Ok(Some(value)), "{again}");
        }
        Err(err) => {
            assert!(pair.is_some(), "{name} in {query:?}");
            check_error_reply(&err, 400);
        }
    }
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Token verification

/// The key tokens are signed with; [`OTHER_SECRET`] must verify none of them.
pub const SECRET: &[u8] = b"fuzz-secret";
const OTHER_SECRET: &[u8] = b"fuzz-secret-2";
pub const ADMIN_TOKEN: &str = "fuzz-admin-token";
/// The token target's clock: 2027-01-10T00:00:00Z.
pub const NOW_SECOND: i64 = 1_799_539_200;

/// `Authorization` headers: any bytes are refused or verified soundly, and a
/// token signed from the bytes verifies exactly when its claims are good,
/// and no longer once one byte of it changes.
///
/// Input: the whole of it is one header; read as fields, it is a flag byte
/// (bit 0: an `nbf` claim), `exp` and `nbf` as seconds from now (i16 each),
/// the position (u16) and new value (u8) of a changed byte, and the `sub`.
pub fn token(data: &[u8]) {
    let now = Timestamp::from_second(NOW_SECOND).expect("in range");
    check_any_header(&String::from_utf8_lossy(data), now);

    let mut input = Input(data);
    let flags = input.u8();
    let exp = NOW_SECOND + i64::from(input.i16());
    let nbf = NOW_SECOND + i64::from(input.i16());
    let nbf = (flags & 1 == 1).then_some(nbf);
    let (position, byte) = (input.u16(), input.u8());
    let sub = String::from_utf8_lossy(input.rest()).into_owned();

    let mut claims = serde_json::json!({"sub": sub, "exp": exp});
    if let Some(nbf) = nbf {
        claims["nbf"] = nbf.into();
    }
    let header = format!("Bearer {}", auth::sign_user_token(SECRET, &claims));
    let good_sub = (1..=MAX_USER_ID_LEN).contains(&sub.len()) && !sub.chars().any(char::is_control);
    let leeway = auth::LEEWAY as i64;
    let good =
        good_sub && exp + leeway > NOW_SECOND && nbf.is_none_or(|nbf| nbf - leeway <= NOW_SECOND);
    let verified = auth::verify_user(Some(&header), SECRET, now);
    assert_eq!(
        verified.as_ref().ok().map(auth::UserId::as_str),
        good.then_some(sub.as_str()),
        "{claims}"
    );
    check_any_header(&header, now);

    let mut changed = header.clone().into_bytes();
    let at = usize::from(position) % changed.len();
    if changed[at] == byte {
        return;
    }
    changed[at] = byte;
    let Ok(changed) = String::from_utf8(changed) else {
        return;
    };
    let outcome = auth::verify_user(Some(&changed), SECRET, now);
    match meaning(&header, &changed, at) {
        Meaning::Same => assert_eq!(outcome, verified, "{changed}"),
        Meaning::MaybeSame => assert!(outcome.is_err() || outcome == verified, "{changed}"),
        Meaning::Different => assert!(matches!(outcome, Err(Error::Unauthorized(_))), "{changed}"),
    }
}

/// Whether one changed byte leaves a header saying the same.
enum Meaning {
    /// The scheme is case-insensitive (RFC 6750): `bearer` is `Bearer`.
    Same,
    /// The signature decodes to the same bytes (only its unused trailing bits
    /// changed): it may be refused as non-canonical or accepted as before.
    MaybeSame,
    Different,
}

fn meaning(original: &str, changed: &str, at: usize) -> Meaning {
    let (before, after) = (original.as_bytes()[at], changed.as_bytes()[at]);
    if at < "Bearer".len() {
        return match before.eq_ignore_ascii_case(&after) {
            true => Meaning::Same,
            false => Meaning::Different,
        };
    }
    // Decodes with the unused bits of the last character ignored.
    let lenient = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    let signature = |header: &str| {
        let (signed, signature) = bearer_token(header)?.rsplit_once('.')?;
        Some((signed.to_owned(), lenient.decode(signature).ok()?))
    };
    match (signature(original), signature(changed)) {
        (Some(a), Some(b)) if a == b => Meaning::MaybeSame,
        _ => Meaning::Different,
    }
}

/// Refused as `unauthorized` (401), or a token that [`SECRET`] really signed.
fn check_any_header(header: &str, now: Timestamp) {
    match auth::verify_user(Some(header), SECRET, now) {
        Ok(user) => {
            let token = bearer_token(header).expect("an accepted header is a bearer token");
            let (signed, signature) = token.rsplit_once('.').expect("a JWT has three parts");
            let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
            mac.update(signed.as_bytes());
            let expected = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
            assert_eq!(signature, expected, "accepted {header:?}");
            let user = user.as_str();
            assert!((1..=MAX_USER_ID_LEN).contains(&user.len()), "{user:?}");
            assert!(!user.chars().any(char::is_control), "{user:?}");
            let forged = auth::verify_user(Some(header), OTHER_SECRET, now);
            assert_eq!(forged, Err(Error::Unauthorized(Denial::Invalid)));
        }
        Err(err) => {
            assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");
            check_error_reply(&err, 401);
        }
    }
    assert!(auth::verify_user(Some(header), b"", now).is_err());

    let is_admin = bearer_token(header) == Some(ADMIN_TOKEN);
    let verified = auth::verify_admin(Some(header), ADMIN_TOKEN);
    assert_eq!(verified.is_ok(), is_admin, "{header:?}");
    assert!(auth::verify_admin(Some(header), "").is_err());
}

/// The token of `<scheme> <token>` where the scheme is `bearer` in any case.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.trim())
}

// ---------------------------------------------------------------------------
// The core rules

/// Zones with positive, negative, half- and quarter-hour offsets, and zones
/// that change offset at or near midnight on the 1st of a month.
const ZONES: &[&str] = &[
    "UTC",
    "Asia/Shanghai",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Adelaide",
    "Australia/Lord_Howe",
    "America/St_Johns",
    "America/New_York",
    "America/Havana",
    "America/Santiago",
    "America/Asuncion",
    "Europe/London",
    "Europe/Dublin",
    "Asia/Tehran",
    "Pacific/Chatham",
    "Pacific/Apia",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "Africa/Casablanca",
];

/// Claims are checked from 1970-01-01T00:00:00Z up to 2200-01-01T00:00:00Z.
const FIRST_CLAIM_SECOND: i64 = 0;
const END_OF_CLAIMS_SECOND: i64 = 7_258_118_400;

fn claims_from() -> Timestamp {
    Timestamp::from_second(FIRST_CLAIM_SECOND).expect("in range")
}

fn claims_until() -> Timestamp {
    Timestamp::from_second(END_OF_CLAIMS_SECOND).expect("in range")
}

/// Discounts, campaign capacity and month ends, built from the bytes.
pub fn rules(data: &[u8]) {
    let mut input = Input(data);
    let discount = check_discount(&mut input);
    check_campaign_limits(&mut input, discount);
    check_month_end(&mut input);
}

/// A discount never takes more than the order or its face value, and the
/// payable amount plus the discount is the order.
fn check_discount(input: &mut Input) -> Discount {
    let order = input.amount();
    let discount = match input.u8() % 2 {
        0 => Discount::Fixed {
            amount: input.amount(),
        },
        _ => Discount::Percent {
            basis_points: input.u16(),
            max_amount: input.amount(),
        },
    };
    let off = discount.amount_off(order);
    assert!(off <= order, "{discount:?} takes {off} off {order}");
    assert!(
        off <= discount.face_value(),
        "{discount:?} takes {off} off {order}"
    );
    let payable = order.saturating_sub(off);
    assert_eq!(payable.minor() + off.minor(), order.minor());
    if discount.validate().is_ok() {
        let exact = match discount {
            Discount::Fixed { amount } => i128::from(amount.minor()),
            Discount::Percent {
                basis_points,
                max_amount,
            } => (i128::from(order.minor()) * i128::from(basis_points) / 10_000)
                .min(i128::from(max_amount.minor())),
        };
        assert_eq!(
            i128::from(off.minor()),
            exact.min(i128::from(order.minor())),
            "{discount:?} off {order}"
        );
    }
    discount
}

/// A campaign validates exactly when its limits are in range, and then it
/// issues at least one coupon, never more than the stock or the budget, split
/// over shards that each issue one or more and together all.
fn check_campaign_limits(input: &mut Input, discount: Discount) {
    let stock = input.u64() % (MAX_STOCK + 2);
    let budget = (input.u8() % 2 == 1).then(|| input.amount());
    let shards = input.u32() % (MAX_SHARDS + 2);
    let start = claims_from();
    let campaign = Campaign {
        id: CampaignId::parse("fuzz").expect("a valid id"),
        name: "fuzz".into(),
        currency: Currency::parse("CNY").expect("a valid currency"),
        discount,
        min_order_amount: Amount::ZERO,
        stock,
        budget,
        per_user_limit: 1,
        claim_starts_at: start,
        claim_ends_at: start + SignedDuration::from_hours(1),
        time_zone: "UTC".into(),
        expiry: ExpiryRule::EndOfClaimMonth,
        categories: Vec::new(),
        max_claims_per_second: None,
        coupons_per_order: 1,
        redeemable_by_users: false,
        hold_seconds: None,
        shards,
        retention_days: crate::campaign::DEFAULT_RETENTION_DAYS,
    };
    let face = discount.face_value();
    let in_range = discount.validate().is_ok()
        && (1..=MAX_STOCK).contains(&stock)
        && budget.is_none_or(|budget| budget >= face)
        && (1..=MAX_SHARDS).contains(&shards);
    assert_eq!(campaign.validate().is_ok(), in_range, "{campaign:?}");
    if in_range {
        check_capacity(&campaign);
    }
}

fn check_capacity(campaign: &Campaign) {
    let capacity = campaign.capacity();
    let face = i128::from(campaign.discount.face_value().minor());
    assert!((1..=campaign.stock).contains(&capacity), "{campaign:?}");
    if let Some(budget) = campaign.budget {
        let budget = i128::from(budget.minor());
        assert!(i128::from(capacity) * face <= budget, "{campaign:?}");
        // As many as the budget allows, unless the stock runs out first.
        assert!(capacity == campaign.stock || (i128::from(capacity) + 1) * face > budget);
    }
    let shards = campaign.shard_count();
    assert!((1..=campaign.shards).contains(&shards), "{campaign:?}");
    let split: Vec<i64> = (0..shards).map(|i| campaign.shard_capacity(i)).collect();
    let (least, most) = (split.iter().min(), split.iter().max());
    assert!(least.is_some_and(|&least| least >= 1), "{split:?}");
    assert!(
        most.zip(least)
            .is_some_and(|(most, least)| most - least <= 1)
    );
    assert_eq!(split.iter().sum::<i64>(), capacity as i64, "{campaign:?}");
}

/// A claim expires strictly after it is made, at the first instant its
/// month is over in the zone, and month ends only move forward.
fn check_month_end(input: &mut Input) {
    let zone = ZONES[usize::from(input.u8()) % ZONES.len()];
    let tz = TimeZone::get(zone).expect("a zone in the bundled database");
    let claim = input.claim_instant(&tz);
    let rule = ExpiryRule::EndOfClaimMonth;
    let expiry = rule.expires_at(claim, &tz);
    assert!(
        claim < expiry,
        "claimed at {claim} in {zone}, expires at {expiry}"
    );

    let month = YearMonth::of(claim, &tz);
    assert_eq!(expiry, month.end(&tz), "{zone}");
    assert_eq!(rule.expiry_of_claim_month(month, &tz), expiry);
    let fixed = ExpiryRule::EndOfMonth { month };
    assert_eq!(fixed.expires_at(claims_from(), &tz), expiry);
    let last = expiry - SignedDuration::from_nanos(1);
    assert_eq!(
        YearMonth::of(last, &tz),
        month,
        "{zone}: {last} is after {month}"
    );
    assert_eq!(rule.expires_at(last, &tz), expiry, "{zone}");
    assert_eq!(YearMonth::of(expiry, &tz), month.next(), "{zone}: {expiry}");
    assert!(month.next().end(&tz) > expiry, "{zone}: {month}");
    assert_eq!(YearMonth::parse(&month.to_string()), Some(month));
}

// ---------------------------------------------------------------------------

/// Fixed-size values read off the front of the input; zeros once it runs
/// out, so every input decodes to something.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }

    fn i16(&mut self) -> i16 {
        i16::from_le_bytes(self.bytes())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }

    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.bytes())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }

    /// Any amount: the number as read where it is one, else folded into range.
    fn amount(&mut self) -> Amount {
        let minor = i64::from_le_bytes(self.bytes());
        let amount = Amount::new(minor);
        assert_eq!(amount.is_some(), (0..=MAX_AMOUNT).contains(&minor));
        amount.unwrap_or_else(|| Amount::new(minor.rem_euclid(MAX_AMOUNT + 1)).expect("in range"))
    }

    /// A claim from 1970 to 2199: anywhere, or within days of local midnight
    /// on the 1st of a month, where month ends are.
    fn claim_instant(&mut self, tz: &TimeZone) -> Timestamp {
        let (choice, second, nanosecond) = (self.u8(), self.u64(), self.u32() % 1_000_000_000);
        let span = (END_OF_CLAIMS_SECOND - FIRST_CLAIM_SECOND) as u64;
        let anywhere = || {
            let second = FIRST_CLAIM_SECOND + (second % span) as i64;
            Timestamp::new(second, nanosecond as i32).expect("in range")
        };
        if choice % 2 == 0 {
            return anywhere();
        }
        let months = second % ((2200 - 1970) * 12);
        let first = jiff::civil::date(1970 + (months / 12) as i16, (months % 12 + 1) as i8, 1);
        let Ok(utc_midnight) =
            TimeZone::UTC.to_timestamp(first.to_datetime(jiff::civil::Time::midnight()))
        else {
            return anywhere();
        };
        // Roughly local midnight; the offset may change right there.
        let local_midnight = utc_midnight - SignedDuration::from(tz.to_offset(utc_midnight));
        let unit = [1, 1_000, 1_000_000][usize::from(choice / 2 % 3)];
        let near = local_midnight + SignedDuration::from_nanos(i64::from(self.i32()) * unit);
        near.clamp(
            claims_from(),
            claims_until() - SignedDuration::from_nanos(1),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constants_are_the_instants_they_name() {
        assert_eq!(claims_from().to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(claims_until().to_string(), "2200-01-01T00:00:00Z");
        let now = Timestamp::from_second(NOW_SECOND).expect("in range");
        assert_eq!(now.to_string(), "2027-01-10T00:00:00Z");
    }

    #[test]
    fn every_zone_is_in_the_bundled_database() {
        for zone in ZONES {
            assert!(TimeZone::get(zone).is_ok(), "{zone}");
        }
    }
}
