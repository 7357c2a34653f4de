//! Open-loop load: requests sent at a fixed arrival rate whatever the answers
//! do, with latency measured from each request's scheduled instant.
//!
//! A closed loop (wrk) sends the next request only when one is answered, so
//! when the server stalls it simply sends less and the stall hides in a few
//! slow samples (coordinated omission). Here a request due at `t` is sent at
//! `t` (to within the timer's millisecond) and its latency counts from `t`,
//! including any wait for a connection.
//!
//! Connections: a pool of keep-alive connections; a request that finds none
//! idle opens a new one (kept afterwards), up to [`MAX_CONNECTIONS`], past
//! which it waits for one to come free. A request unanswered [`TIMEOUT`] after
//! its instant counts as a timeout.

use crate::client::{Call, Connection};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// At most this many connections at once.
pub const MAX_CONNECTIONS: usize = 1000;

/// A request unanswered this long after its instant is given up.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// A step breaks (and no higher rate runs) past these.
const MAX_ERROR_SHARE: f64 = 0.05;
const MAX_P99: Duration = Duration::from_secs(1);

/// How often a running step checks whether it broke, over all its answers
/// so far. Not more often: the host pauses for 50-100 ms now and then, and a
/// quarter-second window would call one pause a breakdown.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// One rate step's outcome.
#[derive(Debug, Clone)]
pub struct Step {
    /// Requests per second asked for.
    pub rate: u32,
    /// Requests sent; fewer than `rate` x the step's length if it broke early.
    pub sent: u64,
    /// How long sending lasted.
    pub seconds: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    /// Answers by label, plus "timeout" and "connection error".
    pub statuses: BTreeMap<String, u64>,
    /// Connections open at the end.
    pub connections: usize,
    /// Why the step broke, if it did.
    pub broke: Option<String>,
}

impl Step {
    /// Answers that are not 2xx, with timeouts and connection errors.
    pub fn errors(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(label, _)| !label.starts_with('2'))
            .map(|(_, count)| count)
            .sum()
    }
}

/// Runs each rate of `rates` for `length`, stopping after the first that
/// breaks. Request `n` (counted across steps) is `call(n)`.
pub async fn run(
    address: SocketAddr,
    rates: &[u32],
    length: Duration,
    call: impl Fn(usize) -> Call,
) -> Vec<Step> {
    let pool = Pool::new(address);
    let mut steps: Vec<Step> = Vec::new();
    let mut n = 0;
    for &rate in rates {
        let step = run_step(&pool, rate, length, &call, &mut n).await;
        eprintln!(
            "coupon-bench:     {rate}/s: sent {} in {:.1} s, p99 {}, answers {:?}{}",
            step.sent,
            step.seconds,
            crate::report::millis(step.p99),
            step.statuses,
            step.broke
                .as_deref()
                .map(|b| format!(", broke: {b}"))
                .unwrap_or_default()
        );
        let broke = step.broke.is_some();
        steps.push(step);
        if broke {
            break;
        }
    }
    steps
}

async fn run_step(
    pool: &Arc<Pool>,
    rate: u32,
    length: Duration,
    call: &impl Fn(usize) -> Call,
    n: &mut usize,
) -> Step {
    let samples = Arc::new(Mutex::new(Samples::default()));
    let total = (f64::from(rate) * length.as_secs_f64()) as u64;
    let start = Instant::now();
    let due = |i: u64| start + Duration::from_secs_f64(i as f64 / f64::from(rate));
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0;
    let mut next_check = start + CHECK_EVERY;
    let mut broke = None;
    while sent < total {
        tokio::time::sleep_until(due(sent)).await;
        let now = Instant::now();
        // Send everything due by now: the timer wakes at millisecond steps.
        while sent < total && due(sent) <= now {
            let (pool, samples, request) = (pool.clone(), samples.clone(), call(*n));
            let scheduled = due(sent);
            tasks.spawn(async move {
                let label = pool.send(&request, scheduled).await;
                let latency = scheduled.elapsed();
                lock(&samples).add(latency, label);
            });
            sent += 1;
            *n += 1;
        }
        if now >= next_check {
            next_check = now + CHECK_EVERY;
            broke = lock(&samples).broken();
            if broke.is_some() {
                break;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    while tasks.join_next().await.is_some() {}
    let mut samples = std::mem::take(&mut *lock(&samples));
    // Judge the whole step too: the slowest answers come after the last check.
    let broke = broke.or_else(|| samples.broken());
    samples.latencies.sort_unstable();
    Step {
        rate,
        sent,
        seconds,
        p50: samples.percentile(50.0),
        p99: samples.percentile(99.0),
        p999: samples.percentile(99.9),
        statuses: samples.statuses,
        connections: lock(&pool.idle).len(),
        broke,
    }
}

/// Keep-alive connections to one address.
struct Pool {
    address: SocketAddr,
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection in use.
    in_use: Semaphore,
}

impl Pool {
    fn new(address: SocketAddr) -> Arc<Pool> {
        Arc::new(Pool {
            address,
            idle: Mutex::new(Vec::new()),
            in_use: Semaphore::new(MAX_CONNECTIONS),
        })
    }

    /// Sends `call` on an idle connection or a new one, and labels the outcome.
    async fn send(&self, call: &Call, scheduled: Instant) -> String {
        let answer = tokio::time::timeout_at(scheduled + TIMEOUT, async {
            let _permit = self.in_use.acquire().await?;
            let idle = lock(&self.idle).pop();
            let mut connection = match idle {
                Some(connection) => connection,
                None => Connection::open(self.address).await?,
            };
            let answer = connection.send(call).await?;
            lock(&self.idle).push(connection);
            anyhow::Ok(answer)
        })
        .await;
        match answer {
            Ok(Ok(answer)) => answer.label(),
            Ok(Err(_)) => "connection error".to_owned(),
            Err(_) => format!("timeout ({} s)", TIMEOUT.as_secs()),
        }
    }
}

/// What the answers of a step looked like so far.
#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    statuses: BTreeMap<String, u64>,
    errors: u64,
}

impl Samples {
    fn add(&mut self, latency: Duration, label: String) {
        if !label.starts_with('2') {
            self.errors += 1;
        }
        self.latencies.push(latency);
        *self.statuses.entry(label).or_default() += 1;
    }

    /// Why the step counts as broken: too many errors or a p99 over a second.
    /// Judged only once there are enough answers for a p99.
    fn broken(&self) -> Option<String> {
        let answered = self.latencies.len();
        if answered < 100 {
            return None;
        }
        let error_share = self.errors as f64 / answered as f64;
        if error_share > MAX_ERROR_SHARE {
            return Some(format!("{:.1}% errors", error_share * 100.0));
        }
        let mut latencies = self.latencies.clone();
        latencies.sort_unstable();
        let p99 = latencies[(answered * 99).div_ceil(100) - 1];
        (p99 > MAX_P99).then(|| format!("p99 {} > 1 s", crate::report::millis(p99)))
    }

    /// The `q`th percentile of the sorted latencies.
    fn percentile(&self, q: f64) -> Duration {
        let count = self.latencies.len();
        if count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q / 100.0 * count as f64).ceil() as usize).clamp(1, count);
        self.latencies[rank - 1]
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
