//! The HTTP contract suite: every operation of `openapi.yaml`, the stories
//! and the concurrent invariants, against running servers over HTTP only.
//!
//! Which servers:
//! - `COUPONS_URL=http://host:port` (with `COUPONS_ADMIN_TOKEN` and
//!   `COUPONS_USER_TOKEN_SECRET`): that one, whatever serves it.
//! - otherwise, `coupon-host up` four times, each started here: on SQLite and
//!   on Redis with our own stores, then with `--store-fidelity spin` on both
//!   (Spin 4's store behaviour, see `host/src/kv/spin_faithful.rs`);
//! - and, with `SPIN=/path/to/spin`, also `spin up` on SQLite and on Redis.
//!
//! `cargo test -p coupon-host --test contract` (part of `./test`). A case
//! that fails names the server and the difference; the last line counts
//! them all.

mod cases;
mod client;
#[path = "../common/mod.rs"]
mod common;

use client::Target;
use common::{ADMIN, Redis, SECRET};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    // `cargo test ... --test contract -- <filter>`: only the cases whose
    // "server case" contains it, e.g. `spin-faithful/redis` or `parallel`.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let selected = |server: &str, case: &str| {
        filter
            .as_ref()
            .is_none_or(|f| format!("{server} {case}").contains(f.as_str()))
    };
    let mut failed = 0;
    let mut passed = 0;
    for (server_name, start) in servers() {
        if !cases::CASES
            .iter()
            .any(|(case, _)| selected(&server_name, case))
        {
            continue;
        }
        let server = start();
        let target = server.target();
        for (name, case) in cases::CASES {
            if !selected(&server_name, name) {
                continue;
            }
            let started = Instant::now();
            let outcome = std::panic::catch_unwind(|| case(&target))
                .unwrap_or_else(|_| Err("the case panicked".into()));
            let ms = started.elapsed().as_millis();
            match outcome {
                Ok(()) => {
                    passed += 1;
                    println!("ok     {:<21} {name} ({ms} ms)", target.name);
                }
                Err(why) => {
                    failed += 1;
                    println!("FAILED {:<21} {name} ({ms} ms): {why}", target.name);
                }
            }
        }
    }
    println!("contract: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

/// A server the suite runs against, stopped when dropped.
enum Server {
    External(Target),
    Started {
        target: Target,
        process: Child,
        _redis: Option<Redis>,
    },
}

impl Server {
    fn target(&self) -> Target {
        match self {
            Server::External(target) | Server::Started { target, .. } => target.clone(),
        }
    }
}

impl Drop for Server {
    /// Kills the server's whole process group: `spin up` runs the app in a
    /// child process (`spin trigger http`) that outlives it otherwise.
    fn drop(&mut self) {
        if let Server::Started { process, .. } = self {
            let group = format!("-{}", process.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = process.wait();
        }
    }
}

/// The servers to run against by name, each started when it is its turn.
fn servers() -> Vec<(String, Box<dyn FnOnce() -> Server>)> {
    let external = std::env::var("COUPONS_URL").ok().map(|url| {
        let address = url
            .trim_end_matches('/')
            .strip_prefix("http://")
            .expect("COUPONS_URL is http://host:port")
            .to_owned();
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| panic!("{name} is needed with COUPONS_URL"))
        };
        Target {
            name: "external".into(),
            address,
            admin_token: var("COUPONS_ADMIN_TOKEN"),
            user_secret: var("COUPONS_USER_TOKEN_SECRET"),
        }
    });
    let spin = std::env::var_os("SPIN").map(PathBuf::from);
    let mut plan: Vec<(String, Box<dyn FnOnce() -> Server>)> = Vec::new();
    match external {
        Some(target) => plan.push((
            target.name.clone(),
            Box::new(move || Server::External(target)),
        )),
        None => {
            // Spin-faithful Redis with a fresh instance per request: each
            // request is then an instance's first, which must find out for
            // itself that Spin's `get-many` is broken.
            for (name, redis, fidelity) in [
                ("host/sqlite", false, "host"),
                ("host/redis", true, "host"),
                ("spin-faithful/sqlite", false, "spin"),
                ("spin-faithful/redis", true, "spin-fresh"),
            ] {
                plan.push((
                    name.into(),
                    Box::new(move || coupon_host(name, redis, fidelity)),
                ));
            }
            if let Some(spin) = spin {
                for (name, redis) in [("spin/sqlite", false), ("spin/redis", true)] {
                    let spin = spin.clone();
                    plan.push((name.into(), Box::new(move || spin_up(&spin, name, redis))));
                }
            }
        }
    }
    plan
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The state directory and, for Redis, a server of its own and the runtime
/// config that points at it.
fn stores(name: &str, redis: bool) -> (PathBuf, Option<Redis>, Option<PathBuf>) {
    let dir = common::scratch(&format!("contract-{}", name.replace('/', "-")));
    if !redis {
        return (dir, None, None);
    }
    let server = Redis::start();
    let config = dir.join("runtime-config.toml");
    common::write_redis_config(&config, server.port);
    (dir, Some(server), Some(config))
}

fn coupon_host(name: &str, redis: bool, fidelity: &str) -> Server {
    let (dir, redis, config) = stores(name, redis);
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_coupon-host"));
    command
        .arg("up")
        .args(["--listen", &format!("127.0.0.1:{port}"), "-f"])
        .arg(common::built_manifest())
        .arg("--state-dir")
        .arg(&dir);
    match fidelity {
        "spin-fresh" => command.args(["--store-fidelity", "spin", "--no-instance-reuse"]),
        fidelity => command.args(["--store-fidelity", fidelity]),
    };
    if let Some(config) = config {
        command.arg("--runtime-config-file").arg(config);
    }
    start(name, command, port, redis)
}

fn spin_up(spin: &std::path::Path, name: &str, redis: bool) -> Server {
    let (dir, redis, config) = stores(name, redis);
    let port = free_port();
    let mut command = Command::new(spin);
    command
        .arg("up")
        .args(["--listen", &format!("127.0.0.1:{port}"), "-f"])
        .arg(common::built_manifest())
        .arg("--state-dir")
        .arg(&dir);
    if let Some(config) = config {
        command.arg("--runtime-config-file").arg(config);
    }
    start(name, command, port, redis)
}

/// Starts `command` with the suite's secrets and waits until `port` accepts.
fn start(name: &str, mut command: Command, port: u16, redis: Option<Redis>) -> Server {
    let mut process = command
        .process_group(0)
        .env("SPIN_VARIABLE_ADMIN_TOKEN", ADMIN)
        .env("SPIN_VARIABLE_USER_TOKEN_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: cannot start {command:?}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = process.try_wait() {
            panic!("{name}: the server exited with {status} before listening");
        }
        assert!(
            Instant::now() < deadline,
            "{name}: not listening after 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server::Started {
        target: Target {
            name: name.into(),
            address: format!("127.0.0.1:{port}"),
            admin_token: ADMIN.into(),
            user_secret: SECRET.into(),
        },
        process,
        _redis: redis,
    }
}
