//! Holds: the shop's checkout sets a coupon aside for one order while the
//! order's payment runs, for the campaign's [`Campaign::hold_seconds`]. The
//! hold ends on its own when its time is up (never after the coupon
//! expires): derived when read, with no call and no sweep.
//!
//! A coupon generation's holds, and on a campaign with holds its redemptions
//! too, take numbered turns with an increment (`k:{code}:turns:{g}:n`),
//! decided as an order's slots are (see `ops::orders`): the request in turn
//! `t` decides looking only at turns `1..t`, once each is written (or its
//! taker is dead, a lease after it was first seen empty), then writes its
//! own: the hold with its order and end; the redemption's, in the same
//! `set_many` as the coupon's ending and after it; void if it was refused.
//! So of two holds, or of a hold and another order's redemption, the later
//! turn sees the earlier one and never both are acknowledged; the holding
//! order's own redemption takes a later turn that finds its hold. Releasing
//! writes the hold's turn void. Campaigns without holds take no turns.
//!
//! [`Campaign::hold_seconds`]: crate::campaign::Campaign::hold_seconds

use super::coupons::{Order, applies};
use super::ledger::{Actor, Stamp};
use super::orders::{self, Slots, Terms, Use};
use super::{Asker, decode, encode, load_held_with};
use crate::auth::Caller;
use crate::code::CouponCode;
use crate::error::{Error, Result};
use crate::keys::{CampaignKeys, CouponKeys};
use crate::lease::{self, Ownership};
use crate::money::Amount;
use crate::store::{Store, decode_small_counter};
use crate::time::render;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// Turns a coupon generation may take. Past them no hold is taken
/// (`hold_attempts_exhausted`), and a redemption decides on the turns
/// before, which no later hold can follow.
pub const MAX_TURNS: i64 = 64;
/// Turns read with the counter, in the coupon's first read.
const READ_AHEAD: i64 = 4;

/// `POST /holds`: hold `code` for `order`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    pub code: String,
    pub order: Order,
    /// The user the checkout acts for (see [`Caller::acting_for`]).
    #[serde(default)]
    pub user_id: Option<String>,
}

/// A hold as answered: the coupon is the order's until `held_until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    pub code: String,
    pub order_id: String,
    pub held_until: String,
    pub discount_amount: Amount,
    pub payable_amount: Amount,
}

/// A hold, and whether it was taken by an earlier request (200) or now (201).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub hold: Hold,
    pub replayed: bool,
}

/// What a coupon generation's turn holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Turn {
    /// The coupon is the order's until `until` (Unix ms).
    Hold {
        order_id: String,
        terms: Terms,
        until: i64,
    },
    /// The order redeemed the generation (written after its ending).
    Redeemed { order_id: String },
    /// Refused, raced, given up or released.
    Void,
}

/// Keys of one coupon generation's turns.
struct TurnKeys(String);

impl TurnKeys {
    fn new(code: &CouponCode, generation: i64) -> Self {
        TurnKeys(CouponKeys::new(code).turns(generation))
    }
    fn count(&self) -> String {
        format!("{}:n", self.0)
    }
    fn turn(&self, t: i64) -> String {
        format!("{}:{t}", self.0)
    }
}

/// A coupon generation's turns as read (`None`: taken, not written yet).
pub struct Turns {
    keys: TurnKeys,
    turns: Vec<Option<Turn>>,
}

impl Turns {
    /// The keys [`Turns::decode`] reads: the counter and the first turns, to
    /// ride in a batch the caller makes anyway.
    pub fn keys(code: &CouponCode, generation: i64) -> Vec<String> {
        let keys = TurnKeys::new(code, generation);
        let mut wanted = vec![keys.count()];
        wanted.extend((1..=READ_AHEAD).map(|t| keys.turn(t)));
        wanted
    }

