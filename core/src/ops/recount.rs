//! Giving back the stock units of claims that died.
//!
//! A claim takes a unit with an increment and gives it back when it is
//! refused or fails. One whose instance died between that increment and
//! writing its coupon, or whose give-back failed, leaves the unit taken, and
//! only the coupons can say so. So the sweep counts them: it fences the stock
//! (claims read the fence in their first round trip and take nothing while
//! it is up), waits a lease for the claims that read it open to finish or
//! die, counts each shard's coupons in the expiry index, gives back the
//! difference, and lifts the fence. `stats.claimed` is then exact.
//!
//! A fence costs no sale: it goes up only once a claim has found every shard
//! full (the sold-out hint) or the claim window has closed, and never again
//! once a fence went up after the window closed or found every shard full to
//! its capacity. Each step is owned by a lease (`crate::lease`) and verified
//! by reading, so sweeps that overlap, repeat or die part-way give nothing
//! back twice; the fence comes down a lease after the count was first done,
//! so no sweep still counting can act on a moving counter.
//!
//! Units an operator's change of limits withheld (or added) are in the
//! counters too, and recorded (see `limits`): they are not given back. A
//! change of limits makes the stock countable again: "full to its capacity"
//! holds only for the limits it was found under.

use super::{brake, limits};
use crate::campaign::Campaign;
use crate::error::Result;
use crate::expiry::YearMonth;
use crate::keys::CampaignKeys;
use crate::lease::{self, Ownership};
use crate::store::{Store, decode_small_counter, read_counter};
use jiff::Timestamp;

/// Index slots read per round trip while counting.
const CHUNK: u32 = 256;

/// What one look at a campaign's recount did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recount {
    /// No fence is up, or it waits for claims in flight (or another sweep).
    Idle,
    /// The fence came down; it gave back this many units.
    Returned(u64),
    /// The call's share of work ran out while counting: look again.
    Stopped,
}

/// Whether a claim, reading the recount counter as `get` returned it, finds
/// the stock fenced.
pub(crate) fn is_fenced(counter: Option<&[u8]>) -> bool {
    counter
        .and_then(decode_small_counter)
        .is_some_and(|r| r % 2 == 1)
}

/// Moves the campaign's recount on as far as it can: raises the fence when
/// one is due, counts and gives back once claims have settled, lowers it.
/// `spend(n)` grants how many of `n` index slots may be read now (0 stops
/// the call; `spend(0)`, before a month, grants 1 to go on).
pub async fn step(
    store: &impl Store,
    campaign: &Campaign,
    now: Timestamp,
    spend: &mut impl FnMut(u32) -> u32,
) -> Result<Recount> {
    let keys = CampaignKeys::new(&campaign.id);
    let mut round = read_counter(store, &keys.recount()).await?;
    if round % 2 == 0 {
        if !due(store, campaign, &keys, round, now).await? {
            return Ok(Recount::Idle);
        }
        advance(store, &keys, round, now).await?;
        // Raised here, or meanwhile raised (or even lowered) by another sweep.
        round = read_counter(store, &keys.recount()).await?;
        if round % 2 == 0 {
            return Ok(Recount::Idle);
        }
    }
    // Once counted and given back, the fence comes down a lease later: a
    // sweep that began counting before may still write until then, and must
    // find the stock fenced.
    if let Some(done) = store.get(&keys.recount_done(round)).await? {
        let done = lease::parse_ms(&done).unwrap_or(now);
        if now.duration_since(done) >= lease::LEASE && advance(store, &keys, round, now).await? {
            // When it came down: a claim finding the stock full after it
            // makes the next fence due.
            lease::first_seen(store, &keys.recount_since(round + 1), now).await?;
        }
        return Ok(Recount::Idle);
    }
    // Claims that read the fence down may still take units until a lease
    // after it was first seen up.
    let since = lease::first_seen(store, &keys.recount_since(round), now).await?;
    if now.duration_since(since) < lease::LEASE {
        return Ok(Recount::Idle);
    }
    let (limits, _) = limits::in_force(store, campaign).await?;
    let (mut returned, mut full) = (0, true);
    for shard in 0..campaign.shard_count() {
        let Some(issued) = count(store, campaign, &keys, round, shard, now, spend).await? else {
            return Ok(Recount::Stopped);
        };
        match give_back(store, &keys, round, shard, issued, now).await? {
            Some((units, withheld)) => {
                returned += units;
                full &= issued >= campaign.shard_capacity(shard) - withheld;
            }
            // Another sweep is giving this shard back.
            None => return Ok(Recount::Idle),
        }
    }
    if full {
        let revision = limits.revision.to_string();
        store
            .set(&keys.recount_full(round), revision.as_bytes())
            .await?;
    }
    lease::first_seen(store, &keys.recount_done(round), now).await?;
    Ok(Recount::Returned(returned))
}

