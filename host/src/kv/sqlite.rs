//! The SQLite backend, in Spin's own layout so that `spin up` and this host
//! read and write each other's files.
//!
//! Spin's SQLite key-value store (`crates/key-value-spin/src/store.rs`) keeps
//! every store of an app in one table of one file:
//!
//! ```sql
//! CREATE TABLE spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL,
//!     value BLOB NOT NULL, PRIMARY KEY (store, key))
//! ```
//!
//! where `store` is the label and a counter is 8 little-endian bytes. This
//! backend keeps that layout but not Spin's way of reaching it (one locked
//! connection, rollback journal, `synchronous=FULL`, an fsync per write):
//! the file is switched to WAL with `synchronous=NORMAL`, reads go through a
//! small pool of reader connections on tokio's blocking threads, so they never
//! queue behind writes, and writes through one writer thread that commits
//! every write waiting at once in one transaction (group commit, below).

use super::{KeyValueStore, KvError, decode_counter, encode_counter};
use anyhow::Context as _;
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Writes one transaction takes at most.
const GROUP: usize = 512;

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// WAL pages past which the writer checkpoints by itself: only if the
/// checkpointer cannot keep up (SQLite's default is 1,000, about 4 MiB).
const WRITER_CHECKPOINT_PAGES: u32 = 10_000;

/// Reader connections per file: enough to keep both cores busy while a write
/// is in progress, few enough to keep memory and file handles small.
const READERS: usize = 4;

/// How long a connection waits for another process (say, `spin up` on the same
/// file) to release its lock before an operation fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Spin's table, created exactly as Spin creates it.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS spin_key_value (
    store TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB NOT NULL,

    PRIMARY KEY (store, key)
)";
const SELECT_VALUE: &str = "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2";
const SELECT_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2)";
const SELECT_KEYS: &str = "SELECT key FROM spin_key_value WHERE store = ?1";
const UPSERT: &str = "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
    ON CONFLICT (store, key) DO UPDATE SET value = excluded.value";
const INSERT_IF_ABSENT: &str = "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
    ON CONFLICT (store, key) DO NOTHING";
const SWAP: &str =
    "UPDATE spin_key_value SET value = ?4 WHERE store = ?1 AND key = ?2 AND value = ?3";
const DELETE: &str = "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2";

/// One SQLite file in Spin's layout, holding the stores of any number of
/// labels; [`store`](Self::store) gives the store of one label.
///
/// Cheap to clone: clones share the connections. Opening the same file twice
/// (in this process or another, `spin up` included) is safe: SQLite's locks
/// and a 5 s busy timeout keep every operation atomic across connections.
///
/// Durability: the file is in WAL mode with `synchronous=NORMAL`, so a write
/// is acknowledged once it is in the WAL file, before any fsync. An
/// acknowledged write survives the host process being killed (`SIGKILL`, a
/// panic, an OOM kill): the operating system still holds it and writes it out.
/// It may be lost if the machine itself loses power or the kernel crashes
/// before the next checkpoint's fsync; that is out of scope here.
#[derive(Clone)]
pub struct SqliteDb {
    inner: Arc<Db>,
}

struct Db {
    path: PathBuf,
    /// One connection on a thread of its own: writes queue here, in this
    /// process, rather than spinning on SQLite's file lock.
    writer: Writer,
    /// Up to [`READERS`] connections, opened on demand.
    readers: Pool,
}

/// The store of one label in a [`SqliteDb`]: rows whose `store` column is the
/// label. Counters are 8 little-endian bytes, as in Spin.
///
/// Operations run on tokio's blocking threads: call them inside a tokio
/// runtime.
#[derive(Clone)]
pub struct SqliteStore {
    db: SqliteDb,
    label: Arc<str>,
}

