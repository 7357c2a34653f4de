//! Helpers for the end-to-end tests: an app on the wasmtime host with an
//! in-memory store and a clock the test sets, plus requests that read like the API.

use anyhow::Result;
use bytes::Bytes;
use coupon_host::clock::ManualClock;
use coupon_host::kv::{MemoryStore, SpinSqlite};
use coupon_host::{App, KeyValueStore, KvError};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const USER_SECRET: &str = "test-user-secret";
/// The checkout's tokens: two, as while one is rotated out.
pub const CHECKOUT_TOKENS: &str = "test-checkout-old,test-checkout-new";
/// Tokens the tests sign stay valid until then, whatever the test clock says.
const TOKEN_EXPIRY: i64 = 4_102_444_800; // 2100-01-01

/// An answer: status, headers, and the body parsed as JSON (`Null` if empty).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `error.code` of an error answer.
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts an error answer's status and code, and that it names a message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.error_code()),
            (status, code),
            "{:#}",
            self.body
        );
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}

/// Who makes a request.
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    Operator,
    /// The shop's checkout backend, with one of its tokens.
    Checkout,
    User(String),
    /// A raw `Authorization` header value.
    Raw(String),
}

pub fn user(name: &str) -> Caller {
    Caller::User(name.to_owned())
}

/// A user token signed with the app's secret.
pub fn token(user: &str) -> String {
    coupon_core::auth::sign_user_token(
        USER_SECRET.as_bytes(),
        &json!({"sub": user, "exp": TOKEN_EXPIRY}),
    )
}

/// The coupon app on the wasmtime host, with its store and clock in reach.
#[derive(Clone)]
pub struct TestApp {
    pub app: App,
    pub store: MemoryStore,
    pub clock: ManualClock,
}

impl TestApp {
    /// Instances reused across requests, as Spin 4 does.
    pub async fn new() -> TestApp {
        TestApp::with_reuse(true).await
    }

    /// The store behaves as Spin 4's SQLite store (`spin up`'s default): see
    /// `coupon_host::kv::SpinSqlite`.
    pub async fn with_reuse(reuse: bool) -> TestApp {
        let store = MemoryStore::new();
        let spin_sqlite = Arc::new(SpinSqlite::new(Arc::new(store.clone())));
        TestApp::try_new(reuse, spin_sqlite, store)
            .await
            .expect("the app starts")
    }

    /// Behind a store whose compare-and-swap is as unsafe as Spin 4's: a swap
    /// on an absent key always succeeds, and a lost swap reports success. The
    /// app must not notice: it never relies on compare-and-swap.
    pub async fn with_spins_compare_and_swap() -> TestApp {
        let store = MemoryStore::new();
        let unsafe_cas = Arc::new(SpinLikeCompareAndSwap(store.clone()));
        TestApp::try_new(true, unsafe_cas, store)
            .await
            .expect("the app starts")
    }

    /// Behind `gated`, each component serving at most `limit` requests at
    /// once (as many again wait up to 250 ms; the rest are shed).
    pub async fn with_limit(limit: usize, gated: Arc<Gated>) -> TestApp {
        let store = gated.store.clone();
        TestApp::try_new_with(true, gated, store, limit)
            .await
            .expect("the app starts")
    }

