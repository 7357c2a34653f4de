//! Survive the spike: 500 clients, each on its own keep-alive connection, storm
//! one campaign of `coupon-host up` over real HTTP with claims (some retried
//! with the same `Idempotency-Key`, at once or afterwards), validations and
//! racing redemptions. Then every invariant of the API is checked exactly, from
//! what the clients saw and from the service's own answers: on the default
//! SQLite store, on Redis, on two hosts sharing Redis, and across a SIGKILL.
//!
//! The tests run one at a time; each prints its counts and timings:
//! `cargo test --release -p coupon-host --test load -- --nocapture`.

mod common;

use bytes::Bytes;
use common::{ADMIN, Host, Redis, scratch, user_token, write_redis_config};
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{Barrier, Notify, watch};

const CAMPAIGN: &str = "spike";
const STOCK: usize = 1_000;
/// The fixed discount of every coupon, in fen.
const FACE_VALUE: usize = 500;
const PER_USER_LIMIT: usize = 3;
/// Fewer users than claim attempts: most users claim again and again.
const USERS: usize = 2_000;
/// Clients, each with one keep-alive connection (split between the hosts).
const CONNECTIONS: usize = 500;
/// Claim attempts, each with its own idempotency key; demand (`USERS` × `PER_USER_LIMIT`) exceeds the stock.
const CLAIM_KEYS: usize = 20_000;
/// Of the claim keys, the percentage sent a second time while the first is in flight…
const RETRIED_AT_ONCE_PERCENT: u64 = 10;
/// …and the percentage sent again after the first answer.
const RETRIED_AFTER_PERCENT: u64 = 10;
/// Every order validated or redeemed: 88 yuan, over the 20 yuan minimum.
const ORDER_AMOUNT: usize = 8_800;
/// The crash tests kill the host once this many coupons were issued: while
/// claims in flight are taking stock and redemptions are racing.
const KILL_AFTER_ISSUED: usize = STOCK * 2 / 5;
/// How long a request may wait for a killed host to come back.
const OUTAGE_LIMIT: Duration = Duration::from_secs(20);
/// The clients must be done within this…
const STORM_LIMIT: Duration = Duration::from_secs(90);
/// …and everything, checks included, within this.
const TIME_LIMIT: Duration = Duration::from_secs(120);
/// Tries per request: the first, and one after each restart.
const TRIES: usize = 3;

/// The storms share two cores with the hosts: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn a_spike_on_sqlite_issues_exactly_the_stock_and_loses_nothing() {
    spike(Scenario {
        name: "sqlite",
        store: Store::Sqlite,
        hosts: 1,
        crash: false,
    });
}

#[test]
fn a_spike_on_redis_issues_exactly_the_stock_and_loses_nothing() {
    spike(Scenario {
        name: "redis",
        store: Store::Redis,
        hosts: 1,
        crash: false,
    });
}

#[test]
fn two_hosts_sharing_redis_issue_exactly_the_stock_between_them() {
    spike(Scenario {
        name: "redis-two-hosts",
        store: Store::Redis,
        hosts: 2,
        crash: false,
    });
}

#[test]
fn a_host_killed_mid_spike_on_sqlite_never_oversells_nor_loses_an_acknowledged_coupon() {
    spike(Scenario {
        name: "sqlite-crash",
        store: Store::Sqlite,
        hosts: 1,
        crash: true,
    });
}

#[test]
fn a_host_killed_mid_spike_on_redis_never_oversells_nor_loses_an_acknowledged_coupon() {
    spike(Scenario {
        name: "redis-crash",
        store: Store::Redis,
        hosts: 1,
        crash: true,
    });
}

#[derive(Clone, Copy, PartialEq)]
enum Store {
    Sqlite,
    Redis,
}

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    store: Store,
    hosts: usize,
    /// SIGKILL the first host mid-storm and restart it on the same store.
    crash: bool,
}

