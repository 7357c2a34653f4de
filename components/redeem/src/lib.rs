//! `POST /redemptions`: a user's coupon pays part of an order, exactly once;
//! the shop's checkout redeems for the user (users themselves only where the
//! campaign allows it).
//! `DELETE /redemptions/{code}?order_id=...`: the operator or the checkout
//! reports the order cancelled, and the coupon is usable again.

use coupon_core::Error;
use coupon_core::api::{Reply, query_param};
use coupon_core::ops::coupons::check_order_id;
use coupon_core::ops::redeem;
use coupon_spin::serve;
use spin_sdk::http::{IntoResponse, Method, Request};

#[spin_sdk::http_service]
async fn handle(request: Request) -> impl IntoResponse {
    serve(request, async |call, store| {
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
                if call.admin().await.is_err() {
                    call.checkout().await?;
                }
                let order_id = query_param(&call.query, "order_id")?
                    .ok_or_else(|| Error::invalid("order_id", "the query parameter is required"))?;
                check_order_id("order_id", &order_id)?;
                Ok(Reply::json(
                    200,
                    &redeem::cancel(store, code, &order_id, call.now).await?,
                ))
            }
            (_, []) => Err(Error::MethodNotAllowed { allow: "POST" }),
            (_, [_]) => Err(Error::MethodNotAllowed { allow: "DELETE" }),
            _ => Err(Error::NotFound),
        }
    })
    .await
}