    /// The turns from the values of [`Turns::keys`], and one more round trip
    /// if the generation took more.
    pub async fn decode(
        store: &impl Store,
        code: &CouponCode,
        generation: i64,
        mut values: Vec<Option<Vec<u8>>>,
    ) -> Result<Turns> {
        let keys = TurnKeys::new(code, generation);
        if values.len() != 1 + READ_AHEAD as usize {
            return Err(Error::Internal("a coupon's turns were read short".into()));
        }
        let n = match values.remove(0) {
            None => 0,
            Some(bytes) => decode_small_counter(&bytes)
                .ok_or_else(|| Error::Internal(format!("{} is no counter", keys.count())))?,
        }
        .clamp(0, MAX_TURNS);
        values.truncate(n as usize);
        if n > READ_AHEAD {
            let rest: Vec<String> = (READ_AHEAD + 1..=n).map(|t| keys.turn(t)).collect();
            values.extend(store.get_many(&rest).await?);
        }
        let turns = (1..)
            .zip(values)
            .map(|(t, value)| value.map(|bytes| decode(&keys.turn(t), &bytes)).transpose())
            .collect::<Result<_>>()?;
        Ok(Turns { keys, turns })
    }

    /// The turns of `code`'s `generation`: from `first`, the values of
    /// generation 0's [`Turns::keys`], or read on their own for a later one.
    pub async fn of(
        store: &impl Store,
        code: &CouponCode,
        generation: i64,
        first: Vec<Option<Vec<u8>>>,
    ) -> Result<Turns> {
        match generation {
            0 => Turns::decode(store, code, 0, first).await,
            g => Turns::read(store, code, g).await,
        }
    }

    /// The turns of `code`'s `generation`, read on their own.
    pub async fn read(store: &impl Store, code: &CouponCode, generation: i64) -> Result<Turns> {
        let values = store.get_many(&Turns::keys(code, generation)).await?;
        Turns::decode(store, code, generation, values).await
    }

    /// The hold in force at `now`, if any: its order and end.
    pub fn hold_at(&self, now: Timestamp) -> Option<(&str, Timestamp)> {
        live_hold(&self.turns, now).map(|(_, order_id, _, until)| (order_id, until))
    }
}

/// The latest hold of `turns` whose end is after `now`: its index, order,
/// terms and end. Holds exclude each other, so it is the only one (up to the
/// clock skew between the hosts that decided them).
fn live_hold(turns: &[Option<Turn>], now: Timestamp) -> Option<(usize, &str, &Terms, Timestamp)> {
    turns
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, turn)| match turn {
            Some(Turn::Hold {
                order_id,
                terms,
                until,
            }) => {
                let until = Timestamp::from_millisecond(*until).ok()?;
                (until > now).then_some((i, order_id.as_str(), terms, until))
            }
            _ => None,
        })
}

/// Whether `order_id` under `terms` may go on, given the written turns
/// before its own: with the end of its own hold in force, if any.
fn standing(
    turns: &[Option<Turn>],
    order_id: &str,
    terms: &Terms,
    now: Timestamp,
) -> Result<Option<Timestamp>> {
    let redeemed_by_other = turns
        .iter()
        .flatten()
        .any(|turn| matches!(turn, Turn::Redeemed { order_id: o } if o != order_id));
    if redeemed_by_other {
        return Err(Error::AlreadyRedeemed);
    }
    match live_hold(turns, now) {
        None => Ok(None),
        Some((_, holder, held_terms, until)) if holder == order_id => match held_terms == terms {
            true => Ok(Some(until)),
            false => Err(Error::OrderTermsChanged),
        },
        Some((.., until)) => Err(held_until(until, now)),
    }
}

/// `coupon_held`, to retry once the hold ends at `until`.
fn held_until(until: Timestamp, now: Timestamp) -> Error {
    let ms = until.duration_since(now).as_millis().max(0) as u128;
    Error::CouponHeld {
        retry_after: u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX),
    }
}