    /// Behind a store that counts its calls: each is one round trip to a
    /// remote store.
    pub async fn counting() -> (TestApp, Arc<Counting>) {
        let store = MemoryStore::new();
        let counting = Arc::new(Counting {
            store: store.clone(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            trips: std::sync::atomic::AtomicUsize::new(0),
        });
        let app = TestApp::try_new(true, counting.clone(), store)
            .await
            .expect("the app starts");
        (app, counting)
    }

    /// The tests race more requests at one component than the host serves at
    /// once: they lift its limit, so every request reaches the store.
    async fn try_new(
        reuse: bool,
        backend: Arc<dyn KeyValueStore>,
        store: MemoryStore,
    ) -> Result<TestApp> {
        TestApp::try_new_with(reuse, backend, store, 1_000).await
    }

    async fn try_new_with(
        reuse: bool,
        backend: Arc<dyn KeyValueStore>,
        store: MemoryStore,
        limit: usize,
    ) -> Result<TestApp> {
        let clock = ManualClock::new(system_time("2028-02-10T10:00:00+08:00"));
        let app = App::builder_from_workspace()?
            .variable("user_token_secret", USER_SECRET)
            .variable("admin_token", ADMIN_TOKEN)
            .variable("checkout_token", CHECKOUT_TOKENS)
            .shared_store("default", backend)
            .clock(clock.clone())
            .instance_reuse(reuse)
            .max_concurrent_requests(limit)
            .build()
            .await?;
        Ok(TestApp { app, store, clock })
    }

    /// Sets the clock every component reads.
    pub fn set_now(&self, rfc3339: &str) {
        self.clock.set(system_time(rfc3339));
    }

    /// Sends a request; `body` is sent as JSON unless it is `Null`.
    pub async fn send(
        &self,
        caller: &Caller,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Value,
    ) -> Answer {
        let body = match body {
            Value::Null => Bytes::new(),
            Value::String(raw) => Bytes::from(raw),
            json => Bytes::from(json.to_string()),
        };
        self.send_bytes(caller, method, path, headers, body).await
    }

    pub async fn send_bytes(
        &self,
        caller: &Caller,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Answer {
        let mut request = http::Request::builder().method(method).uri(path);
        let authorization = match caller {
            Caller::Anonymous => None,
            Caller::Operator => Some(format!("Bearer {ADMIN_TOKEN}")),
            Caller::Checkout => Some("Bearer test-checkout-new".to_owned()),
            Caller::User(name) => Some(format!("Bearer {}", token(name))),
            Caller::Raw(value) => Some(value.clone()),
        };
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        if !body.is_empty() {
            request = request.header("content-type", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body).expect("a valid test request");
        let response = self.app.handle(request).await.expect("the host answers");
        let (parts, body) = response.into_parts();
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
        };
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    pub async fn operator(&self, method: &str, path: &str, body: Value) -> Answer {
        self.send(&Caller::Operator, method, path, &[], body).await
    }

    pub async fn create_campaign(&self, body: Value) -> Answer {
        self.operator("POST", "/campaigns", body).await
    }

    pub async fn campaign(&self, id: &str) -> Value {
        let answer = self
            .operator("GET", &format!("/campaigns/{id}"), Value::Null)
            .await;
        assert_eq!(answer.status, 200, "{:#}", answer.body);
        answer.body
    }

    pub async fn claim(&self, who: &str, campaign: &str, key: &str) -> Answer {
        self.send(
            &user(who),
            "POST",
            "/claims",
            &[("idempotency-key", key)],
            json!({"campaign_id": campaign}),
        )
        .await
    }

    /// Claims and returns the new coupon's code, asserting it was issued.
    pub async fn claimed_code(&self, who: &str, campaign: &str) -> String {
        let answer = self
            .claim(
                who,
                campaign,
                &format!("{who}-{campaign}-{}", self.store.keys().len()),
            )
            .await;
        assert_eq!(answer.status, 201, "{:#}", answer.body);
        answer.body["code"].as_str().expect("a code").to_owned()
    }

    pub async fn validate(&self, who: &str, code: &str, order: Value) -> Answer {
        self.send(
            &user(who),
            "POST",
            "/validations",
            &[],
            json!({"code": code, "order": order}),
        )
        .await
    }

    pub async fn redeem(&self, who: &str, code: &str, order: Value) -> Answer {
        self.send(
            &user(who),
            "POST",
            "/redemptions",
            &[],
            json!({"code": code, "order": order}),
        )
        .await
    }

    /// `POST /holds` as the shop's checkout, for `who`.
    pub async fn hold(&self, who: &str, code: &str, order: Value) -> Answer {
        let body = json!({"code": code, "order": order, "user_id": who});
        self.send(&Caller::Checkout, "POST", "/holds", &[], body)
            .await
    }

    /// `POST /redemptions` as the shop's checkout, for `who`.
    pub async fn checkout_redeem(&self, who: &str, code: &str, order: Value) -> Answer {
        let body = json!({"code": code, "order": order, "user_id": who});
        self.send(&Caller::Checkout, "POST", "/redemptions", &[], body)
            .await
    }

    pub async fn coupon(&self, who: &str, code: &str) -> Answer {
        self.send(
            &user(who),
            "GET",
            &format!("/coupons/{code}"),
            &[],
            Value::Null,
        )
        .await
    }

    /// `GET /coupons{query}`: the user's wallet.
    pub async fn wallet(&self, who: &str, query: &str) -> Answer {
        self.send(
            &user(who),
            "GET",
            &format!("/coupons{query}"),
            &[],
            Value::Null,
        )
        .await
    }

    pub async fn expire(&self, body: Value) -> Answer {
        self.operator("POST", "/expirations", body).await
    }

    /// A counter as the components keep it (8 little-endian bytes), 0 if absent.
    pub fn counter(&self, key: &str) -> i64 {
        self.store.counter(key).expect("a counter").unwrap_or(0)
    }

    /// The store's contents, less counters that read 0: reading a counter
    /// (`increment(key, 0)`) creates it at 0, which changes no state.
    pub fn state(&self) -> std::collections::BTreeMap<String, Vec<u8>> {
        let mut snapshot = self.store.snapshot();
        snapshot.retain(|_, value| value.as_slice() != [0u8; 8]);
        snapshot
    }

    /// Every stored coupon record, parsed.
    pub fn stored_coupons(&self) -> Vec<Value> {
        let snapshot = self.store.snapshot();
        snapshot
            .iter()
            .filter(|(k, _)| k.starts_with("k:") && k.matches(':').count() == 1)
            .map(|(_, v)| serde_json::from_slice(v).expect("a coupon record"))
            .collect()
    }
}

/// A campaign open from 2028-01-01 to 2028-02-15 in Shanghai: 500 off orders
/// of 2000 or more, 10 coupons, 2 per user, expiring at the end of the claim month.
pub fn campaign(id: &str) -> Value {
    json!({
        "id": id,
        "name": "Spring festival",
        "currency": "CNY",
        "discount": {"kind": "fixed", "amount": 500},
        "min_order_amount": 2000,
        "stock": 10,
        "per_user_limit": 2,
        "redeemable_by_users": true,
        "claim_starts_at": "2028-01-01T00:00:00+08:00",
        "claim_ends_at": "2028-02-15T00:00:00+08:00",
        "time_zone": "Asia/Shanghai",
        "expiry": {"kind": "end_of_claim_month"}
    })
}

/// An order of `amount` fen with id `id`.
/// A well-formed coupon code (right length, right check character) that no
/// claim issued: each call a different one.
pub fn made_up_code() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut bytes = [0xA5; coupon_core::code::RANDOM_BYTES];
    bytes[..8].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    coupon_core::code::CouponCode::from_random(bytes).to_string()
}

/// The enumeration ceiling the components enforce.
pub use coupon_core::ops::MAX_FAILED_LOOKUPS_PER_MINUTE;

pub fn order(id: &str, amount: i64) -> Value {
    json!({"id": id, "amount": amount, "currency": "CNY"})
}

/// `campaign(id)` with `changes` merged in at the top level.
pub fn campaign_with(id: &str, changes: Value) -> Value {
    let mut body = campaign(id);
    if let (Some(body), Value::Object(changes)) = (body.as_object_mut(), changes) {
        body.extend(changes);
    }
    body
}

pub fn system_time(rfc3339: &str) -> SystemTime {
    let ts = coupon_core::time::parse(rfc3339).expect("an RFC 3339 test time");
    let nanos = u64::try_from(ts.as_nanosecond()).expect("a time after 1970");
    SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// A memory store with Spin 4's compare-and-swap: its SQLite store upserts
/// when the key is absent, and its Redis store reports a swap that lost its
/// WATCH race as a success. Everything else is the memory store's.
struct SpinLikeCompareAndSwap(MemoryStore);

#[async_trait::async_trait]
impl KeyValueStore for SpinLikeCompareAndSwap {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        KeyValueStore::get(&self.0, key).await
    }
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        KeyValueStore::set(&self.0, key, value).await
    }
    async fn delete(&self, key: &str) -> Result<(), KvError> {
        KeyValueStore::delete(&self.0, key).await
    }
    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        KeyValueStore::exists(&self.0, key).await
    }
    async fn get_keys(&self) -> Result<Vec<String>, KvError> {
        KeyValueStore::get_keys(&self.0).await
    }
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        KeyValueStore::increment(&self.0, key, delta).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        match expected {
            None => KeyValueStore::set(&self.0, key, new).await?,
            Some(_) => {
                KeyValueStore::compare_and_swap(&self.0, key, expected, new).await?;
            }
        }
        Ok(true)
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        KeyValueStore::get_many(&self.0, keys).await
    }
    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        KeyValueStore::set_many(&self.0, entries).await
    }
}

