//! Key-value stores: the one seam between the guest-facing key-value
//! interfaces and whatever holds the data.
//!
//! [`KeyValueStore`] is the contract every backend implements (in memory now;
//! SQLite and Redis later). The guest-facing interfaces (module `host`) only ever
//! see `Arc<dyn KeyValueStore>`, so which backend runs is decided in one place:
//! the [`App`](crate::App) builder.

#[cfg(test)]
mod conformance;
mod detached;
pub(crate) mod host;
mod memory;
mod observed;
mod redis;
mod spin_faithful;
mod sqlite;

pub use self::redis::RedisStore;
pub use memory::MemoryStore;
pub use observed::Observed;
pub use spin_faithful::{SpinRedis, SpinSqlite, StoreFidelity};
pub use sqlite::{SqliteDb, SqliteStore};

use async_trait::async_trait;
use std::fmt;

/// A key-value store as Spin's `spin:key-value` and `wasi:keyvalue` interfaces
/// need it.
///
/// Counters follow Spin's SQLite store: [`increment`](Self::increment) keeps the
/// value as 8 little-endian bytes (an `i64`), so components read a counter with
/// `increment(key, 0)`, never with `get` (a Redis backend stores decimal text).
#[async_trait]
pub trait KeyValueStore: Send + Sync + 'static {
    /// The value under `key`, or `None` if there is none.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;

    /// Stores `value` under `key`, replacing any previous value.
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError>;

    /// Removes `key`; removing a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), KvError>;

    /// Whether a value is stored under `key`.
    async fn exists(&self, key: &str) -> Result<bool, KvError>;

    /// Every key in the store.
    async fn get_keys(&self) -> Result<Vec<String>, KvError>;

    /// Atomically adds `delta` to the counter under `key` (a missing key counts
    /// as 0) and returns the new value.
    ///
    /// Fails with [`KvError::NotACounter`] if the key holds something that is
    /// not a counter in this backend's encoding.
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError>;

    /// Atomically replaces the value under `key` with `new` if the current value
    /// is still `expected` (`None`: the key must be absent). Returns whether the
    /// swap happened.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError>;

    /// The values under `keys`, in the same order; not atomic.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push((key.clone(), self.get(key).await?));
        }
        Ok(values)
    }

    /// Stores every pair; not atomic.
    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        for (key, value) in entries {
            self.set(key, value).await?;
        }
        Ok(())
    }

    /// Removes every key; not atomic.
    async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        for key in keys {
            self.delete(key).await?;
        }
        Ok(())
    }
}

/// Why a key-value operation failed. Guests see it as the interfaces'
/// `other(message)` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// `increment` on a key whose value is not a counter (Spin's SQLite store
    /// panics here; we answer an error instead).
    NotACounter {
        /// The key that was incremented.
        key: String,
        /// The length of the value found there.
        len: usize,
    },
    /// `increment` would leave the `i64` range.
    Overflow {
        /// The key that was incremented.
        key: String,
    },
    /// The backend itself failed (I/O, connection, ...).
    Backend(String),
    /// The backend would have panicked inside Spin (a Spin-faithful fixture,
    /// see `spin_faithful`): the guest's call traps instead of answering.
    Fatal(String),
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotACounter { key, len } => write!(
                f,
                "cannot increment {key:?}: it holds {len} bytes, not an 8-byte little-endian counter"
            ),
            Self::Overflow { key } => write!(f, "cannot increment {key:?}: i64 overflow"),
            Self::Backend(message) => write!(f, "key-value backend error: {message}"),
            Self::Fatal(message) => write!(f, "the key-value host panicked: {message}"),
        }
    }
}

impl std::error::Error for KvError {}

/// Reads a counter as Spin's SQLite store writes it: 8 little-endian bytes.
pub(crate) fn decode_counter(key: &str, value: &[u8]) -> Result<i64, KvError> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| KvError::NotACounter {
        key: key.to_owned(),
        len: value.len(),
    })?;
    Ok(i64::from_le_bytes(bytes))
}

/// Writes a counter as Spin's SQLite store does: 8 little-endian bytes.
pub(crate) fn encode_counter(value: i64) -> [u8; 8] {
    value.to_le_bytes()
}
