//! The wasmtime side: one engine and linker per process, each component
//! compiled once per process, and instances that serve `wasi:http/handler@0.3.0`
//! requests — a fresh one per request, or reused the way Spin 4 does.

use crate::bindings::{spin, wasi};
use crate::clock::ManualClock;
use crate::kv::host::{Kv, KvView, StoreAccess};
use crate::variables::{ComponentVariables, Variables};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};
use wasmtime::component::{GuestTaskId, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreContextMut,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, Proxy, ProxyHandler, ShouldAccept, WorkerExpiration, WorkerState,
    WorkerStatus,
};
use wasmtime_wasi_http::p3::bindings::ServicePre;
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
    /// Requests one instance serves at once.
    pub(crate) max_concurrent: usize,
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
            max_concurrent: 1,
            idle_timeout: Duration::ZERO,
            request_timeout,
        }
    }

    /// Spin 4's reuse for WASI 0.3 components: up to 128 requests per instance,
    /// 16 at once, dropped after 1 s idle.
    pub(crate) fn reuse(request_timeout: Duration) -> Self {
        Self {
            max_requests: 128,
            max_concurrent: 16,
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
            .total_stacks(1000);
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

/// Serves one component's requests on its instances.
#[derive(Clone)]
pub(crate) struct ComponentServer {
    handler: ProxyHandler<Instances>,
}

impl ComponentServer {
    pub(crate) fn new(
        id: &str,
        component: LoadedComponent,
        env: ComponentEnv,
        policy: InstancePolicy,
    ) -> Self {
        Self {
            handler: ProxyHandler::new(Instances {
                id: id.to_owned(),
                component,
                env: Arc::new(env),
                policy,
            }),
        }
    }

    /// Hands `request` to an instance (a new one or, with reuse, a live one)
    /// and returns its response, whose body may still be streaming. An error
    /// means no response: the guest trapped, failed or timed out.
    pub(crate) async fn handle(
        &self,
        request: http::Request<WasiBody>,
    ) -> wasmtime::Result<http::Response<WasiBody>> {
        self.handler.handle((), request).await
    }
}

/// Creates the instances of one component.
struct Instances {
    id: String,
    component: LoadedComponent,
    env: Arc<ComponentEnv>,
    policy: InstancePolicy,
}

impl HandlerState for Instances {
    type StoreData = InstanceState;
    type WorkerExpiration = Expiration;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<InstanceState, Expiration, Worker>> {
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
        let service = self.component.pre.instantiate_async(&mut store).await?;
        Ok(Instance {
            store,
            proxy: Proxy::P3(service),
            view: WasiHttpView::http,
            expiration: Expiration {
                policy: self.policy,
                sleep: Box::pin(tokio::time::sleep(Duration::MAX)),
            },
            state: Worker {
                id: self.id.clone(),
                policy: self.policy,
            },
        })
    }
}

/// Decides when an instance is dropped: after `idle_timeout` without work, or
/// `request_timeout` after its latest request started.
struct Expiration {
    policy: InstancePolicy,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl WorkerExpiration for Expiration {
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        status: WorkerStatus,
        since: Instant,
    ) -> Poll<()> {
        let timeout = match status {
            WorkerStatus::Idle => self.policy.idle_timeout,
            WorkerStatus::Requests | WorkerStatus::PostReturn => self.policy.request_timeout,
        };
        let Some(deadline) = since.checked_add(timeout) else {
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

/// One instance's admission of requests, and its end.
struct Worker {
    id: String,
    policy: InstancePolicy,
}

impl WorkerState for Worker {
    type StoreData = InstanceState;
    type RequestData = ();

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.policy.max_requests {
            ShouldAccept::Never
        } else if concurrent >= self.policy.max_concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _store: StoreContextMut<'_, InstanceState>,
        _request: (),
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        Box::pin(tokio::time::sleep(self.policy.request_timeout))
    }

    /// Logs why the instance ended, if it failed. Not "worker panicked": the
    /// handler reports that both for a panic, which the panic hook has already
    /// printed, and for a worker whose task was dropped (its runtime shut down,
    /// as at the end of a test), which is no failure.
    fn drop(&self, store: Store<InstanceState>, result: wasmtime::Result<()>) {
        if let Err(error) = result
            && error.to_string() != "worker panicked"
        {
            eprintln!(
                "coupon-host: an instance of component {:?} failed: {error:?}",
                self.id
            );
        }
        drop(store);
    }
}
