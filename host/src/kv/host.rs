//! The guest-facing key-value interfaces over [`KeyValueStore`]:
//! `spin:key-value@3.0.0` (async funcs, what `spin_sdk::key_value` uses) and
//! `wasi:keyvalue@0.2.0-draft2` `store`, `atomics` and `batch` (what
//! `spin_sdk::experimental::wasi::keyvalue` uses, the only way to increment).
//!
//! A component opens a store by label. Like Spin, it may open only the labels
//! listed in its `key_value_stores`: another label the app knows is
//! `access-denied`, a label it does not know is `no-such-store`.

use super::{KeyValueStore, KvError};
use crate::bindings::spin::key_value::key_value as spin_kv;
use crate::bindings::wasi::keyvalue::{atomics, batch, store as wasi_store};
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::component::{Accessor, FutureReader, HasData, Resource, ResourceTable, StreamReader};

/// A `spin:key-value` store a guest opened.
pub struct SpinStore(Arc<dyn KeyValueStore>);

/// A `wasi:keyvalue` bucket a guest opened.
pub struct Bucket(Arc<dyn KeyValueStore>);

/// A `wasi:keyvalue` compare-and-swap in progress: the value `key` held when it
/// was read, which `swap` requires to be unchanged.
pub struct Cas {
    store: Arc<dyn KeyValueStore>,
    key: String,
    current: Option<Vec<u8>>,
}

/// The stores one component may open, shared by all its instances.
#[derive(Clone, Default)]
pub(crate) struct StoreAccess {
    /// Every label the app has a backend for.
    labels: Arc<HashMap<String, Label>>,
}

/// A store label as one component sees it.
struct Label {
    store: Arc<dyn KeyValueStore>,
    /// Listed in the component's `key_value_stores`.
    allowed: bool,
}

/// Why a component could not open a store.
enum OpenError {
    NoSuchStore,
    AccessDenied,
}

impl StoreAccess {
    /// Access to the `allowed` labels among the app's `backends`.
    pub(crate) fn new(
        backends: &HashMap<String, Arc<dyn KeyValueStore>>,
        allowed: &[String],
    ) -> Self {
        let labels = backends
            .iter()
            .map(|(label, store)| {
                let access = Label {
                    store: Arc::new(super::detached::Detached(store.clone())),
                    allowed: allowed.contains(label),
                };
                (label.clone(), access)
            })
            .collect();
        Self {
            labels: Arc::new(labels),
        }
    }

    fn open(&self, label: &str) -> Result<Arc<dyn KeyValueStore>, OpenError> {
        match self.labels.get(label) {
            None => Err(OpenError::NoSuchStore),
            Some(Label { allowed: false, .. }) => Err(OpenError::AccessDenied),
            Some(Label { store, .. }) => Ok(store.clone()),
        }
    }
}

/// Marks the key-value interfaces for the linker: their host state is a
/// [`KvView`].
pub(crate) struct Kv;

impl HasData for Kv {
    type Data<'a> = KvView<'a>;
}

/// What the key-value interfaces reach in an instance's state.
pub(crate) struct KvView<'a> {
    pub(crate) access: &'a StoreAccess,
    pub(crate) table: &'a mut ResourceTable,
}

// ---- spin:key-value@3.0.0 ----

impl From<OpenError> for spin_kv::Error {
    fn from(error: OpenError) -> Self {
        match error {
            OpenError::NoSuchStore => Self::NoSuchStore,
            OpenError::AccessDenied => Self::AccessDenied,
        }
    }
}

fn spin_error(error: KvError) -> spin_kv::Error {
    spin_kv::Error::Other(error.to_string())
}

/// A backend's result as the guest gets it: its error as the interface's
/// error, except a [`KvError::Fatal`], which traps the guest's call as a
/// panic in Spin's host would end it.
fn answer<T, E>(
    result: Result<T, KvError>,
    error: fn(KvError) -> E,
) -> wasmtime::Result<Result<T, E>> {
    match result {
        Err(KvError::Fatal(message)) => Err(wasmtime::Error::msg(message)),
        other => Ok(other.map_err(error)),
    }
}

/// The backend behind an open `spin:key-value` store.
fn spin_store<T>(
    accessor: &Accessor<T, Kv>,
    store: &Resource<SpinStore>,
) -> wasmtime::Result<Arc<dyn KeyValueStore>> {
    accessor.with(|mut access| Ok(access.get().table.get(store)?.0.clone()))
}

impl spin_kv::Host for KvView<'_> {}

