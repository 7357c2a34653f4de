//! The one error type of the coupon domain: each variant has a stable machine
//! code and an HTTP status, decided here and nowhere else.

use std::fmt;

/// Why a request was refused. `code()` is part of the public API: never rename one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Malformed input; `field` names the offending field where there is one.
    InvalidRequest {
        field: Option<String>,
        message: String,
    },
    /// Missing, malformed, forged or expired credentials: which, as far as
    /// the caller may be told.
    Unauthorized(Denial),
    /// No such route in this component.
    NotFound,
    /// The route exists but not with this method; `allow` lists its methods
    /// (the `Allow` header).
    MethodNotAllowed {
        allow: &'static str,
    },
    /// The body is over `api::MAX_BODY_BYTES`.
    PayloadTooLarge,
    CampaignNotFound,
    CampaignExists,
    CampaignNotActive,
    /// The campaign's coupons are redeemed by the shop's checkout only, not
    /// with a user's token (`Campaign::redeemable_by_users`).
    CheckoutRequired,
    CampaignPaused,
    /// Over the campaign's `max_claims_per_second`: shed before touching the stock.
    RateLimited,
    SoldOut,
    PerUserLimitReached,
    IdempotencyKeyReused,
    /// Another request with the same idempotency key has not finished yet.
    RequestInProgress,
    /// A stock recount fences the counters a change of stock or budget moves:
    /// retry once it is down (minutes).
    RecountInProgress,
    CouponNotFound,
    /// Too many lookups of coupons the user does not hold this minute: the
    /// enumeration ceiling. Retry after the given seconds (the next minute).
    TooManyFailedLookups {
        retry_after: u32,
    },
    RedemptionNotFound,
    /// This order's redemption of the coupon was cancelled: the order cannot
    /// redeem it again (a new order has a new id).
    RedemptionCancelled,
    AlreadyRedeemed,
    Expired,
    /// The order was sent before under other terms (amount, currency or
    /// categories): one order id, one set of terms.
    OrderTermsChanged,
    /// The order has no room for this coupon.
    OrderLimit(OrderLimit),
    /// Another order holds the coupon: retry after the given seconds (when
    /// the hold ends, unless its order redeems it first).
    CouponHeld {
        retry_after: u32,
    },
    /// The coupon's campaign takes no holds (`Campaign::hold_seconds`).
    HoldsNotEnabled,
    /// The coupon's generation took its most turns (`ops::holds::MAX_TURNS`).
    HoldAttemptsExhausted,
    /// The operator froze the campaign's redemptions: retry later.
    RedemptionsFrozen,
    /// The campaign may not be purged yet: the text says why.
    PurgeNotDue(String),
    /// The events export named is not at the end of the campaign's events.
    ExportIncomplete,
    /// A purge has sealed the campaign: its expiry can no longer change.
    CampaignPurged,
    /// A coupon rule the order does not meet (422).
    RuleFailed(Reason),
    /// The key-value store failed; the operation may be retried.
    StoreUnavailable(String),
    /// The store holds something this code did not write (corruption or a bug).
    Internal(String),
}

/// Which check a bearer credential failed (RFC 6750's `error` and
/// `error_description` in `WWW-Authenticate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No `Authorization: Bearer` credential.
    Missing,
    /// Malformed, another algorithm, or a signature (or admin token) that
    /// does not verify: one answer for all, so a forger learns nothing.
    Invalid,
    /// Signed, but past its `exp`.
    Expired,
    /// Signed, but with no `exp`.
    NoExpiry,
    /// Signed, but before its `nbf`.
    NotYetValid,
    /// Signed, but its `sub` names no user.
    NoUser,
}

impl Denial {
    /// The `WWW-Authenticate` challenge of a 401.
    pub fn challenge(self) -> String {
        match self {
            Denial::Missing => r#"Bearer realm="coupons""#.to_owned(),
            other => format!(
                r#"Bearer realm="coupons", error="invalid_token", error_description="{}""#,
                other.description()
            ),
        }
    }

    fn description(self) -> &'static str {
        match self {
            Denial::Missing => "a bearer token is required",
            Denial::Invalid => "the token is malformed or its signature does not verify",
            Denial::Expired => "the token has expired",
            Denial::NoExpiry => "the token has no exp",
            Denial::NotYetValid => "the token is not valid yet (nbf)",
            Denial::NoUser => "the token's sub names no user",
        }
    }
}

/// Which of an order's limits a coupon would break (see `ops::orders`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderLimit {
    /// The order holds as many coupons of this campaign as it allows.
    Campaign,
    /// The order holds `MAX_COUPONS_PER_ORDER` coupons.
    Coupons,
    /// The discounts on the order would add up to more than its amount.
    Discount,
    /// The order's redemptions were refused or raced too often.
    Attempts,
}

