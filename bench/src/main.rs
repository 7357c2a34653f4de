//! `cargo run --release -p coupon-bench -- [--quick] [--out FILE]`: the
//! coupon service on `coupon-host up`, measured over real HTTP on loopback,
//! with the ceilings it is judged against measured in the same run.
//!
//! For each store (SQLite; Redis unless `--quick`) it starts a host, creates
//! campaigns, claims coupons ahead for many users, then measures claim,
//! validate and redeem at 64 connections with wrk (closed loop), and the
//! arrival rate claim and validate each hold (open loop, by bisection). Then the ceilings: a native
//! hyper server, an empty component on the same host and (full runs) on
//! `wasmtime serve`, the stores alone. The
//! Markdown page goes to stdout and to `bench/results.md` (or `--out`);
//! progress goes to stderr.

mod ceilings;
mod client;
mod host;
mod open_loop;
mod report;
mod versus;
mod workload;
mod wrk;

use anyhow::{Context, Result, bail};
use client::{Call, Connection};
use coupon_core::ops::events::MAX_LIMIT;
use host::{Host, HostOptions, Redis, Store};
use report::{ClosedLoop, Machine, OpenLoop, Results};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use workload::Workload;
use wrk::Lines;

const USAGE: &str = "\
usage: cargo run --release -p coupon-bench -- [--quick | --runtime] [--out FILE]

  --quick       a seconds-long run on SQLite only: checks the benchmark works
  --runtime     only the runtime path: the native server and the empty
                component on coupon-host and on `wasmtime serve`, 10 s each
  --out FILE    where the Markdown table goes [default: bench/results.md]

With SPIN=/path/to/spin, also claim, validate and redeem on `spin up` beside
`coupon-host up` (each on a fresh store, at 64 connections and at 1), and the
empty component on both.

Full and --runtime runs build wasmtime-cli into target/wasmtime-cli/ once
(about 20 minutes), or take the binary WASMTIME names.

Needs wrk and redis-server (with redis-benchmark) on the PATH.";

