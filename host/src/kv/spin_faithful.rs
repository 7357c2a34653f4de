//! Test fixtures, not production backends: stores that behave as Spin 4's
//! own key-value stores do where those differ from ours, so that a component
//! relying on one of the differences fails here as it would under `spin up`.
//!
//! Each behaviour below is taken from Spin's source (spinframework/spin,
//! 4.1.0-pre0) and cited where it is reproduced:
//!
//! - [`SpinSqlite`], after `crates/key-value-spin/src/store.rs`: `get-many`
//!   answers only the keys it found, in the database's order; a
//!   compare-and-swap of an absent key always wins; `increment` of a value
//!   that is not 8 bytes panics while holding the store's only connection
//!   lock, which poisons it: every later call of the process fails.
//! - [`SpinRedis`], after `crates/key-value-redis/src/store.rs`: `get-many`
//!   sends the `KEYS` command with the keys as its arguments; a
//!   compare-and-swap that lost its `WATCH` race reports success.
//! - Both, after `crates/factor-key-value/src/host.rs`: a batch of no keys
//!   answers at once without reaching the backend; backend failures reach the
//!   guest as `other` with the failure's `Debug` text.
//!
//! What is the same needs no fixture: both of our backends keep Spin's layout
//! and counter encodings (8 little-endian bytes in SQLite, decimal text in
//! Redis), `set-many` is one transaction (SQLite) or `MSET` (Redis), and
//! `delete-many` one statement (SQLite) or `DEL` (Redis).
//!
//! Known and left: Spin's SQLite `increment` wraps on `i64` overflow (a
//! release build's `+`) where ours refuses; no counter here comes near it.
//!
//! Select them with `coupon-host up --store-fidelity spin`, or wrap a backend
//! directly in a test.

use super::{KeyValueStore, KvError, RedisStore};
use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Which behaviour the stores of `coupon-host up` have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreFidelity {
    /// Our own backends: the safe behaviour everywhere.
    #[default]
    Host,
    /// Spin 4's behaviour, unsafe parts included: a test fixture.
    Spin,
}

/// A store (SQLite or in memory: Spin keeps both in SQLite) as Spin's SQLite
/// store behaves.
pub struct SpinSqlite {
    inner: Arc<dyn KeyValueStore>,
    /// Set once an `increment` panicked inside Spin's store.
    poisoned: AtomicBool,
}

impl SpinSqlite {
    /// `inner` must keep counters as 8 little-endian bytes, as Spin's SQLite does.
    pub fn new(inner: Arc<dyn KeyValueStore>) -> Self {
        Self {
            inner,
            poisoned: AtomicBool::new(false),
        }
    }

    /// Spin's store has one connection behind a `std::sync::Mutex`
    /// (`KeyValueSqlite::create_connection`) and every call does
    /// `.lock().unwrap()`: once a panic poisoned it, every call panics.
    fn check_poison(&self) -> Result<(), KvError> {
        match self.poisoned.load(Ordering::SeqCst) {
            true => Err(KvError::Fatal(
                "called `Result::unwrap()` on an `Err` value: PoisonError { .. }".into(),
            )),
            false => Ok(()),
        }
    }
}

#[async_trait]
impl KeyValueStore for SpinSqlite {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.check_poison()?;
        self.inner.get(key).await
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.check_poison()?;
        self.inner.set(key, value).await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.check_poison()?;
        self.inner.delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        self.check_poison()?;
        self.inner.exists(key).await
    }

    async fn get_keys(&self) -> Result<Vec<String>, KvError> {
        self.check_poison()?;
        self.inner.get_keys().await
    }

    /// `SqliteStore::increment`: `i64::from_le_bytes(v.try_into().expect("incorrect length"))`
    /// inside the connection lock.
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.check_poison()?;
        match self.inner.increment(key, delta).await {
            Err(KvError::NotACounter { .. }) => {
                self.poisoned.store(true, Ordering::SeqCst);
                Err(KvError::Fatal(
                    "incorrect length: TryFromSliceError(())".into(),
                ))
            }
            other => other,
        }
    }

    /// `CompareAndSwap::swap`: an absent key is written with an upsert, and
    /// one changed row counts as success, so every racer wins.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        self.check_poison()?;
        match expected {
            None => self.inner.set(key, new).await.map(|()| true),
            Some(_) => self.inner.compare_and_swap(key, expected, new).await,
        }
    }

    /// `SqliteStore::get_many`: `SELECT key, value ... WHERE key IN rarray(:keys)`
    /// returns a row per key found, in the primary key's order; missing keys
    /// are left out.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        self.check_poison()?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut found: Vec<_> = self
            .inner
            .get_many(keys)
            .await?
            .into_iter()
            .filter(|(_, value)| value.is_some())
            .collect();
        found.sort();
        found.dedup_by(|a, b| a.0 == b.0);
        Ok(found)
    }

    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        self.check_poison()?;
        self.inner.set_many(entries).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        self.check_poison()?;
        self.inner.delete_many(keys).await
    }
}

/// A Redis store as Spin's Redis store behaves.
pub struct SpinRedis(pub RedisStore);

