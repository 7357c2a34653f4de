//! A Spin app, loaded from its `spin.toml` and ready to serve requests: the
//! API the integration tests use.

use crate::admission::{Admission, overloaded};
use crate::build::ensure_built;
use crate::clock::ManualClock;
use crate::kv::host::StoreAccess;
use crate::kv::{KeyValueStore, MemoryStore};
use crate::manifest::Manifest;
use crate::routes::{RouteMatch, Router};
use crate::runtime::{ComponentEnv, ComponentServer, InstancePolicy, load_component};
use crate::variables::{component_variables, resolve_app_variables};
use anyhow::{Context, Result};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The label of the store every app gets unless told otherwise.
const DEFAULT_STORE: &str = "default";

/// How long a request may run before its instance is stopped, unless told
/// otherwise.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests one component serves at once unless told otherwise; as many again
/// may wait up to 250 ms, and the rest are shed with `503 overloaded`.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 32;

/// Requests served at once in this process, over all apps; more wait. Each
/// needs an instance (or a share of one), and the instance pool holds 1000.
const MAX_REQUESTS_IN_FLIGHT: usize = 500;

static IN_FLIGHT: Semaphore = Semaphore::const_new(MAX_REQUESTS_IN_FLIGHT);

/// A running app: routes requests to its components as Spin does.
///
/// Cheap to clone and `Send + Sync`: share it between tasks to send requests
/// concurrently. Instances run on the tokio runtime of the task that sends the
/// request, so build an `App` per test (compiled components are cached for the
/// whole process, so that is cheap).
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

struct AppInner {
    manifest: Manifest,
    router: Router,
    servers: HashMap<String, (ComponentServer, Admission)>,
}

/// Configures an [`App`]: variable values, store backends, the clock and how
/// instances are used.
pub struct AppBuilder {
    manifest_path: PathBuf,
    variables: BTreeMap<String, String>,
    stores: HashMap<String, Arc<dyn KeyValueStore>>,
    clock: Option<ManualClock>,
    instance_reuse: bool,
    request_timeout: Duration,
    max_concurrent_requests: usize,
    build_components: bool,
}

impl App {
    /// Starts configuring the app described by the `spin.toml` at `manifest`.
    pub fn builder(manifest: impl AsRef<Path>) -> AppBuilder {
        AppBuilder {
            manifest_path: manifest.as_ref().to_owned(),
            variables: BTreeMap::new(),
            stores: HashMap::new(),
            clock: None,
            instance_reuse: true,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            build_components: true,
        }
    }

    /// Starts configuring the app of this workspace: the `spin.toml` found in
    /// the calling package's directory (`CARGO_MANIFEST_DIR`) or the nearest
    /// one above it.
    pub fn builder_from_workspace() -> Result<AppBuilder> {
        let start = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .context("CARGO_MANIFEST_DIR is not set: run under cargo, or use App::builder(path)")?;
        let manifest = start
            .ancestors()
            .map(|dir| dir.join("spin.toml"))
            .find(|path| path.is_file())
            .with_context(|| format!("no spin.toml in {} or above", start.display()))?;
        Ok(Self::builder(manifest))
    }

    /// The app's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// The component a request for `path` is routed to, if any.
    pub fn component_for(&self, path: &str) -> Option<&str> {
        self.inner
            .router
            .route(path)
            .map(|matched| matched.component)
    }

