//! The contract every [`KeyValueStore`] backend must keep, as tests any
//! backend's module runs against a fresh, empty store.
//!
//! [`check_backend`] is the whole suite: single-store checks, the bytes as the
//! backend's own client sees them, races between tasks, and a second instance
//! opened on the same storage (as a second process, or `spin up`, would).
//! [`check_contract`] is the single-store part alone.

use super::{KeyValueStore, KvError};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;
use tokio::task::JoinHandle;

type Outcome = Result<(), KvError>;

/// How a backend keeps the counters `increment` writes: as Spin's backend of
/// the same kind does, so each reads the other's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CounterEncoding {
    /// 8 little-endian bytes: Spin's SQLite store, and the in-memory store.
    LittleEndian,
    /// Decimal text: Spin's Redis store.
    DecimalText,
}

impl CounterEncoding {
    /// `value` as this encoding stores it.
    pub(crate) fn encode(self, value: i64) -> Vec<u8> {
        match self {
            Self::LittleEndian => value.to_le_bytes().to_vec(),
            Self::DecimalText => value.to_string().into_bytes(),
        }
    }
}

/// A backend under test: its storage, which instances open and which the
/// backend's own client reads.
#[async_trait]
pub(crate) trait Backend: Sync {
    /// How this backend stores counters.
    fn encoding(&self) -> CounterEncoding;

    /// A new instance (own connections) on the backend's storage, as another
    /// process would open it.
    async fn open(&self) -> Result<Arc<dyn KeyValueStore>, KvError>;

