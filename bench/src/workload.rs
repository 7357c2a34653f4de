//! Realistic data: many users with their own tokens, several campaigns open
//! now, a fresh idempotency key per claim, and coupons claimed ahead so each
//! is validated by its holder and redeemed once.

use crate::client::{Call, Connection};
use crate::host::{ADMIN_TOKEN, USER_TOKEN_SECRET};
use anyhow::{Context, Result, bail, ensure};
use coupon_core::Timestamp;
use serde_json::{Value, json};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// User tokens expire then (2100-01-01): long after any run.
const TOKEN_EXPIRY: i64 = 4_102_444_800;

/// Orders are this large, over every campaign's minimum of 20.00.
const ORDER_AMOUNT: i64 = 3_000;

/// The users and campaigns a run works with.
pub struct Workload {
    /// The user token of user `i`, whose id is `user-<i>`.
    tokens: Vec<String>,
    campaigns: usize,
}

/// A claimed coupon and the user holding it.
#[derive(Debug, Clone)]
pub struct Coupon {
    pub user: usize,
    pub code: String,
}

impl Workload {
    pub fn new(users: usize, campaigns: usize) -> Workload {
        let tokens = (0..users)
            .map(|i| {
                let claims = json!({"sub": format!("user-{i}"), "exp": TOKEN_EXPIRY});
                coupon_core::auth::sign_user_token(USER_TOKEN_SECRET.as_bytes(), &claims)
            })
            .collect();
        Workload { tokens, campaigns }
    }

    pub fn campaign_id(&self, i: usize) -> String {
        format!("bench-{}", i % self.campaigns)
    }

    /// Campaign `i`: claimable from an hour ago to an hour from now, stock
    /// that never runs out in a run, and coupons valid until the end of 2099.
    fn campaign(&self, i: usize, now: Timestamp) -> Result<Value> {
        let hour = |hours: i64| {
            Timestamp::from_second(now.as_second() + hours * 3600)
                .map(|t| t.to_string())
                .context("a time an hour from now")
        };
        Ok(json!({
            "id": self.campaign_id(i),
            "name": format!("Bench campaign {i}"),
            "currency": "CNY",
            "discount": {"kind": "fixed", "amount": 500},
            "min_order_amount": 2000,
            "stock": 100_000_000,
            "per_user_limit": 1000,
            "redeemable_by_users": true,
            "claim_starts_at": hour(-1)?,
            "claim_ends_at": hour(1)?,
            "time_zone": "Asia/Shanghai",
            "expiry": {"kind": "end_of_month", "month": "2099-12"}
        }))
    }

    /// Claim number `n`: user `n mod users` on campaign `n mod campaigns`,
    /// with the key `<prefix>-<n>`.
    pub fn claim(&self, n: usize, prefix: &str) -> Call {
        let user = n % self.tokens.len();
        Call::post(
            "/claims",
            &self.tokens[user],
            &json!({"campaign_id": self.campaign_id(n)}),
        )
        .with_idempotency_key(format!("{prefix}-{n}"))
    }

    /// The holder asks whether `coupon` applies to a 30.00 order.
    pub fn validate(&self, coupon: &Coupon) -> Call {
        Call::post(
            "/validations",
            &self.tokens[coupon.user],
            &json!({"code": coupon.code, "order": {"amount": ORDER_AMOUNT, "currency": "CNY"}}),
        )
    }

    /// The holder redeems `coupon` on a 30.00 order `order_id`.
    pub fn redeem(&self, coupon: &Coupon, order_id: &str) -> Call {
        let order = json!({"id": order_id, "amount": ORDER_AMOUNT, "currency": "CNY"});
        Call::post(
            "/redemptions",
            &self.tokens[coupon.user],
            &json!({"code": coupon.code, "order": order}),
        )
    }

