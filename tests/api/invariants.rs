//! The API's invariants under concurrent requests through the real components.
//! Each test checks the stored state itself, not only the answers.

use coupon_tests::*;
use futures::future::join_all;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Runs `$check` as two tests: on the memory store, and on one whose
/// compare-and-swap is as unsafe as Spin 4's (which nothing may rely on).
macro_rules! on_both_stores {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_the_memory_store() {
                super::$check(coupon_tests::TestApp::new().await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn with_spins_unsafe_compare_and_swap() {
                super::$check(coupon_tests::TestApp::with_spins_compare_and_swap().await).await
            }
        }
    )*};
}

on_both_stores!(
    stock_budget_and_per_user_limits_hold_under_concurrent_claims,
    one_user_racing_for_more_than_the_limit_gets_the_limit,
    retries_of_one_idempotency_key_yield_one_coupon,
    racing_orders_redeem_a_coupon_exactly_once,
    redemptions_racing_the_sweep_at_month_end_end_one_way,
    coupons_racing_for_one_order_take_only_its_room,
    orders_racing_to_hold_a_coupon_one_wins_and_only_it_redeems,
    a_hold_and_another_orders_redemption_are_never_both_acknowledged,
    a_hold_ending_while_another_order_waits_lets_that_order_redeem,
    the_ledger_of_a_storm_with_redemptions_cancels_and_a_sweep_reconciles,
);

/// Sends all `requests` at once from separate tasks.
async fn concurrently<F>(requests: Vec<F>) -> Vec<Answer>
where
    F: std::future::Future<Output = Answer> + Send + 'static,
{
    let handles = requests.into_iter().map(tokio::spawn);
    join_all(handles)
        .await
        .into_iter()
        .map(|r| r.expect("no task panics"))
        .collect()
}

fn count_by_status(answers: &[Answer]) -> BTreeMap<(u16, String), usize> {
    let mut counts = BTreeMap::new();
    for a in answers {
        *counts
            .entry((a.status, a.error_code().to_owned()))
            .or_default() += 1;
    }
    counts
}

async fn stock_budget_and_per_user_limits_hold_under_concurrent_claims(t: TestApp) {
    // 10 coupons by stock, 9 by budget (500 each of 4600), 2 per user.
    t.create_campaign(campaign_with("rush", json!({"stock": 10, "budget": 4600})))
        .await;
    let requests = (0..120)
        .map(|i| {
            let t = t.clone();
            async move {
                t.claim(&format!("u{}", i % 20), "rush", &format!("key-{i}"))
                    .await
            }
        })
        .collect();
    let mut answers = concurrently(requests).await;
    // A claim that found each of its user's positions taken by a claim still
    // running cannot tell yet whether the limit is reached: it answers 409
    // `request_in_progress`, and the client retries with the same key.
    for (i, a) in answers.iter_mut().enumerate() {
        if a.status == 409 && a.error_code() == "request_in_progress" {
            *a = t
                .claim(&format!("u{}", i % 20), "rush", &format!("key-{i}"))
                .await;
        }
    }
    let counts = count_by_status(&answers);
    let issued: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
    assert_eq!(issued.len(), 9, "{counts:?}");
    for a in answers.iter().filter(|a| a.status != 201) {
        assert!(
            matches!(a.error_code(), "sold_out" | "per_user_limit_reached"),
            "{:#}",
            a.body
        );
    }
    // Invariant 6: every 201 is in the store; and nothing else is.
    let stored = t.stored_coupons();
    let stored_codes: BTreeSet<&str> = stored.iter().map(|c| c["code"].as_str().unwrap()).collect();
    let answered_codes: BTreeSet<&str> = issued
        .iter()
        .map(|a| a.body["code"].as_str().unwrap())
        .collect();
    assert_eq!(stored_codes, answered_codes);
    let mut per_user: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &stored {
        *per_user.entry(c["user_id"].as_str().unwrap()).or_default() += 1;
    }
    assert!(per_user.values().all(|&n| n <= 2), "{per_user:?}");
    // Invariant 7: stats equal the stored state.
    let stats = t.campaign("rush").await["stats"].clone();
    assert_eq!(
        stats,
        json!({"claimed": 9, "redeemed": 0, "expired": 0, "expired_value": 0, "remaining_stock": 1, "budget_used": 4500, "discount_given": 0, "discount_unsettled": 0, "capacity": 9, "remaining": 0, "binding_limit": "budget"})
    );
}

