//! Changing a live campaign's stock, budget and claim rate: a sale that must
//! stop sooner, or go on longer.
//!
//! The claim rate is a register that claims read in their first round trip:
//! every claim that starts after a change answered admits at the new rate.
//!
//! Stock and budget set how many coupons may be issued, and the stock shard
//! counters enforce it: a claim takes a unit if its increment leaves the
//! shard's count within the shard's capacity as created. A change moves the
//! counts, never the capacities: lowering adds units to the counters (held
//! back: no claim can take them), raising takes units away (below zero if it
//! must). Each shard's `withheld` counter records what changes moved, so
//! `claimed` is the counter less it, and a recount gives back only what dead
//! claims took.
//!
//! - **Never below what is issued.** A shard is lowered only by the units its
//!   count leaves free, and gives back at once any its increment finds taken
//!   meanwhile by claims. So once a lowering answers, no claim on any host
//!   issues past the new capacity; a claim racing it may find that shard full.
//! - **A change cut short errs low.** A lowering moves a counter before it
//!   records, a raise records before it moves: a change that dies or fails
//!   half-way leaves the counters holding more than the records say (fewer
//!   coupons, never more) until the next recount gives the difference back.
//! - **One change at a time.** Change `n` owns attempt `n` of a lease, so a
//!   change whose host died is taken over a lease later (90 s); a change that
//!   finds one in flight answers `request_in_progress`.
//! - **Only while claims may come.** Once the claim window has ended or was
//!   closed, stock and budget no longer change (`campaign_not_active`).
//! - **Not during a recount.** A recount reads the counters against the
//!   records, so a change of stock or budget waits for its fence to come down
//!   (`recount_in_progress`, minutes: it goes up only once the stock was
//!   found full, or the claim window closed). The claim rate changes anytime.

use super::brake::{self, Note};
use super::campaigns::{CampaignView, view};
use super::{decode, encode, get_array, load_campaign, recount};
use crate::campaign::{Campaign, CampaignId};
use crate::error::{Error, Result};
use crate::keys::CampaignKeys;
use crate::lease::{self, Ownership};
use crate::money::Amount;
use crate::store::{Store, read_counter};
use crate::time::serde_rfc3339;
use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};

/// Changes a history lists at most: the latest.
pub const HISTORY: i64 = 100;

/// The limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// 0 as created; then the number of the latest change.
    pub revision: i64,
    pub stock: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_claims_per_second: Option<u32>,
}

impl Limits {
    /// The limits of a campaign never changed.
    pub fn original(campaign: &Campaign) -> Limits {
        Limits {
            revision: 0,
            stock: campaign.stock,
            budget: campaign.budget,
            max_claims_per_second: campaign.max_claims_per_second,
        }
    }

    /// The campaign with these limits in its fields, for what reads them
    /// (validation, the view). Its shards' capacities are not the counters'.
    pub fn applied(&self, campaign: &Campaign) -> Campaign {
        Campaign {
            stock: self.stock,
            budget: self.budget,
            max_claims_per_second: self.max_claims_per_second,
            ..campaign.clone()
        }
    }
}

/// The limits stored in `bytes` (the `c:{id}:limits` register), or the original ones.
pub(crate) fn parse(key: &str, bytes: Option<&[u8]>, campaign: &Campaign) -> Result<Limits> {
    match bytes {
        Some(bytes) => decode(key, bytes),
        None => Ok(Limits::original(campaign)),
    }
}