impl spin_kv::HostStore for KvView<'_> {
    async fn drop(&mut self, store: Resource<SpinStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

impl<T> spin_kv::HostStoreWithStore<T> for Kv {
    async fn open(
        accessor: &Accessor<T, Self>,
        label: String,
    ) -> wasmtime::Result<Result<Resource<SpinStore>, spin_kv::Error>> {
        accessor.with(|mut access| {
            let view = access.get();
            match view.access.open(&label) {
                Ok(store) => Ok(Ok(view.table.push(SpinStore(store))?)),
                Err(error) => Ok(Err(error.into())),
            }
        })
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        store: Resource<SpinStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, spin_kv::Error>> {
        let store = spin_store(accessor, &store)?;
        answer(store.get(&key).await, spin_error)
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        store: Resource<SpinStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        let store = spin_store(accessor, &store)?;
        answer(store.set(&key, &value).await, spin_error)
    }

    async fn delete(
        accessor: &Accessor<T, Self>,
        store: Resource<SpinStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        let store = spin_store(accessor, &store)?;
        answer(store.delete(&key).await, spin_error)
    }

    async fn exists(
        accessor: &Accessor<T, Self>,
        store: Resource<SpinStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, spin_kv::Error>> {
        let store = spin_store(accessor, &store)?;
        answer(store.exists(&key).await, spin_error)
    }

    /// Streams every key, then reports on the future whether listing them
    /// failed (an empty stream and the error).
    async fn get_keys(
        accessor: &Accessor<T, Self>,
        store: Resource<SpinStore>,
    ) -> wasmtime::Result<(
        StreamReader<String>,
        FutureReader<Result<(), spin_kv::Error>>,
    )> {
        let store = spin_store(accessor, &store)?;
        let (keys, outcome) = match store.get_keys().await {
            Ok(keys) => (keys, Ok(())),
            Err(KvError::Fatal(message)) => return Err(wasmtime::Error::msg(message)),
            Err(error) => (Vec::new(), Err(spin_error(error))),
        };
        accessor.with(|mut access| {
            let keys = StreamReader::new(&mut access, keys)?;
            let outcome =
                FutureReader::new(
                    &mut access,
                    async move { Ok::<_, wasmtime::Error>(outcome) },
                )?;
            Ok((keys, outcome))
        })
    }
}

// ---- wasi:keyvalue@0.2.0-draft2 ----

impl From<OpenError> for wasi_store::Error {
    fn from(error: OpenError) -> Self {
        match error {
            OpenError::NoSuchStore => Self::NoSuchStore,
            OpenError::AccessDenied => Self::AccessDenied,
        }
    }
}

fn wasi_error(error: KvError) -> wasi_store::Error {
    wasi_store::Error::Other(error.to_string())
}

impl KvView<'_> {
    /// The backend behind an open `wasi:keyvalue` bucket.
    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<Arc<dyn KeyValueStore>> {
        Ok(self.table.get(bucket)?.0.clone())
    }

    /// A new compare-and-swap on `key`, holding its current value.
    async fn new_cas(
        &mut self,
        store: Arc<dyn KeyValueStore>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Cas>, wasi_store::Error>> {
        let current = match store.get(&key).await {
            Ok(current) => current,
            Err(KvError::Fatal(message)) => return Err(wasmtime::Error::msg(message)),
            Err(error) => return Ok(Err(wasi_error(error))),
        };
        Ok(Ok(self.table.push(Cas {
            store,
            key,
            current,
        })?))
    }
}

impl wasi_store::Host for KvView<'_> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, wasi_store::Error>> {
        match self.access.open(&identifier) {
            Ok(store) => Ok(Ok(self.table.push(Bucket(store))?)),
            Err(error) => Ok(Err(error.into())),
        }
    }
}

impl wasi_store::HostBucket for KvView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_store::Error>> {
        answer(self.bucket(&bucket)?.get(&key).await, wasi_error)
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        answer(self.bucket(&bucket)?.set(&key, &value).await, wasi_error)
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        answer(self.bucket(&bucket)?.delete(&key).await, wasi_error)
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, wasi_store::Error>> {
        answer(self.bucket(&bucket)?.exists(&key).await, wasi_error)
    }

    /// Every key in one page: there is never a next cursor.
    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        _cursor: Option<String>,
    ) -> wasmtime::Result<Result<wasi_store::KeyResponse, wasi_store::Error>> {
        let keys = self.bucket(&bucket)?.get_keys().await;
        answer(
            keys.map(|keys| wasi_store::KeyResponse { keys, cursor: None }),
            wasi_error,
        )
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, wasi_store::Error>> {
        answer(
            self.bucket(&bucket)?.increment(&key, delta).await,
            wasi_error,
        )
    }

    /// Writes `value` if the key still holds what the `cas` read; otherwise
    /// fails with a fresh `cas` holding the value found now, ready for a retry.
    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let Cas {
            store,
            key,
            current,
        } = self.table.delete(cas)?;
        match store
            .compare_and_swap(&key, current.as_deref(), &value)
            .await
        {
            Ok(true) => Ok(Ok(())),
            Ok(false) => Ok(match self.new_cas(store, key).await? {
                Ok(retry) => Err(atomics::CasError::CasFailed(retry)),
                Err(error) => Err(atomics::CasError::StoreError(error)),
            }),
            Err(KvError::Fatal(message)) => Err(wasmtime::Error::msg(message)),
            Err(error) => Ok(Err(atomics::CasError::StoreError(wasi_error(error)))),
        }
    }
}

impl atomics::HostCas for KvView<'_> {
    async fn new(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Cas>, wasi_store::Error>> {
        let store = self.bucket(&bucket)?;
        self.new_cas(store, key).await
    }

    async fn current(
        &mut self,
        cas: Resource<Cas>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_store::Error>> {
        Ok(Ok(self.table.get(&cas)?.current.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, wasi_store::Error>> {
        answer(self.bucket(&bucket)?.get_many(&keys).await, wasi_error)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        answer(
            self.bucket(&bucket)?.set_many(&key_values).await,
            wasi_error,
        )
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        answer(self.bucket(&bucket)?.delete_many(&keys).await, wasi_error)
    }
}
