//! The Redis backend, in Spin's own layout so that `spin up` and this host
//! share a Redis server's data.
//!
//! Spin's Redis key-value store (`crates/key-value-redis/src/store.rs`) stores
//! each key as a plain Redis string under the key itself, with no prefix for
//! the store's label, and keeps counters as decimal text (`INCRBY`). This
//! backend does the same, and differs where Spin is unsafe: compare-and-swap
//! runs atomically inside Redis (`SET NX`, or a Lua script), where Spin's
//! `WATCH`/`MULTI` swap reports success even when it lost the race.

use super::{KeyValueStore, KvError};
use anyhow::Context as _;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, RedisError, Script, Value};
use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// How long one attempt to connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a command may wait for its reply before it fails. A failed
/// increment may still have been applied: the caller must not retry it blindly.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest one store call waits in all (for a reconnection, then for its
/// reply): with Redis down, a request answers 503 `store_unavailable` within
/// this of its first store call instead of holding its slot.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Keys asked for per `SCAN` round trip.
const SCAN_BATCH: usize = 1000;

/// Replaces the value under `KEYS[1]` with `ARGV[2]` if it is still `ARGV[1]`;
/// 1 if it did. Lua strings are byte strings, so the comparison is exact.
static SWAP_IF_EQUAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then
            redis.call('SET', KEYS[1], ARGV[2])
            return 1
        end
        return 0
        ",
    )
});

/// A key-value store on a Redis server, laid out as Spin's Redis store lays it
/// out: plain keys, counters as decimal text.
///
/// Like Spin, it ignores the store's label: every label configured with the
/// same URL sees the same keys (give labels separate databases, e.g.
/// `redis://host/1`, to keep them apart).
///
/// Cheap to clone: clones share one multiplexed connection (TCP_NODELAY on),
/// which reconnects in the background after a failure; the command that met
/// the failure fails and is not retried.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    /// The URL, password hidden, for error messages.
    url: Arc<str>,
}

impl RedisStore {
    /// Connects to the Redis server at `url` (`redis://[user:password@]host[:port][/db]`)
    /// and checks that it answers.
    ///
    /// Fails within a few seconds, naming the URL (password hidden) and the
    /// cause, if the URL is invalid or the server is unreachable or refuses us.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let shown = redacted(url);
        let info = url
            .into_connection_info()
            .with_context(|| format!("invalid Redis URL {shown}"))?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let client = Client::open(info).with_context(|| format!("invalid Redis URL {shown}"))?;

        // One attempt first: the connection manager below retries with back-off
        // and would hide the cause behind a long wait.
        let probe = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT));
        let mut probe = client
            .get_multiplexed_async_connection_with_config(&probe)
            .await
            .with_context(|| format!("cannot connect to Redis at {shown}"))?;
        redis::cmd("PING")
            .query_async::<()>(&mut probe)
            .await
            .with_context(|| format!("Redis at {shown} does not answer PING"))?;

        // One quick reconnection attempt per failure, not redis-rs's six with
        // back-off (6 s of waiting per command during an outage); the next
        // command tries again.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .with_context(|| format!("cannot connect to Redis at {shown}"))?;
        Ok(Self {
            connection,
            url: shown.into(),
        })
    }

    /// Fails, naming both settings, unless the server writes every command to
    /// its append-only log and fsyncs it before answering (`appendonly yes`,
    /// `appendfsync always`). Otherwise a restart rolls acknowledged
    /// increments back: a stock unit sells twice, a coupon redeems twice.
    pub async fn check_durable(&self) -> anyhow::Result<()> {
        let mut settings = Vec::new();
        for name in ["appendonly", "appendfsync"] {
            let pair: Vec<String> = self
                .query(redis::cmd("CONFIG").arg("GET").arg(name))
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot read Redis's persistence settings ({e}); check that it runs with \
                         `appendonly yes` and `appendfsync always`, then pass --allow-volatile-store"
                    )
                })?;
            settings.push(pair.get(1).cloned().unwrap_or_default());
        }
        if settings != ["yes", "always"] {
            anyhow::bail!(
                "Redis at {} runs with appendonly {:?} and appendfsync {:?}: a restart would lose \
                 acknowledged writes (a unit sold twice, a coupon redeemed twice). Run it with \
                 `appendonly yes` and `appendfsync always` (deploy/redis.conf), or pass \
                 --allow-volatile-store to run on it anyway",
                self.url,
                settings[0],
                settings[1]
            );
        }
        Ok(())
    }

    /// The server's URL, password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `command`, mapping a failure to [`KvError::Backend`].
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, KvError> {
        let mut connection = self.connection.clone();
        match tokio::time::timeout(CALL_TIMEOUT, command.query_async(&mut connection)).await {
            Ok(answer) => answer.map_err(|error| self.backend_error(&error)),
            Err(_) => Err(KvError::Backend(format!(
                "Redis at {}: no answer within {CALL_TIMEOUT:?}",
                self.url
            ))),
        }
    }

    fn backend_error(&self, error: &RedisError) -> KvError {
        KvError::Backend(format!("Redis at {}: {error}", self.url))
    }
}

