//! The processes the bench runs: `coupon-host up` and `redis-server`, each
//! killed when its guard is dropped (also on a panic or an early error), and
//! the builds they need.

use anyhow::{Context, Result, bail, ensure};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The variables the hosts get: the operator's token and the user-token secret.
pub const ADMIN_TOKEN: &str = "bench-admin-token";
pub const USER_TOKEN_SECRET: &str = "bench-user-token-secret";

/// How long a host may take from start to its `Serving` line.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ sits in the workspace")
        .to_owned()
}

/// Cargo's target directory, as cargo decides it.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// `target/bench/`, emptied: the run's state directories, request files and logs.
pub fn scratch() -> Result<PathBuf> {
    let dir = target_dir().join("bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Builds `target/release/coupon-host` (a no-op when it is up to date): cargo
/// cannot build another package's binary as a dependency.
pub fn build_host() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    eprintln!("coupon-bench: cargo build --release -p coupon-host");
    let status = Command::new(&cargo)
        .args(["build", "--release", "-p", "coupon-host"])
        .current_dir(workspace())
        .status()
        .with_context(|| format!("cannot run {cargo:?}"))?;
    ensure!(
        status.success(),
        "cargo build --release -p coupon-host failed ({status})"
    );
    Ok(target_dir().join("release").join("coupon-host"))
}

/// Builds the components of the app at `manifest` through their build
/// commands, as `coupon-host up --build` would, and returns the app.
pub fn build_components(manifest: &Path) -> Result<coupon_host::Manifest> {
    let manifest = coupon_host::Manifest::load(manifest)?;
    eprintln!(
        "coupon-bench: building the components of {}",
        manifest.path.display()
    );
    coupon_host::build::ensure_built(&manifest)?;
    Ok(manifest)
}

/// The key-value store behind the host's `default` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The host's default: SQLite under its state directory.
    Sqlite,
    /// A `redis-server` the bench starts, through a Spin runtime config.
    Redis,
}

impl Store {
    pub fn name(self) -> &'static str {
        match self {
            Store::Sqlite => "SQLite",
            Store::Redis => "Redis",
        }
    }
}

/// How to start a host.
pub struct HostOptions<'a> {
    pub binary: &'a Path,
    pub manifest: &'a Path,
    pub state_dir: &'a Path,
    /// A Spin runtime config (the Redis store); `None`: SQLite under `state_dir`.
    pub runtime_config: Option<&'a Path>,
    /// Where its stderr goes.
    pub log: PathBuf,
}

/// A running `coupon-host up` on a free loopback port, killed when dropped.
pub struct Host {
    child: Child,
    pub address: SocketAddr,
    /// When the process was spawned: start-up time is measured from here.
    pub spawned_at: Instant,
    /// Whether it leads a process group of its own, killed with it.
    own_group: bool,
}

impl Host {
    /// Starts the host and waits for its `Serving http://...` line; then keeps
    /// draining its stdout (a JSON line per request) so it never blocks on a
    /// full pipe.
    pub fn start(options: &HostOptions) -> Result<Host> {
        let log = std::fs::File::create(&options.log)
            .with_context(|| format!("cannot create {}", options.log.display()))?;
        let mut command = Command::new(options.binary);
        command
            .arg("up")
            .args(["--listen", "127.0.0.1:0", "-f"])
            .arg(options.manifest)
            .arg("--state-dir")
            .arg(options.state_dir)
            .env("SPIN_VARIABLE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("SPIN_VARIABLE_USER_TOKEN_SECRET", USER_TOKEN_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(config) = options.runtime_config {
            // The bench's Redis keeps no log: it measures the host, not fsync.
            command
                .arg("--runtime-config-file")
                .arg(config)
                .arg("--allow-volatile-store");
        }
        let spawned_at = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", options.binary.display()))?;
        let stdout = child.stdout.take().context("the host's stdout")?;
        let (serving, url) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout);
            let mut line = String::new();
            while matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
                if let Some(rest) = line.strip_prefix("Serving ") {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    let _ = serving.send(url.to_owned());
                    break;
                }
                line.clear();
            }
            let _ = std::io::copy(&mut lines, &mut std::io::sink());
        });
        let mut host = Host {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            spawned_at,
            own_group: false,
        };
        let url = match url.recv_timeout(START_TIMEOUT) {
            Ok(url) => url,
            Err(_) => bail!(
                "coupon-host up did not start serving within {START_TIMEOUT:?} ({}); its log, {}:\n{}",
                match host.child.try_wait() {
                    Ok(Some(status)) => format!("it exited with {status}"),
                    _ => "it is still running".to_owned(),
                },
                options.log.display(),
                tail(&options.log)
            ),
        };
        host.address = url
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("coupon-host up serves {url:?}, not http://<address>"))?;
        Ok(host)
    }
}

