//! What the tests of `coupon-host up` as a real process share: the built app,
//! scratch directories, a running host, a running `redis-server`.

// Each test binary uses a different part of it.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN: &str = "e2e-admin";
pub const SECRET: &str = "e2e-secret";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

/// A fresh directory under the target dir, removed at the start of the next run.
pub fn scratch(name: &str) -> PathBuf {
    let dir = workspace()
        .join("target")
        .join("e2e")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch dir");
    dir
}

pub fn built_manifest() -> PathBuf {
    let manifest = coupon_host::Manifest::load(workspace().join("spin.toml")).expect("spin.toml");
    coupon_host::build::ensure_built(&manifest).expect("the components build");
    manifest.path
}

/// A user token for `user`, valid for an hour.
pub fn user_token(user: &str) -> String {
    let exp = coupon_core::Timestamp::now().as_second() + 3600;
    coupon_core::auth::sign_user_token(SECRET.as_bytes(), &json!({"sub": user, "exp": exp}))
}

/// Writes a Spin runtime config at `path` that puts the `default` store on the
/// Redis at `127.0.0.1:port`.
pub fn write_redis_config(path: &Path, port: u16) {
    std::fs::write(
        path,
        format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\n"
        ),
    )
    .expect("writes the runtime config");
}

/// The instant `seconds` from now, in RFC 3339.
#[allow(dead_code)] // Not every test binary uses it.
pub fn from_now(seconds: i64) -> String {
    let now = coupon_core::Timestamp::now().as_second();
    coupon_core::Timestamp::from_second(now + seconds)
        .expect("a time")
        .to_string()
}

/// A running `coupon-host up`, stopped with SIGKILL when dropped (the crash
/// tests crash it that way).
pub struct Host {
    child: Child,
    url: String,
}

impl Host {
    pub fn start(args: &[&str]) -> Host {
        // The log is drained by start_with_log's thread whether or not anyone
        // listens, so the host never blocks on a full pipe.
        Host::start_with_log(args).0
    }

    /// Like [`Host::start`], and hands back what the host prints to stdout
    /// after its `Serving` line (the request log, the sweep log), a line at a
    /// time.
    pub fn start_with_log(args: &[&str]) -> (Host, std::sync::mpsc::Receiver<String>) {
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
        let (sender, log) = std::sync::mpsc::channel();
        // Keep draining even when the test stops listening, so the host never
        // blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        (Host { child, url }, log)
    }

    /// `127.0.0.1:<port>`, where it listens.
    pub fn address(&self) -> &str {
        self.url.strip_prefix("http://").expect("an http URL")
    }

    /// Asks the host to stop as Ctrl-C would, and waits for it.
    pub fn stop(mut self) {
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

    /// Kills the host with SIGKILL, as a crash would, wherever its requests are.
    #[allow(dead_code)] // Not every test binary uses it.
    pub fn kill(&self) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-KILL", &pid]).status();
        assert!(killed.is_ok_and(|s| s.success()), "kill -KILL {pid}");
    }

    /// Like [`Host::request`], `None` when the host did not answer (it died).
    #[allow(dead_code)] // Not every test binary uses it.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        auth: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let answer = self.exchange(method, path, auth, headers, body)?;
        let (status, _, body) = parse(&answer)?;
        Some((status, body))
    }

    /// One request on its own connection; the status and the JSON body (`Null` if none).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        auth: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, _, body) = self.request_with_headers(method, path, auth, headers, body);
        (status, body)
    }

    /// Like [`Host::request`], with the answer's headers (names in lower case).
    pub fn request_with_headers(
        &self,
        method: &str,
        path: &str,
        auth: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let answer = self
            .exchange(method, path, auth, headers, body)
            .expect("the host answers");
        parse(&answer).expect("a status line")
    }

    /// Sends one request on its own connection and reads the whole answer.
    fn exchange(
        &self,
        method: &str,
        path: &str,
        auth: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Option<String> {
        let address = self.address();
        let mut stream = TcpStream::connect(address).ok()?;
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
            .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    }
}

/// An answer's status, headers (names in lower case) and JSON body.
type Answer = (u16, Vec<(String, String)>, Value);

/// An HTTP/1.1 answer, parsed.
fn parse(answer: &str) -> Option<Answer> {
    let status = answer.get(9..12)?.parse().ok()?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Some((
        status,
        headers,
        serde_json::from_str(body).unwrap_or(Value::Null),
    ))
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `redis-server` on a free loopback port, killed when dropped. By
/// default as production runs it: every write in its append-only log and
/// fsynced before the answer.
pub struct Redis {
    child: Child,
    pub port: u16,
    durable: bool,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(fresh_port(), true)
    }

    /// Without persistence: what `coupon-host up` refuses unless told
    /// `--allow-volatile-store`.
    #[allow(dead_code)] // Not every test binary uses it.
    pub fn start_volatile() -> Redis {
        Redis::start_on(fresh_port(), false)
    }

    fn start_on(port: u16, durable: bool) -> Redis {
        let persistence: &[&str] = match durable {
            true => &["--appendonly", "yes", "--appendfsync", "always"],
            false => &["--appendonly", "no"],
        };
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(persistence)
            .arg("--dir")
            .arg(redis_dir(port))
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            child,
            port,
            durable,
        }
    }

    /// Kills the server with SIGKILL, as a crash would, and waits for it.
    #[allow(dead_code)]
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and data directory.
    #[allow(dead_code)]
    pub fn restart(&mut self) {
        let again = Redis::start_on(self.port, self.durable);
        let old = std::mem::replace(self, again);
        // The old one is dead: dropping it must not remove the data.
        std::mem::forget(old);
    }
}

/// A free port, with no data left in its directory by an earlier run.
fn fresh_port() -> u16 {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let _ = std::fs::remove_dir_all(redis_dir(port));
    port
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(redis_dir(self.port));
    }
}

/// A fresh directory (on tmpfs where there is one) for the append-only log
/// of the test Redis on `port`.
fn redis_dir(port: u16) -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("coupon-test-redis-{port}"));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

impl Host {
    /// The host's process id.
    #[allow(dead_code)] // Not every test binary reads it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}
