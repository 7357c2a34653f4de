//! The month-end sweep at volume on `coupon-host up` with its default SQLite
//! store: 10,000, 100,000 and 1,000,000 coupons (or the counts in
//! `SWEEP_COUPONS`, comma-separated) of a campaign whose month has ended are
//! swept through `POST /expirations` in 10,000-coupon calls by 4 partitions
//! side by side (or `SWEEP_PARTITIONS`), and the time and the host's memory
//! are printed (figures in BENCHMARKS.md). The coupons are
//! claimed beforehand by coupon-core's own claim, natively on the same SQLite
//! file, as the host's clock cannot be set back.
//!
//! `cargo test --release -p coupon-host --test sweep -- --ignored --nocapture`
//! (about 10 minutes, most of it claiming the million coupons).
//!
//! `purging_a_campaign_on_sqlite` measures what a claim stores and how fast
//! `POST /campaigns/{id}/purge` deletes it: 100,000 coupons (or
//! `PURGE_COUPONS`), swept and exported through the host, then purged.

mod common;

use common::{ADMIN, Host, scratch};
use coupon_core::Timestamp;
use coupon_core::auth::UserId;
use coupon_core::code::CouponCode;
use coupon_core::ops::campaigns::create;
use coupon_core::ops::claim::{ClaimRequest, claim};
use coupon_core::store::{Store, StoreError, StoreResult};
use coupon_host::KeyValueStore;
use coupon_host::kv::SqliteStore;
use serde_json::{Value, json};
use std::rc::Rc;
use std::time::Instant;

/// coupon-core's store over the host's SQLite store.
struct Native(SqliteStore);

fn failed(e: coupon_host::KvError) -> StoreError {
    StoreError(e.to_string())
}

impl Store for Native {
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.0.get(key).await.map_err(failed)
    }
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        let found: std::collections::BTreeMap<String, Option<Vec<u8>>> = self
            .0
            .get_many(keys)
            .await
            .map_err(failed)?
            .into_iter()
            .collect();
        Ok(keys
            .iter()
            .map(|k| found.get(k).cloned().flatten())
            .collect())
    }
    async fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.0.set(key, value).await.map_err(failed)
    }
    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> StoreResult<()> {
        self.0.set_many(entries).await.map_err(failed)
    }
    async fn increment(&self, key: &str, delta: i64) -> StoreResult<i64> {
        self.0.increment(key, delta).await.map_err(failed)
    }
    async fn delete_many(&self, keys: &[String]) -> StoreResult<()> {
        self.0.delete_many(keys).await.map_err(failed)
    }
}

/// User `u{i}`, as a verified token names it.
fn user(i: usize) -> UserId {
    let token = coupon_core::auth::sign_user_token(
        b"seed",
        &json!({"sub": format!("u{i}"), "exp": 4_102_444_800_i64}),
    );
    coupon_core::auth::verify_user(Some(&format!("Bearer {token}")), b"seed", Timestamp::now())
        .expect("a valid token")
}

fn ts(s: &str) -> Timestamp {
    coupon_core::time::parse(s).expect("a time")
}

