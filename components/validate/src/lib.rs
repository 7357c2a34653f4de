//! Reading coupons without changing them: `GET /coupons/{code}` and
//! `POST /validations` (would this coupon apply to this order?).

use coupon_core::Error;
use coupon_core::api::Reply;
use coupon_core::ops::coupons;
use coupon_spin::serve;
use spin_sdk::http::{IntoResponse, Method, Request};

#[spin_sdk::http_service]
async fn handle(request: Request) -> impl IntoResponse {
    serve(request, async |call, store| {
        let coupon = call.segments_after("/coupons");
        match (&call.method, call.path.as_str(), coupon.as_deref()) {
            (&Method::POST, "/validations", _) => {
                let user = call.user().await?;
                let validation = coupons::validate(store, &user, call.json()?, call.now).await?;
                Ok(Reply::json(200, &validation))
            }
            (&Method::GET, _, Some([code])) => {
                let user = call.user().await?;
                Ok(Reply::json(
                    200,
                    &coupons::get(store, &user, code, call.now).await?,
                ))
            }
            (_, "/validations", _) => Err(Error::MethodNotAllowed { allow: "POST" }),
            (_, _, Some([_])) => Err(Error::MethodNotAllowed { allow: "GET" }),
            _ => Err(Error::NotFound),
        }
    })
    .await
}