    /// The bytes under `key`, read with the backend's own client (SQL, a Redis
    /// `GET`), not through [`KeyValueStore`].
    async fn raw(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
}

/// Runs the whole suite on `backend`, whose storage must start empty; leaves
/// it empty.
pub(crate) async fn check_backend(backend: &dyn Backend) -> Outcome {
    let store = backend.open().await?;
    check_store(store.as_ref(), backend.encoding()).await?;
    stored_bytes_are_what_the_backends_client_reads(backend, store.as_ref()).await?;
    concurrent_increments_sum_exactly(&store).await?;
    exactly_one_racer_creates_a_missing_key(&store).await?;
    compare_and_swap_loops_lose_no_update(&store).await?;
    a_second_instance_reads_what_the_first_wrote(backend).await?;
    increments_from_two_instances_sum_exactly(backend).await?;
    assert_eq!(store.get_keys().await?, Vec::<String>::new());
    Ok(())
}

/// Runs the single-store checks on `store`, which must start empty and keep
/// counters as Spin's SQLite store does.
pub(crate) async fn check_contract(store: &dyn KeyValueStore) -> Outcome {
    check_store(store, CounterEncoding::LittleEndian).await
}

async fn check_store(store: &dyn KeyValueStore, encoding: CounterEncoding) -> Outcome {
    missing_keys_are_absent_not_errors(store).await?;
    values_are_stored_replaced_and_deleted(store).await?;
    counters_use_the_backends_encoding(store, encoding).await?;
    non_counters_cannot_be_incremented(store).await?;
    compare_and_swap_is_conditional(store).await?;
    batches_act_on_every_key(store).await?;
    Ok(())
}

async fn missing_keys_are_absent_not_errors(store: &dyn KeyValueStore) -> Outcome {
    assert_eq!(store.get("missing").await?, None);
    assert!(!store.exists("missing").await?);
    store.delete("missing").await?;
    assert_eq!(store.get_keys().await?, Vec::<String>::new());
    assert_eq!(store.get_many(&[]).await?, []);
    store.set_many(&[]).await?;
    store.delete_many(&[]).await
}

async fn values_are_stored_replaced_and_deleted(store: &dyn KeyValueStore) -> Outcome {
    store.set("a", b"one").await?;
    store.set("b", b"").await?;
    assert_eq!(store.get("a").await?, Some(b"one".to_vec()));
    assert_eq!(store.get("b").await?, Some(Vec::new()));
    assert!(store.exists("b").await?);
    store.set("a", b"two").await?;
    assert_eq!(store.get("a").await?, Some(b"two".to_vec()));
    let mut keys = store.get_keys().await?;
    keys.sort();
    assert_eq!(keys, ["a", "b"]);
    store.delete("a").await?;
    store.delete("b").await?;
    assert_eq!(store.get("a").await?, None);
    assert!(!store.exists("b").await?);
    Ok(())
}

async fn counters_use_the_backends_encoding(
    store: &dyn KeyValueStore,
    encoding: CounterEncoding,
) -> Outcome {
    assert_eq!(store.increment("n", 0).await?, 0);
    assert_eq!(store.get("n").await?, Some(encoding.encode(0)));
    assert_eq!(store.increment("n", 5).await?, 5);
    assert_eq!(store.increment("n", -7).await?, -2);
    assert_eq!(store.get("n").await?, Some(encoding.encode(-2)));
    store.set("m", &encoding.encode(41)).await?;
    assert_eq!(store.increment("m", 1).await?, 42);
    store.set("min", &encoding.encode(i64::MIN)).await?;
    assert_eq!(store.increment("min", 0).await?, i64::MIN);
    assert_eq!(
        store.increment("min", -1).await,
        Err(KvError::Overflow { key: "min".into() })
    );
    store.set("max", &encoding.encode(i64::MAX)).await?;
    assert_eq!(
        store.increment("max", 1).await,
        Err(KvError::Overflow { key: "max".into() })
    );
    assert_eq!(store.increment("max", 0).await?, i64::MAX);
    assert_eq!(store.get("max").await?, Some(encoding.encode(i64::MAX)));
    store
        .delete_many(&["n".into(), "m".into(), "min".into(), "max".into()])
        .await
}

async fn non_counters_cannot_be_incremented(store: &dyn KeyValueStore) -> Outcome {
    // Not a counter in either encoding: 6 bytes, and not a decimal number.
    store.set("text", b"spring").await?;
    assert_eq!(
        store.increment("text", 1).await,
        Err(KvError::NotACounter {
            key: "text".into(),
            len: 6
        })
    );
    assert_eq!(store.get("text").await?, Some(b"spring".to_vec()));
    store.delete("text").await
}

async fn compare_and_swap_is_conditional(store: &dyn KeyValueStore) -> Outcome {
    assert!(store.compare_and_swap("k", None, b"first").await?);
    assert!(!store.compare_and_swap("k", None, b"second").await?);
    assert!(
        !store
            .compare_and_swap("k", Some(b"other"), b"second")
            .await?
    );
    assert!(!store.compare_and_swap("k", Some(b""), b"second").await?);
    assert_eq!(store.get("k").await?, Some(b"first".to_vec()));
    assert!(
        store
            .compare_and_swap("k", Some(b"first"), b"second")
            .await?
    );
    assert_eq!(store.get("k").await?, Some(b"second".to_vec()));
    assert!(!store.compare_and_swap("absent", Some(b""), b"x").await?);
    assert!(!store.exists("absent").await?);
    store.delete("k").await
}

async fn batches_act_on_every_key(store: &dyn KeyValueStore) -> Outcome {
    store
        .set_many(&[("x".into(), b"1".to_vec()), ("y".into(), b"2".to_vec())])
        .await?;
    let got = store
        .get_many(&["y".into(), "none".into(), "x".into(), "y".into()])
        .await?;
    assert_eq!(
        got,
        [
            ("y".to_owned(), Some(b"2".to_vec())),
            ("none".to_owned(), None),
            ("x".to_owned(), Some(b"1".to_vec())),
            ("y".to_owned(), Some(b"2".to_vec())),
        ]
    );
    store
        .set_many(&[("x".into(), b"3".to_vec()), ("z".into(), Vec::new())])
        .await?;
    let mut keys = store.get_keys().await?;
    keys.sort();
    assert_eq!(keys, ["x", "y", "z"]);
    assert_eq!(store.get("x").await?, Some(b"3".to_vec()));
    store
        .delete_many(&["x".into(), "y".into(), "none".into()])
        .await?;
    assert_eq!(store.get_keys().await?, ["z"]);
    store.delete_many(&["z".into()]).await?;
    assert_eq!(store.get_keys().await?, Vec::<String>::new());
    Ok(())
}

/// What the store writes is what the backend's own client (and so Spin)
/// reads: arbitrary bytes unchanged, counters in the backend's encoding.
async fn stored_bytes_are_what_the_backends_client_reads(
    backend: &dyn Backend,
    store: &dyn KeyValueStore,
) -> Outcome {
    let binary: Vec<u8> = (0..=255).collect();
    store.set("binary", &binary).await?;
    store.set("empty", b"").await?;
    store.increment("counter", -42).await?;
    assert_eq!(backend.raw("binary").await?, Some(binary));
    assert_eq!(backend.raw("empty").await?, Some(Vec::new()));
    assert_eq!(
        backend.raw("counter").await?,
        Some(backend.encoding().encode(-42))
    );
    assert_eq!(backend.raw("missing").await?, None);
    store
        .delete_many(&["binary".into(), "empty".into(), "counter".into()])
        .await
}

/// 50 tasks x 200 increments on one instance sum to 10,000.
async fn concurrent_increments_sum_exactly(store: &Arc<dyn KeyValueStore>) -> Outcome {
    const TASKS: i64 = 50;
    const INCREMENTS: i64 = 200;
    let tasks = (0..TASKS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..INCREMENTS {
                    store.increment("sum", 1).await?;
                }
                Ok(())
            })
        })
        .collect();
    join_all(tasks).await?;
    assert_eq!(store.increment("sum", 0).await?, TASKS * INCREMENTS);
    store.delete("sum").await
}

