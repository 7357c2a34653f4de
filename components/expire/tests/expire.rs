//! `POST /expirations` and expiry exactly at month end in the campaign's zone.

use coupon_tests::*;
use serde_json::{Value, json};

#[tokio::test]
async fn usable_until_the_last_millisecond_of_february_in_shanghai() {
    for sweep in [false, true] {
        let t = TestApp::new().await;
        t.create_campaign(campaign("spring")).await;
        let code = t.claimed_code("alice", "spring").await; // claimed 2028-02-10
        let valid = json!({"amount": 3000, "currency": "CNY"});

        t.set_now("2028-02-29T23:59:59.999+08:00");
        if sweep {
            assert_eq!(t.expire(Value::Null).await.body["expired"], 0);
        }
        assert_eq!(
            t.validate("alice", &code, valid.clone()).await.body["valid"],
            true
        );

        t.set_now("2028-03-01T00:00:00+08:00");
        if sweep {
            assert_eq!(
                t.expire(Value::Null).await.body,
                json!({"examined": 1, "expired": 1, "returned": 0, "settled": 0, "next_cursor": null})
            );
        }
        assert_eq!(
            t.validate("alice", &code, valid.clone()).await.body["reason"],
            "expired"
        );
        t.redeem("alice", &code, order("o1", 3000))
            .await
            .assert_error(410, "expired");
        assert_eq!(t.coupon("alice", &code).await.body["state"], "expired");
        assert_eq!(
            t.campaign("spring").await["stats"]["expired"],
            u64::from(sweep)
        );
    }
}

#[tokio::test]
async fn the_last_millisecond_redeems_and_the_next_instant_does_not() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let early = t.claimed_code("alice", "spring").await;
    let late = t.claimed_code("bob", "spring").await;
    t.set_now("2028-02-29T23:59:59.999+08:00");
    assert_eq!(
        t.redeem("alice", &early, order("o1", 3000)).await.status,
        201
    );
    t.set_now("2028-03-01T00:00:00+08:00");
    t.redeem("bob", &late, order("o2", 3000))
        .await
        .assert_error(410, "expired");
}

#[tokio::test]
async fn a_fixed_month_campaign_claimed_in_january_expires_at_the_end_of_february() {
    for sweep in [false, true] {
        let t = TestApp::new().await;
        let body = campaign_with(
            "feb",
            json!({"expiry": {"kind": "end_of_month", "month": "2028-02"}}),
        );
        assert_eq!(t.create_campaign(body).await.status, 201);
        t.set_now("2028-01-20T12:00:00+08:00");
        let answer = t.claim("alice", "feb", "k").await;
        assert_eq!(answer.body["expires_at"], "2028-03-01T00:00:00+08:00");
        let code = answer.body["code"].as_str().expect("code").to_owned();
        let early = t.claimed_code("bob", "feb").await;

        t.set_now("2028-02-29T23:59:59.999+08:00");
        if sweep {
            assert_eq!(t.expire(Value::Null).await.body["expired"], 0);
        }
        let valid = t.validate("alice", &code, order("o1", 3000)).await;
        assert_eq!(valid.body["valid"], true, "{:#}", valid.body);
        assert_eq!(t.redeem("bob", &early, order("o2", 3000)).await.status, 201);

        t.set_now("2028-03-01T00:00:00+08:00");
        if sweep {
            assert_eq!(t.expire(Value::Null).await.body["expired"], 1);
        }
        assert_eq!(
            t.validate("alice", &code, order("o1", 3000)).await.body["reason"],
            "expired"
        );
        t.redeem("alice", &code, order("o1", 3000))
            .await
            .assert_error(410, "expired");
        let stats = t.campaign("feb").await["stats"].clone();
        assert_eq!(
            (&stats["redeemed"], &stats["expired"]),
            (&json!(1), &json!(u64::from(sweep)))
        );
    }
}

#[tokio::test]
async fn the_sweep_is_bounded_resumable_and_idempotent() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    for who in ["a", "b", "c", "d", "e"] {
        t.claimed_code(who, "spring").await;
    }
    let redeemed = t.claimed_code("f", "spring").await;
    assert_eq!(
        t.redeem("f", &redeemed, order("o1", 3000)).await.status,
        201
    );
    t.set_now("2028-03-02T00:00:00+08:00");
    // Six coupons, four examined per call: two calls, five expired (one is redeemed).
    let first = t.expire(json!({"limit": 4})).await;
    let cursor = first.body["next_cursor"]
        .as_str()
        .expect("a cursor after 4 of 6")
        .to_owned();
    let second = t.expire(json!({"limit": 4, "cursor": cursor})).await;
    assert_eq!(second.body["next_cursor"], Value::Null, "{:#}", second.body);
    let expired =
        first.body["expired"].as_i64().unwrap_or(0) + second.body["expired"].as_i64().unwrap_or(0);
    assert_eq!(expired, 5, "{:#} {:#}", first.body, second.body);
    assert_eq!(t.expire(Value::Null).await.body["expired"], 0);
    let stats = t.campaign("spring").await["stats"].clone();
    assert_eq!(
        (stats["expired"].as_i64(), stats["redeemed"].as_i64()),
        (Some(5), Some(1))
    );
}