/// Counts void every turn taken and not written whose taker is dead (a
/// lease after it was first seen); `request_in_progress` if one may still
/// be written.
async fn settle(
    store: &impl Store,
    keys: &TurnKeys,
    turns: &mut [Option<Turn>],
    now: Timestamp,
) -> Result<()> {
    for (t, turn) in (1..).zip(turns.iter_mut()) {
        if turn.is_none() {
            match lease::lapsed(store, &keys.turn(t), 1, now).await? {
                Ownership::Lapsed => *turn = Some(Turn::Void),
                _ => return Err(Error::RequestInProgress),
            }
        }
    }
    Ok(())
}

/// The turn a request took: written with what it decided, or given up.
pub struct Taken {
    /// `None` past [`MAX_TURNS`].
    own: Option<String>,
    /// The end of its order's hold in force, if any.
    pub hold: Option<Timestamp>,
}

impl Taken {
    /// The write that records the redemption of the generation, after its ending.
    pub fn redeemed(&self, order_id: &str) -> Option<(String, Vec<u8>)> {
        let turn = Turn::Redeemed {
            order_id: order_id.to_owned(),
        };
        self.own.as_ref().map(|own| (own.clone(), encode(&turn)))
    }

    /// Gives the turn up: it decided nothing. Best effort: a turn never
    /// written lapses a lease after it is first seen.
    pub async fn give_up(&self, store: &impl Store) {
        if let Some(own) = &self.own {
            let _ = store.set(own, &encode(&Turn::Void)).await;
        }
    }
}

/// Checks `turns` for `order_id` under `terms` without taking one: refuses
/// at once what a turn would be refused, before the caller spends anything.
pub async fn precheck(
    store: &impl Store,
    turns: &mut Turns,
    order_id: &str,
    terms: &Terms,
    now: Timestamp,
) -> Result<Option<Timestamp>> {
    // A hold in force refuses others even while a later turn is unwritten.
    let written: Vec<Option<Turn>> = (turns.turns.iter())
        .map(|turn| turn.clone().or(Some(Turn::Void)))
        .collect();
    standing(&written, order_id, terms, now)?;
    settle(store, &turns.keys, &mut turns.turns, now).await?;
    standing(&turns.turns, order_id, terms, now)
}

/// Takes the next turn for `order_id` under `terms`, after [`precheck`]
/// passed on `turns`, and decides it on every turn before.
pub async fn take(
    store: &impl Store,
    turns: Turns,
    order_id: &str,
    terms: &Terms,
    now: Timestamp,
) -> Result<Taken> {
    let Turns { keys, mut turns } = turns;
    let t = store.increment(&keys.count(), 1).await?;
    let own = (t <= MAX_TURNS).then(|| keys.turn(t));
    let taken = Taken { own, hold: None };
    let before = t.min(MAX_TURNS + 1) - 1;
    let decided = async {
        let missing: Vec<i64> = (1..=before)
            .filter(|&p| turns.get(p as usize - 1).is_none_or(Option::is_none))
            .collect();
        turns.resize(before as usize, None);
        if !missing.is_empty() {
            let wanted: Vec<String> = missing.iter().map(|&p| keys.turn(p)).collect();
            for (&p, value) in missing.iter().zip(store.get_many(&wanted).await?) {
                turns[p as usize - 1] = value.map(|b| decode(&keys.turn(p), &b)).transpose()?;
            }
        }
        settle(store, &keys, &mut turns, now).await?;
        standing(&turns, order_id, terms, now)
    };
    match decided.await {
        Ok(hold) => Ok(Taken { hold, ..taken }),
        Err(e) => {
            taken.give_up(store).await;
            Err(e)
        }
    }
}

