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
}

/// Reads a counter without changing it.
pub async fn read_counter(store: &impl Store, key: &str) -> StoreResult<i64> {
    store.increment(key, 0).await
}

#[cfg(test)]
pub(crate) mod memory {
    //! A map behind the `Store` trait for the native tests. Every call yields
    //! once, so concurrent futures interleave between store calls.

    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    #[derive(Default)]
    pub struct MemoryStore {
        pub values: RefCell<BTreeMap<String, Vec<u8>>>,
        pub counters: RefCell<BTreeMap<String, i64>>,
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
            yield_now().await;
            self.values
                .borrow_mut()
                .insert(key.to_owned(), value.to_vec());
            Ok(())
        }
        async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> StoreResult<()> {
            yield_now().await;
            let mut values = self.values.borrow_mut();
            for (k, v) in entries {
                values.insert(k.clone(), v.clone());
            }
            Ok(())
        }
        async fn increment(&self, key: &str, delta: i64) -> StoreResult<i64> {
            yield_now().await;
            let mut counters = self.counters.borrow_mut();
            let value = counters.entry(key.to_owned()).or_insert(0);
            *value += delta;
            Ok(*value)
        }
    }
}
