//! Runs a Spin app (`spin.toml`, spin-sdk 7 components on WASI 0.3) on
//! wasmtime without Spin: the harness of the integration tests.
//!
//! A request's path through the crate: [`App::handle`] picks the component by
//! route ([`routes`], from the [`manifest`]), hands the request to an instance
//! of it (`runtime`), and the guest reaches its key-value stores ([`kv`]), its
//! variables (`variables`) and the wall clock ([`clock`]) through host
//! interfaces. [`build`] builds the components on first use; [`schedule`] holds
//! the cron schedules of the work the host starts by itself (the expiry sweep).

#![warn(missing_docs)]

mod admission;
mod app;
mod bindings;
pub mod build;
mod cache;
pub mod clock;
pub mod kv;
pub mod manifest;
pub mod metrics;
pub mod probes;
mod refusal;
pub mod routes;
mod runtime;
pub mod runtime_config;
pub mod schedule;
pub mod serve;
mod variables;

pub use app::{App, AppBuilder, ClientAddr, DEFAULT_MAX_CONCURRENT_REQUESTS};
pub use clock::ManualClock;
pub use kv::{KeyValueStore, KvError, MemoryStore};
pub use manifest::Manifest;
pub use schedule::Schedule;
