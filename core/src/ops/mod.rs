//! The operations, one module each, over any [`Store`](crate::store::Store).
//!
//! Each takes typed input and the current time, and returns a typed outcome or
//! an [`Error`](crate::error::Error). Every decision that must hold under
//! concurrency is taken by an atomic increment (see [`crate::keys`]).

pub mod brake;
pub mod campaigns;
pub mod claim;
pub mod coupons;
pub mod dating;
pub mod events;
pub mod expire;
pub mod holds;
pub mod ledger;
pub mod limits;
pub mod orders;
pub mod purge;
pub mod reconcile;
pub mod recount;
pub mod redeem;

use crate::campaign::{Campaign, CampaignId};
use crate::code::CouponCode;
use crate::coupon::{CouponRecord, Ending, Held};
use crate::error::{Error, Result};
use crate::keys::{CampaignKeys, CouponKeys};
use crate::store::{Store, decode_small_counter};
use dating::Dating;
use jiff::Timestamp;
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
    get_array_of(store.get_many(&keys).await?)
}

fn get_array_of<const N: usize>(values: Vec<Option<Vec<u8>>>) -> Result<[Option<Vec<u8>>; N]> {
    <[_; N]>::try_from(values)
        .map_err(|_| Error::Internal("get_many answered the wrong number of values".into()))
}

/// The generation of a coupon in play and how it ended, if it has: the stored
/// generation, moved past every expiration that `dating` voids. One round
/// trip unless a revival voided something. `None` if the campaign's dating
/// register (read in the same round trip) is no longer `dating`: the caller
/// decided under a rule that has since changed.
async fn load_ending(
    store: &impl Store,
    keys: &CouponKeys,
    campaign_keys: &CampaignKeys,
    campaign: &Campaign,
    dating: &Dating,
) -> Result<Option<(i64, Option<Ending>)>> {
    let [generation, first_end, register] = get_array(
        store,
        [keys.generation(), keys.end(0), campaign_keys.dating()],
    )
    .await?;
    if dating::parse(&campaign_keys.dating(), register.as_deref(), campaign)?.revision
        != dating.revision
    {
        return Ok(None);
    }
    let generation = decode_generation(keys, generation.as_deref())?;
    let ending = match generation {
        0 => first_end,
        g => store.get(&keys.end(g)).await?,
    };
    Ok(Some(
        settle_ending(store, keys, dating, generation, ending).await?,
    ))
}

/// The stored generation counter, read with `get` beside other keys.
fn decode_generation(keys: &CouponKeys, bytes: Option<&[u8]>) -> Result<i64> {
    match bytes {
        None => Ok(0),
        Some(bytes) => decode_small_counter(bytes)
            .ok_or_else(|| Error::Internal(format!("{} is no generation", keys.generation()))),
    }
}

/// Decodes the stored ending of `generation`, and moves on past every
/// expiration that `dating` voids.
async fn settle_ending(
    store: &impl Store,
    keys: &CouponKeys,
    dating: &Dating,
    mut generation: i64,
    mut bytes: Option<Vec<u8>>,
) -> Result<(i64, Option<Ending>)> {
    loop {
        let ending: Option<Ending> = match bytes {
            Some(bytes) => Some(decode(&keys.end(generation), &bytes)?),
            None => None,
        };
        match ending {
            Some(ending) if dating.voids(&ending) => {
                generation += 1;
                bytes = store.get(&keys.end(generation)).await?;
            }
            ending => return Ok((generation, ending)),
        }
    }
}

/// Lookups of coupons a user does not hold (a well-formed code that is not
/// theirs or not anyone's) allowed per minute before `429`. Far above what
/// mistyping takes, far below what guessing 2^100 codes needs; it caps the
/// store work one token can cause with misses.
pub const MAX_FAILED_LOOKUPS_PER_MINUTE: i64 = 30;

/// A user asking for a coupon at `now`: they must hold it, and their misses
/// are counted per minute.
#[derive(Clone, Copy)]
pub(crate) struct Asker<'a> {
    pub user: &'a crate::auth::UserId,
    pub now: Timestamp,
}