/// Why a coupon cannot be applied to an order. Also the `reason` of a negative validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Expired,
    AlreadyRedeemed,
    BelowMinOrder,
    CurrencyMismatch,
    CategoryNotEligible,
    /// The campaign's redemptions are frozen (for now).
    RedemptionsFrozen,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::Expired => "expired",
            Reason::AlreadyRedeemed => "already_redeemed",
            Reason::BelowMinOrder => "below_min_order",
            Reason::CurrencyMismatch => "currency_mismatch",
            Reason::CategoryNotEligible => "category_not_eligible",
            Reason::RedemptionsFrozen => "redemptions_frozen",
        }
    }
}

/// A rule an order fails, as a redemption or hold answers it.
impl From<Reason> for Error {
    fn from(reason: Reason) -> Self {
        match reason {
            Reason::Expired => Error::Expired,
            Reason::AlreadyRedeemed => Error::AlreadyRedeemed,
            Reason::RedemptionsFrozen => Error::RedemptionsFrozen,
            other => Error::RuleFailed(other),
        }
    }
}

impl Error {
    /// An `invalid_request` naming `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Error::InvalidRequest {
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRequest { .. } => "invalid_request",
            Error::Unauthorized(_) => "unauthorized",
            Error::NotFound => "not_found",
            Error::MethodNotAllowed { .. } => "method_not_allowed",
            Error::PayloadTooLarge => "payload_too_large",
            Error::CampaignNotFound => "campaign_not_found",
            Error::CampaignExists => "campaign_exists",
            Error::CampaignNotActive => "campaign_not_active",
            Error::CheckoutRequired => "checkout_required",
            Error::CampaignPaused => "campaign_paused",
            Error::RateLimited => "rate_limited",
            Error::SoldOut => "sold_out",
            Error::PerUserLimitReached => "per_user_limit_reached",
            Error::IdempotencyKeyReused => "idempotency_key_reused",
            Error::RequestInProgress => "request_in_progress",
            Error::RecountInProgress => "recount_in_progress",
            Error::CouponNotFound => "coupon_not_found",
            Error::TooManyFailedLookups { .. } => "too_many_failed_lookups",
            Error::RedemptionNotFound => "redemption_not_found",
            Error::RedemptionCancelled => "redemption_cancelled",
            Error::AlreadyRedeemed => "already_redeemed",
            Error::Expired => "expired",
            Error::OrderTermsChanged => "order_terms_changed",
            Error::OrderLimit(OrderLimit::Campaign) => "order_campaign_limit_reached",
            Error::OrderLimit(OrderLimit::Coupons) => "order_coupon_limit_reached",
            Error::OrderLimit(OrderLimit::Discount) => "order_discount_exceeded",
            Error::OrderLimit(OrderLimit::Attempts) => "order_attempts_exhausted",
            Error::CouponHeld { .. } => "coupon_held",
            Error::HoldsNotEnabled => "holds_not_enabled",
            Error::HoldAttemptsExhausted => "hold_attempts_exhausted",
            Error::RedemptionsFrozen => "redemptions_frozen",
            Error::PurgeNotDue(_) => "purge_not_due",
            Error::ExportIncomplete => "export_incomplete",
            Error::CampaignPurged => "campaign_purged",
            Error::RuleFailed(reason) => reason.code(),
            Error::StoreUnavailable(_) => "store_unavailable",
            Error::Internal(_) => "internal_error",
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Error::InvalidRequest { .. } => 400,
            Error::Unauthorized(_) => 401,
            Error::CampaignNotActive | Error::CheckoutRequired => 403,
            Error::NotFound
            | Error::CampaignNotFound
            | Error::CouponNotFound
            | Error::RedemptionNotFound => 404,
            Error::MethodNotAllowed { .. } => 405,
            Error::CampaignExists
            | Error::PerUserLimitReached
            | Error::AlreadyRedeemed
            | Error::RedemptionCancelled
            | Error::OrderLimit(_)
            | Error::CouponHeld { .. }
            | Error::HoldAttemptsExhausted
            | Error::RequestInProgress
            | Error::RecountInProgress
            | Error::PurgeNotDue(_)
            | Error::ExportIncomplete
            | Error::CampaignPurged => 409,
            Error::SoldOut | Error::Expired => 410,
            Error::PayloadTooLarge => 413,
            Error::RateLimited | Error::TooManyFailedLookups { .. } => 429,
            Error::IdempotencyKeyReused
            | Error::OrderTermsChanged
            | Error::HoldsNotEnabled
            | Error::RuleFailed(_) => 422,
            Error::Internal(_) => 500,
            Error::CampaignPaused | Error::RedemptionsFrozen | Error::StoreUnavailable(_) => 503,
        }
    }

    /// What a client is told: the [`Display`](std::fmt::Display) text, except
    /// for failures whose detail is for the operator's log only.
    pub fn public_message(&self) -> String {
        match self {
            Error::StoreUnavailable(_) => {
                "the store is unavailable; retry after Retry-After".into()
            }
            Error::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }

    /// Seconds a client should wait before retrying, where retrying can help.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Error::TooManyFailedLookups { retry_after } | Error::CouponHeld { retry_after } => {
                Some(*retry_after)
            }
            Error::CampaignPaused | Error::RedemptionsFrozen | Error::RecountInProgress => Some(30),
            Error::RateLimited | Error::RequestInProgress | Error::StoreUnavailable(_) => Some(1),
            _ => None,
        }
    }

    /// The field an `invalid_request` is about.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::InvalidRequest { field, .. } => field.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidRequest {
                field: Some(field),
                message,
            } => write!(f, "{field}: {message}"),
            Error::InvalidRequest {
                field: None,
                message,
            } => f.write_str(message),
            Error::Unauthorized(denial) => f.write_str(denial.description()),
            Error::NotFound => f.write_str("no such route"),
            Error::MethodNotAllowed { allow } => {
                write!(f, "this route takes only {allow}")
            }
            Error::PayloadTooLarge => {
                write!(f, "the body is over {} bytes", crate::api::MAX_BODY_BYTES)
            }
            Error::CampaignNotFound => f.write_str("no such campaign"),
            Error::CampaignExists => {
                f.write_str("a campaign with this id already exists with different settings")
            }
            Error::CampaignNotActive => f.write_str("the campaign is outside its claim window"),
            Error::CheckoutRequired => {
                f.write_str("this campaign's coupons are redeemed by the shop's checkout, not by users")
            }
            Error::CampaignPaused => f.write_str("the campaign is paused; retry later"),
            Error::RateLimited => f.write_str(
                "the campaign takes no more claims this second; retry after Retry-After",
            ),
            Error::SoldOut => f.write_str("the campaign's stock or budget is spent"),
            Error::PerUserLimitReached => {
                f.write_str("this user already holds the most coupons the campaign allows")
            }
            Error::IdempotencyKeyReused => {
                f.write_str("this Idempotency-Key was used with a different request body")
            }
            Error::RequestInProgress => {
                f.write_str("a request with this key is still in progress; retry shortly")
            }
            Error::RecountInProgress => f.write_str(
                "a stock recount is in progress; the stock and budget can change once it is done",
            ),
            Error::CouponNotFound => f.write_str("no such coupon"),
            Error::TooManyFailedLookups { .. } => f.write_str(
                "too many lookups of coupons this user does not hold this minute; retry after Retry-After",
            ),
            Error::RedemptionNotFound => f.write_str("no redemption of this coupon by this order"),
            Error::RedemptionCancelled => f.write_str(
                "this order's redemption of the coupon was cancelled; a new order needs a new order id",
            ),
            Error::AlreadyRedeemed => f.write_str("the coupon was redeemed by another order"),
            Error::Expired => f.write_str("the coupon has expired"),
            Error::OrderTermsChanged => f.write_str(
                "this order id was redeemed under other terms (amount, currency, categories or lines)",
            ),
            Error::OrderLimit(OrderLimit::Campaign) => f.write_str(
                "the order already holds as many coupons of this campaign as it allows",
            ),
            Error::OrderLimit(OrderLimit::Coupons) => write!(
                f,
                "the order already holds {} coupons, the most one order may",
                crate::ops::orders::MAX_COUPONS_PER_ORDER
            ),
            Error::OrderLimit(OrderLimit::Discount) => f.write_str(
                "the order's coupons would take off more than the order's amount",
            ),
            Error::OrderLimit(OrderLimit::Attempts) => f.write_str(
                "too many redemptions of this order were refused or raced; use a new order id",
            ),
            Error::CouponHeld { .. } => f.write_str(
                "another order holds the coupon; retry after Retry-After, when the hold ends",
            ),
            Error::HoldsNotEnabled => f.write_str("this campaign's coupons cannot be held"),
            Error::HoldAttemptsExhausted => f.write_str(
                "too many holds of this coupon were taken or raced; redeem it without a hold",
            ),
            Error::RedemptionsFrozen | Error::RuleFailed(Reason::RedemptionsFrozen) => {
                f.write_str("the campaign's redemptions are frozen; retry later")
            }
            Error::RuleFailed(Reason::BelowMinOrder) => {
                f.write_str("the order amount is below the coupon's minimum")
            }
            Error::RuleFailed(Reason::CurrencyMismatch) => {
                f.write_str("the order's currency differs from the coupon's")
            }
            Error::RuleFailed(Reason::CategoryNotEligible) => {
                f.write_str("no category of the order is eligible for this coupon")
            }
            Error::RuleFailed(Reason::Expired) => f.write_str("the coupon has expired"),
            Error::RuleFailed(Reason::AlreadyRedeemed) => {
                f.write_str("the coupon was redeemed by another order")
            }
            Error::PurgeNotDue(why) => write!(f, "the campaign cannot be purged yet: {why}"),
            Error::ExportIncomplete => f.write_str(
                "exported_through is not the end of the campaign's events: read them to the end first",
            ),
            Error::CampaignPurged => {
                f.write_str("a purge has sealed the campaign; its expiry can no longer change")
            }
            Error::StoreUnavailable(detail) => write!(f, "the store is unavailable: {detail}"),
            Error::Internal(detail) => write!(f, "internal error: {detail}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<crate::store::StoreError> for Error {
    fn from(err: crate::store::StoreError) -> Self {
        Error::StoreUnavailable(err.0)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
