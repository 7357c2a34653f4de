//! What lies outside the API: unknown routes, wrong methods, oversized bodies.

use bytes::Bytes;
use coupon_tests::*;
use serde_json::{Value, json};

#[tokio::test]
async fn wrong_methods_are_405_and_unknown_paths_404() {
    let t = TestApp::new().await;
    for (method, path, allow) in [
        ("GET", "/claims", "POST"),
        ("PUT", "/campaigns", "GET, POST"),
        ("DELETE", "/campaigns/spring", "GET"),
        ("GET", "/campaigns/spring/pause", "POST"),
        ("POST", "/campaigns/spring/expiry", "GET, PUT"),
        ("GET", "/validations", "POST"),
        ("POST", "/coupons/ABC", "GET"),
        ("GET", "/redemptions", "POST"),
        ("GET", "/redemptions/ABC", "DELETE"),
        ("GET", "/expirations", "POST"),
    ] {
        let answer = t
            .send(&Caller::Operator, method, path, &[], Value::Null)
            .await;
        answer.assert_error(405, "method_not_allowed");
        assert_eq!(answer.header("allow"), Some(allow), "{method} {path}");
    }
    t.operator("GET", "/campaigns/spring/stats", Value::Null)
        .await
        .assert_error(404, "not_found");
    t.operator("POST", "/redemptions/a/b", Value::Null)
        .await
        .assert_error(404, "not_found");
    // Paths no component is routed to are Spin's own 404: no body.
    let nowhere = t.operator("GET", "/nothing-here", Value::Null).await;
    assert_eq!((nowhere.status, &nowhere.body), (404, &Value::Null));
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

/// A store whose every call fails, as an unreachable Redis does.
struct BrokenStore;

#[async_trait::async_trait]
impl coupon_host::KeyValueStore for BrokenStore {
    async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, coupon_host::KvError> {
        Err(coupon_host::KvError::Backend("connection refused".into()))
    }
    async fn set(&self, _: &str, _: &[u8]) -> Result<(), coupon_host::KvError> {
        Err(coupon_host::KvError::Backend("connection refused".into()))
    }
    async fn delete(&self, _: &str) -> Result<(), coupon_host::KvError> {
        Err(coupon_host::KvError::Backend("connection refused".into()))
    }
    async fn exists(&self, _: &str) -> Result<bool, coupon_host::KvError> {
        Err(coupon_host::KvError::Backend("connection refused".into()))
    }
    async fn get_keys(&self) -> Result<Vec<String>, coupon_host::KvError> {
        Err(coupon_host::KvError::Backend("connection refused".into()))
    }
    async fn increment(&self, _: &str, _: i64) -> Result<i64, coupon_host::KvError> {
        Err(coupon_host::KvError::Backend("connection refused".into()))
    }
    async fn compare_and_swap(
        &self,
        _: &str,
        _: Option<&[u8]>,
        _: &[u8],
    ) -> Result<bool, coupon_host::KvError> {
        Err(coupon_host::KvError::Backend("connection refused".into()))
    }
}

#[tokio::test]
async fn a_failing_store_is_503_store_unavailable_never_a_crash() {
    let app = coupon_host::App::builder_from_workspace()
        .expect("spin.toml")
        .variable("user_token_secret", USER_SECRET)
        .variable("admin_token", ADMIN_TOKEN)
        .store("default", BrokenStore)
        .build()
        .await
        .expect("the app starts");
    let t = TestApp {
        app,
        store: coupon_host::kv::MemoryStore::new(),
        clock: coupon_host::clock::ManualClock::at_now(),
    };
    let answer = t.create_campaign(campaign("spring")).await;
    answer.assert_error(503, "store_unavailable");
    assert!(answer.header("retry-after").is_some());
    t.claim("alice", "spring", "k")
        .await
        .assert_error(503, "store_unavailable");
    let code = "0000000000000000000000";
    t.validate("alice", code, json!({"amount": 1, "currency": "CNY"}))
        .await
        .assert_error(404, "coupon_not_found");
    t.expire(Value::Null)
        .await
        .assert_error(503, "store_unavailable");
}

#[tokio::test]
async fn a_campaign_list_with_a_bad_cursor_or_limit_is_400_naming_it() {
    let t = TestApp::new().await;
    for (query, field) in [
        ("after=x", "after"),
        ("after=-1", "after"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
    ] {
        let answer = t
            .operator("GET", &format!("/campaigns?{query}"), Value::Null)
            .await;
        answer.assert_error(400, "invalid_request");
        assert_eq!(answer.body["error"]["field"], field, "{query}");
    }
    let page = t.operator("GET", "/campaigns", Value::Null).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body, json!({"campaigns": []}));
}
