//! The coupons one order takes: one per campaign unless the campaign allows
//! more ([`Campaign::coupons_per_order`]), at most [`MAX_COUPONS_PER_ORDER`]
//! in all, their discounts together never over the order's amount, and every
//! one redeemed under the same order terms.
//!
//! An order's redemptions take numbered slots with an increment
//! (`u:{user}:order:{order}:n`). The redemption in slot `q` decides looking
//! only at slots `1..q`, once each is written (or its taker is dead, a lease
//! after it was first seen empty), and writes its own slot in the same
//! `set_many` as the coupon's ending, slot first. So of two redemptions
//! racing for the last room on an order, the later slot sees the earlier one
//! and never both get it; a slot written without its ending (a store that
//! failed half-way) counts as used, which errs towards refusing.
//!
//! [`Campaign::coupons_per_order`]: crate::campaign::Campaign::coupons_per_order

use super::{decode, encode};
use crate::auth::UserId;
use crate::campaign::CampaignId;
use crate::error::{Error, OrderLimit, Result};
use crate::keys::escape;
use crate::lease::{self, Ownership};
use crate::money::Amount;
use crate::ops::coupons::Order;
use crate::store::{Store, decode_small_counter};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The most coupons one order may take, of all campaigns together.
pub const MAX_COUPONS_PER_ORDER: u32 = 5;
/// Slots an order may take: its coupons, and the redemptions refused or
/// raced after taking one.
const MAX_SLOTS: i64 = 32;
/// Slots read with the counter, in the first round trip.
const READ_AHEAD: i64 = 8;

/// What an order's slot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Slot {
    /// A coupon's generation redeemed (or being redeemed) by the order.
    Used {
        code: String,
        generation: i64,
        campaign: CampaignId,
        discount: Amount,
        terms: Terms,
    },
    /// Taken by a redemption that was refused, raced or cancelled since.
    Void,
}

/// A fingerprint of the terms an order was redeemed under: its amount,
/// currency, categories and lines (each in any order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Terms(String);

