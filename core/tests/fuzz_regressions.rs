//! Replays the inputs kept in `fuzz/regressions/<target>/` through the fuzz
//! targets' own code, `fuzzing::{requests, token, rules}`, natively.
//!
//! Each folder holds hand-picked seeds (which also start the fuzzer off) and
//! every crash the fuzzer has found: `fuzz/run` copies a crash from
//! `fuzz/artifacts/<target>/` into `fuzz/regressions/<target>/`, where it fails
//! this test until the core is fixed, and keeps it from coming back after.

use coupon_core::campaign::Campaign;
use coupon_core::code::CouponCode;
use coupon_core::{Timestamp, api, auth, fuzzing};
use std::path::{Path, PathBuf};

fn regressions() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions")
}

fn replay(target: &str, check: fn(&[u8])) {
    let folder = regressions().join(target);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no inputs in {}", folder.display());
    let failed: Vec<String> = inputs
        .iter()
        .filter(|input| {
            let data = std::fs::read(input).expect("a readable input");
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|input| input.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target} fails on {failed:#?}");
}

#[test]
fn requests() {
    replay("requests", fuzzing::requests);
}

#[test]
fn token() {
    replay("token", fuzzing::token);
}

#[test]
fn rules() {
    replay("rules", fuzzing::rules);
}

/// The seeds reach past the first refusal: a fuzzer started from a campaign
/// that does not validate or a token that does not verify explores less.
#[test]
fn the_seeds_are_what_their_names_say() {
    let seed = |path: &str| std::fs::read(regressions().join(path)).expect("a seed");
    for path in [
        "requests/seed-campaign.json",
        "requests/seed-campaign-fixed-month.json",
    ] {
        let campaign: Campaign = api::parse_json(&seed(path)).expect(path);
        assert_eq!(campaign.validate(), Ok(()), "{path}");
    }
    let code = String::from_utf8(seed("requests/seed-coupon-code.txt")).expect("UTF-8");
    assert!(CouponCode::parse(&code).is_some(), "{code}");

    let now = Timestamp::from_second(fuzzing::NOW_SECOND).expect("in range");
    let header = String::from_utf8(seed("token/seed-valid-token.txt")).expect("UTF-8");
    let user = auth::verify_user(Some(&header), fuzzing::SECRET, now).expect("verifies");
    assert_eq!(user.as_str(), "alice");
    let header = String::from_utf8(seed("token/seed-admin-token.txt")).expect("UTF-8");
    assert_eq!(
        auth::verify_admin(Some(&header), fuzzing::ADMIN_TOKEN),
        Ok(())
    );
}
