//! Load shedding: a component at its limit of concurrent requests answers 503
//! `overloaded` at once instead of queueing, and the other components are not
//! slowed by it.

use coupon_tests::*;
use futures::future::join_all;

#[tokio::test]
async fn a_component_at_its_limit_sheds_and_the_others_still_answer() {
    // Claims hang on their idempotency key, before taking anything, until
    // the gate opens.
    let gated = Gated::new(":idem:");
    let t = TestApp::with_limit(2, gated.clone()).await;
    t.create_campaign(campaign("spring")).await;
    let code = {
        // One coupon to validate later, claimed before the storm.
        gated.open();
        let code = t.claimed_code("alice", "spring").await;
        gated.close();
        code
    };

    // Two claims run (and hang), two wait, the rest are shed at once.
    let storm = join_all((0..8).map(|i| {
        let t = t.clone();
        async move { t.claim(&format!("u{i}"), "spring", &format!("k{i}")).await }
    }));
    let meanwhile = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let validation = t.validate("alice", &code, order("o1", 3_000)).await;
        let stats = t.campaign("spring").await["stats"].clone();
        // The waiting claims are shed too once they have waited 250 ms.
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        gated.open();
        (validation, stats)
    };
    let (claims, (validation, stats)) = tokio::join!(storm, meanwhile);

    assert_eq!(validation.status, 200, "{:#}", validation.body);
    assert_eq!(validation.body["valid"], true);
    assert_eq!(stats["claimed"], 1);
    let issued = claims.iter().filter(|a| a.status == 201).count();
    let shed: Vec<&Answer> = claims.iter().filter(|a| a.status == 503).collect();
    assert_eq!((issued, shed.len()), (2, 6), "{claims:#?}");
    for answer in shed {
        answer.assert_error(503, "overloaded");
        assert_eq!(answer.header("retry-after"), Some("1"));
    }
    // A shed claim changed nothing: retried with its key, it is issued.
    assert_eq!(t.campaign("spring").await["stats"]["claimed"], 3);
    let shed_key = (0..8)
        .find(|i| claims[*i].status == 503)
        .expect("a shed claim");
    let retried = t
        .claim(&format!("u{shed_key}"), "spring", &format!("k{shed_key}"))
        .await;
    assert_eq!(retried.status, 201, "{:#}", retried.body);
}