    /// Creates the campaigns through `POST /campaigns`.
    pub async fn create_campaigns(&self, address: SocketAddr) -> Result<()> {
        let mut connection = Connection::open(address).await?;
        let now = Timestamp::now();
        for i in 0..self.campaigns {
            let call = Call::post("/campaigns", ADMIN_TOKEN, &self.campaign(i, now)?);
            let answer = connection.send(&call).await?;
            ensure!(
                answer.status == 201,
                "POST /campaigns answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        Ok(())
    }

    /// Reads campaign `i`'s events to the end, `limit` a page, then
    /// reconciles it: how many events, and how long each took.
    pub async fn read_ledger(
        &self,
        address: SocketAddr,
        i: usize,
        limit: u32,
    ) -> Result<(usize, Duration, Duration)> {
        let mut connection = Connection::open(address).await?;
        let id = self.campaign_id(i);
        let reading = Instant::now();
        let (mut events, mut cursor) = (0, String::new());
        loop {
            let path = format!("/campaigns/{id}/events?limit={limit}&cursor={cursor}");
            let page = get_json(&mut connection, path).await?;
            events += page["events"].as_array().map_or(0, Vec::len);
            cursor = page["next_cursor"].as_str().unwrap_or_default().to_owned();
            if page["has_more"] != true {
                break;
            }
        }
        let read = reading.elapsed();
        let reconciling = Instant::now();
        let mut cursor = String::new();
        loop {
            let path = format!("/campaigns/{id}/reconciliation?cursor={cursor}");
            let report = get_json(&mut connection, path).await?;
            match report["cursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => break,
            }
        }
        Ok((events, read, reconciling.elapsed()))
    }

    /// Claims `count` coupons over HTTP from `concurrency` connections (keys
    /// `pre-<n>`), resending a claim the host shed with 503 (same key, so no
    /// coupon is issued twice).
    pub async fn claim_ahead(
        self: &Arc<Self>,
        address: SocketAddr,
        count: usize,
        concurrency: usize,
    ) -> Result<Vec<Coupon>> {
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (workload, next) = (self.clone(), next.clone());
            tasks.spawn(async move {
                let mut connection = Connection::open(address).await?;
                let mut coupons = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        return anyhow::Ok(coupons);
                    }
                    let call = workload.claim(n, "pre");
                    let code = claim_code(&mut connection, &call).await?;
                    coupons.push(Coupon {
                        user: n % workload.tokens.len(),
                        code,
                    });
                }
            });
        }
        let mut coupons = Vec::with_capacity(count);
        while let Some(done) = tasks.join_next().await {
            coupons.extend(done.context("a claiming task panicked")??);
        }
        Ok(coupons)
    }
}

/// An operator's GET that must answer 200: its JSON.
async fn get_json(connection: &mut Connection, path: String) -> Result<Value> {
    let call = Call::get(path, Some(ADMIN_TOKEN));
    let answer = connection.send(&call).await?;
    ensure!(
        answer.status == 200,
        "{} answered {}",
        call.path,
        answer.status
    );
    Ok(answer.json())
}

/// Sends a claim until it is not shed, and returns the issued code.
async fn claim_code(connection: &mut Connection, call: &Call) -> Result<String> {
    for _ in 0..50 {
        let answer = connection.send(call).await?;
        match answer.status {
            201 => {
                let code = answer.json()["code"].as_str().map(str::to_owned);
                return code.context("a 201 to POST /claims without a code");
            }
            503 => tokio::time::sleep(Duration::from_millis(100)).await,
            status => bail!(
                "POST /claims answered {status}: {}",
                String::from_utf8_lossy(&answer.body)
            ),
        }
    }
    bail!("POST /claims was shed 50 times in a row")
}

/// Writes `calls` to `path`, one line each, for `wrk/replay.lua`.
pub fn write_requests(path: &Path, calls: impl Iterator<Item = Call>) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut file = BufWriter::new(file);
    for call in calls {
        writeln!(file, "{}", call.to_line())?;
    }
    file.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}