/// Claims `n` coupons of a fresh October 2026 campaign, in Shanghai, kept a
/// day after its month, natively.
fn seed(dir: &std::path::Path, n: usize) {
    let store = Rc::new(Native(
        SqliteStore::open(dir.join("sqlite_key_value.db"), "default").expect("SQLite"),
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let campaign = coupon_core::api::parse_json(
            json!({
                "id": "october", "name": "October", "currency": "CNY",
                "discount": {"kind": "fixed", "amount": 500}, "min_order_amount": 2000,
                "stock": n, "per_user_limit": 1, "retention_days": 1,
                "claim_starts_at": "2026-10-01T00:00:00+08:00",
                "claim_ends_at": "2026-10-31T00:00:00+08:00",
                "time_zone": "Asia/Shanghai", "expiry": {"kind": "end_of_claim_month"}
            })
            .to_string()
            .as_bytes(),
        )
        .expect("a campaign");
        let created_at = coupon_core::time::parse("2026-10-01T00:00:00+08:00").expect("a time");
        create(&*store, campaign, created_at)
            .await
            .expect("created");
        let workers: Vec<_> = (0..32)
            .map(|worker| {
                let store = store.clone();
                tokio::task::spawn_local(async move {
                    for i in (worker..n).step_by(32) {
                        let mut bytes = [0u8; coupon_core::code::RANDOM_BYTES];
                        bytes[..8].copy_from_slice(&(i as u64).to_be_bytes());
                        claim(
                            &*store,
                            &user(i),
                            "k",
                            ClaimRequest {
                                campaign_id: coupon_core::campaign::CampaignId::parse("october")
                                    .expect("id"),
                            },
                            ts("2026-10-15T12:00:00+08:00"),
                            CouponCode::from_random(bytes),
                        )
                        .await
                        .expect("claimed");
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.expect("a worker");
        }
    });
}

/// `VmHWM` (peak) and `VmRSS` of process `pid`, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// One whole walk of the sweep in calls of 10,000, by `partitions` walks
/// side by side: the sum of `field` over the answers, and how many calls.
fn walk(host: &Host, field: &str, partitions: u32) -> (u64, u32) {
    std::thread::scope(|scope| {
        let walks: Vec<_> = (0..partitions)
            .map(|index| {
                let partition = format!("{index}/{partitions}");
                scope.spawn(move || walk_partition(host, field, &partition))
            })
            .collect();
        walks
            .into_iter()
            .map(|walk| walk.join().expect("a walk"))
            .fold((0, 0), |(total, calls), (t, c)| (total + t, calls + c))
    })
}

/// One partition's walk: the sum of `field` over its answers, and its calls.
fn walk_partition(host: &Host, field: &str, partition: &str) -> (u64, u32) {
    let (mut total, mut calls, mut cursor) = (0, 0, Value::Null);
    loop {
        let (status, body) = host.request(
            "POST",
            "/expirations",
            ADMIN,
            &[],
            Some(json!({"limit": 10_000, "cursor": cursor, "partition": partition})),
        );
        assert_eq!(status, 200, "{body}");
        total += body[field].as_u64().unwrap_or(0);
        calls += 1;
        cursor = body["next_cursor"].clone();
        if cursor.is_null() {
            return (total, calls);
        }
    }
}

#[test]
#[ignore = "a measurement: run it by name"]
fn sweeping_up_to_a_million_coupons_on_sqlite() {
    let counts: Vec<usize> = match std::env::var("SWEEP_COUPONS") {
        Ok(counts) => counts
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("SWEEP_COUPONS: comma-separated counts")
            })
            .collect(),
        Err(_) => vec![10_000, 100_000, 1_000_000],
    };
    let partitions: u32 = std::env::var("SWEEP_PARTITIONS")
        .map(|p| p.parse().expect("SWEEP_PARTITIONS: a count"))
        .unwrap_or(4);
    for n in counts {
        let dir = scratch(&format!("sweep-{n}"));
        let started = Instant::now();
        seed(&dir, n);
        let seeded = started.elapsed();
        let host = Host::start(&["--state-dir", dir.to_str().expect("a UTF-8 path")]);
        let (peak_before, _) = memory(host.pid());
        let started = Instant::now();
        let (expired, calls) = walk(&host, "expired", partitions);
        let swept = started.elapsed();
        let (peak, rss) = memory(host.pid());
        assert_eq!(expired, n as u64);
        let (_, stats) = host.request("GET", "/campaigns/october", ADMIN, &[], None);
        assert_eq!(stats["stats"]["expired"], n);
        // The next walk settles the expiry ledger the first one wrote.
        let started = Instant::now();
        let (settled, settle_calls) = walk(&host, "settled", partitions);
        let settling = started.elapsed();
        assert_eq!(settled, n as u64);
        println!(
            "{n} coupons (seeded in {:.1} s): swept by {partitions} partitions in {:.2} s over {calls} calls, {:.0} coupons/s; \
             the ledger settled by the next walk in {:.2} s over {settle_calls} calls; \
             host peak RSS {peak_before:.0} MiB before, {peak:.0} MiB after the sweep (RSS now {rss:.0} MiB)",
            seeded.as_secs_f64(),
            swept.as_secs_f64(),
            n as f64 / swept.as_secs_f64(),
            settling.as_secs_f64()
        );
        host.stop();
    }
}

/// Rows of the SQLite store, and the bytes of their keys and values.
fn stored(db: &std::path::Path) -> (u64, u64) {
    let connection = rusqlite::Connection::open(db).expect("the store's file");
    connection
        .query_row(
            "SELECT count(*), coalesce(sum(length(key) + length(value)), 0) FROM spin_key_value",
            [],
            |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64)),
        )
        .expect("a count")
}

