//! Spin's runtime configuration file (`spin up --runtime-config-file`): which
//! backend holds each key-value store label, read as Spin reads it so that one
//! file serves both hosts.
//!
//! ```toml
//! [key_value_store.default]
//! type = "redis"
//! url = "redis://localhost:6379"
//!
//! [key_value_store.archive]
//! type = "spin"                # SQLite
//! path = "data/archive.db"     # relative to this file's directory
//! ```
//!
//! As in Spin (`crates/runtime-config`, `crates/key-value-spin`): a label with
//! no entry is an error except `default`, which is SQLite in
//! `<state_dir>/sqlite_key_value.db`; a `type = "spin"` entry without `path` is
//! a temporary in-memory store (not the default file); a store's directory is
//! created if missing. Only the `[key_value_store.*]` tables are read; Spin's
//! other sections are left to Spin.

use crate::kv::{
    KeyValueStore, MemoryStore, Observed, RedisStore, SpinRedis, SpinSqlite, SqliteDb,
    StoreFidelity,
};
use anyhow::Context as _;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The label every Spin app has a store for without configuring it.
pub const DEFAULT_LABEL: &str = "default";

/// The file, in the state directory, of the `default` store when the runtime
/// config does not place it: Spin's name for it.
pub const DEFAULT_STORE_FILE: &str = "sqlite_key_value.db";

/// The key-value part of a Spin runtime config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    path: PathBuf,
    key_value_stores: BTreeMap<String, StoreConfig>,
}

/// Where one label's data lives, as a runtime config file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// `type = "spin"`: SQLite in Spin's layout, in the file at `path`
    /// (already resolved against the config file's directory); without a
    /// path, a temporary in-memory store.
    Spin {
        /// The SQLite file.
        path: Option<PathBuf>,
    },
    /// `type = "redis"`: the Redis server at `url`, in Spin's layout.
    Redis {
        /// `redis://...`
        url: String,
    },
}

/// The stores of an app's labels, opened.
pub struct KeyValueStores {
    /// Each label's store.
    pub stores: HashMap<String, Arc<dyn KeyValueStore>>,
    /// Where each label's data lives, for a start-up message:
    /// `key-value default: SQLite .spin/sqlite_key_value.db`.
    pub description: String,
}

