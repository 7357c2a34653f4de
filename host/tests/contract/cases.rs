//! The contract: every operation of `openapi.yaml`, the stories across them
//! and the invariants under concurrent clients, as any HTTP client sees them.
//! Nothing here reads the store or sets the clock: the server's own clock
//! runs, so campaigns are open around now and the month-end sweep is driven
//! through its `as_of`.

use crate::client::{Answer, Target, Who};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

type Outcome = Result<(), String>;

/// A case: its name and what it runs against a server.
pub type Case = (&'static str, fn(&Target) -> Outcome);

/// `(name, function)` for each function named.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        &[$((stringify!($case), $case as fn(&Target) -> Outcome)),*]
    };
}

/// Every case, by name.
pub const CASES: &[Case] = cases![
    campaigns_are_created_once_and_read_back,
    the_campaign_list_pages_to_every_campaign,
    the_console_is_served_with_its_assets,
    bad_input_is_4xx_with_a_stable_code,
    the_platform_answers_as_spin_does,
    claim_validate_redeem_cancel_redeem_again,
    limits_answer_sold_out_and_per_user,
    pause_stops_claims_and_resume_lets_the_same_key_through,
    freeze_stops_redemptions_until_unfreeze,
    close_ends_claims_for_good,
    limits_change_during_a_sale_and_never_below_what_is_issued,
    redating_moves_every_outstanding_coupon,
    the_sweep_pages_through_as_of_and_expires_nothing_valid,
    parallel_claims_never_exceed_the_stock,
    parallel_claims_by_one_user_stop_at_the_limit,
    parallel_redemptions_of_one_coupon_redeem_it_once,
    coupons_racing_for_one_order_take_only_its_room,
    parallel_holds_of_one_coupon_let_one_order_redeem_it,
    parallel_retries_of_one_claim_issue_one_coupon,
    the_ledger_holds_each_change_once_and_reconciles,
];

