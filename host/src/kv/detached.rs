//! Every store call as a task of its own.
//!
//! A guest's sync `wasi:keyvalue` call (increment, batch) holds its instance
//! while it waits (wasmtime issue 11870), so the store calls of other requests
//! on the same reused instance are not polled meanwhile. If one of those held
//! a shared resource (SQLite's writer, a slot of Redis's command queue), the
//! waiting call could wait for it forever: measured, a host on SQLite stalled
//! within seconds at 16 connections. As a task of its own, every store call
//! runs to completion whether or not its caller is being polled.

use super::{KeyValueStore, KvError};
use async_trait::async_trait;
use std::future::Future;
use std::sync::Arc;

/// A backend whose calls each run on their own tokio task.
pub(crate) struct Detached(pub(crate) Arc<dyn KeyValueStore>);

/// Runs `call` on the backend as its own task and waits for its result.
async fn detach<T, F>(
    store: &Arc<dyn KeyValueStore>,
    call: impl FnOnce(Arc<dyn KeyValueStore>) -> F,
) -> Result<T, KvError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, KvError>> + Send + 'static,
{
    tokio::spawn(call(store.clone()))
        .await
        .map_err(|e| KvError::Backend(format!("the store call failed: {e}")))?
}

#[async_trait]
impl KeyValueStore for Detached {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let key = key.to_owned();
        detach(&self.0, |s| async move { s.get(&key).await }).await
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        let (key, value) = (key.to_owned(), value.to_vec());
        detach(&self.0, |s| async move { s.set(&key, &value).await }).await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        let key = key.to_owned();
        detach(&self.0, |s| async move { s.delete(&key).await }).await
    }

    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        let key = key.to_owned();
        detach(&self.0, |s| async move { s.exists(&key).await }).await
    }

    async fn get_keys(&self) -> Result<Vec<String>, KvError> {
        detach(&self.0, |s| async move { s.get_keys().await }).await
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let key = key.to_owned();
        detach(&self.0, |s| async move { s.increment(&key, delta).await }).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        let (key, expected, new) = (key.to_owned(), expected.map(<[u8]>::to_vec), new.to_vec());
        detach(&self.0, |s| async move {
            s.compare_and_swap(&key, expected.as_deref(), &new).await
        })
        .await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        let keys = keys.to_vec();
        detach(&self.0, |s| async move { s.get_many(&keys).await }).await
    }

    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        let entries = entries.to_vec();
        detach(&self.0, |s| async move { s.set_many(&entries).await }).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        let keys = keys.to_vec();
        detach(&self.0, |s| async move { s.delete_many(&keys).await }).await
    }
}
