//! Claiming a coupon: the hot path of a flash sale.
//!
//! Every limit is taken with an increment whose returned value decides: a
//! claim that pushes a counter past its limit takes its increment back and is
//! refused. So a counter may briefly read above its limit, but no coupon is
//! ever issued beyond one.
//!
//! The stock is split across `shards` counters so no single key takes every
//! claim of a flash sale. A claim starts at a random shard and moves on while
//! shards are full. It is refused as sold out only after finding every shard
//! full; a shard can read full for a moment while a refused claim takes its
//! increment back, so near the very end a claim may be refused with up to one
//! coupon per claim in flight still left. Those are not lost: the next claims
//! find them.
//!
//! The per-user limit is a row of positions, 1 to the limit, that a user's
//! claims take in turn and fill with their coupons' codes, written together
//! with the coupon (one `set_many`: a transaction on SQLite, `MSET` on Redis).
//! Positions are never given back, so each is filled once: a claim that failed
//! after taking one marks it vacant, and one whose request died leaves it
//! empty. A claim at the limit adopts such a position, a vacant one at once
//! and an empty one a lease after it was first seen empty (`crate::lease`),
//! when its taker has finished or died.

use super::brake;
use super::recount;
use super::{Asker, decode, encode, get_array, load_held, with_dating};
use crate::auth::UserId;
use crate::campaign::{Campaign, CampaignId};
use crate::code::CouponCode;
use crate::coupon::{CouponRecord, CouponView, Held};
use crate::error::{Error, Result};
use crate::expiry::YearMonth;
use crate::keys::{self, CampaignKeys, CouponKeys};
use crate::lease::{self, Ownership};
use crate::store::{Store, StoreResult, decode_small_counter};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    pub campaign_id: CampaignId,
}

/// A claim's answer: the coupon, and whether it repeats an earlier answer.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub coupon: CouponView,
    pub replayed: bool,
}

/// What an idempotency key's request answered, kept so a retry gets the same.
#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    request: ClaimRequest,
    #[serde(flatten)]
    outcome: Outcome,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Outcome {
    Issued {
        code: String,
    },
    SoldOut,
    PerUserLimitReached,
    /// The campaign's brake was on when this attempt reached the stock. Not
    /// final: a retry with the same key becomes attempt `attempt + 1`.
    Paused {
        attempt: i64,
    },
    /// This attempt ended without a coupon or a final refusal: the store
    /// failed (and what it took was given back), or the user's last free
    /// position may still be filled by a claim in flight. Not final: a retry
    /// becomes attempt `attempt + 1`.
    Failed {
        attempt: i64,
    },
}