/// Loads a coupon with its campaign and ending, in two round trips: the
/// coupon with its generation and first ending (and the asker's misses this
/// minute), then the campaign with its dating and freeze (and the ending of a
/// later generation). An `asker` must hold it: anyone else is told it does not
/// exist, the same as a made-up code, and the miss is counted. A mistyped
/// code (its check character is wrong) is refused without a store read.
pub(crate) async fn load_held(
    store: &impl Store,
    code: &str,
    asker: Option<Asker<'_>>,
) -> Result<Held> {
    Ok(load_held_with(store, code, asker, Vec::new()).await?.0)
}

/// [`load_held`], reading `also` in its first round trip: their values come
/// back in order.
pub(crate) async fn load_held_with(
    store: &impl Store,
    code: &str,
    asker: Option<Asker<'_>>,
    also: Vec<String>,
) -> Result<(Held, Vec<Option<Vec<u8>>>)> {
    let code = CouponCode::parse(code).ok_or(Error::CouponNotFound)?;
    let keys = CouponKeys::new(&code);
    let misses_key =
        asker.map(|a| crate::keys::misses(&a.user.0, a.now.as_second().div_euclid(60)));
    // Without an asker the fourth key is one more ending, read and ignored.
    let mut wanted = vec![
        keys.record(),
        keys.generation(),
        keys.end(0),
        misses_key.clone().unwrap_or_else(|| keys.end(1)),
    ];
    wanted.extend(also);
    let mut values = store.get_many(&wanted).await?;
    if values.len() != wanted.len() {
        return Err(Error::Internal(
            "get_many answered the wrong number of values".into(),
        ));
    }
    let also = values.split_off(4);
    let [record, generation, first_end, misses] = get_array_of(values)?;
    let record = record
        .map(|bytes| decode::<CouponRecord>(&keys.record(), &bytes))
        .transpose()?
        .filter(|record| asker.is_none_or(|a| record.is_held_by(a.user)));
    let Some(record) = record else {
        // Over the ceiling, any code the user does not hold is refused the
        // same way, whether it exists or not; their own coupons still work.
        if let (Some(asker), Some(misses)) = (asker, misses.filter(|_| misses_key.is_some()))
            && decode_small_counter(&misses).unwrap_or(i64::MAX) >= MAX_FAILED_LOOKUPS_PER_MINUTE
        {
            let into_minute = asker.now.as_second().rem_euclid(60);
            return Err(Error::TooManyFailedLookups {
                retry_after: u32::try_from(60 - into_minute).unwrap_or(60),
            });
        }
        if let (Some(asker), Some(key)) = (asker, &misses_key)
            && store.increment(key, 1).await? == 1
        {
            // A user's first miss of a minute deletes their counter of a
            // minute no request can still count in (best effort): a user
            // keeps at most the counters of a burst's last two minutes.
            let minute = asker.now.as_second().div_euclid(60);
            let stale = crate::keys::misses(&asker.user.0, minute - 2);
            let _ = store.delete_many(&[stale]).await;
        }
        return Err(Error::CouponNotFound);
    };
    let generation = decode_generation(&keys, generation.as_deref())?;
    let campaign_keys = CampaignKeys::new(&record.campaign_id);
    let [campaign, dating, freeze, later_end] = get_array(
        store,
        [
            campaign_keys.record(),
            campaign_keys.dating(),
            campaign_keys.freeze(),
            // Generation 0's ending came with the record: ask for an absent key.
            keys.end(generation.max(1)),
        ],
    )
    .await?;
    // A purge deletes the campaign before its coupons: they are gone too.
    let campaign = campaign.ok_or(Error::CouponNotFound)?;
    let (campaign, dating) = with_dating(&campaign_keys, &campaign, dating.as_deref())?;
    let zone = campaign.zone()?;
    let ending = if generation == 0 {
        first_end
    } else {
        later_end
    };
    let (generation, ending) = settle_ending(store, &keys, &dating, generation, ending).await?;
    let held = Held {
        code,
        record,
        campaign,
        zone,
        generation,
        ending,
        dating,
        frozen: brake::is_on_stored(freeze.as_deref()),
    };
    Ok((held, also))
}

