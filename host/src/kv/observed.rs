//! A store whose every call is timed and counted in the host's metrics
//! (`coupon_host_store_call_*`, by backend and operation).

use super::{KeyValueStore, KvError};
use crate::metrics;
use async_trait::async_trait;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// A store whose calls are counted in the host's metrics.
pub struct Observed {
    inner: Arc<dyn KeyValueStore>,
    /// `sqlite`, `redis` or `memory`.
    backend: &'static str,
}

impl Observed {
    /// `inner`, counted as `backend`.
    pub fn new(inner: Arc<dyn KeyValueStore>, backend: &'static str) -> Self {
        Observed { inner, backend }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, KvError>>,
    ) -> Result<T, KvError> {
        let started = Instant::now();
        let outcome = call.await;
        metrics::store_call(self.backend, operation, started.elapsed(), outcome.is_ok());
        outcome
    }
}

#[async_trait]
impl KeyValueStore for Observed {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.timed("get", self.inner.get(key)).await
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.timed("set", self.inner.set(key, value)).await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.timed("delete", self.inner.delete(key)).await
    }

    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        self.timed("exists", self.inner.exists(key)).await
    }

    async fn get_keys(&self) -> Result<Vec<String>, KvError> {
        self.timed("get_keys", self.inner.get_keys()).await
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.timed("increment", self.inner.increment(key, delta))
            .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        self.timed(
            "compare_and_swap",
            self.inner.compare_and_swap(key, expected, new),
        )
        .await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        self.timed("get_many", self.inner.get_many(keys)).await
    }

    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        self.timed("set_many", self.inner.set_many(entries)).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        self.timed("delete_many", self.inner.delete_many(keys))
            .await
    }
}