/// Of 16 tasks that start together, each trying to create the same key, exactly
/// one succeeds, and the key holds its value.
async fn exactly_one_racer_creates_a_missing_key(store: &Arc<dyn KeyValueStore>) -> Outcome {
    const RACERS: usize = 16;
    let start = Arc::new(Barrier::new(RACERS));
    let tasks: Vec<JoinHandle<Result<bool, KvError>>> = (0..RACERS)
        .map(|racer| {
            let (store, start) = (store.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                store
                    .compare_and_swap("winner", None, racer.to_string().as_bytes())
                    .await
            })
        })
        .collect();
    let won = join_all(tasks).await?;
    let winners: Vec<usize> = (0..RACERS).filter(|racer| won[*racer]).collect();
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(
        store.get("winner").await?,
        Some(winners[0].to_string().into_bytes())
    );
    store.delete("winner").await
}

/// 8 tasks x 25 read-modify-write updates through compare-and-swap (retrying
/// on conflict) sum to 200: a swap never reports success it did not have.
async fn compare_and_swap_loops_lose_no_update(store: &Arc<dyn KeyValueStore>) -> Outcome {
    const TASKS: u64 = 8;
    const UPDATES: u64 = 25;
    store.set("cas-sum", b"0").await?;
    let tasks = (0..TASKS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..UPDATES {
                    loop {
                        let current = store.get("cas-sum").await?.unwrap_or_default();
                        let next = parse_decimal(&current) + 1;
                        let new = next.to_string();
                        if store
                            .compare_and_swap("cas-sum", Some(&current), new.as_bytes())
                            .await?
                        {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                }
                Ok(())
            })
        })
        .collect();
    join_all(tasks).await?;
    let total = store.get("cas-sum").await?.unwrap_or_default();
    assert_eq!(parse_decimal(&total), TASKS * UPDATES);
    store.delete("cas-sum").await
}

/// Another instance on the same storage reads counters, values and deletions
/// written by the first, and the first reads the second's.
async fn a_second_instance_reads_what_the_first_wrote(backend: &dyn Backend) -> Outcome {
    let first = backend.open().await?;
    let second = backend.open().await?;
    assert_eq!(first.increment("shared-counter", 7).await?, 7);
    assert_eq!(second.increment("shared-counter", 0).await?, 7);
    assert_eq!(second.increment("shared-counter", 1).await?, 8);
    assert_eq!(
        first.get("shared-counter").await?,
        Some(backend.encoding().encode(8))
    );
    first.set("shared-value", b"from the first").await?;
    assert_eq!(
        second.get("shared-value").await?,
        Some(b"from the first".to_vec())
    );
    assert!(
        second
            .compare_and_swap("shared-value", Some(b"from the first"), b"from the second")
            .await?
    );
    assert_eq!(
        first.get("shared-value").await?,
        Some(b"from the second".to_vec())
    );
    second
        .delete_many(&["shared-counter".into(), "shared-value".into()])
        .await?;
    assert!(!first.exists("shared-counter").await?);
    assert_eq!(first.get_keys().await?, Vec::<String>::new());
    Ok(())
}

