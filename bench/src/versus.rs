//! `SPIN=/path/to/spin`: the same operations on `coupon-host up` and on
//! `spin up`, each on a fresh store of the same kind, at 64 connections and at
//! one, and the empty component on both: what the host's figures are worth as
//! a stand-in for Spin.

use crate::host::{Host, HostOptions, Redis, Store};
use crate::report::{micros, thousands};
use crate::workload::{self, Workload};
use crate::wrk::{self, Lines, WrkRun};
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;

/// Each closed-loop run of the comparison.
const LENGTH: Duration = Duration::from_secs(5);
/// Coupons claimed ahead on each server: redemptions at 64 connections take
/// all but the last [`SINGLE`], which the one connection redeems.
const COUPONS: usize = 12_000;
const SINGLE: usize = 1_000;
/// The connection counts compared.
const CONNECTIONS: [u32; 2] = [64, 1];

/// One operation on both servers at one connection count.
pub struct Versus {
    /// `None`: the empty component.
    pub store: Option<Store>,
    pub operation: &'static str,
    pub connections: u32,
    pub host: WrkRun,
    pub spin: WrkRun,
}

/// What the comparison needs from the run.
pub struct Setup<'a> {
    pub runtime: &'a Runtime,
    pub host_binary: &'a Path,
    pub spin: &'a Path,
    pub scratch: &'a Path,
}

/// The operations on `store`, on both servers.
pub fn operations(setup: &Setup, store: Store, manifest: &Path) -> Result<Vec<Versus>> {
    let host = measure(setup, store, manifest, false)?;
    let spin = measure(setup, store, manifest, true)?;
    Ok(host
        .into_iter()
        .zip(spin)
        .map(|((operation, connections, host), (_, _, spin))| Versus {
            store: Some(store),
            operation,
            connections,
            host,
            spin,
        })
        .collect())
}

/// The empty component (`bench/empty`) on both servers.
pub fn empty_component(setup: &Setup, manifest: &Path, requests: &Path) -> Result<Vec<Versus>> {
    let mut rows = Vec::new();
    for connections in CONNECTIONS {
        let mut runs = Vec::new();
        for spin in [false, true] {
            let server = start(setup, manifest, None, spin, &format!("empty-{spin}"))?;
            runs.push(wrk::run_with(
                server.address,
                requests,
                Lines::Cycle,
                LENGTH,
                connections,
            )?);
        }
        let spin = runs.pop().expect("two runs");
        let host = runs.pop().expect("two runs");
        rows.push(Versus {
            store: None,
            operation: "empty component",
            connections,
            host,
            spin,
        });
    }
    Ok(rows)
}

fn start(
    setup: &Setup,
    manifest: &Path,
    runtime_config: Option<&Path>,
    spin: bool,
    name: &str,
) -> Result<Host> {
    let state_dir = setup.scratch.join(format!("versus-{name}-state"));
    let options = HostOptions {
        binary: setup.host_binary,
        manifest,
        state_dir: &state_dir,
        runtime_config,
        log: setup.scratch.join(format!("versus-{name}.log")),
    };
    match spin {
        true => Host::start_spin(setup.spin, &options),
        false => Host::start(&options),
    }
}

/// Claim, validate and redeem at each connection count on one server with a
/// fresh store.
fn measure(
    setup: &Setup,
    store: Store,
    manifest: &Path,
    spin: bool,
) -> Result<Vec<(&'static str, u32, WrkRun)>> {
    let who = if spin { "spin" } else { "host" };
    let name = format!("{}-{who}", store.name().to_ascii_lowercase());
    eprintln!("coupon-bench: versus Spin: {} on {who}", store.name());
    let redis = match store {
        Store::Sqlite => None,
        Store::Redis => Some(Redis::start(
            &setup.scratch.join(format!("versus-{name}-redis.log")),
        )?),
    };
    let config = setup.scratch.join(format!("versus-{name}.toml"));
    if let Some(redis) = &redis {
        redis.write_runtime_config(&config)?;
    }
    let server = start(
        setup,
        manifest,
        redis.as_ref().map(|_| config.as_path()),
        spin,
        &name,
    )?;
    let workload = Arc::new(Workload::new(2_000, 4));
    setup
        .runtime
        .block_on(workload.create_campaigns(server.address))?;
    let coupons = setup
        .runtime
        .block_on(workload.claim_ahead(server.address, COUPONS, 32))?;
    let file = |operation: &str, connections: u32| {
        setup
            .scratch
            .join(format!("versus-{name}-{operation}-{connections}.requests"))
    };
    let mut runs = Vec::new();
    for connections in CONNECTIONS {
        let claims = file("claim", connections);
        workload::write_requests(
            &claims,
            (0..100_000).map(|n| workload.claim(n, &format!("vs{connections}"))),
        )?;
        let run = wrk::run_with(server.address, &claims, Lines::Once, LENGTH, connections)?;
        runs.push(("claim", connections, run));
        let validations = file("validate", connections);
        workload::write_requests(&validations, coupons.iter().map(|c| workload.validate(c)))?;
        let run = wrk::run_with(
            server.address,
            &validations,
            Lines::Cycle,
            LENGTH,
            connections,
        )?;
        runs.push(("validate", connections, run));
        let (from, to) = match connections {
            1 => (COUPONS - SINGLE, COUPONS),
            _ => (0, COUPONS - SINGLE),
        };
        let redemptions = file("redeem", connections);
        workload::write_requests(
            &redemptions,
            coupons[from..to]
                .iter()
                .enumerate()
                .map(|(i, c)| workload.redeem(c, &format!("vs-{connections}-{i}"))),
        )?;
        let run = wrk::run_with(
            server.address,
            &redemptions,
            Lines::Once,
            LENGTH,
            connections,
        )?;
        runs.push(("redeem", connections, run));
    }
    Ok(runs)
}

/// The comparison as a Markdown table.
pub fn table(rows: &[Versus], page: &mut String) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        page,
        "\n## coupon-host ÷ Spin (`SPIN=...`), each on a fresh store, {} s per run\n\n\
         | store | operation | connections | coupon-host requests/s | Spin requests/s | host ÷ Spin | host p50 | Spin p50 | host p99 | Spin p99 |\n\
         |---|---|---|---|---|---|---|---|---|---|",
        LENGTH.as_secs()
    );
    for row in rows {
        let (host, spin) = (
            row.host.requests_per_second(),
            row.spin.requests_per_second(),
        );
        let ratio = if spin > 0.0 {
            format!("{:.2}", host / spin)
        } else {
            "–".into()
        };
        let _ = writeln!(
            page,
            "| {} | {} | {} | {} | {} | {ratio} | {} | {} | {} | {} |",
            row.store.map_or("–", Store::name),
            row.operation,
            row.connections,
            thousands(host),
            thousands(spin),
            micros(row.host.p50_us),
            micros(row.spin.p50_us),
            micros(row.host.p99_us),
            micros(row.spin.p99_us),
        );
    }
}