async fn one_user_racing_for_more_than_the_limit_gets_the_limit(t: TestApp) {
    t.create_campaign(campaign_with("limit", json!({"per_user_limit": 3})))
        .await;
    let requests = (0..30)
        .map(|i| {
            let t = t.clone();
            async move { t.claim("greedy", "limit", &format!("key-{i}")).await }
        })
        .collect();
    let answers = concurrently(requests).await;
    assert_eq!(
        answers.iter().filter(|a| a.status == 201).count(),
        3,
        "{:?}",
        count_by_status(&answers)
    );
    let coupons = t.stored_coupons();
    assert_eq!(coupons.len(), 3);
    // Each of the user's three positions holds one of the coupons; claims
    // that raced past them took positions above the limit, never filled.
    let state = t.state();
    let mut held: Vec<&[u8]> = (1..=3)
        .map(|q| state[&format!("c:limit:positions:greedy:{q}")].as_slice())
        .collect();
    held.sort();
    let mut codes: Vec<&[u8]> = coupons
        .iter()
        .map(|c| c["code"].as_str().expect("code").as_bytes())
        .collect();
    codes.sort();
    assert_eq!(held, codes);
    assert!(!state.contains_key("c:limit:positions:greedy:4"));
    // The user's wallet lists exactly those coupons, once each.
    let wallet = t.wallet("greedy", "").await;
    let mut listed: Vec<&[u8]> = wallet.body["coupons"]
        .as_array()
        .expect("a wallet page")
        .iter()
        .map(|c| c["code"].as_str().expect("code").as_bytes())
        .collect();
    listed.sort();
    assert_eq!(listed, codes, "{:#}", wallet.body);
}

