//! The operations, one module each, over any [`Store`](crate::store::Store).
//!
//! Each takes typed input and the current time, and returns a typed outcome or
//! an [`Error`](crate::error::Error). Every decision that must hold under
//! concurrency is taken by an atomic increment (see [`crate::keys`]).

pub mod campaigns;
pub mod claim;
pub mod coupons;
pub mod dating;
pub mod expire;
pub mod redeem;

use crate::campaign::{Campaign, CampaignId};
use crate::code::CouponCode;
use crate::coupon::{CouponRecord, Ending, Held};
use crate::error::{Error, Result};
use crate::keys::{CampaignKeys, CouponKeys};
use crate::store::{Store, read_counter};
use dating::Dating;
use serde::de::DeserializeOwned;

/// Decodes a record this crate wrote; anything else is corruption.
fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Internal(format!("record {key} is unreadable: {e}")))
}

fn encode(value: &impl serde::Serialize) -> Vec<u8> {
    // Our records are plain structs of strings and numbers: encoding cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Loads a campaign with the expiry rule in force (already in its `expiry`).
async fn load_campaign(store: &impl Store, id: &CampaignId) -> Result<Option<(Campaign, Dating)>> {
    let keys = CampaignKeys::new(id);
    let [record, dating] = get_array(store, [keys.record(), keys.dating()]).await?;
    let Some(record) = record else {
        return Ok(None);
    };
    Ok(Some(with_dating(&keys, &record, dating.as_deref())?))
}

/// Decodes a campaign record and its dating register, the rule in force applied.
fn with_dating(
    keys: &CampaignKeys,
    record: &[u8],
    dating: Option<&[u8]>,
) -> Result<(Campaign, Dating)> {
    let mut campaign: Campaign = decode(&keys.record(), record)?;
    let dating = dating::parse(&keys.dating(), dating, &campaign)?;
    campaign.expiry = dating.expiry;
    Ok((campaign, dating))
}

/// `get_many` of a fixed number of keys.
async fn get_array<const N: usize>(
    store: &impl Store,
    keys: [String; N],
) -> Result<[Option<Vec<u8>>; N]> {
    <[_; N]>::try_from(store.get_many(&keys).await?)
        .map_err(|_| Error::Internal("get_many answered the wrong number of values".into()))
}

/// The generation of a coupon in play and how it ended, if it has: the stored
/// generation, moved past every expiration that `dating` voids.
async fn load_ending(
    store: &impl Store,
    keys: &CouponKeys,
    dating: &Dating,
) -> Result<(i64, Option<Ending>)> {
    let mut generation = read_counter(store, &keys.generation()).await?;
    loop {
        let key = keys.end(generation);
        let ending: Option<Ending> = match store.get(&key).await? {
            Some(bytes) => Some(decode(&key, &bytes)?),
            None => None,
        };
        match ending {
            Some(ending) if dating.voids(&ending) => generation += 1,
            ending => return Ok((generation, ending)),
        }
    }
}

/// Loads a coupon with its campaign and ending. `holder`, when given, must hold
/// it: anyone else is told it does not exist, the same as a made-up code.
async fn load_held(
    store: &impl Store,
    code: &str,
    holder: Option<&crate::auth::UserId>,
) -> Result<Held> {
    let code = CouponCode::parse(code).ok_or(Error::CouponNotFound)?;
    let keys = CouponKeys::new(&code);
    let record_key = keys.record();
    let record: CouponRecord = match store.get(&record_key).await? {
        Some(bytes) => decode(&record_key, &bytes)?,
        None => return Err(Error::CouponNotFound),
    };
    if holder.is_some_and(|user| !record.is_held_by(user)) {
        return Err(Error::CouponNotFound);
    }
    let (campaign, dating) = load_campaign(store, &record.campaign_id)
        .await?
        .ok_or_else(|| Error::Internal(format!("coupon {code} names a missing campaign")))?;
    let zone = campaign.zone()?;
    let (generation, ending) = load_ending(store, &keys, &dating).await?;
    Ok(Held {
        code,
        record,
        campaign,
        zone,
        generation,
        ending,
        dating,
    })
}

#[cfg(test)]
pub(crate) mod testing {
    //! Fixtures shared by the operation tests.

    use crate::campaign::Campaign;
    use jiff::Timestamp;

    pub fn ts(s: &str) -> Timestamp {
        crate::time::parse(s).expect("test timestamp")
    }

    /// A running campaign in Shanghai: 10 coupons of 500 off orders of 2000+.
    pub fn campaign(id: &str) -> Campaign {
        crate::api::parse_json(
            serde_json::json!({
                "id": id, "name": "Spring festival", "currency": "CNY",
                "discount": {"kind": "fixed", "amount": 500},
                "min_order_amount": 2000, "stock": 10, "per_user_limit": 2,
                "claim_starts_at": "2028-01-01T00:00:00+08:00",
                "claim_ends_at": "2028-02-15T00:00:00+08:00",
                "time_zone": "Asia/Shanghai", "expiry": {"kind": "end_of_claim_month"}
            })
            .to_string()
            .as_bytes(),
        )
        .expect("fixture campaign")
    }
}
