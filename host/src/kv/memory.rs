//! The in-memory backend: what tests run against, and what they inspect.

use super::{KeyValueStore, KvError, decode_counter, encode_counter};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A key-value store held in memory, encoded like Spin's SQLite store.
///
/// Clones share the same data, so a test can keep one clone to inspect the raw
/// state ([`get`](Self::get), [`keys`](Self::keys), [`snapshot`](Self::snapshot))
/// while the app writes through another. Every operation, `increment` and
/// `compare_and_swap` included, is atomic under one lock.
#[derive(Clone, Default)]
pub struct MemoryStore {
    entries: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The raw bytes under `key` (a counter is 8 little-endian bytes).
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().get(key).cloned()
    }

    /// The counter under `key`, decoded from its 8 little-endian bytes; `None`
    /// if the key is missing, an error if it holds something else.
    pub fn counter(&self, key: &str) -> Result<Option<i64>, KvError> {
        self.lock()
            .get(key)
            .map(|value| decode_counter(key, value))
            .transpose()
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// A copy of the whole store, sorted by key.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.lock().clone()
    }

    /// Stores `value` under `key` directly, to seed a test's starting state.
    pub fn insert(&self, key: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.lock().insert(key.into(), value.into());
    }

    /// The map, even if another thread panicked while holding it: every
    /// operation leaves the map consistent before it can panic.
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl KeyValueStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(MemoryStore::get(self, key))
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.lock().insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.lock().remove(key);
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.lock().contains_key(key))
    }

    async fn get_keys(&self) -> Result<Vec<String>, KvError> {
        Ok(self.keys())
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let mut entries = self.lock();
        let current = match entries.get(key) {
            Some(value) => decode_counter(key, value)?,
            None => 0,
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| KvError::Overflow {
                key: key.to_owned(),
            })?;
        entries.insert(key.to_owned(), encode_counter(next).to_vec());
        Ok(next)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        let mut entries = self.lock();
        if entries.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        entries.insert(key.to_owned(), new.to_vec());
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::conformance::check_contract;

    #[tokio::test]
    async fn keeps_the_key_value_contract() -> Result<(), KvError> {
        let store = MemoryStore::new();
        check_contract(&store).await?;
        assert!(store.keys().is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn clones_share_state_that_tests_can_inspect() -> Result<(), KvError> {
        let store = MemoryStore::new();
        let app_side: Arc<dyn KeyValueStore> = Arc::new(store.clone());
        app_side.increment("stock", 3).await?;
        app_side.set("name", b"spring").await?;
        store.insert("seeded", "yes");
        assert_eq!(store.get("stock"), Some(3i64.to_le_bytes().to_vec()));
        assert_eq!(store.counter("stock")?, Some(3));
        assert_eq!(store.counter("absent")?, None);
        assert!(store.counter("name").is_err());
        assert_eq!(store.keys(), ["name", "seeded", "stock"]);
        assert_eq!(app_side.get("seeded").await?, Some(b"yes".to_vec()));
        assert_eq!(store.snapshot().len(), 3);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_increments_are_atomic() -> Result<(), Box<dyn std::error::Error>> {
        let store = MemoryStore::new();
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                KeyValueStore::increment(&store, "n", 1).await
            }));
        }
        for task in tasks {
            task.await??;
        }
        assert_eq!(store.counter("n")?, Some(200));
        Ok(())
    }
}