/// Puts `request.code` on hold for its order, for the checkout (or the
/// user, where the campaign lets users redeem).
pub async fn hold(
    store: &impl Store,
    caller: impl Into<Caller>,
    request: HoldRequest,
    now: Timestamp,
) -> Result<Holding> {
    let acting = caller.into().acting_for(request.user_id.as_deref())?;
    let user = &acting.user;
    let order_id = request.order.required_id()?.to_owned();
    request.order.validate()?;
    let code = CouponCode::parse(&request.code).ok_or(Error::CouponNotFound)?;
    let asker = Some(Asker { user, now });
    // The order's slots ride in the coupon's first read.
    let mut also = Slots::keys(user, &order_id);
    let turns_at = also.len();
    also.extend(Turns::keys(&code, 0));
    let (held, mut slots) = load_held_with(store, &request.code, asker, also).await?;
    if !acting.by_checkout && !held.campaign.redeemable_by_users {
        return Err(Error::CheckoutRequired);
    }
    let Some(seconds) = held.campaign.hold_seconds else {
        return Err(Error::HoldsNotEnabled);
    };
    let discount = applies(&held, &request.order, now).map_err(Error::from)?;
    let first = slots.split_off(turns_at.min(slots.len()));
    let slots = Slots::decode(store, user, &order_id, slots).await?;
    let mut turns = Turns::of(store, &code, held.generation, first).await?;
    let terms = Terms::of(&request.order);
    let answer = |until: Timestamp, replayed| Holding {
        hold: Hold {
            code: held.code.to_string(),
            order_id: order_id.clone(),
            held_until: render(until, &held.zone),
            discount_amount: discount,
            payable_amount: request.order.amount.saturating_sub(discount),
        },
        replayed,
    };
    // A retry finds its hold in force.
    if let Some(until) = precheck(store, &mut turns, &order_id, &terms, now).await? {
        return Ok(answer(until, true));
    }
    // A coupon the order has no room for could not be redeemed by it.
    let code = held.code.to_string();
    let coupon = Use {
        code: &code,
        generation: held.generation,
        campaign: &held.campaign.id,
        coupons_per_order: held.campaign.coupons_per_order,
        discount,
    };
    orders::fits(&slots, &request.order, &coupon)?;
    let taken = take(store, turns, &order_id, &terms, now).await?;
    let Some(own) = &taken.own else {
        return Err(Error::HoldAttemptsExhausted);
    };
    if let Some(until) = taken.hold {
        // A racing copy of this request holds it in an earlier turn.
        taken.give_up(store).await;
        return Ok(answer(until, true));
    }
    let until = (now + SignedDuration::from_secs(i64::from(seconds))).min(held.expires_at());
    let turn = Turn::Hold {
        order_id: order_id.clone(),
        terms,
        until: until.as_millisecond(),
    };
    let stamp = Stamp::for_order(&acting, discount.minor(), &order_id, now);
    CampaignKeys::new(&held.campaign.id)
        .holds(held.shard())
        .record(
            store,
            (own.clone(), encode(&turn)),
            &held.code,
            held.generation,
            &stamp,
        )
        .await?;
    Ok(answer(until, false))
}

/// What releasing a hold did: `released` is false if the order held nothing
/// in force (a retry of a release, a hold that had ended, or none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Released {
    pub code: String,
    pub order_id: String,
    pub released: bool,
}