    /// Serves `request` as Spin would: answers Spin's well-known paths
    /// itself, routes the rest by path to a component, gives that component
    /// the full URL (authority from the `Host` header, `localhost` when there
    /// is none) and Spin's `spin-*` headers, and collects its response.
    ///
    /// As Spin (`crates/trigger-http/src/server.rs`): no route is 404 with an
    /// empty body, and a guest that trapped, failed or timed out is 500 with
    /// an empty body (the error goes to stderr). Beyond Spin: the component at
    /// its limit of concurrent requests is 503 `overloaded` with
    /// `Retry-After`. An `Err` means the request itself was unusable. At most
    /// 500 requests run at once in a process, over all apps; more wait their
    /// turn.
    pub async fn handle(&self, request: Request<Bytes>) -> Result<Response<Bytes>> {
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        if let Some(well_known) = path.strip_prefix(WELL_KNOWN_PREFIX) {
            return Ok(self.well_known(well_known));
        }
        let Some(matched) = self.inner.router.route(&path) else {
            return Ok(empty(StatusCode::NOT_FOUND));
        };
        parts.uri = full_uri(&parts.uri, parts.headers.get(http::header::HOST))?;
        let client = parts.extensions.get::<ClientAddr>().copied();
        add_spin_headers(&mut parts.headers, &parts.uri, &matched, client)?;
        let (server, admission) = self
            .inner
            .servers
            .get(matched.component)
            .with_context(|| format!("no server for component {:?}", matched.component))?;
        let Some(_slot) = admission.enter().await else {
            return Ok(overloaded(matched.component));
        };
        let description = format!(
            "{} {} (component {:?})",
            parts.method, path, matched.component
        );

        let body = Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync();
        let _in_flight = IN_FLIGHT
            .acquire()
            .await
            .context("the request limiter was closed")?;
        match server.handle(Request::from_parts(parts, body)).await {
            Ok(response) => Ok(response),
            Err(error) => {
                eprintln!("coupon-host: {description} failed: {error:?}");
                Ok(component_failed())
            }
        }
    }
}

impl AppBuilder {
    /// Sets application variable `name` (any case; Spin's names are lowercase),
    /// as `SPIN_VARIABLE_<NAME>` would.
    pub fn variable(mut self, name: impl AsRef<str>, value: impl Into<String>) -> Self {
        self.variables
            .insert(name.as_ref().to_ascii_lowercase(), value.into());
        self
    }

    /// Backs the store labelled `label` with `store`. Unless set this way, the
    /// `default` store is a fresh [`MemoryStore`].
    pub fn store(self, label: impl Into<String>, store: impl KeyValueStore) -> Self {
        self.shared_store(label, Arc::new(store))
    }

    /// Like [`store`](Self::store), for a backend already shared.
    pub fn shared_store(mut self, label: impl Into<String>, store: Arc<dyn KeyValueStore>) -> Self {
        self.stores.insert(label.into(), store);
        self
    }

    /// Makes every guest read its wall-clock time from `clock` instead of the
    /// system's.
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// `true` (the default): reuse instances as Spin 4 does (up to 128 requests
    /// each, 16 at once, dropped after 1 s idle); `false`: a fresh instance per
    /// request.
    pub fn instance_reuse(mut self, reuse: bool) -> Self {
        self.instance_reuse = reuse;
        self
    }

    /// How long a request may run before its instance is stopped and the
    /// request answered with 500 (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How many requests each component serves at once (default 32). As many
    /// again may wait up to 250 ms for a slot; the rest are answered at once
    /// with 503 `overloaded` and `Retry-After: 1`, so a storm on one component
    /// neither queues without bound nor delays the others.
    pub fn max_concurrent_requests(mut self, limit: usize) -> Self {
        self.max_concurrent_requests = limit.max(1);
        self
    }

    /// `true` (the default): run each component's build command before loading
    /// it; `false`: load the `.wasm` files as they are (`spin up` without `--build`).
    pub fn build_components(mut self, build: bool) -> Self {
        self.build_components = build;
        self
    }