/// A change: each field given replaces the one in force; `null` removes the
/// budget or the claim rate ceiling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    #[serde(default)]
    pub stock: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    pub budget: Option<Option<Amount>>,
    #[serde(default, deserialize_with = "present")]
    pub max_claims_per_second: Option<Option<u32>>,
    #[serde(default)]
    pub changed_by: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A field that is present, even as `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// One change, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsChange {
    pub revision: i64,
    #[serde(with = "serde_rfc3339")]
    pub changed_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub from: Limits,
    pub to: Limits,
    /// The coupons the campaign could issue once the change was made: what
    /// `to` allows, or the coupons issued by then if claims racing it took more.
    pub capacity: i64,
}

/// The latest changes of a campaign's limits, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitsHistory {
    pub changes: Vec<LimitsChange>,
}

/// One stock shard as its counters read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shard {
    /// Its capacity as created.
    base: i64,
    /// Its counter's count: units taken, plus those withheld.
    count: i64,
    /// Units changes withheld (negative: added).
    withheld: i64,
}

impl Shard {
    /// The coupons it may issue now.
    pub(crate) fn capacity(&self) -> i64 {
        self.base - self.withheld
    }

    /// The units claims took (one in flight may hold an increment it is
    /// about to give back).
    pub(crate) fn claimed(&self) -> i64 {
        (self.count - self.withheld).clamp(0, self.capacity().max(0))
    }

    /// Units no claim holds.
    fn free(&self) -> i64 {
        (self.base - self.count).max(0)
    }
}

/// The limits in force, and whether a change was ever tried (one that died
/// may have moved the counters without a record of its own): one round trip.
pub(crate) async fn in_force(store: &impl Store, campaign: &Campaign) -> Result<(Limits, bool)> {
    let keys = CampaignKeys::new(&campaign.id);
    let [limits, tried] = get_array(
        store,
        [keys.limits(), lease::attempt_key(&keys.limits_lock(), 1)],
    )
    .await?;
    Ok((
        parse(&keys.limits(), limits.as_deref(), campaign)?,
        tried.is_some(),
    ))
}

/// Every stock shard's counters: one read per shard, two once a change was
/// `tried`.
pub(crate) async fn shards(
    store: &impl Store,
    campaign: &Campaign,
    tried: bool,
) -> Result<Vec<Shard>> {
    let keys = CampaignKeys::new(&campaign.id);
    let mut shards = Vec::with_capacity(campaign.shard_count() as usize);
    for shard in 0..campaign.shard_count() {
        let counter = read_counter(store, &keys.claimed(shard)).await?;
        let withheld = match tried {
            false => 0,
            true => read_counter(store, &keys.withheld(shard)).await?,
        };
        shards.push(Shard {
            base: campaign.shard_capacity(shard),
            count: brake::count(counter),
            withheld,
        });
    }
    Ok(shards)
}

/// Changes campaign `id`'s limits; the answer is the campaign with them in force.
pub async fn change(
    store: &impl Store,
    id: &CampaignId,
    request: LimitsRequest,
    now: Timestamp,
) -> Result<CampaignView> {
    let note = Note {
        changed_by: request.changed_by.clone(),
        reason: request.reason.clone(),
    }
    .checked()?;
    let (campaign, dating) = load_campaign(store, id)
        .await?
        .ok_or(Error::CampaignNotFound)?;
    let keys = CampaignKeys::new(id);
    let done = done(store, &keys).await?;
    let Ownership::Owned(revision) = lease::own(store, &keys.limits_lock(), done + 1, now).await?
    else {
        return Err(Error::RequestInProgress);
    };
    let made = make(store, &campaign, &keys, request, note, revision, now).await;
    // Finished, made or not: the next change goes on at once. Were this lost,
    // the next would wait a lease, as for a change that died.
    let _ = store
        .set(&keys.limits_done(), revision.to_string().as_bytes())
        .await;
    made?;
    view(store, &campaign, &dating).await
}

/// Change `revision`, owned.
async fn make(
    store: &impl Store,
    campaign: &Campaign,
    keys: &CampaignKeys,
    request: LimitsRequest,
    note: Note,
    revision: i64,
    now: Timestamp,
) -> Result<()> {
    let [limits, fence, brake] =
        get_array(store, [keys.limits(), keys.recount(), keys.brake()]).await?;
    let from = parse(&keys.limits(), limits.as_deref(), campaign)?;
    let to = Limits {
        revision,
        stock: request.stock.unwrap_or(from.stock),
        budget: request.budget.unwrap_or(from.budget),
        max_claims_per_second: request
            .max_claims_per_second
            .unwrap_or(from.max_claims_per_second),
    };
    let wanted = to.applied(campaign);
    wanted.validate_limits()?;
    // This change owns an attempt: one was tried.
    let mut shards = shards(store, campaign, true).await?;
    let capacity: i64 = shards.iter().map(Shard::capacity).sum();
    let target = i64::try_from(wanted.capacity()).unwrap_or(i64::MAX);
    if target != capacity {
        // No claim takes stock again: a recount may already have counted for good.
        if now >= campaign.claim_ends_at || brake::is_closed_stored(brake.as_deref()) {
            return Err(Error::CampaignNotActive);
        }
        if recount::is_fenced(fence.as_deref()) {
            return Err(Error::RecountInProgress);
        }
        let claimed: i64 = shards.iter().map(Shard::claimed).sum();
        if target < claimed {
            let field = match to.stock < claimed as u64 {
                true => "stock",
                false => "budget",
            };
            return Err(Error::invalid(
                field,
                format!("must leave room for the {claimed} coupons already issued"),
            ));
        }
        match target < capacity {
            true => withhold(store, keys, &mut shards, capacity - target).await?,
            false => add(store, keys, &mut shards, target - capacity).await?,
        }
    }
    let change = LimitsChange {
        revision,
        changed_at: now,
        changed_by: note.changed_by,
        reason: note.reason,
        from,
        to,
        capacity: shards.iter().map(Shard::capacity).sum(),
    };
    // The record first: limits in force always have their record.
    store
        .set(&keys.limits_change(revision), &encode(&change))
        .await?;
    store.set(&keys.limits(), &encode(&to)).await?;
    Ok(())
}

/// The latest change finished (0: none).
async fn done(store: &impl Store, keys: &CampaignKeys) -> Result<i64> {
    Ok(store
        .get(&keys.limits_done())
        .await?
        .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<i64>().ok())
        .unwrap_or(0))
}

/// Holds back up to `amount` units, from the shards' free ones; a unit a
/// claim took meanwhile is given back at once. Two passes, the second after
/// the claims that raced the first gave back what they found full.
async fn withhold(
    store: &impl Store,
    keys: &CampaignKeys,
    shards: &mut [Shard],
    amount: i64,
) -> Result<()> {
    let mut left = amount;
    for pass in 0..2 {
        for (i, shard) in shards.iter_mut().enumerate() {
            let counter = keys.claimed(i as u32);
            if pass == 1 && left > 0 {
                shard.count = brake::count(read_counter(store, &counter).await?);
            }
            let k = left.min(shard.free());
            if k == 0 {
                continue;
            }
            let count = brake::count(store.increment(&counter, k).await?);
            let over = (count - shard.base).clamp(0, k);
            if over > 0 {
                store.increment(&counter, -over).await?;
            }
            let moved = k - over;
            if moved > 0 {
                store.increment(&keys.withheld(i as u32), moved).await?;
            }
            shard.count = count - over;
            shard.withheld += moved;
            left -= moved;
        }
    }
    Ok(())
}

/// Adds `amount` units, split evenly over the shards as a campaign's stock is.
async fn add(
    store: &impl Store,
    keys: &CampaignKeys,
    shards: &mut [Shard],
    amount: i64,
) -> Result<()> {
    let n = shards.len() as i64;
    for (i, shard) in shards.iter_mut().enumerate() {
        let k = amount / n + i64::from((i as i64) < amount % n);
        if k == 0 {
            continue;
        }
        store.increment(&keys.withheld(i as u32), -k).await?;
        shard.withheld -= k;
        store.increment(&keys.claimed(i as u32), -k).await?;
        shard.count -= k;
    }
    Ok(())
}

/// The latest [`HISTORY`] changes of campaign `id`'s limits.
pub async fn history(store: &impl Store, id: &CampaignId) -> Result<LimitsHistory> {
    load_campaign(store, id)
        .await?
        .ok_or(Error::CampaignNotFound)?;
    let keys = CampaignKeys::new(id);
    // A change in flight has no record yet; one past `done` may have finished.
    let done = done(store, &keys).await?;
    let wanted: Vec<String> = ((done - HISTORY + 2).max(1)..=done + 1)
        .map(|n| keys.limits_change(n))
        .collect();
    let mut changes = Vec::new();
    for (key, bytes) in wanted.iter().zip(store.get_many(&wanted).await?) {
        if let Some(bytes) = bytes {
            changes.push(decode::<LimitsChange>(key, &bytes)?);
        }
    }
    Ok(LimitsHistory { changes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserId;
    use crate::code::CouponCode;
    use crate::ops::campaigns::{create, get};
    use crate::ops::claim::{ClaimRequest, claim};
    use crate::ops::recount::{Recount, step};
    use crate::ops::testing::{campaign, setup_time, ts};
    use crate::store::memory::MemoryStore;
    use futures::executor::block_on;
    use jiff::SignedDuration;

    const NOW: &str = "2028-02-10T10:00:00+08:00";

    /// Campaign "l": `stock` coupons of 500 off in `shards` shards.
    fn setup(stock: u64, shards: u32) -> (MemoryStore, Campaign) {
        let store = MemoryStore::default();
        let mut c = campaign("l");
        c.stock = stock;
        c.shards = shards;
        c.per_user_limit = 1;
        block_on(create(&store, c.clone(), setup_time())).expect("create");
        (store, c)
    }

    fn claim_at(store: &MemoryStore, n: u32, at: Timestamp) -> Result<()> {
        let mut bytes = [0u8; crate::code::RANDOM_BYTES];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        let request = ClaimRequest {
            campaign_id: CampaignId::parse("l").expect("id"),
        };
        let code = CouponCode::from_random(bytes);
        block_on(claim(
            store,
            &UserId(format!("u{n}")),
            "k",
            request,
            at,
            code,
        ))
        .map(drop)
    }

    /// Claims by users `from..` until one is refused: the coupons issued.
    fn claim_all(store: &MemoryStore, from: u32, at: Timestamp) -> u32 {
        (from..from + 1_000)
            .take_while(|&n| claim_at(store, n, at).is_ok())
            .count() as u32
    }

    /// Claims by users `from..from + n`, each issued.
    fn claim_n(store: &MemoryStore, from: u32, n: u32, at: Timestamp) {
        for user in from..from + n {
            claim_at(store, user, at).expect("issued");
        }
    }

    fn set(store: &MemoryStore, body: serde_json::Value) -> Result<CampaignView> {
        let request: LimitsRequest = serde_json::from_value(body).expect("request");
        let id = CampaignId::parse("l").expect("id");
        block_on(change(store, &id, request, ts(NOW)))
    }

    fn stats(store: &MemoryStore) -> crate::ops::campaigns::Stats {
        block_on(get(store, &CampaignId::parse("l").expect("id")))
            .expect("get")
            .stats
    }

    #[test]
    fn a_lowered_stock_stops_claims_at_the_new_capacity_on_every_shard() {
        let (store, _) = setup(100, 4);
        let t = ts(NOW);
        claim_n(&store, 0, 30, t);
        let view = set(
            &store,
            serde_json::json!({"stock": 40, "changed_by": "ops"}),
        )
        .expect("lowered");
        assert_eq!(view.campaign["stock"], 40);
        assert_eq!(view.limits_revision, 1);
        assert_eq!((view.stats.capacity, view.stats.remaining), (40, 10));
        // Ten more, then sold out, whichever shards the claims land on.
        assert_eq!(claim_all(&store, 1_000, t), 10);
        let s = stats(&store);
        assert_eq!((s.claimed, s.capacity, s.remaining), (40, 40, 0));
    }

    #[test]
    fn a_lowering_gives_back_at_once_a_unit_a_racing_claim_took() {
        let (store, c) = setup(10, 1);
        let keys = CampaignKeys::new(&c.id);
        claim_n(&store, 0, 4, ts(NOW));
        block_on(lease::own(&store, &keys.limits_lock(), 1, ts(NOW))).expect("owned");
        let mut read = block_on(shards(&store, &c, true)).expect("read");
        // A claim takes a unit after the lowering read the counters.
        block_on(store.increment(&keys.claimed(0), 1)).expect("claim");
        block_on(withhold(&store, &keys, &mut read, 6)).expect("withheld");
        let now = block_on(shards(&store, &c, true)).expect("read");
        assert_eq!((now[0].claimed(), now[0].capacity()), (5, 5));
    }

    #[test]
    fn a_raise_after_selling_out_issues_the_added_coupons() {
        let (store, _) = setup(10, 2);
        let t = ts(NOW);
        assert_eq!(claim_all(&store, 0, t), 10);
        let view = set(&store, serde_json::json!({"stock": 25})).expect("raised");
        assert_eq!((view.stats.capacity, view.stats.remaining), (25, 15));
        // The next second: the last one's claims were told sold out at once.
        let t = t + SignedDuration::from_secs(1);
        assert_eq!(claim_all(&store, 1_000, t), 15);
        assert_eq!(stats(&store).claimed, 25);
        // Down again to what is issued: sold out, nothing refused.
        let view = set(&store, serde_json::json!({"stock": 25})).expect("same");
        assert_eq!(view.stats.remaining, 0);
    }

    #[test]
    fn no_change_goes_below_what_is_issued_and_a_refused_one_changes_nothing() {
        let (store, c) = setup(10, 2);
        claim_n(&store, 0, 6, ts(NOW));
        let refused = set(&store, serde_json::json!({"stock": 5}));
        assert_eq!(
            refused.map(drop).map_err(|e| e.field().map(str::to_owned)),
            Err(Some("stock".into()))
        );
        // 6 coupons of 500 are 3,000: a budget of 2,500 is refused too.
        let refused = set(&store, serde_json::json!({"budget": 2_500}));
        assert_eq!(
            refused.map(drop).map_err(|e| e.field().map(str::to_owned)),
            Err(Some("budget".into()))
        );
        let view = block_on(get(&store, &c.id)).expect("get");
        assert_eq!((view.limits_revision, view.stats.capacity), (0, 10));
        // The refused changes finished: the next goes on at once.
        let view = set(&store, serde_json::json!({"budget": 3_500})).expect("budget");
        assert_eq!(view.stats.capacity, 7);
        assert_eq!(
            view.stats.binding_limit,
            crate::ops::campaigns::BindingLimit::Budget
        );
        // `null` removes the budget again.
        let view = set(&store, serde_json::json!({"budget": null})).expect("removed");
        assert_eq!(view.stats.capacity, 10);
    }

    #[test]
    fn a_recount_gives_back_what_dead_claims_took_but_not_what_was_withheld() {
        let (store, c) = setup(10, 1);
        let keys = CampaignKeys::new(&c.id);
        let t0 = ts(NOW);
        claim_at(&store, 1, t0).expect("first");
        claim_at(&store, 2, t0).expect("second");
        // A claim took a unit, then its instance died.
        block_on(store.increment(&keys.claimed(0), 1)).expect("taken");
        set(&store, serde_json::json!({"stock": 5})).expect("lowered");
        // Two more fit (the dead claim's unit counts until a recount).
        assert_eq!(claim_all(&store, 10, t0), 2);
        let mut spend = |n: u32| n.max(1);
        assert_eq!(
            block_on(step(&store, &c, t0, &mut spend)),
            Ok(Recount::Idle)
        );
        let settled = t0 + lease::LEASE;
        assert_eq!(
            block_on(step(&store, &c, settled, &mut spend)),
            Ok(Recount::Returned(1))
        );
        let s = stats(&store);
        assert_eq!((s.claimed, s.capacity), (4, 5));
        // While the fence is up, the stock cannot change.
        let fenced = set(&store, serde_json::json!({"stock": 8}));
        assert_eq!(fenced.map(drop), Err(Error::RecountInProgress));
        let down = settled + lease::LEASE;
        assert_eq!(
            block_on(step(&store, &c, down, &mut spend)),
            Ok(Recount::Idle)
        );
        assert_eq!(claim_all(&store, 20, down), 1);
        assert_eq!(stats(&store).claimed, 5);
    }

    #[test]
    fn a_raise_makes_a_stock_found_full_countable_again() {
        let (store, c) = setup(2, 1);
        let keys = CampaignKeys::new(&c.id);
        let mut spend = |n: u32| n.max(1);
        let t0 = ts(NOW);
        assert_eq!(claim_all(&store, 0, t0), 2);
        // Found full: no fence is due again under these limits.
        block_on(step(&store, &c, t0, &mut spend)).expect("raised");
        let t1 = t0 + lease::LEASE;
        assert_eq!(
            block_on(step(&store, &c, t1, &mut spend)),
            Ok(Recount::Returned(0))
        );
        let t2 = t1 + lease::LEASE;
        block_on(step(&store, &c, t2, &mut spend)).expect("down");
        set(&store, serde_json::json!({"stock": 4})).expect("raised");
        // A claim dies holding a unit of the added stock; the rest sell out.
        block_on(store.increment(&keys.claimed(0), 1)).expect("taken");
        let t3 = t2 + SignedDuration::from_secs(1);
        assert_eq!(claim_all(&store, 10, t3), 1);
        block_on(step(&store, &c, t3, &mut spend)).expect("raised again");
        let t4 = t3 + lease::LEASE;
        assert_eq!(
            block_on(step(&store, &c, t4, &mut spend)),
            Ok(Recount::Returned(1))
        );
    }

    #[test]
    fn the_claim_rate_changes_for_every_claim_after_the_change() {
        let (store, _) = setup(10, 1);
        let t = ts(NOW);
        set(&store, serde_json::json!({"max_claims_per_second": 1})).expect("rate");
        claim_at(&store, 1, t).expect("first");
        assert_eq!(claim_at(&store, 2, t), Err(Error::RateLimited));
        set(&store, serde_json::json!({"max_claims_per_second": null})).expect("no ceiling");
        claim_at(&store, 3, t).expect("no ceiling");
    }

    #[test]
    fn a_change_in_flight_holds_the_next_until_it_finishes_or_lapses() {
        let (store, c) = setup(10, 1);
        let keys = CampaignKeys::new(&c.id);
        // Change 1 owns the lease and dies.
        block_on(lease::own(&store, &keys.limits_lock(), 1, ts(NOW))).expect("owned");
        let busy = set(&store, serde_json::json!({"stock": 5}));
        assert_eq!(busy.map(drop), Err(Error::RequestInProgress));
        let later = ts(NOW) + lease::LEASE;
        let request: LimitsRequest =
            serde_json::from_value(serde_json::json!({"stock": 5})).expect("request");
        let view = block_on(change(&store, &c.id, request, later)).expect("taken over");
        assert_eq!(view.limits_revision, 2);
        let history = block_on(history(&store, &c.id)).expect("history");
        assert_eq!(history.changes.len(), 1);
        assert_eq!(history.changes[0].capacity, 5);
        assert_eq!(history.changes[0].from.stock, 10);
    }

    #[test]
    fn bad_changes_are_refused_with_their_field() {
        let (store, _) = setup(10, 1);
        for (body, field) in [
            (serde_json::json!({"stock": 0}), "stock"),
            (serde_json::json!({"budget": 100}), "budget"),
            (
                serde_json::json!({"max_claims_per_second": 0}),
                "max_claims_per_second",
            ),
            (serde_json::json!({"reason": "x".repeat(501)}), "reason"),
        ] {
            let refused = set(&store, body).map(drop);
            assert_eq!(
                refused.map_err(|e| e.field().map(str::to_owned)),
                Err(Some(field.to_owned()))
            );
        }
        assert!(serde_json::from_value::<LimitsRequest>(serde_json::json!({"shards": 3})).is_err());
    }
}
