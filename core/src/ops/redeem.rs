//! Redeeming a coupon at checkout, and giving it back when the order is cancelled.
//!
//! A coupon lives in generations: each cancelled redemption starts a new one.
//! Within a generation, whoever moves `k:{code}:lock:{g}` from 0 to 1, a
//! redemption or the expiry sweep, decides how it ends; nobody else can.

use super::ledger::{Actor, Entry, Stamp};
use super::{Asker, encode, load_held, load_held_with};
use crate::auth::{Caller, UserId};
use crate::code::CouponCode;
use crate::coupon::{CouponView, Ending, Held, Redemption};
use crate::error::{Error, Result};
use crate::keys::{CampaignKeys, CouponKeys};
use crate::lease::{self, Ownership};
use crate::ops::coupons::{Order, applies};
use crate::ops::holds::{self, Turns};
use crate::ops::orders::{self, Slots, Terms};
use crate::store::{SMALL_COUNTER_LIMIT, Store, read_counter};
use crate::time::render;
use jiff::Timestamp;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedemptionRequest {
    pub code: String,
    pub order: Order,
    /// The user the checkout acts for (see [`Caller::acting_for`]).
    #[serde(default)]
    pub user_id: Option<String>,
}

/// A redemption, and whether it repeats an earlier answer for the same order.
#[derive(Debug, Clone)]
pub struct Redeemed {
    pub redemption: Redemption,
    pub replayed: bool,
}

/// Redeems `request.code` for its order, by its holder or by the checkout
/// acting for them (users only where the campaign allows it).
pub async fn redeem(
    store: &impl Store,
    caller: impl Into<Caller>,
    request: RedemptionRequest,
    now: Timestamp,
) -> Result<Redeemed> {
    let acting = caller.into().acting_for(request.user_id.as_deref())?;
    let user = &acting.user;
    let order_id = request.order.required_id()?.to_owned();
    request.order.validate()?;
    let asker = Some(Asker { user, now });
    // The order's slots ride in the coupon's first read, with generation
    // 0's lock.
    let code = CouponCode::parse(&request.code).ok_or(Error::CouponNotFound)?;
    let mut also = Slots::keys(user, &order_id);
    also.push(CouponKeys::new(&code).lock(0));
    let turn_keys = Turns::keys(&code, 0);
    let turns_at = also.len();
    also.extend(turn_keys);
    let (held, mut slots) = load_held_with(store, &request.code, asker, also).await?;
    if !acting.by_checkout && !held.campaign.redeemable_by_users {
        return Err(Error::CheckoutRequired);
    }
    let first_turns = slots.split_off(turns_at.min(slots.len()));
    let first_lock = slots.pop().flatten();
    let slots = Slots::decode(store, user, &order_id, slots).await?;
    if let Some(ending) = &held.ending {
        return replay(&slots, &held, ending, &request.order);
    }
    // A redemption of this generation still running, or dead a lease ago at
    // most: wait for it before taking a slot of the order, so retries do
    // not use the order's slots up while its lock lapses.
    let lock = CouponKeys::new(&held.code).lock(held.generation);
    let locked = match held.generation {
        0 => first_lock.is_some(),
        _ => store.get(&lock).await?.is_some(),
    };
    if locked && lease::lapsed(store, &lock, 1, now).await? != Ownership::Lapsed {
        return Err(Error::RequestInProgress);
    }
    let discount = applies(&held, &request.order, now).map_err(Error::from)?;
    let keys = CouponKeys::new(&held.code);
    if held.generation > 0 && cancelled_earlier(store, &keys, held.generation, &order_id).await? {
        return Err(Error::RedemptionCancelled);
    }
    // On a campaign with holds, a coupon another order holds is refused
    // before anything is taken (see `holds`).
    let terms = Terms::of(&request.order);
    let turns = match held.campaign.hold_seconds {
        Some(_) => {
            let mut turns = Turns::of(store, &code, held.generation, first_turns).await?;
            holds::precheck(store, &mut turns, &order_id, &terms, now).await?;
            Some(turns)
        }
        None => None,
    };
    // The order's room for it: a slot written with the ending.
    let code = held.code.to_string();
    let coupon = orders::Use {
        code: &code,
        generation: held.generation,
        campaign: &held.campaign.id,
        coupons_per_order: held.campaign.coupons_per_order,
        discount,
    };
    let taken = orders::take(store, slots, &request.order, &coupon, now).await?;
    // Its turn of the coupon's holds: after every hold and redemption before.
    let turn = match turns {
        None => None,
        Some(turns) => match holds::take(store, turns, &order_id, &terms, now).await {
            Ok(turn) => Some(turn),
            Err(e) => {
                taken.give_up(store).await;
                return Err(e);
            }
        },
    };
    let give_up = async || {
        taken.give_up(store).await;
        if let Some(turn) = &turn {
            turn.give_up(store).await;
        }
    };
    let end_key = keys.end(held.generation);
    // Until the ending is written, a refusal or failure gives the slot up.
    let decided = async {
        let owned = lease::own(store, &keys.lock(held.generation), 1, now).await?;
        // Someone else decides this generation's end, or a lapsed owner may
        // have: answer what they decided.
        if !matches!(owned, Ownership::Owned(1)) {
            match store.get(&end_key).await? {
                Some(bytes) => {
                    let ending = super::decode(&end_key, &bytes)?;
                    // Read again: a racing copy of this order may have written its slot.
                    let slots = Slots::read(store, user, &order_id).await?;
                    return Ok(Some(replay(&slots, &held, &ending, &request.order)));
                }
                None if owned == Ownership::Busy => return Err(Error::RequestInProgress),
                None => {}
            }
        }
        Ok(None)
    };
    match decided.await {
        Ok(None) => {}
        Ok(Some(answer)) => {
            if answer.is_err() {
                give_up().await;
            }
            return answer;
        }
        Err(e) => {
            give_up().await;
            return Err(e);
        }
    }
    let redemption = Redemption {
        code: held.code.to_string(),
        order_id,
        discount_amount: discount,
        payable_amount: request.order.amount.saturating_sub(discount),
        redeemed_at: render(now, &held.zone),
    };
    // Counted with the ending, in one write (see `ledger`), unless the
    // freeze is on: the ledger's own increment tells (see `brake`). The lock
    // then lapses as a dead redeemer's would.
    let stamp = Stamp::for_order(&acting, discount.minor(), &redemption.order_id, now);
    let mut writes = taken.writes();
    writes.push((end_key, encode(&Ending::Redeemed(redemption.clone()))));
    writes.extend(
        turn.as_ref()
            .and_then(|turn| turn.redeemed(&redemption.order_id)),
    );
    let written = CampaignKeys::new(&held.campaign.id)
        .redemptions(held.shard())
        .record_unless_braked(store, writes, &held.code, held.generation, &stamp)
        .await?;
    if !written {
        give_up().await;
        return Err(Error::RedemptionsFrozen);
    }
    Ok(Redeemed {
        redemption,
        replayed: false,
    })
}

