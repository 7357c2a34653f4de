//! `coupon-host up` as a user runs it: a real process on a loopback port,
//! the coupon flow over HTTP, a restart, and the data still there; on the
//! default SQLite store and on Redis.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "e2e-admin";
const SECRET: &str = "e2e-secret";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

/// A fresh directory under the target dir, removed at the start of the next run.
fn scratch(name: &str) -> PathBuf {
    let dir = workspace()
        .join("target")
        .join("e2e")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch dir");
    dir
}

fn built_manifest() -> PathBuf {
    let manifest = coupon_host::Manifest::load(workspace().join("spin.toml")).expect("spin.toml");
    coupon_host::build::ensure_built(&manifest).expect("the components build");
    manifest.path
}

/// A running `coupon-host up`, stopped (SIGTERM, then SIGKILL) when dropped.
struct Host {
    child: Child,
    url: String,
}

impl Host {
    fn start(args: &[&str]) -> Host {
        let mut child = Command::new(env!("CARGO_BIN_EXE_coupon-host"))
            .arg("up")
            .args(["--listen", "127.0.0.1:0", "-f"])
            .arg(built_manifest())
            .args(args)
            .env("SPIN_VARIABLE_ADMIN_TOKEN", ADMIN)
            .env("SPIN_VARIABLE_USER_TOKEN_SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("coupon-host starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix("Serving ") {
                        break rest.split_whitespace().next().expect("a URL").to_owned();
                    }
                }
                _ => panic!("coupon-host exited before serving: {:?}", child.wait()),
            }
        };
        // Keep draining the request log so the host never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Host { child, url }
    }

    /// Asks the host to stop as Ctrl-C would, and waits for it.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "coupon-host stopped with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("coupon-host did not stop within 15 s of SIGTERM");
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        auth: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Value) {
        let address = self.url.strip_prefix("http://").expect("an http URL");
        let mut stream = TcpStream::connect(address).expect("connects");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\nauthorization: Bearer {auth}\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        stream
            .write_all(format!("{head}\r\n{body}").as_bytes())
            .expect("writes");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("reads");
        let status = answer
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn user_token() -> String {
    let exp = coupon_core::Timestamp::now().as_second() + 3600;
    coupon_core::auth::sign_user_token(SECRET.as_bytes(), &json!({"sub": "alice", "exp": exp}))
}

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
        "stock": 100, "per_user_limit": 2,
        "claim_starts_at": at(now - 3600), "claim_ends_at": at(now + 3600),
        "time_zone": "Asia/Shanghai", "expiry": {"kind": "end_of_month", "month": "9000-01"}
    });
    let (status, body) = host.request("POST", "/campaigns", ADMIN, &[], Some(campaign));
    assert_eq!(status, 201, "{body}");
    let token = user_token();
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
    let (status, coupon) =
        host.request("GET", &format!("/coupons/{code}"), &user_token(), &[], None);
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

/// A `redis-server` on a free loopback port, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_coupon_flow_survives_a_restart_on_redis() {
    let redis = Redis::start();
    let dir = scratch("redis");
    let config = dir.join("runtime-config.toml");
    std::fs::write(
        &config,
        format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{}\"\n",
            redis.port
        ),
    )
    .expect("writes");
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
    std::fs::write(
        &config,
        format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\n"
        ),
    )
    .expect("writes");
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