#[test]
#[ignore = "a measurement: run it by name"]
fn purging_a_campaign_on_sqlite() {
    let n: usize = std::env::var("PURGE_COUPONS")
        .map(|n| n.parse().expect("PURGE_COUPONS: a count"))
        .unwrap_or(100_000);
    let dir = scratch(&format!("purge-{n}"));
    let db = dir.join("sqlite_key_value.db");
    let state_dir = ["--state-dir", dir.to_str().expect("a UTF-8 path")];
    seed(&dir, n);
    let claimed = stored(&db);
    let host = Host::start(&state_dir);
    walk(&host, "expired", 4);
    walk(&host, "settled", 4);
    let swept = stored(&db);
    // The export: every event, a thousand a page.
    let started = Instant::now();
    let (mut cursor, mut events) = (String::new(), 0);
    loop {
        let path = format!("/campaigns/october/events?limit=1000&cursor={cursor}");
        let (status, page) = host.request("GET", &path, ADMIN, &[], None);
        assert_eq!(status, 200, "{page}");
        events += page["events"].as_array().map_or(0, Vec::len);
        cursor = page["next_cursor"].as_str().expect("a cursor").to_owned();
        if page["has_more"] == json!(false) {
            break;
        }
    }
    let exported = started.elapsed();
    host.stop();
    // Sealed natively two leases ago, as the host's clock cannot be set back.
    let store = Native(SqliteStore::open(&db, "default").expect("SQLite"));
    let id = coupon_core::campaign::CampaignId::parse("october").expect("id");
    let lease = coupon_core::lease::LEASE;
    let now = Timestamp::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    for at in [now - lease - lease - lease, now - lease - lease] {
        let request = coupon_core::ops::purge::PurgeRequest {
            exported_through: Some(cursor.clone()),
            ..Default::default()
        };
        let purge = coupon_core::ops::purge::purge(&store, &id, request, at);
        let sealed = runtime.block_on(purge).expect("sealed");
        assert_eq!(sealed.state, coupon_core::ops::purge::State::Sealing);
    }
    let host = Host::start(&state_dir);
    let started = Instant::now();
    let (mut next, mut calls, mut deleted) = (Value::Null, 0, 0);
    loop {
        let body = json!({"cursor": next, "changed_by": "measurement"});
        let (status, answer) =
            host.request("POST", "/campaigns/october/purge", ADMIN, &[], Some(body));
        assert_eq!(status, 200, "{answer}");
        calls += 1;
        deleted += answer["deleted"].as_u64().unwrap_or(0);
        next = answer["next_cursor"].clone();
        if answer["state"] == "purged" {
            break;
        }
        assert_eq!(answer["state"], "purging", "{answer}");
    }
    let purging = started.elapsed();
    host.stop();
    let purged = stored(&db);
    let per = |(rows, bytes): (u64, u64)| (rows as f64 / n as f64, bytes as f64 / n as f64);
    let (claim_rows, claim_bytes) = per(claimed);
    let (swept_rows, swept_bytes) = per(swept);
    println!(
        "{n} coupons: after the claims {} rows, {} bytes ({claim_rows:.2} rows, {claim_bytes:.0} bytes a claim); \
         after the sweep {} rows, {} bytes ({swept_rows:.2} rows, {swept_bytes:.0} bytes a claim); \
         {events} events exported in {:.2} s; purged in {:.2} s over {calls} calls \
         ({:.0} coupons/s, {deleted} keys asked deleted); {} rows, {} bytes left",
        claimed.0,
        claimed.1,
        swept.0,
        swept.1,
        exported.as_secs_f64(),
        purging.as_secs_f64(),
        n as f64 / purging.as_secs_f64(),
        purged.0,
        purged.1,
    );
    // What stays: each user's wallet counter, and the campaign's tombstone.
    assert!(purged.0 <= n as u64 + 10, "{purged:?}");
}