/// Whether a fence should go up now (the counter reads `round`, even).
async fn due(
    store: &impl Store,
    campaign: &Campaign,
    keys: &CampaignKeys,
    round: i64,
    now: Timestamp,
) -> Result<bool> {
    let ends = claims_end(store, campaign, keys).await?;
    if round > 0 {
        // The last fence covered every claim there will be: it went up after
        // the window closed, or found every shard full to its capacity (no
        // unit can be taken again).
        let raised = lease::first_seen(store, &keys.recount_since(round - 1), now).await?;
        let full = store.get(&keys.recount_full(round - 1)).await?;
        let revision = limits::in_force(store, campaign).await?.0.revision;
        if raised >= ends || full.is_some_and(|f| f == revision.to_string().as_bytes()) {
            return Ok(false);
        }
    }
    if now >= ends {
        return Ok(true);
    }
    // A claim found every shard full since the fence last came down.
    let Some(hint) = store.get(&keys.sold_out()).await? else {
        return Ok(false);
    };
    let hint = std::str::from_utf8(&hint)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|s| Timestamp::from_second(s).ok());
    let down_since = match round {
        0 => Timestamp::MIN,
        _ => lease::first_seen(store, &keys.recount_since(round), now).await?,
    };
    Ok(hint.is_some_and(|hint| hint >= down_since))
}

/// When the claim window closed, or will: its end, or an operator's close
/// (`POST /campaigns/{id}/close`) once the brake holds it.
async fn claims_end(
    store: &impl Store,
    campaign: &Campaign,
    keys: &CampaignKeys,
) -> Result<Timestamp> {
    if brake::is_closed(read_counter(store, &keys.brake()).await?)
        && let Some(at) = super::campaigns::closed_at(store, keys).await?
    {
        return Ok(at.min(campaign.claim_ends_at));
    }
    Ok(campaign.claim_ends_at)
}

/// Moves the counter from `round` to `round + 1`, once: the owner of that
/// step does it, after reading, in case a lapsed owner did. Whether it is past.
async fn advance(
    store: &impl Store,
    keys: &CampaignKeys,
    round: i64,
    now: Timestamp,
) -> Result<bool> {
    let owned = lease::own(store, &keys.recount_step(round + 1), 1, now).await?;
    let Ownership::Owned(n) = owned else {
        return Ok(read_counter(store, &keys.recount()).await? > round);
    };
    if n == 1 || read_counter(store, &keys.recount()).await? == round {
        store.increment(&keys.recount(), 1).await?;
    }
    Ok(true)
}