/// A memory store that holds every increment of a key containing `needle`
/// until [`open`](Self::open) is called: requests that reach it stay in flight.
pub struct Gated {
    pub store: MemoryStore,
    needle: &'static str,
    open: tokio::sync::watch::Sender<bool>,
}

impl Gated {
    pub fn new(needle: &'static str) -> Arc<Gated> {
        Arc::new(Gated {
            store: MemoryStore::new(),
            needle,
            open: tokio::sync::watch::Sender::new(false),
        })
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }

    pub fn close(&self) {
        self.open.send_replace(false);
    }
}

#[async_trait::async_trait]
impl KeyValueStore for Gated {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        KeyValueStore::get(&self.store, key).await
    }
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        KeyValueStore::set(&self.store, key, value).await
    }
    async fn delete(&self, key: &str) -> Result<(), KvError> {
        KeyValueStore::delete(&self.store, key).await
    }
    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        KeyValueStore::exists(&self.store, key).await
    }
    async fn get_keys(&self) -> Result<Vec<String>, KvError> {
        KeyValueStore::get_keys(&self.store).await
    }
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        if key.contains(self.needle) {
            let mut open = self.open.subscribe();
            let _ = open.wait_for(|open| *open).await;
        }
        KeyValueStore::increment(&self.store, key, delta).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        KeyValueStore::compare_and_swap(&self.store, key, expected, new).await
    }
}

