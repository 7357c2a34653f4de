//! The wasmtime side: one engine and linker per process, each component
//! compiled once per process, and instances that serve `wasi:http/handler@0.3.0`
//! requests — a fresh one per request, or reused the way Spin 4 does.

use crate::bindings::{spin, wasi};
use crate::clock::ManualClock;
use crate::kv::host::{Kv, KvView, StoreAccess};
use crate::variables::{ComponentVariables, Variables};
use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p3::Request;
use wasmtime_wasi_http::p3::bindings::{Service, ServicePre};
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// The most linear memory one instance may grow to: a runaway request fails
/// instead of taking the host's memory (the components need a few MiB).
const MAX_INSTANCE_MEMORY: usize = 64 << 20;

/// How often the engine's epoch ticks: a guest running longer than this yields
/// to other tasks, and a request past its timeout can be stopped.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How instances serve requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InstancePolicy {
    /// Requests one instance serves before it is dropped (1: a fresh instance
    /// per request).
    pub(crate) max_requests: usize,
    /// How long an idle instance is kept for the next request.
    pub(crate) idle_timeout: Duration,
    /// How long a request may run before its instance is stopped (a 500).
    pub(crate) request_timeout: Duration,
}

impl InstancePolicy {
    /// A fresh instance per request, as Spin does for WASI 0.2 components.
    pub(crate) fn fresh(request_timeout: Duration) -> Self {
        Self {
            max_requests: 1,
            idle_timeout: Duration::ZERO,
            request_timeout,
        }
    }

    /// Spin 4's reuse for WASI 0.3 components: up to 128 requests per instance,
    /// dropped after 1 s idle. Spin also lets an instance serve up to 16 at
    /// once; here each serves one at a time (see [`ComponentServer`]), which a
    /// component cannot tell apart from Spin running fewer at once.
    pub(crate) fn reuse(request_timeout: Duration) -> Self {
        Self {
            max_requests: 128,
            idle_timeout: Duration::from_secs(1),
            request_timeout,
        }
    }
}

/// The state of one instance's store.
pub(crate) struct InstanceState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHttpRefused,
    stores: StoreAccess,
    variables: ComponentVariables,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Refuses every outbound HTTP request: components of this app make none.
struct OutboundHttpRefused;

impl WasiHttpHooks for OutboundHttpRefused {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// The process-wide engine and linker.
struct Runtime {
    engine: Engine,
    linker: Linker<InstanceState>,
}

fn runtime() -> Result<&'static Runtime> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| Runtime::new().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("cannot set up wasmtime: {e}"))
}

impl Runtime {
    fn new() -> Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        // Each component instance holds a few core instances (a Rust component
        // has its module plus shims); leave room for ~1000 live instances.
        pool.max_memory_size(MAX_INSTANCE_MEMORY)
            .total_component_instances(1000)
            .total_core_instances(5000)
            .total_memories(2000)
            .total_tables(5000)
            .total_stacks(1000)
            // An instance is dropped every 128 requests: zeroing its memory
            // with memset and batching the rest of the decommits spares most
            // of the madvise calls, each of which interrupts every core to
            // flush its TLB.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10)
            .decommit_batch_size(16);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .wasm_component_model_async(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    ticker.increment_epoch();
                }
            })
            .context("cannot start the epoch thread")?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi::p3::clocks::add_to_linker(&mut linker)?;
        wasmtime_wasi::p3::random::add_to_linker(&mut linker)?;
        wasmtime_wasi::p3::cli::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        fn kv(state: &mut InstanceState) -> KvView<'_> {
            KvView {
                access: &state.stores,
                table: &mut state.table,
            }
        }
        spin::key_value::key_value::add_to_linker::<_, Kv>(&mut linker, kv)?;
        wasi::keyvalue::store::add_to_linker::<_, Kv>(&mut linker, kv)?;
        wasi::keyvalue::atomics::add_to_linker::<_, Kv>(&mut linker, kv)?;
        wasi::keyvalue::batch::add_to_linker::<_, Kv>(&mut linker, kv)?;
        spin::variables::variables::add_to_linker::<_, Variables>(&mut linker, |state| {
            &state.variables
        })?;
        Ok(Self { engine, linker })
    }
}

/// A component compiled and linked, ready to instantiate.
#[derive(Clone)]
pub(crate) struct LoadedComponent {
    pre: ServicePre<InstanceState>,
}

/// Compiles the component at `path` and links it, once per process for each
/// version of the file (the cache is keyed by path, size and modification
/// time). Blocks: call it from a blocking thread.
pub(crate) fn load_component(path: &Path) -> Result<LoadedComponent> {
    /// A version of a component file: its path, size and modification time.
    type Version = (PathBuf, u64, SystemTime);
    static LOADED: Mutex<BTreeMap<Version, LoadedComponent>> = Mutex::new(BTreeMap::new());

    let runtime = runtime()?;
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("component {} not found (was it built?)", path.display()))?;
    let key = (path.to_owned(), metadata.len(), metadata.modified()?);
    // Held while compiling, so concurrent tests compile each component once.
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(component) = loaded.get(&key) {
        return Ok(component.clone());
    }
    let component = crate::cache::compile(&runtime.engine, path)
        .with_context(|| format!("cannot compile component {}", path.display()))?;
    let pre = runtime
        .linker
        .instantiate_pre(&component)
        .and_then(ServicePre::new)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "component {} does not fit this host (it must export wasi:http/handler@0.3.0 \
                 and import only WASI, wasi:http, Spin key-value and variables)",
                path.display()
            )
        })?;
    let component = LoadedComponent { pre };
    loaded.insert(key, component.clone());
    Ok(component)
}

