//! The run's figures as one Markdown page: the machine, the closed- and
//! open-loop tables, the ceilings, and the targets of issue #6, each marked
//! met or missed.

use crate::ceilings::{ROUND_TRIPS, StoreCeiling};
use crate::host::Store;
use crate::open_loop::{self, Capacity, Step};
use crate::wrk::{self, WrkRun};
use std::fmt::Write;
use std::time::Duration;

/// Everything one run measured.
pub struct Results {
    pub machine: Machine,
    /// How the run was started and how long each part lasted, in words.
    pub setup: Vec<String>,
    pub closed_loop: Vec<ClosedLoop>,
    pub open_loop: Vec<OpenLoop>,
    pub hello: Option<WrkRun>,
    pub empty_component: Option<WrkRun>,
    /// The same empty component on `wasmtime serve`.
    pub wasmtime_serve: Option<WrkRun>,
    /// The host's SQLite store alone.
    pub sqlite: Option<StoreCeiling>,
    /// Redis alone (redis-benchmark).
    pub redis: Option<StoreCeiling>,
    /// Component `.wasm` files and their sizes in bytes.
    pub wasm_sizes: Vec<(String, u64)>,
    /// Spawn to the first 200 of a second `up` on the same state directory.
    pub warm_start: Option<Duration>,
    /// With `SPIN=`: the same operations on `spin up`.
    pub versus: Vec<crate::versus::Versus>,
}

/// One operation under wrk.
pub struct ClosedLoop {
    pub store: Store,
    pub operation: &'static str,
    /// The answer every request should get ("201").
    pub success: &'static str,
    pub run: WrkRun,
}

/// The arrival rate one operation holds.
pub struct OpenLoop {
    pub store: Store,
    pub operation: &'static str,
    pub step_length: Duration,
    pub capacity: Capacity,
}

/// The machine the figures come from.
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory: String,
    pub commit: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map_or("unknown CPU".to_owned(), |(_, model)| {
                model.trim().to_owned()
            });
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or("unknown memory".to_owned(), |kb| {
                format!("{:.0} GiB", kb / 1024.0 / 1024.0)
            });
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            memory,
            commit: commit(),
        }
    }
}

/// The checked-out commit, and whether the working tree differs from it.
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(crate::host::workspace())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(head) => match git(&["status", "--porcelain"]) {
            Some(changes) if !changes.is_empty() => format!("{head} with uncommitted changes"),
            _ => head,
        },
        None => "unknown commit".to_owned(),
    }
}

impl Results {
    pub fn to_markdown(&self) -> String {
        let mut page = String::new();
        let m = &self.machine;
        let _ = writeln!(page, "# coupon-host benchmark\n");
        let _ = writeln!(
            page,
            "{} cores, {}, {}; commit {}. The load generators (wrk, the bench) and the \
             server share the cores.\n",
            m.cores, m.cpu, m.memory, m.commit
        );
        for line in &self.setup {
            let _ = writeln!(page, "- {line}");
        }
        self.closed_loop_table(&mut page);
        crate::versus::table(&self.versus, &mut page);
        self.open_loop_table(&mut page);
        self.ceilings_table(&mut page);
        self.targets_table(&mut page);
        page
    }

    fn closed_loop_table(&self, page: &mut String) {
        let _ = writeln!(
            page,
            "\n## Closed loop: {} connections (wrk)\n\n\
             | store | operation | requests/s | p50 | p99 | p99.9 | answers other than success |\n\
             |---|---|---|---|---|---|---|",
            wrk::CONNECTIONS
        );
        for row in &self.closed_loop {
            let run = &row.run;
            let _ = writeln!(
                page,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.store.name(),
                row.operation,
                thousands(run.requests_per_second()),
                micros(run.p50_us),
                micros(run.p99_us),
                micros(run.p999_us),
                other_answers(run, row.success)
            );
        }
    }

