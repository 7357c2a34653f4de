//! The expiry sweep: records `expired` for issued coupons past their expiry.
//!
//! Expiry itself needs no sweep (a coupon past its expiry is refused either
//! way); the sweep makes it part of the stored state and of `stats.expired`.
//! It walks the campaign index and each campaign's coupon index with a cursor,
//! at most `limit` coupons per call, and takes each coupon's generation lock
//! exactly as a redemption would, so the two can never both succeed.

use super::campaigns::load_slot;
use super::{decode, encode, load_ending};
use crate::campaign::Campaign;
use crate::code::CouponCode;
use crate::coupon::{CouponRecord, Ending};
use crate::error::{Error, Result};
use crate::keys::{self, CampaignKeys, CouponKeys};
use crate::store::{Store, read_counter};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub const DEFAULT_LIMIT: u32 = 1_000;
pub const MAX_LIMIT: u32 = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpirationRequest {
    #[serde(default, with = "optional_timestamp")]
    pub as_of: Option<Timestamp>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Swept {
    /// Coupons this call moved to `expired`.
    pub expired: u64,
    /// Where the next call continues; `null` when the walk is complete.
    pub next_cursor: Option<String>,
}

/// A position in the walk: campaign index slot (from 1), stock shard (from 0),
/// then the shard's coupon slot (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    campaign: i64,
    shard: u32,
    coupon: i64,
}

impl Cursor {
    const START: Cursor = Cursor {
        campaign: 1,
        shard: 0,
        coupon: 1,
    };

    fn parse(s: &str) -> Option<Cursor> {
        let mut parts = s.split('.');
        let cursor = Cursor {
            campaign: parts.next()?.parse().ok()?,
            shard: parts.next()?.parse().ok()?,
            coupon: parts.next()?.parse().ok()?,
        };
        (parts.next().is_none() && cursor.campaign >= 1 && cursor.coupon >= 1).then_some(cursor)
    }

    fn render(self) -> String {
        format!("{}.{}.{}", self.campaign, self.shard, self.coupon)
    }
}

pub async fn sweep(
    store: &impl Store,
    request: ExpirationRequest,
    now: Timestamp,
) -> Result<Swept> {
    let as_of = request.as_of.unwrap_or(now);
    if as_of > now {
        return Err(Error::invalid(
            "as_of",
            "must not be in the future: it would expire valid coupons",
        ));
    }
    let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::invalid("limit", format!("must be 1 to {MAX_LIMIT}")));
    }
    let mut cursor = match &request.cursor {
        Some(s) => Cursor::parse(s)
            .ok_or_else(|| Error::invalid("cursor", "is not a cursor this service gave"))?,
        None => Cursor::START,
    };
    let campaigns = read_counter(store, keys::CAMPAIGN_SEQ).await?;
    let mut examined = 0;
    let mut expired = 0;
    while cursor.campaign <= campaigns {
        if let Some(campaign) = load_slot(store, cursor.campaign).await?
            && earliest_expiry(&campaign)? <= as_of
        {
            let keys = CampaignKeys::new(&campaign.id);
            while cursor.shard < campaign.shard_count() {
                let issued = read_counter(store, &keys.seq(cursor.shard)).await?;
                while cursor.coupon <= issued {
                    if examined == limit {
                        return Ok(Swept {
                            expired,
                            next_cursor: Some(cursor.render()),
                        });
                    }
                    examined += 1;
                    if expire_slot(store, &campaign, &keys, cursor.shard, cursor.coupon, as_of)
                        .await?
                    {
                        expired += 1;
                    }
                    cursor.coupon += 1;
                }
                cursor = Cursor {
                    shard: cursor.shard + 1,
                    coupon: 1,
                    ..cursor
                };
            }
        }
        cursor = Cursor {
            campaign: cursor.campaign + 1,
            ..Cursor::START
        };
    }
    Ok(Swept {
        expired,
        next_cursor: None,
    })
}

/// No coupon of `campaign` can expire before this.
fn earliest_expiry(campaign: &Campaign) -> Result<Timestamp> {
    // Expiry never decreases with the claim time, and claims start at claim_starts_at.
    Ok(campaign
        .expiry
        .expires_at(campaign.claim_starts_at, &campaign.zone()?))
}

