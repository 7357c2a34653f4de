//! `POST /campaigns`, `GET /campaigns/{id}`, pause and resume, freeze and unfreeze.

use coupon_tests::*;
use serde_json::{Value, json};

#[tokio::test]
async fn create_then_read_with_stats() {
    let t = TestApp::new().await;
    let created = t.create_campaign(campaign("spring")).await;
    assert_eq!(created.status, 201, "{:#}", created.body);
    assert_eq!(created.body["id"], "spring");
    assert_eq!(created.body["claim_starts_at"], "2028-01-01T00:00:00+08:00");
    assert_eq!(created.body["paused"], false);
    assert_eq!(
        created.body["stats"],
        json!({"claimed": 0, "redeemed": 0, "expired": 0, "expired_value": 0, "remaining_stock": 10, "budget_used": 0, "discount_given": 0, "discount_unsettled": 0, "capacity": 10, "remaining": 10, "binding_limit": "stock"})
    );
    let read = t.campaign("spring").await;
    assert_eq!(read, created.body);
}

#[tokio::test]
async fn the_identical_body_again_is_200_and_another_body_409() {
    let t = TestApp::new().await;
    assert_eq!(t.create_campaign(campaign("spring")).await.status, 201);
    let again = t.create_campaign(campaign("spring")).await;
    assert_eq!(again.status, 200);
    // The same instants written in another offset are the same campaign.
    let same = campaign_with("spring", json!({"claim_starts_at": "2027-12-31T16:00:00Z"}));
    assert_eq!(t.create_campaign(same).await.status, 200);
    let other = campaign_with("spring", json!({"stock": 11}));
    t.create_campaign(other)
        .await
        .assert_error(409, "campaign_exists");
    assert_eq!(t.campaign("spring").await["stock"], 10);
}

#[tokio::test]
async fn invalid_fields_are_400_naming_the_field_and_store_nothing() {
    let t = TestApp::new().await;
    let cases: Vec<(Value, &str)> = vec![
        (campaign_with("UPPER", json!({})), "id"),
        (campaign_with("x", json!({"name": ""})), "name"),
        (campaign_with("x", json!({"currency": "yuan"})), "currency"),
        (
            campaign_with("x", json!({"discount": {"kind": "fixed", "amount": 0}})),
            "discount",
        ),
        (
            campaign_with(
                "x",
                json!({"discount": {"kind": "percent", "basis_points": 10001, "max_amount": 5}}),
            ),
            "discount",
        ),
        (
            campaign_with("x", json!({"discount": {"kind": "bogus"}})),
            "discount.kind",
        ),
        (
            campaign_with("x", json!({"min_order_amount": -1})),
            "min_order_amount",
        ),
        (campaign_with("x", json!({"stock": 0})), "stock"),
        (campaign_with("x", json!({"budget": 0})), "budget"),
        (
            campaign_with("x", json!({"per_user_limit": 0})),
            "per_user_limit",
        ),
        (
            campaign_with("x", json!({"claim_starts_at": "2028-01-01"})),
            "claim_starts_at",
        ),
        (
            campaign_with("x", json!({"claim_ends_at": "2027-12-01T00:00:00+08:00"})),
            "claim_ends_at",
        ),
        (
            campaign_with("x", json!({"time_zone": "Mars/Olympus"})),
            "time_zone",
        ),
        (
            campaign_with(
                "x",
                json!({"expiry": {"kind": "end_of_month", "month": "2028-01"}}),
            ),
            "expiry",
        ),
        (
            campaign_with(
                "x",
                json!({"expiry": {"kind": "end_of_month", "month": "2028-13"}}),
            ),
            "expiry",
        ),
        (
            campaign_with("x", json!({"categories": [""]})),
            "categories",
        ),
        (campaign_with("x", json!({"surprise": true})), "surprise"),
    ];
    for (body, field) in cases {
        let answer = t.create_campaign(body).await;
        answer.assert_error(400, "invalid_request");
        assert_eq!(answer.body["error"]["field"], field, "{:#}", answer.body);
    }
    t.create_campaign(Value::String("{not json".into()))
        .await
        .assert_error(400, "invalid_request");
    t.create_campaign(Value::Null)
        .await
        .assert_error(400, "invalid_request");
    assert!(t.store.keys().is_empty(), "{:?}", t.store.keys());
}

