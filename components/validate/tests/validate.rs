//! `GET /coupons/{code}` and `POST /validations`: reading never changes anything.

use coupon_tests::*;
use serde_json::{Value, json};

#[tokio::test]
async fn a_valid_coupon_reports_its_discount() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let code = t.claimed_code("alice", "spring").await;
    let before = t.state();
    let answer = t
        .validate("alice", &code, json!({"amount": 3000, "currency": "CNY"}))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        json!({"valid": true, "discount_amount": 500, "payable_amount": 2500, "expires_at": "2028-03-01T00:00:00+08:00"})
    );
    assert_eq!(t.state(), before, "a validation changed the store");
}

#[tokio::test]
async fn percent_discounts_round_down_and_stop_at_the_cap() {
    let t = TestApp::new().await;
    let body = campaign_with(
        "pct",
        json!({"discount": {"kind": "percent", "basis_points": 1250, "max_amount": 1000}, "min_order_amount": 0}),
    );
    t.create_campaign(body).await;
    let code = t.claimed_code("alice", "pct").await;
    let check = |amount: i64, off: i64| {
        let t = t.clone();
        let code = code.clone();
        async move {
            let answer = t
                .validate("alice", &code, json!({"amount": amount, "currency": "CNY"}))
                .await;
            assert_eq!(
                answer.body["discount_amount"], off,
                "{amount}: {:#}",
                answer.body
            );
            assert_eq!(answer.body["payable_amount"], amount - off);
        }
    };
    check(999, 124).await; // 124.875 rounds down
    check(100_000, 1000).await; // capped
    check(0, 0).await; // never more than the order
}

#[tokio::test]
async fn each_rule_failure_has_its_reason() {
    let t = TestApp::new().await;
    t.create_campaign(campaign_with("cat", json!({"categories": ["food"]})))
        .await;
    let code = t.claimed_code("alice", "cat").await;
    let reason = |order: Value| {
        let (t, code) = (t.clone(), code.clone());
        async move {
            let answer = t.validate("alice", &code, order).await;
            assert_eq!(
                (answer.status, &answer.body["valid"]),
                (200, &json!(false)),
                "{:#}",
                answer.body
            );
            answer.body["reason"].as_str().expect("reason").to_owned()
        }
    };
    assert_eq!(
        reason(json!({"amount": 1999, "currency": "CNY", "categories": ["food"]})).await,
        "below_min_order"
    );
    assert_eq!(
        reason(json!({"amount": 3000, "currency": "USD", "categories": ["food"]})).await,
        "currency_mismatch"
    );
    assert_eq!(
        reason(json!({"amount": 3000, "currency": "CNY", "categories": ["toys"]})).await,
        "category_not_eligible"
    );
    assert_eq!(
        reason(json!({"amount": 3000, "currency": "CNY"})).await,
        "category_not_eligible"
    );
    let ok = t
        .validate(
            "alice",
            &code,
            json!({"amount": 3000, "currency": "CNY", "categories": ["toys", "food"]}),
        )
        .await;
    assert_eq!(ok.body["valid"], true);

    assert_eq!(
        t.redeem("alice", &code, order("o1", 3000)).await.status,
        422
    );
    let food = json!({"id": "o1", "amount": 3000, "currency": "CNY", "categories": ["food"]});
    assert_eq!(t.redeem("alice", &code, food).await.status, 201);
    assert_eq!(
        reason(json!({"amount": 3000, "currency": "CNY", "categories": ["food"]})).await,
        "already_redeemed"
    );
    t.set_now("2028-03-01T00:00:00+08:00");
    // Redeemed stays redeemed after expiry.
    assert_eq!(
        reason(json!({"amount": 3000, "currency": "CNY", "categories": ["food"]})).await,
        "already_redeemed"
    );
}

#[tokio::test]
async fn expired_is_a_reason_not_an_error() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let code = t.claimed_code("alice", "spring").await;
    t.set_now("2028-03-01T00:00:00+08:00");
    let answer = t
        .validate("alice", &code, json!({"amount": 3000, "currency": "CNY"}))
        .await;
    assert_eq!(answer.body, json!({"valid": false, "reason": "expired"}));
}

#[tokio::test]
async fn a_coupon_is_visible_only_to_its_holder() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let code = t.claimed_code("alice", "spring").await;
    let mine = t.coupon("alice", &code).await;
    assert_eq!((mine.status, &mine.body["state"]), (200, &json!("issued")));
    // Someone else's coupon, a well-formed code nobody holds and a mistyped
    // one: the same answers, byte for byte.
    let mut typo = code.clone().into_bytes();
    typo[3] = if typo[3] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).expect("ascii");
    let unheld = made_up_code();
    let mut answers = Vec::new();
    for (who, c) in [
        ("mallory", code.as_str()),
        ("alice", unheld.as_str()),
        ("alice", typo.as_str()),
        ("alice", "0000000000000000000000"),
    ] {
        let answer = t.coupon(who, c).await;
        answer.assert_error(404, "coupon_not_found");
        let validated = t
            .validate(who, c, json!({"amount": 3000, "currency": "CNY"}))
            .await;
        validated.assert_error(404, "coupon_not_found");
        let redeemed = t.redeem(who, c, order("o1", 3000)).await;
        redeemed.assert_error(404, "coupon_not_found");
        answers.push([answer, validated, redeemed].map(|a| (a.status, a.body, a.headers)));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:#?}");
    // The code in any case is the same coupon.
    assert_eq!(t.coupon("alice", &code.to_lowercase()).await.status, 200);
}

