//! Checkout must not queue behind a claim storm: redemption latency at 16
//! connections, alone and while 200 other connections storm claims, measured
//! in one run on `coupon-host up` (SQLite default, 32 requests at once per
//! component) and printed: alone, during a storm of clients that honour
//! `Retry-After` when shed, and during one of clients that resend at once. No
//! timing is asserted (figures go to BENCHMARKS.md); every redemption must
//! succeed.
//!
//! `cargo test --release -p coupon-host --test latency -- --nocapture`

mod common;

use bytes::Bytes;
use common::{ADMIN, Host, scratch, user_token};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

const USERS: usize = 200;
const PER_USER: usize = 3;
const REDEEMERS: usize = 16;
const STORMERS: usize = 200;

/// A keep-alive HTTP/1.1 connection that sends JSON and returns (status, JSON).
struct Client {
    address: String,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    async fn connect(address: &str) -> Client {
        let stream = TcpStream::connect(address).await.expect("connects");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("an HTTP/1.1 handshake");
        tokio::spawn(connection);
        Client {
            address: address.to_owned(),
            sender,
        }
    }

    async fn post(
        &mut self,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let mut request = http::Request::post(path)
            .header("host", &self.address)
            .header("authorization", format!("Bearer {token}"));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("a request");
        self.sender.ready().await.expect("the connection is open");
        let response = self.sender.send_request(request).await.expect("an answer");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

fn create_campaign(host: &Host, id: &str, stock: usize, per_user: usize) {
    let now = coupon_core::Timestamp::now().as_second();
    let at = |s: i64| {
        coupon_core::Timestamp::from_second(s)
            .expect("a time")
            .to_string()
    };
    let campaign = json!({
        "id": id, "name": "Latency", "currency": "CNY",
        "discount": {"kind": "fixed", "amount": 500}, "min_order_amount": 2000,
        "stock": stock, "per_user_limit": per_user, "redeemable_by_users": true,
        "claim_starts_at": at(now - 3600), "claim_ends_at": at(now + 3600),
        "time_zone": "Asia/Shanghai", "expiry": {"kind": "end_of_month", "month": "9000-01"}
    });
    let (status, body) = host.request("POST", "/campaigns", ADMIN, &[], Some(campaign));
    assert_eq!(status, 201, "POST /campaigns: {body}");
}

/// Redeems `coupons` over `REDEEMERS` connections; the latency of each, sorted.
async fn redeem_all(address: &str, coupons: Vec<(String, String)>) -> Vec<Duration> {
    let queue = Arc::new(std::sync::Mutex::new(coupons));
    let mut tasks = Vec::new();
    for _ in 0..REDEEMERS {
        let (queue, address) = (queue.clone(), address.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&address).await;
            let mut latencies = Vec::new();
            loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some((user, code)) = next else { break };
                let order =
                    json!({"id": format!("order-{code}"), "amount": 8800, "currency": "CNY"});
                let started = Instant::now();
                let (status, body) = client
                    .post(
                        "/redemptions",
                        &user_token(&user),
                        None,
                        json!({"code": code, "order": order}),
                    )
                    .await;
                latencies.push(started.elapsed());
                assert_eq!(status, 201, "redeeming {code}: {body}");
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a redeemer"));
    }
    all.sort();
    all
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn summary(sorted: &[Duration]) -> String {
    format!(
        "{} redemptions: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        sorted.len(),
        percentile(sorted, 0.50).as_secs_f64() * 1e3,
        percentile(sorted, 0.99).as_secs_f64() * 1e3,
        sorted.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    )
}

/// Redemption latencies while a claim storm runs, and the storm's rates.
struct Stormy {
    latencies: Vec<Duration>,
    claims_per_second: f64,
    shed_per_second: f64,
}

/// Redeems `coupons` while `STORMERS` connections claim as fast as they can.
/// A shed claim (503 `overloaded`) is sent again after `Retry-After` (1 s,
/// plus jitter) if `honour_retry_after`, else at once: the worst case.
async fn redeem_during_storm(
    address: &str,
    coupons: Vec<(String, String)>,
    honour_retry_after: bool,
) -> Stormy {
    let stop = Arc::new(AtomicBool::new(false));
    let claims = Arc::new(AtomicUsize::new(0));
    let shed = Arc::new(AtomicUsize::new(0));
    let mut stormers = Vec::new();
    for s in 0..STORMERS {
        let (stop, claims, shed, address) = (
            stop.clone(),
            claims.clone(),
            shed.clone(),
            address.to_owned(),
        );
        stormers.push(tokio::spawn(async move {
            let mut client = Client::connect(&address).await;
            let token = user_token(&format!("stormer-{honour_retry_after}-{s}"));
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("storm-{s}-{n}");
                let (status, body) = client
                    .post(
                        "/claims",
                        &token,
                        Some(&key),
                        json!({"campaign_id": "storm"}),
                    )
                    .await;
                if status == 503 && body["error"]["code"] == "overloaded" {
                    let shed = shed.fetch_add(1, Ordering::Relaxed);
                    if honour_retry_after {
                        let jitter = (shed as u64).wrapping_mul(7_919) % 500;
                        tokio::time::sleep(Duration::from_millis(1_000 + jitter)).await;
                    }
                    continue;
                }
                assert!(status < 500, "a claim in the storm: {status} {body}");
                claims.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    // Let the storm build up before checkout starts.
    while claims.load(Ordering::Relaxed) < 2 * STORMERS {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let (claims_before, shed_before) =
        (claims.load(Ordering::Relaxed), shed.load(Ordering::Relaxed));
    let latencies = redeem_all(address, coupons).await;
    let seconds = started.elapsed().as_secs_f64();
    let claims_per_second = (claims.load(Ordering::Relaxed) - claims_before) as f64 / seconds;
    let shed_per_second = (shed.load(Ordering::Relaxed) - shed_before) as f64 / seconds;
    stop.store(true, Ordering::Relaxed);
    for stormer in stormers {
        stormer.await.expect("a stormer");
    }
    Stormy {
        latencies,
        claims_per_second,
        shed_per_second,
    }
}

#[test]
fn redemption_latency_alone_and_during_a_claim_storm() {
    let dir = scratch("latency");
    let host = Host::start(&["--state-dir", dir.to_str().expect("a UTF-8 path")]);
    create_campaign(&host, "checkout", USERS * PER_USER, PER_USER);
    create_campaign(&host, "storm", 1_000_000, 1_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let address = host.address().to_owned();
    let (calm, polite, rude) = runtime.block_on(async {
        // The coupons to redeem: PER_USER for each of USERS users.
        let mut client = Client::connect(&address).await;
        let mut coupons = Vec::new();
        for user in 0..USERS {
            let name = format!("buyer-{user}");
            for n in 0..PER_USER {
                let key = format!("{name}-{n}");
                let (status, body) = client
                    .post(
                        "/claims",
                        &user_token(&name),
                        Some(&key),
                        json!({"campaign_id": "checkout"}),
                    )
                    .await;
                assert_eq!(status, 201, "{body}");
                coupons.push((
                    name.clone(),
                    body["code"].as_str().expect("a code").to_owned(),
                ));
            }
        }
        let third = coupons.len() / 3;
        let ignoring = coupons.split_off(2 * third);
        let honouring = coupons.split_off(third);
        let calm = redeem_all(&address, coupons).await;
        let polite = redeem_during_storm(&address, honouring, true).await;
        let rude = redeem_during_storm(&address, ignoring, false).await;
        (calm, polite, rude)
    });
    println!("== redemption latency, {REDEEMERS} connections, SQLite");
    println!("  alone: {}", summary(&calm));
    for (storm, how) in [
        (&polite, "that honours Retry-After"),
        (&rude, "that ignores Retry-After"),
    ] {
        println!(
            "  during a {STORMERS}-connection claim storm {how} ({:.0} claims/s answered, {:.0}/s shed): {}",
            storm.claims_per_second,
            storm.shed_per_second,
            summary(&storm.latencies)
        );
    }
    host.stop();
}
