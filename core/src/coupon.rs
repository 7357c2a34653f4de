//! Coupons as stored, and as a user sees them.

use crate::auth::UserId;
use crate::campaign::{Campaign, CampaignId};
use crate::code::CouponCode;
use crate::discount::Discount;
use crate::money::{Amount, Currency};
use crate::time::{render, serde_rfc3339};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

/// What a claim writes: who holds which coupon of which campaign since when.
/// Discount terms and expiry come from the campaign, so a change of the
/// campaign's expiry rule reaches every outstanding coupon at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponRecord {
    pub code: String,
    pub campaign_id: CampaignId,
    pub user_id: String,
    #[serde(with = "serde_rfc3339")]
    pub issued_at: Timestamp,
    /// The slot of the holder's wallet that names it, and the idempotency key
    /// of the claim that issued it: what the campaign's purge deletes with it
    /// (absent from coupons issued before they were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet_slot: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_key: Option<String>,
}

impl CouponRecord {
    pub fn is_held_by(&self, user: &UserId) -> bool {
        self.user_id == user.as_str()
    }
}

/// How one generation of a coupon ended. Written once, by the owner of the
/// generation's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ending {
    Redeemed(Redemption),
    Expired {
        /// The expiry it passed.
        #[serde(with = "serde_rfc3339")]
        at: Timestamp,
        /// When the sweep (or a late cancellation) recorded it: a revival
        /// after this voids it.
        #[serde(default, with = "crate::time::serde_rfc3339_option")]
        swept_at: Option<Timestamp>,
        /// The campaign's dating revision the expiry was decided under: a
        /// revival at a later revision voids it (no clocks compared).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<i64>,
    },
}

/// A redemption as recorded and answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redemption {
    pub code: String,
    pub order_id: String,
    pub discount_amount: Amount,
    pub payable_amount: Amount,
    /// Already rendered in the campaign's offset, so a replay answers the same bytes.
    pub redeemed_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CouponState {
    Issued,
    Redeemed,
    Expired,
}

impl CouponState {
    /// The state named as it is serialised: `issued`, `redeemed`, `expired`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "issued" => Some(CouponState::Issued),
            "redeemed" => Some(CouponState::Redeemed),
            "expired" => Some(CouponState::Expired),
            _ => None,
        }
    }
}

/// A coupon as its holder sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CouponView {
    pub code: String,
    pub campaign_id: CampaignId,
    pub user_id: String,
    pub currency: Currency,
    pub discount: Discount,
    pub min_order_amount: Amount,
    pub state: CouponState,
    pub issued_at: String,
    pub expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The order holding it and until when, while one does (`ops::holds`;
    /// in `GET /coupons/{code}`, not in the wallet's pages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_for: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_until: Option<String>,
}

/// A coupon with everything needed to decide what may happen to it now.
#[derive(Debug, Clone)]
pub struct Held {
    pub code: CouponCode,
    pub record: CouponRecord,
    pub campaign: Campaign,
    pub zone: TimeZone,
    /// The generation in play: the stored counter, plus one for each
    /// expiration a revival made void.
    pub generation: i64,
    pub ending: Option<Ending>,
    /// The campaign's dating (its `expiry` is already in `campaign`).
    pub dating: crate::ops::dating::Dating,
    /// The campaign's redemptions were frozen when it was read.
    pub frozen: bool,
}

impl Held {
    /// The campaign counter shard this coupon's redemptions count in.
    pub fn shard(&self) -> u32 {
        self.code.shard(self.campaign.shard_count())
    }

    /// When it expires: by the rule in force, or when it was recorded expired.
    pub fn expires_at(&self) -> Timestamp {
        match &self.ending {
            Some(Ending::Expired { at, .. }) => *at,
            _ => self
                .campaign
                .expiry
                .expires_at(self.record.issued_at, &self.zone),
        }
    }

    /// The state a client sees: an unredeemed coupon past its expiry is expired
    /// whether or not the sweep has recorded it yet.
    pub fn state(&self, now: Timestamp) -> CouponState {
        match &self.ending {
            Some(Ending::Redeemed(_)) => CouponState::Redeemed,
            Some(Ending::Expired { .. }) => CouponState::Expired,
            None if now >= self.expires_at() => CouponState::Expired,
            None => CouponState::Issued,
        }
    }

    pub fn view(&self, now: Timestamp) -> CouponView {
        let order_id = match &self.ending {
            Some(Ending::Redeemed(r)) => Some(r.order_id.clone()),
            _ => None,
        };
        CouponView {
            code: self.code.to_string(),
            campaign_id: self.campaign.id.clone(),
            user_id: self.record.user_id.clone(),
            currency: self.campaign.currency,
            discount: self.campaign.discount,
            min_order_amount: self.campaign.min_order_amount,
            state: self.state(now),
            issued_at: render(self.record.issued_at, &self.zone),
            expires_at: render(self.expires_at(), &self.zone),
            order_id,
            held_for: None,
            held_until: None,
        }
    }
}