/// The coupons issued from `shard`, counted in the expiry index; `None` if
/// `spend` stopped it (`spend(0)` is asked before each claim month). Every
/// slot is final behind a settled fence and stays so, so what is counted is
/// kept as it goes (per month, and the months done in `round`), and a
/// stopped count resumes: even a claim window of centuries is counted.
async fn count(
    store: &impl Store,
    campaign: &Campaign,
    keys: &CampaignKeys,
    round: i64,
    shard: u32,
    now: Timestamp,
    spend: &mut impl FnMut(u32) -> u32,
) -> Result<Option<i64>> {
    let zone = campaign.zone()?;
    let (first, last) = campaign.claim_months(&zone, now);
    let progress = keys.recount_progress(round, shard);
    let (mut month, mut coupons) = match store.get(&progress).await? {
        Some(bytes) => parse_progress(&bytes).unwrap_or((first, 0)),
        None => (first, 0),
    };
    while month <= last {
        if spend(0) == 0 {
            return Ok(None);
        }
        let slots = read_counter(store, &keys.month_seq(month, shard)).await?;
        let cache = keys.month_count(month, shard);
        let (mut counted, mut filled) = match store.get(&cache).await? {
            Some(bytes) => parse_count(&bytes).unwrap_or((0, 0)),
            None => (0, 0),
        };
        while counted < slots {
            let n = spend(CHUNK.min(u32::try_from(slots - counted).unwrap_or(CHUNK)));
            if n == 0 {
                return Ok(None);
            }
            let chunk: Vec<String> = (counted + 1..=counted + i64::from(n))
                .map(|slot| keys.month_slot(month, shard, slot))
                .collect();
            filled += store.get_many(&chunk).await?.iter().flatten().count() as i64;
            counted += i64::from(n);
            store
                .set(&cache, format!("{counted} {filled}").as_bytes())
                .await?;
        }
        coupons += filled;
        month = month.next();
        store
            .set(&progress, format!("{month} {coupons}").as_bytes())
            .await?;
    }
    Ok(Some(coupons))
}

fn parse_progress(bytes: &[u8]) -> Option<(YearMonth, i64)> {
    let (month, coupons) = std::str::from_utf8(bytes).ok()?.split_once(' ')?;
    Some((YearMonth::parse(month)?, coupons.parse().ok()?))
}

fn parse_count(bytes: &[u8]) -> Option<(i64, i64)> {
    let (slots, coupons) = std::str::from_utf8(bytes).ok()?.split_once(' ')?;
    Some((slots.parse().ok()?, coupons.parse().ok()?))
}

