//! `POST /holds` and `DELETE /holds/{code}?order_id=...` (the races are in
//! `tests/api/invariants.rs`).

use coupon_tests::*;
use serde_json::{Value, json};

#[tokio::test]
async fn a_hold_sets_the_coupon_aside_for_its_order_until_released() {
    let t = TestApp::new().await;
    t.create_campaign(campaign_with("held", json!({"hold_seconds": 900})))
        .await;
    let code = t.claimed_code("alice", "held").await;
    let held = t.hold("alice", &code, order("a", 3000)).await;
    assert_eq!(held.status, 201, "{:#}", held.body);
    assert_eq!(
        held.body,
        json!({"code": code, "order_id": "a", "held_until": "2028-02-10T10:15:00+08:00",
               "discount_amount": 500, "payable_amount": 2500})
    );
    // The holder and support see which order holds it, until when.
    let coupon = t.coupon("alice", &code).await.body;
    assert_eq!(
        (&coupon["held_for"], &coupon["held_until"]),
        (&json!("a"), &json!("2028-02-10T10:15:00+08:00"))
    );
    // A retry answers the same hold.
    let again = t.hold("alice", &code, order("a", 3000)).await;
    assert_eq!((again.status, &again.body), (200, &held.body));
    // The holder's validation says until when; another order's says held.
    let mine = t.validate("alice", &code, order("a", 3000)).await.body;
    assert_eq!(mine["held_until"], "2028-02-10T10:15:00+08:00");
    assert_eq!(mine["valid"], true);
    let theirs = t.validate("alice", &code, order("b", 3000)).await.body;
    assert_eq!(theirs, json!({"valid": false, "reason": "coupon_held"}));
    let refused = t.hold("alice", &code, order("b", 3000)).await;
    refused.assert_error(409, "coupon_held");
    assert_eq!(refused.header("retry-after"), Some("900"));
    t.checkout_redeem("alice", &code, order("b", 3000))
        .await
        .assert_error(409, "coupon_held");
    // Another amount under the holding order is another order's terms.
    t.checkout_redeem("alice", &code, order("a", 4000))
        .await
        .assert_error(422, "order_terms_changed");

    // The payment failed: the checkout releases it; a user cannot.
    let path = format!("/holds/{code}?order_id=a");
    t.send(&user("alice"), "DELETE", &path, &[], Value::Null)
        .await
        .assert_error(401, "unauthorized");
    let released = t
        .send(&Caller::Checkout, "DELETE", &path, &[], Value::Null)
        .await;
    assert_eq!(
        (released.status, &released.body),
        (
            200,
            &json!({"code": code, "order_id": "a", "released": true})
        )
    );
    let repeated = t
        .send(&Caller::Checkout, "DELETE", &path, &[], Value::Null)
        .await;
    assert_eq!(repeated.body["released"], false);
    // Free at once: order b holds it and redeems it.
    assert_eq!(t.hold("alice", &code, order("b", 3000)).await.status, 201);
    let redeemed = t.checkout_redeem("alice", &code, order("b", 3000)).await;
    assert_eq!(redeemed.status, 201, "{:#}", redeemed.body);
    t.hold("alice", &code, order("c", 3000))
        .await
        .assert_error(409, "already_redeemed");
}

#[tokio::test]
async fn a_hold_is_refused_for_an_order_with_no_room_for_the_coupon() {
    let t = TestApp::new().await;
    t.create_campaign(campaign_with("held", json!({"hold_seconds": 900})))
        .await;
    let first = t.claimed_code("alice", "held").await;
    let second = t.claimed_code("alice", "held").await;
    let redeemed = t.checkout_redeem("alice", &first, order("a", 3000)).await;
    assert_eq!(redeemed.status, 201, "{:#}", redeemed.body);
    // One coupon of the campaign per order: a hold for the second is refused
    // at once, not left for its redemption to refuse.
    let before = t.state();
    t.hold("alice", &second, order("a", 3000))
        .await
        .assert_error(409, "order_campaign_limit_reached");
    assert_eq!(t.state(), before);
    assert_eq!(t.hold("alice", &second, order("b", 3000)).await.status, 201);
}

#[tokio::test]
async fn a_hold_ends_on_its_own_and_never_outlives_the_coupon() {
    let t = TestApp::new().await;
    t.create_campaign(campaign_with("held", json!({"hold_seconds": 900})))
        .await;
    let code = t.claimed_code("alice", "held").await;
    assert_eq!(t.hold("alice", &code, order("a", 3000)).await.status, 201);
    t.set_now("2028-02-10T10:15:00+08:00");
    let after = t.validate("alice", &code, order("b", 3000)).await.body;
    assert_eq!(after["valid"], true, "{after:#}");
    // Five minutes before the month ends, the coupon's expiry bounds the hold.
    t.set_now("2028-02-29T23:55:00+08:00");
    let late = t.hold("alice", &code, order("b", 3000)).await;
    assert_eq!(late.body["held_until"], "2028-03-01T00:00:00+08:00");
}

#[tokio::test]
async fn holds_are_the_checkouts_on_campaigns_that_take_them() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("plain")).await;
    let shop = json!({"hold_seconds": 60, "redeemable_by_users": false});
    t.create_campaign(campaign_with("shop", shop)).await;
    let plain = t.claimed_code("alice", "plain").await;
    let code = t.claimed_code("alice", "shop").await;
    let before = t.state();
    t.hold("alice", &plain, order("a", 3000))
        .await
        .assert_error(422, "holds_not_enabled");
    let by_user = json!({"code": code, "order": order("a", 3000)});
    t.send(&user("alice"), "POST", "/holds", &[], by_user)
        .await
        .assert_error(403, "checkout_required");
    let unnamed = t
        .hold("alice", &code, json!({"amount": 3000, "currency": "CNY"}))
        .await;
    unnamed.assert_error(400, "invalid_request");
    assert_eq!(unnamed.body["error"]["field"], "order.id");
    t.hold("alice", &code, order("a", 1999))
        .await
        .assert_error(422, "below_min_order");
    assert_eq!(t.state(), before, "a refused hold changed the store");
    // Another user's coupon is not found (and counts as their miss).
    t.hold("bob", &code, order("a", 3000))
        .await
        .assert_error(404, "coupon_not_found");
    t.send(&Caller::Checkout, "GET", "/holds", &[], Value::Null)
        .await
        .assert_error(405, "method_not_allowed");
    t.send(
        &Caller::Checkout,
        "DELETE",
        &format!("/holds/{code}"),
        &[],
        Value::Null,
    )
    .await
    .assert_error(400, "invalid_request");
    let hold_seconds = json!({"hold_seconds": 0});
    t.create_campaign(campaign_with("bad", hold_seconds))
        .await
        .assert_error(400, "invalid_request");
}
