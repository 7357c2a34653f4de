//! Serving an [`App`] over HTTP/1.1 on a TCP listener, the way `spin up` does,
//! with a request log, metrics and a graceful stop.
//!
//! The request log is `tracing` events (target `request`), one per request:
//! method, path, component, status, the answer's error code, latency and
//! the request id, which every answer carries in `x-request-id` (the
//! caller's own, if it sent a usable one).

use crate::app::{App, ClientAddr};
use crate::metrics::{self, InFlight};
use crate::refusal::refusal;
use anyhow::Result;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Request bodies above this are refused before they reach a component.
/// Components set their own, smaller limits; this one protects the host.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// How long in-flight requests get to finish once a stop is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr`, with a clear error when the port is taken.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            anyhow::anyhow!("{addr} is already in use: stop what listens there, or pass --listen 127.0.0.1:<another port>")
        }
        _ => anyhow::Error::new(e).context(format!("cannot listen on {addr}")),
    })
}

/// Serves `app` on `listener` until `stop` resolves, then lets requests in
/// flight finish (up to 10 s) before returning.
pub async fn serve(app: App, listener: TcpListener, stop: impl Future<Output = ()>) -> Result<()> {
    let graceful = GracefulShutdown::new();
    let http = hyper::server::conn::http1::Builder::new();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: keep serving the others.
                Err(e) => {
                    eprintln!("coupon-host: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Without it, a response written in two pieces waits ~40 ms for the
        // peer's delayed ACK (Nagle's algorithm): Spin itself has that stall.
        if let Err(e) = stream.set_nodelay(true) {
            eprintln!("coupon-host: cannot set TCP_NODELAY: {e}");
        }
        let app = app.clone();
        let service = service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ClientAddr(peer));
            answer(app.clone(), request)
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await
                && !e.is_incomplete_message()
            {
                eprintln!("coupon-host: connection error: {e}");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => eprintln!("coupon-host: requests still running after {DRAIN_TIMEOUT:?}; stopping anyway"),
    }
    Ok(())
}

/// The header that carries a request's id, in and out.
const REQUEST_ID: &str = "x-request-id";

/// Answers one request, and logs and counts it.
async fn answer(
    app: App,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let (method, path) = (parts.method.clone(), parts.uri.path().to_owned());
    let component = app.component_for(&path).unwrap_or("-").to_owned();
    let request_id = request_id(parts.headers.get(REQUEST_ID));
    let in_flight = InFlight::start(&component);
    let mut response = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(body) => match app
            .handle(Request::from_parts(parts, body.to_bytes()))
            .await
        {
            Ok(response) => response,
            Err(e) => {
                eprintln!("coupon-host: {method} {path}: {e:#}");
                refusal(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the request could not be served",
                )
            }
        },
        Err(e) if e.is::<http_body_util::LengthLimitError>() => refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is over the host's limit",
        ),
        Err(_) => refusal(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the request body could not be read",
        ),
    };
    drop(in_flight);
    let took = started.elapsed();
    let status = response.status().as_u16();
    let code = error_code(&response);
    metrics::answered(&component, status, &code, took);
    tracing::info!(
        target: "request",
        method = %method,
        path = %path,
        component = %component,
        status,
        error = %code,
        latency_us = took.as_micros() as u64,
        request_id = %request_id,
    );
    if let Ok(value) = http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response.map(Full::new))
}

/// The caller's request id if it is 1 to 64 visible ASCII characters, else
/// a new one: 16 hex digits, a per-process random start plus a count.
fn request_id(sent: Option<&http::HeaderValue>) -> String {
    let usable =
        |id: &&str| (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic());
    if let Some(id) = sent.and_then(|v| v.to_str().ok()).filter(usable) {
        return id.to_owned();
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::process::id())
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}", START.wrapping_add(n))
}

/// The error code of an answer that is not a success, from its JSON body
/// (`{"error": {"code": ...}}`); empty for a success or a body without one.
fn error_code(response: &Response<Bytes>) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Code,
    }
    #[derive(serde::Deserialize)]
    struct Code {
        code: String,
    }
    if response.status().is_success() {
        return String::new();
    }
    serde_json::from_slice::<Body>(response.body())
        .map(|body| body.error.code)
        .unwrap_or_default()
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn stop_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