impl SqliteDb {
    /// Opens (creating it if needed) the SQLite file at `path`, switches it to
    /// WAL and creates Spin's `spin_key_value` table if it is missing. The
    /// directory must exist.
    pub fn open(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref().to_owned();
        let (writer, journal_mode) = open_writer(&path)
            .with_context(|| format!("cannot open SQLite key-value file {}", path.display()))?;
        anyhow::ensure!(
            journal_mode.eq_ignore_ascii_case("wal"),
            "SQLite key-value file {}: cannot switch it to WAL mode (it stays in {journal_mode:?} mode); is it on a network file system?",
            path.display()
        );
        let writer = Writer::start(writer, &path)
            .with_context(|| format!("cannot start the writer of {}", path.display()))?;
        Ok(Self {
            inner: Arc::new(Db {
                readers: Pool::new(&path, Role::Reader, READERS),
                writer,
                path,
            }),
        })
    }

    /// The store of `label` in this file.
    pub fn store(&self, label: impl Into<String>) -> SqliteStore {
        SqliteStore {
            db: self.clone(),
            label: label.into().into(),
        }
    }

    /// The file this database lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

impl SqliteStore {
    /// The store of `label` in the SQLite file at `path`: shorthand for
    /// [`SqliteDb::open`] then [`SqliteDb::store`]. Several labels of one file
    /// should share one [`SqliteDb`] instead, so that they share its writer.
    pub fn open(path: impl AsRef<Path>, label: impl Into<String>) -> anyhow::Result<Self> {
        Ok(SqliteDb::open(path)?.store(label))
    }

    /// The label this store answers for: the value of its rows' `store` column.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Runs `work` on a reader connection with this store's label.
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection, &str) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, KvError> {
        let label = self.label.clone();
        self.db
            .inner
            .readers
            .run(move |connection| work(connection, &label))
            .await
    }

    /// Runs `work` on the writer connection with this store's label, inside
    /// a transaction that may hold other writes: `work` is applied in full or
    /// not at all, and answered once the transaction has committed.
    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection, &str) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, KvError> {
        let label = self.label.clone();
        self.db
            .inner
            .writer
            .run(move |connection| work(connection, &label))
            .await
    }
}

#[async_trait]
impl KeyValueStore for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let key = key.to_owned();
        self.read(move |connection, label| select_value(connection, label, &key))
            .await
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.write(move |connection, label| {
            connection
                .prepare_cached(UPSERT)?
                .execute(params![label, key, value])?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        let key = key.to_owned();
        self.write(move |connection, label| {
            connection
                .prepare_cached(DELETE)?
                .execute(params![label, key])?;
            Ok(())
        })
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        let key = key.to_owned();
        self.read(move |connection, label| {
            Ok(connection
                .prepare_cached(SELECT_EXISTS)?
                .query_row(params![label, key], |row| row.get(0))?)
        })
        .await
    }

    async fn get_keys(&self) -> Result<Vec<String>, KvError> {
        self.read(|connection, label| {
            let mut statement = connection.prepare_cached(SELECT_KEYS)?;
            let keys = statement
                .query_map(params![label], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            Ok(keys)
        })
        .await
    }

    /// Reads, adds and writes inside the writer's `IMMEDIATE` transaction,
    /// which holds SQLite's write lock from the start: atomic across every
    /// connection to the file, in this process or another.
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let key = key.to_owned();
        self.write(move |connection, label| {
            let current = match select_value(connection, label, &key)? {
                Some(value) => decode_counter(&key, &value)?,
                None => 0,
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| KvError::Overflow { key: key.clone() })?;
            connection.prepare_cached(UPSERT)?.execute(params![
                label,
                key,
                encode_counter(next)
            ])?;
            Ok(next)
        })
        .await
    }

    /// One statement, so atomic by itself: an `INSERT ... DO NOTHING` when the
    /// key must be absent (unlike Spin's swap, which then overwrites), an
    /// `UPDATE ... WHERE value = expected` otherwise.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        let (key, expected, new) = (key.to_owned(), expected.map(<[u8]>::to_vec), new.to_vec());
        self.write(move |connection, label| {
            let changed = match expected {
                None => connection
                    .prepare_cached(INSERT_IF_ABSENT)?
                    .execute(params![label, key, new])?,
                Some(expected) => connection
                    .prepare_cached(SWAP)?
                    .execute(params![label, key, expected, new])?,
            };
            Ok(changed == 1)
        })
        .await
    }

    /// One read transaction, so the values come from one snapshot.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        let keys = keys.to_vec();
        self.read(move |connection, label| {
            let transaction = connection.transaction()?;
            let mut values = Vec::with_capacity(keys.len());
            for key in keys {
                let value = select_value(&transaction, label, &key)?;
                values.push((key, value));
            }
            transaction.commit()?;
            Ok(values)
        })
        .await
    }

    /// One write: every pair is stored, or none.
    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        let entries = entries.to_vec();
        self.write(move |connection, label| {
            let mut upsert = connection.prepare_cached(UPSERT)?;
            for (key, value) in &entries {
                upsert.execute(params![label, key, value])?;
            }
            Ok(())
        })
        .await
    }

    /// One write: every key is removed, or none.
    async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        let keys = keys.to_vec();
        self.write(move |connection, label| {
            let mut delete = connection.prepare_cached(DELETE)?;
            for key in &keys {
                delete.execute(params![label, key])?;
            }
            Ok(())
        })
        .await
    }
}