/// A memory store that counts round trips: calls in flight together (a
/// request's concurrent gets) share one, as they would on a remote store.
pub struct Counting {
    store: MemoryStore,
    in_flight: std::sync::atomic::AtomicUsize,
    trips: std::sync::atomic::AtomicUsize,
}

impl Counting {
    /// Round trips since the last `take`.
    pub fn take(&self) -> usize {
        self.trips.swap(0, std::sync::atomic::Ordering::SeqCst)
    }

    /// One call: a new round trip unless another is in flight. Each call
    /// takes a few milliseconds, as on the network, so that calls the guest
    /// issues together overlap.
    async fn count(&self) -> InFlight<'_> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.in_flight.fetch_add(1, SeqCst) == 0 {
            self.trips.fetch_add(1, SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
        InFlight(&self.in_flight)
    }
}

/// A call of [`Counting`] still in flight.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl KeyValueStore for Counting {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let _trip = self.count().await;
        KeyValueStore::get(&self.store, key).await
    }
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        let _trip = self.count().await;
        KeyValueStore::set(&self.store, key, value).await
    }
    async fn delete(&self, key: &str) -> Result<(), KvError> {
        let _trip = self.count().await;
        KeyValueStore::delete(&self.store, key).await
    }
    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        let _trip = self.count().await;
        KeyValueStore::exists(&self.store, key).await
    }
    async fn get_keys(&self) -> Result<Vec<String>, KvError> {
        let _trip = self.count().await;
        KeyValueStore::get_keys(&self.store).await
    }
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let _trip = self.count().await;
        KeyValueStore::increment(&self.store, key, delta).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        let _trip = self.count().await;
        KeyValueStore::compare_and_swap(&self.store, key, expected, new).await
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        let _trip = self.count().await;
        KeyValueStore::get_many(&self.store, keys).await
    }
    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        let _trip = self.count().await;
        KeyValueStore::set_many(&self.store, entries).await
    }
}