/// Runs one storm against fresh hosts and a fresh store, prints what
/// happened, and fails on any broken invariant.
fn spike(scenario: Scenario) {
    let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let since = Instant::now();
    let dir = scratch(&format!("load-{}", scenario.name));
    let redis = (scenario.store == Store::Redis).then(Redis::start);
    let mut args = vec!["--state-dir".to_owned(), utf8(&dir)];
    if let Some(redis) = &redis {
        let config = dir.join("runtime-config.toml");
        write_redis_config(&config, redis.port);
        args.extend(["--runtime-config-file".to_owned(), utf8(&config)]);
    }
    let hosts: Vec<Host> = (0..scenario.hosts).map(|_| start(&args)).collect();
    create_campaign(&hosts[0]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let hosts = Arc::new(Mutex::new(hosts));
    let observed = runtime.block_on(async {
        tokio::time::timeout(TIME_LIMIT, storm(scenario, hosts.clone(), args, since))
            .await
            .unwrap_or_else(|_| panic!("the {} storm took over {TIME_LIMIT:?}", scenario.name))
    });
    let hosts = std::mem::take(&mut *lock(&hosts));
    let stats: Vec<Value> = hosts
        .iter()
        .map(|host| {
            let path = format!("/campaigns/{CAMPAIGN}");
            let (status, campaign) = host.request("GET", &path, ADMIN, &[], None);
            assert_eq!(status, 200, "GET {path}: {campaign}");
            campaign["stats"].clone()
        })
        .collect();
    let verdict = check(&scenario, &observed, &stats);
    println!("{}", verdict.report);
    for host in hosts {
        host.stop();
    }
    assert!(
        verdict.violations.is_empty(),
        "{}: {} invariant(s) broken:\n{}",
        scenario.name,
        verdict.violations.len(),
        verdict.violations.join("\n")
    );
}

fn utf8(path: &std::path::Path) -> String {
    path.to_str().expect("a UTF-8 path").to_owned()
}

fn start(args: &[String]) -> Host {
    Host::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A campaign whose window holds now and whose coupons never expire; the
/// budget (stock × face value) is there but never the binding limit.
fn create_campaign(host: &Host) {
    let now = coupon_core::Timestamp::now().as_second();
    let at = |s: i64| {
        coupon_core::Timestamp::from_second(s)
            .expect("a time")
            .to_string()
    };
    let campaign = json!({
        "id": CAMPAIGN, "name": "Survive the spike", "currency": "CNY",
        "discount": {"kind": "fixed", "amount": FACE_VALUE}, "min_order_amount": 2000,
        "stock": STOCK, "budget": STOCK * FACE_VALUE, "per_user_limit": PER_USER_LIMIT,
        "redeemable_by_users": true,
        "claim_starts_at": at(now - 3600), "claim_ends_at": at(now + 3600),
        "time_zone": "Asia/Shanghai", "expiry": {"kind": "end_of_month", "month": "9000-01"}
    });
    let (status, body) = host.request("POST", "/campaigns", ADMIN, &[], Some(campaign));
    assert_eq!(status, 201, "POST /campaigns: {body}");
}

fn user_name(user: usize) -> String {
    format!("user-{user}")
}

fn order_id(coupon: usize, order: char) -> String {
    format!("order-{coupon}-{order}")
}

/// SplitMix64: the storm's plan is the same on every run.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One request a client makes.
#[derive(Clone, Copy, Debug)]
enum Request {
    /// `POST /claims` with `Idempotency-Key: key-{key}`.
    Claim { key: usize },
    /// `POST /validations` of the n-th coupon issued.
    Validate { coupon: usize },
    /// `POST /redemptions` of the n-th coupon issued by order `order`.
    Redeem { coupon: usize, order: char },
}

/// A unit of work a client takes from the queue.
struct Job {
    request: Request,
    /// Shared with the job just behind it in the queue: both are sent at once.
    /// Only one such pair per queue can be half taken, so with three clients
    /// or more someone is always free to take the other half.
    partner: Option<Arc<Barrier>>,
    /// Sent again on the same connection once the first answer is in.
    again_after: bool,
}

impl Job {
    fn new(request: Request) -> Job {
        Job {
            request,
            partner: None,
            again_after: false,
        }
    }

    fn again_after(self) -> Job {
        Job {
            again_after: true,
            ..self
        }
    }

    /// Two jobs sent at the same moment by two clients.
    fn at_once(first: Job, second: Job) -> [Job; 2] {
        let barrier = Some(Arc::new(Barrier::new(2)));
        [
            Job {
                partner: barrier.clone(),
                ..first
            },
            Job {
                partner: barrier,
                ..second
            },
        ]
    }
}

/// What is done with the n-th coupon issued, while the claims go on: every one
/// is validated, three in four are redeemed.
fn follow_ups(coupon: usize) -> Vec<Job> {
    let validate = Job::new(Request::Validate { coupon });
    let redeem = |order| Job::new(Request::Redeem { coupon, order });
    match coupon % 4 {
        0 => vec![validate],
        // Two orders race for it; each is retried afterwards.
        1 => {
            let [a, b] = Job::at_once(redeem('a').again_after(), redeem('b').again_after());
            vec![validate, a, b]
        }
        // One order sent twice at once, and once more afterwards.
        2 => {
            let [a, again] = Job::at_once(redeem('a').again_after(), redeem('a'));
            vec![validate, a, again]
        }
        // One order, retried afterwards.
        _ => vec![validate, redeem('a').again_after()],
    }
}

/// The claims of the storm, in order: `(user of each key, jobs)`.
fn claim_plan() -> (Vec<usize>, Vec<Job>) {
    let mut users = Vec::with_capacity(CLAIM_KEYS);
    let mut jobs = Vec::with_capacity(CLAIM_KEYS * 6 / 5);
    for key in 0..CLAIM_KEYS {
        let roll = mix(key as u64);
        users.push((roll % USERS as u64) as usize);
        let claim = Job::new(Request::Claim { key });
        match (roll >> 32) % 100 {
            r if r < RETRIED_AT_ONCE_PERCENT => {
                jobs.extend(Job::at_once(claim, Job::new(Request::Claim { key })))
            }
            r if r < RETRIED_AT_ONCE_PERCENT + RETRIED_AFTER_PERCENT => {
                jobs.push(claim.again_after())
            }
            _ => jobs.push(claim),
        }
    }
    (users, jobs)
}

/// Where the clients send their requests; `epoch` counts restarts.
#[derive(Clone)]
struct Target {
    epoch: u64,
    addresses: Vec<String>,
}

/// One answer as the client saw it.
#[derive(Clone)]
struct Reply {
    status: u16,
    /// `Idempotent-Replayed: true`
    replayed: bool,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("-")
            .to_owned()
    }

    fn text(&self) -> String {
        format!("{} {}", self.status, String::from_utf8_lossy(&self.body))
    }
}

/// A request ready to send.
struct Call {
    method: Method,
    path: String,
    token: String,
    idempotency_key: Option<String>,
    body: Option<String>,
}

impl Call {
    fn to_http(&self, address: &str) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::builder()
            .method(self.method.clone())
            .uri(&self.path)
            .header(http::header::HOST, address)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            );
        if let Some(key) = &self.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let body = match &self.body {
            Some(body) => {
                request = request.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(body.clone())
            }
            None => Bytes::new(),
        };
        request.body(Full::new(body)).expect("a valid request")
    }
}

