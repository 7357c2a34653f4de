//! Store round trips on each operation's success path, counted below the real
//! components: store calls in flight together (a batch of concurrent gets)
//! are one round trip, each other call one more, so these counts bound
//! latency under load. A new call on a hot path fails here.

use coupon_tests::*;

#[tokio::test]
async fn each_operation_takes_its_known_number_of_round_trips() {
    let (t, store) = TestApp::counting().await;
    t.create_campaign(campaign("spring")).await;
    store.take();

    let listed = t
        .operator("GET", "/campaigns?limit=5", serde_json::Value::Null)
        .await;
    assert_eq!(
        listed.body["campaigns"][0]["id"], "spring",
        "{:#}",
        listed.body
    );
    // The slot counter, the slots, every record, dating and brake at once.
    assert_eq!(store.take(), 3, "GET /campaigns");

    // The shop's read, with no credentials: the record, the rule in force,
    // the brake and the sold-out hint in one batch.
    let public = t
        .send(
            &Caller::Anonymous,
            "GET",
            "/campaigns/spring/public",
            &[],
            serde_json::Value::Null,
        )
        .await;
    assert_eq!(public.status, 200, "{:#}", public.body);
    assert_eq!(
        (&public.body["state"], &public.body["claimable"]),
        (&serde_json::json!("open"), &serde_json::json!(true))
    );
    assert!(public.body.get("stats").is_none(), "{:#}", public.body);
    assert_eq!(public.header("cache-control"), Some("public, max-age=1"));
    assert_eq!(store.take(), 1, "GET /campaigns/{{id}}/public");

    let claimed = t.claim("alice", "spring", "k1").await;
    assert_eq!(claimed.status, 201, "{:#}", claimed.body);
    let code = claimed.body["code"].as_str().expect("a code").to_owned();
    // Reads in one batch; key, stock, the user's position, index slot,
    // wallet slot; writes in one batch.
    assert_eq!(store.take(), 7, "claim");

    let replayed = t.claim("alice", "spring", "k1").await;
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(store.take(), 3, "claim replayed");

    assert_eq!(t.coupon("alice", &code).await.status, 200);
    assert_eq!(store.take(), 2, "GET /coupons/{{code}}");

    // The wallet's counter, its newest slots, then the coupons as one read
    // of a single coupon does, for the whole page.
    let wallet = t.wallet("alice", "").await;
    assert_eq!(wallet.body["coupons"][0]["code"], code.as_str());
    assert_eq!(store.take(), 4, "GET /coupons");

    // A mistyped code is refused on its check character, before any read; a
    // well-formed code the user does not hold costs one read and the count
    // of the miss, and the user's first miss of a minute deletes their count
    // of two minutes before.
    let mut typo = code.clone().into_bytes();
    typo[5] = if typo[5] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).expect("ascii");
    assert_eq!(t.coupon("alice", &typo).await.status, 404);
    assert_eq!(store.take(), 0, "mistyped code");
    assert_eq!(t.coupon("mallory", &code).await.status, 404);
    assert_eq!(store.take(), 3, "someone else's code");

    let valid = t.validate("alice", &code, order("o1", 3000)).await;
    assert_eq!(valid.body["valid"], true);
    assert_eq!(store.take(), 2, "validate");

    assert_eq!(
        t.redeem("alice", &code, order("o1", 3000)).await.status,
        201
    );
    // Two reads (the order's slots and their counter ride in the first),
    // one slot taken, the lock, the ledger position, the ending with its
    // entry and the slot.
    assert_eq!(store.take(), 6, "redeem");

    assert_eq!(
        t.redeem("alice", &code, order("o1", 3000)).await.status,
        200
    );
    // Two reads, the first with the order's slots: the terms it was
    // redeemed under.
    assert_eq!(store.take(), 2, "redeem replayed");

    let path = format!("/redemptions/{code}?order_id=o1");
    let cancelled = t.operator("DELETE", &path, serde_json::Value::Null).await;
    assert_eq!(cancelled.body["state"], "issued");
    // Two reads, the cancel's lease, the ledger position, the marker with
    // its entry, the generation read and moved, the order's slots read and
    // its slot given back, two reads of the result.
    assert_eq!(store.take(), 11, "cancel");
}

#[tokio::test]
async fn holds_cost_campaigns_that_take_them_one_round_trip_a_redemption() {
    let (t, store) = TestApp::counting().await;
    let holds = serde_json::json!({"hold_seconds": 900});
    t.create_campaign(campaign_with("held", holds)).await;
    let code = t.claimed_code("alice", "held").await;
    store.take();

    let held = t.hold("alice", &code, order("o1", 3000)).await;
    assert_eq!(held.status, 201, "{:#}", held.body);
    // Two reads (the coupon's turns ride in the first), the turn taken, the
    // position in the campaign's holds ledger, the hold written with its
    // entry.
    assert_eq!(store.take(), 5, "hold");

    let valid = t.validate("alice", &code, order("o1", 3000)).await;
    assert_eq!(valid.body["held_until"], "2028-02-10T10:15:00+08:00");
    // As on any campaign: the turns ride in the first read.
    assert_eq!(store.take(), 2, "validate a held coupon");

    let coupon = t.coupon("alice", &code).await;
    assert_eq!(coupon.body["held_for"], "o1");
    assert_eq!(store.take(), 2, "GET /coupons/{{code}} of a held coupon");

    let redeemed = t.checkout_redeem("alice", &code, order("o1", 3000)).await;
    assert_eq!(redeemed.status, 201, "{:#}", redeemed.body);
    // As on any campaign, and the redemption's own turn, whose record
    // rides with the ending.
    assert_eq!(store.take(), 7, "redeem a held coupon");

    let code = t.claimed_code("alice", "held").await;
    t.hold("alice", &code, order("o2", 3000)).await;
    store.take();
    let path = format!("/holds/{code}?order_id=o2");
    let released = t
        .send(
            &Caller::Checkout,
            "DELETE",
            &path,
            &[],
            serde_json::Value::Null,
        )
        .await;
    assert_eq!(released.body["released"], true, "{:#}", released.body);
    // Two reads, the position in the releases ledger, the turn voided with
    // its entry.
    assert_eq!(store.take(), 4, "release");
}
