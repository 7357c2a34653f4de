//! The thin layer between Spin and the coupon core, shared by every component:
//! it reads a request into a [`Call`], opens the key-value store, reads the
//! clock, randomness and variables, and writes a core [`Reply`] back as HTTP.
//!
//! Nothing here outlives a request: Spin may reuse an instance for many
//! requests, so no global holds state of one. (One global holds a fact about
//! the platform, the same for every request: whether `get-many` works.)

use bytes::Bytes;
use coupon_core::api::{self, MAX_BODY_BYTES, Reply};
use coupon_core::auth::{self, Caller, UserId};
use coupon_core::code::{CouponCode, RANDOM_BYTES};
use coupon_core::error::Denial;
use coupon_core::store::{Store, StoreError, StoreResult};
use coupon_core::{Error, Result, Timestamp};
use http_body_util::{BodyExt, Full, Limited};
use serde::de::DeserializeOwned;
use spin_sdk::experimental::wasi::keyvalue::{atomics, batch, store as wasi_store};
use spin_sdk::http::{Method, Request};
use spin_sdk::key_value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// A request as the components need it: method, path, query, headers, body.
pub struct Call {
    pub method: Method,
    pub path: String,
    pub query: String,
    headers: spin_sdk::http::HeaderMap,
    body: Bytes,
    pub now: Timestamp,
}

impl Call {
    /// Reads the whole request; a body over [`MAX_BODY_BYTES`] is refused with 413.
    pub async fn read(request: Request) -> std::result::Result<Call, Reply> {
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(Reply::error(&Error::PayloadTooLarge));
            }
            Err(e) => {
                return Err(Reply::error(&Error::InvalidRequest {
                    field: None,
                    message: format!("the request body could not be read: {e}"),
                }));
            }
        };
        Ok(Call {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            headers: parts.headers,
            body,
            now: Timestamp::now(),
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The user named by the bearer JWT, verified with the `user_token_secret` variable.
    pub async fn user(&self) -> Result<UserId> {
        let secret = variable("user_token_secret").await?;
        auth::verify_user(self.header("authorization"), secret.as_bytes(), self.now)
    }

    /// A user by their JWT, or the shop's checkout by one of the
    /// `checkout_token` variable's tokens (none configured: the role is off).
    pub async fn caller(&self) -> Result<Caller> {
        match self.user().await {
            Ok(user) => Ok(Caller::User(user)),
            // Not a token the user secret signed: maybe the checkout's.
            Err(Error::Unauthorized(Denial::Invalid)) => {
                self.checkout().await?;
                Ok(Caller::Checkout)
            }
            Err(e) => Err(e),
        }
    }

    /// Succeeds only for one of the shop checkout's tokens.
    pub async fn checkout(&self) -> Result<()> {
        let tokens = variable("checkout_token").await?;
        auth::verify_checkout(self.header("authorization"), &tokens)
    }

    /// Succeeds only for the operator's `admin_token`.
    pub async fn admin(&self) -> Result<()> {
        let token = variable("admin_token").await?;
        auth::verify_admin(self.header("authorization"), &token)
    }

    pub fn body_is_empty(&self) -> bool {
        self.body.iter().all(u8::is_ascii_whitespace)
    }

    /// The body parsed as `T`; errors name the offending field.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        api::parse_json(&self.body)
    }

    /// The path segments after `prefix`, e.g. `["spring", "pause"]` for
    /// `/campaigns/spring/pause` under `/campaigns`.
    pub fn segments_after(&self, prefix: &str) -> Option<Vec<&str>> {
        let rest = self.path.strip_prefix(prefix)?;
        if rest.is_empty() {
            return Some(Vec::new());
        }
        let rest = rest.strip_prefix('/')?;
        Some(rest.split('/').filter(|s| !s.is_empty()).collect())
    }
}

/// A variable granted to this component in spin.toml; a missing one is a deployment error.
async fn variable(name: &str) -> Result<String> {
    spin_sdk::variables::get(name)
        .await
        .map_err(|e| Error::Internal(format!("variable {name} is not available: {e:?}")))
}

/// A fresh coupon code from the host's cryptographic random source.
pub fn random_code() -> CouponCode {
    let bytes = spin_sdk::wasip3::random::random::get_random_bytes(RANDOM_BYTES as u64);
    let mut code = [0u8; RANDOM_BYTES];
    for (slot, byte) in code.iter_mut().zip(bytes) {
        *slot = byte;
    }
    CouponCode::from_random(code)
}