/// Releases the hold `order_id` has on `code`, if one is in force.
pub async fn release(
    store: &impl Store,
    code: &str,
    order_id: &str,
    by: Actor,
    now: Timestamp,
) -> Result<Released> {
    let parsed = CouponCode::parse(code).ok_or(Error::CouponNotFound)?;
    let (held, first) = load_held_with(store, code, None, Turns::keys(&parsed, 0)).await?;
    let turns = Turns::of(store, &held.code, held.generation, first).await?;
    let mut released = Released {
        code: held.code.to_string(),
        order_id: order_id.to_owned(),
        released: false,
    };
    if let Some((i, holder, ..)) = live_hold(&turns.turns, now)
        && holder == order_id
    {
        let void = (turns.keys.turn(i as i64 + 1), encode(&Turn::Void));
        let stamp = Stamp {
            amount: 0,
            at: now,
            by,
            order: Some(order_id.to_owned()),
        };
        CampaignKeys::new(&held.campaign.id)
            .releases(held.shard())
            .record(store, void, &held.code, held.generation, &stamp)
            .await?;
        released.released = true;
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserId;
    use crate::campaign::CampaignId;
    use crate::money::Currency;
    use crate::ops::campaigns::{create, get};
    use crate::ops::claim::{ClaimRequest, claim};
    use crate::ops::coupons::{ValidationRequest, validate};
    use crate::ops::redeem::{RedemptionRequest, redeem};
    use crate::ops::testing::{campaign, setup_time, ts};
    use crate::store::memory::MemoryStore;
    use futures::executor::block_on;
    use futures::future::join_all;

    const NOW: &str = "2028-02-10T10:00:00+08:00";
    const HOLD: i64 = 900;

    /// A store with campaign "c" (holds of 15 minutes) and one coupon of alice's.
    fn setup() -> (MemoryStore, String) {
        let store = MemoryStore::default();
        let mut c = campaign("c");
        c.hold_seconds = Some(HOLD as u32);
        let code = block_on(async {
            create(&store, c, setup_time()).await.expect("campaign");
            let request = ClaimRequest {
                campaign_id: CampaignId::parse("c").expect("id"),
            };
            let code = CouponCode::from_random([7; crate::code::RANDOM_BYTES]);
            let alice = UserId("alice".into());
            let claimed = claim(&store, &alice, "k", request, ts(NOW), code).await;
            claimed.expect("claim").coupon.code
        });
        (store, code)
    }

    fn order(id: &str, amount: i64) -> Order {
        Order {
            id: Some(id.into()),
            amount: Amount::new(amount).expect("an amount"),
            currency: Currency::parse("CNY").expect("a currency"),
            categories: vec![],
            lines: vec![],
        }
    }

    fn hold_for(store: &MemoryStore, code: &str, o: &str, at: Timestamp) -> Result<Holding> {
        let request = HoldRequest {
            code: code.into(),
            order: order(o, 3_000),
            user_id: Some("alice".into()),
        };
        block_on(hold(store, Caller::Checkout, request, at))
    }

    async fn redeem_for(store: &MemoryStore, code: &str, o: &str, at: Timestamp) -> Result<bool> {
        let request = RedemptionRequest {
            code: code.into(),
            order: order(o, 3_000),
            user_id: Some("alice".into()),
        };
        let redeemed = redeem(store, Caller::Checkout, request, at).await?;
        Ok(redeemed.replayed)
    }

    fn validation(store: &MemoryStore, code: &str, o: &str, at: Timestamp) -> (bool, Value) {
        let request = ValidationRequest {
            code: code.into(),
            order: order(o, 3_000),
            user_id: Some("alice".into()),
        };
        let v = block_on(validate(store, Caller::Checkout, request, at)).expect("validation");
        (v.valid, serde_json::to_value(&v).expect("json"))
    }
    type Value = serde_json::Value;

    fn redeemed(store: &MemoryStore) -> i64 {
        block_on(get(store, &CampaignId::parse("c").expect("id")))
            .expect("stats")
            .stats
            .redeemed
    }

    #[test]
    fn of_orders_racing_to_hold_a_coupon_exactly_one_wins() {
        let (store, code) = setup();
        let now = ts(NOW);
        let requests = (0..8).map(|i| {
            let request = HoldRequest {
                code: code.clone(),
                order: order(&format!("o{i}"), 3_000),
                user_id: Some("alice".into()),
            };
            hold(&store, Caller::Checkout, request, now)
        });
        let answers = block_on(join_all(requests));
        let won: Vec<&Holding> = answers.iter().flatten().collect();
        assert_eq!(won.len(), 1, "{answers:?}");
        for answer in &answers {
            if let Err(e) = answer {
                assert!(
                    matches!(e, Error::CouponHeld { .. } | Error::RequestInProgress),
                    "{e:?}"
                );
            }
        }
        let winner = won[0].hold.order_id.clone();
        let (valid, body) = validation(&store, &code, &winner, now);
        assert!(valid, "{body}");
        assert_eq!(body["held_until"], "2028-02-10T10:15:00+08:00");
        let (valid, body) = validation(&store, &code, "another", now);
        assert!(!valid);
        assert_eq!(body["reason"], "coupon_held");
        // Every loser that raced took a turn and gave it up: none is left unwritten.
        let turns = block_on(Turns::read(
            &store,
            &CouponCode::parse(&code).expect("a code"),
            0,
        ));
        assert!(turns.expect("turns").turns.iter().all(Option::is_some));
    }

    #[test]
    fn a_hold_refuses_other_orders_until_it_ends_on_its_own() {
        let (store, code) = setup();
        let now = ts(NOW);
        let held = hold_for(&store, &code, "a", now).expect("held");
        assert!(!held.replayed);
        assert_eq!(held.hold.held_until, "2028-02-10T10:15:00+08:00");
        // A retry answers the same hold; it does not extend it.
        let later = now + SignedDuration::from_secs(60);
        let again = hold_for(&store, &code, "a", later).expect("held");
        assert!(again.replayed);
        assert_eq!(again.hold.held_until, held.hold.held_until);
        assert_eq!(
            hold_for(&store, &code, "b", later).err(),
            Some(Error::CouponHeld { retry_after: 840 })
        );
        let by_b = block_on(redeem_for(&store, &code, "b", later));
        assert_eq!(by_b, Err(Error::CouponHeld { retry_after: 840 }));
        // The hold's end, with no call and no sweep: b redeems it.
        let ended = now + SignedDuration::from_secs(HOLD);
        assert_eq!(block_on(redeem_for(&store, &code, "b", ended)), Ok(false));
        assert_eq!(
            block_on(redeem_for(&store, &code, "a", ended)),
            Err(Error::AlreadyRedeemed)
        );
        assert_eq!(redeemed(&store), 1);
    }

    #[test]
    fn a_held_coupon_is_redeemed_by_its_order_exactly_once() {
        let (store, code) = setup();
        let now = ts(NOW);
        hold_for(&store, &code, "a", now).expect("held");
        let attempts = ["a", "b", "a", "b", "a", "c"].map(|o| redeem_for(&store, &code, o, now));
        let answers = block_on(join_all(attempts));
        let fresh = answers.iter().filter(|a| **a == Ok(false)).count();
        assert_eq!(fresh, 1, "{answers:?}");
        for (o, answer) in ["a", "b", "a", "b", "a", "c"].iter().zip(&answers) {
            match (o, answer) {
                (_, Ok(_)) => assert_eq!(*o, "a"),
                (_, Err(Error::RequestInProgress)) => {}
                (&"a", Err(e)) => panic!("the holder was refused: {e:?}"),
                (_, Err(e)) => assert!(
                    matches!(e, Error::CouponHeld { .. } | Error::AlreadyRedeemed),
                    "{e:?}"
                ),
            }
        }
        // The holder's retry replays; the hold, redeemed, holds nothing more.
        assert_eq!(block_on(redeem_for(&store, &code, "a", now)), Ok(true));
        assert_eq!(
            block_on(redeem_for(&store, &code, "b", now)),
            Err(Error::AlreadyRedeemed)
        );
        assert_eq!(redeemed(&store), 1);
    }

    #[test]
    fn a_hold_and_another_orders_redemption_are_never_both_acknowledged() {
        // Every interleaving the memory store's yields give, from each side first.
        for a_first in [true, false] {
            let (store, code) = setup();
            let now = ts(NOW);
            let request = HoldRequest {
                code: code.clone(),
                order: order("a", 3_000),
                user_id: Some("alice".into()),
            };
            let held = hold(&store, Caller::Checkout, request, now);
            let redeemed = redeem_for(&store, &code, "b", now);
            let (held, redeemed) = match a_first {
                true => block_on(futures::future::join(held, redeemed)),
                false => {
                    let (r, h) = block_on(futures::future::join(redeemed, held));
                    (h, r)
                }
            };
            assert!(held.is_err() || redeemed.is_err(), "{held:?} {redeemed:?}");
            if held.is_ok() {
                // The holder's order then redeems it.
                assert_eq!(block_on(redeem_for(&store, &code, "a", now)), Ok(false));
            }
        }
    }

    #[test]
    fn a_released_hold_frees_the_coupon_at_once() {
        let (store, code) = setup();
        let now = ts(NOW);
        hold_for(&store, &code, "a", now).expect("held");
        let freed = block_on(release(&store, &code, "a", Actor::Checkout, now)).expect("released");
        assert!(freed.released);
        // A retry of the release finds nothing in force.
        let again = block_on(release(&store, &code, "a", Actor::Checkout, now)).expect("released");
        assert!(!again.released);
        assert!(!hold_for(&store, &code, "b", now).expect("held").replayed);
        // Another order's release does not free b's hold.
        let other = block_on(release(&store, &code, "a", Actor::Checkout, now)).expect("released");
        assert!(!other.released);
        assert!(matches!(
            hold_for(&store, &code, "a", now),
            Err(Error::CouponHeld { .. })
        ));
    }

    #[test]
    fn a_holder_that_died_after_taking_its_turn_blocks_nobody_past_a_lease() {
        let (store, code) = setup();
        let now = ts(NOW);
        let keys = TurnKeys::new(&CouponCode::parse(&code).expect("a code"), 0);
        // A hold took turn 1 and its host died before writing it.
        block_on(store.increment(&keys.count(), 1)).expect("an increment");
        assert_eq!(
            block_on(redeem_for(&store, &code, "b", now)),
            Err(Error::RequestInProgress)
        );
        let lapsed = now + crate::lease::LEASE;
        assert_eq!(block_on(redeem_for(&store, &code, "b", lapsed)), Ok(false));
    }

    #[test]
    fn a_hold_is_refused_at_once_for_an_order_with_no_room_for_the_coupon() {
        let (store, code) = setup();
        let now = ts(NOW);
        let second = block_on(async {
            let request = ClaimRequest {
                campaign_id: CampaignId::parse("c").expect("id"),
            };
            let code = CouponCode::from_random([8; crate::code::RANDOM_BYTES]);
            let alice = UserId("alice".into());
            let claimed = claim(&store, &alice, "k2", request, now, code).await;
            claimed.expect("claim").coupon.code
        });
        // Order a redeems one coupon of the campaign: its one coupon per order.
        assert_eq!(block_on(redeem_for(&store, &code, "a", now)), Ok(false));
        assert_eq!(
            hold_for(&store, &second, "a", now).err(),
            Some(Error::OrderLimit(crate::error::OrderLimit::Campaign))
        );
        // Nothing was held: another order holds the coupon.
        assert!(!hold_for(&store, &second, "b", now).expect("held").replayed);
    }

    #[test]
    fn a_hold_never_outlives_the_coupon() {
        let (store, code) = setup();
        // Ten minutes before the month ends (the coupon's expiry).
        let late = ts("2028-02-29T23:50:00+08:00");
        let held = hold_for(&store, &code, "a", late).expect("held");
        assert_eq!(held.hold.held_until, "2028-03-01T00:00:00+08:00");
    }

    #[test]
    fn holds_are_refused_on_campaigns_without_them() {
        let store = MemoryStore::default();
        let code = block_on(async {
            create(&store, campaign("c"), setup_time())
                .await
                .expect("campaign");
            let request = ClaimRequest {
                campaign_id: CampaignId::parse("c").expect("id"),
            };
            let code = CouponCode::from_random([7; crate::code::RANDOM_BYTES]);
            let alice = UserId("alice".into());
            let claimed = claim(&store, &alice, "k", request, ts(NOW), code).await;
            claimed.expect("claim").coupon.code
        });
        assert_eq!(
            hold_for(&store, &code, "a", ts(NOW)).err(),
            Some(Error::HoldsNotEnabled)
        );
    }
}
