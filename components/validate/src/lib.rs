//! Reading coupons without changing them: `GET /coupons/{code}` (the
//! holder's, or any for the operator) and `POST /validations` (would this
//! coupon apply to this order?).

use coupon_core::Error;
use coupon_core::api::Reply;
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
                let user = call.user().await?;
                let validation = coupons::validate(store, &user, call.json()?, call.now).await?;
                Ok(Reply::json(200, &validation))
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
            (_, _, Some([_])) => Err(Error::MethodNotAllowed { allow: "GET" }),
            _ => Err(Error::NotFound),
        }
    })
    .await
}