/// One client's keep-alive connection, reopened after an error or a restart.
struct Connection {
    /// Which of the target's addresses it talks to.
    host: usize,
    epoch: u64,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    fn new(host: usize) -> Connection {
        Connection {
            host,
            epoch: 0,
            sender: None,
        }
    }

    /// The answer, or why the connection failed.
    async fn send(
        &mut self,
        target: &watch::Receiver<Target>,
        call: &Call,
    ) -> Result<Reply, String> {
        let (epoch, address) = {
            let target = target.borrow();
            let address = target.addresses[self.host % target.addresses.len()].clone();
            (target.epoch, address)
        };
        if self.epoch != epoch {
            self.sender = None;
            self.epoch = epoch;
        }
        let result = self.try_send(&address, call).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn try_send(&mut self, address: &str, call: &Call) -> Result<Reply, String> {
        let sender = match &mut self.sender {
            Some(sender) => sender,
            None => self.sender.insert(connect(address).await?),
        };
        let failed = |e: hyper::Error| format!("{} {} to {address}: {e}", call.method, call.path);
        sender.ready().await.map_err(failed)?;
        let response = sender
            .send_request(call.to_http(address))
            .await
            .map_err(failed)?;
        let status = response.status().as_u16();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true");
        let body = response.into_body().collect().await.map_err(failed)?;
        Ok(Reply {
            status,
            replayed,
            body: body.to_bytes(),
        })
    }
}

async fn connect(address: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect to {address}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {address}: {e}"))?;
    tokio::spawn(async move {
        // Ends with the connection; its errors reach the request that was on it.
        let _ = connection.await;
    });
    Ok(sender)
}

/// A request that ended in a connection error.
struct Lost {
    request: Request,
    error: String,
}

/// A coupon some client got a 201 for, and the user the claim was for.
struct Issued {
    code: String,
    user: usize,
}

#[derive(Default)]
struct Coupons {
    index: HashMap<String, usize>,
    list: Vec<Issued>,
}

#[derive(Default)]
struct Queue {
    /// Validations and redemptions of coupons already issued: taken first.
    follow_ups: VecDeque<Job>,
    claims: VecDeque<Job>,
}

/// What every client of a storm shares: the plan, the queue, and what was seen.
struct Storm {
    /// The user each claim key claims for.
    users_of_keys: Vec<usize>,
    tokens: Vec<String>,
    queue: Mutex<Queue>,
    /// Jobs queued or running; the clients stop when it reaches 0.
    unfinished: AtomicUsize,
    /// Wakes idle clients when jobs are queued or the last one is done.
    wake: Notify,
    coupons: Mutex<Coupons>,
    /// Distinct coupons seen so far: what the crash tests wait for.
    issued: AtomicUsize,
    /// Requests sent and not yet answered.
    in_flight: AtomicUsize,
    /// Answers `503 overloaded` (the host shedding load), each retried.
    shed: AtomicUsize,
    /// Every answer, in the order it arrived.
    seen: Mutex<Vec<(Request, Reply)>>,
    lost: Mutex<Vec<Lost>>,
    target: watch::Receiver<Target>,
    restarts_expected: bool,
    /// The first 5xx, which ends the storm at once.
    first_server_error: OnceLock<String>,
    server_error: Notify,
}

impl Storm {
    fn push(&self, jobs: Vec<Job>, follow_up: bool) {
        self.unfinished.fetch_add(jobs.len(), Ordering::SeqCst);
        let mut queue = lock(&self.queue);
        if follow_up {
            queue.follow_ups.extend(jobs);
        } else {
            queue.claims.extend(jobs);
        }
        drop(queue);
        self.wake.notify_waiters();
    }