#[async_trait]
impl KeyValueStore for SpinRedis {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.0.get(key).await
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.0.set(key, value).await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.0.delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        self.0.exists(key).await
    }

    async fn get_keys(&self) -> Result<Vec<String>, KvError> {
        self.0.get_keys().await
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.0.increment(key, delta).await
    }

    /// `CompareAndSwap::swap`: `WATCH`, then `MULTI SET EXEC` parsed as `()`,
    /// so an `EXEC` that aborted because the key changed (a nil reply) reads
    /// as success. The write itself is still conditional.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        self.0.compare_and_swap(key, expected, new).await?;
        Ok(true)
    }

    /// `RedisStore::get_many`: `connection.keys(keys)`, the `KEYS` command
    /// with every key as an argument, its reply read as key-value pairs by
    /// redis-rs 0.32 (`FromRedisValue` for tuples: a flat array in chunks of
    /// two, a shorter rest dropped). Redis allows `KEYS` one argument, a glob
    /// pattern: two keys or more are an error ("wrong number of arguments");
    /// one key answers the names matching it, so a key that exists reads as
    /// absent.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<Vec<u8>> = self.0.query(redis::cmd("KEYS").arg(keys)).await?;
        Ok(names
            .chunks_exact(2)
            .map(|pair| {
                (
                    String::from_utf8_lossy(&pair[0]).into_owned(),
                    Some(pair[1].clone()),
                )
            })
            .collect())
    }

    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        self.0.set_many(entries).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        self.0.delete_many(keys).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemoryStore;
    use crate::kv::redis::tests::RedisServer;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|k| (*k).to_owned()).collect()
    }

    #[tokio::test]
    async fn sqlite_get_many_leaves_out_missing_keys_and_reorders() -> Result<(), KvError> {
        let store = SpinSqlite::new(Arc::new(MemoryStore::new()));
        store.set("b", b"2").await?;
        store.set("a", b"1").await?;
        let found = store.get_many(&keys(&["b", "missing", "a"])).await?;
        assert_eq!(
            found,
            vec![
                ("a".into(), Some(b"1".to_vec())),
                ("b".into(), Some(b"2".to_vec()))
            ]
        );
        assert_eq!(store.get_many(&[]).await?, vec![]);
        Ok(())
    }

    #[tokio::test]
    async fn sqlite_compare_and_swap_of_an_absent_key_always_wins() -> Result<(), KvError> {
        let store = SpinSqlite::new(Arc::new(MemoryStore::new()));
        assert!(store.compare_and_swap("k", None, b"first").await?);
        assert!(store.compare_and_swap("k", None, b"second").await?);
        assert_eq!(store.get("k").await?, Some(b"second".to_vec()));
        // With a value to compare, it is conditional.
        assert!(!store.compare_and_swap("k", Some(b"first"), b"x").await?);
        Ok(())
    }

    #[tokio::test]
    async fn sqlite_increment_of_a_non_counter_poisons_the_store() -> Result<(), KvError> {
        let store = SpinSqlite::new(Arc::new(MemoryStore::new()));
        store.set("text", b"hello").await?;
        assert_eq!(store.increment("n", 2).await?, 2);
        assert!(matches!(
            store.increment("text", 1).await,
            Err(KvError::Fatal(_))
        ));
        assert!(matches!(store.get("n").await, Err(KvError::Fatal(_))));
        assert!(matches!(
            store.increment("n", 1).await,
            Err(KvError::Fatal(_))
        ));
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_get_many_is_keys_with_arguments() -> anyhow::Result<()> {
        let server = RedisServer::start().await?;
        let store = SpinRedis(RedisStore::connect(server.url()).await?);
        store.set("a", b"1").await?;
        store.set("b", b"2").await?;
        // Two keys or more: Redis refuses the command.
        let refused = store.get_many(&keys(&["a", "b"])).await.unwrap_err();
        assert!(
            refused.to_string().contains("wrong number of arguments"),
            "{refused}"
        );
        // One key: its name matches itself, and one name is no pair.
        assert_eq!(store.get_many(&keys(&["a"])).await?, vec![]);
        assert_eq!(store.get_many(&[]).await?, vec![]);
        // The plain gets are Spin's GET: fine.
        assert_eq!(store.get("a").await?, Some(b"1".to_vec()));
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_compare_and_swap_reports_a_lost_race_as_success() -> anyhow::Result<()> {
        let server = RedisServer::start().await?;
        let store = SpinRedis(RedisStore::connect(server.url()).await?);
        store.set("k", b"theirs").await?;
        assert!(store.compare_and_swap("k", Some(b"stale"), b"mine").await?);
        assert_eq!(store.get("k").await?, Some(b"theirs".to_vec()));
        assert!(store.compare_and_swap("k", None, b"mine").await?);
        assert_eq!(store.get("k").await?, Some(b"theirs".to_vec()));
        // Counters are Spin's decimal text.
        assert_eq!(store.increment("n", 5).await?, 5);
        assert_eq!(store.get("n").await?, Some(b"5".to_vec()));
        Ok(())
    }
}
