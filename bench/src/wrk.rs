//! Closed-loop load: `wrk` at a fixed number of connections replaying a
//! request file through `wrk/replay.lua`, which reports one `BENCH {...}` line.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Connections kept busy at once: each sends its next request when the last is answered.
pub const CONNECTIONS: u32 = 64;

/// wrk's threads: one per core of the two-core machine the figures are for.
const THREADS: u32 = 2;

/// The script every run uses.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/wrk/replay.lua");

/// Whether a request file may be sent more than once.
#[derive(Debug, Clone, Copy)]
pub enum Lines {
    /// Each line at most once (claim keys, redemptions); requests past the
    /// end repeat lines and are counted as `exhausted`.
    Once,
    /// Round and round (validations, the ceilings).
    Cycle,
}

/// What `replay.lua` reports.
#[derive(Debug, Clone, Deserialize)]
pub struct WrkRun {
    /// Answered requests.
    pub requests: u64,
    pub seconds: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// Answers by label: "201", "503 overloaded", "200 valid:false".
    pub statuses: BTreeMap<String, u64>,
    /// Connect, read, write errors and timeouts.
    pub socket_errors: BTreeMap<String, u64>,
    /// Requests that reused a line of a [`Lines::Once`] file.
    pub exhausted: u64,
}

impl WrkRun {
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// Runs wrk against `address` for `duration` at [`CONNECTIONS`], replaying `requests`.
pub fn run(
    address: SocketAddr,
    requests: &Path,
    lines: Lines,
    duration: Duration,
) -> Result<WrkRun> {
    run_with(address, requests, lines, duration, CONNECTIONS)
}

/// [`run`] at `connections` (wrk's threads are at most that many).
pub fn run_with(
    address: SocketAddr,
    requests: &Path,
    lines: Lines,
    duration: Duration,
    connections: u32,
) -> Result<WrkRun> {
    let threads = THREADS.min(connections);
    let mode = match lines {
        Lines::Once => "once",
        Lines::Cycle => "cycle",
    };
    let output = Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .args(["--timeout", "5s", "-s", SCRIPT])
        .arg(format!("http://{address}"))
        .arg("--")
        .arg(requests)
        .args([&threads.to_string(), mode])
        .output()
        .context("cannot run wrk (is it installed? apt-get install wrk)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("BENCH ")) else {
        bail!(
            "wrk ({}) printed no BENCH line for {}:\n{stdout}\n{}",
            output.status,
            requests.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    serde_json::from_str(line)
        .with_context(|| format!("wrk's BENCH line is not as expected: {line}"))
}
