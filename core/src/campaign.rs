//! Campaigns: what an operator sets up, checked once on the way in.

use crate::discount::Discount;
use crate::error::{Error, Result};
use crate::expiry::{ExpiryRule, YearMonth};
use crate::money::{Amount, Currency};
use crate::time::serde_rfc3339;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_STOCK: u64 = 1_000_000_000;
pub const MAX_PER_USER_LIMIT: u32 = 1_000;
pub const MAX_CATEGORIES: usize = 100;
pub const MAX_CATEGORY_LEN: usize = 64;
/// Longer than any IANA time zone name (the longest has 32 bytes).
pub const MAX_TIME_ZONE_LEN: usize = 64;
pub const MAX_CLAIMS_PER_SECOND: u32 = 1_000_000;
pub const MAX_SHARDS: u32 = 256;
/// The longest hold: a day.
pub const MAX_HOLD_SECONDS: u32 = 86_400;
/// How long a campaign's records are kept after its last coupon ended, unless
/// it says: a quarter, for refunds and the books to close.
pub const DEFAULT_RETENTION_DAYS: u32 = 90;
/// Ten years.
pub const MAX_RETENTION_DAYS: u32 = 3_650;

fn default_retention_days() -> u32 {
    DEFAULT_RETENTION_DAYS
}

/// Stock shards of a campaign that does not say: enough that no one counter
/// is hot, few enough that selling out costs few probes.
pub const DEFAULT_SHARDS: u32 = 16;

fn default_shards() -> u32 {
    DEFAULT_SHARDS
}

fn one() -> u32 {
    1
}

/// A campaign id: 1 to 64 of `a-z`, `0-9` and `-`. Safe inside store keys and URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct CampaignId(String);

impl CampaignId {
    pub fn parse(s: &str) -> Option<CampaignId> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        ok.then(|| CampaignId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CampaignId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CampaignId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CampaignId::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("{s:?} is not 1 to 64 of a-z, 0-9 and -"))
        })
    }
}

/// A campaign as created; stored once, by the request that created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    pub id: CampaignId,
    pub name: String,
    pub currency: Currency,
    pub discount: Discount,
    pub min_order_amount: Amount,
    pub stock: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Amount>,
    pub per_user_limit: u32,
    #[serde(with = "serde_rfc3339")]
    pub claim_starts_at: Timestamp,
    #[serde(with = "serde_rfc3339")]
    pub claim_ends_at: Timestamp,
    pub time_zone: String,
    pub expiry: ExpiryRule,
    #[serde(default)]
    pub categories: Vec<String>,
    /// Claims admitted per second across every host; over it, 429. Absent: no ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_claims_per_second: Option<u32>,
    /// Coupons of this campaign one order may take (see `ops::orders`).
    #[serde(default = "one")]
    pub coupons_per_order: u32,
    /// Whether users may redeem with their own token. Off by default: the
    /// shop's checkout redeems, with the order terms it vouches for.
    #[serde(default)]
    pub redeemable_by_users: bool,
    /// How long the checkout may hold a coupon for an order while it is
    /// paid (see `ops::holds`). Absent: no holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_seconds: Option<u32>,
    /// How many counters the stock is split across (see [`Campaign::shard_capacity`]).
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// Days its records are kept after its last coupon ended; then an
    /// operator may purge them (see `ops::purge`).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