/// The file format: only `[key_value_store.<label>]` is read.
#[derive(Deserialize)]
struct FileToml {
    #[serde(default)]
    key_value_store: BTreeMap<String, StoreToml>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum StoreToml {
    Spin { path: Option<PathBuf> },
    Redis { url: String },
}

impl RuntimeConfig {
    /// Reads and parses the runtime config file at `path`.
    pub fn load(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read runtime config file {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parses `text`, the contents of the runtime config file at `path`
    /// (relative store paths are resolved against its directory, as Spin
    /// does). Fails, naming the file, on a store type other than `spin` and
    /// `redis` or on a field those types do not have.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let file: FileToml = toml::from_str(text)
            .with_context(|| format!("invalid runtime config file {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let key_value_stores = file
            .key_value_store
            .into_iter()
            .map(|(label, store)| {
                let store = match store {
                    StoreToml::Spin { path } => StoreConfig::Spin {
                        path: path.map(|path| dir.join(path)),
                    },
                    StoreToml::Redis { url } => StoreConfig::Redis { url },
                };
                (label, store)
            })
            .collect();
        Ok(Self {
            path: path.to_owned(),
            key_value_stores,
        })
    }

    /// The file this configuration came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the file says about `label`, if anything.
    pub fn key_value_store(&self, label: &str) -> Option<&StoreConfig> {
        self.key_value_stores.get(label)
    }
}

/// Opens the store of every label in `labels` as `spin up` would with the
/// runtime config file `runtime_config` (if any) and the state directory
/// `state_dir` (Spin's default: `.spin` beside `spin.toml`).
///
/// Labels configured with the same SQLite file share one [`SqliteDb`], and
/// labels with the same Redis URL one connection. Fails, naming the label, if
/// the file is invalid, a label other than `default` is not configured, a
/// directory cannot be created, a SQLite file cannot be opened, or a Redis
/// server cannot be reached. With [`StoreFidelity::Spin`], every store
/// behaves as Spin 4's store of its kind (a test fixture: see `kv::spin_faithful`).
pub async fn open_stores(
    runtime_config: Option<&Path>,
    state_dir: &Path,
    labels: &[String],
    fidelity: StoreFidelity,
    durability: Durability,
) -> anyhow::Result<KeyValueStores> {
    let config = runtime_config.map(RuntimeConfig::load).transpose()?;
    let mut opener = Opener {
        fidelity,
        durability,
        ..Opener::default()
    };
    let mut stores = HashMap::new();
    let mut description = String::new();
    let labels: BTreeSet<&String> = labels.iter().collect();
    for label in labels {
        let configured = config
            .as_ref()
            .and_then(|config| config.key_value_store(label));
        let store = match configured {
            Some(store) => store.clone(),
            None if label == DEFAULT_LABEL => StoreConfig::Spin {
                path: Some(state_dir.join(DEFAULT_STORE_FILE)),
            },
            None => anyhow::bail!(
                "the app uses key-value store {label:?}, but {} has no [key_value_store.{label}]",
                match &config {
                    Some(config) => format!("the runtime config file {}", config.path().display()),
                    None => "there is no runtime config file (--runtime-config-file), so it".into(),
                }
            ),
        };
        let (opened, place) = opener
            .open(label, &store)
            .await
            .with_context(|| format!("cannot open key-value store {label:?}"))?;
        if !description.is_empty() {
            description.push_str(", ");
        }
        let _ = write!(description, "key-value {label}: {place}");
        stores.insert(label.clone(), opened);
    }
    Ok(KeyValueStores {
        stores,
        description,
    })
}

/// Opens stores, sharing a backend between labels that name the same one.
#[derive(Default)]
struct Opener {
    fidelity: StoreFidelity,
    durability: Durability,
    sqlite: HashMap<PathBuf, SqliteDb>,
    redis: HashMap<String, RedisStore>,
}

impl Opener {
    /// `label`'s store as `config` places it, and where that is, in words.
    async fn open(
        &mut self,
        label: &str,
        config: &StoreConfig,
    ) -> anyhow::Result<(Arc<dyn KeyValueStore>, String)> {
        let (store, place) = self.open_ours(label, config).await?;
        let backend = match config {
            StoreConfig::Spin { path: None } => "memory",
            StoreConfig::Spin { path: Some(_) } => "sqlite",
            StoreConfig::Redis { .. } => "redis",
        };
        let store: Arc<dyn KeyValueStore> = match (self.fidelity, config) {
            (StoreFidelity::Host, _) => store,
            (StoreFidelity::Spin, StoreConfig::Spin { .. }) => Arc::new(SpinSqlite::new(store)),
            (StoreFidelity::Spin, StoreConfig::Redis { url }) => {
                Arc::new(SpinRedis(self.redis[url].clone()))
            }
        };
        let place = match self.fidelity {
            StoreFidelity::Host => place,
            StoreFidelity::Spin => format!("{place}, as Spin's store behaves"),
        };
        Ok((Arc::new(Observed::new(store, backend)), place))
    }

    /// `label`'s store as our own backend keeps it.
    async fn open_ours(
        &mut self,
        label: &str,
        config: &StoreConfig,
    ) -> anyhow::Result<(Arc<dyn KeyValueStore>, String)> {
        Ok(match config {
            StoreConfig::Spin { path: None } => (
                Arc::new(MemoryStore::new()),
                "in memory (type \"spin\" without a path)".to_owned(),
            ),
            StoreConfig::Spin { path: Some(path) } => {
                let db = match self.sqlite.get(path) {
                    Some(db) => db.clone(),
                    None => {
                        let db = open_sqlite(path)?;
                        self.sqlite.insert(path.clone(), db.clone());
                        db
                    }
                };
                (
                    Arc::new(db.store(label)),
                    format!("SQLite {}", path.display()),
                )
            }
            StoreConfig::Redis { url } => {
                let store = match self.redis.get(url) {
                    Some(store) => store.clone(),
                    None => {
                        let store = RedisStore::connect(url).await?;
                        if self.durability == Durability::Required {
                            store.check_durable().await?;
                        }
                        self.redis.insert(url.clone(), store.clone());
                        store
                    }
                };
                let place = format!("Redis {}", store.url());
                (Arc::new(store), place)
            }
        })
    }
}

/// Whether a store must keep every acknowledged write across a restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Refuse a Redis that does not fsync every write (the default).
    #[default]
    Required,
    /// `--allow-volatile-store`: run anyway (benchmarks, throwaway data).
    VolatileAllowed,
}

/// Opens the SQLite file at `path`, creating its directory as Spin does.
fn open_sqlite(path: &Path) -> anyhow::Result<SqliteDb> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    SqliteDb::open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<RuntimeConfig> {
        RuntimeConfig::parse(text, "/app/config/runtime-config.toml")
    }

    #[test]
    fn reads_spin_and_redis_stores() -> anyhow::Result<()> {
        let config = parse(
            r#"
            [key_value_store.default]
            type = "redis"
            url = "redis://localhost:6379"

            [key_value_store.relative]
            type = "spin"
            path = "data/kv.db"

            [key_value_store.absolute]
            type = "spin"
            path = "/var/kv.db"

            [key_value_store.temporary]
            type = "spin"

            [sqlite_database.default]
            type = "spin"
            "#,
        )?;
        let store = |label| config.key_value_store(label).cloned();
        assert_eq!(
            store("default"),
            Some(StoreConfig::Redis {
                url: "redis://localhost:6379".into()
            })
        );
        assert_eq!(
            store("relative"),
            Some(StoreConfig::Spin {
                path: Some("/app/config/data/kv.db".into())
            })
        );
        assert_eq!(
            store("absolute"),
            Some(StoreConfig::Spin {
                path: Some("/var/kv.db".into())
            })
        );
        assert_eq!(store("temporary"), Some(StoreConfig::Spin { path: None }));
        assert_eq!(store("absent"), None);
        assert_eq!(parse("")?.key_value_store("default"), None);
        Ok(())
    }

    fn parse_error(text: &str) -> String {
        match parse(text) {
            Ok(config) => format!("parsed: {config:?}"),
            Err(error) => format!("{error:#}"),
        }
    }

    #[test]
    fn unknown_types_and_fields_are_errors_naming_the_file() {
        let message = parse_error(
            r#"
            [key_value_store.default]
            type = "azure_cosmos"
            "#,
        );
        assert!(
            message.starts_with("invalid runtime config file /app/config/runtime-config.toml"),
            "{message}"
        );
        assert!(message.contains("azure_cosmos"), "{message}");
        assert!(message.contains("`spin` or `redis`"), "{message}");

        let message = parse_error(
            r#"
            [key_value_store.default]
            type = "spin"
            file = "kv.db"
            "#,
        );
        assert!(message.contains("runtime-config.toml"), "{message}");
        assert!(message.contains("unknown field `file`"), "{message}");

        let message = parse_error(
            r#"
            [key_value_store.default]
            url = "redis://localhost"
            "#,
        );
        assert!(message.contains("missing field `type`"), "{message}");

        let message = parse_error(
            r#"
            [key_value_store.default]
            type = "redis"
            "#,
        );
        assert!(message.contains("missing field `url`"), "{message}");
    }

    #[tokio::test]
    async fn the_default_store_is_sqlite_in_the_state_dir() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state_dir = dir.path().join("state");
        let opened = open_stores(
            None,
            &state_dir,
            &["default".into()],
            StoreFidelity::Host,
            Durability::Required,
        )
        .await?;
        let file = state_dir.join("sqlite_key_value.db");
        assert_eq!(
            opened.description,
            format!("key-value default: SQLite {}", file.display())
        );
        let store = opened.stores.get("default").context("no default store")?;
        store.increment("stock", 3).await?;
        drop(opened);

        let reopened = crate::kv::SqliteStore::open(&file, "default")?;
        assert_eq!(reopened.increment("stock", 0).await?, 3);
        Ok(())
    }