/// Claims a coupon of `request.campaign_id` for `user`, at most once per
/// idempotency key. `code` is a fresh random code, used if a coupon is issued.
pub async fn claim(
    store: &impl Store,
    user: &UserId,
    idempotency_key: &str,
    request: ClaimRequest,
    now: Timestamp,
    code: CouponCode,
) -> Result<Claimed> {
    let campaign_keys = CampaignKeys::new(&request.campaign_id);
    let (key_owner, answer_key) = keys::idempotency(user.as_str(), idempotency_key);
    let [
        campaign,
        dating,
        paused,
        answer,
        sold_out,
        positions,
        recount,
        limits,
    ] = get_array(
        store,
        [
            campaign_keys.record(),
            campaign_keys.dating(),
            campaign_keys.brake(),
            answer_key.clone(),
            campaign_keys.sold_out(),
            campaign_keys.positions(user.as_str()),
            campaign_keys.recount(),
            campaign_keys.limits(),
        ],
    )
    .await?;
    // Unreadable counts as taken to the limit: the positions themselves decide.
    let positions = positions
        .as_deref()
        .map_or(Some(0), decode_small_counter)
        .unwrap_or(i64::MAX);
    let attempt = match read_answer(&answer_key, answer.as_deref(), &request)? {
        None => 1,
        // The last attempt met the brake or failed: this retry may be the next.
        Some(Outcome::Paused { attempt } | Outcome::Failed { attempt }) => {
            attempt.saturating_add(1)
        }
        Some(done) => return replay(store, user, done, now).await,
    };
    let (campaign, dating) = match campaign {
        Some(record) => with_dating(&campaign_keys, &record, dating.as_deref())?,
        None => return Err(Error::CampaignNotFound),
    };
    if !campaign.is_claimable_at(now) || brake::is_closed_stored(paused.as_deref()) {
        return Err(Error::CampaignNotActive);
    }
    if brake::is_on_stored(paused.as_deref()) {
        return Err(Error::CampaignPaused);
    }
    // The fresh code is random: claims spread evenly over the shards.
    let start_shard = code.shard(campaign.shard_count());
    let limits = super::limits::parse(&campaign_keys.limits(), limits.as_deref(), &campaign)?;
    admit(store, &campaign, &limits, &campaign_keys, start_shard, now).await?;
    // Refusals above leave the key unused, so a retry after them can still
    // succeed. An attempt whose owner died lapses: the retry takes the next.
    let attempt = match lease::own(store, &key_owner, attempt, now).await? {
        Ownership::Owned(n) => n,
        Ownership::Busy | Ownership::Lapsed => {
            let answer = store.get(&answer_key).await?;
            return match read_answer(&answer_key, answer.as_deref(), &request)? {
                Some(Outcome::Paused { attempt: last }) if last >= attempt => {
                    Err(Error::CampaignPaused)
                }
                Some(Outcome::Paused { .. } | Outcome::Failed { .. }) | None => {
                    Err(Error::RequestInProgress)
                }
                Some(done) => replay(store, user, done, now).await,
            };
        }
    };
    // Until the coupon is written, a failure gives back what this attempt
    // took and says so in the answer, so the retry goes on at once.
    let mut undo = Undo {
        taken: Vec::new(),
        vacate: None,
        answer_key: answer_key.clone(),
        failed: encode(&Answer {
            request: request.clone(),
            outcome: Outcome::Failed { attempt },
        }),
    };
    // Once a claim found every shard empty, the rest of that second is refused
    // without probing them all again; the refusal is this key's answer.
    let second = now.as_second().to_string();
    let hinted = sold_out.as_deref() == Some(second.as_bytes());
    // A recount fences the stock only once it was found full (or the window
    // closed): see `recount`.
    let probes = !hinted && !recount::is_fenced(recount.as_deref());
    let taken = match probes {
        false => Err(Outcome::SoldOut),
        true => {
            let limits = Limits {
                store,
                campaign: &campaign,
                keys: &campaign_keys,
                user: user.as_str(),
                start_shard,
                attempt,
                now,
            };
            undo.on_error(store, limits.take(positions).await).await?
        }
    };
    if let Ok(taken) = &taken {
        undo.taken.push(campaign_keys.claimed(taken.shard));
        undo.vacate = Some(taken.slot(&campaign_keys, user.as_str(), Slot::vacant(taken.owner)));
    }
    let outcome = match taken {
        Ok(_) => Outcome::Issued {
            code: code.to_string(),
        },
        Err(ref refusal) => refusal.clone(),
    };
    // Only the claim that probed every shard writes the hint: the hinted ones
    // would make it a hot key.
    if let (Err(Outcome::SoldOut), true) = (&taken, probes) {
        let hint = store
            .set(&campaign_keys.sold_out(), second.as_bytes())
            .await;
        undo.on_error(store, hint).await?;
    }
    let mut writes = Vec::with_capacity(5);
    let mut record = CouponRecord {
        code: code.to_string(),
        campaign_id: campaign.id.clone(),
        user_id: user.as_str().to_owned(),
        issued_at: now,
        wallet_slot: None,
        claim_key: Some(idempotency_key.to_owned()),
    };
    let zone = campaign.zone()?;
    if let Ok(taken) = &taken {
        let shard = taken.shard;
        // The expiry index: by claim month, as every coupon of a claim month
        // expires at one instant whatever the rule; by shard, so claims share
        // no counter.
        let month = YearMonth::of(now, &zone);
        let slot = store
            .increment(&campaign_keys.month_seq(month, shard), 1)
            .await;
        let slot = undo.on_error(store, slot).await?;
        // The user's wallet numbers the coupon (one round trip: Spin's
        // increments block, so two cannot be in flight together). A number
        // whose coupon is never written is a hole the listing skips.
        let wallet = store.increment(&keys::wallet(user.as_str()), 1).await;
        let wallet = undo.on_error(store, wallet).await?;
        record.wallet_slot = Some(wallet);
        // The position first: a backend that writes in order never leaves a
        // coupon whose position could be adopted.
        writes.push(taken.slot(&campaign_keys, user.as_str(), code.to_string()));
        writes.push((CouponKeys::new(&code).record(), encode(&record)));
        writes.push((
            campaign_keys.month_slot(month, shard, slot),
            code.to_string().into_bytes(),
        ));
        writes.push((
            keys::wallet_slot(user.as_str(), wallet),
            code.to_string().into_bytes(),
        ));
    }
    writes.push((
        answer_key,
        encode(&Answer {
            request,
            outcome: outcome.clone(),
        }),
    ));
    // The coupon is written before it is answered: a 201 is always in the
    // store. A failure here may have written it: nothing is given back.
    store.set_many(&writes).await?;
    outcome.into_result()?;
    let held = Held {
        code,
        record,
        campaign,
        zone,
        generation: 0,
        ending: None,
        dating,
        frozen: false,
    };
    Ok(Claimed {
        coupon: held.view(now),
        replayed: false,
    })
}