async fn retries_of_one_idempotency_key_yield_one_coupon(t: TestApp) {
    t.create_campaign(campaign("retry")).await;
    let requests = (0..40)
        .map(|_| {
            let t = t.clone();
            async move { t.claim("alice", "retry", "the-only-key").await }
        })
        .collect();
    let answers = concurrently(requests).await;
    let codes: BTreeSet<&str> = answers
        .iter()
        .filter(|a| a.status == 201)
        .map(|a| a.body["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes.len(), 1, "{:?}", count_by_status(&answers));
    for a in answers.iter().filter(|a| a.status != 201) {
        a.assert_error(409, "request_in_progress");
    }
    assert_eq!(t.stored_coupons().len(), 1);
    assert_eq!(t.campaign("retry").await["stats"]["claimed"], 1);
}

async fn racing_orders_redeem_a_coupon_exactly_once(t: TestApp) {
    t.create_campaign(campaign("race")).await;
    let code = t.claimed_code("alice", "race").await;
    let requests = (0..30)
        .map(|i| {
            let (t, code) = (t.clone(), code.clone());
            // Every order twice: retries of one order are the same redemption.
            async move {
                t.redeem("alice", &code, order(&format!("o{}", i % 15), 3000))
                    .await
            }
        })
        .collect();
    let answers = concurrently(requests).await;
    let winners: BTreeSet<&str> = answers
        .iter()
        .filter(|a| matches!(a.status, 200 | 201))
        .map(|a| a.body["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(winners.len(), 1, "{:?}", count_by_status(&answers));
    assert_eq!(answers.iter().filter(|a| a.status == 201).count(), 1);
    for a in answers.iter().filter(|a| !matches!(a.status, 200 | 201)) {
        assert!(
            matches!(a.error_code(), "already_redeemed" | "request_in_progress"),
            "{:#}",
            a.body
        );
    }
    let coupon = t.coupon("alice", &code).await.body;
    assert_eq!(coupon["order_id"].as_str(), winners.first().copied());
    assert_eq!(t.campaign("race").await["stats"]["redeemed"], 1);
}

async fn redemptions_racing_the_sweep_at_month_end_end_one_way(t: TestApp) {
    t.create_campaign(campaign_with(
        "edge",
        json!({"stock": 40, "per_user_limit": 40}),
    ))
    .await;
    let mut codes = Vec::new();
    for _ in 0..20 {
        codes.push(t.claimed_code("alice", "edge").await);
    }
    // Redemptions just before the end race a sweep as of the end.
    t.set_now("2028-02-29T23:59:59.999+08:00");
    let redemptions: Vec<_> = codes
        .iter()
        .enumerate()
        .map(|(i, code)| {
            let (t, code) = (t.clone(), code.clone());
            tokio::spawn(async move {
                t.redeem("alice", &code, order(&format!("o{i}"), 3000))
                    .await
            })
        })
        .collect();
    // Month end arrives while they are in flight; sweeps run at once.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    t.set_now("2028-03-01T00:00:00+08:00");
    let sweeps: Vec<_> = (0..3)
        .map(|_| {
            let t = t.clone();
            tokio::spawn(async move {
                t.expire(Value::Null).await.body["expired"]
                    .as_i64()
                    .unwrap_or(0)
            })
        })
        .collect();
    let redeemed = join_all(redemptions)
        .await
        .into_iter()
        .filter(|r| r.as_ref().is_ok_and(|a| a.status == 201))
        .count();
    let mut expired: i64 = join_all(sweeps)
        .await
        .into_iter()
        .map(|r| r.expect("sweep task"))
        .sum();
    expired += t.expire(Value::Null).await.body["expired"]
        .as_i64()
        .unwrap_or(0);
    let stats = t.campaign("edge").await["stats"].clone();
    assert_eq!(
        (stats["redeemed"].as_i64(), stats["expired"].as_i64()),
        (Some(redeemed as i64), Some(expired))
    );
    assert_eq!(redeemed as i64 + expired, 20, "{stats}");
    for code in &codes {
        let state = t.coupon("alice", code).await.body["state"].clone();
        assert!(state == "redeemed" || state == "expired", "{state}");
    }
}

async fn coupons_racing_for_one_order_take_only_its_room(t: TestApp) {
    // Four campaigns of 2,000 off: an order of 5,000 has room for two
    // coupons, of two campaigns (one per campaign by default).
    let campaigns = ["k0", "k1", "k2", "k3"];
    for id in campaigns {
        t.create_campaign(campaign_with(
            id,
            json!({"discount": {"kind": "fixed", "amount": 2000}}),
        ))
        .await;
    }
    let mut codes = Vec::new();
    for id in campaigns {
        for _ in 0..2 {
            codes.push(t.claimed_code("alice", id).await);
        }
    }
    let requests = codes
        .iter()
        .map(|code| {
            let (t, code) = (t.clone(), code.clone());
            async move { t.redeem("alice", &code, order("basket", 5000)).await }
        })
        .collect();
    let mut answers = concurrently(requests).await;
    // A redemption that found an earlier slot of the order not written yet
    // answers 409 `request_in_progress`: the client retries it.
    for (code, a) in codes.iter().zip(answers.iter_mut()) {
        for _ in 0..5 {
            if a.error_code() != "request_in_progress" {
                break;
            }
            *a = t.redeem("alice", code, order("basket", 5000)).await;
        }
    }
    for a in answers.iter().filter(|a| a.status != 201) {
        assert!(
            matches!(
                a.error_code(),
                "order_campaign_limit_reached" | "order_discount_exceeded"
            ),
            "{:#}",
            a.body
        );
    }
    // What the store holds: two coupons on the order, of two campaigns.
    let mut on_order = BTreeMap::new();
    for code in &codes {
        let coupon = t.coupon("alice", code).await.body;
        if coupon["state"] == "redeemed" {
            assert_eq!(coupon["order_id"], "basket");
            *on_order
                .entry(
                    coupon["campaign_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
                .or_insert(0) += 1;
        }
    }
    assert_eq!(
        on_order.len(),
        2,
        "{on_order:?} {:?}",
        count_by_status(&answers)
    );
    assert!(on_order.values().all(|&n| n == 1), "{on_order:?}");
    assert_eq!(
        answers.iter().filter(|a| a.status == 201).count(),
        2,
        "{:?}",
        count_by_status(&answers)
    );
}

/// A campaign whose coupons the checkout may hold for a minute.
fn with_holds(id: &str) -> Value {
    campaign_with(id, json!({"hold_seconds": 60}))
}

async fn orders_racing_to_hold_a_coupon_one_wins_and_only_it_redeems(t: TestApp) {
    t.create_campaign(with_holds("held")).await;
    let code = t.claimed_code("alice", "held").await;
    let holds = (0..12)
        .map(|i| {
            let (t, code) = (t.clone(), code.clone());
            async move { t.hold("alice", &code, order(&format!("o{i}"), 3000)).await }
        })
        .collect();
    let answers = concurrently(holds).await;
    let won: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
    assert_eq!(won.len(), 1, "{:?}", count_by_status(&answers));
    for a in answers.iter().filter(|a| a.status != 201) {
        assert!(
            matches!(a.error_code(), "coupon_held" | "request_in_progress"),
            "{:#}",
            a.body
        );
    }
    let holder = won[0].body["order_id"].as_str().unwrap().to_owned();
    // The holder's redemption races every other order's, twice over.
    let redemptions = (0..24)
        .map(|i| {
            let (t, code) = (t.clone(), code.clone());
            let o = if i % 3 == 0 {
                holder.clone()
            } else {
                format!("o{i}")
            };
            async move { t.checkout_redeem("alice", &code, order(&o, 3000)).await }
        })
        .collect();
    let answers = concurrently(redemptions).await;
    let fresh: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
    assert_eq!(fresh.len(), 1, "{:?}", count_by_status(&answers));
    assert_eq!(fresh[0].body["order_id"], holder.as_str());
    for a in answers.iter().filter(|a| !matches!(a.status, 200 | 201)) {
        assert!(
            matches!(
                a.error_code(),
                "coupon_held" | "already_redeemed" | "request_in_progress"
            ),
            "{:#}",
            a.body
        );
    }
    assert_eq!(
        t.coupon("alice", &code).await.body["order_id"],
        holder.as_str()
    );
    assert_eq!(t.campaign("held").await["stats"]["redeemed"], 1);
}

async fn a_hold_and_another_orders_redemption_are_never_both_acknowledged(t: TestApp) {
    t.create_campaign(campaign_with(
        "duel",
        json!({"hold_seconds": 60, "per_user_limit": 20, "stock": 20}),
    ))
    .await;
    for round in 0..12 {
        let code = t.claimed_code("alice", "duel").await;
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        let (t1, t2, c1, c2) = (t.clone(), t.clone(), code.clone(), code.clone());
        let held = tokio::spawn(async move { t1.hold("alice", &c1, order(&a, 3000)).await });
        let redeemed =
            tokio::spawn(async move { t2.checkout_redeem("alice", &c2, order(&b, 3000)).await });
        let (held, redeemed) = (held.await.unwrap(), redeemed.await.unwrap());
        assert!(
            held.status != 201 || redeemed.status != 201,
            "round {round}: both acknowledged: {:#} {:#}",
            held.body,
            redeemed.body
        );
        let state = &t.coupon("alice", &code).await.body;
        match (held.status, redeemed.status) {
            // The hold won: its order redeems it.
            (201, _) => {
                let o = format!("a{round}");
                let mine = t.checkout_redeem("alice", &code, order(&o, 3000)).await;
                assert_eq!(mine.status, 201, "{:#}", mine.body);
            }
            (_, 201) => assert_eq!(state["order_id"], format!("b{round}").as_str()),
            // Both met the other in flight: the coupon is still free.
            _ => assert_eq!(state["state"], "issued"),
        }
    }
}

async fn a_hold_ending_while_another_order_waits_lets_that_order_redeem(t: TestApp) {
    t.create_campaign(with_holds("lapse")).await;
    let code = t.claimed_code("alice", "lapse").await;
    let held = t.hold("alice", &code, order("a", 3000)).await;
    assert_eq!(held.status, 201, "{:#}", held.body);
    assert_eq!(held.body["held_until"], "2028-02-10T10:01:00+08:00");
    // Order b's checkout retries as the README says, after Retry-After.
    let waiter = {
        let (t, code) = (t.clone(), code.clone());
        tokio::spawn(async move {
            let mut refusals = Vec::new();
            for _ in 0..500 {
                let answer = t.checkout_redeem("alice", &code, order("b", 3000)).await;
                if answer.status != 409 {
                    return (refusals, answer);
                }
                refusals.push(answer.header("retry-after").map(str::to_owned));
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            panic!("the hold never ended for the waiting order");
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // The hold's minute passes, with no call and no sweep.
    t.set_now("2028-02-10T10:01:00+08:00");
    let (refusals, answer) = waiter.await.unwrap();
    assert_eq!(answer.status, 201, "{:#}", answer.body);
    assert_eq!(answer.body["order_id"], "b");
    assert!(!refusals.is_empty(), "b never waited");
    assert_eq!(refusals[0].as_deref(), Some("60"));
    t.checkout_redeem("alice", &code, order("a", 3000))
        .await
        .assert_error(409, "already_redeemed");
    assert_eq!(t.campaign("lapse").await["stats"]["redeemed"], 1);
}

/// Sweeps to the end of a walk after month end, then again each a lease
/// later, so the stock's recount and the ledgers' settling have run through.
async fn sweep_until_settled(t: &TestApp) {
    for minute in [10, 13, 16, 19] {
        t.set_now(&format!("2028-03-01T00:{minute}:00+08:00"));
        let mut cursor = Value::Null;
        loop {
            let body = match &cursor {
                Value::Null => Value::Null,
                c => json!({"cursor": c}),
            };
            let swept = t.expire(body).await;
            assert_eq!(swept.status, 200, "{:#}", swept.body);
            cursor = swept.body["next_cursor"].clone();
            if cursor.is_null() {
                break;
            }
        }
    }
}

async fn the_ledger_of_a_storm_with_redemptions_cancels_and_a_sweep_reconciles(t: TestApp) {
    t.create_campaign(campaign_with(
        "books",
        json!({"stock": 60, "per_user_limit": 2, "hold_seconds": 600}),
    ))
    .await;
    // 80 claims for 60 coupons.
    let claims = (0..80)
        .map(|i| {
            let t = t.clone();
            async move {
                t.claim(&format!("u{}", i % 40), "books", &format!("k{i}"))
                    .await
            }
        })
        .collect();
    let claimed: Vec<(String, String)> = concurrently(claims)
        .await
        .iter()
        .filter(|a| a.status == 201)
        .map(|a| {
            let (code, user) = (&a.body["code"], &a.body["user_id"]);
            (
                code.as_str().unwrap().to_owned(),
                user.as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(claimed.len(), 60);
    // Half are redeemed, each by two orders racing (one wins), one by the
    // checkout after a hold.
    let redemptions = claimed[..30]
        .iter()
        .flat_map(|(code, user)| {
            ["a", "b"].map(|o| {
                let (t, code, user) = (t.clone(), code.clone(), user.clone());
                async move {
                    t.redeem(&user, &code, order(&format!("{code}-{o}"), 3000))
                        .await
                }
            })
        })
        .collect();
    let won: Vec<Answer> = concurrently(redemptions)
        .await
        .into_iter()
        .filter(|a| a.status == 201)
        .collect();
    assert_eq!(won.len(), 30, "one order of each pair");
    let (code, user) = &claimed[30];
    assert_eq!(t.hold(user, code, order("held", 3000)).await.status, 201);
    assert_eq!(
        t.checkout_redeem(user, code, order("held", 3000))
            .await
            .status,
        201
    );
    // Five redemptions are cancelled, at once.
    let cancels = won[..5]
        .iter()
        .map(|a| {
            let t = t.clone();
            let path = format!(
                "/redemptions/{}?order_id={}",
                a.body["code"].as_str().unwrap(),
                a.body["order_id"].as_str().unwrap()
            );
            async move { t.operator("DELETE", &path, Value::Null).await }
        })
        .collect();
    for cancelled in concurrently(cancels).await {
        assert_eq!(cancelled.status, 200, "{:#}", cancelled.body);
    }
    // The month ends: what was not redeemed expires.
    sweep_until_settled(&t).await;
    let stats = t.campaign("books").await["stats"].clone();
    assert_eq!(
        (&stats["claimed"], &stats["redeemed"], &stats["expired"]),
        (&json!(60), &json!(26), &json!(34)),
        "{stats}"
    );
    assert_eq!(stats["discount_given"], 26 * 500);

    let mut cursor = String::new();
    let report = loop {
        let path = format!("/campaigns/books/reconciliation?cursor={cursor}");
        let answer = t.operator("GET", &path, Value::Null).await;
        assert_eq!(answer.status, 200, "{:#}", answer.body);
        match answer.body["status"].as_str() {
            Some("counting") => cursor = answer.body["cursor"].as_str().unwrap().to_owned(),
            _ => break answer.body,
        }
    };
    assert_eq!(report["status"], "done");
    assert_eq!(report["differences"], json!([]), "{report:#}");
    assert_eq!(report["ledger"], report["stats"]);
    assert_eq!(report["ledger"]["discount_given"], 26 * 500);

    // Every event once, page by page; the kinds add up.
    let (mut ids, mut kinds) = (BTreeSet::new(), BTreeMap::<String, i64>::new());
    let mut cursor = String::new();
    loop {
        let path = format!("/campaigns/books/events?limit=25&cursor={cursor}");
        let page = t.operator("GET", &path, Value::Null).await;
        assert_eq!(page.status, 200, "{:#}", page.body);
        for event in page.body["events"].as_array().unwrap() {
            assert!(
                ids.insert(event["id"].as_str().unwrap().to_owned()),
                "{event}"
            );
            *kinds
                .entry(event["kind"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        cursor = page.body["next_cursor"].as_str().unwrap().to_owned();
        if page.body["has_more"] == false {
            assert_eq!(page.body["waiting"], 0);
            break;
        }
    }
    let expected: BTreeMap<String, i64> = [
        ("created", 1),
        ("claimed", 60),
        ("held", 1),
        ("redeemed", 31),
        ("cancelled", 5),
        ("expired", 34),
    ]
    .map(|(k, n)| (k.to_owned(), n))
    .into();
    assert_eq!(kinds, expected);
    // The same stream as JSON lines, for finance's tools.
    let lines = t
        .operator(
            "GET",
            "/campaigns/books/events?format=jsonl&limit=10",
            Value::Null,
        )
        .await;
    assert_eq!(lines.status, 200);
    assert_eq!(lines.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(lines.header("has-more"), Some("true"));
    assert!(lines.header("next-cursor").is_some_and(|c| !c.is_empty()));
    let text = lines.body.as_str().unwrap();
    let first: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(first.len(), 10);
    assert_eq!(first[0]["kind"], "created");
}
