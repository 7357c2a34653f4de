//! Redis as the store of record: `coupon-host up` refuses a Redis that would
//! lose acknowledged writes on a restart, and a Redis killed with SIGKILL in
//! the middle of a claim storm loses no acknowledged claim or redemption and
//! oversells nothing.

mod common;

use common::{
    ADMIN, Host, Redis, SECRET, built_manifest, from_now, scratch, user_token, write_redis_config,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn a_volatile_redis_is_refused_unless_allowed() {
    let redis = Redis::start_volatile();
    let dir = scratch("volatile");
    let config = dir.join("runtime-config.toml");
    write_redis_config(&config, redis.port);
    let config = config.to_str().expect("utf-8");
    let output = Command::new(env!("CARGO_BIN_EXE_coupon-host"))
        .args(["up", "--listen", "127.0.0.1:0", "-f"])
        .arg(built_manifest())
        .args(["--runtime-config-file", config])
        .env("SPIN_VARIABLE_ADMIN_TOKEN", ADMIN)
        .env("SPIN_VARIABLE_USER_TOKEN_SECRET", SECRET)
        .output()
        .expect("runs");
    assert!(!output.status.success(), "served on a volatile Redis");
    let message = String::from_utf8_lossy(&output.stderr);
    for named in ["appendonly", "appendfsync", "--allow-volatile-store"] {
        assert!(message.contains(named), "{named} not in: {message}");
    }
    // Told so, it runs.
    let host = Host::start(&["--runtime-config-file", config, "--allow-volatile-store"]);
    let (status, _) = host.request("GET", "/campaigns/none", ADMIN, &[], None);
    assert_eq!(status, 404);
    host.stop();
}

const STOCK: u64 = 150;
const USERS: usize = 400;
const CLIENTS: usize = 8;

/// What the clients were told.
#[derive(Default)]
struct Acknowledged {
    /// code → user, for every 201 or replayed claim.
    claims: BTreeMap<String, String>,
    /// code → order, for every redemption answered 201 or 200.
    redemptions: BTreeMap<String, String>,
    sold_out: usize,
}

#[test]
fn a_redis_killed_mid_storm_loses_no_acknowledged_claim_or_redemption() {
    let mut redis = Redis::start();
    let dir = scratch("redis-kill");
    let config = dir.join("runtime-config.toml");
    write_redis_config(&config, redis.port);
    let host = Arc::new(Host::start(&[
        "--runtime-config-file",
        config.to_str().expect("utf-8"),
    ]));
    let campaign = json!({
        "id": "storm", "name": "Storm", "currency": "CNY",
        "discount": {"kind": "fixed", "amount": 500}, "min_order_amount": 1000,
        "stock": STOCK, "per_user_limit": 1, "shards": 4,
        "redeemable_by_users": true,
        "claim_starts_at": from_now(-3600), "claim_ends_at": from_now(3600),
        "time_zone": "Asia/Shanghai", "expiry": {"kind": "end_of_month", "month": "9000-01"}
    });
    let (status, body) = host.request("POST", "/campaigns", ADMIN, &[], Some(campaign));
    assert_eq!(status, 201, "{body}");

    let seen = Arc::new(Mutex::new(Acknowledged::default()));
    let started = Arc::new(AtomicBool::new(false));
    // A request the outage cut off holds its key, lock or position for a
    // lease (90 s) after a retry first meets it: the retries wait that out.
    let deadline = Instant::now() + Duration::from_secs(300);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (host, seen, started) = (host.clone(), seen.clone(), started.clone());
            std::thread::spawn(move || {
                for u in (c..USERS).step_by(CLIENTS) {
                    started.store(true, Ordering::Relaxed);
                    client(&host, &format!("user{u}"), &seen, deadline);
                }
            })
        })
        .collect();
    while !started.load(Ordering::Relaxed) || seen.lock().expect("lock").claims.len() < 20 {
        std::thread::sleep(Duration::from_millis(5));
    }
    redis.kill();
    // With the store down, requests fail fast rather than hold a slot.
    std::thread::sleep(Duration::from_millis(200));
    let asked = Instant::now();
    let (status, body) = host.request("GET", "/campaigns/storm", ADMIN, &[], None);
    let waited = asked.elapsed();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("store_unavailable")),
        "{body}"
    );
    println!("with Redis down, GET /campaigns answered 503 in {waited:?}");
    // Each store call waits at most 2 s (`CALL_TIMEOUT`) and the request fails
    // at its first; the slack is for a loaded machine. Before the bound, 18.7 s.
    assert!(waited < Duration::from_secs(5), "503 only after {waited:?}");
    std::thread::sleep(Duration::from_millis(500));
    redis.restart();
    for client in clients {
        client.join().expect("a client");
    }

    let seen = seen.lock().expect("lock");
    let (status, campaign) = host.request("GET", "/campaigns/storm", ADMIN, &[], None);
    assert_eq!(status, 200, "{campaign}");
    let stats = &campaign["stats"];
    println!(
        "{} claims and {} redemptions acknowledged, {} sold out; stats {stats}",
        seen.claims.len(),
        seen.redemptions.len(),
        seen.sold_out,
    );
    assert!(
        seen.claims.len() as u64 <= STOCK,
        "oversold: {}",
        seen.claims.len()
    );
    assert!(stats["claimed"].as_u64().expect("claimed") <= STOCK);
    assert!(
        seen.claims.len() > 20,
        "the storm went on after the restart"
    );
    for (code, user) in &seen.claims {
        let (status, coupon) = host.request(
            "GET",
            &format!("/coupons/{code}"),
            &user_token(user),
            &[],
            None,
        );
        assert_eq!(
            status, 200,
            "acknowledged coupon {code} of {user} lost: {coupon}"
        );
        if let Some(order) = seen.redemptions.get(code) {
            assert_eq!(
                (coupon["state"].as_str(), coupon["order_id"].as_str()),
                (Some("redeemed"), Some(order.as_str())),
                "acknowledged redemption of {code} lost"
            );
        }
    }
    drop(seen);
    if let Ok(host) = Arc::try_unwrap(host) {
        host.stop();
    }
}