/// Gives back what `shard` holds beyond its `issued` coupons and the units
/// changes of limits withheld; the units it gave back and those withheld,
/// or `None` if another sweep owns doing it.
async fn give_back(
    store: &impl Store,
    keys: &CampaignKeys,
    round: i64,
    shard: u32,
    issued: i64,
    now: Timestamp,
) -> Result<Option<(u64, i64)>> {
    let counter = keys.claimed(shard);
    // Under a settled fence no change of limits moves it (see `limits`).
    let withheld = read_counter(store, &keys.withheld(shard)).await?;
    let lost = |value: i64| (brake::count(value) - withheld - issued).max(0);
    if lost(read_counter(store, &counter).await?) == 0 {
        return Ok(Some((0, withheld)));
    }
    let Ownership::Owned(_) = lease::own(store, &keys.recount_shard(round, shard), 1, now).await?
    else {
        return Ok(None);
    };
    // Read again as the owner: a lapsed owner may have given some back.
    let lost = lost(read_counter(store, &counter).await?);
    // Under a settled fence the counter moves only here.
    if lost > 0 {
        store.increment(&counter, -lost).await?;
    }
    Ok(Some((lost as u64, withheld)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserId;
    use crate::campaign::CampaignId;
    use crate::code::CouponCode;
    use crate::error::Error;
    use crate::ops::campaigns::{create, get};
    use crate::ops::claim::{ClaimRequest, claim};
    use crate::ops::testing::{campaign, setup_time, ts};
    use crate::store::memory::MemoryStore;
    use futures::executor::block_on;

    const NOW: &str = "2028-02-10T10:00:00+08:00";

    fn claim_at(store: &MemoryStore, n: u32, at: Timestamp) -> crate::error::Result<()> {
        let mut bytes = [0u8; crate::code::RANDOM_BYTES];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        let request = ClaimRequest {
            campaign_id: CampaignId::parse("r").expect("id"),
        };
        let user = UserId(format!("u{n}"));
        let code = CouponCode::from_random(bytes);
        block_on(claim(store, &user, &format!("k{n}"), request, at, code)).map(drop)
    }

    /// Campaign "r" with `stock` in one shard, as `adjust` changes it.
    fn setup(
        stock: u64,
        adjust: impl FnOnce(&mut Campaign),
    ) -> (MemoryStore, Campaign, CampaignKeys) {
        let store = MemoryStore::default();
        let mut c = campaign("r");
        c.stock = stock;
        c.shards = 1;
        adjust(&mut c);
        block_on(create(&store, c.clone(), setup_time())).expect("create");
        let keys = CampaignKeys::new(&c.id);
        (store, c, keys)
    }

    fn step_at(store: &MemoryStore, c: &Campaign, at: Timestamp) -> Recount {
        block_on(step(store, c, at, &mut |n: u32| n.max(1))).expect("step")
    }

    #[test]
    fn a_unit_a_dead_claim_took_is_given_back_once_the_stock_is_found_full() {
        let (store, c, keys) = setup(3, |_| {});
        let t0 = ts(NOW);
        claim_at(&store, 1, t0).expect("first");
        claim_at(&store, 2, t0).expect("second");
        // A claim took the third unit, then its instance died.
        block_on(store.increment(&keys.claimed(0), 1)).expect("taken");
        // Nothing is due until a claim finds the stock full.
        assert_eq!(step_at(&store, &c, t0), Recount::Idle);
        assert_eq!(claim_at(&store, 3, t0), Err(Error::SoldOut));
        // The fence goes up; a claim behind it takes nothing.
        assert_eq!(step_at(&store, &c, t0), Recount::Idle);
        let t1 = t0 + jiff::SignedDuration::from_secs(1);
        store.increments.borrow_mut().clear();
        assert_eq!(claim_at(&store, 4, t1), Err(Error::SoldOut));
        let touched = store.increments.borrow().clone();
        assert!(
            touched.iter().all(|(key, _)| *key != keys.claimed(0)),
            "{touched:?}"
        );
        // Claims that read it down have finished a lease later.
        let almost = t0 + lease::LEASE - jiff::SignedDuration::from_millis(1);
        assert_eq!(step_at(&store, &c, almost), Recount::Idle);
        let settled = t0 + lease::LEASE;
        assert_eq!(step_at(&store, &c, settled), Recount::Returned(1));
        assert_eq!(block_on(get(&store, &c.id)).expect("get").stats.claimed, 2);
        // It comes down a lease later, once no sweep that counted can act.
        let almost = settled + lease::LEASE - jiff::SignedDuration::from_millis(1);
        assert_eq!(step_at(&store, &c, almost), Recount::Idle);
        assert_eq!(claim_at(&store, 5, almost), Err(Error::SoldOut));
        let down = settled + lease::LEASE;
        assert_eq!(step_at(&store, &c, down), Recount::Idle);
        claim_at(&store, 6, down).expect("the unit given back");
        // Full again, and found so: one more fence, which finds every shard
        // full, and none after it.
        let t2 = down + jiff::SignedDuration::from_secs(1);
        assert_eq!(claim_at(&store, 7, t2), Err(Error::SoldOut));
        assert_eq!(step_at(&store, &c, t2), Recount::Idle);
        let t3 = t2 + lease::LEASE;
        assert_eq!(step_at(&store, &c, t3), Recount::Returned(0));
        let t4 = t3 + lease::LEASE;
        assert_eq!(step_at(&store, &c, t4), Recount::Idle);
        assert_eq!(claim_at(&store, 8, t4), Err(Error::SoldOut));
        assert_eq!(step_at(&store, &c, t4 + lease::LEASE), Recount::Idle);
        assert_eq!(block_on(read_counter(&store, &keys.recount())), Ok(4));
        assert_eq!(block_on(get(&store, &c.id)).expect("get").stats.claimed, 3);
    }

    #[test]
    fn the_fence_stays_up_a_lease_after_the_count_so_a_slower_sweep_finds_it_fenced() {
        let (store, c, keys) = setup(2, |_| {});
        claim_at(&store, 1, ts(NOW)).expect("issued");
        let t0 = c.claim_ends_at;
        assert_eq!(step_at(&store, &c, t0), Recount::Idle);
        // One sweep counts and finds nothing lost; it may not lower the
        // fence at once.
        let settled = t0 + lease::LEASE;
        assert_eq!(step_at(&store, &c, settled), Recount::Returned(0));
        assert_eq!(block_on(read_counter(&store, &keys.recount())), Ok(1));
        // A sweep that began counting before runs at most a request's time
        // longer, all of it behind the fence: it finds nothing to give back.
        assert_eq!(step_at(&store, &c, settled), Recount::Idle);
        assert_eq!(block_on(read_counter(&store, &keys.claimed(0))), Ok(1));
        let down = settled + lease::LEASE;
        assert_eq!(step_at(&store, &c, down), Recount::Idle);
        assert_eq!(block_on(read_counter(&store, &keys.recount())), Ok(2));
    }

    #[test]
    fn an_operators_close_makes_the_stock_countable_before_the_window_would_end() {
        let (store, c, keys) = setup(5, |_| {});
        let t0 = ts(NOW);
        claim_at(&store, 1, t0).expect("issued");
        // A claim took a unit, then its instance died; the stock is not full.
        block_on(store.increment(&keys.claimed(0), 1)).expect("lost");
        assert_eq!(step_at(&store, &c, t0), Recount::Idle);
        assert_eq!(block_on(read_counter(&store, &keys.recount())), Ok(0));
        let note = crate::ops::brake::Note::default();
        block_on(crate::ops::campaigns::close(&store, &c.id, note, t0)).expect("closed");
        // Closed for good: the fence goes up, counts a lease later, and gives
        // the unit back; no other fence follows.
        assert_eq!(step_at(&store, &c, t0), Recount::Idle);
        let settled = t0 + lease::LEASE;
        assert_eq!(step_at(&store, &c, settled), Recount::Returned(1));
        assert_eq!(block_on(get(&store, &c.id)).expect("get").stats.claimed, 1);
        assert_eq!(step_at(&store, &c, settled + lease::LEASE), Recount::Idle);
        assert_eq!(
            step_at(&store, &c, settled + lease::LEASE * 2),
            Recount::Idle
        );
        assert_eq!(block_on(read_counter(&store, &keys.recount())), Ok(2));
    }

    #[test]
    fn a_give_back_whose_owner_died_is_finished_once_by_the_next() {
        let (store, c, keys) = setup(2, |_| {});
        let t0 = c.claim_ends_at;
        claim_at(&store, 1, ts(NOW)).expect("issued");
        block_on(store.increment(&keys.claimed(0), 1)).expect("lost");
        // The window closed: the fence goes up without a hint.
        assert_eq!(step_at(&store, &c, t0), Recount::Idle);
        // A sweep owned the give-back, gave it back, and died before lowering
        // the fence.
        let settled = t0 + lease::LEASE;
        block_on(async {
            lease::own(&store, &keys.recount_shard(1, 0), 1, settled).await?;
            store.increment(&keys.claimed(0), -1).await
        })
        .expect("the dead sweep");
        // The next finds nothing left to give back, and lowers it later.
        assert_eq!(step_at(&store, &c, settled), Recount::Returned(0));
        assert_eq!(block_on(read_counter(&store, &keys.claimed(0))), Ok(1));
        assert_eq!(step_at(&store, &c, settled + lease::LEASE), Recount::Idle);
        assert_eq!(block_on(read_counter(&store, &keys.recount())), Ok(2));
    }

    #[test]
    fn a_count_over_centuries_of_months_resumes_across_bounded_calls() {
        let (store, c, keys) = setup(2, |c| {
            c.claim_starts_at = ts("1000-01-02T00:00:00+08:00");
        });
        claim_at(&store, 1, ts(NOW)).expect("issued");
        block_on(store.increment(&keys.claimed(0), 1)).expect("lost");
        assert_eq!(step_at(&store, &c, c.claim_ends_at), Recount::Idle);
        let settled = c.claim_ends_at + lease::LEASE;
        // Each call may look at 1,000 months: 12,338 of them take 13 calls.
        let mut calls = 0;
        let returned = loop {
            calls += 1;
            let mut share: u32 = 1_000;
            let mut spend = |n: u32| {
                let granted = n.max(1).min(share);
                share -= granted;
                granted
            };
            match block_on(step(&store, &c, settled, &mut spend)).expect("step") {
                Recount::Stopped => assert!(calls < 20, "no progress"),
                done => break done,
            }
        };
        assert_eq!((returned, calls), (Recount::Returned(1), 13));
    }
}
