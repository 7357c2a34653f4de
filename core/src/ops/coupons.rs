//! Reading a coupon and checking it against an order, without changing anything.

use super::holds::Turns;
use super::{Asker, load_held_with, load_many};
use crate::auth::{Caller, UserId};
use crate::code::CouponCode;
use crate::coupon::{CouponState, CouponView, Ending, Held};
use crate::error::{Error, Reason, Result};
use crate::keys;
use crate::money::{Amount, Currency};
use crate::store::{Store, decode_small_counter};
use crate::time::render;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub const MAX_ORDER_ID_LEN: usize = 128;

/// The order a coupon is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    #[serde(default)]
    pub id: Option<String>,
    pub amount: Amount,
    pub currency: Currency,
    #[serde(default)]
    pub categories: Vec<String>,
    /// The order's lines: a campaign with categories discounts only the
    /// lines in them. Without lines, the order's `categories` decide for all
    /// of it.
    #[serde(default)]
    pub lines: Vec<Line>,
}

/// One line of an order: what it costs, and its category.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub category: String,
    pub amount: Amount,
}

/// Lines an order may have.
pub const MAX_LINES: usize = 100;

impl Order {
    /// The order id, which must be present (for a redemption) and well-formed.
    pub fn required_id(&self) -> Result<&str> {
        let id = self
            .id
            .as_deref()
            .ok_or_else(|| Error::invalid("order.id", "is required"))?;
        check_order_id("order.id", id)?;
        Ok(id)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(id) = &self.id {
            check_order_id("order.id", id)?;
        }
        use crate::campaign::{MAX_CATEGORIES, MAX_CATEGORY_LEN};
        if self.lines.len() > MAX_LINES
            || self
                .lines
                .iter()
                .any(|l| l.category.is_empty() || l.category.chars().count() > MAX_CATEGORY_LEN)
        {
            return Err(Error::invalid(
                "order.lines",
                format!(
                    "at most {MAX_LINES} lines, each with a category of 1 to {MAX_CATEGORY_LEN} characters"
                ),
            ));
        }
        if !self.lines.is_empty() && !self.categories.is_empty() {
            return Err(Error::invalid(
                "order.categories",
                "an order with lines takes its categories from them",
            ));
        }
        // At most 100 lines of at most 10^15: the sum fits.
        let lines: i64 = self.lines.iter().map(|line| line.amount.minor()).sum();
        if lines > self.amount.minor() {
            return Err(Error::invalid(
                "order.lines",
                "add up to more than the order's amount",
            ));
        }
        if self.categories.len() > MAX_CATEGORIES
            || self
                .categories
                .iter()
                .any(|c| c.chars().count() > MAX_CATEGORY_LEN)
        {
            return Err(Error::invalid(
                "order.categories",
                format!(
                    "at most {MAX_CATEGORIES} categories of at most {MAX_CATEGORY_LEN} characters"
                ),
            ));
        }
        Ok(())
    }
}