/// The value under `key` in `label`'s store. Spin writes values as BLOBs; a
/// TEXT value (written by some other tool) is read as its bytes.
fn select_value(
    connection: &Connection,
    label: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, Failure> {
    let value = connection
        .prepare_cached(SELECT_VALUE)?
        .query_row(params![label, key], |row| {
            Ok(row.get_ref(0)?.as_bytes().map(<[u8]>::to_vec))
        })
        .optional()?;
    match value {
        None => Ok(None),
        Some(Ok(bytes)) => Ok(Some(bytes)),
        Some(Err(error)) => Err(KvError::Backend(format!(
            "the value of {key:?} in store {label:?} is neither a BLOB nor TEXT: {error}"
        ))
        .into()),
    }
}

/// What a connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Writer,
    /// Refuses to write (`query_only`), so a mistake cannot bypass the writer.
    Reader,
}

/// Opens the writer connection of `path`: switches the file to WAL (which
/// persists in the file) and creates Spin's table. Returns the journal mode
/// SQLite settled on.
fn open_writer(path: &Path) -> rusqlite::Result<(Connection, String)> {
    let connection = open_connection(path, Role::Writer)?;
    let journal_mode =
        connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    connection.execute(CREATE_TABLE, [])?;
    Ok((connection, journal_mode))
}

/// Opens one connection to `path`, set up for its role.
fn open_connection(path: &Path, role: Role) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    if role == Role::Reader {
        connection.pragma_update(None, "query_only", true)?;
    }
    Ok(connection)
}

/// The writer connection on a thread of its own, committing writes in groups.
///
/// An `IMMEDIATE` transaction per write spent most of its time starting and
/// committing (and hopping to a blocking thread and back). The thread takes
/// every write waiting (up to [`GROUP`]) into one transaction, each inside a
/// savepoint so that a write that fails (a value that is not a counter, an
/// overflow) is rolled back alone, commits, and only then answers each: no
/// write is acknowledged before the commit that holds it, as before. Writes
/// arriving one at a time still commit one at a time.
///
/// Checkpoints (copying the WAL into the database file, with an fsync) run on
/// a thread of their own every 100 ms, not inside a commit: SQLite's
/// automatic checkpoint ran on the writer every ~4 MiB of WAL and held every
/// write waiting for its fsync, tens of milliseconds on this machine.
struct Writer {
    jobs: std::sync::mpsc::Sender<Job>,
    /// Dropped with the writer: the checkpointer stops.
    _checkpointer: std::sync::mpsc::Sender<()>,
}

