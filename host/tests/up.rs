//! `coupon-host up` as a user runs it: a real process on a loopback port,
//! the coupon flow over HTTP, a restart, and the data still there; on the
//! default SQLite store and on Redis.

mod common;

use common::{ADMIN, Host, Redis, SECRET, built_manifest, scratch, user_token, write_redis_config};
use serde_json::json;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

/// Creates a campaign, claims, validates, redeems; returns the coupon code.
fn coupon_flow(host: &Host) -> String {
    let now = coupon_core::Timestamp::now().as_second();
    let at = |s: i64| {
        coupon_core::Timestamp::from_second(s)
            .expect("a time")
            .to_string()
    };
    let campaign = json!({
        "id": "e2e", "name": "End to end", "currency": "CNY",
        "discount": {"kind": "fixed", "amount": 500}, "min_order_amount": 2000,
        "stock": 100, "per_user_limit": 2, "redeemable_by_users": true,
        "claim_starts_at": at(now - 3600), "claim_ends_at": at(now + 3600),
        "time_zone": "Asia/Shanghai", "expiry": {"kind": "end_of_month", "month": "9000-01"}
    });
    let (status, body) = host.request("POST", "/campaigns", ADMIN, &[], Some(campaign));
    assert_eq!(status, 201, "{body}");
    let token = user_token("alice");
    let (status, coupon) = host.request(
        "POST",
        "/claims",
        &token,
        &[("idempotency-key", "e2e-1")],
        Some(json!({"campaign_id": "e2e"})),
    );
    assert_eq!(status, 201, "{coupon}");
    let code = coupon["code"].as_str().expect("a code").to_owned();
    let order = json!({"id": "order-1", "amount": 8800, "currency": "CNY"});
    let (status, validation) = host.request(
        "POST",
        "/validations",
        &token,
        &[],
        Some(json!({"code": code, "order": order})),
    );
    assert_eq!(
        (status, &validation["payable_amount"]),
        (200, &json!(8300)),
        "{validation}"
    );
    let (status, redemption) = host.request(
        "POST",
        "/redemptions",
        &token,
        &[],
        Some(json!({"code": code, "order": order})),
    );
    assert_eq!(status, 201, "{redemption}");
    code
}

/// After a restart, the coupon and the stats are what they were.
fn still_there(host: &Host, code: &str) {
    let (status, coupon) = host.request(
        "GET",
        &format!("/coupons/{code}"),
        &user_token("alice"),
        &[],
        None,
    );
    assert_eq!(
        (status, &coupon["state"], &coupon["order_id"]),
        (200, &json!("redeemed"), &json!("order-1")),
        "{coupon}"
    );
    let (_, campaign) = host.request("GET", "/campaigns/e2e", ADMIN, &[], None);
    assert_eq!(campaign["stats"]["claimed"], 1);
    assert_eq!(campaign["stats"]["redeemed"], 1);
}

#[test]
fn the_coupon_flow_survives_a_restart_on_the_default_sqlite_store() {
    let state = scratch("sqlite");
    let state_dir = state.to_str().expect("utf-8 path");
    let host = Host::start(&["--state-dir", state_dir]);
    let code = coupon_flow(&host);
    host.stop();
    assert!(state.join("sqlite_key_value.db").is_file());
    let host = Host::start(&["--state-dir", state_dir, "--no-instance-reuse"]);
    still_there(&host, &code);
    host.stop();
}

#[test]
fn the_coupon_flow_survives_a_restart_on_redis() {
    let redis = Redis::start();
    let dir = scratch("redis");
    let config = dir.join("runtime-config.toml");
    write_redis_config(&config, redis.port);
    let args = [
        "--runtime-config-file",
        config.to_str().expect("utf-8"),
        "--state-dir",
        dir.to_str().expect("utf-8"),
    ];
    let host = Host::start(&args);
    let code = coupon_flow(&host);
    host.stop();
    assert!(
        !dir.join("sqlite_key_value.db").exists(),
        "the default store must not be used"
    );
    let host = Host::start(&args);
    still_there(&host, &code);
}