/// What a claim gives back if the store fails before its coupon is written.
struct Undo {
    /// Counters it took one from.
    taken: Vec<String>,
    /// The user's position it took, marked vacant so the next claim adopts it at once.
    vacate: Option<(String, Vec<u8>)>,
    answer_key: String,
    /// The answer that lets the retry go on: `Outcome::Failed`.
    failed: Vec<u8>,
}

impl Undo {
    /// Passes `result` on; on an error, first gives back what was taken and
    /// records the failure (best effort: what fails here is left to the
    /// attempt's lease and to recovery).
    async fn on_error<T>(&self, store: &impl Store, result: StoreResult<T>) -> Result<T> {
        if result.is_err() {
            let mut given_back = true;
            for key in &self.taken {
                given_back &= store.increment(key, -1).await.is_ok();
            }
            if given_back {
                let mut writes = vec![(self.answer_key.clone(), self.failed.clone())];
                writes.extend(self.vacate.clone());
                let _ = store.set_many(&writes).await;
            }
        }
        Ok(result?)
    }
}

impl Outcome {
    /// `Ok` for an issued coupon, else the refusal it stands for.
    fn into_result(self) -> Result<String> {
        match self {
            Outcome::Issued { code } => Ok(code),
            Outcome::SoldOut => Err(Error::SoldOut),
            Outcome::PerUserLimitReached => Err(Error::PerUserLimitReached),
            Outcome::Paused { .. } => Err(Error::CampaignPaused),
            Outcome::Failed { .. } => Err(Error::RequestInProgress),
        }
    }
}

/// How long a second's rate counter is kept: a request counts in the second
/// it started, and runs for at most `lease::MAX_REQUEST`, on a clock off by
/// up to `lease::MAX_SKEW`.
pub(crate) const RATE_KEPT_SECONDS: i64 = 60;

const _: () =
    assert!(RATE_KEPT_SECONDS >= lease::MAX_REQUEST.as_secs() + 2 * lease::MAX_SKEW.as_secs());

/// Admission control, shared by every host through the store: of each second's
/// claims, only `max_claims_per_second` get in; the rest are shed before they
/// touch the stock. The ceiling is split across as many counters as it allows,
/// so it is no hot key either.
async fn admit(
    store: &impl Store,
    campaign: &Campaign,
    limits: &super::limits::Limits,
    keys: &CampaignKeys,
    start_shard: u32,
    now: Timestamp,
) -> Result<()> {
    let Some(ceiling) = limits.max_claims_per_second else {
        return Ok(());
    };
    let counters = campaign.shard_count().min(ceiling);
    let shard = start_shard % counters;
    let share = ceiling / counters + u32::from(shard < ceiling % counters);
    let attempts = store
        .increment(&keys.rate(now.as_second(), shard), 1)
        .await?;
    // The first claim of a second on this counter deletes the counters of
    // the minute before the last, where no request can still be counting,
    // and marks the minute (and the first of a minute, the hour) for the
    // purge, which deletes what a counter idle for over a minute keeps (best
    // effort: two calls per counter and second, three a minute, never the
    // answer; a mark whose answer was lost marks its hour again).
    if attempts == 1 {
        let newest_stale = now.as_second() - RATE_KEPT_SECONDS;
        let stale: Vec<String> = (0..RATE_KEPT_SECONDS)
            .map(|back| keys.rate(newest_stale - back, shard))
            .collect();
        let _ = store.delete_many(&stale).await;
        let minute = now.as_second().div_euclid(60);
        if let Ok(1) | Err(_) = store.increment(&keys.rate_minute(minute), 1).await {
            let _ = store
                .increment(&keys.rate_hour(minute.div_euclid(60)), 1)
                .await;
        }
    }
    if attempts > i64::from(share) {
        return Err(Error::RateLimited);
    }
    Ok(())
}

/// Where a claim's coupon goes: a unit of `shard`'s stock and the user's
/// `position`, owned as attempt `owner` of that position's lease.
struct Taken {
    shard: u32,
    position: u32,
    owner: i64,
}

impl Taken {
    fn slot(
        &self,
        keys: &CampaignKeys,
        user: &str,
        value: impl Into<Vec<u8>>,
    ) -> (String, Vec<u8>) {
        (keys.user_slot(user, self.position), value.into())
    }
}

/// What a user's position holds, as its record says.
#[derive(Debug, PartialEq, Eq)]
enum Slot {
    /// A coupon (or a record this version cannot read: counted as a coupon).
    Holds,
    /// Given up by the `after`-th owner: attempt `after + 1` may take it.
    Vacant { after: i64 },
}

impl Slot {
    const VACANT: &str = "vacant:";

    fn vacant(owner: i64) -> String {
        format!("{}{owner}", Self::VACANT)
    }

    fn parse(bytes: &[u8]) -> Slot {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.strip_prefix(Self::VACANT)?.parse().ok())
            .map_or(Slot::Holds, |after| Slot::Vacant { after })
    }
}