    #[tokio::test]
    async fn labels_follow_the_file_and_share_backends() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let config_file = dir.path().join("runtime-config.toml");
        std::fs::write(
            &config_file,
            r#"
            [key_value_store.default]
            type = "spin"
            path = "data/shared.db"

            [key_value_store.archive]
            type = "spin"
            path = "data/shared.db"

            [key_value_store.scratch]
            type = "spin"

            [key_value_store.unused]
            type = "redis"
            url = "redis://127.0.0.1:1"
            "#,
        )?;
        let labels = ["archive".into(), "default".into(), "scratch".into()];
        let opened = open_stores(
            Some(&config_file),
            &dir.path().join("state"),
            &labels,
            StoreFidelity::Host,
            Durability::Required,
        )
        .await?;
        let shared = dir.path().join("data").join("shared.db");
        assert_eq!(
            opened.description,
            format!(
                "key-value archive: SQLite {0}, key-value default: SQLite {0}, key-value scratch: in memory (type \"spin\" without a path)",
                shared.display()
            )
        );
        let store = |label: &str| opened.stores.get(label).context("missing store");
        store("default")?.set("k", b"default").await?;
        store("archive")?.set("k", b"archive").await?;
        store("scratch")?.set("k", b"scratch").await?;
        assert_eq!(store("default")?.get("k").await?, Some(b"default".to_vec()));
        assert_eq!(store("archive")?.get("k").await?, Some(b"archive".to_vec()));
        assert!(!dir.path().join("state").exists());
        Ok(())
    }

    #[tokio::test]
    async fn a_label_without_configuration_is_an_error() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let Err(error) = open_stores(
            None,
            dir.path(),
            &["sessions".into()],
            StoreFidelity::Host,
            Durability::Required,
        )
        .await
        else {
            anyhow::bail!("opened an unconfigured label");
        };
        let message = format!("{error:#}");
        assert!(message.contains("\"sessions\""), "{message}");
        assert!(message.contains("[key_value_store.sessions]"), "{message}");
        Ok(())
    }

    #[tokio::test]
    async fn an_unreachable_redis_names_the_label_and_url() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let config_file = dir.path().join("runtime-config.toml");
        std::fs::write(
            &config_file,
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:1\"\n",
        )?;
        let Err(error) = open_stores(
            Some(&config_file),
            dir.path(),
            &["default".into()],
            StoreFidelity::Host,
            Durability::Required,
        )
        .await
        else {
            anyhow::bail!("connected to port 1");
        };
        let message = format!("{error:#}");
        assert!(
            message.starts_with(
                "cannot open key-value store \"default\": cannot connect to Redis at redis://127.0.0.1:1"
            ),
            "{message}"
        );
        Ok(())
    }
}