/// One write: runs inside the group's transaction (not at all if there is
/// none), and returns what answers its caller once the transaction has
/// committed (or failed to).
type Job = Box<dyn FnOnce(Option<&Connection>) -> Answer + Send>;
type Answer = Box<dyn FnOnce(Result<(), &KvError>) + Send>;

impl Writer {
    fn start(connection: Connection, path: &Path) -> anyhow::Result<Self> {
        connection.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)?;
        let checkpoints = open_connection(path, Role::Writer)?;
        let (checkpointer, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                // PASSIVE: copies what no reader still needs, never waits
                // for (nor blocks) a writer or a reader.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    let _ = checkpoints.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                // Ends when every sender (the database) is gone.
                while let Ok(first) = queue.recv() {
                    let mut group = vec![first];
                    group.extend(queue.try_iter().take(GROUP - 1));
                    commit_group(&connection, &path, group);
                }
            })?;
        Ok(Self {
            jobs,
            _checkpointer: checkpointer,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, KvError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |connection| {
            let outcome = connection.map(|connection| in_savepoint(connection, work));
            Box::new(move |committed: Result<(), &KvError>| {
                let answered = match (committed, outcome) {
                    (Ok(()), Some(outcome)) => outcome,
                    (Err(error), _) => Err(error.clone()),
                    (Ok(()), None) => Err(KvError::Backend("the write did not run".into())),
                };
                let _ = answer.send(answered);
            })
        });
        let stopped = || KvError::Backend("the SQLite writer has stopped".into());
        self.jobs.send(job).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// Runs `group` in one `IMMEDIATE` transaction and answers each job.
fn commit_group(connection: &Connection, path: &Path, group: Vec<Job>) {
    let failed = |error: rusqlite::Error| {
        KvError::Backend(format!("SQLite key-value file {}: {error}", path.display()))
    };
    if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE") {
        let error = failed(error);
        for job in group {
            job(None)(Err(&error));
        }
        return;
    }
    let answers: Vec<Answer> = group.into_iter().map(|job| job(Some(connection))).collect();
    let committed = connection.execute_batch("COMMIT").map_err(failed);
    if committed.is_err() {
        // Nothing of the group is applied.
        let _ = connection.execute_batch("ROLLBACK");
    }
    for answer in answers {
        answer(committed.as_ref().map(|_| ()));
    }
}

/// Runs `work` inside a savepoint: applied in full, or rolled back alone.
fn in_savepoint<T>(
    connection: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, Failure>,
) -> Result<T, KvError> {
    let failed = |error: Failure| match error {
        Failure::Store(error) => error,
        Failure::Sqlite(error) => KvError::Backend(format!("SQLite: {error}")),
    };
    // Cached statements: a write is often a single increment, and parsing
    // these twice per write cost the writer thread as much as the write.
    let run = |sql: &str| connection.prepare_cached(sql)?.execute([]).map(|_| ());
    run("SAVEPOINT write").map_err(|e| failed(e.into()))?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(connection)))
        .unwrap_or_else(|_| Err(KvError::Backend("the SQLite write panicked".into()).into()));
    let ended = match outcome {
        Ok(_) => run("RELEASE write"),
        Err(_) => run("ROLLBACK TO write").and_then(|()| run("RELEASE write")),
    };
    match (outcome, ended) {
        (Ok(value), Ok(())) => Ok(value),
        (Err(error), _) => Err(failed(error)),
        (Ok(_), Err(error)) => Err(failed(error.into())),
    }
}

/// Up to `size` connections to one file, each lent to one operation at a time
/// on a blocking thread. Connections are opened on first need, and a
/// connection lost to a panic is replaced by a new one.
struct Pool {
    idle: Arc<Idle>,
    permits: Arc<Semaphore>,
}

/// How to open the pool's connections, and those not lent out.
struct Idle {
    path: PathBuf,
    role: Role,
    connections: Mutex<Vec<Connection>>,
}