#[tokio::test]
async fn a_fixed_month_and_a_percent_discount_with_a_budget() {
    let t = TestApp::new().await;
    let body = campaign_with(
        "feb",
        json!({
            "discount": {"kind": "percent", "basis_points": 1500, "max_amount": 3000},
            "budget": 9000,
            "categories": ["food", "toys"],
            "expiry": {"kind": "end_of_month", "month": "2028-02"}
        }),
    );
    let created = t.create_campaign(body).await;
    assert_eq!(created.status, 201, "{:#}", created.body);
    assert_eq!(created.body["budget"], 9000);
    assert_eq!(
        created.body["expiry"],
        json!({"kind": "end_of_month", "month": "2028-02"})
    );
}

#[tokio::test]
async fn pause_and_resume() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    assert_eq!(t.claim("alice", "spring", "k0").await.status, 201);
    let paused = t
        .operator("POST", "/campaigns/spring/pause", Value::Null)
        .await;
    assert_eq!((paused.status, &paused.body["paused"]), (200, &json!(true)));
    assert_eq!(paused.body["stats"]["claimed"], 1);
    // Pausing twice is pausing once.
    let again = t
        .operator("POST", "/campaigns/spring/pause", Value::Null)
        .await;
    assert_eq!(again.body["paused"], true);
    let refused = t.claim("alice", "spring", "k1").await;
    refused.assert_error(503, "campaign_paused");
    assert!(refused.header("retry-after").is_some());
    // Validations and redemptions go on.
    let code = t.claim("alice", "spring", "k0").await.body["code"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        t.redeem("alice", &code, order("o1", 3000)).await.status,
        201
    );
    let resumed = t
        .operator("POST", "/campaigns/spring/resume", Value::Null)
        .await;
    assert_eq!(resumed.body["paused"], false);
    assert_eq!(t.claim("alice", "spring", "k1").await.status, 201);
    let stats = t.campaign("spring").await["stats"].clone();
    assert_eq!(
        (stats["claimed"].as_i64(), stats["remaining_stock"].as_i64()),
        (Some(2), Some(8))
    );
}

#[tokio::test]
async fn freeze_stops_redemptions_and_nothing_else_until_unfreeze() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let first = t.claimed_code("alice", "spring").await;
    let second = t.claimed_code("alice", "spring").await;
    assert_eq!(
        t.redeem("alice", &first, order("o1", 3000)).await.status,
        201
    );
    let frozen = t
        .operator("POST", "/campaigns/spring/freeze", Value::Null)
        .await;
    assert_eq!(
        (
            frozen.status,
            &frozen.body["frozen"],
            &frozen.body["paused"]
        ),
        (200, &json!(true), &json!(false))
    );
    assert_eq!(frozen.body["stats"]["redeemed"], 1);
    let before = t.state();
    let refused = t.redeem("alice", &second, order("o2", 3000)).await;
    refused.assert_error(503, "redemptions_frozen");
    assert_eq!(refused.header("retry-after"), Some("30"));
    assert_eq!(t.state(), before, "a refused redemption wrote");
    // An acknowledged redemption still replays; validation says why not.
    assert_eq!(
        t.redeem("alice", &first, order("o1", 3000)).await.status,
        200
    );
    let validation = t.validate("alice", &second, order("o2", 3000)).await;
    assert_eq!(
        validation.body,
        json!({"valid": false, "reason": "redemptions_frozen"})
    );
    // Claims, reads and cancels go on.
    assert_eq!(t.claim("bob", "spring", "k").await.status, 201);
    let cancel = format!("/redemptions/{first}?order_id=o1");
    assert_eq!(t.operator("DELETE", &cancel, Value::Null).await.status, 200);
    // Freezing twice is freezing once; an unfreeze lets the same order through.
    let again = t
        .operator("POST", "/campaigns/spring/freeze", Value::Null)
        .await;
    assert_eq!(again.body["frozen"], true);
    let listed = t.operator("GET", "/campaigns", Value::Null).await;
    assert_eq!(listed.body["campaigns"][0]["frozen"], true);
    let thawed = t
        .operator("POST", "/campaigns/spring/unfreeze", Value::Null)
        .await;
    assert_eq!(
        (thawed.status, &thawed.body["frozen"]),
        (200, &json!(false))
    );
    assert_eq!(
        t.redeem("alice", &second, order("o2", 3000)).await.status,
        201
    );
    assert_eq!(t.campaign("spring").await["stats"]["redeemed"], 1);
    t.operator("GET", "/campaigns/spring/freeze", Value::Null)
        .await
        .assert_error(405, "method_not_allowed");
}