#[tokio::test]
async fn bad_validation_bodies_are_400() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let code = t.claimed_code("alice", "spring").await;
    for (body, field) in [
        (json!({"code": code}), "order"),
        (
            json!({"code": code, "order": {"amount": -1, "currency": "CNY"}}),
            "order.amount",
        ),
        (
            json!({"code": code, "order": {"amount": 1, "currency": "cny"}}),
            "order.currency",
        ),
        (
            json!({"code": code, "order": {"amount": 1, "currency": "CNY", "coupon": 1}}),
            "order.coupon",
        ),
        (json!({"order": {"amount": 1, "currency": "CNY"}}), "code"),
    ] {
        let answer = t
            .send(&user("alice"), "POST", "/validations", &[], body)
            .await;
        answer.assert_error(400, "invalid_request");
        assert_eq!(answer.body["error"]["field"], field);
    }
    t.send(&Caller::Anonymous, "POST", "/validations", &[], json!({}))
        .await
        .assert_error(401, "unauthorized");
    t.send(
        &Caller::Anonymous,
        "GET",
        &format!("/coupons/{code}"),
        &[],
        Value::Null,
    )
    .await
    .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn guessing_codes_is_capped_per_user_and_minute() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let code = t.claimed_code("alice", "spring").await;
    let own = t.claimed_code("mallory", "spring").await;
    t.set_now("2028-02-10T10:00:00+08:00");
    for _ in 0..MAX_FAILED_LOOKUPS_PER_MINUTE {
        t.coupon("mallory", &made_up_code())
            .await
            .assert_error(404, "coupon_not_found");
    }
    // Someone else's code is a miss too.
    t.set_now("2028-02-10T10:00:59+08:00");
    let refused = t.coupon("mallory", &code).await;
    refused.assert_error(429, "too_many_failed_lookups");
    assert_eq!(refused.header("retry-after"), Some("1"));
    t.validate("mallory", &made_up_code(), order("o1", 3000))
        .await
        .assert_error(429, "too_many_failed_lookups");
    t.redeem("mallory", &made_up_code(), order("o1", 3000))
        .await
        .assert_error(429, "too_many_failed_lookups");
    // Over the ceiling, mallory's own coupon still checks out.
    assert_eq!(t.coupon("mallory", &own).await.status, 200);
    let valid = t.validate("mallory", &own, order("o2", 3000)).await;
    assert_eq!(valid.body["valid"], json!(true), "{:#}", valid.body);
    let redeemed = t.redeem("mallory", &own, order("o2", 3000)).await;
    assert_eq!(redeemed.status, 201, "{:#}", redeemed.body);
    // Other users are not held back, nor is mallory in the next minute.
    assert_eq!(t.coupon("alice", &code).await.status, 200);
    t.set_now("2028-02-10T10:01:00+08:00");
    t.coupon("mallory", &made_up_code())
        .await
        .assert_error(404, "coupon_not_found");
}

#[tokio::test]
async fn the_operator_looks_up_any_coupon_without_counting_misses() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    let code = t.claimed_code("alice", "spring").await;
    t.redeem("alice", &code, order("o-77", 3000)).await;
    let before = t.state();
    let path = format!("/coupons/{code}");
    let found = t.operator("GET", &path, Value::Null).await;
    assert_eq!(found.status, 200, "{:#}", found.body);
    assert_eq!(
        (
            &found.body["user_id"],
            &found.body["state"],
            &found.body["order_id"]
        ),
        (&json!("alice"), &json!("redeemed"), &json!("o-77"))
    );
    assert_eq!(found.body, t.coupon("alice", &code).await.body);
    // Support mistypes freely: a miss is a 404 and is not counted.
    for _ in 0..=MAX_FAILED_LOOKUPS_PER_MINUTE {
        t.operator("GET", &format!("/coupons/{}", made_up_code()), Value::Null)
            .await
            .assert_error(404, "coupon_not_found");
    }
    assert_eq!(t.state(), before, "a lookup changed the store");
    // Neither a wrong admin token nor a forged user token reads it.
    for caller in [
        Caller::Raw("Bearer not-the-admin-token".into()),
        Caller::Raw(format!("Bearer {}x", token("alice"))),
    ] {
        t.send(&caller, "GET", &path, &[], Value::Null)
            .await
            .assert_error(401, "unauthorized");
    }
    // The operator's token validates nothing: validations are the holder's.
    t.send(
        &Caller::Operator,
        "POST",
        "/validations",
        &[],
        json!({"code": code, "order": order("o1", 3000)}),
    )
    .await
    .assert_error(401, "unauthorized");
}

