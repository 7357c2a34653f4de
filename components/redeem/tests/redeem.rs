//! `POST /redemptions` and `DELETE /redemptions/{code}?order_id=...`.

use coupon_tests::*;
use serde_json::{Value, json};

#[tokio::test]
async fn a_redemption_pays_part_of_the_order_once() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let code = t.claimed_code("alice", "spring").await;
    let first = t.redeem("alice", &code, order("o1", 3000)).await;
    assert_eq!(first.status, 201, "{:#}", first.body);
    assert_eq!(
        first.body,
        json!({"code": code, "order_id": "o1", "discount_amount": 500, "payable_amount": 2500,
               "redeemed_at": "2028-02-10T10:00:00+08:00"})
    );
    let again = t.redeem("alice", &code, order("o1", 3000)).await;
    assert_eq!((again.status, &again.body), (200, &first.body));
    t.redeem("alice", &code, order("o2", 3000))
        .await
        .assert_error(409, "already_redeemed");
    let coupon = t.coupon("alice", &code).await.body;
    assert_eq!(
        (&coupon["state"], &coupon["order_id"]),
        (&json!("redeemed"), &json!("o1"))
    );
    assert_eq!(t.campaign("spring").await["stats"]["redeemed"], 1);
}

#[tokio::test]
async fn rule_failures_are_422_with_the_reason_as_code_and_change_nothing() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let code = t.claimed_code("alice", "spring").await;
    let before = t.state();
    t.redeem("alice", &code, order("o1", 1999))
        .await
        .assert_error(422, "below_min_order");
    let usd = json!({"id": "o1", "amount": 3000, "currency": "USD"});
    t.redeem("alice", &code, usd)
        .await
        .assert_error(422, "currency_mismatch");
    assert_eq!(t.state(), before);
}

#[tokio::test]
async fn past_expiry_is_410() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let code = t.claimed_code("alice", "spring").await;
    t.set_now("2028-03-01T00:00:00+08:00");
    t.redeem("alice", &code, order("o1", 3000))
        .await
        .assert_error(410, "expired");
}

#[tokio::test]
async fn the_order_id_is_required() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let code = t.claimed_code("alice", "spring").await;
    let answer = t
        .redeem("alice", &code, json!({"amount": 3000, "currency": "CNY"}))
        .await;
    answer.assert_error(400, "invalid_request");
    assert_eq!(answer.body["error"]["field"], "order.id");
    let long = "o".repeat(129);
    t.redeem("alice", &code, order(&long, 3000))
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn a_cancelled_order_gives_the_coupon_back() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let code = t.claimed_code("alice", "spring").await;
    assert_eq!(
        t.redeem("alice", &code, order("o1", 3000)).await.status,
        201
    );
    let path = format!("/redemptions/{code}?order_id=o1");
    let cancelled = t.operator("DELETE", &path, Value::Null).await;
    assert_eq!(cancelled.status, 200, "{:#}", cancelled.body);
    assert_eq!(cancelled.body["state"], "issued");
    assert!(cancelled.body.get("order_id").is_none());
    // Repeating it is harmless.
    assert_eq!(t.operator("DELETE", &path, Value::Null).await.status, 200);
    assert_eq!(t.campaign("spring").await["stats"]["redeemed"], 0);
    assert_eq!(
        t.redeem("alice", &code, order("o2", 3000)).await.status,
        201
    );
    assert_eq!(t.campaign("spring").await["stats"]["redeemed"], 1);
}

#[tokio::test]
async fn a_cancellation_past_expiry_leaves_the_coupon_expired() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let code = t.claimed_code("alice", "spring").await;
    assert_eq!(
        t.redeem("alice", &code, order("o1", 3000)).await.status,
        201
    );
    t.set_now("2028-03-05T00:00:00+08:00");
    let cancelled = t
        .operator(
            "DELETE",
            &format!("/redemptions/{code}?order_id=o1"),
            Value::Null,
        )
        .await;
    assert_eq!(cancelled.body["state"], "expired");
    let stats = t.campaign("spring").await["stats"].clone();
    assert_eq!(
        (stats["redeemed"].as_i64(), stats["expired"].as_i64()),
        (Some(0), Some(1))
    );
}