    fn open_loop_table(&self, page: &mut String) {
        let Some(first) = self.open_loop.first() else {
            return;
        };
        let limits = open_loop::HELD;
        let _ = writeln!(
            page,
            "\n## Open loop: the rate each operation holds\n\n\
             Requests at a fixed arrival rate, latency from each request's scheduled instant \
             (keep-alive connections, a new one when none is idle, at most {}). A rate holds \
             when for {} s nothing is shed, times out ({} s) or fails and p99 ≤ {}; a step \
             that breaks stops at the next second's check. Rates double until one breaks, then \
             the gap is halved until within 10%; then half the rate held runs.\n\n\
             | store | operation | holds | p50 | p99 | p99.9 | at half: p50 | p99 | p99.9 |\n\
             |---|---|---|---|---|---|---|---|---|",
            open_loop::MAX_CONNECTIONS,
            first.step_length.as_secs(),
            open_loop::TIMEOUT.as_secs(),
            millis(limits.max_p99),
        );
        for row in &self.open_loop {
            let capacity = &row.capacity;
            let held = capacity
                .held
                .and_then(|rate| capacity.probes.iter().find(|step| step.rate == rate));
            let latencies = |step: Option<&Step>| match step {
                Some(step) => format!(
                    "{} | {} | {}",
                    millis(step.p50),
                    millis(step.p99),
                    millis(step.p999)
                ),
                None => " | | ".to_owned(),
            };
            let _ = writeln!(
                page,
                "| {} | {} | {} | {} | {} |",
                row.store.name(),
                row.operation,
                held.map_or("none".to_owned(), |step| format!(
                    "**{}/s**",
                    thousands(f64::from(step.rate))
                )),
                latencies(held),
                latencies(capacity.half.as_ref())
            );
        }
        let _ = writeln!(
            page,
            "\nEvery step:\n\n\
             | store | operation | rate | sent | p50 | p99 | p99.9 | errors | connections | |\n\
             |---|---|---|---|---|---|---|---|---|---|"
        );
        for row in &self.open_loop {
            for step in row.capacity.probes.iter().chain(&row.capacity.half) {
                let errors = step.errors();
                let error_list = if errors == 0 {
                    "none".to_owned()
                } else {
                    let labels: Vec<String> = step
                        .statuses
                        .iter()
                        .filter(|(label, _)| !label.starts_with('2'))
                        .map(|(label, count)| format!("{label}: {}", thousands(*count as f64)))
                        .collect();
                    format!(
                        "{} ({})",
                        percent(errors as f64 / step.sent.max(1) as f64),
                        labels.join(", ")
                    )
                };
                let verdict = match &step.broke {
                    Some(why) => format!("broke after {:.1} s: {why}", step.seconds),
                    None => format!("held for {:.0} s", row.step_length.as_secs_f64()),
                };
                let _ = writeln!(
                    page,
                    "| {} | {} | {}/s | {} | {} | {} | {} | {} | {} | {} |",
                    row.store.name(),
                    row.operation,
                    thousands(f64::from(step.rate)),
                    thousands(step.sent as f64),
                    millis(step.p50),
                    millis(step.p99),
                    millis(step.p999),
                    error_list,
                    step.connections,
                    verdict
                );
            }
        }
    }

    fn ceilings_table(&self, page: &mut String) {
        let _ = writeln!(
            page,
            "\n## Ceilings, measured in the same run\n\n| ceiling | figure |\n|---|---|"
        );
        let http = |run: &WrkRun| {
            format!(
                "{} requests/s, p50 {}, p99 {}, p99.9 {}",
                thousands(run.requests_per_second()),
                micros(run.p50_us),
                micros(run.p99_us),
                micros(run.p999_us)
            )
        };
        if let Some(run) = &self.hello {
            let _ = writeln!(
                page,
                "| native hyper hello world in the bench process, wrk c={} | {} |",
                wrk::CONNECTIONS,
                http(run)
            );
        }
        if let Some(run) = &self.empty_component {
            let _ = writeln!(
                page,
                "| empty Spin component (bench/empty) on `coupon-host up`, wrk c={} | {} |",
                wrk::CONNECTIONS,
                http(run)
            );
        }
        if let Some(run) = &self.wasmtime_serve {
            let _ = writeln!(
                page,
                "| the same component on `wasmtime serve` (wasmtime-cli, its defaults), wrk c={} | {} |",
                wrk::CONNECTIONS,
                http(run)
            );
        }
        if let Some(sqlite) = &self.sqlite {
            let _ = writeln!(
                page,
                "| SQLite store alone (`SqliteStore`, 16 tasks, one key) | {} increments/s, {} gets/s |",
                thousands(sqlite.increments),
                thousands(sqlite.gets)
            );
        }
        if let Some(redis) = &self.redis {
            let _ = writeln!(
                page,
                "| Redis alone (`redis-benchmark -t incr,get -n 100000`, 50 connections) | {} INCR/s, {} GET/s |",
                thousands(redis.increments),
                thousands(redis.gets)
            );
        }
        let trips: Vec<String> = ROUND_TRIPS
            .iter()
            .map(|(operation, trips)| format!("{operation} {trips}"))
            .collect();
        let _ = writeln!(
            page,
            "| store round trips on the success path (`tests/api/round_trips.rs`) | {} |",
            trips.join(", ")
        );
        for (name, bytes) in &self.wasm_sizes {
            let _ = writeln!(
                page,
                "| `{name}` | {:.2} MiB ({} bytes) |",
                *bytes as f64 / MIB,
                thousands(*bytes as f64)
            );
        }
        if let Some(warm_start) = self.warm_start {
            let _ = writeln!(
                page,
                "| `coupon-host up` restarted on the same state, warm compile cache: spawn to first 200 | {} |",
                millis(warm_start)
            );
        }
    }