#[test]
fn clear_errors_for_what_a_newcomer_gets_wrong() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_coupon-host"))
            .args(args)
            .env("SPIN_VARIABLE_ADMIN_TOKEN", ADMIN)
            .env("SPIN_VARIABLE_USER_TOKEN_SECRET", SECRET)
            .output()
            .expect("runs");
        assert!(!output.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let dir = scratch("errors");
    // An unreachable Redis.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = dir.join("redis.toml");
    write_redis_config(&config, port);
    let manifest = built_manifest();
    let manifest = manifest.to_str().expect("utf-8");
    let stderr = run(&[
        "up",
        "-f",
        manifest,
        "--runtime-config-file",
        config.to_str().expect("utf-8"),
    ]);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    // An invalid runtime config names its file.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[key_value_store.default]\ntype = \"cassandra\"\n").expect("writes");
    let stderr = run(&[
        "up",
        "-f",
        manifest,
        "--runtime-config-file",
        bad.to_str().expect("utf-8"),
    ]);
    assert!(stderr.contains("bad.toml"), "{stderr}");
    // A missing .wasm names the build command.
    let missing = dir.join("spin.toml");
    std::fs::write(&missing, "spin_manifest_version = 2\n[application]\nname = \"x\"\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"c\"\n[component.c]\nsource = \"nope.wasm\"\n[component.c.build]\ncommand = \"cargo build -p nope\"\n").expect("writes");
    let stderr = run(&[
        "up",
        "-f",
        missing.to_str().expect("utf-8"),
        "--state-dir",
        dir.to_str().expect("utf-8"),
    ]);
    assert!(
        stderr.contains("nope.wasm") && stderr.contains("cargo build -p nope"),
        "{stderr}"
    );
    // An invalid spin.toml names its file.
    std::fs::write(&missing, "spin_manifest_version = 1\n").expect("writes");
    let stderr = run(&["up", "-f", missing.to_str().expect("utf-8")]);
    assert!(stderr.contains("spin.toml"), "{stderr}");
    // A port already in use.
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = taken.local_addr().expect("an address").to_string();
    let stderr = run(&[
        "up",
        "-f",
        manifest,
        "--listen",
        &address,
        "--state-dir",
        dir.to_str().expect("utf-8"),
    ]);
    assert!(stderr.contains("already in use"), "{stderr}");
}