#[async_trait]
impl KeyValueStore for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.query(redis::cmd("SET").arg(key).arg(value)).await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.query(redis::cmd("DEL").arg(key)).await
    }

    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        self.query(redis::cmd("EXISTS").arg(key)).await
    }

    /// `SCAN`s the whole database (never `KEYS`, which blocks the server);
    /// `SCAN` may return a key twice, so the keys are deduplicated.
    async fn get_keys(&self) -> Result<Vec<String>, KvError> {
        let mut keys = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .query(redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(SCAN_BATCH))
                .await?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys.into_iter().collect());
            }
            cursor = next;
        }
    }

    /// `INCRBY`: atomic in Redis, the value kept as decimal text as Spin does.
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("INCRBY").arg(key).arg(delta).clone();
        let error =
            match tokio::time::timeout(CALL_TIMEOUT, command.query_async(&mut connection)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => error,
                Err(_) => {
                    return Err(KvError::Backend(format!(
                        "Redis at {}: no answer within {CALL_TIMEOUT:?}",
                        self.url
                    )));
                }
            };
        let detail = error.detail().unwrap_or_default();
        if detail.contains("would overflow") {
            Err(KvError::Overflow {
                key: key.to_owned(),
            })
        } else if detail.contains("not an integer") {
            // Only for the message: the value may change in between.
            let len: usize = self.query(redis::cmd("STRLEN").arg(key)).await?;
            Err(KvError::NotACounter {
                key: key.to_owned(),
                len,
            })
        } else {
            Err(self.backend_error(&error))
        }
    }

    /// `SET NX` when the key must be absent; otherwise a Lua script that
    /// compares and sets in one step.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        match expected {
            None => {
                let reply: Value = self
                    .query(redis::cmd("SET").arg(key).arg(new).arg("NX"))
                    .await?;
                Ok(reply != Value::Nil)
            }
            Some(expected) => {
                let swapped: i64 = SWAP_IF_EQUAL
                    .key(key)
                    .arg(expected)
                    .arg(new)
                    .invoke_async(&mut self.connection.clone())
                    .await
                    .map_err(|error| self.backend_error(&error))?;
                Ok(swapped == 1)
            }
        }
    }

    /// One `MGET`.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = self.query(redis::cmd("MGET").arg(keys)).await?;
        if values.len() != keys.len() {
            return Err(KvError::Backend(format!(
                "Redis at {}: MGET of {} keys returned {} values",
                self.url,
                keys.len(),
                values.len()
            )));
        }
        Ok(keys.iter().cloned().zip(values).collect())
    }

    /// One `MSET`: atomic in Redis.
    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut command = redis::cmd("MSET");
        for (key, value) in entries {
            command.arg(key).arg(value);
        }
        self.query(&command).await
    }

    /// One `DEL`.
    async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.query(redis::cmd("DEL").arg(keys)).await
    }
}