#[tokio::test]
async fn cancelling_an_unknown_pair_is_404() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let code = t.claimed_code("alice", "spring").await;
    assert_eq!(
        t.redeem("alice", &code, order("o1", 3000)).await.status,
        201
    );
    let not_found = |path: String| {
        let t = t.clone();
        async move {
            t.operator("DELETE", &path, Value::Null)
                .await
                .assert_error(404, "redemption_not_found")
        }
    };
    not_found(format!("/redemptions/{code}?order_id=o2")).await;
    not_found("/redemptions/0000000000000000000000?order_id=o1".into()).await;
    let missing = t
        .operator("DELETE", &format!("/redemptions/{code}"), Value::Null)
        .await;
    missing.assert_error(400, "invalid_request");
    let as_user = t
        .send(
            &user("alice"),
            "DELETE",
            &format!("/redemptions/{code}?order_id=o1"),
            &[],
            Value::Null,
        )
        .await;
    as_user.assert_error(401, "unauthorized");
    assert_eq!(t.coupon("alice", &code).await.body["state"], "redeemed");
}

#[tokio::test]
async fn one_order_takes_one_coupon_per_campaign_and_never_more_off_than_it_costs() {
    let t = TestApp::new().await;
    let big = json!({"discount": {"kind": "fixed", "amount": 3000}, "min_order_amount": 0});
    t.create_campaign(campaign_with("a", big.clone())).await;
    t.create_campaign(campaign_with("b", big)).await;
    let twice = json!({"coupons_per_order": 2, "min_order_amount": 0});
    t.create_campaign(campaign_with("c", twice)).await;
    let a = t.claimed_code("alice", "a").await;
    let a2 = t.claimed_code("alice", "a").await;
    let b = t.claimed_code("alice", "b").await;
    let (c1, c2) = (
        t.claimed_code("alice", "c").await,
        t.claimed_code("alice", "c").await,
    );
    assert_eq!(t.redeem("alice", &a, order("o1", 5000)).await.status, 201);
    // A second coupon of campaign a on the same order: refused, unchanged.
    let before = t.state();
    t.redeem("alice", &a2, order("o1", 5000))
        .await
        .assert_error(409, "order_campaign_limit_reached");
    // 3,000 off twice on an order of 5,000: the second is refused.
    t.redeem("alice", &b, order("o1", 5000))
        .await
        .assert_error(409, "order_discount_exceeded");
    assert_eq!(t.coupon("alice", &b).await.body["state"], "issued");
    // Refused from the order's slots as read: nothing was taken.
    assert_eq!(t.state(), before);
    // Campaign c allows two per order: both fit beside a (500 off each).
    assert_eq!(t.redeem("alice", &c1, order("o1", 5000)).await.status, 201);
    assert_eq!(t.redeem("alice", &c2, order("o1", 5000)).await.status, 201);
    // Another order is another order.
    assert_eq!(t.redeem("alice", &b, order("o2", 5000)).await.status, 201);
    // Cancelling a's redemption makes room on o1 for a2.
    let path = format!("/redemptions/{a}?order_id=o1");
    assert_eq!(t.operator("DELETE", &path, Value::Null).await.status, 200);
    assert_eq!(t.redeem("alice", &a2, order("o1", 5000)).await.status, 201);
}

#[tokio::test]
async fn an_order_id_sent_again_with_other_terms_is_422() {
    let t = TestApp::new().await;
    t.create_campaign(campaign_with("spring", json!({"per_user_limit": 3})))
        .await;
    t.create_campaign(campaign("summer")).await;
    let code = t.claimed_code("alice", "spring").await;
    let other = t.claimed_code("alice", "summer").await;
    let first = t.redeem("alice", &code, order("o1", 3000)).await;
    assert_eq!(first.status, 201, "{:#}", first.body);
    let before = t.state();
    // The replay of the same redemption with another amount, and another
    // coupon on the same order with another amount or categories.
    t.redeem("alice", &code, order("o1", 9000))
        .await
        .assert_error(422, "order_terms_changed");
    t.redeem("alice", &other, order("o1", 9000))
        .await
        .assert_error(422, "order_terms_changed");
    let tagged = json!({"id": "o1", "amount": 3000, "currency": "CNY", "categories": ["toys"]});
    t.redeem("alice", &other, tagged)
        .await
        .assert_error(422, "order_terms_changed");
    assert_eq!(t.state(), before);
    // The same terms replay.
    let again = t.redeem("alice", &code, order("o1", 3000)).await;
    assert_eq!((again.status, &again.body), (200, &first.body));
    assert_eq!(
        t.redeem("alice", &other, order("o1", 3000)).await.status,
        201
    );
}