#[test]
fn the_expiry_sweep_runs_on_its_schedule() {
    let state = scratch("sweep");
    let (host, log) = Host::start_with_log(&[
        "--state-dir",
        state.to_str().expect("utf-8 path"),
        "--sweep-schedule",
        "* * * * * *",
    ]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut sweeps = Vec::new();
    while sweeps.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match log.recv_timeout(left) {
            Ok(line) if line.contains(r#""path":"/expirations""#) => sweeps.push(line),
            Ok(_) => {}
            Err(_) => panic!("fewer than 2 sweeps within 5 s: {sweeps:?}"),
        }
    }
    for line in &sweeps {
        let sweep: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(
            (&sweep["sweep"], &sweep["status"], &sweep["calls"]),
            // One call for each of the sixteen partitions walked side by side.
            (&json!("done"), &json!(200), &json!(16)),
            "{line}"
        );
    }
    host.stop();
}

#[test]
fn a_bad_sweep_schedule_or_no_admin_token_fails_at_start() {
    let up = |manifest: &str, schedule: &str, admin_token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_coupon-host"));
        command
            .args(["up", "-f", manifest, "--sweep-schedule", schedule])
            .env("SPIN_VARIABLE_USER_TOKEN_SECRET", SECRET)
            .env_remove("SPIN_VARIABLE_ADMIN_TOKEN");
        if let Some(token) = admin_token {
            command.env("SPIN_VARIABLE_ADMIN_TOKEN", token);
        }
        let output = command.output().expect("runs");
        assert!(!output.status.success(), "{schedule:?} should fail");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let manifest = built_manifest();
    let manifest = manifest.to_str().expect("utf-8");
    let stderr = up(manifest, "0 61 * * * *", Some(ADMIN));
    assert!(
        stderr.contains(
            r#"'0 61 * * * *' for '--sweep-schedule <CRON>': minute field "61": 61 is not in 0-59"#
        ),
        "{stderr}"
    );
    let stderr = up(manifest, "CRON_TZ=Asia/Shanghia 0 0 1 * *", Some(ADMIN));
    assert!(
        stderr.contains("CRON_TZ=Asia/Shanghia: not a known time zone"),
        "{stderr}"
    );
    // The app's admin_token is unset.
    let stderr = up(manifest, "0 * * * * *", None);
    assert!(stderr.contains("SPIN_VARIABLE_ADMIN_TOKEN"), "{stderr}");
    // An app without admin_token.
    let dir = scratch("sweep-errors");
    let other = dir.join("spin.toml");
    std::fs::write(&other, "spin_manifest_version = 2\n[application]\nname = \"x\"\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"c\"\n[component.c]\nsource = \"c.wasm\"\n").expect("writes");
    let stderr = up(other.to_str().expect("utf-8"), "0 * * * * *", Some(ADMIN));
    assert!(
        stderr.contains("admin_token") && stderr.contains("declares none"),
        "{stderr}"
    );
}

/// What `up --generate-secrets` prints up to its last start-up line, with
/// `admin` and `secret` set in the environment (or not).
fn start_up_text(state: &str, admin: Option<&str>, secret: Option<&str>) -> String {
    use std::io::{BufRead, BufReader};
    let manifest = built_manifest();
    let mut command = Command::new(env!("CARGO_BIN_EXE_coupon-host"));
    command
        .args(["up", "--listen", "127.0.0.1:0", "--generate-secrets", "-f"])
        .arg(&manifest)
        .args(["--state-dir", state])
        .env_remove("SPIN_VARIABLE_ADMIN_TOKEN")
        .env_remove("SPIN_VARIABLE_USER_TOKEN_SECRET")
        .stdout(std::process::Stdio::piped());
    if let Some(admin) = admin {
        command.env("SPIN_VARIABLE_ADMIN_TOKEN", admin);
    }
    if let Some(secret) = secret {
        command.env("SPIN_VARIABLE_USER_TOKEN_SECRET", secret);
    }
    let mut child = command.spawn().expect("coupon-host starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut text = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("a line");
        text.push_str(&line);
        text.push('\n');
        if line.starts_with("Ctrl-C stops it") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    text
}

#[test]
fn generate_secrets_prints_only_secrets_it_made_up() {
    // Both set by the operator: neither is printed, nor used to sign a demo token.
    let state = scratch("secrets-set");
    let text = start_up_text(state.to_str().expect("utf-8"), Some(ADMIN), Some(SECRET));
    assert!(!text.contains(ADMIN) && !text.contains("TOKEN="), "{text}");
    // One set: the example, which needs both, is not printed either.
    let state = scratch("secrets-one");
    let text = start_up_text(state.to_str().expect("utf-8"), None, Some(SECRET));
    assert!(
        !text.contains("Try it") && !text.contains("TOKEN="),
        "{text}"
    );
    // None set: both made up, and the walk-through shows them.
    let state = scratch("secrets-none");
    let text = start_up_text(state.to_str().expect("utf-8"), None, None);
    let made_up = std::fs::read_to_string(state.join("secrets.toml")).expect("kept");
    let admin = made_up
        .lines()
        .find_map(|l| l.strip_prefix("admin_token = "))
        .expect("an admin token")
        .trim_matches('"');
    assert!(text.contains("Try it") && text.contains(admin), "{text}");
}