impl Pool {
    fn new(path: &Path, role: Role, size: usize) -> Self {
        Self {
            idle: Arc::new(Idle {
                path: path.to_owned(),
                role,
                connections: Mutex::new(Vec::with_capacity(size)),
            }),
            permits: Arc::new(Semaphore::new(size)),
        }
    }

    /// Waits for a connection (without blocking a thread), then runs `work` on
    /// it on a blocking thread.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, KvError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| KvError::Backend("the SQLite connection pool was closed".into()))?;
        let idle = self.idle.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let taken = idle
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let mut connection = match taken {
                Some(connection) => connection,
                None => open_connection(&idle.path, idle.role)?,
            };
            let outcome = work(&mut connection);
            // A connection still inside a transaction (its rollback failed)
            // is closed, which rolls back, rather than lent again.
            if connection.is_autocommit() {
                idle.give_back(connection);
            }
            outcome
        })
        .await;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(Failure::Store(error))) => Err(error),
            Ok(Err(Failure::Sqlite(error))) => Err(KvError::Backend(format!(
                "SQLite key-value file {}: {error}",
                self.idle.path.display()
            ))),
            Err(error) => Err(KvError::Backend(format!(
                "SQLite key-value file {}: the operation failed: {error}",
                self.idle.path.display()
            ))),
        }
    }
}

impl Idle {
    fn give_back(&self, connection: Connection) {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(connection);
    }
}

/// Why work on a connection failed: SQLite itself, or the store's contract (a
/// value that is not a counter, an overflow).
enum Failure {
    Sqlite(rusqlite::Error),
    Store(KvError),
}

impl From<rusqlite::Error> for Failure {
    fn from(error: rusqlite::Error) -> Self {
        Self::Sqlite(error)
    }
}

