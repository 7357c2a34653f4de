//! `POST /claims`: a user claims a coupon of a campaign, once per idempotency key.

use coupon_core::Error;
use coupon_core::api::{Reply, idempotency_key};
use coupon_core::ops::claim::claim;
use coupon_spin::{random_code, serve};
use spin_sdk::http::{IntoResponse, Method, Request};

#[spin_sdk::http_service]
async fn handle(request: Request) -> impl IntoResponse {
    serve(request, async |call, store| {
        match (&call.method, call.path.as_str()) {
            (&Method::POST, "/claims") => {}
            (_, "/claims") => return Err(Error::MethodNotAllowed { allow: "POST" }),
            _ => return Err(Error::NotFound),
        }
        let user = call.user().await?;
        let key = idempotency_key(call.header("idempotency-key"))?;
        let claimed = claim(store, &user, key, call.json()?, call.now, random_code()).await?;
        let reply = Reply::json(201, &claimed.coupon);
        Ok(match claimed.replayed {
            true => reply.with_header("idempotent-replayed", "true"),
            false => reply,
        })
    })
    .await
}
