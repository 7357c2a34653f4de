//! `POST /claims`.

use coupon_tests::*;
use serde_json::{Value, json};

#[tokio::test]
async fn a_claim_issues_a_coupon() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let answer = t.claim("alice", "spring", "k1").await;
    assert_eq!(answer.status, 201, "{:#}", answer.body);
    assert_eq!(answer.header("idempotent-replayed"), None);
    let code = answer.body["code"].as_str().expect("code");
    assert_eq!(code.len(), 21);
    assert_eq!(
        answer.body,
        json!({
            "code": code, "campaign_id": "spring", "user_id": "alice", "currency": "CNY",
            "discount": {"kind": "fixed", "amount": 500}, "min_order_amount": 2000,
            "state": "issued", "issued_at": "2028-02-10T10:00:00+08:00",
            "expires_at": "2028-03-01T00:00:00+08:00"
        })
    );
    assert!(t.store.get(&format!("k:{code}")).is_some());
}

#[tokio::test]
async fn a_retry_with_the_same_key_replays_the_same_coupon() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let first = t.claim("alice", "spring", "k1").await;
    let again = t.claim("alice", "spring", "k1").await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(t.stored_coupons().len(), 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("a")).await;
    t.create_campaign(campaign("b")).await;
    assert_eq!(t.claim("alice", "a", "k1").await.status, 201);
    t.claim("alice", "b", "k1")
        .await
        .assert_error(422, "idempotency_key_reused");
    assert_eq!(t.stored_coupons().len(), 1);
}

#[tokio::test]
async fn the_idempotency_key_is_required_and_bounded() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let body = json!({"campaign_id": "spring"});
    let missing = t
        .send(&user("alice"), "POST", "/claims", &[], body.clone())
        .await;
    missing.assert_error(400, "invalid_request");
    let long = "k".repeat(129);
    let too_long = t
        .send(
            &user("alice"),
            "POST",
            "/claims",
            &[("idempotency-key", &long)],
            body,
        )
        .await;
    too_long.assert_error(400, "invalid_request");
    assert_eq!(t.stored_coupons().len(), 0);
}

#[tokio::test]
async fn bad_bodies_are_400() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    for body in [
        json!({}),
        json!({"campaign_id": 7}),
        json!({"campaign_id": "spring", "extra": 1}),
        Value::String("[".into()),
    ] {
        let answer = t
            .send(
                &user("alice"),
                "POST",
                "/claims",
                &[("idempotency-key", "k")],
                body,
            )
            .await;
        answer.assert_error(400, "invalid_request");
    }
    assert_eq!(t.campaign("spring").await["stats"]["claimed"], 0);
}

#[tokio::test]
async fn unknown_campaign_is_404_and_outside_the_window_403() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    t.claim("alice", "nope", "k1")
        .await
        .assert_error(404, "campaign_not_found");
    t.set_now("2027-12-31T23:59:59+08:00");
    t.claim("alice", "spring", "k2")
        .await
        .assert_error(403, "campaign_not_active");
    t.set_now("2028-02-15T00:00:00+08:00");
    t.claim("alice", "spring", "k3")
        .await
        .assert_error(403, "campaign_not_active");
    t.set_now("2028-01-01T00:00:00+08:00");
    assert_eq!(t.claim("alice", "spring", "k4").await.status, 201);
}

#[tokio::test]
async fn the_per_user_limit_is_409() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await; // 2 per user
    assert_eq!(t.claim("alice", "spring", "k1").await.status, 201);
    assert_eq!(t.claim("alice", "spring", "k2").await.status, 201);
    t.claim("alice", "spring", "k3")
        .await
        .assert_error(409, "per_user_limit_reached");
    assert_eq!(t.claim("bob", "spring", "k3").await.status, 201);
}

#[tokio::test]
async fn sold_out_is_410_for_stock_and_for_budget() {
    let t = TestApp::new().await;
    t.create_campaign(campaign_with("stock", json!({"stock": 1})))
        .await;
    assert_eq!(t.claim("alice", "stock", "k1").await.status, 201);
    t.claim("bob", "stock", "k1")
        .await
        .assert_error(410, "sold_out");
    // The refusal is what the key answered: a retry gets it again.
    t.claim("bob", "stock", "k1")
        .await
        .assert_error(410, "sold_out");

    t.create_campaign(campaign_with("budget", json!({"budget": 999})))
        .await; // 500 each
    assert_eq!(t.claim("alice", "budget", "k2").await.status, 201);
    t.claim("bob", "budget", "k2")
        .await
        .assert_error(410, "sold_out");
    let stats = &t.campaign("budget").await["stats"];
    assert_eq!(
        (stats["claimed"].as_i64(), stats["budget_used"].as_i64()),
        (Some(1), Some(500))
    );
}

#[tokio::test]
async fn claims_need_a_valid_user_token() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let expired = coupon_core::auth::sign_user_token(
        USER_SECRET.as_bytes(),
        &json!({"sub": "alice", "exp": 1}),
    );
    let forged = coupon_core::auth::sign_user_token(
        b"not the secret",
        &json!({"sub": "alice", "exp": 4_102_444_800i64}),
    );
    for caller in [
        Caller::Anonymous,
        Caller::Operator,
        Caller::Raw(format!("Bearer {expired}")),
        Caller::Raw(format!("Bearer {forged}")),
    ] {
        let answer = t
            .send(
                &caller,
                "POST",
                "/claims",
                &[("idempotency-key", "k")],
                json!({"campaign_id": "spring"}),
            )
            .await;
        answer.assert_error(401, "unauthorized");
    }
    assert_eq!(t.stored_coupons().len(), 0);
}

#[tokio::test]
async fn claims_over_max_claims_per_second_are_429_and_take_nothing() {
    let t = TestApp::new().await;
    let body = campaign_with("rate", json!({"max_claims_per_second": 2, "shards": 1}));
    assert_eq!(
        t.create_campaign(body).await.body["max_claims_per_second"],
        2
    );
    let mut statuses = Vec::new();
    for who in ["a", "b", "c", "d"] {
        let answer = t.claim(who, "rate", "k").await;
        if answer.status == 429 {
            answer.assert_error(429, "rate_limited");
            assert_eq!(answer.header("retry-after"), Some("1"));
        }
        statuses.push(answer.status);
    }
    assert_eq!(statuses, [201, 201, 429, 429]);
    assert_eq!(t.campaign("rate").await["stats"]["claimed"], 2);
    // Next second: the same key retries and gets in.
    t.set_now("2028-02-10T10:00:01+08:00");
    assert_eq!(t.claim("c", "rate", "k").await.status, 201);
    let invalid = t
        .create_campaign(campaign_with("zero", json!({"max_claims_per_second": 0})))
        .await;
    invalid.assert_error(400, "invalid_request");
}