impl From<KvError> for Failure {
    fn from(error: KvError) -> Self {
        Self::Store(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::conformance::{Backend, CounterEncoding, check_backend, measure_throughput};
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    use tempfile::TempDir;

    /// A fresh SQLite file in a temporary directory, removed at the end.
    struct SqliteFile {
        path: PathBuf,
        _dir: TempDir,
    }

    impl SqliteFile {
        fn new() -> anyhow::Result<Self> {
            let dir = tempfile::tempdir()?;
            Ok(Self {
                path: dir.path().join("sqlite_key_value.db"),
                _dir: dir,
            })
        }
    }

    #[async_trait]
    impl Backend for SqliteFile {
        fn encoding(&self) -> CounterEncoding {
            CounterEncoding::LittleEndian
        }

        async fn open(&self) -> Result<Arc<dyn KeyValueStore>, KvError> {
            let store = SqliteStore::open(&self.path, "default")
                .map_err(|error| KvError::Backend(format!("{error:#}")))?;
            Ok(Arc::new(store))
        }

        /// The row as Spin reads it.
        async fn raw(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
            let connection = Connection::open(&self.path)
                .map_err(|error| KvError::Backend(error.to_string()))?;
            connection
                .query_row(
                    "SELECT value FROM spin_key_value WHERE store = $1 AND key = $2",
                    ["default", key],
                    |row| row.get(0),
                )
                .optional()
                .map_err(|error| KvError::Backend(error.to_string()))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keeps_the_key_value_contract() -> anyhow::Result<()> {
        let file = SqliteFile::new()?;
        check_backend(&file).await?;
        Ok(())
    }

    /// Writes committed together stay apart: one that fails, even after it
    /// wrote, leaves nothing, and the others of its group all land.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_in_a_group_is_rolled_back_alone() -> anyhow::Result<()> {
        let file = SqliteFile::new()?;
        let store = SqliteStore::open(&file.path, "default")?;
        store.set("text", b"not a counter").await?;
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..200 {
            let store = store.clone();
            writes.spawn(async move {
                match i % 4 {
                    0 => store.increment("n", 1).await.map(|_| ()),
                    1 => store.set(&format!("k{i}"), b"v").await,
                    2 => store.increment("text", 1).await.map(|_| ()),
                    _ => {
                        store
                            .write(move |connection, label| {
                                connection.prepare_cached(UPSERT)?.execute(params![
                                    label,
                                    format!("partial{i}"),
                                    b"x".to_vec()
                                ])?;
                                Err(KvError::Backend("failed after writing".into()).into())
                            })
                            .await
                    }
                }
            });
        }
        let mut failed = 0;
        while let Some(outcome) = writes.join_next().await {
            failed += usize::from(outcome?.is_err());
        }
        assert_eq!(failed, 100, "every failing write, and only those, failed");
        assert_eq!(store.get("n").await?, Some(encode_counter(50).to_vec()));
        for i in 0..200 {
            let (set, partial) = (
                store.get(&format!("k{i}")).await?,
                store.get(&format!("partial{i}")).await?,
            );
            assert_eq!(set.is_some(), i % 4 == 1, "k{i}");
            assert_eq!(partial, None, "partial{i} was rolled back");
        }
        assert_eq!(store.get("text").await?, Some(b"not a counter".to_vec()));
        Ok(())
    }

    #[tokio::test]
    async fn creates_spins_table_and_keeps_labels_apart() -> anyhow::Result<()> {
        let file = SqliteFile::new()?;
        let db = SqliteDb::open(&file.path)?;
        let (campaigns, sessions) = (db.store("campaigns"), db.store("sessions"));
        campaigns.set("k", b"campaign").await?;
        sessions.increment("k", 3).await?;
        assert_eq!(campaigns.get("k").await?, Some(b"campaign".to_vec()));
        assert_eq!(sessions.get("k").await?, Some(3i64.to_le_bytes().to_vec()));
        assert_eq!(campaigns.get_keys().await?, ["k"]);
        sessions.delete("k").await?;
        assert!(campaigns.exists("k").await?);

        let connection = Connection::open(&file.path)?;
        let mut columns = connection.prepare("PRAGMA table_info(spin_key_value)")?;
        let columns: Vec<(String, String, bool, i64)> = columns
            .query_map([], |row| {
                Ok((row.get(1)?, row.get(2)?, row.get(3)?, row.get(5)?))
            })?
            .collect::<Result<_, _>>()?;
        let column = |name: &str, kind: &str, key_position| {
            (name.to_owned(), kind.to_owned(), true, key_position)
        };
        assert_eq!(
            columns,
            [
                column("store", "TEXT", 1),
                column("key", "TEXT", 2),
                column("value", "BLOB", 0),
            ]
        );
        let rows: Vec<(String, String, Vec<u8>)> = connection
            .prepare("SELECT store, key, value FROM spin_key_value")?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<Result<_, _>>()?;
        assert_eq!(
            rows,
            [("campaigns".into(), "k".into(), b"campaign".to_vec())]
        );
        let journal_mode: String =
            connection.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
        assert_eq!(journal_mode, "wal");
        Ok(())
    }

    /// A file written the way Spin writes it (its statements, rollback
    /// journal) is read and updated here, and Spin's statements read the result.
    #[tokio::test]
    async fn reads_and_writes_a_file_spin_wrote() -> anyhow::Result<()> {
        let file = SqliteFile::new()?;
        let spin = Connection::open(&file.path)?;
        spin.execute(
            "CREATE TABLE IF NOT EXISTS spin_key_value (
                           store TEXT NOT NULL,
                           key   TEXT NOT NULL,
                           value BLOB NOT NULL,

                           PRIMARY KEY (store, key)
                        )",
            [],
        )?;
        let spin_set = "INSERT INTO spin_key_value (store, key, value) VALUES ($1, $2, $3)
                     ON CONFLICT(store, key) DO UPDATE SET value=$3";
        spin.execute(
            spin_set,
            rusqlite::params!["default", "stock", 41i64.to_le_bytes()],
        )?;
        spin.execute(
            spin_set,
            rusqlite::params!["default", "name", b"spring".to_vec()],
        )?;
        drop(spin);

        let store = SqliteStore::open(&file.path, "default")?;
        assert_eq!(store.get("name").await?, Some(b"spring".to_vec()));
        assert_eq!(store.increment("stock", 1).await?, 42);

        let spin = Connection::open(&file.path)?;
        let stock: Vec<u8> = spin.query_row(
            "SELECT value FROM spin_key_value WHERE store=$1 AND key=$2",
            ["default", "stock"],
            |row| row.get(0),
        )?;
        assert_eq!(i64::from_le_bytes(stock.as_slice().try_into()?), 42);
        Ok(())
    }

    #[test]
    fn a_missing_directory_is_a_clear_error() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("absent").join("kv.db");
        let Err(error) = SqliteDb::open(&path) else {
            anyhow::bail!("opened a file in a missing directory");
        };
        let message = format!("{error:#}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        Ok(())
    }

    /// The database file of [`durability_writer`], when it runs as the child
    /// of [`acknowledged_writes_survive_sigkill`].
    const DURABILITY_CHILD_DB: &str = "COUPON_HOST_SQLITE_DURABILITY_DB";

    /// Kills (SIGKILL) a process in the middle of writing, then checks that
    /// every write it had acknowledged is in the file.
    #[tokio::test]
    async fn acknowledged_writes_survive_sigkill() -> anyhow::Result<()> {
        let file = SqliteFile::new()?;
        let path = file.path.clone();
        let acknowledged = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<i64>> {
            let mut child = Command::new(std::env::current_exe()?)
                .args([
                    "--exact",
                    "kv::sqlite::tests::durability_writer",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(DURABILITY_CHILD_DB, &path)
                .stdout(Stdio::piped())
                .spawn()?;
            let stdout = child.stdout.take().context("the child has no stdout")?;
            let mut acknowledged = Vec::new();
            let mut killed = false;
            for line in BufReader::new(stdout).lines() {
                if let Some(write) = line?.strip_prefix("ack ") {
                    acknowledged.push(write.parse()?);
                }
                if acknowledged.len() == 500 && !killed {
                    child.kill()?;
                    killed = true;
                }
            }
            let status = child.wait()?;
            anyhow::ensure!(
                status.signal() == Some(9),
                "the writer was not killed: {status}"
            );
            Ok(acknowledged)
        })
        .await??;

        let store = SqliteStore::open(&file.path, "default")?;
        for write in &acknowledged {
            assert_eq!(
                store.get(&format!("key-{write}")).await?,
                Some(write.to_string().into_bytes()),
                "acknowledged write {write} was lost"
            );
        }
        let last = acknowledged.last().copied().unwrap_or_default();
        assert!(last >= 500);
        assert!(store.increment("count", 0).await? >= last);
        Ok(())
    }

    /// The child of [`acknowledged_writes_survive_sigkill`]: writes and
    /// acknowledges on stdout until killed (at most 60 s).
    #[tokio::test]
    #[ignore = "run by acknowledged_writes_survive_sigkill"]
    async fn durability_writer() -> anyhow::Result<()> {
        let Some(path) = std::env::var_os(DURABILITY_CHILD_DB) else {
            return Ok(());
        };
        let store = SqliteStore::open(path, "default")?;
        let started = std::time::Instant::now();
        for write in 1i64.. {
            store
                .set(&format!("key-{write}"), write.to_string().as_bytes())
                .await?;
            assert_eq!(store.increment("count", 1).await?, write);
            println!("ack {write}");
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "benchmark: cargo test --release -p coupon-host --lib -- --ignored --nocapture throughput"]
    async fn throughput() -> anyhow::Result<()> {
        let file = SqliteFile::new()?;
        let store = Arc::new(SqliteStore::open(&file.path, "default")?);
        measure_throughput("SqliteStore", store, Duration::from_secs(3)).await?;
        Ok(())
    }
}