    /// Loads the manifest, resolves variables, builds the components if needed
    /// (their `[component.<id>.build] command`s), and compiles them (once per
    /// process). Fails if the manifest is invalid, a required variable is
    /// missing, a component lists a store with no backend, or a build fails.
    pub async fn build(mut self) -> Result<App> {
        let manifest = Manifest::load(&self.manifest_path)?;
        let app_variables = resolve_app_variables(&manifest, &self.variables)?;
        self.stores
            .entry(DEFAULT_STORE.to_owned())
            .or_insert_with(|| Arc::new(MemoryStore::new()));
        for (id, component) in &manifest.components {
            if let Some(label) = component
                .key_value_stores
                .iter()
                .find(|label| !self.stores.contains_key(*label))
            {
                anyhow::bail!(
                    "component {id:?} uses key-value store {label:?}, which has no backend: add .store({label:?}, ...)"
                );
            }
        }

        let manifest = if self.build_components {
            tokio::task::spawn_blocking(move || ensure_built(&manifest).map(|()| manifest))
                .await
                .context("the component build panicked")??
        } else {
            check_built(&manifest)?;
            manifest
        };

        let policy = if self.instance_reuse {
            InstancePolicy::reuse(self.request_timeout)
        } else {
            InstancePolicy::fresh(self.request_timeout)
        };
        let mut servers = HashMap::new();
        for (id, spec) in &manifest.components {
            let path = manifest.source_path(spec);
            let component = tokio::task::spawn_blocking(move || load_component(&path))
                .await
                .context("compiling a component panicked")??;
            let env = ComponentEnv {
                stores: StoreAccess::new(&self.stores, &spec.key_value_stores),
                variables: component_variables(spec, &app_variables)?,
                clock: self.clock.clone(),
            };
            let server = ComponentServer::new(id, component, env, policy);
            let admission = Admission::new(self.max_concurrent_requests);
            servers.insert(id.clone(), (server, admission));
        }
        let router = Router::new(&manifest.http_triggers)?;
        Ok(App {
            inner: Arc::new(AppInner {
                manifest,
                router,
                servers,
            }),
        })
    }
}

/// Fails, naming the build command, if a component's `.wasm` is missing.
fn check_built(manifest: &Manifest) -> Result<()> {
    for (id, spec) in &manifest.components {
        let path = manifest.source_path(spec);
        if !path.is_file() {
            let how = match &spec.build {
                Some(build) => format!("build it with `{}` (or pass --build)", build.command),
                None => "it has no build command in the manifest".to_owned(),
            };
            anyhow::bail!("component {id:?}: {} is missing: {how}", path.display());
        }
    }
    Ok(())
}

/// The request's URI made absolute as Spin gives it to guests: scheme `http`
/// and the authority of the `Host` header, or `localhost` without one (Spin
/// drops such a request; the harness sends path-only requests).
fn full_uri(uri: &Uri, host: Option<&HeaderValue>) -> Result<Uri> {
    let mut parts = uri.clone().into_parts();
    parts.scheme.get_or_insert(http::uri::Scheme::HTTP);
    if parts.authority.is_none() {
        let from_host = host.and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
        parts.authority =
            Some(from_host.unwrap_or_else(|| http::uri::Authority::from_static("localhost")));
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).with_context(|| format!("invalid request URI {uri}"))
}

/// Spin's routing headers: the full URL, the matched route, the path below a
/// wildcard route, each `:name` segment's value, and the client's address.
/// Like Spin (`crates/trigger-http/src/wasi.rs`), they are appended: a client
/// that sent a `spin-*` header of its own has its value seen first.
fn add_spin_headers(
    headers: &mut http::HeaderMap,
    uri: &Uri,
    matched: &RouteMatch<'_>,
    client: Option<ClientAddr>,
) -> Result<()> {
    let route_prefix = matched.route.strip_suffix("/...").unwrap_or(matched.route);
    let mut set = |name: &str, value: &str| -> Result<()> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .with_context(|| format!("invalid header name {name:?}"))?;
        let value = HeaderValue::from_str(value)
            .with_context(|| format!("invalid value for header {name}: {value:?}"))?;
        headers.append(name, value);
        Ok(())
    };
    set("spin-full-url", &uri.to_string())?;
    set("spin-path-info", &matched.path_info)?;
    set("spin-matched-route", matched.route)?;
    set("spin-raw-component-route", matched.route)?;
    set("spin-component-route", route_prefix)?;
    set("spin-base-path", "/")?;
    for (name, value) in &matched.params {
        // Spin's header names: `_` becomes `-` (`crates/trigger-http/src/headers.rs`).
        set(
            &format!("spin-path-match-{}", name.replace('_', "-")),
            value,
        )?;
    }
    if let Some(ClientAddr(addr)) = client {
        set("spin-client-addr", &addr.to_string())?;
    }
    Ok(())
}