    fn targets_table(&self, page: &mut String) {
        let _ = writeln!(
            page,
            "\n## Targets (#6, #14)\n\n| target | figure | |\n|---|---|---|"
        );
        if let (Some(hello), Some(empty)) = (&self.hello, &self.empty_component) {
            let ratio = empty.requests_per_second() / hello.requests_per_second();
            let _ = writeln!(
                page,
                "| empty component requests/s ÷ hyper hello requests/s ≥ 0.5 | {ratio:.2} | {} |",
                met(ratio >= 0.5)
            );
            if let Some(serve) = &self.wasmtime_serve {
                let ratio = empty.requests_per_second() / serve.requests_per_second();
                let _ = writeln!(
                    page,
                    "| empty component requests/s ÷ on `wasmtime serve` ≥ 1.5 | {ratio:.2} | {} |",
                    met(ratio >= 1.5)
                );
            }
            let tail = empty.p999_us / hello.p999_us;
            let _ = writeln!(
                page,
                "| empty component p99.9 ÷ hyper hello p99.9 ≤ 2 (no stall) | {tail:.2} ({} ÷ {}) | {} |",
                micros(empty.p999_us),
                micros(hello.p999_us),
                met(tail <= 2.0)
            );
        }
        for row in &self.closed_loop {
            let ceiling = match row.store {
                Store::Sqlite => self.sqlite,
                Store::Redis => self.redis,
            };
            let trips = ROUND_TRIPS
                .iter()
                .find(|(operation, _)| *operation == row.operation)
                .map(|(_, trips)| *trips);
            if let (Some(ceiling), Some(trips)) = (ceiling, trips) {
                let (store, bound) = (row.store.name(), ceiling.increments / f64::from(trips));
                let ratio = row.run.requests_per_second() / bound;
                let _ = writeln!(
                    page,
                    "| {store} {} requests/s ÷ ({store} increments/s ÷ {trips} round trips = {}) ≥ 0.5 | {ratio:.2} | {} |",
                    row.operation,
                    thousands(bound),
                    met(ratio >= 0.5)
                );
            }
        }
        for (operation, limit_ms) in [("validate", 10.0), ("claim", 50.0), ("redeem", 50.0)] {
            let row = self
                .closed_loop
                .iter()
                .find(|r| r.store == Store::Sqlite && r.operation == operation);
            if let Some(row) = row {
                let p99_ms = row.run.p99_us / 1000.0;
                let _ = writeln!(
                    page,
                    "| SQLite {operation} p99 at c={} ≤ {limit_ms} ms | {} | {} |",
                    wrk::CONNECTIONS,
                    micros(row.run.p99_us),
                    met(p99_ms <= limit_ms)
                );
            }
        }
        for row in &self.open_loop {
            let (store, operation) = (row.store.name(), row.operation);
            let target = match operation {
                "claim" => 3_000,
                _ => 6_000,
            };
            let held = row.capacity.held.unwrap_or(0);
            let _ = writeln!(
                page,
                "| {store} {operation} holds ≥ {}/s in the open loop | {}/s | {} |",
                thousands(f64::from(target)),
                thousands(f64::from(held)),
                met(held >= target)
            );
            let limit = match operation {
                "validate" => Duration::from_millis(10),
                _ => Duration::from_millis(25),
            };
            if let Some(half) = &row.capacity.half {
                let _ = writeln!(
                    page,
                    "| {store} {operation} p99 at half the rate it holds ({}/s) ≤ {} | {} | {} |",
                    thousands(f64::from(half.rate)),
                    millis(limit),
                    millis(half.p99),
                    met(half.p99 <= limit)
                );
            }
        }
        for (name, bytes) in &self.wasm_sizes {
            let mib = *bytes as f64 / MIB;
            let _ = writeln!(
                page,
                "| `{name}` ≤ 1 MiB | {mib:.2} MiB | {} |",
                met(mib <= 1.0)
            );
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// Every answer but `success`, with socket errors and reused lines: "none" if there are none.
fn other_answers(run: &WrkRun, success: &str) -> String {
    let mut others: Vec<String> = run
        .statuses
        .iter()
        .filter(|(label, _)| label.as_str() != success)
        .map(|(label, count)| format!("{label}: {}", thousands(*count as f64)))
        .collect();
    others.extend(
        run.socket_errors
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(kind, count)| format!("socket {kind}: {count}")),
    );
    if run.exhausted > 0 {
        others.push(format!(
            "{} requests repeated a line (request file too short)",
            thousands(run.exhausted as f64)
        ));
    }
    let total: u64 = run
        .statuses
        .iter()
        .filter(|(label, _)| label.as_str() != success)
        .map(|(_, count)| count)
        .sum();
    if others.is_empty() {
        "none".to_owned()
    } else if total > 0 {
        format!(
            "{} ({})",
            percent(total as f64 / run.requests.max(1) as f64),
            others.join(", ")
        )
    } else {
        others.join(", ")
    }
}

/// `12,345`: a count or rate, rounded.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// A latency in microseconds, as [`millis`] writes it.
pub fn micros(us: f64) -> String {
    millis(Duration::from_secs_f64(us.max(0.0) / 1e6))
}

/// `0.42 ms`, `5.31 ms`, `53.1 ms`, `531 ms`, `1.23 s`.
pub fn millis(latency: Duration) -> String {
    let ms = latency.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}
