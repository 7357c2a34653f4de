//! `POST /expirations`: the operator's (or a scheduler's) month-end sweep,
//! a bounded, resumable step at a time.

use coupon_core::Error;
use coupon_core::api::Reply;
use coupon_core::ops::expire::{ExpirationRequest, sweep};
use coupon_spin::serve;
use spin_sdk::http::{IntoResponse, Method, Request};
use std::time::{Duration, Instant};

/// Each call stops walking after this, well inside a serverless platform's
/// request limit, and answers a cursor to resume from.
const MAX_CALL_TIME: Duration = Duration::from_secs(10);

#[spin_sdk::http_service]
async fn handle(request: Request) -> impl IntoResponse {
    serve(request, async |call, store| {
        match (&call.method, call.path.as_str()) {
            (&Method::POST, "/expirations") => {}
            (_, "/expirations") => return Err(Error::MethodNotAllowed { allow: "POST" }),
            _ => return Err(Error::NotFound),
        }
        call.admin().await?;
        // An empty body means "everything due now".
        let request: ExpirationRequest = if call.body_is_empty() {
            ExpirationRequest::default()
        } else {
            call.json()?
        };
        let started = Instant::now();
        let out_of_time = || started.elapsed() >= MAX_CALL_TIME;
        Ok(Reply::json(
            200,
            &sweep(store, request, call.now, out_of_time).await?,
        ))
    })
    .await
}