    /// The next job, or `None` once every job is done.
    async fn next_job(&self) -> Option<Job> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut queue = lock(&self.queue);
                if let Some(job) = queue.follow_ups.pop_front() {
                    return Some(job);
                }
                if let Some(job) = queue.claims.pop_front() {
                    return Some(job);
                }
            }
            if self.unfinished.load(Ordering::SeqCst) == 0 {
                return None;
            }
            notified.await;
        }
    }

    fn finish_job(&self) {
        if self.unfinished.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.wake.notify_waiters();
        }
    }

    /// Where a storm stands: for the message of one that does not end.
    fn progress(&self) -> String {
        let mut answers: BTreeMap<(u16, String), usize> = BTreeMap::new();
        for (_, reply) in lock(&self.seen).iter() {
            *answers
                .entry((reply.status, reply.error_code()))
                .or_default() += 1;
        }
        format!(
            "{} coupons issued; {} jobs unfinished, {} requests in flight, {} connection errors; answers so far: {answers:?}",
            self.issued.load(Ordering::SeqCst),
            self.unfinished.load(Ordering::SeqCst),
            self.in_flight.load(Ordering::SeqCst),
            lock(&self.lost).len()
        )
    }

    fn coupon(&self, coupon: usize) -> (String, usize) {
        let coupons = lock(&self.coupons);
        let issued = &coupons.list[coupon];
        (issued.code.clone(), issued.user)
    }

    fn call(&self, request: Request) -> Call {
        let post = |path: &str, user: usize, body: Value| Call {
            method: Method::POST,
            path: path.to_owned(),
            token: self.tokens[user].clone(),
            idempotency_key: None,
            body: Some(body.to_string()),
        };
        match request {
            Request::Claim { key } => Call {
                idempotency_key: Some(format!("key-{key}")),
                ..post(
                    "/claims",
                    self.users_of_keys[key],
                    json!({"campaign_id": CAMPAIGN}),
                )
            },
            Request::Validate { coupon } => {
                let (code, user) = self.coupon(coupon);
                let order = json!({"amount": ORDER_AMOUNT, "currency": "CNY"});
                post("/validations", user, json!({"code": code, "order": order}))
            }
            Request::Redeem { coupon, order } => {
                let (code, user) = self.coupon(coupon);
                let order = json!({"id": order_id(coupon, order), "amount": ORDER_AMOUNT, "currency": "CNY"});
                post("/redemptions", user, json!({"code": code, "order": order}))
            }
        }
    }

    /// Sends `request` and records the answer; after a connection error during
    /// a crash test, waits for the restart and sends it again, unchanged, and
    /// after `503 overloaded` backs off and sends it again.
    async fn send(&self, connection: &mut Connection, request: Request) {
        let call = self.call(request);
        let mut tries = 0;
        while tries < TRIES {
            let epoch = self.target.borrow().epoch;
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let result = connection.send(&self.target, &call).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            match result {
                Ok(reply) if reply.status == 503 && reply.error_code() == "overloaded" => {
                    // Shed before it started: wait as Retry-After says (1 s),
                    // plus up to half a second of jitter, as a client should.
                    let shed = self.shed.fetch_add(1, Ordering::SeqCst);
                    let jitter = (shed as u64).wrapping_mul(7_919) % 500;
                    tokio::time::sleep(Duration::from_millis(1_000 + jitter)).await;
                }
                Ok(reply) => return self.record(request, reply),
                Err(error) => {
                    lock(&self.lost).push(Lost { request, error });
                    tries += 1;
                    if !self.restarted_since(epoch).await {
                        return;
                    }
                }
            }
        }
    }

    async fn restarted_since(&self, epoch: u64) -> bool {
        if !self.restarts_expected {
            return false;
        }
        let mut target = self.target.clone();
        let restarted = target.wait_for(|target| target.epoch > epoch);
        matches!(
            tokio::time::timeout(OUTAGE_LIMIT, restarted).await,
            Ok(Ok(_))
        )
    }

    fn record(&self, request: Request, reply: Reply) {
        if reply.status >= 500 {
            let _ = self
                .first_server_error
                .set(format!("{request:?} answered {}", reply.text()));
            self.server_error.notify_one();
        }
        if let Request::Claim { key } = request
            && reply.status == 201
            && let Some(code) = reply.json()["code"].as_str()
        {
            self.on_issued(code, self.users_of_keys[key]);
        }
        lock(&self.seen).push((request, reply));
    }

    /// The first time a code is seen, queues what is done with it.
    fn on_issued(&self, code: &str, user: usize) {
        let coupon = {
            let mut coupons = lock(&self.coupons);
            if coupons.index.contains_key(code) {
                return;
            }
            let coupon = coupons.list.len();
            coupons.index.insert(code.to_owned(), coupon);
            coupons.list.push(Issued {
                code: code.to_owned(),
                user,
            });
            coupon
        };
        self.issued.fetch_add(1, Ordering::SeqCst);
        self.push(follow_ups(coupon), true);
    }
}

/// A client: takes jobs until none are left.
async fn client(storm: Arc<Storm>, host: usize) {
    let mut connection = Connection::new(host);
    while let Some(job) = storm.next_job().await {
        if let Some(partner) = &job.partner {
            partner.wait().await;
        }
        storm.send(&mut connection, job.request).await;
        if job.again_after {
            storm.send(&mut connection, job.request).await;
        }
        storm.finish_job();
    }
}

/// Runs `clients` clients, spread over the hosts, until every job is done.
/// Stops them all at the first 5xx: the storm has failed, no need to sit out
/// the host's 30 s request timeouts.
async fn run_clients(storm: &Arc<Storm>, clients: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        tasks.spawn(client(storm.clone(), i));
    }
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                Some(result) => result.expect("a client panicked"),
                None => return,
            },
            () = storm.server_error.notified() => {
                tasks.abort_all();
                panic!(
                    "the host answered 5xx: {}\nat that point: {}",
                    storm.first_server_error.get().map_or("?", String::as_str),
                    storm.progress()
                );
            }
        }
    }
}

/// The SIGKILL of a crash test.
struct Crash {
    issued_at_kill: usize,
    in_flight_at_kill: usize,
    outage: Duration,
}