/// `POST {path}` as the shop's checkout, or with a raw `Authorization`.
async fn as_checkout(t: &TestApp, caller: &Caller, path: &str, body: Value) -> Answer {
    t.send(caller, "POST", path, &[], body).await
}

#[tokio::test]
async fn only_the_checkout_redeems_unless_the_campaign_lets_users() {
    let t = TestApp::new().await;
    let checkout_only = json!({"redeemable_by_users": false});
    let created = t
        .create_campaign(campaign_with("shop", checkout_only))
        .await;
    assert_eq!(created.body["redeemable_by_users"], false);
    let code = t.claimed_code("alice", "shop").await;

    // A user's token: refused, and nothing changes.
    let before = t.state();
    t.redeem("alice", &code, order("o1", 3000))
        .await
        .assert_error(403, "checkout_required");
    assert_eq!(t.state(), before, "a refused redemption changed the store");
    // A user validates their cart, and may name only themself.
    let mine = json!({"code": code, "order": order("o1", 3000), "user_id": "alice"});
    let valid = as_checkout(&t, &user("alice"), "/validations", mine).await;
    assert_eq!(valid.body["valid"], true, "{:#}", valid.body);
    let theirs = json!({"code": code, "order": order("o1", 3000), "user_id": "bob"});
    let refused = as_checkout(&t, &user("alice"), "/redemptions", theirs.clone()).await;
    refused.assert_error(400, "invalid_request");
    assert_eq!(refused.body["error"]["field"], "user_id");

    // The checkout must name the user, and acts only on that user's coupons.
    let unnamed = json!({"code": code, "order": order("o1", 3000)});
    let answer = as_checkout(&t, &Caller::Checkout, "/redemptions", unnamed).await;
    answer.assert_error(400, "invalid_request");
    assert_eq!(answer.body["error"]["field"], "user_id");
    as_checkout(&t, &Caller::Checkout, "/redemptions", theirs)
        .await
        .assert_error(404, "coupon_not_found");
    let wrong = Caller::Raw("Bearer test-checkout".into());
    let for_alice = json!({"code": code, "order": order("o1", 3000), "user_id": "alice"});
    as_checkout(&t, &wrong, "/redemptions", for_alice.clone())
        .await
        .assert_error(401, "unauthorized");

    // Either of the rotating tokens redeems for alice; the same order replays.
    let checked = as_checkout(&t, &Caller::Checkout, "/validations", for_alice.clone()).await;
    assert_eq!(checked.body["valid"], true, "{:#}", checked.body);
    let old = Caller::Raw("Bearer test-checkout-old".into());
    let redeemed = as_checkout(&t, &old, "/redemptions", for_alice.clone()).await;
    assert_eq!(redeemed.status, 201, "{:#}", redeemed.body);
    let again = as_checkout(&t, &Caller::Checkout, "/redemptions", for_alice).await;
    assert_eq!((again.status, &again.body), (200, &redeemed.body));

    // The payment failed: the checkout cancels; a user cannot.
    let path = format!("/redemptions/{code}?order_id=o1");
    t.send(&user("alice"), "DELETE", &path, &[], Value::Null)
        .await
        .assert_error(401, "unauthorized");
    let cancelled = t
        .send(&Caller::Checkout, "DELETE", &path, &[], Value::Null)
        .await;
    assert_eq!(cancelled.status, 200, "{:#}", cancelled.body);
    assert_eq!(cancelled.body["state"], "issued");

    // The checkout's token is no operator's and no user's.
    t.send(
        &Caller::Checkout,
        "GET",
        "/campaigns/shop",
        &[],
        Value::Null,
    )
    .await
    .assert_error(401, "unauthorized");
    t.send(&Caller::Checkout, "GET", "/coupons", &[], Value::Null)
        .await
        .assert_error(401, "unauthorized");
    let claim = t
        .send(
            &Caller::Checkout,
            "POST",
            "/claims",
            &[("idempotency-key", "k")],
            json!({"campaign_id": "shop"}),
        )
        .await;
    claim.assert_error(401, "unauthorized");
}