/// Claims one coupon for `user` with one key, retrying as the README says,
/// then redeems it; records what was acknowledged.
fn client(host: &Host, user: &str, seen: &Mutex<Acknowledged>, deadline: Instant) {
    let token = user_token(user);
    let key = format!("{user}-k");
    let claim = retry(deadline, || {
        host.request(
            "POST",
            "/claims",
            &token,
            &[("idempotency-key", &key)],
            Some(json!({"campaign_id": "storm"})),
        )
    });
    let code = match claim {
        (201 | 200, coupon) => coupon["code"].as_str().expect("a code").to_owned(),
        (410, _) => {
            seen.lock().expect("lock").sold_out += 1;
            return;
        }
        (status, body) => panic!("claim for {user}: {status} {body}"),
    };
    seen.lock()
        .expect("lock")
        .claims
        .insert(code.clone(), user.to_owned());
    let order = format!("order-{user}");
    let redemption = retry(deadline, || {
        host.request(
            "POST",
            "/redemptions",
            &token,
            &[],
            Some(json!({"code": code, "order": {"id": order, "amount": 3000, "currency": "CNY"}})),
        )
    });
    match redemption {
        (201 | 200, _) => {
            seen.lock().expect("lock").redemptions.insert(code, order);
        }
        (status, body) => panic!("redemption of {code}: {status} {body}"),
    }
}

/// Sends until the answer is not one the README says to retry.
fn retry(deadline: Instant, mut send: impl FnMut() -> (u16, Value)) -> (u16, Value) {
    loop {
        let (status, body) = send();
        let again = matches!(
            (status, body["error"]["code"].as_str()),
            (503, _) | (409, Some("request_in_progress")) | (429, _)
        );
        if !again {
            return (status, body);
        }
        assert!(
            Instant::now() < deadline,
            "still {status} {body} at the deadline"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
