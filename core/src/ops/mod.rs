//! The operations, one module each, over any [`Store`](crate::store::Store).
//!
//! Each takes typed input and the current time, and returns a typed outcome or
//! an [`Error`](crate::error::Error). Every decision that must hold under
//! concurrency is taken by an atomic increment (see [`crate::keys`]).

pub mod campaigns;
pub mod claim;
pub mod coupons;
pub mod expire;
pub mod redeem;

use crate::campaign::{Campaign, CampaignId};
use crate::code::CouponCode;
use crate::coupon::{CouponRecord, Ending, Held};
use crate::error::{Error, Result};
use crate::keys::{CampaignKeys, CouponKeys};
use crate::store::{Store, read_counter};
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

async fn load_campaign(store: &impl Store, id: &CampaignId) -> Result<Option<Campaign>> {
    let key = CampaignKeys::new(id).record();
    match store.get(&key).await? {
        Some(bytes) => decode(&key, &bytes).map(Some),
        None => Ok(None),
    }
}

/// The current generation of a coupon and how it ended, if it has.
async fn load_ending(store: &impl Store, keys: &CouponKeys) -> Result<(i64, Option<Ending>)> {
    let generation = read_counter(store, &keys.generation()).await?;
    let key = keys.end(generation);
    let ending = match store.get(&key).await? {
        Some(bytes) => Some(decode(&key, &bytes)?),
        None => None,
    };
    Ok((generation, ending))
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
    let campaign = load_campaign(store, &record.campaign_id)
        .await?
        .ok_or_else(|| Error::Internal(format!("coupon {code} names a missing campaign")))?;
    let zone = campaign.zone()?;
    let (generation, ending) = load_ending(store, &keys).await?;
    Ok(Held {
        code,
        record,
        campaign,
        zone,
        generation,
        ending,
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