/// Loads the coupons `codes` (held by anyone) as [`load_held`] does, in two
/// round trips for all of them: every record with its generation and first
/// ending, then every campaign with its dating and freeze beside every later
/// ending (one more for a coupon a revival moved on). Codes with no record
/// are left out.
pub(crate) async fn load_many(store: &impl Store, codes: &[CouponCode]) -> Result<Vec<Held>> {
    let first: Vec<String> = codes
        .iter()
        .map(CouponKeys::new)
        .flat_map(|k| [k.record(), k.generation(), k.end(0)])
        .collect();
    if first.is_empty() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for (code, [record, generation, first_end]) in
        codes.iter().zip(groups(store.get_many(&first).await?))
    {
        let Some(record) = record else { continue };
        let keys = CouponKeys::new(code);
        let record: CouponRecord = decode(&keys.record(), &record)?;
        let generation = decode_generation(&keys, generation.as_deref())?;
        found.push((code, keys, record, generation, first_end));
    }
    let mut ids: Vec<&CampaignId> = Vec::new();
    for (.., record, _, _) in &found {
        if !ids.contains(&&record.campaign_id) {
            ids.push(&record.campaign_id);
        }
    }
    let mut wanted: Vec<String> = ids
        .iter()
        .map(|id| CampaignKeys::new(id))
        .flat_map(|k| [k.record(), k.dating(), k.freeze()])
        .collect();
    // Generation 0's ending came with the record: ask for an absent key.
    wanted.extend(found.iter().map(|(_, keys, _, g, _)| keys.end((*g).max(1))));
    let mut values = store.get_many(&wanted).await?;
    let later_ends = values.split_off(ids.len() * 3);
    let mut campaigns = Vec::with_capacity(ids.len());
    for (id, [record, dating, freeze]) in ids.iter().zip(groups(values)) {
        let keys = CampaignKeys::new(id);
        let record = record
            .ok_or_else(|| Error::Internal(format!("coupons name the missing campaign {id}")))?;
        let (campaign, dating) = with_dating(&keys, &record, dating.as_deref())?;
        let zone = campaign.zone()?;
        campaigns.push((
            campaign,
            dating,
            zone,
            brake::is_on_stored(freeze.as_deref()),
        ));
    }
    let mut held = Vec::with_capacity(found.len());
    for ((code, keys, record, generation, first_end), later_end) in
        found.into_iter().zip(later_ends)
    {
        let Some((campaign, dating, zone, frozen)) =
            campaigns.iter().find(|(c, ..)| c.id == record.campaign_id)
        else {
            return Err(Error::Internal(format!("{code}'s campaign was not read")));
        };
        let ending = if generation == 0 {
            first_end
        } else {
            later_end
        };
        let (generation, ending) = settle_ending(store, &keys, dating, generation, ending).await?;
        held.push(Held {
            code: code.clone(),
            record,
            campaign: campaign.clone(),
            zone: zone.clone(),
            generation,
            ending,
            dating: dating.clone(),
            frozen: *frozen,
        });
    }
    Ok(held)
}

/// `values` in consecutive groups of `N`.
fn groups<const N: usize, T>(values: Vec<T>) -> impl Iterator<Item = [T; N]> {
    let mut values = values.into_iter();
    std::iter::from_fn(move || {
        let group: Vec<T> = values.by_ref().take(N).collect();
        group.try_into().ok()
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

    /// When the fixtures' campaigns are created.
    pub fn setup_time() -> Timestamp {
        ts("2028-01-01T00:00:00+08:00")
    }

    /// A running campaign in Shanghai: 10 coupons of 500 off orders of 2000+.
    pub fn campaign(id: &str) -> Campaign {
        crate::api::parse_json(
            serde_json::json!({
                "id": id, "name": "Spring festival", "currency": "CNY",
                "discount": {"kind": "fixed", "amount": 500},
                "min_order_amount": 2000, "stock": 10, "per_user_limit": 2,
                "redeemable_by_users": true,
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
