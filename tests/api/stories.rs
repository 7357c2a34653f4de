//! Whole journeys across the components, with and without instance reuse, so
//! state leaking between requests of one instance would show.

use coupon_tests::*;
use serde_json::{Value, json};

async fn claim_validate_redeem_cancel_expire(t: &TestApp) {
    assert_eq!(t.create_campaign(campaign("spring")).await.status, 201);
    let alice = t.claim("alice", "spring", "a1").await;
    let bob = t.claim("bob", "spring", "b1").await;
    let (alice_code, bob_code) = (
        alice.body["code"].as_str().unwrap(),
        bob.body["code"].as_str().unwrap(),
    );
    assert_ne!(alice_code, bob_code);
    // Each sees only their own coupon, even when one instance serves both.
    assert_eq!(t.coupon("alice", alice_code).await.body["user_id"], "alice");
    t.coupon("alice", bob_code)
        .await
        .assert_error(404, "coupon_not_found");

    let cart = json!({"amount": 8800, "currency": "CNY"});
    assert_eq!(
        t.validate("alice", alice_code, cart).await.body["payable_amount"],
        8300
    );
    assert_eq!(
        t.redeem("alice", alice_code, order("order-1", 8800))
            .await
            .status,
        201
    );
    let cancelled = t
        .operator(
            "DELETE",
            &format!("/redemptions/{alice_code}?order_id=order-1"),
            Value::Null,
        )
        .await;
    assert_eq!(cancelled.body["state"], "issued");
    assert_eq!(
        t.redeem("alice", alice_code, order("order-2", 8800))
            .await
            .status,
        201
    );

    t.set_now("2028-03-01T00:00:01+08:00");
    assert_eq!(t.expire(Value::Null).await.body["expired"], 1); // bob's
    let stats = t.campaign("spring").await["stats"].clone();
    assert_eq!(
        stats,
        json!({"claimed": 2, "redeemed": 1, "expired": 1, "expired_value": 500, "remaining_stock": 8, "budget_used": 0, "discount_given": 500, "discount_unsettled": 0, "capacity": 10, "remaining": 8, "binding_limit": "stock"})
    );
}

#[tokio::test]
async fn the_whole_journey_with_instance_reuse() {
    claim_validate_redeem_cancel_expire(&TestApp::with_reuse(true).await).await;
}

#[tokio::test]
async fn the_whole_journey_with_a_fresh_instance_per_request() {
    claim_validate_redeem_cancel_expire(&TestApp::with_reuse(false).await).await;
}