/// Taking the limits of one claim attempt.
struct Limits<'a, S> {
    store: &'a S,
    campaign: &'a Campaign,
    keys: &'a CampaignKeys,
    user: &'a str,
    start_shard: u32,
    attempt: i64,
    now: Timestamp,
}

impl<S: Store> Limits<'_, S> {
    /// A unit of stock and the user's next position; at the limit (as
    /// `positions`, read before, says, or as the increment finds), a position
    /// to adopt. A store error gives back what this call took.
    async fn take(&self, positions: i64) -> StoreResult<Result<Taken, Outcome>> {
        let limit = i64::from(self.campaign.per_user_limit);
        if positions < limit {
            let shard = match self.stock().await? {
                Ok(shard) => shard,
                Err(refusal) => return Ok(Err(refusal)),
            };
            let position = self
                .store
                .increment(&self.keys.positions(self.user), 1)
                .await;
            let counter = self.keys.claimed(shard);
            let give_back = || self.store.increment(&counter, -1);
            match position {
                Ok(p) if p <= limit => {
                    return Ok(Ok(Taken {
                        shard,
                        position: p as u32,
                        owner: 1,
                    }));
                }
                // The user's other claims took the last positions first.
                Ok(_) => {
                    give_back().await?;
                }
                // If it applied, the position is empty: it lapses.
                Err(e) => {
                    let _ = give_back().await;
                    return Err(e);
                }
            }
        }
        self.adopt().await
    }

    /// The first position that is vacant, or whose taker died, is this
    /// claim's to fill. Refused for good once every position holds a coupon.
    async fn adopt(&self) -> StoreResult<Result<Taken, Outcome>> {
        let positions = 1..=self.campaign.per_user_limit;
        let slots: Vec<String> = positions
            .clone()
            .map(|q| self.keys.user_slot(self.user, q))
            .collect();
        let mut busy = false;
        for (position, value) in positions.zip(self.store.get_many(&slots).await?) {
            let lease = self.keys.user_slot_owner(self.user, position);
            let first = match value.as_deref().map(Slot::parse) {
                Some(Slot::Holds) => continue,
                Some(Slot::Vacant { after }) => after + 1,
                // Empty: its taker (attempt 1, which took it by the count)
                // may still be writing it.
                None => match lease::lapsed(self.store, &lease, 1, self.now).await? {
                    Ownership::Lapsed => 2,
                    _ => {
                        busy = true;
                        continue;
                    }
                },
            };
            let Ownership::Owned(owner) = lease::own(self.store, &lease, first, self.now).await?
            else {
                busy = true;
                continue;
            };
            let refusal = match self.stock().await {
                Ok(Ok(shard)) => {
                    return Ok(Ok(Taken {
                        shard,
                        position,
                        owner,
                    }));
                }
                Ok(Err(refusal)) => Ok(refusal),
                Err(e) => Err(e),
            };
            // No coupon after all: the next claim takes the position at once.
            let slot = &slots[position as usize - 1];
            let vacated = self.store.set(slot, Slot::vacant(owner).as_bytes()).await;
            let refusal = refusal?;
            vacated?;
            return Ok(Err(refusal));
        }
        Ok(Err(match busy {
            true => Outcome::Failed {
                attempt: self.attempt,
            },
            false => Outcome::PerUserLimitReached,
        }))
    }

    /// One coupon from the first shard with any left, starting at `start_shard`.
    async fn stock(&self) -> StoreResult<Result<u32, Outcome>> {
        let shards = self.campaign.shard_count();
        for k in 0..shards {
            let shard = (self.start_shard + k) % shards;
            let counter = self.keys.claimed(shard);
            let taken = self.store.increment(&counter, 1).await?;
            // The brake is in the same counter: see `brake`.
            let capacity = self.campaign.shard_capacity(shard);
            if !brake::is_engaged(taken) && brake::count(taken) <= capacity {
                return Ok(Ok(shard));
            }
            self.store.increment(&counter, -1).await?;
            if brake::is_engaged(taken) {
                return Ok(Err(Outcome::Paused {
                    attempt: self.attempt,
                }));
            }
        }
        Ok(Err(Outcome::SoldOut))
    }
}

/// The outcome stored for this idempotency key, checked against this request's body.
fn read_answer(
    key: &str,
    answer: Option<&[u8]>,
    request: &ClaimRequest,
) -> Result<Option<Outcome>> {
    let Some(bytes) = answer else { return Ok(None) };
    let answer: Answer = decode(key, bytes)?;
    if answer.request != *request {
        return Err(Error::IdempotencyKeyReused);
    }
    Ok(Some(answer.outcome))
}