/// Expires the coupon in `slot` if it is due and nobody has ended its generation.
async fn expire_slot(
    store: &impl Store,
    campaign: &Campaign,
    campaign_keys: &CampaignKeys,
    shard: u32,
    slot: i64,
    as_of: Timestamp,
) -> Result<bool> {
    let slot_key = campaign_keys.coupon_slot(shard, slot);
    // A slot without a code is a claim that died before writing: nothing to expire.
    let Some(code) = store.get(&slot_key).await? else {
        return Ok(false);
    };
    let code = CouponCode::parse(&String::from_utf8_lossy(&code))
        .ok_or_else(|| Error::Internal(format!("{slot_key} holds no coupon code")))?;
    let keys = CouponKeys::new(&code);
    let Some(record) = store.get(&keys.record()).await? else {
        return Ok(false);
    };
    let record: CouponRecord = decode(&keys.record(), &record)?;
    let expires_at = campaign
        .expiry
        .expires_at(record.issued_at, &campaign.zone()?);
    if expires_at > as_of {
        return Ok(false);
    }
    let (generation, ending) = load_ending(store, &keys).await?;
    if ending.is_some() || store.increment(&keys.lock(generation), 1).await? != 1 {
        return Ok(false);
    }
    store
        .set(
            &keys.end(generation),
            &encode(&Ending::Expired { at: expires_at }),
        )
        .await?;
    store.increment(&campaign_keys.expired(), 1).await?;
    Ok(true)
}

mod optional_timestamp {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => crate::time::parse(&s).map(Some).ok_or_else(|| {
                serde::de::Error::custom(format!("{s:?} is not an RFC 3339 timestamp with offset"))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserId;
    use crate::campaign::CampaignId;
    use crate::ops::campaigns::{create, get};
    use crate::ops::claim::{ClaimRequest, claim};
    use crate::ops::testing::{campaign, ts};
    use crate::store::memory::MemoryStore;
    use futures::executor::block_on;

    /// Campaign "c" with `n` coupons claimed on 2028-02-10 by distinct users.
    fn store_with_coupons(n: u32) -> MemoryStore {
        let store = MemoryStore::default();
        let mut c = campaign("c");
        c.stock = 100;
        block_on(async {
            create(&store, c).await.expect("campaign");
            for i in 0..n {
                let mut bytes = [0u8; crate::code::RANDOM_BYTES];
                bytes[..4].copy_from_slice(&i.to_be_bytes());
                let request = ClaimRequest {
                    campaign_id: CampaignId::parse("c").expect("id"),
                };
                let user = UserId(format!("u{i}"));
                claim(
                    &store,
                    &user,
                    "k",
                    request,
                    ts("2028-02-10T10:00:00+08:00"),
                    CouponCode::from_random(bytes),
                )
                .await
                .expect("claim");
            }
        });
        store
    }

    fn request(
        as_of: Option<&str>,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> ExpirationRequest {
        ExpirationRequest {
            as_of: as_of.map(ts),
            limit,
            cursor,
        }
    }

    #[test]
    fn nothing_expires_before_month_end() {
        let store = store_with_coupons(3);
        let at = ts("2028-02-29T23:59:59.999+08:00");
        let swept = block_on(sweep(&store, request(None, None, None), at)).expect("sweep");
        assert_eq!(
            swept,
            Swept {
                expired: 0,
                next_cursor: None
            }
        );
    }

    #[test]
    fn the_sweep_walks_in_bounded_resumable_steps_and_is_idempotent() {
        let store = store_with_coupons(7);
        let now = ts("2028-03-02T00:00:00+08:00");
        let mut total = 0;
        let mut cursor = None;
        let mut calls = 0;
        loop {
            let swept =
                block_on(sweep(&store, request(None, Some(3), cursor), now)).expect("sweep");
            total += swept.expired;
            calls += 1;
            cursor = swept.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!((total, calls), (7, 3));
        let again = block_on(sweep(&store, request(None, None, None), now)).expect("sweep again");
        assert_eq!(again.expired, 0);
        let stats = block_on(get(&store, &CampaignId::parse("c").expect("id")))
            .expect("stats")
            .stats;
        assert_eq!(stats.expired, 7);
    }

    #[test]
    fn bad_requests_are_refused() {
        let store = store_with_coupons(0);
        let now = ts("2028-03-02T00:00:00+08:00");
        let future = block_on(sweep(
            &store,
            request(Some("2028-03-03T00:00:00Z"), None, None),
            now,
        ));
        assert_eq!(future.unwrap_err().field(), Some("as_of"));
        let zero = block_on(sweep(&store, request(None, Some(0), None), now));
        assert_eq!(zero.unwrap_err().field(), Some("limit"));
        let junk = block_on(sweep(&store, request(None, None, Some("x".into())), now));
        assert_eq!(junk.unwrap_err().field(), Some("cursor"));
    }
}
