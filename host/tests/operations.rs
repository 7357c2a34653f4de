//! What the people on call get from `coupon-host up`: `/healthz`, `/readyz`
//! and Prometheus `/metrics` on `--metrics-listen`, and a request log of
//! JSON lines with a timestamp, the request id every answer carries, and the
//! error code that tells a paused campaign from an overload or a store
//! failure.

mod common;

use common::{ADMIN, Host, Redis, scratch, write_redis_config};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// `GET path` on the operations listener at `address`: status and body.
fn get(address: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connects");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n"
    )
    .expect("writes");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("reads");
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

/// The first log line that `matches`, within 10 s.
fn line_where(log: &Receiver<String>, matches: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = log.recv_timeout(left).expect("the line within 10 s");
        if matches(&line) {
            return line;
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn probes_metrics_and_the_request_log() {
    let mut redis = Redis::start();
    let dir = scratch("operations");
    let config = dir.join("redis.toml");
    write_redis_config(&config, redis.port);
    let (host, log) = Host::start_with_log(&[
        "--runtime-config-file",
        config.to_str().expect("utf-8"),
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let ops = line_where(&log, |l| l.contains("/readyz: http://"));
    let ops = ops
        .rsplit("http://")
        .next()
        .expect("an address")
        .trim()
        .to_owned();
    assert_eq!(get(&ops, "/healthz").0, 200);
    assert_eq!(get(&ops, "/readyz"), (200, "ready\n".to_owned()));

    // The caller's request id is echoed, and logged with the error code.
    let (status, headers, _) = host.request_with_headers(
        "GET",
        "/campaigns/nope",
        ADMIN,
        &[("x-request-id", "support-ticket-42")],
        None,
    );
    assert_eq!(status, 404);
    assert_eq!(header(&headers, "x-request-id"), Some("support-ticket-42"));
    let line = line_where(&log, |l| l.contains("support-ticket-42"));
    let logged: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(logged["status"], 404, "{line}");
    assert_eq!(logged["error"], "campaign_not_found", "{line}");
    assert_eq!(logged["component"], "campaigns", "{line}");
    assert!(
        logged["timestamp"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")),
        "{line}"
    );
    // Without one (or with one that is not usable), the host makes one up.
    let long = "x".repeat(65);
    for sent in [vec![], vec![("x-request-id", long.as_str())]] {
        let (_, headers, _) =
            host.request_with_headers("GET", "/campaigns/nope", ADMIN, &sent, None);
        let id = header(&headers, "x-request-id").expect("an id");
        assert!(
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
    }

    let (_, metrics) = get(&ops, "/metrics");
    for expected in [
        r#"coupon_host_requests_total{component="campaigns",status="404",code="campaign_not_found"} 3"#,
        r#"coupon_host_request_duration_seconds_count{component="campaigns"} 3"#,
        r#"coupon_host_requests_in_flight{component="campaigns"} 0"#,
        r#"coupon_host_instances_total{component="campaigns"} "#,
        r#"coupon_host_store_call_duration_seconds_count{backend="redis",operation="get"} "#,
    ] {
        assert!(metrics.contains(expected), "{expected} in\n{metrics}");
    }

    // The store down: alive, not ready, naming the store; calls that fail
    // are counted.
    redis.kill();
    let (status, why) = get(&ops, "/readyz");
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("\"default\""), "{why}");
    assert_eq!(get(&ops, "/healthz").0, 200);
    let (status, _) = host.request("GET", "/campaigns/nope", ADMIN, &[], None);
    assert_eq!(status, 503);
    let (_, metrics) = get(&ops, "/metrics");
    assert!(
        metrics.contains(r#"coupon_host_store_call_errors_total{backend="redis",operation="get"}"#)
            && metrics.contains(r#"code="store_unavailable""#),
        "{metrics}"
    );
    host.stop();
}