#[tokio::test]
async fn as_of_in_the_past_expires_only_what_was_due_then() {
    let t = TestApp::new().await;
    t.create_campaign(campaign_with(
        "spring",
        json!({"claim_ends_at": "2028-03-15T00:00:00+08:00"}),
    ))
    .await;
    t.claimed_code("a", "spring").await; // February: expires March 1st
    t.set_now("2028-03-10T00:00:00+08:00");
    t.claimed_code("b", "spring").await; // March: expires April 1st
    t.set_now("2028-04-02T00:00:00+08:00");
    let answer = t
        .expire(json!({"as_of": "2028-03-20T00:00:00+08:00"}))
        .await;
    assert_eq!(answer.body["expired"], 1);
    assert_eq!(t.expire(Value::Null).await.body["expired"], 1);
}

#[tokio::test]
async fn bad_sweep_requests_are_400_and_need_the_operator() {
    let t = TestApp::new().await;
    for (body, field) in [
        (json!({"as_of": "2028-02-11T00:00:00+08:00"}), "as_of"),
        (json!({"as_of": "tomorrow"}), "as_of"),
        (json!({"limit": 0}), "limit"),
        (json!({"limit": 10001}), "limit"),
        (json!({"cursor": "nonsense"}), "cursor"),
        (json!({"force": true}), "force"),
    ] {
        let answer = t.expire(body).await;
        answer.assert_error(400, "invalid_request");
        assert_eq!(answer.body["error"]["field"], field, "{:#}", answer.body);
    }
    t.send(&user("alice"), "POST", "/expirations", &[], Value::Null)
        .await
        .assert_error(401, "unauthorized");
}

/// Coupons in the sweep-at-scale test.
const AT_SCALE: usize = 100_000;

/// `AT_SCALE` coupons claimed through the claim component, then swept through
/// the expire component in bounded steps: every one expired exactly once, the
/// stats agree, and the finished month is not walked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_over_100_000_coupons_expires_each_once_in_bounded_steps() {
    let t = TestApp::new().await;
    t.create_campaign(campaign_with(
        "mega",
        json!({"stock": AT_SCALE, "per_user_limit": 1}),
    ))
    .await;
    let started = std::time::Instant::now();
    let claimers: Vec<_> = (0..64)
        .map(|worker| {
            let t = t.clone();
            tokio::spawn(async move {
                for n in (worker..AT_SCALE).step_by(64) {
                    let answer = t.claim(&format!("u{n}"), "mega", "k").await;
                    assert_eq!(answer.status, 201, "{:#}", answer.body);
                }
            })
        })
        .collect();
    for claimer in claimers {
        claimer.await.expect("a claimer");
    }
    let claimed_in = started.elapsed();

    t.set_now("2028-03-01T00:10:00+08:00");
    let started = std::time::Instant::now();
    let (mut expired, mut calls, mut cursor) = (0, 0, Value::Null);
    loop {
        let answer = t.expire(json!({"limit": 10_000, "cursor": cursor})).await;
        assert_eq!(answer.status, 200, "{:#}", answer.body);
        assert!(
            answer.body["examined"]
                .as_u64()
                .is_some_and(|n| n <= 10_000)
        );
        expired += answer.body["expired"].as_u64().unwrap_or(0);
        calls += 1;
        cursor = answer.body["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    let swept_in = started.elapsed();
    println!(
        "{AT_SCALE} coupons: claimed in {:.1} s, swept in {:.1} s over {calls} calls",
        claimed_in.as_secs_f64(),
        swept_in.as_secs_f64()
    );
    assert_eq!(expired, AT_SCALE as u64);
    assert!(calls >= AT_SCALE / 10_000, "{calls} calls");
    let stats = t.campaign("mega").await["stats"].clone();
    assert_eq!(stats["expired"], AT_SCALE);
    // The next walk expires nothing; it settles the expiry ledger the walk
    // wrote (a position whose writer died would be found here).
    let started = std::time::Instant::now();
    let (mut settled, mut calls, mut cursor) = (0, 0, Value::Null);
    loop {
        let again = t
            .expire(json!({"limit": 10_000, "cursor": cursor}))
            .await
            .body;
        assert_eq!(
            (&again["examined"], &again["expired"]),
            (&json!(0), &json!(0))
        );
        settled += again["settled"].as_u64().unwrap_or(0);
        calls += 1;
        cursor = again["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    println!(
        "then settled {settled} ledger positions in {:.1} s over {calls} calls",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(settled, AT_SCALE as u64);
    let idle = t.expire(Value::Null).await.body;
    assert_eq!(
        idle,
        json!({"examined": 0, "expired": 0, "returned": 0, "settled": 0, "next_cursor": null})
    );
}