impl Campaign {
    /// Checks what the types alone cannot; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() || self.name.chars().count() > MAX_NAME_LEN {
            return Err(Error::invalid(
                "name",
                format!("must be 1 to {MAX_NAME_LEN} characters"),
            ));
        }
        self.discount
            .validate()
            .map_err(|m| Error::invalid("discount", m))?;
        self.validate_limits()?;
        if !(1..=MAX_SHARDS).contains(&self.shards) {
            return Err(Error::invalid(
                "shards",
                format!("must be 1 to {MAX_SHARDS}"),
            ));
        }
        if !(1..=MAX_PER_USER_LIMIT).contains(&self.per_user_limit) {
            return Err(Error::invalid(
                "per_user_limit",
                format!("must be 1 to {MAX_PER_USER_LIMIT}"),
            ));
        }
        let most = crate::ops::orders::MAX_COUPONS_PER_ORDER;
        if !(1..=most).contains(&self.coupons_per_order) {
            return Err(Error::invalid(
                "coupons_per_order",
                format!("must be 1 to {most}"),
            ));
        }
        if self
            .hold_seconds
            .is_some_and(|s| !(1..=MAX_HOLD_SECONDS).contains(&s))
        {
            return Err(Error::invalid(
                "hold_seconds",
                format!("must be 1 to {MAX_HOLD_SECONDS}"),
            ));
        }
        if !(1..=MAX_RETENTION_DAYS).contains(&self.retention_days) {
            return Err(Error::invalid(
                "retention_days",
                format!("must be 1 to {MAX_RETENTION_DAYS}"),
            ));
        }
        if self.claim_ends_at <= self.claim_starts_at {
            return Err(Error::invalid(
                "claim_ends_at",
                "must be after claim_starts_at",
            ));
        }
        let tz = self.zone()?;
        if let ExpiryRule::EndOfMonth { month } = self.expiry
            && month.end(&tz) <= self.claim_ends_at
        {
            return Err(Error::invalid(
                "expiry",
                format!("month {month} ends before the claim window does"),
            ));
        }
        if let ExpiryRule::At { at } = self.expiry
            && at <= self.claim_ends_at
        {
            return Err(Error::invalid(
                "expiry.at",
                "must be after the claim window (close the campaign first to end its coupons sooner)",
            ));
        }
        if self.categories.len() > MAX_CATEGORIES
            || self
                .categories
                .iter()
                .any(|c| c.is_empty() || c.chars().count() > MAX_CATEGORY_LEN)
        {
            return Err(Error::invalid(
                "categories",
                format!(
                    "at most {MAX_CATEGORIES} categories of 1 to {MAX_CATEGORY_LEN} characters"
                ),
            ));
        }
        Ok(())
    }

    /// The campaign's time zone, from the bundled IANA database.
    pub fn zone(&self) -> Result<TimeZone> {
        if self.time_zone.len() > MAX_TIME_ZONE_LEN {
            return Err(Error::invalid(
                "time_zone",
                format!("is over {MAX_TIME_ZONE_LEN} bytes; IANA names are shorter"),
            ));
        }
        TimeZone::get(&self.time_zone).map_err(|_| {
            Error::invalid(
                "time_zone",
                format!(
                    "{:?} is not an IANA time zone name like \"Asia/Shanghai\"",
                    self.time_zone
                ),
            )
        })
    }

    /// Checks the limits an operator may change during a sale (see `ops::limits`).
    pub fn validate_limits(&self) -> Result<()> {
        if !(1..=MAX_STOCK).contains(&self.stock) {
            return Err(Error::invalid("stock", format!("must be 1 to {MAX_STOCK}")));
        }
        if self.budget.is_some_and(|b| b < self.discount.face_value()) {
            return Err(Error::invalid(
                "budget",
                "must cover at least one coupon's face value when given",
            ));
        }
        if self
            .max_claims_per_second
            .is_some_and(|n| !(1..=MAX_CLAIMS_PER_SECOND).contains(&n))
        {
            return Err(Error::invalid(
                "max_claims_per_second",
                format!("must be 1 to {MAX_CLAIMS_PER_SECOND} when given"),
            ));
        }
        Ok(())
    }

    /// How many coupons may ever be issued: the stock, or fewer if the budget
    /// runs out first. Every coupon of a campaign has the same face value, so
    /// the budget is a cap on the count, and one counter per shard keeps both.
    pub fn capacity(&self) -> u64 {
        let by_budget = self.budget.map_or(u64::MAX, |budget| {
            // face_value() >= 1, checked by Discount::validate.
            (budget.minor() / self.discount.face_value().minor().max(1)) as u64
        });
        self.stock.min(by_budget)
    }

    /// The first and last claim months (in `zone`, the campaign's) in which
    /// a coupon may have been issued by `now`: none after the window closes,
    /// nor in the future. Empty (first after last) before the window opens.
    pub fn claim_months(&self, zone: &TimeZone, now: Timestamp) -> (YearMonth, YearMonth) {
        (
            YearMonth::of(self.claim_starts_at, zone),
            YearMonth::of(self.claim_ends_at.min(now), zone),
        )
    }

    /// Stock counters in use: never more than there are coupons to split.
    pub fn shard_count(&self) -> u32 {
        self.shards
            .clamp(1, u32::try_from(self.capacity()).unwrap_or(u32::MAX).max(1))
    }

    /// The coupons shard `i` may issue: an even split, the remainder to the first shards.
    pub fn shard_capacity(&self, i: u32) -> i64 {
        let (n, capacity) = (u64::from(self.shard_count()), self.capacity());
        let extra = u64::from(u64::from(i) < capacity % n);
        i64::try_from(capacity / n + extra).unwrap_or(i64::MAX)
    }

    /// Whether claims are accepted at `now`: from the start, up to but not including the end.
    pub fn is_claimable_at(&self, now: Timestamp) -> bool {
        self.claim_starts_at <= now && now < self.claim_ends_at
    }

    /// Whether an order in these categories may use the coupon: any one eligible
    /// category suffices; a campaign without categories takes every order.
    pub fn accepts_categories(&self, order_categories: &[String]) -> bool {
        self.categories.is_empty() || order_categories.iter().any(|c| self.categories.contains(c))
    }
}

