//! What lies outside the API: unknown routes, wrong methods, oversized bodies.

use bytes::Bytes;
use coupon_tests::*;
use serde_json::{Value, json};

#[tokio::test]
async fn wrong_methods_are_405_and_unknown_paths_404() {
    let t = TestApp::new().await;
    for (method, path) in [
        ("GET", "/claims"),
        ("PUT", "/campaigns"),
        ("DELETE", "/campaigns/spring"),
        ("GET", "/validations"),
        ("POST", "/coupons/ABC"),
        ("GET", "/redemptions"),
        ("GET", "/expirations"),
    ] {
        let answer = t
            .send(&Caller::Operator, method, path, &[], Value::Null)
            .await;
        answer.assert_error(405, "method_not_allowed");
    }
    t.operator("GET", "/campaigns/spring/stats", Value::Null)
        .await
        .assert_error(404, "not_found");
    t.operator("POST", "/redemptions/a/b", Value::Null)
        .await
        .assert_error(404, "not_found");
    // Paths no component is routed to are the host's 404.
    assert_eq!(
        t.operator("GET", "/nothing-here", Value::Null).await.status,
        404
    );
}

#[tokio::test]
async fn bodies_over_16_kib_are_413_before_parsing() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let big = Bytes::from(format!(
        r#"{{"campaign_id": "spring", "pad": "{}"}}"#,
        "x".repeat(16 * 1024)
    ));
    let answer = t
        .send_bytes(
            &user("alice"),
            "POST",
            "/claims",
            &[("idempotency-key", "k")],
            big,
        )
        .await;
    answer.assert_error(413, "payload_too_large");
    let big_campaign = json!({"name": "x".repeat(20_000)});
    t.create_campaign(big_campaign)
        .await
        .assert_error(413, "payload_too_large");
    assert_eq!(t.stored_coupons().len(), 0);
}
