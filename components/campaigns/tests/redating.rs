//! Re-dating a live campaign: `PUT /campaigns/{id}/expiry` moves every
//! outstanding coupon at once, leaves swept ones expired unless told to revive
//! them, and records who changed what when.

use coupon_tests::*;
use serde_json::{Value, json};

fn to_march(revive: bool) -> Value {
    json!({
        "expiry": {"kind": "end_of_month", "month": "2028-03"},
        "revive_expired": revive,
        "changed_by": "ops-lead"
    })
}

#[tokio::test]
async fn every_outstanding_coupon_follows_at_once_and_the_change_is_recorded() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let alice = t.claimed_code("alice", "spring").await;
    let bob = t.claimed_code("bob", "spring").await;
    assert_eq!(
        t.coupon("alice", &alice).await.body["expires_at"],
        "2028-03-01T00:00:00+08:00"
    );

    t.set_now("2028-02-20T10:00:00+08:00");
    let changed = t
        .operator("PUT", "/campaigns/spring/expiry", to_march(false))
        .await;
    assert_eq!(changed.status, 200, "{:#}", changed.body);
    assert_eq!(changed.body["expiry_revision"], 1);
    assert_eq!(changed.body["expiry"]["month"], "2028-03");
    for (who, code) in [("alice", &alice), ("bob", &bob)] {
        assert_eq!(
            t.coupon(who, code).await.body["expires_at"],
            "2028-04-01T00:00:00+08:00"
        );
    }
    t.set_now("2028-03-31T23:59:59.999+08:00");
    let valid = t.validate("alice", &alice, order("o1", 3000)).await;
    assert_eq!(valid.body["valid"], true, "{:#}", valid.body);
    assert_eq!(t.redeem("bob", &bob, order("o2", 3000)).await.status, 201);

    let history = t
        .operator("GET", "/campaigns/spring/expiry", Value::Null)
        .await;
    assert_eq!(history.status, 200);
    assert_eq!(
        history.body,
        json!({"changes": [{
            "revision": 1, "changed_by": "ops-lead", "changed_at": "2028-02-20T02:00:00Z",
            "from": {"kind": "end_of_claim_month"},
            "to": {"kind": "end_of_month", "month": "2028-03"},
            "revive_expired": false
        }]})
    );
}

#[tokio::test]
async fn swept_coupons_stay_expired_unless_the_change_revives_them() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let code = t.claimed_code("alice", "spring").await;
    t.set_now("2028-03-01T00:00:00+08:00");
    assert_eq!(t.expire(Value::Null).await.body["expired"], 1);

    t.set_now("2028-03-02T00:00:00+08:00");
    t.operator("PUT", "/campaigns/spring/expiry", to_march(false))
        .await;
    assert_eq!(t.coupon("alice", &code).await.body["state"], "expired");
    t.redeem("alice", &code, order("o1", 3000))
        .await
        .assert_error(410, "expired");

    let revived = t
        .operator("PUT", "/campaigns/spring/expiry", to_march(true))
        .await;
    assert_eq!(revived.body["stats"]["expired"], 0, "{:#}", revived.body);
    let coupon = t.coupon("alice", &code).await.body;
    assert_eq!(
        (&coupon["state"], &coupon["expires_at"]),
        (&json!("issued"), &json!("2028-04-01T00:00:00+08:00"))
    );
    assert_eq!(
        t.redeem("alice", &code, order("o1", 3000)).await.status,
        201
    );
    let stats = t.campaign("spring").await["stats"].clone();
    assert_eq!(
        (&stats["redeemed"], &stats["expired"]),
        (&json!(1), &json!(0))
    );
}

#[tokio::test]
async fn bad_changes_are_4xx_and_change_nothing() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    t.claimed_code("alice", "spring").await;
    let before = t.state();
    t.send(
        &user("alice"),
        "PUT",
        "/campaigns/spring/expiry",
        &[],
        to_march(false),
    )
    .await
    .assert_error(401, "unauthorized");
    let mut extra = to_march(false);
    extra["force"] = json!(true);
    for (body, field) in [
        (extra, "force"),
        (
            json!({"expiry": {"kind": "end_of_month", "month": "2028-03"}}),
            "changed_by",
        ),
        (
            json!({"expiry": {"kind": "end_of_month", "month": "2028-01"}, "changed_by": "x"}),
            "expiry",
        ),
        (
            json!({"expiry": {"kind": "end_of_week"}, "changed_by": "x"}),
            "expiry",
        ),
        (
            json!({"expiry": {"kind": "end_of_month", "month": "2028-03"}, "changed_by": ""}),
            "changed_by",
        ),
    ] {
        let answer = t.operator("PUT", "/campaigns/spring/expiry", body).await;
        answer.assert_error(400, "invalid_request");
        assert!(
            answer.body["error"]["field"]
                .as_str()
                .is_some_and(|f| f.starts_with(field)),
            "{field}: {:#}",
            answer.body
        );
    }
    t.operator("PUT", "/campaigns/autumn/expiry", to_march(false))
        .await
        .assert_error(404, "campaign_not_found");
    t.operator("POST", "/campaigns/spring/expiry", to_march(false))
        .await
        .assert_error(405, "method_not_allowed");
    assert_eq!(t.state(), before);
}

#[tokio::test]
async fn a_closed_campaign_ends_its_coupons_at_an_instant() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let code = t.claimed_code("alice", "spring").await;
    let early = json!({
        "expiry": {"kind": "at", "at": "2028-02-10T12:00:00+08:00"},
        "changed_by": "ops-lead", "reason": "wrong discount"
    });
    // Claims are open: coupons claimed after that instant would be born expired.
    let before = t.state();
    let refused = t
        .operator("PUT", "/campaigns/spring/expiry", early.clone())
        .await;
    refused.assert_error(400, "invalid_request");
    assert_eq!(refused.body["error"]["field"], "expiry.at");
    assert_eq!(t.state(), before);
    t.operator("POST", "/campaigns/spring/close", Value::Null)
        .await;
    let redated = t.operator("PUT", "/campaigns/spring/expiry", early).await;
    assert_eq!(redated.status, 200, "{:#}", redated.body);
    assert_eq!(redated.body["expiry"]["kind"], "at");
    let coupon = t.coupon("alice", &code).await;
    assert_eq!(
        (&coupon.body["state"], &coupon.body["expires_at"]),
        (&json!("issued"), &json!("2028-02-10T12:00:00+08:00"))
    );
    t.set_now("2028-02-10T12:00:00+08:00");
    t.validate("alice", &code, order("o1", 3000))
        .await
        .body
        .get("reason")
        .map(|r| assert_eq!(r, "expired"))
        .expect("a reason");
    let history = t
        .operator("GET", "/campaigns/spring/expiry", Value::Null)
        .await;
    assert_eq!(history.body["changes"][0]["reason"], "wrong discount");
}