/// The codes of a wallet page, and its cursor.
fn codes(answer: &Answer) -> (Vec<String>, Option<String>) {
    assert_eq!(answer.status, 200, "{:#}", answer.body);
    let codes = answer.body["coupons"]
        .as_array()
        .expect("coupons")
        .iter()
        .map(|c| c["code"].as_str().expect("a code").to_owned())
        .collect();
    (codes, answer.body["next"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn a_wallet_lists_only_the_callers_coupons_newest_first_by_page_and_state() {
    let t = TestApp::new().await;
    t.create_campaign(campaign_with("spring", json!({"per_user_limit": 3})))
        .await;
    t.create_campaign(campaign("summer")).await;
    let a1 = t.claimed_code("alice", "spring").await;
    let bob = t.claimed_code("bob", "spring").await;
    let a2 = t.claimed_code("alice", "summer").await;
    let a3 = t.claimed_code("alice", "spring").await;

    let before = t.state();
    let all = t.wallet("alice", "").await;
    assert_eq!(
        codes(&all),
        (vec![a3.clone(), a2.clone(), a1.clone()], None)
    );
    assert_eq!(all.body["coupons"][1]["campaign_id"], "summer");
    assert_eq!(all.body["coupons"][1]["state"], "issued");
    assert_eq!(
        all.body["coupons"][1]["expires_at"],
        "2028-03-01T00:00:00+08:00"
    );
    assert_eq!(t.state(), before, "a wallet read changed the store");

    let (first, next) = codes(&t.wallet("alice", "?limit=2").await);
    assert_eq!(first, vec![a3.clone(), a2.clone()]);
    let next = next.expect("a next page");
    let rest = t.wallet("alice", &format!("?limit=2&before={next}")).await;
    assert_eq!(codes(&rest), (vec![a1.clone()], None));
    assert_eq!(codes(&t.wallet("bob", "").await), (vec![bob], None));
    assert_eq!(codes(&t.wallet("carol", "").await), (vec![], None));

    let redeemed = t.redeem("alice", &a2, order("o1", 3000)).await;
    assert_eq!(redeemed.status, 201, "{:#}", redeemed.body);
    let only = t.wallet("alice", "?state=redeemed").await;
    assert_eq!(codes(&only), (vec![a2.clone()], None));
    assert_eq!(only.body["coupons"][0]["order_id"], "o1");
    let issued = t.wallet("alice", "?state=issued").await;
    assert_eq!(codes(&issued), (vec![a3.clone(), a1.clone()], None));
    t.set_now("2028-03-01T00:00:00+08:00");
    let expired = t.wallet("alice", "?state=expired").await;
    assert_eq!(codes(&expired), (vec![a3, a1], None));
}

#[tokio::test]
async fn bad_wallet_queries_are_400_naming_the_parameter() {
    let t = TestApp::new().await;
    t.create_campaign(campaign("spring")).await;
    t.claimed_code("alice", "spring").await;
    for (query, field) in [
        ("?state=used", "state"),
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=ten", "limit"),
        ("?before=0", "before"),
        ("?before=x", "before"),
        ("?state=%ff", "state"),
    ] {
        let answer = t.wallet("alice", query).await;
        answer.assert_error(400, "invalid_request");
        assert_eq!(answer.body["error"]["field"], field, "{query}");
    }
    // The wallet is the user's: the operator has no wallet, nobody else reads it.
    t.send(&Caller::Operator, "GET", "/coupons", &[], Value::Null)
        .await
        .assert_error(401, "unauthorized");
    t.send(&Caller::Anonymous, "GET", "/coupons", &[], Value::Null)
        .await
        .assert_error(401, "unauthorized");
    t.send(&user("alice"), "POST", "/coupons", &[], Value::Null)
        .await
        .assert_error(405, "method_not_allowed");
}

#[tokio::test]
async fn a_category_campaign_discounts_only_the_order_lines_in_its_categories() {
    let t = TestApp::new().await;
    let food = json!({"categories": ["food"], "discount": {"kind": "percent", "basis_points": 1000, "max_amount": 5000}});
    t.create_campaign(campaign_with("food", food)).await;
    let code = t.claimed_code("alice", "food").await;
    let lines = |food: i64| {
        json!({"amount": food + 5000 + 800, "currency": "CNY", "lines": [
            {"category": "toys", "amount": 5000}, {"category": "food", "amount": food}]})
    };
    let answer = t.validate("alice", &code, lines(3000)).await;
    assert_eq!(
        (
            &answer.body["discount_amount"],
            &answer.body["payable_amount"]
        ),
        (&json!(300), &json!(8500)),
        "{:#}",
        answer.body
    );
    // The minimum order (2000) is the food lines' sum.
    let short = t.validate("alice", &code, lines(1500)).await;
    assert_eq!(short.body["reason"], "below_min_order", "{:#}", short.body);
    let over =
        json!({"amount": 100, "currency": "CNY", "lines": [{"category": "food", "amount": 101}]});
    let refused = t.validate("alice", &code, over).await;
    refused.assert_error(400, "invalid_request");
    assert_eq!(refused.body["error"]["field"], "order.lines");
}