impl Host {
    /// Starts `spin up` (the binary at `spin`) on a free loopback port with
    /// the same variables, state and runtime config a host gets, and waits
    /// until it accepts connections.
    pub fn start_spin(spin: &Path, options: &HostOptions) -> Result<Host> {
        let log = std::fs::File::create(&options.log)
            .with_context(|| format!("cannot create {}", options.log.display()))?;
        let port = free_port()?;
        let mut command = Command::new(spin);
        command
            .process_group(0)
            .arg("up")
            .args(["--listen", &format!("127.0.0.1:{port}"), "-f"])
            .arg(options.manifest)
            .arg("--state-dir")
            .arg(options.state_dir)
            .env("SPIN_VARIABLE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("SPIN_VARIABLE_USER_TOKEN_SECRET", USER_TOKEN_SECRET)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("the log")?)
            .stderr(log);
        if let Some(config) = options.runtime_config {
            // The bench's Redis keeps no log: it measures the host, not fsync.
            command
                .arg("--runtime-config-file")
                .arg(config)
                .arg("--allow-volatile-store");
        }
        Host::listening(command, port, "spin up", &options.log)
    }

    /// Starts `wasmtime serve` (the binary at `wasmtime`) with its defaults
    /// on `component` on a free loopback port, and waits until it accepts
    /// connections. `-Scli` links every WASI interface, as a Spin component
    /// may import more than the proxy world.
    pub fn start_wasmtime(wasmtime: &Path, component: &Path, log: &Path) -> Result<Host> {
        let file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let port = free_port()?;
        let mut command = Command::new(wasmtime);
        command
            .process_group(0)
            .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "-Scli"])
            .arg(component)
            .stdin(Stdio::null())
            .stdout(file.try_clone().context("the log")?)
            .stderr(file);
        Host::listening(command, port, "wasmtime serve", log)
    }

    /// Spawns `command`, a server in a process group of its own, and waits
    /// until it accepts connections on loopback `port`.
    fn listening(mut command: Command, port: u16, name: &str, log: &Path) -> Result<Host> {
        let spawned_at = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let mut host = Host {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            spawned_at,
            own_group: true,
        };
        while TcpStream::connect(host.address).is_err() {
            if let Ok(Some(status)) = host.child.try_wait() {
                bail!(
                    "{name} exited with {status}; its log, {}:\n{}",
                    log.display(),
                    tail(log)
                );
            }
            ensure!(
                spawned_at.elapsed() < START_TIMEOUT,
                "{name} did not listen within {START_TIMEOUT:?}; its log, {}:\n{}",
                log.display(),
                tail(log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(host)
    }
}

/// A loopback port nobody listens on.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("no free loopback port")?
        .port())
}

/// `wasmtime`: the `WASMTIME` binary if set, else wasmtime-cli at the version
/// coupon-host embeds (as `Cargo.lock` pins it), installed once into
/// `target/wasmtime-cli/` with `serve` and little else (a build of about
/// 20 minutes on two cores; later runs reuse it).
pub fn build_wasmtime() -> Result<PathBuf> {
    if let Some(binary) = std::env::var_os("WASMTIME") {
        return Ok(PathBuf::from(binary));
    }
    let version = locked_version("wasmtime")?;
    let root = target_dir().join("wasmtime-cli");
    let binary = root.join("bin").join("wasmtime");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    eprintln!(
        "coupon-bench: cargo install wasmtime-cli {version} into {}",
        root.display()
    );
    let status = Command::new(&cargo)
        .args([
            "install",
            "wasmtime-cli",
            "--locked",
            "--no-default-features",
        ])
        .args(["--version", &format!("={version}")])
        .args([
            "--features",
            "run,serve,component-model-async,cranelift,pooling-allocator,parallel-compilation",
        ])
        .arg("--root")
        .arg(&root)
        .arg("--target-dir")
        .arg(root.join("build"))
        .status()
        .with_context(|| format!("cannot run {cargo:?}"))?;
    ensure!(
        status.success(),
        "cargo install wasmtime-cli failed ({status})"
    );
    Ok(binary)
}

/// The version of `package` that `Cargo.lock` pins.
fn locked_version(package: &str) -> Result<String> {
    let path = workspace().join("Cargo.lock");
    let lock = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let name = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == name {
            let version = lines
                .next()
                .and_then(|l| l.strip_prefix("version = \""))
                .and_then(|v| v.strip_suffix('"'));
            if let Some(version) = version {
                return Ok(version.to_owned());
            }
        }
    }
    bail!("{} pins no {package}", path.display())
}

impl Drop for Host {
    /// Kills the host's whole process group where it has one of its own:
    /// `spin up` runs the app in a child process that outlives it otherwise.
    fn drop(&mut self) {
        if self.own_group {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `redis-server` on a free loopback port, without persistence, killed when dropped.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start(log: &Path) -> Result<Redis> {
        let port = free_port()?;
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(log_file)
            .spawn()
            .context("cannot run redis-server (is it installed? apt-get install redis-server)")?;
        let redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(
                Instant::now() < deadline,
                "redis-server did not listen on port {port} within 10 s; its log, {}:\n{}",
                log.display(),
                tail(log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    /// Writes a Spin runtime config at `path` that puts the `default` store here.
    pub fn write_runtime_config(&self, path: &Path) -> Result<()> {
        let config = format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{}\"\n",
            self.port
        );
        std::fs::write(path, config).with_context(|| format!("cannot write {}", path.display()))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of a log, for an error message.
fn tail(path: &Path) -> String {
    let mut text = String::new();
    let _ = std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