#[tokio::test]
async fn each_brake_transition_is_recorded_with_who_and_why() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let why = json!({"changed_by": "ana", "reason": "bots"});
    let paused = t.operator("POST", "/campaigns/spring/pause", why).await;
    assert_eq!(paused.status, 200, "{:#}", paused.body);
    t.set_now("2028-02-10T10:05:00+08:00");
    t.operator(
        "POST",
        "/campaigns/spring/freeze",
        json!({"changed_by": "bo"}),
    )
    .await;
    t.set_now("2028-02-10T10:06:00+08:00");
    t.operator("POST", "/campaigns/spring/resume", Value::Null)
        .await;
    let history = t
        .operator("GET", "/campaigns/spring/brakes", Value::Null)
        .await;
    assert_eq!(history.status, 200, "{:#}", history.body);
    let transitions = history.body["transitions"].as_array().expect("a list");
    let at = transitions[0]["at"].clone();
    assert_eq!(
        transitions[0],
        json!({"brake": "claims", "transition": 1, "action": "pause", "at": at,
               "changed_by": "ana", "reason": "bots"})
    );
    let rest: Vec<_> = transitions[1..]
        .iter()
        .map(|t| (t["action"].clone(), t["changed_by"].clone()))
        .collect();
    assert_eq!(
        rest,
        [
            (json!("freeze"), json!("bo")),
            (json!("resume"), Value::Null)
        ]
    );
    // A bad body is 400 naming the field, and moves no brake.
    let before = t.state();
    for (body, field) in [
        (json!({"reason": "x".repeat(501)}), "reason"),
        (json!({"changed_by": "x".repeat(65)}), "changed_by"),
        (json!({"who": "ana"}), "who"),
    ] {
        let answer = t.operator("POST", "/campaigns/spring/unfreeze", body).await;
        answer.assert_error(400, "invalid_request");
        assert_eq!(answer.body["error"]["field"], field);
    }
    assert_eq!(t.state(), before);
}

#[tokio::test]
async fn close_ends_claims_for_good_and_nothing_else() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let code = t.claimed_code("alice", "spring").await;
    let why = json!({"changed_by": "ana", "reason": "the discount is wrong"});
    let closed = t.operator("POST", "/campaigns/spring/close", why).await;
    assert_eq!(closed.status, 200, "{:#}", closed.body);
    assert_eq!(
        (
            &closed.body["closed"],
            &closed.body["paused"],
            &closed.body["closed_at"]
        ),
        (
            &json!(true),
            &json!(true),
            &json!("2028-02-10T10:00:00+08:00")
        )
    );
    // Final for claims (a 403, not a retryable 503), and for resumes.
    t.claim("bob", "spring", "k")
        .await
        .assert_error(403, "campaign_not_active");
    t.operator("POST", "/campaigns/spring/resume", Value::Null)
        .await
        .assert_error(403, "campaign_not_active");
    // Closing again changes nothing; coupons already held still redeem.
    let before = t.state();
    let again = t
        .operator("POST", "/campaigns/spring/close", Value::Null)
        .await;
    assert_eq!((again.status, &again.body["closed"]), (200, &json!(true)));
    assert_eq!(t.state(), before);
    assert_eq!(
        t.redeem("alice", &code, order("o1", 3000)).await.status,
        201
    );
    let listed = t.operator("GET", "/campaigns", Value::Null).await;
    assert_eq!(listed.body["campaigns"][0]["closed"], true);
    let history = t
        .operator("GET", "/campaigns/spring/brakes", Value::Null)
        .await;
    let close = &history.body["transitions"][0];
    assert_eq!(
        (&close["action"], &close["changed_by"], &close["reason"]),
        (
            &json!("close"),
            &json!("ana"),
            &json!("the discount is wrong")
        )
    );
}

