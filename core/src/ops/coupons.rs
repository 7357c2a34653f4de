//! Reading a coupon and checking it against an order, without changing anything.

use super::{Asker, load_held};
use crate::auth::UserId;
use crate::coupon::{CouponView, Ending, Held};
use crate::error::{Error, Reason, Result};
use crate::money::{Amount, Currency};
use crate::store::Store;
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
}

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
    Ok(load_held(store, code, asker).await?.view(now))
}

pub async fn validate(
    store: &impl Store,
    user: &UserId,
    request: ValidationRequest,
    now: Timestamp,
) -> Result<Validation> {
    request.order.validate()?;
    let held = load_held(store, &request.code, Some(Asker { user, now })).await?;
    Ok(match applies(&held, &request.order, now) {
        Ok(discount) => Validation {
            valid: true,
            discount_amount: Some(discount),
            payable_amount: Some(request.order.amount.saturating_sub(discount)),
            expires_at: Some(render(held.expires_at(), &held.zone)),
            reason: None,
        },
        Err(reason) => Validation {
            valid: false,
            discount_amount: None,
            payable_amount: None,
            expires_at: None,
            reason: Some(reason.code()),
        },
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
    if order.amount < campaign.min_order_amount {
        return Err(Reason::BelowMinOrder);
    }
    if !campaign.accepts_categories(&order.categories) {
        return Err(Reason::CategoryNotEligible);
    }
    // Last: what would apply once the operator unfreezes.
    if held.frozen {
        return Err(Reason::RedemptionsFrozen);
    }
    Ok(campaign.discount.amount_off(order.amount))
}