/// What a run measures, and for how long.
struct Plan {
    quick: bool,
    stores: Vec<Store>,
    /// Each wrk run.
    closed_loop: Duration,
    users: usize,
    campaigns: usize,
    /// Coupons claimed ahead: each is redeemed at most once, so this bounds
    /// the redemptions a closed-loop run can make.
    coupons: usize,
    /// Lines of the claim file: distinct keys for the closed-loop claims.
    claim_lines: usize,
    /// The open loop's first rate, its steps' length and how many it runs
    /// per operation at most (then one at half the rate held).
    first_rate: u32,
    rate_step: Duration,
    probes: usize,
    /// Each store-ceiling figure.
    store_ceiling: Duration,
    /// Whether the stores alone are measured.
    store_ceilings: bool,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        // The request files are sized for rates well above what two cores
        // reach (redeem 5,000/s, claim 8,000/s); a run that outgrows them says
        // so in its table.
        if quick {
            let seconds = 3;
            Plan {
                quick,
                stores: vec![Store::Sqlite],
                closed_loop: Duration::from_secs(seconds),
                users: 2_000,
                campaigns: 4,
                coupons: seconds as usize * 5_000,
                claim_lines: seconds as usize * 8_000,
                first_rate: 500,
                rate_step: Duration::from_secs(1),
                probes: 3,
                store_ceiling: Duration::from_secs(1),
                store_ceilings: true,
            }
        } else {
            let seconds = 10;
            Plan {
                quick,
                stores: vec![Store::Sqlite, Store::Redis],
                closed_loop: Duration::from_secs(seconds),
                users: 20_000,
                campaigns: 4,
                coupons: seconds as usize * 5_000,
                claim_lines: seconds as usize * 8_000,
                first_rate: 1_500,
                rate_step: Duration::from_secs(30),
                probes: 7,
                store_ceiling: Duration::from_secs(2),
                store_ceilings: true,
            }
        }
    }

    fn describe(&self) -> Vec<String> {
        let mode = if self.quick { "--quick" } else { "full" };
        vec![
            format!(
                "`cargo run --release -p coupon-bench{}` ({mode} run).",
                if self.quick { " -- --quick" } else { "" }
            ),
            format!(
                "Data: {} users with their own tokens, {} campaigns, a fresh `Idempotency-Key` per claim, \
                 {} coupons claimed ahead, each validated by its holder and redeemed at most once.",
                report::thousands(self.users as f64),
                self.campaigns,
                report::thousands(self.coupons as f64)
            ),
            format!(
                "Closed loop: `wrk -t2 -c{}` for {} s per operation. Open loop: {} s per rate, \
                 at most {} rates per operation from {}/s, then half the rate held. \
                 Host: `coupon-host up` with its defaults (32 requests at once per component, \
                 a JSON log line per request to a pipe the bench drains).",
                wrk::CONNECTIONS,
                self.closed_loop.as_secs(),
                self.rate_step.as_secs(),
                self.probes,
                self.first_rate
            ),
        ]
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("coupon-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut quick = false;
    let mut runtime_only = false;
    let mut out = host::workspace().join("bench").join("results.md");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--runtime" => runtime_only = true,
            "--out" => out = PathBuf::from(args.next().context("--out needs a file")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    let mut plan = Plan::new(quick);
    if runtime_only {
        plan.stores.clear();
        plan.store_ceilings = false;
    }
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;

    let binary = host::build_host()?;
    let app = host::build_components(&host::workspace().join("spin.toml"))?;
    let empty_app = host::build_components(&host::workspace().join("bench").join("spin.toml"))?;
    let wasmtime = match quick {
        true => None,
        false => Some(host::build_wasmtime()?),
    };
    let scratch = host::scratch()?;

    let mut results = Results {
        machine: Machine::detect(),
        setup: plan.describe(),
        closed_loop: Vec::new(),
        open_loop: Vec::new(),
        hello: None,
        empty_component: None,
        wasmtime_serve: None,
        sqlite: None,
        redis: None,
        wasm_sizes: wasm_sizes(&app)?,
        warm_start: None,
        versus: Vec::new(),
    };
    let bench = Bench {
        runtime: &runtime,
        plan: &plan,
        binary: &binary,
        wasmtime: wasmtime.as_deref(),
        scratch: &scratch,
    };
    for &store in &plan.stores {
        bench.store(store, &app.path, &mut results)?;
    }
    bench.ceilings(&empty_app, &mut results)?;
    if let Some(spin) = std::env::var_os("SPIN").map(PathBuf::from) {
        let setup = versus::Setup {
            runtime: &runtime,
            host_binary: &binary,
            spin: &spin,
            scratch: &scratch,
        };
        for &store in &plan.stores {
            results
                .versus
                .extend(versus::operations(&setup, store, &app.path)?);
        }
        let requests = scratch.join("hello.requests");
        results
            .versus
            .extend(versus::empty_component(&setup, &empty_app.path, &requests)?);
    }

    let markdown = results.to_markdown();
    print!("{markdown}");
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&out, &markdown).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "coupon-bench: done in {:.0} s; wrote {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// What every part of a run shares.
struct Bench<'a> {
    runtime: &'a Runtime,
    plan: &'a Plan,
    /// `coupon-host`.
    binary: &'a Path,
    /// `wasmtime`, in full and `--runtime` runs.
    wasmtime: Option<&'a Path>,
    /// `target/bench/`.
    scratch: &'a Path,
}

impl Bench<'_> {
    /// The coupon app on `store`: closed loop, open loop, and for SQLite the
    /// restart time.
    fn store(&self, store: Store, manifest: &Path, results: &mut Results) -> Result<()> {
        let name = store.name();
        eprintln!("coupon-bench: {name} store");
        let redis = match store {
            Store::Sqlite => None,
            Store::Redis => Some(Redis::start(&self.scratch.join("redis.log"))?),
        };
        let runtime_config = self.scratch.join("redis.toml");
        if let Some(redis) = &redis {
            redis.write_runtime_config(&runtime_config)?;
        }
        let slug = name.to_ascii_lowercase();
        let state_dir = self.scratch.join(format!("{slug}-state"));
        let options = |log: &str| HostOptions {
            binary: self.binary,
            manifest,
            state_dir: &state_dir,
            runtime_config: redis.as_ref().map(|_| runtime_config.as_path()),
            log: self.scratch.join(format!("{slug}-{log}.log")),
        };
        let host = Host::start(&options("host"))?;

        let workload = Arc::new(Workload::new(self.plan.users, self.plan.campaigns));
        self.runtime
            .block_on(workload.create_campaigns(host.address))?;
        eprintln!(
            "coupon-bench:   claiming {} coupons ahead",
            self.plan.coupons
        );
        let claiming = Instant::now();
        // 32 at once: the host serves 32 requests per component at once and
        // sheds what waits too long.
        let coupons =
            self.runtime
                .block_on(workload.claim_ahead(host.address, self.plan.coupons, 32))?;
        eprintln!(
            "coupon-bench:     took {:.1} s",
            claiming.elapsed().as_secs_f64()
        );
        // The ledger finance reads: one campaign's events, then its
        // reconciliation, one client.
        let (events, read, reconciled) =
            self.runtime
                .block_on(workload.read_ledger(host.address, 0, MAX_LIMIT))?;
        results.setup.push(format!(
            "{name}: campaign 0's {events} events read in {:.2} s ({:.0} events/s, pages of {}), reconciled in {:.2} s",
            read.as_secs_f64(),
            events as f64 / read.as_secs_f64(),
            MAX_LIMIT,
            reconciled.as_secs_f64(),
        ));

        let claims = (0..self.plan.claim_lines).map(|n| workload.claim(n, "wrk"));
        let claim = self.closed_loop(&host, store, "claim", "201", Lines::Once, claims)?;
        results.closed_loop.push(claim);
        let validations = coupons.iter().map(|coupon| workload.validate(coupon));
        let validate =
            self.closed_loop(&host, store, "validate", "200", Lines::Cycle, validations)?;
        results.closed_loop.push(validate);

        let open_loop = |operation: &'static str, call: &dyn Fn(usize) -> Call| {
            eprintln!("coupon-bench:   {operation}: the rate it holds");
            let capacity = self.runtime.block_on(open_loop::bisect(
                host.address,
                self.plan.first_rate,
                self.plan.rate_step,
                self.plan.probes,
                call,
            ));
            OpenLoop {
                store,
                operation,
                step_length: self.plan.rate_step,
                capacity,
            }
        };
        results
            .open_loop
            .push(open_loop("claim", &|n| workload.claim(n, "open")));
        let validate = |n: usize| workload.validate(&coupons[n % coupons.len()]);
        results.open_loop.push(open_loop("validate", &validate));

        // Last: it uses the coupons up.
        let redemptions = coupons
            .iter()
            .enumerate()
            .map(|(i, coupon)| workload.redeem(coupon, &format!("order-{i}")));
        let redeem = self.closed_loop(&host, store, "redeem", "201", Lines::Once, redemptions)?;
        results.closed_loop.push(redeem);
        drop(host);

        if store == Store::Sqlite {
            let host = Host::start(&options("restart"))?;
            let campaign = format!("/campaigns/{}", workload.campaign_id(0));
            let answered = self
                .runtime
                .block_on(first_answer(host.address, &campaign))?;
            results.warm_start = Some(answered - host.spawned_at);
        }
        Ok(())
    }

    /// wrk at 64 connections replaying `calls` for the plan's length.
    fn closed_loop(
        &self,
        host: &Host,
        store: Store,
        operation: &'static str,
        success: &'static str,
        lines: Lines,
        calls: impl Iterator<Item = Call>,
    ) -> Result<ClosedLoop> {
        let file = self.scratch.join(format!(
            "{}-{operation}.requests",
            store.name().to_ascii_lowercase()
        ));
        workload::write_requests(&file, calls)?;
        eprintln!("coupon-bench:   {operation}, closed loop");
        let run = wrk::run(host.address, &file, lines, self.plan.closed_loop)?;
        eprintln!(
            "coupon-bench:     {:.0} requests/s, p99 {:.1} ms, answers {:?}",
            run.requests_per_second(),
            run.p99_us / 1000.0,
            run.statuses
        );
        Ok(ClosedLoop {
            store,
            operation,
            success,
            run,
        })
    }

    /// A native hyper server and an empty component (on coupon-host, and on
    /// `wasmtime serve` where built) under the same wrk load, and the stores
    /// alone.
    fn ceilings(&self, empty: &coupon_host::Manifest, results: &mut Results) -> Result<()> {
        eprintln!("coupon-bench: ceilings");
        // The same request on every line: one line per connection is plenty.
        let requests = self.scratch.join("hello.requests");
        let hello = Call::get("/", None);
        workload::write_requests(
            &requests,
            std::iter::repeat_n(hello, wrk::CONNECTIONS as usize),
        )?;
        let length = self.plan.closed_loop;
        // The server runs on the runtime's threads while wrk runs on this one.
        let hello = self.runtime.block_on(async {
            let (address, _server) = ceilings::hello_server().await?;
            let requests = requests.clone();
            tokio::task::spawn_blocking(move || wrk::run(address, &requests, Lines::Cycle, length))
                .await
                .context("the wrk thread panicked")?
        })?;
        results.hello = Some(hello);

        let host = Host::start(&HostOptions {
            binary: self.binary,
            manifest: &empty.path,
            state_dir: &self.scratch.join("empty-state"),
            runtime_config: None,
            log: self.scratch.join("empty-host.log"),
        })?;
        results.empty_component = Some(wrk::run(host.address, &requests, Lines::Cycle, length)?);
        drop(host);

        if let Some(wasmtime) = self.wasmtime {
            let component = empty
                .components
                .values()
                .next()
                .map(|c| empty.source_path(c))
                .context("bench/spin.toml names no component")?;
            let log = self.scratch.join("wasmtime-serve.log");
            let server = Host::start_wasmtime(wasmtime, &component, &log)?;
            let run = wrk::run(server.address, &requests, Lines::Cycle, length)?;
            results.wasmtime_serve = Some(run);
        }

        if !self.plan.store_ceilings {
            return Ok(());
        }
        results.sqlite = Some(self.runtime.block_on(ceilings::sqlite_store(
            &self.scratch.join("ceiling.sqlite"),
            self.plan.store_ceiling,
        ))?);
        if self.plan.stores.contains(&Store::Redis) {
            let redis = Redis::start(&self.scratch.join("redis-ceiling.log"))?;
            results.redis = Some(ceilings::redis_benchmark(redis.port)?);
        }
        Ok(())
    }
}

/// When `GET path` with the admin token first answers 200.
async fn first_answer(address: std::net::SocketAddr, path: &str) -> Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let call = Call::get(path, Some(host::ADMIN_TOKEN));
    loop {
        if let Ok(mut connection) = Connection::open(address).await
            && let Ok(answer) = connection.send(&call).await
            && answer.status == 200
        {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("GET {path} did not answer 200 within 30 s of the restart");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Each of the app's component `.wasm` files and its size.
fn wasm_sizes(app: &coupon_host::Manifest) -> Result<Vec<(String, u64)>> {
    let mut sizes = Vec::new();
    for component in app.components.values() {
        let path = app.source_path(component);
        let size = std::fs::metadata(&path)
            .with_context(|| format!("cannot read the size of {}", path.display()))?
            .len();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        sizes.push((name.unwrap_or_default(), size));
    }
    Ok(sizes)
}
