//! Reading coupons without changing them: `GET /coupons` (the caller's
//! wallet, newest first), `GET /coupons/{code}` (the holder's, or any for the
//! operator) and `POST /validations` (would this coupon apply to this order?).

use coupon_core::Error;
use coupon_core::api::{Reply, query_param};
use coupon_core::coupon::CouponState;
use coupon_core::error::Denial;
use coupon_core::ops::coupons;
use coupon_spin::serve;
use spin_sdk::http::{IntoResponse, Method, Request};

#[spin_sdk::http_service]
async fn handle(request: Request) -> impl IntoResponse {
    serve(request, async |call, store| {
        let coupon = call.segments_after("/coupons");
        match (&call.method, call.path.as_str(), coupon.as_deref()) {
            (&Method::POST, "/validations", _) => {
                let caller = call.caller().await?;
                let validation = coupons::validate(store, caller, call.json()?, call.now).await?;
                Ok(Reply::json(200, &validation))
            }
            (&Method::GET, _, Some([])) => {
                let user = call.user().await?;
                let state = match query_param(&call.query, "state")? {
                    Some(name) => Some(CouponState::parse(&name).ok_or_else(|| {
                        Error::invalid("state", "must be issued, redeemed or expired")
                    })?),
                    None => None,
                };
                let limit = match query_param(&call.query, "limit")? {
                    Some(raw) => raw.parse().map_err(|_| {
                        Error::invalid(
                            "limit",
                            format!("must be 1 to {}", coupons::MAX_WALLET_PAGE),
                        )
                    })?,
                    None => coupons::DEFAULT_WALLET_PAGE,
                };
                let before =
                    match query_param(&call.query, "before")? {
                        Some(raw) => Some(raw.parse().map_err(|_| {
                            Error::invalid("before", "must be a cursor from `next`")
                        })?),
                        None => None,
                    };
                let wallet = coupons::list(store, &user, state, limit, before, call.now).await?;
                Ok(Reply::json(200, &wallet))
            }
            (&Method::GET, _, Some([code])) => {
                // The holder's JWT, or the operator's token for support.
                let user = match call.user().await {
                    Ok(user) => Some(user),
                    // Not a token the user secret signed: maybe the operator's.
                    Err(Error::Unauthorized(Denial::Invalid | Denial::Missing)) => {
                        call.admin().await?;
                        None
                    }
                    Err(e) => return Err(e),
                };
                let coupon = coupons::get(store, user.as_ref(), code, call.now).await?;
                Ok(Reply::json(200, &coupon))
            }
            (_, "/validations", _) => Err(Error::MethodNotAllowed { allow: "POST" }),
            (_, _, Some([] | [_])) => Err(Error::MethodNotAllowed { allow: "GET" }),
            _ => Err(Error::NotFound),
        }
    })
    .await
}
