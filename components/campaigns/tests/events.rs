//! `GET /campaigns/{id}/events` and `GET /campaigns/{id}/reconciliation`:
//! the HTTP surface (the stream's guarantees are tested in the core, and
//! under a storm in `tests/api/invariants.rs`).

use coupon_tests::*;
use serde_json::{Value, json};

#[tokio::test]
async fn a_claim_and_a_redemption_are_events_with_who_when_and_how_much() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let code = t.claimed_code("alice", "spring").await;
    t.checkout_redeem("alice", &code, order("o1", 3000)).await;
    let page = t
        .operator("GET", "/campaigns/spring/events", Value::Null)
        .await;
    assert_eq!(page.status, 200, "{:#}", page.body);
    let events = page.body["events"].as_array().expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "claimed", "redeemed"]);
    let redeemed = &events[2];
    assert_eq!(redeemed["code"], code.as_str());
    assert_eq!(
        (
            &redeemed["user_id"],
            &redeemed["order_id"],
            &redeemed["amount"],
            &redeemed["by"]
        ),
        (
            &json!("alice"),
            &json!("o1"),
            &json!(500),
            &json!("checkout")
        )
    );
    assert_eq!(redeemed["at"], "2028-02-10T10:00:00+08:00");
    assert_eq!(
        (&page.body["has_more"], &page.body["waiting"]),
        (&json!(false), &json!(0))
    );

    // Polling from the cursor: nothing new, then the next change.
    let cursor = page.body["next_cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    let path = format!("/campaigns/spring/events?cursor={cursor}");
    let none = t.operator("GET", &path, Value::Null).await;
    assert_eq!(none.body["events"], json!([]));
    t.operator(
        "POST",
        "/campaigns/spring/pause",
        json!({"reason": "drill"}),
    )
    .await;
    let next = t.operator("GET", &path, Value::Null).await;
    assert_eq!(next.body["events"][0]["kind"], "paused");
    assert_eq!(next.body["events"][0]["reason"], "drill");
}

#[tokio::test]
async fn bad_queries_are_400_naming_the_parameter() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("format=csv", "format"),
        ("cursor=zz.1", "cursor"),
        ("cursor=created.2", "cursor"),
        ("cursor=junk", "cursor"),
    ] {
        let path = format!("/campaigns/spring/events?{query}");
        let answer = t.operator("GET", &path, Value::Null).await;
        answer.assert_error(400, "invalid_request");
        assert_eq!(answer.body["error"]["field"], field, "{query}");
    }
    let answer = t
        .operator(
            "GET",
            "/campaigns/spring/reconciliation?cursor=junk",
            Value::Null,
        )
        .await;
    answer.assert_error(400, "invalid_request");
    assert_eq!(answer.body["error"]["field"], "cursor");
}

#[tokio::test]
async fn only_the_operator_reads_them_and_only_with_get() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    for path in [
        "/campaigns/spring/events",
        "/campaigns/spring/reconciliation",
    ] {
        for caller in [Caller::Anonymous, Caller::Checkout, user("alice")] {
            t.send(&caller, "GET", path, &[], Value::Null)
                .await
                .assert_error(401, "unauthorized");
        }
        let post = t.operator("POST", path, Value::Null).await;
        post.assert_error(405, "method_not_allowed");
        assert_eq!(post.header("allow"), Some("GET"));
    }
    for path in ["/campaigns/nope/events", "/campaigns/nope/reconciliation"] {
        t.operator("GET", path, Value::Null)
            .await
            .assert_error(404, "campaign_not_found");
    }
}

#[tokio::test]
async fn a_fresh_campaign_reconciles_at_once() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    t.claimed_code("alice", "spring").await;
    let report = t
        .operator("GET", "/campaigns/spring/reconciliation", Value::Null)
        .await;
    assert_eq!(report.status, 200, "{:#}", report.body);
    assert_eq!(report.body["status"], "done");
    assert_eq!(report.body["differences"], json!([]));
    assert_eq!(report.body["ledger"]["claimed"], 1);
    assert_eq!(report.body["unwritten"], 0);
}