/// Waits until `KILL_AFTER_ISSUED` coupons were issued, SIGKILLs the first
/// host, restarts it on the same store and points the clients at it.
async fn kill_and_restart(
    storm: Arc<Storm>,
    hosts: Arc<Mutex<Vec<Host>>>,
    args: Vec<String>,
    target: watch::Sender<Target>,
) -> Option<Crash> {
    while storm.issued.load(Ordering::SeqCst) < KILL_AFTER_ISSUED {
        if storm.unfinished.load(Ordering::SeqCst) == 0 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let host = lock(&hosts).remove(0);
    let in_flight_at_kill = storm.in_flight.load(Ordering::SeqCst);
    let issued_at_kill = storm.issued.load(Ordering::SeqCst);
    let killed = Instant::now();
    // Dropping a Host is SIGKILL: no graceful stop, requests die mid-way.
    tokio::task::spawn_blocking(move || drop(host))
        .await
        .expect("SIGKILL the host");
    let host = tokio::task::spawn_blocking(move || start(&args))
        .await
        .expect("the host restarts on the same store");
    let outage = killed.elapsed();
    target.send_modify(|target| {
        target.epoch += 1;
        target.addresses[0] = host.address().to_owned();
    });
    lock(&hosts).insert(0, host);
    Some(Crash {
        issued_at_kill,
        in_flight_at_kill,
        outage,
    })
}

/// Everything the clients saw, and the service's answers read back afterwards.
struct Observed {
    seen: Vec<(Request, Reply)>,
    lost: Vec<Lost>,
    users_of_keys: Vec<usize>,
    coupons: Vec<Issued>,
    /// `GET /coupons/{code}` by its holder, for each of `coupons`.
    read_back: Vec<Result<Reply, String>>,
    /// Claim keys that had no decisive answer after the storm, sent once more.
    probed: usize,
    /// Answers `503 overloaded`, each backed off and sent again.
    shed: usize,
    storm_time: Duration,
    /// From the start of the test to the end of the read-back.
    total_time: Duration,
    crash: Option<Crash>,
}

/// The storm, the probe of undecided keys, and the read-back of every coupon.
async fn storm(
    scenario: Scenario,
    hosts: Arc<Mutex<Vec<Host>>>,
    args: Vec<String>,
    since: Instant,
) -> Observed {
    let addresses = lock(&hosts)
        .iter()
        .map(|h| h.address().to_owned())
        .collect();
    let (target_tx, target) = watch::channel(Target {
        epoch: 0,
        addresses,
    });
    let (users_of_keys, claims) = claim_plan();
    let storm = Arc::new(Storm {
        users_of_keys,
        tokens: (0..USERS).map(|u| user_token(&user_name(u))).collect(),
        queue: Mutex::default(),
        unfinished: AtomicUsize::new(0),
        wake: Notify::new(),
        coupons: Mutex::default(),
        issued: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        shed: AtomicUsize::new(0),
        seen: Mutex::new(Vec::with_capacity(CLAIM_KEYS * 3 / 2)),
        lost: Mutex::default(),
        target: target.clone(),
        restarts_expected: scenario.crash,
        first_server_error: OnceLock::new(),
        server_error: Notify::new(),
    });
    storm.push(claims, false);
    let started = Instant::now();
    let crash = scenario.crash.then(|| {
        tokio::spawn(kill_and_restart(
            storm.clone(),
            hosts.clone(),
            args,
            target_tx,
        ))
    });
    if tokio::time::timeout(STORM_LIMIT, run_clients(&storm, CONNECTIONS))
        .await
        .is_err()
    {
        panic!(
            "the {} storm was not over after {STORM_LIMIT:?}: {}",
            scenario.name,
            storm.progress()
        );
    }
    let storm_time = started.elapsed();
    let crash = match crash {
        Some(task) => Some(
            task.await
                .expect("the kill and restart")
                .expect("the host was killed mid-storm"),
        ),
        None => None,
    };
    // Keys whose every answer was `request_in_progress` or a lost connection:
    // once more, as a client would; after a crash some stay in progress for good.
    let undecided = undecided_keys(&lock(&storm.seen), CLAIM_KEYS);
    let probed = undecided.len();
    storm.push(
        undecided
            .into_iter()
            .map(|key| Job::new(Request::Claim { key }))
            .collect(),
        false,
    );
    run_clients(&storm, 32).await;
    let coupons = std::mem::take(&mut *lock(&storm.coupons)).list;
    let read_back = read_back(&storm, &coupons).await;
    let storm = Arc::into_inner(storm).expect("every client is done");
    Observed {
        shed: storm.shed.into_inner(),
        seen: storm
            .seen
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner),
        lost: storm
            .lost
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner),
        users_of_keys: storm.users_of_keys,
        coupons,
        read_back,
        probed,
        storm_time,
        total_time: since.elapsed(),
        crash,
    }
}

/// Claim keys with no decisive answer (a coupon, `sold_out`, `per_user_limit_reached`).
fn undecided_keys(seen: &[(Request, Reply)], keys: usize) -> Vec<usize> {
    let mut decided = vec![false; keys];
    for (request, reply) in seen {
        if let Request::Claim { key } = request
            && (reply.status == 201
                || matches!(
                    reply.error_code().as_str(),
                    "sold_out" | "per_user_limit_reached"
                ))
        {
            decided[*key] = true;
        }
    }
    (0..keys).filter(|&key| !decided[key]).collect()
}

/// `GET /coupons/{code}` of every coupon by its holder, 32 at a time.
async fn read_back(storm: &Arc<Storm>, coupons: &[Issued]) -> Vec<Result<Reply, String>> {
    const READERS: usize = 32;
    let calls: Vec<Call> = coupons
        .iter()
        .map(|c| Call {
            method: Method::GET,
            path: format!("/coupons/{}", c.code),
            token: storm.tokens[c.user].clone(),
            idempotency_key: None,
            body: None,
        })
        .collect();
    let calls = Arc::new(calls);
    let readers: Vec<_> = (0..READERS)
        .map(|reader| {
            let (calls, target) = (calls.clone(), storm.target.clone());
            tokio::spawn(async move {
                let mut connection = Connection::new(reader);
                let mut replies = Vec::new();
                for i in (reader..calls.len()).step_by(READERS) {
                    replies.push((i, connection.send(&target, &calls[i]).await));
                }
                replies
            })
        })
        .collect();
    let mut replies: Vec<Option<Result<Reply, String>>> =
        (0..coupons.len()).map(|_| None).collect();
    for reader in readers {
        for (i, reply) in reader.await.expect("a reader panicked") {
            replies[i] = Some(reply);
        }
    }
    replies
        .into_iter()
        .map(|r| r.expect("every coupon read"))
        .collect()
}

/// The printed report, and every broken invariant.
struct Verdict {
    report: String,
    violations: Vec<String>,
}