#[cfg(test)]
mod tests {
    use crate::money::Amount;

    #[test]
    fn the_budget_caps_the_count_and_shards_split_it_evenly() {
        let mut c = crate::ops::testing::campaign("c"); // 500 off each
        (c.stock, c.shards) = (100, 16);
        assert_eq!(c.capacity(), 100);
        c.budget = Amount::new(1_999);
        assert_eq!(c.capacity(), 3);
        assert_eq!(c.shard_count(), 3, "no shard without a coupon");
        c.budget = None;
        let split: Vec<i64> = (0..c.shard_count()).map(|i| c.shard_capacity(i)).collect();
        assert_eq!(split.iter().sum::<i64>(), 100);
        assert_eq!((split[0], split[15]), (7, 6));
        c.budget = Amount::new(499);
        assert!(
            c.validate().is_err(),
            "a budget below one coupon is refused"
        );
    }

    mod properties {
        use crate::discount::Discount;
        use crate::money::{Amount, MAX_AMOUNT};
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

            /// Issuing every coupon the shards allow never spends more than the
            /// budget or the stock, over the whole accepted range.
            #[test]
            fn capacity_never_exceeds_stock_or_budget(
                stock in 0..=super::super::MAX_STOCK,
                budget in proptest::option::of(0..=MAX_AMOUNT),
                face in 1..=MAX_AMOUNT,
                shards in 1u32..=256,
            ) {
                let mut c = crate::ops::testing::campaign("c");
                c.stock = stock;
                c.budget = budget.and_then(Amount::new);
                c.discount = Discount::Fixed { amount: Amount::new(face).expect("in range") };
                c.shards = shards;
                let issued: i64 = (0..c.shard_count()).map(|i| c.shard_capacity(i)).sum();
                prop_assert_eq!(u64::try_from(issued).ok(), Some(c.capacity()));
                prop_assert!(c.capacity() <= stock);
                if let Some(budget) = budget {
                    prop_assert!(i128::from(issued) * i128::from(face) <= i128::from(budget));
                }
            }
        }
    }
}