/// Two instances (two connection pools, as two processes would have), 4 tasks
/// each x 250 increments on one key, sum to 2,000.
async fn increments_from_two_instances_sum_exactly(backend: &dyn Backend) -> Outcome {
    const TASKS_PER_INSTANCE: i64 = 4;
    const INCREMENTS: i64 = 250;
    let instances = [backend.open().await?, backend.open().await?];
    let tasks = instances
        .iter()
        .flat_map(|store| (0..TASKS_PER_INSTANCE).map(move |_| store.clone()))
        .map(|store| {
            tokio::spawn(async move {
                for _ in 0..INCREMENTS {
                    store.increment("two-instances", 1).await?;
                }
                Ok(())
            })
        })
        .collect();
    join_all(tasks).await?;
    let expected = 2 * TASKS_PER_INSTANCE * INCREMENTS;
    assert_eq!(instances[0].increment("two-instances", 0).await?, expected);
    assert_eq!(instances[1].increment("two-instances", 0).await?, expected);
    instances[0].delete("two-instances").await
}

/// The outcomes of `tasks`, in order; a task's panic is re-raised here.
async fn join_all<T>(tasks: Vec<JoinHandle<Result<T, KvError>>>) -> Result<Vec<T>, KvError> {
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(outcome) => outcomes.push(outcome?),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => return Err(KvError::Backend(format!("a task was cancelled: {error}"))),
        }
    }
    Ok(outcomes)
}

/// `bytes` as a decimal number; panics (failing the test) on anything else.
fn parse_decimal(bytes: &[u8]) -> u64 {
    let text = std::str::from_utf8(bytes).unwrap_or_default();
    text.parse()
        .unwrap_or_else(|_| panic!("not a decimal number: {bytes:?}"))
}

/// Operations per second of `store` for increments and gets of one key, by
/// one task and by 16 concurrent tasks, each run lasting about `duration`.
/// Prints one line per figure under `name`. Meant for ignored benchmark tests.
pub(crate) async fn measure_throughput(
    name: &str,
    store: Arc<dyn KeyValueStore>,
    duration: Duration,
) -> Outcome {
    store.increment("bench", 0).await?;
    for tasks in [1, 16] {
        for operation in [Operation::Increment, Operation::Get] {
            let per_second = run_for(&store, operation, tasks, duration).await?;
            println!("{name}: {operation:?} x {tasks} task(s): {per_second:.0} ops/s");
        }
    }
    store.delete("bench").await
}

#[derive(Clone, Copy, Debug)]
enum Operation {
    Increment,
    Get,
}

async fn run_for(
    store: &Arc<dyn KeyValueStore>,
    operation: Operation,
    tasks: usize,
    duration: Duration,
) -> Result<f64, KvError> {
    let started = Instant::now();
    let handles = (0..tasks)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while started.elapsed() < duration {
                    match operation {
                        Operation::Increment => {
                            store.increment("bench", 1).await?;
                        }
                        Operation::Get => {
                            store.get("bench").await?;
                        }
                    }
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let done: u64 = join_all(handles).await?.into_iter().sum();
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemoryStore;

    /// The in-memory store as a backend: instances are clones sharing one map.
    struct Memory(MemoryStore);

    #[async_trait]
    impl Backend for Memory {
        fn encoding(&self) -> CounterEncoding {
            CounterEncoding::LittleEndian
        }

        async fn open(&self) -> Result<Arc<dyn KeyValueStore>, KvError> {
            Ok(Arc::new(self.0.clone()))
        }

        async fn raw(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
            Ok(self.0.get(key))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_memory_store_keeps_the_whole_contract() -> Outcome {
        let memory = Memory(MemoryStore::new());
        check_backend(&memory).await?;
        assert!(memory.0.keys().is_empty());
        Ok(())
    }

    #[test]
    fn counter_encodings_are_spins() {
        assert_eq!(
            CounterEncoding::LittleEndian.encode(-2),
            [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(CounterEncoding::DecimalText.encode(-2), b"-2");
    }
}