/// Order ids are 1 to 128 characters without control characters.
pub fn check_order_id(field: &str, id: &str) -> Result<()> {
    // Characters, not bytes: JSON Schema's maxLength counts characters.
    if id.is_empty() || id.chars().count() > MAX_ORDER_ID_LEN || id.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            format!("must be 1 to {MAX_ORDER_ID_LEN} characters"),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationRequest {
    pub code: String,
    pub order: Order,
    /// The user the checkout acts for (see [`Caller::acting_for`]).
    #[serde(default)]
    pub user_id: Option<String>,
}

/// The answer to a validation: `valid` with the amounts, or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Validation {
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount_amount: Option<Amount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payable_amount: Option<Amount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Until when the coupon is held for this order, if it is (see `ops::holds`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// The coupon `code` as its holder sees it.
/// A coupon as `user` sees it, or as the operator does (`user` is `None`:
/// customer support looks up any code, and a miss is not counted).
pub async fn get(
    store: &impl Store,
    user: Option<&UserId>,
    code: &str,
    now: Timestamp,
) -> Result<CouponView> {
    let asker = user.map(|user| Asker { user, now });
    let parsed = CouponCode::parse(code).ok_or(Error::CouponNotFound)?;
    // Generation 0's holds ride in the first read.
    let (held, first) = load_held_with(store, code, asker, Turns::keys(&parsed, 0)).await?;
    let mut view = held.view(now);
    if held.campaign.hold_seconds.is_some() && view.state == CouponState::Issued {
        let turns = Turns::of(store, &parsed, held.generation, first).await?;
        if let Some((order_id, until)) = turns.hold_at(now) {
            view.held_for = Some(order_id.to_owned());
            view.held_until = Some(render(until, &held.zone));
        }
    }
    Ok(view)
}

/// Checks `request.code` against its order for its holder, or for the
/// checkout acting for them.
pub async fn validate(
    store: &impl Store,
    caller: impl Into<Caller>,
    request: ValidationRequest,
    now: Timestamp,
) -> Result<Validation> {
    let acting = caller.into().acting_for(request.user_id.as_deref())?;
    request.order.validate()?;
    let user = &acting.user;
    let code = CouponCode::parse(&request.code).ok_or(Error::CouponNotFound)?;
    let asker = Some(Asker { user, now });
    // Generation 0's holds ride in the first read.
    let (held, first) = load_held_with(store, &request.code, asker, Turns::keys(&code, 0)).await?;
    let hold = match held.campaign.hold_seconds {
        Some(_) => Some(Turns::of(store, &code, held.generation, first).await?),
        None => None,
    };
    let hold = hold.as_ref().and_then(|turns| turns.hold_at(now));
    let refused = |reason| Validation {
        valid: false,
        discount_amount: None,
        payable_amount: None,
        expires_at: None,
        held_until: None,
        reason: Some(reason),
    };
    // Held for another order (or one without an id): not this order's.
    if let Some((holder, _)) = hold
        && request.order.id.as_deref() != Some(holder)
        && held.ending.is_none()
    {
        return Ok(refused("coupon_held"));
    }
    Ok(match applies(&held, &request.order, now) {
        Ok(discount) => Validation {
            valid: true,
            discount_amount: Some(discount),
            payable_amount: Some(request.order.amount.saturating_sub(discount)),
            expires_at: Some(render(held.expires_at(), &held.zone)),
            held_until: hold.map(|(_, until)| render(until, &held.zone)),
            reason: None,
        },
        Err(reason) => refused(reason.code()),
    })
}

/// What `held` takes off `order` at `now`, or why it cannot be used.
pub(crate) fn applies(held: &Held, order: &Order, now: Timestamp) -> Result<Amount, Reason> {
    match &held.ending {
        Some(Ending::Redeemed(_)) => return Err(Reason::AlreadyRedeemed),
        Some(Ending::Expired { .. }) => return Err(Reason::Expired),
        None if now >= held.expires_at() => return Err(Reason::Expired),
        None => {}
    }
    let campaign = &held.campaign;
    if order.currency != campaign.currency {
        return Err(Reason::CurrencyMismatch);
    }
    let eligible = order.eligible_for(campaign);
    if eligible.unwrap_or(order.amount) < campaign.min_order_amount {
        return Err(Reason::BelowMinOrder);
    }
    let Some(eligible) = eligible else {
        return Err(Reason::CategoryNotEligible);
    };
    // Last: what would apply once the operator unfreezes.
    if held.frozen {
        return Err(Reason::RedemptionsFrozen);
    }
    Ok(campaign.discount.amount_off(eligible))
}

impl Order {
    /// What of the order `campaign` discounts, or `None` if nothing: all of
    /// it, unless the campaign has categories; then the lines in them, or
    /// (an order without lines) all of it if the order names one of them.
    /// The minimum order applies to this amount too.
    fn eligible_for(&self, campaign: &crate::campaign::Campaign) -> Option<Amount> {
        if campaign.categories.is_empty() || self.lines.is_empty() {
            return campaign
                .accepts_categories(&self.categories)
                .then_some(self.amount);
        }
        let mut in_categories = self
            .lines
            .iter()
            .filter(|line| campaign.categories.contains(&line.category))
            .peekable();
        in_categories.peek()?;
        let sum: i64 = in_categories.map(|line| line.amount.minor()).sum();
        // Lines add up to at most the amount (`validate`).
        Some(Amount::new(sum).unwrap_or(self.amount).min(self.amount))
    }
}

/// Coupons a wallet page holds at most, and by default.
pub const MAX_WALLET_PAGE: u32 = 100;
pub const DEFAULT_WALLET_PAGE: u32 = 20;
/// Wallet slots one page reads at most: with a state filter most slots may
/// not match, and a page stays bounded however many coupons a user has.
pub const MAX_WALLET_SCAN: i64 = 200;

/// One page of a user's coupons, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct Wallet {
    pub coupons: Vec<CouponView>,
    /// Pass as `before` for the next page; absent once the oldest coupon was
    /// read. A page with a state filter may be short, or empty, and still
    /// have a next one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `user`'s coupons numbered below `before` (all of them if `None`), newest
/// first, at most `limit`, only those in `state` if given. Reads the wallet's
/// slots from the newest down in chunks of `limit`: one round trip per chunk
/// plus two for its coupons (and one for the counter on a first page).
pub async fn list(
    store: &impl Store,
    user: &UserId,
    state: Option<CouponState>,
    limit: u32,
    before: Option<i64>,
    now: Timestamp,
) -> Result<Wallet> {
    if !(1..=MAX_WALLET_PAGE).contains(&limit) {
        return Err(Error::invalid(
            "limit",
            format!("must be 1 to {MAX_WALLET_PAGE}"),
        ));
    }
    let top = match before {
        Some(before) if before < 1 => {
            return Err(Error::invalid("before", "must be a cursor from `next`"));
        }
        Some(before) => before - 1,
        None => match store.get(&keys::wallet(user.as_str())).await? {
            None => 0,
            Some(bytes) => decode_small_counter(&bytes).ok_or_else(|| {
                Error::Internal(format!("{} is no counter", keys::wallet(user.as_str())))
            })?,
        },
    };
    let floor = (top - MAX_WALLET_SCAN).max(0);
    let mut coupons = Vec::new();
    let mut next = top;
    while next > floor {
        let numbers: Vec<i64> = (floor.max(next - i64::from(limit))..next)
            .map(|n| n + 1)
            .rev()
            .collect();
        let slots: Vec<String> = numbers
            .iter()
            .map(|&n| keys::wallet_slot(user.as_str(), n))
            .collect();
        let mut found = Vec::new();
        // An absent slot was never written: the claim that numbered it failed
        // or died before its coupon was.
        for (&n, code) in numbers.iter().zip(store.get_many(&slots).await?) {
            if let Some(code) = code {
                let code = std::str::from_utf8(&code)
                    .ok()
                    .and_then(CouponCode::parse)
                    .ok_or_else(|| Error::Internal(format!("wallet slot {n} is unreadable")))?;
                found.push((n, code));
            }
        }
        let codes: Vec<CouponCode> = found.iter().map(|(_, code)| code.clone()).collect();
        next -= numbers.len() as i64;
        // In the slots' order, without the codes that have no record.
        let mut numbered = found.iter();
        for held in load_many(store, &codes).await? {
            let Some((n, _)) = numbered.find(|(_, code)| *code == held.code) else {
                break;
            };
            let view = held.view(now);
            if state.is_none_or(|s| s == view.state) {
                coupons.push(view);
                if coupons.len() == limit as usize {
                    next = n - 1;
                    break;
                }
            }
        }
        if coupons.len() == limit as usize {
            break;
        }
    }
    Ok(Wallet {
        coupons,
        next: (next > 0).then(|| (next + 1).to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::CampaignId;
    use crate::ops::campaigns::create;
    use crate::ops::claim::{ClaimRequest, claim};
    use crate::ops::redeem::{RedemptionRequest, redeem};
    use crate::ops::testing::{campaign, setup_time, ts};
    use crate::store::memory::MemoryStore;
    use futures::executor::block_on;

    const NOW: &str = "2028-02-10T10:00:00+08:00";

    fn user(name: &str) -> UserId {
        UserId(name.to_owned())
    }

    fn claimed(store: &MemoryStore, who: &str, campaign: &str, n: u8) -> String {
        let request = ClaimRequest {
            campaign_id: CampaignId::parse(campaign).expect("an id"),
        };
        let key = format!("k{n}");
        let coupon = block_on(claim(
            store,
            &user(who),
            &key,
            request,
            ts(NOW),
            CouponCode::from_random([n; crate::code::RANDOM_BYTES]),
        ))
        .expect("a claim");
        coupon.coupon.code
    }

    fn page(
        store: &MemoryStore,
        who: &str,
        state: Option<CouponState>,
        limit: u32,
        before: Option<i64>,
    ) -> (Vec<String>, Option<i64>) {
        let wallet =
            block_on(list(store, &user(who), state, limit, before, ts(NOW))).expect("a page");
        let codes = wallet.coupons.into_iter().map(|c| c.code).collect();
        (codes, wallet.next.map(|n| n.parse().expect("a cursor")))
    }

    #[test]
    fn a_wallet_lists_its_own_coupons_newest_first_in_pages_past_holes() {
        let store = MemoryStore::default();
        for id in ["spring", "summer"] {
            block_on(create(&store, campaign(id), setup_time())).expect("a campaign");
        }
        let a1 = claimed(&store, "alice", "spring", 1);
        let bob = claimed(&store, "bob", "spring", 2);
        // A claim that numbered its coupon and died before writing it.
        block_on(store.increment(&keys::wallet("alice"), 1)).expect("an increment");
        let a2 = claimed(&store, "alice", "summer", 3);
        let a3 = claimed(&store, "alice", "spring", 4);

        assert_eq!(
            page(&store, "alice", None, 10, None),
            (vec![a3.clone(), a2.clone(), a1.clone()], None)
        );
        let (first, next) = page(&store, "alice", None, 2, None);
        assert_eq!(first, vec![a3.clone(), a2.clone()]);
        assert_eq!(
            page(&store, "alice", None, 2, next),
            (vec![a1.clone()], None)
        );
        assert_eq!(page(&store, "bob", None, 10, None), (vec![bob], None));
        assert_eq!(page(&store, "carol", None, 10, None), (vec![], None));

        let order = crate::api::parse_json(br#"{"id": "o1", "amount": 3000, "currency": "CNY"}"#)
            .expect("an order");
        let request = RedemptionRequest {
            code: a2.clone(),
            order,
            user_id: None,
        };
        block_on(redeem(&store, &user("alice"), request, ts(NOW))).expect("a redemption");
        let redeemed = Some(CouponState::Redeemed);
        assert_eq!(page(&store, "alice", redeemed, 10, None), (vec![a2], None));
        let issued = Some(CouponState::Issued);
        assert_eq!(
            page(&store, "alice", issued, 10, None),
            (vec![a3, a1], None)
        );
        let after_month_end = block_on(list(
            &store,
            &user("alice"),
            issued,
            10,
            None,
            ts("2028-03-01T00:00:00+08:00"),
        ))
        .expect("a page");
        assert!(after_month_end.coupons.is_empty());
    }

    #[test]
    fn a_users_miss_counters_of_minutes_long_past_are_deleted() {
        let store = MemoryStore::default();
        block_on(create(&store, campaign("spring"), setup_time())).expect("a campaign");
        let stranger = claimed(&store, "bob", "spring", 1);
        let start = ts(NOW);
        for minute in 0..10 {
            let at = start + jiff::SignedDuration::from_mins(minute);
            let miss = block_on(get(&store, Some(&user("mallory")), &stranger, at));
            assert_eq!(miss.map(|_| ()), Err(Error::CouponNotFound));
        }
        let values = store.values.borrow();
        let kept: Vec<&String> = values.keys().filter(|k| k.contains(":misses:")).collect();
        // This minute's and the last one's: a request may still count in it.
        assert_eq!(kept.len(), 2, "{kept:?}");
    }

    /// What validating `order` (JSON) for `campaign`'s coupon held by alice answers.
    fn validated(
        campaign: crate::campaign::Campaign,
        order: serde_json::Value,
    ) -> Result<Validation> {
        let store = MemoryStore::default();
        let id = campaign.id.to_string();
        block_on(create(&store, campaign, setup_time())).expect("a campaign");
        let code = claimed(&store, "alice", &id, 1);
        let order = crate::api::parse_json(order.to_string().as_bytes())?;
        let request = ValidationRequest {
            code,
            order,
            user_id: None,
        };
        block_on(validate(&store, &user("alice"), request, ts(NOW)))
    }

    #[test]
    fn a_category_campaign_discounts_only_its_lines() {
        let mut food = campaign("food");
        food.categories = vec!["food".into()];
        let lines = |food_amount: i64| {
            serde_json::json!({"amount": food_amount + 5000, "currency": "CNY", "lines": [
                {"category": "toys", "amount": 5000}, {"category": "food", "amount": food_amount}]})
        };
        let off = |v: Result<Validation>| {
            let v = v.expect("a validation");
            v.discount_amount.map(Amount::minor).ok_or(v.reason)
        };
        // 500 off; the minimum (2000) applies to the food lines alone.
        assert_eq!(off(validated(food.clone(), lines(3000))), Ok(500));
        assert_eq!(
            off(validated(food.clone(), lines(1500))),
            Err(Some("below_min_order"))
        );
        let toys = serde_json::json!({"amount": 9000, "currency": "CNY",
            "lines": [{"category": "toys", "amount": 9000}]});
        assert_eq!(
            off(validated(food.clone(), toys)),
            Err(Some("category_not_eligible"))
        );
        // A percent off the food lines, not the order.
        let mut percent = food.clone();
        percent.discount = crate::api::parse_json(
            br#"{"kind": "percent", "basis_points": 1000, "max_amount": 5000}"#,
        )
        .expect("a discount");
        assert_eq!(off(validated(percent.clone(), lines(3000))), Ok(300));
        // Without categories, a campaign discounts the whole order.
        percent.categories.clear();
        assert_eq!(off(validated(percent, lines(3000))), Ok(800));
        // Lines that add up to more than the order, or beside categories: 400.
        let over = serde_json::json!({"amount": 100, "currency": "CNY",
            "lines": [{"category": "food", "amount": 101}]});
        let field = |v: Result<Validation>| v.err().and_then(|e| e.field().map(str::to_owned));
        assert_eq!(
            field(validated(food.clone(), over)).as_deref(),
            Some("order.lines")
        );
        let both = serde_json::json!({"amount": 3000, "currency": "CNY", "categories": ["food"],
            "lines": [{"category": "food", "amount": 3000}]});
        assert_eq!(
            field(validated(food, both)).as_deref(),
            Some("order.categories")
        );
    }

    #[test]
    fn a_page_reads_a_bounded_number_of_slots() {
        let store = MemoryStore::default();
        block_on(create(&store, campaign("spring"), setup_time())).expect("a campaign");
        let old = claimed(&store, "alice", "spring", 1);
        for _ in 0..MAX_WALLET_SCAN + 5 {
            block_on(store.increment(&keys::wallet("alice"), 1)).expect("an increment");
        }
        // Holes only: the page is empty but says where to go on.
        let (codes, next) = page(&store, "alice", None, 20, None);
        assert!(codes.is_empty());
        assert_eq!(next, Some(7));
        assert_eq!(page(&store, "alice", None, 20, next), (vec![old], None));
        for bad in [0, -1] {
            assert!(block_on(list(&store, &user("alice"), None, 20, Some(bad), ts(NOW))).is_err());
        }
        for bad in [0, MAX_WALLET_PAGE + 1] {
            assert!(block_on(list(&store, &user("alice"), None, bad, None, ts(NOW))).is_err());
        }
    }
}
