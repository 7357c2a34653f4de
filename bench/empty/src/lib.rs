//! The smallest useful component: 200 "ok" to any request, touching neither
//! the store nor the variables. Served by `coupon-host up -f bench/spin.toml`,
//! it measures what the host costs per request before any coupon logic.

use spin_sdk::http::{IntoResponse, Request};

#[spin_sdk::http_service]
async fn handle(_request: Request) -> impl IntoResponse {
    "ok"
}