/// Writes a core reply as an HTTP response.
pub fn respond(reply: Reply) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() =
        http::StatusCode::from_u16(reply.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in reply.headers {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// Set once `get-many` failed where plain gets of the same keys worked: the
/// platform's `get-many` is broken (Spin 4 on Redis). The same for every
/// request an instance serves, so it may outlive one.
static GET_MANY_BROKEN: AtomicBool = AtomicBool::new(false);

/// The `default` key-value store: `spin:key-value` for plain reads and writes,
/// `wasi:keyvalue` for atomic increments and batches.
pub struct KvStore {
    kv: key_value::Store,
    bucket: wasi_store::Bucket,
}

impl KvStore {
    pub async fn open_default() -> Result<KvStore> {
        let kv = key_value::Store::open_default()
            .await
            .map_err(|e| store_error(format!("{e:?}")))?;
        let bucket = wasi_store::open("default").map_err(|e| store_error(format!("{e:?}")))?;
        Ok(KvStore { kv, bucket })
    }
}

fn store_error(message: String) -> Error {
    Error::StoreUnavailable(message)
}

fn kv_error(e: impl std::fmt::Debug) -> StoreError {
    StoreError(format!("{e:?}"))
}

impl Store for KvStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.kv.get(key).await.map_err(kv_error)
    }

    /// One `wasi:keyvalue/batch.get-many` where the platform serves it, and
    /// concurrent `spin:key-value` gets where it does not.
    ///
    /// Spin 4's Redis store sends `get-many` as the `KEYS` command
    /// (`crates/key-value-redis/src/store.rs`, `get_many`): for two keys or
    /// more Redis refuses it, and for one key it answers key names, so the key
    /// reads as absent. So one key is always a plain get, and a batch whose
    /// `get-many` fails is read again with concurrent gets (in flight
    /// together: one round trip on a remote store); if those succeed, the
    /// platform's `get-many` is broken, and this instance uses gets from then
    /// on. Measured on `coupon-host` (BENCHMARKS.md), gets alone cost
    /// validations about 30% of their throughput where `get-many` works.
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        if keys.len() == 1 {
            return Ok(vec![self.get(&keys[0]).await?]);
        }
        if !GET_MANY_BROKEN.load(Ordering::Relaxed)
            && let Ok(found) = batch::get_many(&self.bucket, keys)
        {
            // Match by key: Spin's SQLite store leaves missing keys out and
            // reorders. A map, not a search per key: the sweep reads batches
            // of 500 keys, where searching cost the guest most of its time.
            let found: BTreeMap<String, Vec<u8>> = found
                .into_iter()
                .filter_map(|(key, value)| Some((key, value?)))
                .collect();
            return Ok(keys.iter().map(|key| found.get(key).cloned()).collect());
        }
        let values = futures::future::join_all(keys.iter().map(|key| self.kv.get(key)))
            .await
            .into_iter()
            .map(|value| value.map_err(kv_error))
            .collect::<StoreResult<Vec<_>>>()?;
        GET_MANY_BROKEN.store(true, Ordering::Relaxed);
        Ok(values)
    }

    async fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.kv.set(key, value).await.map_err(kv_error)
    }

    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> StoreResult<()> {
        batch::set_many(&self.bucket, entries).map_err(kv_error)
    }

    async fn increment(&self, key: &str, delta: i64) -> StoreResult<i64> {
        atomics::increment(&self.bucket, key, delta).map_err(kv_error)
    }

    /// `wasi:keyvalue/batch.delete-many`: `DEL` on Spin's Redis store, one
    /// transaction on its SQLite store (`SPIN-NOTES.md`).
    async fn delete_many(&self, keys: &[String]) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        batch::delete_many(&self.bucket, keys).map_err(kv_error)
    }
}

/// Serves one request: reads it, runs `handler` with the call and the store,
/// and answers whatever it returns; errors become their JSON error replies.
pub async fn serve<H>(request: Request, handler: H) -> http::Response<Full<Bytes>>
where
    H: AsyncFnOnce(&Call, &KvStore) -> Result<Reply>,
{
    let call = match Call::read(request).await {
        Ok(call) => call,
        Err(reply) => return respond(reply),
    };
    let reply = match KvStore::open_default().await {
        Ok(store) => handler(&call, &store).await.into(),
        Err(e) => Reply::error(&e),
    };
    respond(reply)
}
