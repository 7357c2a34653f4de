//! `POST /campaigns/{id}/purge` through the real `.wasm`: a campaign past
//! its retention is deleted to its tombstone, in bounded calls (what is kept
//! and why is tested in the core, `ops::purge`).

use coupon_tests::*;
use serde_json::{Value, json};

/// 90 days after the end of February, when the campaign's coupons expired.
const DUE: &str = "2028-06-01T00:00:00+08:00";

/// The events read to their end at the clock's time: the export's cursor.
async fn exported(t: &TestApp) -> String {
    let mut path = "/campaigns/spring/events?limit=2".to_owned();
    loop {
        let page = t.operator("GET", &path, Value::Null).await;
        assert_eq!(page.status, 200, "{:#}", page.body);
        let cursor = page.body["next_cursor"].as_str().expect("a cursor");
        if page.body["has_more"] == json!(false) {
            return cursor.to_owned();
        }
        path = format!("/campaigns/spring/events?limit=2&cursor={cursor}");
    }
}

/// A campaign with three coupons, one redeemed, swept at the month end; alice's code.
async fn ended() -> (TestApp, String) {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let code = t.claimed_code("alice", "spring").await;
    t.claimed_code("bob", "spring").await;
    t.claimed_code("bob", "spring").await;
    t.checkout_redeem("alice", &code, order("o1", 3000)).await;
    t.set_now("2028-03-01T00:10:00+08:00");
    for _ in 0..3 {
        let swept = t.expire(json!({})).await;
        assert_eq!(swept.status, 200, "{:#}", swept.body);
    }
    (t, code)
}

#[tokio::test]
async fn a_campaign_past_its_retention_is_purged_to_its_tombstone() {
    let (t, code) = ended().await;
    t.set_now(DUE);
    let mut body = json!({"exported_through": exported(&t).await, "changed_by": "finance"});
    let mut states = Vec::new();
    // A lease (90 s) apart: each wait of the seal is over at the next.
    let mut later = ["2028-06-01T00:01:40+08:00", "2028-06-01T00:03:20+08:00"].into_iter();
    for _ in 0..20 {
        let answer = t
            .operator("POST", "/campaigns/spring/purge", body.clone())
            .await;
        assert_eq!(answer.status, 200, "{:#}", answer.body);
        let state = answer.body["state"].as_str().expect("a state").to_owned();
        states.push(state.clone());
        match state.as_str() {
            "sealing" => {
                let wait = answer.body["retry_after_seconds"].as_i64().expect("a wait");
                assert!((1..=90).contains(&wait), "{wait}");
                t.set_now(later.next().expect("a later time"));
            }
            "purging" => body["cursor"] = answer.body["next_cursor"].clone(),
            _ => break,
        }
    }
    assert_eq!(states, ["sealing", "sealing", "purged"]);
    // Every key, counters at 0 included: a read that recreated one would show.
    let left: Vec<String> = t
        .store
        .snapshot()
        .into_keys()
        .filter(|k| k.contains("spring") || k.starts_with("k:") || k.contains(":idem:"))
        .collect();
    assert_eq!(
        left,
        [
            "c:spring:owner",
            "c:spring:purge",
            "c:spring:purge:since",
            "c:spring:purged"
        ]
    );
    let gone = t.operator("GET", "/campaigns/spring", Value::Null).await;
    gone.assert_error(404, "campaign_not_found");
    t.coupon("alice", &code)
        .await
        .assert_error(404, "coupon_not_found");
    let again = t
        .operator("POST", "/campaigns/spring/purge", json!({}))
        .await;
    assert_eq!(
        (again.status, &again.body["state"]),
        (200, &json!("purged"))
    );
}

#[tokio::test]
async fn a_purge_is_refused_until_due_and_exported_and_seals_the_expiry() {
    let (t, _) = ended().await;
    let early = t
        .operator(
            "POST",
            "/campaigns/spring/purge",
            json!({"exported_through": exported(&t).await}),
        )
        .await;
    early.assert_error(409, "purge_not_due");
    t.set_now(DUE);
    let unexported = t
        .operator("POST", "/campaigns/spring/purge", json!({}))
        .await;
    unexported.assert_error(400, "invalid_request");
    assert_eq!(unexported.body["error"]["field"], "exported_through");
    let junk = json!({"exported_through": exported(&t).await, "cursor": "z.1"});
    let junk = t.operator("POST", "/campaigns/spring/purge", junk).await;
    assert_eq!(junk.body["error"]["field"], "cursor");
    let start = t
        .operator("GET", "/campaigns/spring/events?limit=1", Value::Null)
        .await;
    let partial = json!({"exported_through": start.body["next_cursor"]});
    let partial = t.operator("POST", "/campaigns/spring/purge", partial).await;
    partial.assert_error(409, "export_incomplete");
    // Refusals changed nothing: the expiry can still change.
    assert!(!t.state().contains_key("c:spring:purge"));
    let sealed = json!({"exported_through": exported(&t).await});
    let sealed = t.operator("POST", "/campaigns/spring/purge", sealed).await;
    assert_eq!(sealed.body["state"], "sealing", "{:#}", sealed.body);
    let redating = json!({"expiry": {"kind": "at", "at": "2029-01-01T00:00:00+08:00"},
        "revive_expired": true, "changed_by": "ops"});
    let redated = t
        .operator("PUT", "/campaigns/spring/expiry", redating)
        .await;
    redated.assert_error(409, "campaign_purged");
    let get = t
        .operator("GET", "/campaigns/spring/purge", Value::Null)
        .await;
    get.assert_error(405, "method_not_allowed");
    let user = t
        .send(
            &user("alice"),
            "POST",
            "/campaigns/spring/purge",
            &[],
            json!({}),
        )
        .await;
    assert_eq!(user.status, 401);
}
