//! `POST /redemptions`: a user's coupon pays part of an order, exactly once;
//! the shop's checkout redeems for the user (users themselves only where the
//! campaign allows it).
//! `DELETE /redemptions/{code}?order_id=...`: the operator or the checkout
//! reports the order cancelled, and the coupon is usable again.
//! `POST /holds`: the checkout sets a coupon aside for an order while it is
//! paid; `DELETE /holds/{code}?order_id=...` gives it back before its time.

use coupon_core::Error;
use coupon_core::api::{Reply, query_param};
use coupon_core::ops::coupons::check_order_id;
use coupon_core::ops::ledger::Actor;
use coupon_core::ops::{holds, redeem};
use coupon_spin::{Call, serve};
use spin_sdk::http::{IntoResponse, Method, Request};

#[spin_sdk::http_service]
async fn handle(request: Request) -> impl IntoResponse {
    serve(request, async |call, store| {
        if let Some(segments) = call.segments_after("/holds") {
            return match (&call.method, segments.as_slice()) {
                (&Method::POST, []) => {
                    let caller = call.caller().await?;
                    let held = holds::hold(store, caller, call.json()?, call.now).await?;
                    let status = if held.replayed { 200 } else { 201 };
                    Ok(Reply::json(status, &held.hold))
                }
                (&Method::DELETE, [code]) => {
                    let by = operator_or_checkout(call).await?;
                    let order_id = required_order_id(&call.query)?;
                    let released = holds::release(store, code, &order_id, by, call.now).await?;
                    Ok(Reply::json(200, &released))
                }
                (_, []) => Err(Error::MethodNotAllowed { allow: "POST" }),
                (_, [_]) => Err(Error::MethodNotAllowed { allow: "DELETE" }),
                _ => Err(Error::NotFound),
            };
        }
        let segments = call.segments_after("/redemptions").ok_or(Error::NotFound)?;
        match (&call.method, segments.as_slice()) {
            (&Method::POST, []) => {
                let caller = call.caller().await?;
                let redeemed = redeem::redeem(store, caller, call.json()?, call.now).await?;
                let status = if redeemed.replayed { 200 } else { 201 };
                Ok(Reply::json(status, &redeemed.redemption))
            }
            (&Method::DELETE, [code]) => {
                // The operator, or the shop's checkout when the order's payment failed.
                let by = operator_or_checkout(call).await?;
                let order_id = required_order_id(&call.query)?;
                Ok(Reply::json(
                    200,
                    &redeem::cancel(store, code, &order_id, by, call.now).await?,
                ))
            }
            (_, []) => Err(Error::MethodNotAllowed { allow: "POST" }),
            (_, [_]) => Err(Error::MethodNotAllowed { allow: "DELETE" }),
            _ => Err(Error::NotFound),
        }
    })
    .await
}

/// Who calls, where only the operator or the shop's checkout may.
async fn operator_or_checkout(call: &Call) -> Result<Actor, Error> {
    match call.admin().await {
        Ok(_) => Ok(Actor::Operator),
        Err(_) => {
            call.checkout().await?;
            Ok(Actor::Checkout)
        }
    }
}

/// The `order_id` query parameter, required.
fn required_order_id(query: &str) -> Result<String, Error> {
    let order_id = query_param(query, "order_id")?
        .ok_or_else(|| Error::invalid("order_id", "the query parameter is required"))?;
    check_order_id("order_id", &order_id)?;
    Ok(order_id)
}
