//! What the figures are measured against, in the same run on the same cores:
//! a native hyper server, the stores on their own, and the store round trips
//! each operation needs.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use coupon_host::KeyValueStore;
use coupon_host::kv::SqliteStore;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Store round trips on each operation's success path, as
/// `tests/api/round_trips.rs` counts them under the real components.
pub const ROUND_TRIPS: [(&str, u32); 3] = [("claim", 6), ("validate", 2), ("redeem", 5)];

/// Tasks hitting a store at once in the store ceilings.
const STORE_TASKS: usize = 16;

/// A store's single-key operations per second.
#[derive(Debug, Clone, Copy)]
pub struct StoreCeiling {
    pub increments: f64,
    pub gets: f64,
}

/// A hyper HTTP/1.1 server answering 200 "ok" to anything, served on the
/// caller's runtime until the handle is aborted: what a native Rust server
/// does on these cores, with no Wasm and no logging.
pub async fn hello_server() -> Result<(SocketAddr, AbortOnDrop)> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on a loopback port")?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let http = hyper::server::conn::http1::Builder::new();
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let service = service_fn(|_request| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                    Bytes::from_static(b"ok"),
                )))
            });
            let connection = http.serve_connection(TokioIo::new(stream), service);
            tokio::spawn(connection);
        }
    });
    Ok((address, AbortOnDrop(server)))
}

/// Stops a spawned task when dropped.
pub struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The host's SQLite store on its own, in this process: increments and gets
/// of one key from [`STORE_TASKS`] tasks, each for `length`.
pub async fn sqlite_store(path: &Path, length: Duration) -> Result<StoreCeiling> {
    let store: Arc<dyn KeyValueStore> = Arc::new(SqliteStore::open(path, "default")?);
    store.increment("ceiling", 0).await?;
    Ok(StoreCeiling {
        increments: per_second(&store, true, length).await?,
        gets: per_second(&store, false, length).await?,
    })
}

async fn per_second(
    store: &Arc<dyn KeyValueStore>,
    increment: bool,
    length: Duration,
) -> Result<f64> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..STORE_TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            let mut done = 0u64;
            while started.elapsed() < length {
                if increment {
                    store.increment("ceiling", 1).await?;
                } else {
                    store.get("ceiling").await?;
                }
                done += 1;
            }
            anyhow::Ok(done)
        });
    }
    let mut done = 0;
    while let Some(task) = tasks.join_next().await {
        done += task.context("a store task panicked")??;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// `redis-benchmark -t incr,get -n 100000 -q` (50 connections, its default)
/// against the Redis on `port`.
pub fn redis_benchmark(port: u16) -> Result<StoreCeiling> {
    let output = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "incr,get",
            "-n",
            "100000",
            "-q",
        ])
        .output()
        .context("cannot run redis-benchmark (it comes with redis-server)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let rate = |command: &str| -> Result<f64> {
        // Progress lines end in '\r'; the final one reads
        // "INCR: 123456.79 requests per second, p50=0.199 msec".
        let Some(line) = text
            .split(['\r', '\n'])
            .filter_map(|l| l.trim().strip_prefix(command)?.strip_prefix(':'))
            .rfind(|l| l.contains("requests per second"))
        else {
            bail!(
                "redis-benchmark printed no {command} rate ({}):\n{text}",
                output.status
            );
        };
        let number = line.split_whitespace().next().unwrap_or_default();
        number
            .parse()
            .with_context(|| format!("redis-benchmark's {command} rate {number:?} is not a number"))
    };
    Ok(StoreCeiling {
        increments: rate("INCR")?,
        gets: rate("GET")?,
    })
}