/// Checks the invariants of the API on what was observed; `stats` is the
/// campaign's `stats` as each host answered it after the storm.
fn check(scenario: &Scenario, observed: &Observed, stats: &[Value]) -> Verdict {
    let crashed = observed.crash.is_some();
    let mut violations = Vec::new();
    let mut violation = |text: String| violations.push(text);

    // Every answer, by operation, status and code.
    let mut tally: BTreeMap<(&str, u16, String), usize> = BTreeMap::new();
    for (request, reply) in &observed.seen {
        let operation = match request {
            Request::Claim { .. } => "claim",
            Request::Validate { .. } => "validate",
            Request::Redeem { .. } => "redeem",
        };
        let label = match (request, reply.status) {
            (Request::Validate { .. }, 200) => {
                let body = reply.json();
                match body["valid"].as_bool() {
                    Some(true) => "valid".to_owned(),
                    _ => format!("invalid: {}", body["reason"].as_str().unwrap_or("-")),
                }
            }
            (_, 200..=299) if reply.replayed => "idempotent-replayed".to_owned(),
            (Request::Redeem { .. }, 200) => "replay of the order".to_owned(),
            (_, 200..=299) => String::new(),
            _ => reply.error_code(),
        };
        *tally.entry((operation, reply.status, label)).or_default() += 1;
        if reply.status >= 500 {
            violation(format!("5xx: {request:?} answered {}", reply.text()));
        }
    }
    // Sent: answered, or lost with the connection.
    let claim_requests = observed
        .seen
        .iter()
        .map(|(r, _)| r)
        .chain(observed.lost.iter().map(|l| &l.request))
        .filter(|r| matches!(r, Request::Claim { .. }))
        .count();
    let requests = observed.seen.len() + observed.lost.len();
    let lost_claims: BTreeSet<usize> = observed
        .lost
        .iter()
        .filter_map(|l| match l.request {
            Request::Claim { key } => Some(key),
            _ => None,
        })
        .collect();
    if !crashed && !observed.lost.is_empty() {
        violation(format!(
            "{} requests lost their connection without a crash, e.g. {:?}: {}",
            observed.lost.len(),
            observed.lost[0].request,
            observed.lost[0].error
        ));
    }

    // Claims: a retry with the same key gets the same answer; a code belongs
    // to one key and one user.
    let mut outcomes: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut history: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut first_answers: BTreeMap<usize, usize> = BTreeMap::new();
    let mut codes: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for (request, reply) in &observed.seen {
        let Request::Claim { key } = *request else {
            continue;
        };
        let user = user_name(observed.users_of_keys[key]);
        let error = reply.error_code();
        let outcome = match (reply.status, error.as_str()) {
            (201, _) => {
                let coupon = reply.json();
                let Some(code) = coupon["code"].as_str() else {
                    violation(format!("key-{key}: a 201 without a code: {}", reply.text()));
                    continue;
                };
                if coupon["user_id"] != user.as_str() || coupon["campaign_id"] != CAMPAIGN {
                    violation(format!("key-{key} of {user}: 201 with {coupon}"));
                }
                codes.entry(code.to_owned()).or_default().insert(key);
                if !reply.replayed {
                    *first_answers.entry(key).or_default() += 1;
                }
                Some(format!("201 {code}"))
            }
            (410, "sold_out") | (409, "per_user_limit_reached") => {
                Some(format!("{} {error}", reply.status))
            }
            (409, "request_in_progress") => None,
            _ => {
                violation(format!("key-{key}: unexpected {}", reply.text()));
                continue;
            }
        };
        history
            .entry(key)
            .or_default()
            .push(format!("{} {error}", reply.status));
        if let Some(outcome) = outcome {
            outcomes.entry(key).or_default().insert(outcome);
        }
    }
    let mut same_key_other_answer = 0;
    for (key, answers) in &outcomes {
        if answers.len() > 1 {
            same_key_other_answer += 1;
            violation(format!(
                "key-{key} of {} was answered {} (in that order): a retry with the same key and body must get the same answer",
                user_name(observed.users_of_keys[*key]),
                history[key].join(", then ")
            ));
        }
        let unmarked = first_answers.get(key).copied().unwrap_or(0);
        if unmarked > 1 {
            violation(format!(
                "key-{key}: {unmarked} 201s without `idempotent-replayed: true`"
            ));
        }
        let issued = answers.iter().any(|a| a.starts_with("201"));
        if issued && unmarked == 0 && !lost_claims.contains(key) {
            violation(format!(
                "key-{key}: every 201 says replayed, none was the first"
            ));
        }
    }
    let stuck: Vec<usize> = (0..CLAIM_KEYS)
        .filter(|key| !outcomes.contains_key(key))
        .collect();
    let mut per_user: BTreeMap<usize, usize> = BTreeMap::new();
    for (code, keys) in &codes {
        if keys.len() > 1 {
            violation(format!("{code} was issued to several keys: {keys:?}"));
        }
        for key in keys {
            *per_user.entry(observed.users_of_keys[*key]).or_default() += 1;
        }
    }
    let over_limit: Vec<_> = per_user
        .iter()
        .filter(|(_, n)| **n > PER_USER_LIMIT)
        .collect();
    if !over_limit.is_empty() {
        violation(format!(
            "{} users hold more than {PER_USER_LIMIT} coupons: {over_limit:?}",
            over_limit.len()
        ));
    }
    let issued = codes.len();
    let shortfall = STOCK.saturating_sub(issued);
    if issued > STOCK {
        violation(format!(
            "oversold: {issued} coupons issued of a stock of {STOCK}"
        ));
    }
    if !crashed && shortfall > 0 {
        violation(format!(
            "shortfall: {issued} coupons issued of {STOCK} while demand exceeded the stock"
        ));
    }
    // A key may have met only `request_in_progress` in the storm (its user's
    // other claims were writing the last positions); asked once more after
    // it, every key must be decided (below).
    if !crashed && !stuck.is_empty() {
        violation(format!(
            "{} claim keys never got a decisive answer, e.g. key-{}",
            stuck.len(),
            stuck[0]
        ));
    }
    // A claim in flight at the kill may have taken a unit and died before
    // writing its coupon; nothing else may be missing. Each such claim lost its
    // connection, and a connection carries one request at a time.
    let interrupted = lost_claims.len().min(CONNECTIONS);
    if crashed && shortfall > interrupted {
        violation(format!(
            "shortfall {shortfall} exceeds the {interrupted} claims interrupted by the kill"
        ));
    }

    // Redemptions: at most one order per coupon, once; replays identical.
    let mut winners: BTreeMap<usize, BTreeSet<char>> = BTreeMap::new();
    let mut created: BTreeMap<usize, Vec<&Bytes>> = BTreeMap::new();
    let mut replays: BTreeMap<usize, Vec<&Bytes>> = BTreeMap::new();
    let mut attempted: BTreeSet<usize> = BTreeSet::new();
    let mut refused: Vec<(usize, char, String)> = Vec::new();
    for (request, reply) in &observed.seen {
        let Request::Redeem { coupon, order } = *request else {
            continue;
        };
        attempted.insert(coupon);
        match (reply.status, reply.error_code().as_str()) {
            (201, _) => created.entry(coupon).or_default().push(&reply.body),
            (200, _) => replays.entry(coupon).or_default().push(&reply.body),
            (409, code @ ("already_redeemed" | "request_in_progress")) => {
                refused.push((coupon, order, code.to_owned()));
                continue;
            }
            _ => {
                violation(format!(
                    "redemption of coupon {coupon} by {}: unexpected {}",
                    order_id(coupon, order),
                    reply.text()
                ));
                continue;
            }
        }
        winners.entry(coupon).or_default().insert(order);
        let body = reply.json();
        let code = &observed.coupons[coupon].code;
        let expected = (
            code.as_str(),
            order_id(coupon, order),
            FACE_VALUE,
            ORDER_AMOUNT - FACE_VALUE,
        );
        let got = (
            body["code"].as_str().unwrap_or("-"),
            body["order_id"].as_str().unwrap_or("-").to_owned(),
            body["discount_amount"].as_u64().unwrap_or(0) as usize,
            body["payable_amount"].as_u64().unwrap_or(0) as usize,
        );
        if got != expected {
            violation(format!(
                "redemption of {code}: {body}, expected {expected:?}"
            ));
        }
    }
    for (coupon, orders) in &winners {
        if orders.len() > 1 {
            violation(format!(
                "coupon {coupon} redeemed by several orders: {orders:?}"
            ));
        }
    }
    for (coupon, order, code) in &refused {
        if code == "already_redeemed" && winners.get(coupon).is_some_and(|w| w.contains(order)) {
            violation(format!(
                "{} got already_redeemed for the coupon it redeemed",
                order_id(*coupon, *order)
            ));
        }
    }
    for &coupon in &attempted {
        let first = created.get(&coupon).map_or(0, Vec::len);
        if first > 1 || (first == 0 && !crashed) {
            violation(format!("coupon {coupon}: {first} redemptions answered 201"));
        }
        let bodies: BTreeSet<&Bytes> = created
            .get(&coupon)
            .into_iter()
            .chain(replays.get(&coupon))
            .flatten()
            .copied()
            .collect();
        if bodies.len() > 1 {
            violation(format!(
                "coupon {coupon}: the redemption's replays differ: {bodies:?}"
            ));
        }
    }
    let winner = |coupon: usize| {
        winners
            .get(&coupon)
            .and_then(|w| w.first())
            .map(|order| order_id(coupon, *order))
    };

    // Read back: every coupon a client got a 201 for is there, with its holder and its end.
    let mut redeemed_in_store = 0;
    let mut unredeemable = 0;
    let mut redeemed_unacknowledged = 0;
    let mut redeemed_in_the_end = BTreeSet::new();
    for (coupon, (issued, reply)) in observed.coupons.iter().zip(&observed.read_back).enumerate() {
        let reply = match reply {
            Ok(reply) if reply.status == 200 => reply,
            Ok(reply) => {
                violation(format!(
                    "lost: GET /coupons/{} answered {}",
                    issued.code,
                    reply.text()
                ));
                continue;
            }
            Err(error) => {
                violation(format!("GET /coupons/{}: {error}", issued.code));
                continue;
            }
        };
        let body = reply.json();
        if body["code"] != issued.code.as_str()
            || body["user_id"] != user_name(issued.user).as_str()
            || body["campaign_id"] != CAMPAIGN
        {
            violation(format!("coupon {coupon} read back as {body}"));
        }
        let state = body["state"].as_str().unwrap_or("-");
        let order = body["order_id"].as_str();
        if state == "redeemed" {
            redeemed_in_the_end.insert(coupon);
        }
        match (state, winner(coupon)) {
            ("redeemed", Some(w)) if order == Some(w.as_str()) => redeemed_in_store += 1,
            ("redeemed", None) if crashed && attempted.contains(&coupon) => {
                redeemed_in_store += 1;
                redeemed_unacknowledged += 1;
            }
            ("issued", None) if !attempted.contains(&coupon) => {}
            ("issued", None) if crashed => unredeemable += 1,
            _ => violation(format!(
                "coupon {coupon} is {state} (order {order:?}) but the clients saw {:?} win",
                winner(coupon)
            )),
        }
    }

    // Validations: valid, or already redeemed by then.
    for (request, reply) in &observed.seen {
        let Request::Validate { coupon } = *request else {
            continue;
        };
        let body = reply.json();
        let valid = json!({"valid": true, "discount_amount": FACE_VALUE, "payable_amount": ORDER_AMOUNT - FACE_VALUE});
        let as_expected = reply.status == 200
            && match body["valid"].as_bool() {
                Some(true) => {
                    body["discount_amount"] == valid["discount_amount"]
                        && body["payable_amount"] == valid["payable_amount"]
                }
                _ => {
                    body == json!({"valid": false, "reason": "already_redeemed"})
                        && redeemed_in_the_end.contains(&coupon)
                }
            };
        if !as_expected {
            violation(format!("validation of coupon {coupon}: {}", reply.text()));
        }
    }

    // The campaign's stats, from every host.
    // The discount given is what the sweep has settled: every redemption
    // gave the face value, and those not settled yet are counted apart.
    let (given, unsettled) = (
        stats[0]["discount_given"].as_u64().unwrap_or(u64::MAX) as usize,
        stats[0]["discount_unsettled"].as_u64().unwrap_or(u64::MAX) as usize,
    );
    if given % FACE_VALUE != 0 || given / FACE_VALUE + unsettled < redeemed_in_store {
        violation(format!(
            "discount given {given} ({unsettled} unsettled) for {redeemed_in_store} redemptions of {FACE_VALUE}"
        ));
    }
    let expected_stats = json!({
        "claimed": issued, "redeemed": redeemed_in_store, "expired": 0, "expired_value": 0,
        "remaining_stock": STOCK - issued.min(STOCK), "budget_used": issued * FACE_VALUE,
        "discount_given": given.min(redeemed_in_store * FACE_VALUE), "discount_unsettled": unsettled,
        "capacity": STOCK, "remaining": STOCK - issued.min(STOCK), "binding_limit": "both",
    });
    for (host, answer) in stats.iter().enumerate() {
        if answer != &stats[0] {
            violation(format!(
                "host {host} answers stats {answer}, host 0 {}",
                stats[0]
            ));
        }
    }
    let stats = &stats[0];
    let number = |name: &str| stats[name].as_u64().unwrap_or(u64::MAX) as usize;
    if !crashed && stats != &expected_stats {
        violation(format!(
            "stats {stats}, while GET /coupons shows {expected_stats}"
        ));
    }
    if crashed {
        let redemptions_cut = observed
            .lost
            .iter()
            .filter(|lost| matches!(lost.request, Request::Redeem { .. }))
            .count();
        let claimed = number("claimed");
        let ok = claimed <= STOCK
            && claimed >= issued
            && claimed - issued <= interrupted
            && number("remaining_stock") == STOCK - claimed
            && number("budget_used") <= claimed * FACE_VALUE
            && number("budget_used") >= issued * FACE_VALUE
            && number("expired") == 0
            // Every redemption is counted with its ending; one cut off by the
            // kill may leave its ledger position empty (counted until the
            // sweep settles it, a lease later) and its coupon locked (until
            // the lock's lease lapses).
            && number("redeemed") >= redeemed_in_store
            && number("redeemed") - redeemed_in_store <= redemptions_cut
            && unredeemable <= redemptions_cut;
        if !ok {
            violation(format!(
                "stats {stats} are out of bounds: {issued} coupons acknowledged, {interrupted} claims interrupted, {redeemed_in_store} coupons redeemed"
            ));
        }
    }

    // The report.
    let seconds = observed.storm_time.as_secs_f64();
    let mut report = String::new();
    let _ = writeln!(
        report,
        "== {}: {} host(s), {CONNECTIONS} connections, {CLAIM_KEYS} claim keys, {USERS} users, stock {STOCK}, limit {PER_USER_LIMIT} per user",
        scenario.name, scenario.hosts
    );
    let _ = writeln!(
        report,
        "{requests} requests in {seconds:.2} s ({:.0}/s; {:.1} s in all with start-up and checks): {claim_requests} claims ({CLAIM_KEYS} keys, {} resent), {:.0} claims/s; {} connection errors",
        requests as f64 / seconds,
        observed.total_time.as_secs_f64(),
        claim_requests.saturating_sub(CLAIM_KEYS),
        claim_requests as f64 / seconds,
        observed.lost.len()
    );
    for ((operation, status, label), count) in &tally {
        let _ = writeln!(report, "  {operation:<9} {status} {label:<28} {count:>6}");
    }
    let two_xx: usize = tally
        .iter()
        .filter(|((_, s, _), _)| (200..300).contains(s))
        .map(|(_, n)| n)
        .sum();
    let _ = writeln!(
        report,
        "  2xx {two_xx}, errors {}; issued {issued}/{STOCK} (shortfall {shortfall}) to {} users; redeemed {redeemed_in_store}; {} keys probed after the storm",
        requests - two_xx,
        per_user.len(),
        observed.probed
    );
    let _ = writeln!(
        report,
        "  stats {stats}; {same_key_other_answer} keys answered differently on a retry; {} answers 503 overloaded (shed by the host, sent again)",
        observed.shed
    );
    if let Some(crash) = &observed.crash {
        let _ = writeln!(
            report,
            "  SIGKILL after {} coupons issued, {} requests in flight; back in {:.2} s\n  after it: {interrupted} claim keys interrupted (bound on the shortfall), {} keys answering request_in_progress for good; stock taken without a coupon (stats.claimed - acknowledged) {}; stats.redeemed counts ledger positions left empty (settled by the sweep a lease later) {}; {unredeemable} coupons unredeemable, {redeemed_unacknowledged} redeemed without an acknowledged answer",
            crash.issued_at_kill,
            crash.in_flight_at_kill,
            crash.outage.as_secs_f64(),
            stuck.len(),
            number("claimed").saturating_sub(issued),
            number("redeemed").saturating_sub(redeemed_in_store),
        );
    }
    Verdict { report, violations }
}