/// `url` with its password, if any, replaced by `***`.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let Some((user, _password)) = user_info.split_once(':') else {
        return url.to_owned();
    };
    let path = &rest[authority.len()..];
    format!("{scheme}://{user}:***@{host}{path}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kv::conformance::{Backend, CounterEncoding, check_backend, measure_throughput};
    use std::net::{Ipv4Addr, TcpListener};
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    /// A `redis-server` of its own on a free loopback port, persistent as
    /// production runs it (`appendonly yes`, `appendfsync always`, the log in
    /// a scratch directory on tmpfs where there is one); killed when dropped. Panics, failing the test, if Redis is not
    /// installed: these tests are never skipped.
    pub(crate) struct RedisServer {
        process: Child,
        url: String,
    }

    impl RedisServer {
        pub(crate) async fn start() -> anyhow::Result<Self> {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
                .local_addr()?
                .port();
            let process = match Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ])
                .arg("--dir")
                .arg(scratch_dir(port)?)
                .stdout(Stdio::null())
                .spawn()
            {
                Ok(process) => process,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
                    "redis-server is not installed, and the Redis backend tests need it: apt-get install redis-server"
                ),
                Err(error) => return Err(error).context("cannot start redis-server"),
            };
            let server = Self {
                process,
                url: format!("redis://127.0.0.1:{port}"),
            };
            server.wait_until_ready().await?;
            Ok(server)
        }

        pub(crate) fn url(&self) -> &str {
            &self.url
        }

        async fn wait_until_ready(&self) -> anyhow::Result<()> {
            let client = Client::open(self.url.as_str())?;
            let started = Instant::now();
            loop {
                let ping = async {
                    let mut connection = client.get_multiplexed_async_connection().await?;
                    redis::cmd("PING").query_async::<()>(&mut connection).await
                };
                match ping.await {
                    Ok(()) => return Ok(()),
                    Err(error) if started.elapsed() > Duration::from_secs(10) => {
                        return Err(error).context("redis-server did not start within 10 s");
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            // Best effort: the server dies with the test process anyway.
            let _ = self.process.kill();
            let _ = self.process.wait();
            if let Some(port) = self.url.rsplit(':').next() {
                let _ = std::fs::remove_dir_all(scratch_path(port));
            }
        }
    }

    fn scratch_path(port: &str) -> std::path::PathBuf {
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        base.join(format!("coupon-redis-{port}"))
    }

    /// A fresh directory for the append-only log of the server on `port`.
    pub(crate) fn scratch_dir(port: u16) -> std::io::Result<std::path::PathBuf> {
        let dir = scratch_path(&port.to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    #[async_trait]
    impl Backend for RedisServer {
        fn encoding(&self) -> CounterEncoding {
            CounterEncoding::DecimalText
        }

        async fn open(&self) -> Result<Arc<dyn KeyValueStore>, KvError> {
            let store = RedisStore::connect(&self.url)
                .await
                .map_err(|error| KvError::Backend(format!("{error:#}")))?;
            Ok(Arc::new(store))
        }

        /// A plain `GET`, as Spin reads it.
        async fn raw(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
            let read = async {
                let client = Client::open(self.url.as_str())?;
                let mut connection = client.get_multiplexed_async_connection().await?;
                redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut connection)
                    .await
            };
            read.await
                .map_err(|error: RedisError| KvError::Backend(error.to_string()))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keeps_the_key_value_contract() -> anyhow::Result<()> {
        let server = RedisServer::start().await?;
        check_backend(&server).await?;
        Ok(())
    }

    #[tokio::test]
    async fn keys_are_not_prefixed_with_the_label() -> anyhow::Result<()> {
        let server = RedisServer::start().await?;
        let store = RedisStore::connect(server.url()).await?;
        store.increment("stock", 12).await?;
        assert_eq!(server.raw("stock").await?, Some(b"12".to_vec()));
        assert_eq!(store.get_keys().await?, ["stock"]);
        Ok(())
    }

    #[tokio::test]
    async fn get_keys_scans_past_one_batch() -> anyhow::Result<()> {
        let server = RedisServer::start().await?;
        let store = RedisStore::connect(server.url()).await?;
        let entries: Vec<(String, Vec<u8>)> = (0..2500)
            .map(|n| (format!("key-{n:04}"), Vec::new()))
            .collect();
        store.set_many(&entries).await?;
        let keys = store.get_keys().await?;
        let expected: Vec<String> = entries.into_iter().map(|(key, _)| key).collect();
        assert_eq!(keys, expected);
        Ok(())
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_fast_naming_the_url_and_cause() -> anyhow::Result<()> {
        // A port nobody listens on: bound, then released.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let url = format!("redis://user:secret@127.0.0.1:{port}/0");
        let started = Instant::now();
        let Err(error) = RedisStore::connect(&url).await else {
            anyhow::bail!("connected to a closed port");
        };
        let message = format!("{error:#}");
        assert!(started.elapsed() < Duration::from_secs(3), "{message}");
        assert!(
            message.contains(&format!("redis://user:***@127.0.0.1:{port}/0")),
            "{message}"
        );
        assert!(message.to_lowercase().contains("refused"), "{message}");
        assert!(!message.contains("secret"), "{message}");
        Ok(())
    }

    #[tokio::test]
    async fn an_invalid_url_is_a_clear_error() {
        let message = match RedisStore::connect("http://127.0.0.1:6379").await {
            Ok(_) => String::from("connected"),
            Err(error) => format!("{error:#}"),
        };
        assert!(
            message.starts_with("invalid Redis URL http://127.0.0.1:6379"),
            "{message}"
        );
    }

    #[test]
    fn passwords_are_hidden_from_messages() {
        assert_eq!(
            redacted("redis://:pw@localhost:6379/1"),
            "redis://:***@localhost:6379/1"
        );
        assert_eq!(
            redacted("rediss://user:p@ss@cache/0"),
            "rediss://user:***@cache/0"
        );
        assert_eq!(redacted("redis://localhost"), "redis://localhost");
        assert_eq!(redacted("redis://user@localhost"), "redis://user@localhost");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "benchmark: cargo test --release -p coupon-host --lib -- --ignored --nocapture throughput"]
    async fn throughput() -> anyhow::Result<()> {
        let server = RedisServer::start().await?;
        let store = Arc::new(RedisStore::connect(server.url()).await?);
        measure_throughput("RedisStore", store, Duration::from_secs(3)).await?;
        Ok(())
    }
}