/// What every instance of one component gets from its app.
pub(crate) struct ComponentEnv {
    pub(crate) stores: StoreAccess,
    pub(crate) variables: ComponentVariables,
    pub(crate) clock: Option<ManualClock>,
}

/// Serves one component's requests, each on an instance of its own for as
/// long as it runs, inside the task that received it.
///
/// Not wasmtime-wasi-http's `ProxyHandler`: that multiplexes up to 16 requests
/// into one worker task per instance and hands each over through a queue, so a
/// request waits for whatever that worker's single poll is doing, and every
/// hand-over wakes another thread. Here a request takes an idle instance (or
/// makes one), runs the guest's event loop until its response body is
/// complete, and gives the instance back; nothing crosses tasks.
#[derive(Clone)]
pub(crate) struct ComponentServer {
    inner: Arc<ServerInner>,
}

struct ServerInner {
    id: String,
    component: LoadedComponent,
    env: ComponentEnv,
    policy: InstancePolicy,
    /// Idle instances, the most recently used last.
    idle: Mutex<Vec<IdleInstance>>,
}

/// A live instance between requests.
struct IdleInstance {
    store: Store<InstanceState>,
    service: Service,
    served: usize,
    since: Instant,
}

impl ComponentServer {
    pub(crate) fn new(
        id: &str,
        component: LoadedComponent,
        env: ComponentEnv,
        policy: InstancePolicy,
    ) -> Self {
        Self {
            inner: Arc::new(ServerInner {
                id: id.to_owned(),
                component,
                env,
                policy,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Serves `request` on an instance (a live one or, if none is idle, a new
    /// one) and returns its complete response. An error means no response: the
    /// guest trapped, failed or ran past the request timeout; its instance is
    /// dropped.
    pub(crate) async fn handle(
        &self,
        request: http::Request<WasiBody>,
    ) -> Result<http::Response<Bytes>> {
        let inner = &self.inner;
        let mut instance = match inner.take_idle() {
            Some(instance) => instance,
            None => inner.instantiate().await?,
        };
        let served = tokio::time::timeout(
            inner.policy.request_timeout,
            serve(&mut instance.store, &instance.service, request),
        )
        .await;
        let response = match served {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(error),
            Err(_) => anyhow::bail!(
                "the guest ran past the request timeout ({:?})",
                inner.policy.request_timeout
            ),
        };
        instance.served += 1;
        if instance.served < inner.policy.max_requests {
            instance.since = Instant::now();
            inner.lock_idle().push(instance);
        }
        Ok(response)
    }
}

impl ServerInner {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<IdleInstance>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle instance, after dropping those idle past
    /// the policy's timeout.
    fn take_idle(&self) -> Option<IdleInstance> {
        let mut idle = self.lock_idle();
        let now = Instant::now();
        let stale = idle
            .iter()
            .take_while(|instance| now.duration_since(instance.since) > self.policy.idle_timeout)
            .count();
        // Dropped outside the lock: freeing an instance returns its memory.
        let stale: Vec<_> = idle.drain(..stale).collect();
        let instance = idle.pop();
        drop(idle);
        drop(stale);
        instance
    }

    async fn instantiate(&self) -> Result<IdleInstance> {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stderr();
        if let Some(clock) = &self.env.clock {
            wasi.wall_clock(clock.clone());
        }
        let state = InstanceState {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: OutboundHttpRefused,
            stores: self.env.stores.clone(),
            variables: self.env.variables.clone(),
        };
        let mut store = Store::new(self.component.pre.engine(), state);
        store.epoch_deadline_async_yield_and_update(1);
        store.set_epoch_deadline(1);
        let service = self
            .component
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| anyhow::anyhow!("cannot instantiate component {:?}: {e:?}", self.id))?;
        crate::metrics::instance_made(&self.id);
        Ok(IdleInstance {
            store,
            service,
            served: 0,
            since: Instant::now(),
        })
    }
}

/// What reports a failure reading the request body to the guest.
type RequestIo =
    std::pin::Pin<Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>>;

/// Calls the guest's `handle` with `request` and runs its event loop until the
/// response body has been written in full.
async fn serve(
    store: &mut Store<InstanceState>,
    service: &Service,
    request: http::Request<WasiBody>,
) -> Result<http::Response<Bytes>> {
    let response = store
        .run_concurrent(async |accessor| -> wasmtime::Result<_> {
            let (request, request_io) = accessor.with(|mut store| {
                let (request, io) = Request::from_http(store.data_mut().http().hooks, request);
                let io: RequestIo = Box::pin(io);
                (request, io)
            });
            let response = match service.handle(accessor, request).await? {
                Ok(response) => response,
                Err(code) => wasmtime::bail!("the guest answered with an error: {code:?}"),
            };
            let response = accessor.with(|mut store| {
                response.into_http_with_getter(&mut store, request_io, WasiHttpView::http)
            })?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| wasmtime::format_err!("the response body failed: {e:?}"))?;
            Ok(http::Response::from_parts(parts, body.to_bytes()))
        })
        .await??;
    Ok(response)
}