/// A guest that trapped, timed out or sent no whole response: an empty 500,
/// as Spin answers it; the detail is in the host's log.
fn component_failed() -> Response<Bytes> {
    empty(StatusCode::INTERNAL_SERVER_ERROR)
}

/// An answer with no body, as Spin gives for no route and a failed guest.
fn empty(status: StatusCode) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = status;
    response
}

/// Paths Spin answers itself, before routing.
const WELL_KNOWN_PREFIX: &str = "/.well-known/spin/";

/// The peer address of a request's connection, which `serve` puts in the
/// request's extensions: Spin gives it to guests as `spin-client-addr`.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::SocketAddr);

impl App {
    /// Spin's own answers under `/.well-known/spin/`: `health` is 200 `OK`,
    /// `info` the app's name and version as pretty JSON, anything else an
    /// empty 404.
    fn well_known(&self, path: &str) -> Response<Bytes> {
        let manifest = &self.inner.manifest;
        let body = match path {
            "health" => Bytes::from_static(b"OK"),
            "info" => {
                let info = serde_json::json!({"name": manifest.name, "version": manifest.version});
                Bytes::from(serde_json::to_vec_pretty(&info).unwrap_or_default())
            }
            _ => return empty(StatusCode::NOT_FOUND),
        };
        let mut response = Response::new(body);
        if path == "info" {
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::HttpTrigger;

    #[test]
    fn apps_can_be_shared_between_tasks() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<App>();
    }

    #[test]
    fn path_only_uris_take_the_host_header_or_localhost() -> Result<()> {
        let full = |uri: &str| -> Result<String> { Ok(full_uri(&uri.parse()?, None)?.to_string()) };
        assert_eq!(full("/claims")?, "http://localhost/claims");
        let host = HeaderValue::from_static("127.0.0.1:3000");
        assert_eq!(
            full_uri(&"/claims?x=1".parse()?, Some(&host))?.to_string(),
            "http://127.0.0.1:3000/claims?x=1"
        );
        assert_eq!(
            full("/campaigns/x?y=1")?,
            "http://localhost/campaigns/x?y=1"
        );
        assert_eq!(
            full("https://example.com:8443/a")?,
            "https://example.com:8443/a"
        );
        Ok(())
    }

    #[test]
    fn spin_headers_describe_the_route_match() -> Result<()> {
        let router = Router::new(&[
            HttpTrigger {
                route: "/campaigns/...".into(),
                component: "campaigns".into(),
            },
            HttpTrigger {
                route: "/coupons/:code".into(),
                component: "validate".into(),
            },
        ])?;
        let headers_for = |path: &str| -> Result<Vec<(String, String)>> {
            let uri = full_uri(&path.parse()?, None)?;
            let matched = router.route(uri.path()).context("a route")?;
            let mut headers = http::HeaderMap::new();
            let client = ClientAddr("127.0.0.1:50000".parse()?);
            add_spin_headers(&mut headers, &uri, &matched, Some(client))?;
            let mut pairs: Vec<_> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
                .collect();
            pairs.sort();
            Ok(pairs)
        };
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            headers_for("/campaigns/spring/stock?x=1")?,
            [
                pair("spin-base-path", "/"),
                pair("spin-client-addr", "127.0.0.1:50000"),
                pair("spin-component-route", "/campaigns"),
                pair(
                    "spin-full-url",
                    "http://localhost/campaigns/spring/stock?x=1"
                ),
                pair("spin-matched-route", "/campaigns/..."),
                pair("spin-path-info", "/spring/stock"),
                pair("spin-raw-component-route", "/campaigns/..."),
            ]
        );
        assert!(headers_for("/coupons/ABC")?.contains(&pair("spin-path-match-code", "ABC")));
        Ok(())
    }
}