#[tokio::test]
async fn unknown_campaigns_are_404() {
    let t = TestApp::new().await;
    t.operator("GET", "/campaigns/nope", Value::Null)
        .await
        .assert_error(404, "campaign_not_found");
    t.operator("GET", "/campaigns/NOT-AN-ID", Value::Null)
        .await
        .assert_error(404, "campaign_not_found");
    t.operator("POST", "/campaigns/nope/pause", Value::Null)
        .await
        .assert_error(404, "campaign_not_found");
    t.operator("POST", "/campaigns/nope/resume", Value::Null)
        .await
        .assert_error(404, "campaign_not_found");
    t.operator("POST", "/campaigns/nope/freeze", Value::Null)
        .await
        .assert_error(404, "campaign_not_found");
}

#[tokio::test]
async fn the_operator_api_needs_the_admin_token() {
    let t = TestApp::new().await;
    for caller in [
        Caller::Anonymous,
        user("alice"),
        Caller::Raw("Bearer wrong".into()),
        Caller::Raw(ADMIN_TOKEN.into()),
    ] {
        t.send(&caller, "POST", "/campaigns", &[], campaign("spring"))
            .await
            .assert_error(401, "unauthorized");
        t.send(&caller, "GET", "/campaigns/spring", &[], Value::Null)
            .await
            .assert_error(401, "unauthorized");
        t.send(&caller, "POST", "/campaigns/spring/pause", &[], Value::Null)
            .await
            .assert_error(401, "unauthorized");
        t.send(
            &caller,
            "POST",
            "/campaigns/spring/freeze",
            &[],
            Value::Null,
        )
        .await
        .assert_error(401, "unauthorized");
    }
    assert!(t.store.keys().is_empty());
}

#[tokio::test]
async fn the_list_pages_through_every_campaign_once_in_order_of_creation() {
    let t = TestApp::new().await;
    let ids: Vec<String> = (0..7).map(|i| format!("c{i}")).collect();
    for id in &ids {
        assert_eq!(t.create_campaign(campaign(id)).await.status, 201);
    }
    assert_eq!(
        t.operator("POST", "/campaigns/c3/pause", Value::Null)
            .await
            .status,
        200
    );
    let mut seen = Vec::new();
    let mut path = "/campaigns?limit=3".to_owned();
    loop {
        let page = t.operator("GET", &path, Value::Null).await;
        assert_eq!(page.status, 200, "{:#}", page.body);
        for c in page.body["campaigns"].as_array().expect("campaigns") {
            assert_eq!(c["paused"], c["id"] == "c3", "{c:#}");
            assert_eq!(c["claim_starts_at"], "2028-01-01T00:00:00+08:00");
            assert!(c.get("stats").is_none(), "stats are one GET away");
            seen.push(c["id"].as_str().expect("an id").to_owned());
        }
        match page.body["next"].as_str() {
            Some(next) => path = format!("/campaigns?limit=3&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let anonymous = t
        .send(&Caller::Anonymous, "GET", "/campaigns", &[], Value::Null)
        .await;
    anonymous.assert_error(401, "unauthorized");
}