/// Answers a retry with what the key's request answered.
async fn replay(
    store: &impl Store,
    user: &UserId,
    outcome: Outcome,
    now: Timestamp,
) -> Result<Claimed> {
    let code = outcome.into_result()?;
    let held = load_held(store, &code, Some(Asker { user, now })).await?;
    Ok(Claimed {
        coupon: held.view(now),
        replayed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserId;
    use crate::ops::campaigns::{create, get};
    use crate::ops::testing::{campaign, ts};
    use crate::store::memory::MemoryStore;
    use crate::store::read_counter;
    use futures::executor::block_on;
    use futures::future::join_all;

    fn user(name: &str) -> UserId {
        UserId(name.to_owned())
    }

    fn code(n: u32) -> CouponCode {
        let mut bytes = [0u8; crate::code::RANDOM_BYTES];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        CouponCode::from_random(bytes)
    }

    fn request(id: &str) -> ClaimRequest {
        ClaimRequest {
            campaign_id: CampaignId::parse(id).expect("id"),
        }
    }

    const NOW: &str = "2028-02-10T10:00:00+08:00";

    fn campaign_with_stock(id: &str, stock: u64) -> Campaign {
        let mut c = campaign(id);
        c.stock = stock;
        c
    }

    fn store_with(c: Campaign) -> MemoryStore {
        let store = MemoryStore::default();
        block_on(create(&store, c, crate::ops::testing::setup_time())).expect("create campaign");
        store
    }

    #[test]
    fn a_claim_issues_a_coupon_and_a_retry_replays_it() {
        let store = store_with(campaign("spring"));
        block_on(async {
            let first = claim(
                &store,
                &user("alice"),
                "k1",
                request("spring"),
                ts(NOW),
                code(1),
            )
            .await
            .expect("claim");
            assert!(!first.replayed);
            assert_eq!(first.coupon.expires_at, "2028-03-01T00:00:00+08:00");
            let again = claim(
                &store,
                &user("alice"),
                "k1",
                request("spring"),
                ts(NOW),
                code(2),
            )
            .await
            .expect("replay");
            assert!(again.replayed);
            assert_eq!(again.coupon.code, first.coupon.code);
            let stats = get(&store, &request("spring").campaign_id)
                .await
                .expect("stats")
                .stats;
            assert_eq!(stats.claimed, 1);
        });
    }

    #[test]
    fn an_idempotency_key_is_bound_to_its_body_and_its_user() {
        let store = store_with(campaign("a"));
        block_on(create(
            &store,
            campaign("b"),
            crate::ops::testing::setup_time(),
        ))
        .expect("second campaign");
        block_on(async {
            claim(&store, &user("alice"), "k", request("a"), ts(NOW), code(1))
                .await
                .expect("claim");
            let reused = claim(&store, &user("alice"), "k", request("b"), ts(NOW), code(2)).await;
            assert_eq!(reused.unwrap_err(), Error::IdempotencyKeyReused);
            // Another user's identical key is another key.
            let bob = claim(&store, &user("bob"), "k", request("a"), ts(NOW), code(3))
                .await
                .expect("bob");
            assert!(!bob.replayed);
        });
    }

    #[test]
    fn refusals_before_the_key_is_taken_leave_it_usable() {
        let mut c = campaign("w");
        c.claim_starts_at = ts("2028-02-11T00:00:00+08:00");
        let store = store_with(c);
        block_on(async {
            let early = claim(&store, &user("u"), "k", request("w"), ts(NOW), code(1)).await;
            assert_eq!(early.unwrap_err(), Error::CampaignNotActive);
            let later = ts("2028-02-12T00:00:00+08:00");
            assert!(
                claim(&store, &user("u"), "k", request("w"), later, code(1))
                    .await
                    .is_ok()
            );
            let missing = claim(&store, &user("u"), "k2", request("nope"), later, code(2)).await;
            assert_eq!(missing.unwrap_err(), Error::CampaignNotFound);
            let after = ts("2028-02-15T00:00:00+08:00");
            let ended = claim(&store, &user("u"), "k3", request("w"), after, code(3)).await;
            assert_eq!(ended.unwrap_err(), Error::CampaignNotActive);
        });
    }

    #[test]
    fn a_campaign_keeps_the_rate_counters_of_its_last_minute_only() {
        let mut c = campaign("busy");
        c.stock = 1_000;
        c.per_user_limit = 1;
        c.max_claims_per_second = Some(2);
        c.shards = 2;
        let store = store_with(c);
        let start = ts(NOW);
        // Claims in each of 300 seconds: without the deletion, 300 seconds' counters stay.
        for s in 0..300u32 {
            let at = start + jiff::SignedDuration::from_secs(i64::from(s));
            let who = user(&format!("u{s}"));
            block_on(claim(&store, &who, "k", request("busy"), at, code(s))).expect("a claim");
        }
        let rate_keys = |marks: bool| {
            let values = store.values.borrow();
            let rate = |k: &&String| k.contains(":rate:") && k.contains(":rate:m:") == marks;
            values.keys().filter(rate).count()
        };
        let kept = rate_keys(false);
        assert!(
            (1..=2 * RATE_KEPT_SECONDS as usize + 2).contains(&kept),
            "{kept} rate counters kept"
        );
        // A mark per minute, for the purge.
        assert_eq!(rate_keys(true), 5);
        // The counters still in use are not deleted: the ceiling holds in the last second.
        let last = start + jiff::SignedDuration::from_secs(299);
        let shed = (0..8u32).filter(|i| {
            let who = user(&format!("late{i}"));
            let result = block_on(claim(
                &store,
                &who,
                "k",
                request("busy"),
                last,
                code(1_000 + i),
            ));
            result.err() == Some(Error::RateLimited)
        });
        assert!(shed.count() >= 5);
    }

    #[test]
    fn claims_over_the_per_second_ceiling_are_shed_before_the_stock() {
        let mut c = campaign("rate");
        c.max_claims_per_second = Some(3);
        c.shards = 1; // one rate counter: the ceiling is exact
        let store = store_with(c);
        let users: Vec<UserId> = (0..8).map(|i| user(&format!("u{i}"))).collect();
        let at = |s: &str| ts(s);
        let results = block_on(join_all((0..8u32).map(|i| {
            claim(
                &store,
                &users[i as usize],
                "k",
                request("rate"),
                at(NOW),
                code(i),
            )
        })));
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
        assert!(
            results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .all(|e| *e == Error::RateLimited)
        );
        // The shed ones took nothing: the stock counter saw only the admitted.
        let stats = block_on(get(&store, &request("rate").campaign_id)).expect("stats");
        assert_eq!(stats.stats.claimed, 3);
        // The next second admits again, and the same keys may retry.
        let next = at("2028-02-10T10:00:01+08:00");
        assert!(
            block_on(claim(
                &store,
                &users[7],
                "k",
                request("rate"),
                next,
                code(9)
            ))
            .is_ok()
        );
    }

    #[test]
    fn the_brake_stops_claims_that_passed_the_fast_path_and_their_retry_succeeds_later() {
        let store = store_with(campaign("brake"));
        let keys = CampaignKeys::new(&request("brake").campaign_id);
        block_on(async {
            claim(&store, &user("a"), "k0", request("brake"), ts(NOW), code(0))
                .await
                .expect("before the pause");
            // A claim that read the register before the pause reaches the stock after it.
            brake::Brake::claims(&campaign("brake"))
                .request(&store, true, &Default::default(), ts(NOW))
                .await
                .expect("brake");
            brake::Brake::claims(&campaign("brake"))
                .apply(&store, ts(NOW))
                .await
                .expect("brake");
            let refused = claim(&store, &user("b"), "k", request("brake"), ts(NOW), code(1)).await;
            assert_eq!(refused.unwrap_err(), Error::CampaignPaused);
            // A retry while still braked is refused too, and takes nothing.
            let again = claim(&store, &user("b"), "k", request("brake"), ts(NOW), code(2)).await;
            assert_eq!(again.unwrap_err(), Error::CampaignPaused);
            assert_eq!(read_counter(&store, &keys.positions("b")).await, Ok(0));
            brake::Brake::claims(&campaign("brake"))
                .request(&store, false, &Default::default(), ts(NOW))
                .await
                .expect("release");
            brake::Brake::claims(&campaign("brake"))
                .apply(&store, ts(NOW))
                .await
                .expect("release");
            let retried = claim(&store, &user("b"), "k", request("brake"), ts(NOW), code(3))
                .await
                .expect("after resume");
            assert!(!retried.replayed);
            let replay = claim(&store, &user("b"), "k", request("brake"), ts(NOW), code(4))
                .await
                .expect("replay");
            assert_eq!(
                (replay.replayed, replay.coupon.code),
                (true, retried.coupon.code)
            );
        });
        let stats = block_on(get(&store, &request("brake").campaign_id)).expect("stats");
        assert_eq!((stats.stats.claimed, stats.paused), (2, false));
    }

    #[test]
    fn once_a_pause_is_acknowledged_no_claim_takes_stock() {
        let store = store_with(campaign_with_stock("storm", 1_000));
        let id = request("storm").campaign_id;
        let users: Vec<UserId> = (0..200).map(|i| user(&format!("u{i}"))).collect();
        let (before, after) = block_on(async {
            let storm = join_all((0..200u32).map(|i| {
                claim(
                    &store,
                    &users[i as usize],
                    "k",
                    request("storm"),
                    ts(NOW),
                    code(i),
                )
            }));
            let pause = async {
                // Pause once the storm has taken some stock.
                let taken = || {
                    let increments = store.increments.borrow();
                    increments
                        .iter()
                        .filter(|(k, d)| k.contains(":claimed:") && *d == 1)
                        .count()
                };
                while taken() < 50 {
                    crate::store::memory::yield_now().await;
                }
                // What the stock counters hold at the acknowledgement.
                let view = crate::ops::campaigns::set_paused(
                    &store,
                    &id,
                    true,
                    Default::default(),
                    ts(NOW),
                )
                .await
                .expect("pause");
                view.stats.claimed
            };
            let (results, at_ack) = futures::future::join(storm, pause).await;
            (results, at_ack)
        });
        let issued = before.iter().filter(|r| r.is_ok()).count() as i64;
        assert!(
            issued > 0 && issued < 200,
            "the pause must land inside the storm: {issued} issued"
        );
        assert!(
            issued <= after,
            "{issued} coupons issued, {after} taken when the pause was acknowledged"
        );
        assert!(
            before
                .iter()
                .filter_map(|r| r.as_ref().err())
                .all(|e| *e == Error::CampaignPaused)
        );
        // Even a claim that skips the fast path (it read the counter before the pause) is braked.
        block_on(store.increment(&CampaignKeys::new(&id).brake(), 1)).expect("stale counter");
        let late = block_on(claim(
            &store,
            &user("late"),
            "k",
            request("storm"),
            ts(NOW),
            code(999),
        ));
        assert_eq!(late.unwrap_err(), Error::CampaignPaused);
        let stored = store
            .values
            .borrow()
            .keys()
            .filter(|k| k.starts_with("k:"))
            .count() as i64;
        assert_eq!(stored, issued);
    }

    #[test]
    fn a_unit_held_by_a_claim_in_flight_is_claimable_once_it_is_given_back() {
        let mut c = campaign("tail");
        (c.stock, c.shards) = (2, 2);
        let store = store_with(c);
        let keys = CampaignKeys::new(&request("tail").campaign_id);
        block_on(async {
            // A claim in flight has pushed shard 0 past its one coupon and is about to take it back.
            store
                .increment(&keys.claimed(0), 1)
                .await
                .expect("in flight");
            claim(&store, &user("a"), "k", request("tail"), ts(NOW), code(1))
                .await
                .expect("shard 1");
            let tail = claim(&store, &user("b"), "k", request("tail"), ts(NOW), code(2)).await;
            assert_eq!(tail.unwrap_err(), Error::SoldOut);
            // The rest of that second is refused at once: nothing is probed or taken.
            let hinted = claim(&store, &user("c"), "k", request("tail"), ts(NOW), code(3)).await;
            assert_eq!(hinted.unwrap_err(), Error::SoldOut);
            assert_eq!(read_counter(&store, &keys.positions("c")).await, Ok(0));
            // The claim in flight gives its unit back: the next second's claim gets it.
            store
                .increment(&keys.claimed(0), -1)
                .await
                .expect("given back");
            let later = ts("2028-02-10T10:00:01+08:00");

            // A key refused from the hint keeps that answer: its retry replays it.
            let retry = claim(&store, &user("c"), "k", request("tail"), later, code(5)).await;
            assert_eq!(retry.unwrap_err(), Error::SoldOut);
            // (A key's sold_out answer is final, so this is a new key.)
            claim(&store, &user("b"), "k2", request("tail"), later, code(4))
                .await
                .expect("the remainder");
        });
        let stats = block_on(get(&store, &request("tail").campaign_id))
            .expect("stats")
            .stats;
        assert_eq!((stats.claimed, stats.remaining_stock), (2, 0));
    }

    #[test]
    fn a_paused_campaign_refuses_claims_until_resumed() {
        let store = store_with(campaign("p"));
        let id = request("p").campaign_id;
        block_on(async {
            crate::ops::campaigns::set_paused(&store, &id, true, Default::default(), ts(NOW))
                .await
                .expect("pause");
            let paused = claim(&store, &user("u"), "k", request("p"), ts(NOW), code(1)).await;
            assert_eq!(paused.unwrap_err(), Error::CampaignPaused);
            crate::ops::campaigns::set_paused(&store, &id, false, Default::default(), ts(NOW))
                .await
                .expect("resume");
            assert!(
                claim(&store, &user("u"), "k", request("p"), ts(NOW), code(1))
                    .await
                    .is_ok()
            );
        });
    }

    #[test]
    fn concurrent_claims_never_exceed_stock_or_per_user_limit() {
        let store = store_with(campaign("rush")); // stock 10, 2 per user
        let users: Vec<UserId> = (0..8).map(|i| user(&format!("u{i}"))).collect();
        let keys: Vec<String> = (0..64).map(|i| format!("key{i}")).collect();
        let attempts = (0..64u32).map(|i| {
            let who = &users[i as usize % users.len()];
            claim(
                &store,
                who,
                &keys[i as usize],
                request("rush"),
                ts(NOW),
                code(i),
            )
        });
        let mut results = block_on(join_all(attempts));
        // A claim whose user's other claims still held the last positions
        // answered 409 `request_in_progress`: the retry with its key decides.
        for (i, result) in results.iter_mut().enumerate() {
            if let Err(Error::RequestInProgress) = result {
                let who = &users[i % users.len()];
                *result = block_on(claim(
                    &store,
                    who,
                    &keys[i],
                    request("rush"),
                    ts(NOW),
                    code(i as u32),
                ));
            }
        }
        let issued: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(issued.len(), 10);
        for u in &users {
            assert!(
                issued
                    .iter()
                    .filter(|c| c.coupon.user_id == u.as_str())
                    .count()
                    <= 2
            );
        }
        for r in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, Error::SoldOut | Error::PerUserLimitReached),
                    "{e:?}"
                );
            }
        }
        let stored = store
            .values
            .borrow()
            .keys()
            .filter(|k| k.starts_with("k:"))
            .count();
        assert_eq!(stored, 10);
        let stats = block_on(get(&store, &request("rush").campaign_id))
            .expect("stats")
            .stats;
        assert_eq!((stats.claimed, stats.remaining_stock), (10, 0));
    }

    #[test]
    fn concurrent_retries_of_one_key_issue_one_coupon() {
        let store = store_with(campaign("retry"));
        let alice = user("alice");
        let attempts =
            (0..16).map(|i| claim(&store, &alice, "same", request("retry"), ts(NOW), code(i)));
        let results = block_on(join_all(attempts));
        let codes: std::collections::BTreeSet<_> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|c| c.coupon.code.clone())
            .collect();
        assert_eq!(codes.len(), 1);
        for r in &results {
            if let Err(e) = r {
                assert_eq!(e, &Error::RequestInProgress);
            }
        }
        let stats = block_on(get(&store, &request("retry").campaign_id))
            .expect("stats")
            .stats;
        assert_eq!(stats.claimed, 1);
    }

    #[test]
    fn the_budget_caps_face_value_even_with_stock_left() {
        let mut c = campaign("budget"); // 500 off each
        c.budget = crate::money::Amount::new(1_200);
        let store = store_with(c);
        let users: Vec<UserId> = (0..6).map(|i| user(&format!("u{i}"))).collect();
        let results = block_on(join_all((0..6u32).map(|i| {
            claim(
                &store,
                &users[i as usize],
                "k",
                request("budget"),
                ts(NOW),
                code(i),
            )
        })));
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
        assert!(
            results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .all(|e| *e == Error::SoldOut)
        );
        let stats = block_on(get(&store, &request("budget").campaign_id))
            .expect("stats")
            .stats;
        assert_eq!((stats.claimed, stats.budget_used), (2, 1_000));
    }

    #[test]
    fn a_refused_claim_replays_its_refusal() {
        let mut c = campaign("one");
        c.stock = 1;
        let store = store_with(c);
        block_on(async {
            claim(&store, &user("a"), "k", request("one"), ts(NOW), code(1))
                .await
                .expect("first");
            let sold_out = claim(&store, &user("b"), "k", request("one"), ts(NOW), code(2)).await;
            assert_eq!(sold_out.unwrap_err(), Error::SoldOut);
            let replay = claim(&store, &user("b"), "k", request("one"), ts(NOW), code(3)).await;
            assert_eq!(replay.unwrap_err(), Error::SoldOut);
        });
    }

    #[test]
    fn a_position_its_claim_left_empty_is_adopted_a_lease_later() {
        let mut c = campaign_with_stock("dead", 10);
        c.per_user_limit = 1;
        let store = store_with(c);
        let keys = CampaignKeys::new(&CampaignId::parse("dead").expect("id"));
        block_on(async {
            // A claim took the user's only position, then its instance died.
            store
                .increment(&keys.positions("a"), 1)
                .await
                .expect("taken");
            let first = claim(&store, &user("a"), "k", request("dead"), ts(NOW), code(1)).await;
            assert_eq!(first.unwrap_err(), Error::RequestInProgress);
            let lease = crate::lease::LEASE;
            let almost = ts(NOW) + lease - jiff::SignedDuration::from_secs(1);
            let early = claim(&store, &user("a"), "k", request("dead"), almost, code(2)).await;
            assert_eq!(early.unwrap_err(), Error::RequestInProgress);
            // The taker has finished or died by now: the retry adopts it.
            let later = ts(NOW) + lease;
            let adopted = claim(&store, &user("a"), "k", request("dead"), later, code(3)).await;
            assert_eq!(adopted.expect("adopted").coupon.code, code(3).to_string());
            let full = claim(&store, &user("a"), "k2", request("dead"), later, code(4)).await;
            assert_eq!(full.unwrap_err(), Error::PerUserLimitReached);
        });
    }
}
