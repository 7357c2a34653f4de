//! The operations listener (`--metrics-listen`): what the people on call and
//! their tools ask of a host, apart from the app's own routes.
//!
//! - `GET /metrics`: the host's metrics in the text format Prometheus scrapes.
//! - `GET /healthz`: 200 while the process serves (a liveness probe).
//! - `GET /readyz`: 200 when every key-value store the app uses answers a
//!   read within a second, else 503 naming the store (a readiness probe: a
//!   host whose store is down takes no traffic, and is not restarted for it).

use crate::kv::KeyValueStore;
use crate::metrics;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long a store has to answer the readiness read.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// The key the readiness read asks for (absent, and never written).
const READY_KEY: &str = "coupon-host:readyz";

/// The stores a host's readiness depends on, by label.
pub type Stores = Vec<(String, Arc<dyn KeyValueStore>)>;

/// Serves the probes and metrics on `listener` until `stop` resolves.
pub async fn serve(listener: TcpListener, stores: Stores, stop: impl Future<Output = ()>) {
    let stores = Arc::new(stores);
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        let stores = stores.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let stores = stores.clone();
            async move { Ok::<_, std::convert::Infallible>(answer(&request, &stores).await) }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(request: &Request<Incoming>, stores: &Stores) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = text(StatusCode::OK, metrics::render());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match unready(stores).await {
            None => text(StatusCode::OK, "ready\n".into()),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "/metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// Why the host is not ready: the first store that does not answer a read.
async fn unready(stores: &Stores) -> Option<String> {
    for (label, store) in stores {
        match tokio::time::timeout(READY_TIMEOUT, store.get(READY_KEY)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Some(format!("key-value store {label:?}: {e}")),
            Err(_) => {
                return Some(format!(
                    "key-value store {label:?}: no answer within {READY_TIMEOUT:?}"
                ));
            }
        }
    }
    None
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
