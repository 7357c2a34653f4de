//! The narrow key-value surface the domain needs. Components implement it over
//! Spin's key-value store; tests over a map.
//!
//! Only `increment` is atomic; every guarantee of this crate rests on it. There
//! is deliberately no compare-and-swap: Spin 4's SQLite and Redis stores do not
//! implement it safely (see README, "Why only increments").

use std::fmt;

/// A failed store call, with the backend's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

pub type StoreResult<T> = Result<T, StoreError>;

#[allow(async_fn_in_trait)]
pub trait Store {
    /// The value at `key`. Never use it on a counter: read those with `increment(key, 0)`.
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Several values in one round trip, in the order of `keys`.
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>>;
    /// Writes `value`; only ever called by the owner of the record (see `keys`).
    async fn set(&self, key: &str, value: &[u8]) -> StoreResult<()>;
    /// Several writes in one round trip; not atomic as a group.
    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> StoreResult<()>;
    /// Atomically adds `delta` and returns the new value; a missing key counts as 0.
    async fn increment(&self, key: &str, delta: i64) -> StoreResult<i64>;
    /// Removes `keys` in one round trip (missing ones are fine); not atomic
    /// as a group. Only for keys nothing can read as meaningful any more
    /// (`ops::purge`, and short-lived counters long past).
    async fn delete_many(&self, keys: &[String]) -> StoreResult<()>;
}

/// Reads a counter without changing it.
pub async fn read_counter(store: &impl Store, key: &str) -> StoreResult<i64> {
    store.increment(key, 0).await
}

/// Counters read with `get` stay below this, so their two encodings cannot
/// be confused: 8 bytes is Spin's SQLite, up to 7 digits is Redis's text.
pub const SMALL_COUNTER_LIMIT: i64 = 1_000_000;

/// A counter kept below [`SMALL_COUNTER_LIMIT`], as `get` returned it (in the
/// same round trip as other reads): 8 little-endian bytes (Spin's SQLite) or
/// decimal text (Redis). `None` if it is neither.
pub fn decode_small_counter(bytes: &[u8]) -> Option<i64> {
    let value = match <[u8; 8]>::try_from(bytes) {
        Ok(le) => i64::from_le_bytes(le),
        Err(_) if bytes.len() < 8 => std::str::from_utf8(bytes).ok()?.parse().ok()?,
        Err(_) => return None,
    };
    (0..SMALL_COUNTER_LIMIT).contains(&value).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_counters_decode_from_either_encoding() {
        assert_eq!(decode_small_counter(&3i64.to_le_bytes()), Some(3));
        assert_eq!(decode_small_counter(b"3"), Some(3));
        assert_eq!(decode_small_counter(b"999999"), Some(999_999));
        for bad in [
            &b"1000000"[..],
            b"-1",
            b"",
            b"x",
            b"123456789",
            &(-1i64).to_le_bytes(),
        ] {
            assert_eq!(decode_small_counter(bad), None, "{bad:?}");
        }
    }
}

#[cfg(test)]
pub(crate) mod memory {
    //! A map behind the `Store` trait for the native tests. Every call yields
    //! once, so concurrent futures interleave between store calls.

    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// Counters live beside the values, as decimal text (as in Redis).
    #[derive(Default)]
    pub struct MemoryStore {
        pub values: RefCell<BTreeMap<String, Vec<u8>>>,
        /// Every increment that changed a counter, in order: what a request touched.
        pub increments: RefCell<Vec<(String, i64)>>,
        /// A test's say in the calls: see [`Hook`].
        pub hook: RefCell<Option<Hook>>,
    }

    /// A call a [`Hook`] sees.
    pub enum Call<'a> {
        Increment { delta: i64 },
        Write { entries: &'a [(String, Vec<u8>)] },
        Delete { keys: &'a [String] },
    }

    /// Runs before each increment (an error refuses it: it does not apply)
    /// and after each write has applied (to change the store behind a caller).
    pub type Hook = Box<dyn Fn(&MemoryStore, Call<'_>) -> StoreResult<()>>;

    impl MemoryStore {
        fn run_hook(&self, call: Call<'_>) -> StoreResult<()> {
            match &*self.hook.borrow() {
                Some(hook) => hook(self, call),
                None => Ok(()),
            }
        }
    }

    pub async fn yield_now() {
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                std::task::Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        })
        .await
    }

    impl Store for MemoryStore {
        async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
            yield_now().await;
            Ok(self.values.borrow().get(key).cloned())
        }
        async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>> {
            yield_now().await;
            let values = self.values.borrow();
            Ok(keys.iter().map(|k| values.get(k).cloned()).collect())
        }
        async fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
            self.set_many(&[(key.to_owned(), value.to_vec())]).await
        }
        async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> StoreResult<()> {
            yield_now().await;
            let mut values = self.values.borrow_mut();
            for (k, v) in entries {
                values.insert(k.clone(), v.clone());
            }
            drop(values);
            self.run_hook(Call::Write { entries })
        }
        async fn increment(&self, key: &str, delta: i64) -> StoreResult<i64> {
            yield_now().await;
            self.run_hook(Call::Increment { delta })?;
            let mut values = self.values.borrow_mut();
            let old = match values.get(key) {
                Some(text) => std::str::from_utf8(text)
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok())
                    .ok_or_else(|| StoreError(format!("{key} is not a counter")))?,
                None => 0,
            };
            let value = old + delta;
            values.insert(key.to_owned(), value.to_string().into_bytes());
            if delta != 0 {
                self.increments.borrow_mut().push((key.to_owned(), delta));
            }
            Ok(value)
        }
        async fn delete_many(&self, keys: &[String]) -> StoreResult<()> {
            yield_now().await;
            let mut values = self.values.borrow_mut();
            for k in keys {
                values.remove(k);
            }
            drop(values);
            self.run_hook(Call::Delete { keys })
        }
    }
}