/// Whether `order_id` redeemed an earlier generation (whose redemption was
/// then cancelled). One round trip, only for coupons that had a cancellation.
async fn cancelled_earlier(
    store: &impl Store,
    keys: &CouponKeys,
    generation: i64,
    order_id: &str,
) -> Result<bool> {
    let ends: Vec<String> = (0..generation).map(|g| keys.end(g)).collect();
    for (key, bytes) in ends.iter().zip(store.get_many(&ends).await?) {
        if let Some(bytes) = bytes
            && matches!(super::decode(key, &bytes)?, Ending::Redeemed(r) if r.order_id == order_id)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The answer for a generation that has already ended, if `order` is sent
/// under the terms it was redeemed under (as the order's `slots` say).
fn replay(slots: &Slots, held: &Held, ending: &Ending, order: &Order) -> Result<Redeemed> {
    let order_id = order.required_id()?;
    let answer = settled(ending, order_id)?;
    let terms = slots.terms_of(&held.code.to_string(), held.generation);
    if terms.is_some_and(|t| t != orders::Terms::of(order)) {
        return Err(Error::OrderTermsChanged);
    }
    Ok(answer)
}

/// The answer for a generation that has already ended.
fn settled(ending: &Ending, order_id: &str) -> Result<Redeemed> {
    match ending {
        Ending::Redeemed(r) if r.order_id == order_id => Ok(Redeemed {
            redemption: r.clone(),
            replayed: true,
        }),
        Ending::Redeemed(_) => Err(Error::AlreadyRedeemed),
        Ending::Expired { .. } => Err(Error::Expired),
    }
}

/// Undoes the redemption of `code` by `order_id`: the coupon is issued again,
/// or expired if it is past its expiry. Repeating it is harmless.
pub async fn cancel(
    store: &impl Store,
    code: &str,
    order_id: &str,
    by: Actor,
    now: Timestamp,
) -> Result<CouponView> {
    let held = load_held(store, code, None).await.map_err(|e| match e {
        Error::CouponNotFound => Error::RedemptionNotFound,
        other => other,
    })?;
    let keys = CouponKeys::new(&held.code);
    let generation = held.generation;
    match &held.ending {
        Some(Ending::Redeemed(r)) if r.order_id == order_id => {
            // The generation counter is read beside other keys: keep it small.
            if generation + 1 >= SMALL_COUNTER_LIMIT {
                return Err(Error::Internal(format!(
                    "coupon {code} has reached {SMALL_COUNTER_LIMIT} generations"
                )));
            }
            match lease::own(store, &keys.cancel(generation), 1, now).await? {
                Ownership::Owned(owner) => finish_cancel(store, &held, owner, by, now).await?,
                Ownership::Busy | Ownership::Lapsed => {
                    if read_counter(store, &keys.generation()).await? <= generation {
                        return Err(Error::RequestInProgress);
                    }
                }
            }
        }
        // Cancelled already: a later generation exists (revivals may have
        // voided expirations in between).
        _ if generation > 0 && cancelled_earlier(store, &keys, generation, order_id).await? => {}
        _ => return Err(Error::RedemptionNotFound),
    }
    // Only now that the redemption is undone may the order count it no more.
    let holder = UserId(held.record.user_id.clone());
    orders::release(store, &holder, order_id, &held.code.to_string()).await?;
    // Past its expiry, the next generation is recorded expired at once: the
    // sweep may have walked its month already. Every path does it, so a
    // canceller that died before it is completed by the retry.
    let after = load_held(store, code, None).await?;
    if expire_if_due(store, &after, now).await? {
        return Ok(load_held(store, code, None).await?.view(now));
    }
    Ok(after.view(now))
}

/// Cancels `held`'s redemption as attempt `owner` of its cancel lease: counts
/// it (with its marker, in one write), then moves the coupon to its next
/// generation. What a lapsed owner did first is read, not done again.
async fn finish_cancel(
    store: &impl Store,
    held: &Held,
    owner: i64,
    by: Actor,
    now: Timestamp,
) -> Result<()> {
    let keys = CouponKeys::new(&held.code);
    let generation = held.generation;
    let marker = keys.cancelled(generation);
    // The discount it gives back, for the cancels ledger's total.
    let (amount, order) = match &held.ending {
        Some(Ending::Redeemed(r)) => (r.discount_amount.minor(), Some(r.order_id.clone())),
        _ => (0, None),
    };
    let stamp = Stamp {
        amount,
        at: now,
        by,
        order,
    };
    if owner == 1 || store.get(&marker).await?.is_none() {
        CampaignKeys::new(&held.campaign.id)
            .cancels(held.shard())
            .record(
                store,
                (marker, b"1".to_vec()),
                &held.code,
                generation,
                &stamp,
            )
            .await?;
    }
    // The stored counter lags the generation in play by the voided
    // expirations; a lapsed owner may have moved it already.
    let stored = read_counter(store, &keys.generation()).await?;
    if stored <= generation {
        store
            .increment(&keys.generation(), generation + 1 - stored)
            .await?;
    }
    Ok(())
}

/// Finishes the cancel a ledger entry records, if its canceller died after
/// counting it: the sweep settling the cancels calls this. `false` while a
/// canceller may still run.
pub(crate) async fn confirm_cancel(
    store: &impl Store,
    entry: &[u8],
    now: Timestamp,
) -> Result<bool> {
    let Some(Entry {
        code, generation, ..
    }) = Entry::parse(entry)
    else {
        return Err(Error::Internal(format!("a cancel entry reads {entry:?}")));
    };
    let held = load_held(store, &code, None).await?;
    if held.generation > generation {
        return Ok(true);
    }
    let keys = CouponKeys::new(&held.code);
    match lease::own(store, &keys.cancel(generation), 1, now).await? {
        Ownership::Owned(owner) => {
            finish_cancel(store, &held, owner.max(2), Actor::Sweep, now).await?
        }
        Ownership::Busy | Ownership::Lapsed => return Ok(false),
    }
    expire_if_due(store, &load_held(store, &code, None).await?, now).await?;
    Ok(true)
}

/// Records `held`'s generation expired if it is past its expiry and has no
/// ending; whether this call did.
async fn expire_if_due(store: &impl Store, held: &Held, now: Timestamp) -> Result<bool> {
    let expires_at = held.expires_at();
    if held.ending.is_some() || now < expires_at {
        return Ok(false);
    }
    let keys = CouponKeys::new(&held.code);
    match lease::own(store, &keys.lock(held.generation), 1, now).await? {
        Ownership::Owned(1) => {}
        // A lapsed owner may have written its ending.
        Ownership::Owned(_) if store.get(&keys.end(held.generation)).await?.is_none() => {}
        _ => return Ok(false),
    }
    let ending = Ending::Expired {
        at: expires_at,
        swept_at: Some(now),
        revision: Some(held.dating.revision),
    };
    CampaignKeys::new(&held.campaign.id)
        .expirations(held.dating.epoch)
        .record(
            store,
            (keys.end(held.generation), encode(&ending)),
            &held.code,
            held.generation,
            &Stamp {
                amount: 0,
                at: now,
                by: Actor::Sweep,
                order: None,
            },
        )
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::CampaignId;
    use crate::code::CouponCode;
    use crate::error::Reason;
    use crate::ops::campaigns::{create, get};
    use crate::ops::claim::{ClaimRequest, claim};
    use crate::ops::expire::{ExpirationRequest, sweep};
    use crate::ops::testing::{campaign, ts};
    use crate::store::memory::MemoryStore;
    use futures::executor::block_on;
    use futures::future::join_all;

    const NOW: &str = "2028-02-10T10:00:00+08:00";

    /// A store with campaign "c" and one coupon held by alice; returns its code.
    fn setup() -> (MemoryStore, UserId, String) {
        setup_with(campaign("c"))
    }

    fn setup_with(c: crate::campaign::Campaign) -> (MemoryStore, UserId, String) {
        let store = MemoryStore::default();
        let alice = UserId("alice".into());
        let code = block_on(async {
            create(&store, c, crate::ops::testing::setup_time())
                .await
                .expect("campaign");
            let request = ClaimRequest {
                campaign_id: CampaignId::parse("c").expect("id"),
            };
            let code = CouponCode::from_random([9; crate::code::RANDOM_BYTES]);
            claim(&store, &alice, "k", request, ts(NOW), code)
                .await
                .expect("claim")
                .coupon
                .code
        });
        (store, alice, code)
    }

    fn order(id: &str, amount: i64) -> Order {
        Order {
            id: Some(id.into()),
            amount: crate::money::Amount::new(amount).expect("amount"),
            currency: crate::money::Currency::parse("CNY").expect("currency"),
            categories: vec![],
            lines: vec![],
        }
    }

    fn redemption(code: &str, order_id: &str) -> RedemptionRequest {
        RedemptionRequest {
            code: code.into(),
            order: order(order_id, 3_000),
            user_id: None,
        }
    }

    fn stats(store: &MemoryStore) -> crate::ops::campaigns::Stats {
        block_on(get(store, &CampaignId::parse("c").expect("id")))
            .expect("stats")
            .stats
    }

    #[test]
    fn only_the_checkout_redeems_unless_the_campaign_lets_users() {
        let mut checkout_only = campaign("c");
        checkout_only.redeemable_by_users = false;
        let (store, alice, code) = setup_with(checkout_only);
        let by_user = block_on(redeem(&store, &alice, redemption(&code, "o1"), ts(NOW)));
        assert_eq!(by_user.err(), Some(Error::CheckoutRequired));
        // The checkout acts for the holder only: another user's name finds nothing.
        let for_bob = RedemptionRequest {
            user_id: Some("bob".into()),
            ..redemption(&code, "o1")
        };
        let stolen = block_on(redeem(&store, Caller::Checkout, for_bob, ts(NOW)));
        assert_eq!(stolen.err(), Some(Error::CouponNotFound));
        let for_alice = RedemptionRequest {
            user_id: Some("alice".into()),
            ..redemption(&code, "o1")
        };
        let done = block_on(redeem(&store, Caller::Checkout, for_alice, ts(NOW)));
        assert!(!done.expect("redeemed by the checkout").replayed);
    }

    #[test]
    fn a_redemption_is_exactly_once_per_order() {
        let (store, alice, code) = setup();
        block_on(async {
            let first = redeem(&store, &alice, redemption(&code, "o1"), ts(NOW))
                .await
                .expect("redeem");
            assert!(!first.replayed);
            assert_eq!(first.redemption.discount_amount.minor(), 500);
            assert_eq!(first.redemption.payable_amount.minor(), 2_500);
            let again = redeem(&store, &alice, redemption(&code, "o1"), ts(NOW))
                .await
                .expect("replay");
            assert!(again.replayed);
            assert_eq!(again.redemption, first.redemption);
            let other = redeem(&store, &alice, redemption(&code, "o2"), ts(NOW)).await;
            assert_eq!(other.unwrap_err(), Error::AlreadyRedeemed);
        });
        assert_eq!(stats(&store).redeemed, 1);
    }

    #[test]
    fn racing_orders_redeem_a_coupon_once() {
        let (store, alice, code) = setup();
        let orders: Vec<String> = (0..12).map(|i| format!("o{i}")).collect();
        let results = block_on(join_all(
            orders
                .iter()
                .map(|o| redeem(&store, &alice, redemption(&code, o), ts(NOW))),
        ));
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        for r in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, Error::AlreadyRedeemed | Error::RequestInProgress),
                    "{e:?}"
                );
            }
        }
        assert_eq!(stats(&store).redeemed, 1);
    }

    #[test]
    fn a_cancelled_redemption_frees_the_coupon_for_another_order() {
        let (store, alice, code) = setup();
        block_on(async {
            redeem(&store, &alice, redemption(&code, "o1"), ts(NOW))
                .await
                .expect("redeem");
            assert_eq!(
                cancel(&store, &code, "o2", Actor::Operator, ts(NOW))
                    .await
                    .unwrap_err(),
                Error::RedemptionNotFound
            );
            let view = cancel(&store, &code, "o1", Actor::Operator, ts(NOW))
                .await
                .expect("cancel");
            assert_eq!(view.state, crate::coupon::CouponState::Issued);
            // Repeating the cancellation is harmless.
            cancel(&store, &code, "o1", Actor::Operator, ts(NOW))
                .await
                .expect("cancel again");
        });
        assert_eq!(stats(&store).redeemed, 0);
        block_on(async {
            redeem(&store, &alice, redemption(&code, "o2"), ts(NOW))
                .await
                .expect("second order");
        });
        assert_eq!(stats(&store).redeemed, 1);
    }

    #[test]
    fn nobody_but_the_holder_sees_or_redeems_a_coupon() {
        let (store, _, code) = setup();
        let mallory = UserId("mallory".into());
        let stolen = block_on(redeem(&store, &mallory, redemption(&code, "o1"), ts(NOW)));
        assert_eq!(stolen.unwrap_err(), Error::CouponNotFound);
    }

    #[test]
    fn rules_are_checked_before_anything_changes() {
        let (store, alice, code) = setup();
        block_on(async {
            let small = RedemptionRequest {
                code: code.clone(),
                order: order("o1", 1_999),
                user_id: None,
            };
            let refused = redeem(&store, &alice, small, ts(NOW)).await;
            assert_eq!(
                refused.unwrap_err(),
                Error::RuleFailed(Reason::BelowMinOrder)
            );
            let mut usd = order("o1", 3_000);
            usd.currency = crate::money::Currency::parse("USD").expect("currency");
            let refused = redeem(
                &store,
                &alice,
                RedemptionRequest {
                    code: code.clone(),
                    order: usd,
                    user_id: None,
                },
                ts(NOW),
            )
            .await;
            assert_eq!(
                refused.unwrap_err(),
                Error::RuleFailed(Reason::CurrencyMismatch)
            );
            redeem(&store, &alice, redemption(&code, "o1"), ts(NOW))
                .await
                .expect("still redeemable");
        });
    }

    #[test]
    fn after_expiry_nothing_redeems_with_or_without_the_sweep() {
        let (store, alice, code) = setup();
        let last_ms = ts("2028-02-29T23:59:59.999+08:00");
        let end = ts("2028-03-01T00:00:00+08:00");
        block_on(async {
            assert_eq!(
                redeem(&store, &alice, redemption(&code, "o1"), end)
                    .await
                    .unwrap_err(),
                Error::Expired
            );
            let swept = sweep(&store, ExpirationRequest::default(), end, || false)
                .await
                .expect("sweep");
            assert_eq!(swept.expired, 1);
            assert_eq!(
                redeem(&store, &alice, redemption(&code, "o1"), last_ms)
                    .await
                    .unwrap_err(),
                Error::Expired
            );
        });
        assert_eq!(stats(&store).expired, 1);
    }

    #[test]
    fn a_redemption_racing_the_sweep_ends_one_way_only() {
        for sweep_first in [false, true] {
            let (store, alice, code) = setup();
            let at = ts("2028-02-29T23:59:59.999+08:00");
            let end = ts("2028-03-01T00:00:00+08:00");
            let (redeemed, swept) = block_on(async {
                let r = redeem(&store, &alice, redemption(&code, "o1"), at);
                let s = sweep(
                    &store,
                    ExpirationRequest {
                        as_of: Some(end),
                        ..Default::default()
                    },
                    end,
                    || false,
                );
                if sweep_first {
                    let (s, r) = futures::future::join(s, r).await;
                    (r, s)
                } else {
                    futures::future::join(r, s).await
                }
            });
            let swept = swept.expect("sweep").expired;
            assert_eq!(
                u64::from(redeemed.is_ok()) + swept,
                1,
                "sweep_first={sweep_first}"
            );
            let s = stats(&store);
            assert_eq!(s.redeemed + s.expired, 1);
        }
    }

    #[test]
    fn cancelling_after_expiry_leaves_the_coupon_expired() {
        let (store, alice, code) = setup();
        let end = ts("2028-03-01T00:00:00+08:00");
        block_on(async {
            redeem(&store, &alice, redemption(&code, "o1"), ts(NOW))
                .await
                .expect("redeem");
            let view = cancel(&store, &code, "o1", Actor::Operator, end)
                .await
                .expect("cancel");
            assert_eq!(view.state, crate::coupon::CouponState::Expired);
        });
        let s = stats(&store);
        assert_eq!((s.redeemed, s.expired), (0, 1));
    }

    #[test]
    fn a_cancel_cut_off_after_moving_the_generation_is_completed_by_its_retry() {
        let (store, alice, code) = setup();
        let end = ts("2028-03-01T00:00:00+08:00");
        let keys = CouponKeys::new(&CouponCode::parse(&code).expect("code"));
        block_on(async {
            redeem(&store, &alice, redemption(&code, "o1"), ts(NOW))
                .await
                .expect("redeem");
            // A canceller after the month end took the cancel, moved the
            // generation and died before recording the expiry.
            store.increment(&keys.cancel(0), 1).await.expect("owned");
            store.increment(&keys.generation(), 1).await.expect("moved");
            let later = end + crate::lease::LEASE;
            let view = cancel(&store, &code, "o1", Actor::Operator, later)
                .await
                .expect("retry");
            assert_eq!(view.state, crate::coupon::CouponState::Expired);
            let held = load_held(&store, &code, None).await.expect("held");
            assert!(
                matches!(held.ending, Some(Ending::Expired { .. })),
                "recorded, so a sweep that walked the month already misses nothing"
            );
        });
    }

    #[test]
    fn the_discount_given_is_what_redemptions_gave_less_cancels_once_settled() {
        let store = MemoryStore::default();
        let mut c = campaign("p");
        c.discount = crate::api::parse_json(
            br#"{"kind": "percent", "basis_points": 1000, "max_amount": 1000}"#,
        )
        .expect("discount");
        c.min_order_amount = crate::money::Amount::ZERO;
        let id = c.id.clone();
        let t0 = ts(NOW);
        block_on(async {
            create(&store, c, crate::ops::testing::setup_time())
                .await
                .expect("campaign");
            // 10% of 3,000, 5,000 and 20,000 (capped at 1,000); then the
            // 5,000 order is cancelled.
            for (n, amount) in [(1u8, 3_000), (2, 5_000), (3, 20_000)] {
                let user = UserId(format!("u{n}"));
                let request = ClaimRequest {
                    campaign_id: id.clone(),
                };
                let code = CouponCode::from_random([n; crate::code::RANDOM_BYTES]);
                let code = claim(&store, &user, "k", request, t0, code)
                    .await
                    .expect("claim")
                    .coupon
                    .code;
                let request = RedemptionRequest {
                    code: code.clone(),
                    order: order(&format!("o{n}"), amount),
                    user_id: None,
                };
                redeem(&store, &user, request, t0).await.expect("redeemed");
                if n == 2 {
                    cancel(&store, &code, "o2", Actor::Operator, t0)
                        .await
                        .expect("cancelled");
                }
            }
            let stats = get(&store, &id).await.expect("stats").stats;
            assert_eq!(
                (
                    stats.redeemed,
                    stats.discount_given,
                    stats.discount_unsettled
                ),
                (2, 0, 4)
            );
            let settled = t0 + lease::LEASE;
            sweep(&store, ExpirationRequest::default(), settled, || false)
                .await
                .expect("sweep");
            let stats = get(&store, &id).await.expect("stats").stats;
            assert_eq!(
                (
                    stats.redeemed,
                    stats.discount_given,
                    stats.discount_unsettled
                ),
                (2, 300 + 1_000, 0)
            );
        });
    }

    #[test]
    fn a_cancel_counted_by_a_canceller_that_died_is_finished_by_the_sweep() {
        let (store, alice, code) = setup();
        let t0 = ts(NOW);
        block_on(async {
            redeem(&store, &alice, redemption(&code, "o1"), t0)
                .await
                .expect("redeemed");
            // A canceller owned the cancel and counted it, then its instance
            // died before the coupon moved on; nobody retries it.
            let held = load_held(&store, &code, None).await.expect("held");
            let keys = CouponKeys::new(&held.code);
            lease::own(&store, &keys.cancel(0), 1, t0)
                .await
                .expect("own");
            CampaignKeys::new(&held.campaign.id)
                .cancels(held.shard())
                .record(
                    &store,
                    (keys.cancelled(0), b"1".to_vec()),
                    &held.code,
                    0,
                    &Stamp {
                        amount: 500,
                        at: t0,
                        by: Actor::Operator,
                        order: Some("o1".into()),
                    },
                )
                .await
                .expect("counted");
            let swept_at = |at| sweep(&store, ExpirationRequest::default(), at, || false);
            // The canceller may still run: the sweep leaves it.
            swept_at(t0).await.expect("sweep");
            let state = |held: Held| held.state(t0);
            let held = load_held(&store, &code, None).await.expect("held");
            assert_eq!(state(held), crate::coupon::CouponState::Redeemed);
            // A lease later it is dead: the sweep finishes its cancel.
            let later = t0 + lease::LEASE;
            swept_at(later).await.expect("sweep");
            let held = load_held(&store, &code, None).await.expect("held");
            assert_eq!(state(held), crate::coupon::CouponState::Issued);
            let stats = get(&store, &CampaignId::parse("c").expect("id")).await;
            assert_eq!(stats.expect("stats").stats.redeemed, 0);
            // Counted once: a retry of the cancel changes nothing.
            cancel(&store, &code, "o1", Actor::Operator, later)
                .await
                .expect("cancelled");
            let stats = get(&store, &CampaignId::parse("c").expect("id")).await;
            assert_eq!(stats.expect("stats").stats.redeemed, 0);
        });
    }

    fn set_frozen_at(store: &MemoryStore, frozen: bool, at: Timestamp) -> bool {
        let id = CampaignId::parse("c").expect("id");
        block_on(crate::ops::campaigns::set_frozen(
            store,
            &id,
            frozen,
            Default::default(),
            at,
        ))
        .expect("freeze")
        .frozen
    }

    #[test]
    fn a_freeze_stops_redemptions_that_passed_the_fast_path_until_the_unfreeze() {
        let (store, alice, code) = setup();
        let t0 = ts(NOW);
        assert!(set_frozen_at(&store, true, t0));
        // Read while frozen: refused before any write, and validation says so.
        let refused = block_on(redeem(&store, &alice, redemption(&code, "o1"), t0));
        assert_eq!(refused.unwrap_err(), Error::RedemptionsFrozen);
        let held = block_on(load_held(&store, &code, None)).expect("held");
        let order = order("o1", 3_000);
        assert_eq!(applies(&held, &order, t0), Err(Reason::RedemptionsFrozen));
        // A redemption that read the campaign before the freeze (a stale
        // transition counter) meets the brake at its ledger increment.
        let freeze = CampaignKeys::new(&held.campaign.id).freeze();
        block_on(store.increment(&freeze, 1)).expect("stale counter");
        let late = block_on(redeem(&store, &alice, redemption(&code, "o1"), t0));
        assert_eq!(late.unwrap_err(), Error::RedemptionsFrozen);
        let keys = CouponKeys::new(&held.code);
        assert_eq!(
            block_on(store.get(&keys.end(0))),
            Ok(None),
            "an ending was written"
        );
        block_on(store.increment(&freeze, 1)).expect("frozen again");
        assert!(!set_frozen_at(&store, false, t0));
        // Its lock lapses as a dead redeemer's would: a lease later the
        // coupon redeems, once.
        let soon = block_on(redeem(&store, &alice, redemption(&code, "o1"), t0));
        assert_eq!(soon.unwrap_err(), Error::RequestInProgress);
        let later = t0 + lease::LEASE;
        let redeemed = block_on(redeem(&store, &alice, redemption(&code, "o1"), later));
        assert!(!redeemed.expect("after the unfreeze").replayed);
        // The refused position is settled empty: counted exactly once.
        block_on(sweep(
            &store,
            ExpirationRequest::default(),
            later + lease::LEASE,
            || false,
        ))
        .expect("sweep");
        assert_eq!(stats(&store).redeemed, 1);
    }

    #[test]
    fn once_a_freeze_is_acknowledged_no_redemption_is() {
        let store = MemoryStore::default();
        let id = CampaignId::parse("c").expect("id");
        let mut c = campaign("c");
        c.stock = 200;
        c.shards = 4;
        let codes: Vec<(UserId, String)> = block_on(async {
            create(&store, c, crate::ops::testing::setup_time())
                .await
                .expect("campaign");
            let mut codes = Vec::new();
            for i in 0..100u8 {
                let user = UserId(format!("u{i}"));
                let request = ClaimRequest {
                    campaign_id: id.clone(),
                };
                let code = CouponCode::from_random([i; crate::code::RANDOM_BYTES]);
                let claimed = claim(&store, &user, "k", request, ts(NOW), code)
                    .await
                    .expect("claim");
                codes.push((user, claimed.coupon.code));
            }
            codes
        });
        let acknowledged = std::cell::Cell::new(false);
        let (results, at_ack) = block_on(async {
            let store = &store;
            let storm = join_all(codes.iter().enumerate().map(|(i, (user, code))| {
                let acknowledged = &acknowledged;
                async move {
                    let result =
                        redeem(store, user, redemption(code, &format!("o{i}")), ts(NOW)).await;
                    (result, acknowledged.get())
                }
            }));
            let freeze = async {
                let recorded = || {
                    let increments = store.increments.borrow();
                    increments
                        .iter()
                        .filter(|(k, d)| k.contains(":redemptions:") && *d == 1)
                        .count()
                };
                while recorded() < 30 {
                    crate::store::memory::yield_now().await;
                }
                let view = crate::ops::campaigns::set_frozen(
                    store,
                    &id,
                    true,
                    Default::default(),
                    ts(NOW),
                )
                .await
                .expect("freeze");
                acknowledged.set(true);
                view.stats.redeemed
            };
            futures::future::join(storm, freeze).await
        });
        let ok = results.iter().filter(|(r, _)| r.is_ok()).count() as i64;
        assert!(
            ok > 0 && ok < 100,
            "the freeze must land inside the storm: {ok} redeemed"
        );
        // Counted at the acknowledgement: redemptions in flight past their
        // increment included, and nothing beyond.
        assert!(
            ok <= at_ack,
            "{ok} redeemed, {at_ack} counted when the freeze was acknowledged"
        );
        for (result, after_ack) in &results {
            match result {
                Ok(_) => {}
                Err(e) => assert_eq!(*e, Error::RedemptionsFrozen, "after ack: {after_ack}"),
            }
        }
        // Every refusal wrote no record, only its empty marker: one sweep
        // settles the ledgers to exactly the redemptions acknowledged.
        block_on(sweep(&store, ExpirationRequest::default(), ts(NOW), || {
            false
        }))
        .expect("sweep");
        assert_eq!(stats(&store).redeemed, ok);
        let ended = store
            .values
            .borrow()
            .keys()
            .filter(|k| k.starts_with("k:") && k.ends_with(":end:0"))
            .count() as i64;
        assert_eq!(ended, ok);
    }
}