impl Terms {
    pub fn of(order: &Order) -> Terms {
        let mut categories: Vec<&str> = order.categories.iter().map(String::as_str).collect();
        categories.sort_unstable();
        categories.dedup();
        let mut hash = Sha256::new();
        hash.update(format!("{} {}", order.amount, order.currency.as_str()));
        for category in categories {
            hash.update([0]);
            hash.update(category);
        }
        // Lines in any order; an order without lines hashes as it always has.
        let mut lines: Vec<(&str, Amount)> = order
            .lines
            .iter()
            .map(|line| (line.category.as_str(), line.amount))
            .collect();
        lines.sort_unstable();
        for (category, amount) in lines {
            hash.update([1]);
            hash.update(category);
            hash.update(format!(" {amount}"));
        }
        let digest = hash.finalize();
        Terms(digest[..12].iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// Keys of one user's order.
struct OrderKeys(String);

impl OrderKeys {
    fn new(user: &UserId, order_id: &str) -> Self {
        OrderKeys(format!(
            "u:{}:order:{}",
            escape(user.as_str()),
            escape(order_id)
        ))
    }
    fn count(&self) -> String {
        format!("{}:n", self.0)
    }
    fn slot(&self, q: i64) -> String {
        format!("{}:{q}", self.0)
    }
}

/// The coupon a redemption puts on an order.
#[derive(Debug, Clone)]
pub struct Use<'a> {
    pub code: &'a str,
    pub generation: i64,
    pub campaign: &'a CampaignId,
    pub coupons_per_order: u32,
    pub discount: Amount,
}

/// The slot a redemption's coupon takes on the order.
#[derive(Debug, Clone)]
pub struct Taken {
    /// Where the coupon's entry goes: the slot this request took, or the one
    /// an earlier attempt at the same redemption took.
    key: String,
    entry: Vec<u8>,
    /// The slot this request took with its increment, if any: only it may
    /// be given up (an earlier attempt's may still be written with its ending).
    own: Option<String>,
}

impl Taken {
    /// The writes that go with the coupon's ending, before it.
    pub fn writes(&self) -> Vec<(String, Vec<u8>)> {
        let mut writes = vec![(self.key.clone(), self.entry.clone())];
        let spare = self.own.as_ref().filter(|own| **own != self.key);
        writes.extend(spare.map(|k| (k.clone(), encode(&Slot::Void))));
        writes
    }

    /// Gives this request's slot up: it stopped before writing any ending.
    /// Best effort: a slot never written lapses a lease after it is first seen.
    pub async fn give_up(&self, store: &impl Store) {
        if let Some(own) = &self.own {
            let _ = store.set(own, &encode(&Slot::Void)).await;
        }
    }
}

/// An order's slots as read (`None`: taken, not written yet).
pub struct Slots {
    keys: OrderKeys,
    slots: Vec<Option<Slot>>,
}

impl Slots {
    /// The keys [`Slots::decode`] reads: the counter and the first slots, to
    /// ride in a batch the caller makes anyway.
    pub fn keys(user: &UserId, order_id: &str) -> Vec<String> {
        let keys = OrderKeys::new(user, order_id);
        let mut wanted = vec![keys.count()];
        wanted.extend((1..=READ_AHEAD).map(|q| keys.slot(q)));
        wanted
    }

    /// The slots of `user`'s order from the values of [`Slots::keys`], in
    /// order, and one more round trip if the order took more slots.
    pub async fn decode(
        store: &impl Store,
        user: &UserId,
        order_id: &str,
        mut values: Vec<Option<Vec<u8>>>,
    ) -> Result<Slots> {
        let keys = OrderKeys::new(user, order_id);
        if values.len() != 1 + READ_AHEAD as usize {
            return Err(Error::Internal("an order's slots were read short".into()));
        }
        let count = values.remove(0);
        let n = match count {
            None => 0,
            Some(bytes) => decode_small_counter(&bytes)
                .ok_or_else(|| Error::Internal(format!("{} is no counter", keys.count())))?,
        }
        .min(MAX_SLOTS);
        values.truncate(n.max(0) as usize);
        if n > READ_AHEAD {
            let rest: Vec<String> = (READ_AHEAD + 1..=n).map(|q| keys.slot(q)).collect();
            values.extend(store.get_many(&rest).await?);
        }
        let slots = values
            .into_iter()
            .enumerate()
            .map(|(i, value)| {
                value
                    .map(|bytes| decode(&keys.slot(i as i64 + 1), &bytes))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        Ok(Slots { keys, slots })
    }

    /// The slots of `user`'s order, read on their own.
    pub async fn read(store: &impl Store, user: &UserId, order_id: &str) -> Result<Slots> {
        let values = store.get_many(&Slots::keys(user, order_id)).await?;
        Slots::decode(store, user, order_id, values).await
    }

    /// The terms the order redeemed `code`'s `generation` under, if its slot says.
    pub fn terms_of(&self, code: &str, generation: i64) -> Option<Terms> {
        self.slots.iter().flatten().find_map(|slot| match slot {
            Slot::Used {
                code: c,
                generation: g,
                terms,
                ..
            } if c == code && *g == generation => Some(terms.clone()),
            _ => None,
        })
    }
}

/// What `coupon`'s slot on the order holds.
fn entry(order: &Order, coupon: &Use<'_>) -> Slot {
    Slot::Used {
        code: coupon.code.to_owned(),
        generation: coupon.generation,
        campaign: coupon.campaign.clone(),
        discount: coupon.discount,
        terms: Terms::of(order),
    }
}

/// Whether the order whose `slots` were read has room for `coupon`, as far
/// as its written slots tell, without taking one: a hold refuses at once a
/// coupon its order could not redeem. Advisory: only [`take`] decides, so
/// holds racing for an order's last room may each pass.
pub fn fits(slots: &Slots, order: &Order, coupon: &Use<'_>) -> Result<()> {
    check(
        &slots.slots,
        &entry(order, coupon),
        order.amount,
        coupon.coupons_per_order,
    )
}

/// Takes a slot of the order whose `slots` were read for `coupon`, or refuses it.
pub async fn take(
    store: &impl Store,
    slots: Slots,
    order: &Order,
    coupon: &Use<'_>,
    now: Timestamp,
) -> Result<Taken> {
    let Slots { keys, mut slots } = slots;
    let terms = Terms::of(order);
    let entry = entry(order, coupon);
    // A retry finds its slot; an earlier refusal is refused again at once.
    if let Some(q) = position_of(&slots, coupon) {
        if !matches!(&slots[q], Some(Slot::Used { terms: t, .. }) if *t == terms) {
            return Err(Error::OrderTermsChanged);
        }
        return Ok(Taken {
            key: keys.slot(q as i64 + 1),
            entry: encode(&entry),
            own: None,
        });
    }
    // A slot taken and not written yet decides first: wait for it (or its
    // lapse) before taking another behind it, so retries of a redemption
    // whose store failed never use the order's slots up.
    for (p, slot) in slots.iter_mut().enumerate() {
        if slot.is_none() {
            match lease::lapsed(store, &keys.slot(p as i64 + 1), 1, now).await? {
                Ownership::Lapsed => *slot = Some(Slot::Void),
                _ => return Err(Error::RequestInProgress),
            }
        }
    }
    check(&slots, &entry, order.amount, coupon.coupons_per_order)?;
    let q = store.increment(&keys.count(), 1).await?;
    if q > MAX_SLOTS {
        return Err(Error::OrderLimit(OrderLimit::Attempts));
    }
    let own = keys.slot(q);
    let refuse = async |e: Error| {
        let _ = store.set(&own, &encode(&Slot::Void)).await;
        Err(e)
    };
    // Every slot before this one, as its taker wrote it or once it lapsed.
    let missing: Vec<i64> = (1..q)
        .filter(|&p| slots.get(p as usize - 1).is_none_or(Option::is_none))
        .collect();
    slots.resize(q as usize - 1, None);
    let reread = match missing.is_empty() {
        true => Ok(Vec::new()),
        false => {
            let wanted: Vec<String> = missing.iter().map(|&p| keys.slot(p)).collect();
            store.get_many(&wanted).await
        }
    };
    let reread = match reread {
        Ok(values) => values,
        Err(e) => return refuse(e.into()).await,
    };
    for (&p, value) in missing.iter().zip(reread) {
        let slot = match value {
            Some(bytes) => decode(&keys.slot(p), &bytes)?,
            None => match lease::lapsed(store, &keys.slot(p), 1, now).await {
                Ok(Ownership::Lapsed) => Slot::Void,
                Ok(_) => return refuse(Error::RequestInProgress).await,
                Err(e) => return refuse(e.into()).await,
            },
        };
        slots[p as usize - 1] = Some(slot);
    }
    if let Err(e) = check(&slots, &entry, order.amount, coupon.coupons_per_order) {
        return refuse(e).await;
    }
    // A racing copy of this request holds an earlier slot: that one counts.
    if let Some(p) = position_of(&slots, coupon) {
        return Ok(Taken {
            key: keys.slot(p as i64 + 1),
            entry: encode(&entry),
            own: Some(own),
        });
    }
    Ok(Taken {
        key: own.clone(),
        entry: encode(&entry),
        own: Some(own),
    })
}

/// Marks void the slot of `code`, whose redemption by `order_id` was
/// cancelled (an order redeems a coupon once): the order may take another
/// coupon in its place.
pub async fn release(store: &impl Store, user: &UserId, order_id: &str, code: &str) -> Result<()> {
    let Slots { keys, slots } = Slots::read(store, user, order_id).await?;
    let found = slots
        .iter()
        .position(|slot| matches!(slot, Some(Slot::Used { code: c, .. }) if c == code));
    if let Some(q) = found {
        store
            .set(&keys.slot(q as i64 + 1), &encode(&Slot::Void))
            .await?;
    }
    Ok(())
}

/// Where `coupon`'s generation already has a slot (0-based).
fn position_of(slots: &[Option<Slot>], coupon: &Use<'_>) -> Option<usize> {
    slots.iter().position(|slot| {
        matches!(slot, Some(Slot::Used { code, generation, .. })
            if code == coupon.code && *generation == coupon.generation)
    })
}

/// Whether `entry` fits on an order whose earlier slots are `earlier`
/// (those not written yet are not counted: the caller waits for them).
fn check(
    earlier: &[Option<Slot>],
    entry: &Slot,
    amount: Amount,
    coupons_per_order: u32,
) -> Result<()> {
    let Slot::Used {
        code,
        generation,
        campaign,
        discount,
        terms,
    } = entry
    else {
        return Ok(());
    };
    let mut coupons = 0u32;
    let mut of_campaign = 0u32;
    let mut discounted = 0i64;
    for slot in earlier.iter().flatten() {
        let Slot::Used {
            code: c,
            generation: g,
            campaign: k,
            discount: d,
            terms: t,
        } = slot
        else {
            continue;
        };
        if t != terms {
            return Err(Error::OrderTermsChanged);
        }
        // Its own slot (a retry, or a racing copy): already counted below.
        if c == code && g == generation {
            return Ok(());
        }
        coupons += 1;
        of_campaign += u32::from(k == campaign);
        discounted = discounted.saturating_add(d.minor());
    }
    if of_campaign >= coupons_per_order {
        return Err(Error::OrderLimit(OrderLimit::Campaign));
    }
    if coupons >= MAX_COUPONS_PER_ORDER {
        return Err(Error::OrderLimit(OrderLimit::Coupons));
    }
    if discounted.saturating_add(discount.minor()) > amount.minor() {
        return Err(Error::OrderLimit(OrderLimit::Discount));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    fn order(amount: i64, categories: &[&str]) -> Order {
        Order {
            id: Some("o1".into()),
            amount: Amount::new(amount).expect("an amount"),
            currency: Currency::parse("CNY").expect("a currency"),
            categories: categories.iter().map(|c| c.to_string()).collect(),
            lines: vec![],
        }
    }

    fn used(code: &str, campaign: &str, discount: i64, terms: &Terms) -> Option<Slot> {
        Some(Slot::Used {
            code: code.into(),
            generation: 0,
            campaign: CampaignId::parse(campaign).expect("an id"),
            discount: Amount::new(discount).expect("an amount"),
            terms: terms.clone(),
        })
    }

    #[test]
    fn retries_behind_an_unwritten_slot_wait_for_it_without_taking_slots() {
        use crate::store::memory::MemoryStore;
        use futures::executor::block_on;
        let store = MemoryStore::default();
        let alice = UserId("alice".into());
        let campaign = CampaignId::parse("spring").expect("an id");
        let coupon = Use {
            code: "B",
            generation: 0,
            campaign: &campaign,
            coupons_per_order: 1,
            discount: Amount::new(500).expect("an amount"),
        };
        let counter = OrderKeys::new(&alice, "o1").count();
        // A redemption took slot 1 and its store failed before writing it.
        block_on(store.increment(&counter, 1)).expect("an increment");
        let now = crate::ops::testing::ts("2028-02-10T10:00:00+08:00");
        let attempt = |at: Timestamp| {
            block_on(async {
                let slots = Slots::read(&store, &alice, "o1").await?;
                take(&store, slots, &order(5000, &[]), &coupon, at).await
            })
        };
        for _ in 0..40 {
            assert_eq!(attempt(now).err(), Some(Error::RequestInProgress));
        }
        assert_eq!(block_on(store.increment(&counter, 0)).expect("a read"), 1);
        // A lease after it was first seen, the slot has lapsed: the order goes on.
        let later = now + crate::lease::LEASE + jiff::SignedDuration::from_secs(1);
        assert!(attempt(later).is_ok());
        assert_eq!(block_on(store.increment(&counter, 0)).expect("a read"), 2);
    }

    #[test]
    fn terms_ignore_line_order_and_see_every_line() {
        let with = |lines: &[(&str, i64)]| {
            let mut o = order(5000, &[]);
            o.lines = lines
                .iter()
                .map(|&(category, amount)| crate::ops::coupons::Line {
                    category: category.into(),
                    amount: Amount::new(amount).expect("an amount"),
                })
                .collect();
            Terms::of(&o)
        };
        let base = with(&[("food", 3000), ("toys", 2000)]);
        assert_eq!(base, with(&[("toys", 2000), ("food", 3000)]));
        assert_ne!(base, with(&[("food", 2000), ("toys", 3000)]));
        assert_ne!(base, with(&[("food", 3000)]));
        assert_ne!(base, Terms::of(&order(5000, &["food", "toys"])));
        // An order without lines keeps the terms it was redeemed under.
        assert_eq!(with(&[]), Terms::of(&order(5000, &[])));
    }

    #[test]
    fn terms_ignore_category_order_and_see_every_other_change() {
        let base = Terms::of(&order(5000, &["food", "toys"]));
        assert_eq!(base, Terms::of(&order(5000, &["toys", "food", "food"])));
        assert_ne!(base, Terms::of(&order(5001, &["food", "toys"])));
        assert_ne!(base, Terms::of(&order(5000, &["food"])));
        assert_ne!(base, Terms::of(&order(5000, &["foodtoys"])));
    }

    #[test]
    fn an_order_takes_one_coupon_per_campaign_and_never_more_discount_than_its_amount() {
        let t = Terms::of(&order(5000, &[]));
        let mine = used("B", "spring", 3000, &t).expect("a slot");
        let amount = Amount::new(5000).expect("an amount");
        assert_eq!(check(&[], &mine, amount, 1), Ok(()));
        // Void slots and slots not written yet count for nothing.
        assert_eq!(check(&[Some(Slot::Void), None], &mine, amount, 1), Ok(()));
        let same_campaign = [used("A", "spring", 1000, &t)];
        assert_eq!(
            check(&same_campaign, &mine, amount, 1),
            Err(Error::OrderLimit(OrderLimit::Campaign))
        );
        assert_eq!(check(&same_campaign, &mine, amount, 2), Ok(()));
        let over = [used("A", "summer", 3000, &t)];
        assert_eq!(
            check(&over, &mine, amount, 1),
            Err(Error::OrderLimit(OrderLimit::Discount))
        );
        let exact = [used("A", "summer", 2000, &t)];
        assert_eq!(check(&exact, &mine, amount, 1), Ok(()));
        let full: Vec<Option<Slot>> = (0..MAX_COUPONS_PER_ORDER)
            .map(|i| used(&format!("A{i}"), &format!("c{i}"), 1, &t))
            .collect();
        assert_eq!(
            check(&full, &mine, amount, 1),
            Err(Error::OrderLimit(OrderLimit::Coupons))
        );
        let other_terms = [used("A", "summer", 1, &Terms::of(&order(6000, &[])))];
        assert_eq!(
            check(&other_terms, &mine, amount, 1),
            Err(Error::OrderTermsChanged)
        );
        // Its own earlier slot: a retry, already counted.
        let retry = [used("B", "spring", 3000, &t)];
        assert_eq!(check(&retry, &mine, amount, 1), Ok(()));
    }
}
