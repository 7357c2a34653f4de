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

/// How often a running step checks whether it broke, over all its answers
/// so far: a step that broke stops early.
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

/// What a step must stay within to count as held.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Answers other than 2xx (sheds, timeouts, connection errors) over all.
    pub max_error_share: f64,
    pub max_p99: Duration,
}

/// Held: nothing shed, nothing failed, p99 within 50 ms.
pub const HELD: Limits = Limits {
    max_error_share: 0.0,
    max_p99: Duration::from_millis(50),
};

/// The rate an operation holds, found by bisection, and how it behaves at
/// half that rate.
#[derive(Debug, Clone)]
pub struct Capacity {
    /// Every step run, in order.
    pub probes: Vec<Step>,
    /// The highest rate held, if any was.
    pub held: Option<u32>,
    /// A step at half the rate held: the latency a service provisioned at
    /// twice its load sees.
    pub half: Option<Step>,
}

/// Finds the highest rate that holds ([`HELD`]) for `length`: doubles from
/// `first` until a step breaks, then halves the gap until it is within 10%
/// of the rate held, or `probes` steps have run. Then runs half that rate.
/// Request `n` (counted across steps) is `call(n)`.
pub async fn bisect(
    address: SocketAddr,
    first: u32,
    length: Duration,
    probes: usize,
    call: impl Fn(usize) -> Call,
) -> Capacity {
    let pool = Pool::new(address);
    let mut n = 0;
    let (mut held, mut broke): (Option<u32>, Option<u32>) = (None, None);
    let mut steps = Vec::new();
    let mut rate = first;
    while steps.len() < probes && rate > 0 {
        let step = run_step(&pool, rate, length, &call, &mut n, HELD).await;
        report(&step);
        if step.broke.is_none() {
            held = Some(rate);
        } else {
            broke = Some(rate);
        }
        steps.push(step);
        rate = match (held, broke) {
            (Some(held), None) => held.saturating_mul(2),
            (None, Some(broke)) => broke / 2,
            (Some(held), Some(broke)) if (broke - held) * 10 > held => held + (broke - held) / 2,
            _ => break,
        };
        // Let the queues a broken step left drain before the next.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let half = match held {
        Some(rate) if rate >= 2 => {
            let step = run_step(&pool, rate / 2, length, &call, &mut n, HELD).await;
            report(&step);
            Some(step)
        }
        _ => None,
    };
    Capacity {
        probes: steps,
        held,
        half,
    }
}

fn report(step: &Step) {
    eprintln!(
        "coupon-bench:     {}/s: sent {} in {:.1} s, p99 {}, answers {:?}{}",
        step.rate,
        step.sent,
        step.seconds,
        crate::report::millis(step.p99),
        step.statuses,
        step.broke
            .as_deref()
            .map(|b| format!(", broke: {b}"))
            .unwrap_or_default()
    );
}

async fn run_step(
    pool: &Arc<Pool>,
    rate: u32,
    length: Duration,
    call: &impl Fn(usize) -> Call,
    n: &mut usize,
    limits: Limits,
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
            broke = lock(&samples).broken(limits);
            if broke.is_some() {
                break;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    while tasks.join_next().await.is_some() {}
    let mut samples = std::mem::take(&mut *lock(&samples));
    // Judge the whole step too: the slowest answers come after the last check.
    let broke = broke.or_else(|| samples.broken(limits));
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

    /// Why the step counts as broken: errors or a p99 past `limits`. Judged
    /// only once there are enough answers for a p99.
    fn broken(&self, limits: Limits) -> Option<String> {
        let answered = self.latencies.len();
        if answered < 100 {
            return None;
        }
        let error_share = self.errors as f64 / answered as f64;
        if error_share > limits.max_error_share {
            return Some(format!("{:.1}% errors", error_share * 100.0));
        }
        let mut latencies = self.latencies.clone();
        latencies.sort_unstable();
        let p99 = latencies[(answered * 99).div_ceil(100) - 1];
        (p99 > limits.max_p99).then(|| {
            format!(
                "p99 {} > {}",
                crate::report::millis(p99),
                crate::report::millis(limits.max_p99)
            )
        })
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