/// A name no earlier run used, so the suite can run again on a kept store.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let now = coupon_core::Timestamp::now().as_millisecond();
    format!("{prefix}-{now}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A campaign open from a day ago to a day from now in Shanghai: 500 off
/// orders of 2000 or more, 10 coupons, 2 per user.
fn campaign(id: &str, changes: Value) -> Value {
    let now = coupon_core::Timestamp::now();
    let day = jiff::SignedDuration::from_hours(24);
    let mut body = json!({
        "id": id,
        "name": "Contract",
        "currency": "CNY",
        "discount": {"kind": "fixed", "amount": 500},
        "min_order_amount": 2000,
        "stock": 10,
        "per_user_limit": 2,
        "redeemable_by_users": true,
        "claim_starts_at": (now - day).to_string(),
        "claim_ends_at": (now + day).to_string(),
        "time_zone": "Asia/Shanghai",
        "expiry": {"kind": "end_of_claim_month"}
    });
    if let (Some(body), Value::Object(changes)) = (body.as_object_mut(), changes) {
        body.extend(changes);
    }
    body
}

fn create(t: &Target, changes: Value) -> Result<String, String> {
    let id = unique("c");
    t.post(Who::Operator, "/campaigns", &campaign(&id, changes))?
        .expect_status(201)?;
    Ok(id)
}

fn stats(t: &Target, id: &str) -> Result<Value, String> {
    Ok(t.get(Who::Operator, &format!("/campaigns/{id}"))?
        .expect_status(200)?["stats"]
        .clone())
}

fn claimed(t: &Target, user: &str, campaign: &str) -> Result<String, String> {
    let answer = t.claim(user, campaign, &unique("k"))?;
    code_of(&answer)
}

fn code_of(answer: &Answer) -> Result<String, String> {
    answer.expect_status(201)?["code"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no code in {}", answer.body))
}

fn order(id: &str, amount: i64) -> Value {
    json!({"id": id, "amount": amount, "currency": "CNY"})
}

fn redeem(t: &Target, user: &str, code: &str, order: Value) -> Result<Answer, String> {
    t.post(
        Who::User(user),
        "/redemptions",
        &json!({"code": code, "order": order}),
    )
}

fn ensure(condition: bool, what: impl FnOnce() -> String) -> Outcome {
    if condition { Ok(()) } else { Err(what()) }
}

fn ensure_eq<T: PartialEq + std::fmt::Debug>(found: T, expected: T, what: &str) -> Outcome {
    ensure(found == expected, || {
        format!("{what}: expected {expected:?}, found {found:?}")
    })
}

/// The first instant of the month after `now`'s month in `zone`, as the API
/// writes it (the zone's offset).
fn next_month_start(zone: &str) -> Result<String, String> {
    let zoned = coupon_core::Timestamp::now()
        .in_tz(zone)
        .map_err(|e| e.to_string())?;
    let first = zoned
        .date()
        .first_of_month()
        .checked_add(jiff::Span::new().months(1))
        .map_err(|e| e.to_string())?;
    let start = first.in_tz(zone).map_err(|e| e.to_string())?;
    Ok(start
        .timestamp()
        .display_with_offset(start.offset())
        .to_string())
}

/// Runs `count` copies of `task` at once, each on its own thread and
/// connection, and returns their answers.
fn together<F>(count: usize, task: F) -> Result<Vec<Answer>, String>
where
    F: Fn(usize) -> Result<Answer, String> + Sync,
{
    let barrier = std::sync::Barrier::new(count);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .map(|i| {
                let (task, barrier) = (&task, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    task(i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "a client thread panicked".to_owned())?
            })
            .collect()
    })
}

fn count_status(answers: &[Answer], status: u16) -> usize {
    answers.iter().filter(|a| a.status == status).count()
}

// ---- campaigns ----

fn campaigns_are_created_once_and_read_back(t: &Target) -> Outcome {
    let id = unique("c");
    let body = campaign(&id, json!({}));
    let created = t.post(Who::Operator, "/campaigns", &body)?;
    let created_body = created.expect_status(201)?.clone();
    ensure_eq(&created_body["paused"], &json!(false), "paused")?;
    ensure_eq(
        &created_body["stats"],
        &json!({"claimed": 0, "redeemed": 0, "expired": 0, "expired_value": 0, "remaining_stock": 10, "budget_used": 0, "discount_given": 0, "discount_unsettled": 0, "capacity": 10, "remaining": 10, "binding_limit": "stock"}),
        "stats",
    )?;
    // The same body again is 200 with the same campaign; another body is 409.
    let again = t.post(Who::Operator, "/campaigns", &body)?;
    ensure_eq(again.expect_status(200)?, &created_body, "identical create")?;
    let mut other = body.clone();
    other["stock"] = json!(11);
    t.post(Who::Operator, "/campaigns", &other)?
        .expect_error(409, "campaign_exists")?;
    let read = t.get(Who::Operator, &format!("/campaigns/{id}"))?;
    ensure_eq(read.expect_status(200)?, &created_body, "GET")?;
    t.get(Who::Operator, &format!("/campaigns/{}", unique("missing")))?
        .expect_error(404, "campaign_not_found")?;
    // The shop's read needs no credentials and shows no stats.
    let public = t.get(Who::Anonymous, &format!("/campaigns/{id}/public"))?;
    let public = public.expect_status(200)?;
    ensure_eq(
        (&public["state"], &public["claimable"], public.get("stats")),
        (&json!("open"), &json!(true), None),
        "public read",
    )?;
    let anonymous = t.get(Who::Anonymous, &format!("/campaigns/{id}"))?;
    anonymous.expect_error(401, "unauthorized")?;
    ensure_eq(
        anonymous.header("www-authenticate"),
        Some(r#"Bearer realm="coupons""#),
        "challenge without a token",
    )?;
    // A user's token is no operator's: refused as any other token would be.
    let user = t.get(Who::User("alice"), &format!("/campaigns/{id}"))?;
    user.expect_error(401, "unauthorized")?;
    ensure(
        user.header("www-authenticate")
            .is_some_and(|c| c.contains(r#"error="invalid_token""#) && c.contains("signature")),
        || {
            format!(
                "challenge for a user's token: {:?}",
                user.header("www-authenticate")
            )
        },
    )
}

fn the_campaign_list_pages_to_every_campaign(t: &Target) -> Outcome {
    // A kept store may hold campaigns of earlier runs: page to the end.
    let ids = [create(t, json!({}))?, create(t, json!({}))?];
    let mut seen = Vec::new();
    let mut path = "/campaigns?limit=2".to_owned();
    for _ in 0..100_000 {
        let page = t.get(Who::Operator, &path)?;
        let body = page.expect_status(200)?;
        for c in body["campaigns"].as_array().into_iter().flatten() {
            seen.push(c["id"].as_str().unwrap_or_default().to_owned());
        }
        match body["next"].as_str() {
            Some(next) => path = format!("/campaigns?limit=2&after={next}"),
            None => break,
        }
    }
    ensure(seen.ends_with(&ids), || {
        format!("the list ends {:?}", seen.last_chunk::<2>())
    })?;
    t.get(Who::Operator, "/campaigns?limit=0")?
        .expect_error(400, "invalid_request")?;
    t.get(Who::Anonymous, "/campaigns")?
        .expect_error(401, "unauthorized")
}

fn the_console_is_served_with_its_assets(t: &Target) -> Outcome {
    for (path, media) in [
        ("/console/", "text/html; charset=utf-8"),
        ("/console/console.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
    ] {
        let answer = t.get(Who::Anonymous, path)?;
        answer.expect_status(200)?;
        ensure_eq(answer.header("content-type"), Some(media), path)?;
        ensure(
            answer
                .header("content-security-policy")
                .is_some_and(|p| p.contains("default-src 'none'")),
            || format!("{path} has no content security policy"),
        )?;
    }
    let bare = t.get(Who::Anonymous, "/console")?;
    bare.expect_status(308)?;
    ensure_eq(bare.header("location"), Some("/console/"), "redirect")?;
    t.get(Who::Anonymous, "/console/nothing")?
        .expect_status(404)?;
    Ok(())
}

fn bad_input_is_4xx_with_a_stable_code(t: &Target) -> Outcome {
    let id = unique("c");
    let mut no_stock = campaign(&id, json!({}));
    no_stock["stock"] = json!(0);
    let refused = t.post(Who::Operator, "/campaigns", &no_stock)?;
    refused.expect_error(400, "invalid_request")?;
    ensure_eq(
        refused.body["error"]["field"].as_str(),
        Some("stock"),
        "field",
    )?;
    // Nothing was created.
    t.get(Who::Operator, &format!("/campaigns/{id}"))?
        .expect_error(404, "campaign_not_found")?;
    let raw = t.send(
        Who::Operator,
        "POST",
        "/campaigns",
        &[],
        Some(&json!("not an object")),
    )?;
    raw.expect_error(400, "invalid_request")?;
    // A claim without an idempotency key, and one for no campaign.
    t.send(
        Who::User("alice"),
        "POST",
        "/claims",
        &[],
        Some(&json!({"campaign_id": id})),
    )?
    .expect_error(400, "invalid_request")?;
    t.claim("alice", &id, "k")?
        .expect_error(404, "campaign_not_found")?;
    // Wrong methods are the component's 405.
    let wrong = t.send(Who::User("alice"), "GET", "/claims", &[], None)?;
    wrong.expect_error(405, "method_not_allowed")?;
    ensure_eq(wrong.header("allow"), Some("POST"), "Allow")?;
    // A mistyped code is 404 like any code the user does not hold.
    t.get(Who::User("alice"), "/coupons/AAAAAAAAAAAAAAAAAAAAA")?
        .expect_error(404, "coupon_not_found")?;
    Ok(())
}

/// What Spin itself answers, before any component: its health and info
/// paths, an empty 404 for a path no route serves, routing that ignores
/// extra slashes (the component then sees the path as sent).
fn the_platform_answers_as_spin_does(t: &Target) -> Outcome {
    let health = t.get(Who::Anonymous, "/.well-known/spin/health")?;
    ensure_eq(health.expect_status(200)?, &json!("OK"), "health")?;
    let info = t.get(Who::Anonymous, "/.well-known/spin/info")?;
    ensure_eq(
        info.expect_status(200)?,
        &json!({"name": "coupons", "version": "0.1.0"}),
        "info",
    )?;
    for path in ["/nowhere", "/.well-known/spin/other", "/claimsx"] {
        let nothing = t.get(Who::Operator, path)?;
        ensure_eq((nothing.status, &nothing.body), (404, &Value::Null), path)?;
    }
    // `/claims/` is routed to the claim component, which serves only `/claims`.
    t.send(
        Who::User("alice"),
        "POST",
        "/claims/",
        &[],
        Some(&json!({})),
    )?
    .expect_error(404, "not_found")?;
    Ok(())
}

// ---- stories ----

fn claim_validate_redeem_cancel_redeem_again(t: &Target) -> Outcome {
    // Orders of this case only: an order id is one order of the user.
    let (o1, o2) = (unique("o"), unique("o"));
    let id = create(t, json!({}))?;
    let key = unique("k");
    let first = t.claim("alice", &id, &key)?;
    let code = code_of(&first)?;
    ensure_eq(
        first.header("idempotent-replayed"),
        None,
        "first claim replayed",
    )?;
    ensure_eq(&first.body["state"], &json!("issued"), "state")?;
    ensure_eq(
        first.body["expires_at"].as_str(),
        Some(next_month_start("Asia/Shanghai")?.as_str()),
        "expires_at",
    )?;
    // The same key replays the same coupon.
    let replay = t.claim("alice", &id, &key)?;
    ensure_eq(replay.status, 201, "replay status")?;
    ensure_eq(
        replay.header("idempotent-replayed"),
        Some("true"),
        "replayed header",
    )?;
    ensure_eq(&replay.body, &first.body, "replayed body")?;

    let read = t.get(Who::User("alice"), &format!("/coupons/{code}"))?;
    ensure_eq(read.expect_status(200)?, &first.body, "GET /coupons")?;
    t.get(Who::User("bob"), &format!("/coupons/{code}"))?
        .expect_error(404, "coupon_not_found")?;
    // Customer support reads any coupon with the operator's token.
    let support = t.get(Who::Operator, &format!("/coupons/{code}"))?;
    ensure_eq(support.expect_status(200)?, &first.body, "support lookup")?;

    let validation = t.post(
        Who::User("alice"),
        "/validations",
        &json!({"code": code, "order": {"amount": 8800, "currency": "CNY"}}),
    )?;
    let v = validation.expect_status(200)?;
    ensure_eq(
        (&v["valid"], &v["discount_amount"], &v["payable_amount"]),
        (&json!(true), &json!(500), &json!(8300)),
        "validation",
    )?;
    let small = t.post(
        Who::User("alice"),
        "/validations",
        &json!({"code": code, "order": {"amount": 100, "currency": "CNY"}}),
    )?;
    ensure_eq(
        &small.expect_status(200)?["valid"],
        &json!(false),
        "small order",
    )?;

    let redeemed = redeem(t, "alice", &code, order(&o1, 8800))?;
    let receipt = redeemed.expect_status(201)?.clone();
    ensure_eq(&receipt["payable_amount"], &json!(8300), "payable")?;
    let again = redeem(t, "alice", &code, order(&o1, 8800))?;
    ensure_eq(again.expect_status(200)?, &receipt, "redeem replay")?;
    redeem(t, "alice", &code, order(&o2, 8800))?.expect_error(409, "already_redeemed")?;
    let state = t.get(Who::User("alice"), &format!("/coupons/{code}"))?;
    ensure_eq(
        &state.expect_status(200)?["state"],
        &json!("redeemed"),
        "state",
    )?;
    ensure_eq(&stats(t, &id)?["redeemed"], &json!(1), "stats.redeemed")?;

    // The order is cancelled: the coupon is issued again and redeems anew.
    let cancel_path = format!("/redemptions/{code}?order_id={o1}");
    t.send(Who::User("alice"), "DELETE", &cancel_path, &[], None)?
        .expect_error(401, "unauthorized")?;
    let cancelled = t.send(Who::Operator, "DELETE", &cancel_path, &[], None)?;
    ensure_eq(
        &cancelled.expect_status(200)?["state"],
        &json!("issued"),
        "cancelled",
    )?;
    redeem(t, "alice", &code, order(&o2, 8800))?.expect_status(201)?;
    let s = stats(t, &id)?;
    ensure_eq(
        (&s["claimed"], &s["redeemed"], &s["remaining_stock"]),
        (&json!(1), &json!(1), &json!(9)),
        "stats",
    )?;
    Ok(())
}

fn limits_answer_sold_out_and_per_user(t: &Target) -> Outcome {
    let id = create(t, json!({"stock": 3, "per_user_limit": 2, "shards": 2}))?;
    claimed(t, "alice", &id)?;
    claimed(t, "alice", &id)?;
    t.claim("alice", &id, &unique("k"))?
        .expect_error(409, "per_user_limit_reached")?;
    claimed(t, "bob", &id)?;
    t.claim("carol", &id, &unique("k"))?
        .expect_error(410, "sold_out")?;
    let s = stats(t, &id)?;
    ensure_eq(
        (&s["claimed"], &s["remaining_stock"]),
        (&json!(3), &json!(0)),
        "stats",
    )
}

fn pause_stops_claims_and_resume_lets_the_same_key_through(t: &Target) -> Outcome {
    let id = create(t, json!({}))?;
    claimed(t, "alice", &id)?;
    let paused = t.post(
        Who::Operator,
        &format!("/campaigns/{id}/pause"),
        &Value::Null,
    )?;
    ensure_eq(
        &paused.expect_status(200)?["paused"],
        &json!(true),
        "paused",
    )?;
    let key = unique("k");
    let refused = t.claim("bob", &id, &key)?;
    refused.expect_error(503, "campaign_paused")?;
    ensure(refused.header("retry-after").is_some(), || {
        "no Retry-After".into()
    })?;
    ensure_eq(
        &stats(t, &id)?["claimed"],
        &json!(1),
        "claimed while paused",
    )?;
    let resumed = t.post(
        Who::Operator,
        &format!("/campaigns/{id}/resume"),
        &Value::Null,
    )?;
    ensure_eq(
        &resumed.expect_status(200)?["paused"],
        &json!(false),
        "resumed",
    )?;
    code_of(&t.claim("bob", &id, &key)?)?;
    let s = stats(t, &id)?;
    ensure_eq(
        (&s["claimed"], &s["remaining_stock"]),
        (&json!(2), &json!(8)),
        "stats",
    )
}

fn freeze_stops_redemptions_until_unfreeze(t: &Target) -> Outcome {
    // Orders of this case only: an order id is one order of the user.
    let o1 = unique("o");
    let id = create(t, json!({}))?;
    let code = claimed(t, "alice", &id)?;
    let frozen = t.post(
        Who::Operator,
        &format!("/campaigns/{id}/freeze"),
        &Value::Null,
    )?;
    let view = frozen.expect_status(200)?;
    ensure_eq(
        (&view["frozen"], &view["paused"]),
        (&json!(true), &json!(false)),
        "frozen",
    )?;
    let refused = redeem(t, "alice", &code, order(&o1, 8800))?;
    refused.expect_error(503, "redemptions_frozen")?;
    ensure(refused.header("retry-after").is_some(), || {
        "no Retry-After".into()
    })?;
    // Claims go on while redemptions are frozen.
    claimed(t, "bob", &id)?;
    ensure_eq(
        &stats(t, &id)?["redeemed"],
        &json!(0),
        "redeemed while frozen",
    )?;
    let thawed = t.post(
        Who::Operator,
        &format!("/campaigns/{id}/unfreeze"),
        &Value::Null,
    )?;
    ensure_eq(
        &thawed.expect_status(200)?["frozen"],
        &json!(false),
        "unfrozen",
    )?;
    redeem(t, "alice", &code, order(&o1, 8800))?.expect_status(201)?;
    ensure_eq(&stats(t, &id)?["redeemed"], &json!(1), "redeemed")
}

fn close_ends_claims_for_good(t: &Target) -> Outcome {
    // Orders of this case only: an order id is one order of the user.
    let o1 = unique("o");
    let id = create(t, json!({}))?;
    let code = claimed(t, "alice", &id)?;
    let why = json!({"changed_by": "contract", "reason": "wrong discount"});
    let closed = t.post(Who::Operator, &format!("/campaigns/{id}/close"), &why)?;
    let view = closed.expect_status(200)?;
    ensure_eq(
        (&view["closed"], &view["paused"]),
        (&json!(true), &json!(true)),
        "closed",
    )?;
    t.claim("bob", &id, &unique("k"))?
        .expect_error(403, "campaign_not_active")?;
    t.post(
        Who::Operator,
        &format!("/campaigns/{id}/resume"),
        &Value::Null,
    )?
    .expect_error(403, "campaign_not_active")?;
    redeem(t, "alice", &code, order(&o1, 8800))?.expect_status(201)?;
    let history = t.get(Who::Operator, &format!("/campaigns/{id}/brakes"))?;
    let close = &history.expect_status(200)?["transitions"][0];
    ensure_eq(
        (&close["action"], &close["reason"]),
        (&json!("close"), &json!("wrong discount")),
        "recorded close",
    )
}

fn limits_change_during_a_sale_and_never_below_what_is_issued(t: &Target) -> Outcome {
    let id = create(t, json!({"stock": 40, "per_user_limit": 1, "shards": 4}))?;
    let path = format!("/campaigns/{id}/limits");
    let change = |body: Value| t.send(Who::Operator, "PATCH", &path, &[], Some(&body));
    // Lowered while claims run: never past the new stock, whoever wins.
    let (lowered, answers) = std::thread::scope(|s| {
        let claims = s.spawn(|| together(30, |i| t.claim(&format!("u{i}"), &id, &unique("k"))));
        let lowered = change(json!({"stock": 12, "changed_by": "contract", "reason": "fraud"}));
        (lowered, claims.join())
    });
    let answers = answers.map_err(|_| "the claims panicked".to_string())??;
    let lowered = lowered?;
    let issued = count_status(&answers, 201);
    // 12; or, if claims that raced it took more by then, what they took;
    // or refused, if they had before it read the counters.
    let lowering_refused = lowered.status == 400;
    let capacity = match lowered.status {
        400 => {
            ensure_eq(&lowered.body["error"]["field"], &json!("stock"), "field")?;
            40
        }
        _ => {
            let view = lowered.expect_status(200)?;
            ensure_eq(&view["stock"], &json!(12), "stock in force")?;
            view["stats"]["capacity"].as_i64().unwrap_or(-1)
        }
    };
    ensure(
        capacity == 12 || capacity == 40 || (capacity > 12 && capacity as usize <= issued),
        || {
            format!(
                "capacity {capacity} after lowering to 12 ({issued} issued by the racing claims)"
            )
        },
    )?;
    // Below what is issued: refused at the field, nothing changed.
    let refused = change(json!({"stock": 1}))?;
    refused.expect_error(400, "invalid_request")?;
    ensure_eq(&refused.body["error"]["field"], &json!("stock"), "field")?;
    // Sold out, then raised: claims go on.
    let more = together(40, |i| t.claim(&format!("v{i}"), &id, &unique("k")))?;
    let s = stats(t, &id)?;
    let claimed = s["claimed"].as_i64().unwrap_or(-1);
    ensure_eq(
        (claimed, count_status(&more, 201) + issued),
        (capacity, claimed as usize),
        "claimed, and answered issued, after selling out",
    )?;
    let raised = change(json!({"stock": claimed + 2, "max_claims_per_second": 50}))?;
    ensure_eq(
        &raised.expect_status(200)?["stats"]["remaining"],
        &json!(2),
        "raised",
    )?;
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    claimed_then(t, "w1", &id)?;
    claimed_then(t, "w2", &id)?;
    let history = t.get(Who::Operator, &path)?;
    let changes = history.expect_status(200)?["changes"].clone();
    // The refused lowering, if it was, has no record.
    let (count, reason) = match lowering_refused {
        true => (1, Value::Null),
        false => (2, json!("fraud")),
    };
    ensure_eq(
        (changes.as_array().map(Vec::len), &changes[0]["reason"]),
        (Some(count), &reason),
        "history",
    )
}

/// Claims one coupon for `user`, which must be issued.
fn claimed_then(t: &Target, user: &str, campaign: &str) -> Outcome {
    claimed(t, user, campaign).map(drop)
}

fn redating_moves_every_outstanding_coupon(t: &Target) -> Outcome {
    let id = create(t, json!({}))?;
    let code = claimed(t, "alice", &id)?;
    // Two months on from the current month in Shanghai: a month that surely
    // ends after the claim window.
    let now = coupon_core::Timestamp::now()
        .in_tz("Asia/Shanghai")
        .map_err(|e| e.to_string())?;
    let later = now
        .date()
        .first_of_month()
        .checked_add(jiff::Span::new().months(2))
        .map_err(|e| e.to_string())?;
    let month = format!("{:04}-{:02}", later.year(), later.month());
    let change =
        json!({"expiry": {"kind": "end_of_month", "month": month}, "changed_by": "contract"});
    let path = format!("/campaigns/{id}/expiry");
    t.send(Who::User("alice"), "PUT", &path, &[], Some(&change))?
        .expect_error(401, "unauthorized")?;
    t.send(Who::Operator, "PUT", &path, &[], Some(&change))?
        .expect_status(200)?;
    let after = later
        .checked_add(jiff::Span::new().months(1))
        .map_err(|e| e.to_string())?
        .in_tz("Asia/Shanghai")
        .map_err(|e| e.to_string())?;
    let expected = after
        .timestamp()
        .display_with_offset(after.offset())
        .to_string();
    let coupon = t.get(Who::User("alice"), &format!("/coupons/{code}"))?;
    ensure_eq(
        coupon.expect_status(200)?["expires_at"].as_str(),
        Some(expected.as_str()),
        "expires_at after re-dating",
    )?;
    let history = t.get(Who::Operator, &path)?;
    let changes = &history.expect_status(200)?["changes"];
    ensure_eq(changes.as_array().map(Vec::len), Some(1), "changes")?;
    ensure_eq(&changes[0]["changed_by"], &json!("contract"), "changed_by")?;
    ensure_eq(&changes[0]["to"]["month"], &json!(month), "new rule")
}

fn the_sweep_pages_through_as_of_and_expires_nothing_valid(t: &Target) -> Outcome {
    let id = create(t, json!({}))?;
    let codes: Vec<String> = (0..3)
        .map(|i| claimed(t, &format!("u{i}"), &id))
        .collect::<Result<_, _>>()?;
    // The sweep refuses a future as_of: it would expire valid coupons.
    let tomorrow = coupon_core::Timestamp::now() + jiff::SignedDuration::from_hours(24);
    let future = t.post(
        Who::Operator,
        "/expirations",
        &json!({"as_of": tomorrow.to_string()}),
    )?;
    future.expect_error(400, "invalid_request")?;
    ensure_eq(
        future.body["error"]["field"].as_str(),
        Some("as_of"),
        "field",
    )?;
    t.post(Who::User("alice"), "/expirations", &json!({}))?
        .expect_error(401, "unauthorized")?;
    // At now, page by page: every step bounded, the walk ends, and nothing
    // that is still valid expires.
    let as_of = coupon_core::Timestamp::now().to_string();
    let mut body = json!({"as_of": as_of, "limit": 1});
    for step in 0.. {
        ensure(step < 10_000, || "the sweep did not end".into())?;
        let answer = t.post(Who::Operator, "/expirations", &body)?;
        let page = answer.expect_status(200)?;
        ensure(page["examined"].as_u64().is_some_and(|n| n <= 1), || {
            format!("a step of limit 1 examined {}", page["examined"])
        })?;
        match &page["next_cursor"] {
            Value::Null => break,
            cursor => body = json!({"as_of": as_of, "limit": 1, "cursor": cursor}),
        }
    }
    for (i, code) in codes.iter().enumerate() {
        let coupon = t.get(Who::User(&format!("u{i}")), &format!("/coupons/{code}"))?;
        ensure_eq(
            &coupon.expect_status(200)?["state"],
            &json!("issued"),
            "state after sweep",
        )?;
    }
    ensure_eq(&stats(t, &id)?["expired"], &json!(0), "stats.expired")
}

// ---- invariants under concurrent clients ----

fn parallel_claims_never_exceed_the_stock(t: &Target) -> Outcome {
    let id = create(t, json!({"stock": 5, "per_user_limit": 1, "shards": 2}))?;
    let answers = together(40, |i| t.claim(&format!("user{i}"), &id, &unique("k")))?;
    let issued = count_status(&answers, 201);
    let sold_out = answers.iter().filter(|a| a.code() == "sold_out").count();
    ensure_eq(
        (issued, sold_out),
        (5, 35),
        "issued and sold out of 40 claims on 5",
    )?;
    let s = stats(t, &id)?;
    ensure_eq(
        (&s["claimed"], &s["remaining_stock"]),
        (&json!(5), &json!(0)),
        "stats",
    )
}

fn parallel_claims_by_one_user_stop_at_the_limit(t: &Target) -> Outcome {
    let id = create(t, json!({"stock": 100, "per_user_limit": 2}))?;
    let keys: Vec<String> = (0..20).map(|_| unique("k")).collect();
    let answers = together(20, |i| t.claim("alice", &id, &keys[i]))?;
    let issued = count_status(&answers, 201);
    ensure_eq(issued, 2, "issued of 20 claims by one user")?;
    // The others were refused, or met a claim of theirs still writing the
    // last position (409 request_in_progress, retry): a retry now is final.
    for (key, answer) in keys.iter().zip(&answers).filter(|(_, a)| a.status != 201) {
        if answer.code() != "per_user_limit_reached" {
            answer.expect_error(409, "request_in_progress")?;
            t.claim("alice", &id, key)?
                .expect_error(409, "per_user_limit_reached")?;
        }
    }
    ensure_eq(&stats(t, &id)?["claimed"], &json!(2), "stats.claimed")
}

fn parallel_redemptions_of_one_coupon_redeem_it_once(t: &Target) -> Outcome {
    let id = create(t, json!({}))?;
    let code = claimed(t, "alice", &id)?;
    let run = unique("o");
    let order_of = |i: usize| order(&format!("{run}-{i}"), 3000);
    let answers = together(20, |i| redeem(t, "alice", &code, order_of(i)))?;
    let winners: Vec<usize> = (0..answers.len())
        .filter(|&i| answers[i].status == 201)
        .collect();
    ensure(winners.len() == 1, || {
        format!("{} of 20 orders redeemed one coupon", winners.len())
    })?;
    // The others lost, or met the winner still recording itself (409
    // request_in_progress, retry): a retry now is final.
    for (i, answer) in answers.iter().enumerate().filter(|(i, _)| *i != winners[0]) {
        if answer.code() != "already_redeemed" {
            answer.expect_error(409, "request_in_progress")?;
            redeem(t, "alice", &code, order_of(i))?.expect_error(409, "already_redeemed")?;
        }
    }
    let again = redeem(t, "alice", &code, order_of(winners[0]))?;
    ensure_eq(again.status, 200, "the winner's retry")?;
    ensure_eq(&stats(t, &id)?["redeemed"], &json!(1), "stats.redeemed")
}

fn parallel_retries_of_one_claim_issue_one_coupon(t: &Target) -> Outcome {
    let id = create(t, json!({}))?;
    let key = unique("k");
    let answers = together(10, |_| t.claim("alice", &id, &key))?;
    let codes: std::collections::BTreeSet<_> = answers
        .iter()
        .filter(|a| a.status == 201)
        .map(|a| a.body["code"].to_string())
        .collect();
    ensure(codes.len() == 1, || {
        format!("one key gave {} coupons", codes.len())
    })?;
    // The others were told to retry: in progress, and the retry replays.
    for answer in answers.iter().filter(|a| a.status != 201) {
        answer.expect_error(409, "request_in_progress")?;
    }
    let replay = t.claim("alice", &id, &key)?;
    ensure_eq(replay.header("idempotent-replayed"), Some("true"), "replay")?;
    ensure_eq(&stats(t, &id)?["claimed"], &json!(1), "stats.claimed")
}

fn coupons_racing_for_one_order_take_only_its_room(t: &Target) -> Outcome {
    // 3,000 off each, of three campaigns: an order of 5,000 has room for one.
    let big = json!({"discount": {"kind": "fixed", "amount": 3000}});
    let mut codes = Vec::new();
    for _ in 0..3 {
        let id = create(t, big.clone())?;
        codes.push(claimed(t, "alice", &id)?);
        codes.push(claimed(t, "alice", &id)?);
    }
    let basket = unique("o");
    let answers = together(codes.len(), |i| {
        redeem(t, "alice", &codes[i], order(&basket, 5000))
    })?;
    let mut redeemed = 0;
    for (code, mut answer) in codes.iter().zip(answers) {
        // Met an earlier slot of the order not written yet: retry.
        if answer.code() == "request_in_progress" {
            answer = redeem(t, "alice", code, order(&basket, 5000))?;
        }
        match (answer.status, answer.code()) {
            (201, _) => redeemed += 1,
            (409, "order_campaign_limit_reached" | "order_discount_exceeded") => {}
            _ => return Err(format!("unexpected {}: {}", answer.status, answer.body)),
        }
    }
    ensure_eq(redeemed, 1, "coupons redeemed on one order of 5,000")?;
    // The order's terms are fixed by its first redemption.
    redeem(t, "alice", &codes[0], order(&basket, 9000))?.expect_error(422, "order_terms_changed")
}

fn hold(t: &Target, user: &str, code: &str, order: Value) -> Result<Answer, String> {
    t.post(
        Who::User(user),
        "/holds",
        &json!({"code": code, "order": order}),
    )
}

fn parallel_holds_of_one_coupon_let_one_order_redeem_it(t: &Target) -> Outcome {
    let id = create(t, json!({"hold_seconds": 600}))?;
    let code = claimed(t, "alice", &id)?;
    let run = unique("o");
    let order_of = |i: usize| order(&format!("{run}-{i}"), 3000);
    let answers = together(12, |i| hold(t, "alice", &code, order_of(i)))?;
    let holders: Vec<usize> = (0..12).filter(|&i| answers[i].status == 201).collect();
    ensure(holders.len() == 1, || {
        format!("{} of 12 orders hold one coupon", holders.len())
    })?;
    for answer in answers.iter().filter(|a| a.status != 201) {
        if answer.code() != "request_in_progress" {
            answer.expect_error(409, "coupon_held")?;
        }
    }
    // Every order redeems at once: only the holder gets it.
    let answers = together(12, |i| redeem(t, "alice", &code, order_of(i)))?;
    let redeemed: Vec<usize> = (0..12).filter(|&i| answers[i].status == 201).collect();
    ensure_eq(
        redeemed,
        holders.clone(),
        "orders that redeemed the held coupon",
    )?;
    for answer in answers.iter().filter(|a| a.status != 201) {
        let code = answer.code();
        ensure(
            matches!(
                code,
                "coupon_held" | "already_redeemed" | "request_in_progress"
            ),
            || format!("unexpected {}: {}", answer.status, answer.body),
        )?;
    }
    ensure_eq(&stats(t, &id)?["redeemed"], &json!(1), "stats.redeemed")?;
    // Another coupon, held and released: free at once for another order.
    let other = claimed(t, "alice", &id)?;
    hold(t, "alice", &other, order_of(20))?.expect_status(201)?;
    hold(t, "alice", &other, order_of(21))?.expect_error(409, "coupon_held")?;
    let path = format!("/holds/{other}?order_id={run}-20");
    let released = t.send(Who::Operator, "DELETE", &path, &[], None)?;
    ensure_eq(
        &released.expect_status(200)?["released"],
        &json!(true),
        "released",
    )?;
    hold(t, "alice", &other, order_of(21))?.expect_status(201)?;
    Ok(())
}

fn the_ledger_holds_each_change_once_and_reconciles(t: &Target) -> Outcome {
    let id = create(t, json!({"stock": 8, "per_user_limit": 1, "shards": 2}))?;
    let users: Vec<String> = (0..12).map(|_| unique("buyer")).collect();
    let answers = together(12, |i| t.claim(&users[i], &id, &unique("k")))?;
    let mut claimed = Vec::new();
    for (user, answer) in users.iter().zip(&answers).filter(|(_, a)| a.status == 201) {
        claimed.push((user.clone(), code_of(answer)?));
    }
    ensure_eq(claimed.len(), 8, "claims of 12 on a stock of 8")?;
    let run = unique("o");
    let answers = together(4, |j| {
        let (user, code) = &claimed[j];
        redeem(t, user, code, order(&format!("{run}-{j}"), 3000))
    })?;
    ensure_eq(count_status(&answers, 201), 4, "redemptions")?;
    let cancel = format!("/redemptions/{}?order_id={run}-0", claimed[0].1);
    t.send(Who::Operator, "DELETE", &cancel, &[], None)?
        .expect_status(200)?;
    // Three a page: every event once.
    let (mut ids, mut kinds) = (BTreeSet::new(), BTreeMap::new());
    let mut cursor = String::new();
    loop {
        let path = format!("/campaigns/{id}/events?limit=3&cursor={cursor}");
        let page = t.get(Who::Operator, &path)?.expect_status(200)?.clone();
        for event in page["events"].as_array().into_iter().flatten() {
            ensure(ids.insert(event["id"].to_string()), || {
                format!("event {} in two pages", event["id"])
            })?;
            *kinds
                .entry(event["kind"].as_str().unwrap_or("?").to_owned())
                .or_insert(0) += 1;
        }
        cursor = page["next_cursor"].as_str().unwrap_or_default().to_owned();
        if page["has_more"] != true {
            break;
        }
    }
    let expected: BTreeMap<String, i32> = [
        ("created", 1),
        ("claimed", 8),
        ("redeemed", 4),
        ("cancelled", 1),
    ]
    .map(|(k, n)| (k.to_owned(), n))
    .into();
    ensure_eq(kinds, expected, "events by kind")?;
    // Claims and redemptions reconcile at once; the discount once the
    // sweep has settled it, a lease later (the suite does not wait).
    let mut cursor = String::new();
    let report = loop {
        let path = format!("/campaigns/{id}/reconciliation?cursor={cursor}");
        let answer = t.get(Who::Operator, &path)?.expect_status(200)?.clone();
        match answer["cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break answer,
        }
    };
    ensure_eq(
        (&report["ledger"]["claimed"], &report["ledger"]["redeemed"]),
        (&json!(8), &json!(3)),
        "the ledger's claims and redemptions",
    )?;
    for difference in report["differences"].as_array().into_iter().flatten() {
        ensure(
            difference["stat"] == "discount_given" && report["discount_unsettled"] != 0,
            || format!("the ledger differs from the stats: {report}"),
        )?;
    }
    Ok(())
}
