//! The host's Prometheus metrics, served at `/metrics` on `--metrics-listen`:
//! requests by component, status and error code, their latency, requests in
//! flight, instances made, and every store call's latency and failures by
//! backend. One registry for the process, as a host serves one app.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answered {
    component: String,
    status: u16,
    /// The error code of the answer's body (`campaign_paused`, `overloaded`,
    /// ...), empty for a success.
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Component {
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreCall {
    backend: &'static str,
    operation: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

struct Metrics {
    registry: Registry,
    requests: Family<Answered, Counter>,
    latency: Histograms<Component>,
    in_flight: Family<Component, Gauge>,
    instances: Family<Component, Counter>,
    store_latency: Histograms<StoreCall>,
    store_errors: Family<StoreCall, Counter>,
}

fn request_buckets() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

fn store_buckets() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    ])
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("coupon_host");
    let metrics = Metrics {
        requests: Family::default(),
        latency: Family::new_with_constructor(request_buckets),
        in_flight: Family::default(),
        instances: Family::default(),
        store_latency: Family::new_with_constructor(store_buckets),
        store_errors: Family::default(),
        registry: Registry::default(),
    };
    registry.register(
        "requests",
        "Requests answered, by component, status and error code (overloaded: shed by admission)",
        metrics.requests.clone(),
    );
    registry.register(
        "request_duration_seconds",
        "From the request's arrival to its answer, by component",
        metrics.latency.clone(),
    );
    registry.register(
        "requests_in_flight",
        "Requests being answered now, by component",
        metrics.in_flight.clone(),
    );
    registry.register(
        "instances",
        "Component instances made (requests ÷ instances is the reuse)",
        metrics.instances.clone(),
    );
    registry.register(
        "store_call_duration_seconds",
        "Key-value store calls, by backend and operation",
        metrics.store_latency.clone(),
    );
    registry.register(
        "store_call_errors",
        "Key-value store calls that failed, by backend and operation",
        metrics.store_errors.clone(),
    );
    Metrics {
        registry,
        ..metrics
    }
});

/// Every metric in the OpenMetrics text format Prometheus scrapes.
pub fn render() -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &METRICS.registry);
    text
}

/// Counts a request `component` answered with `status` (and error `code`).
pub(crate) fn answered(component: &str, status: u16, code: &str, took: Duration) {
    METRICS
        .requests
        .get_or_create(&Answered {
            component: component.to_owned(),
            status,
            code: code.to_owned(),
        })
        .inc();
    METRICS
        .latency
        .get_or_create(&Component {
            component: component.to_owned(),
        })
        .observe(took.as_secs_f64());
}

/// Counts a request in flight for `component` until dropped.
pub(crate) struct InFlight(Gauge);

impl InFlight {
    pub(crate) fn start(component: &str) -> InFlight {
        let gauge = METRICS
            .in_flight
            .get_or_create(&Component {
                component: component.to_owned(),
            })
            .clone();
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts an instance of `component` made.
pub(crate) fn instance_made(component: &str) {
    METRICS
        .instances
        .get_or_create(&Component {
            component: component.to_owned(),
        })
        .inc();
}

/// Records a store call.
pub(crate) fn store_call(backend: &'static str, operation: &'static str, took: Duration, ok: bool) {
    let call = StoreCall { backend, operation };
    METRICS
        .store_latency
        .get_or_create(&call)
        .observe(took.as_secs_f64());
    if !ok {
        METRICS.store_errors.get_or_create(&call).inc();
    }
}
