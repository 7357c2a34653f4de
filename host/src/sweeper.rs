//! The expiry sweep on a schedule (`up --sweep-schedule`): at each fire
//! time, `POST /expirations` through the app in process, with the operator's
//! token, from the start and then from each `next_cursor` until it is null.

use anyhow::{Context, Result};
use bytes::Bytes;
use coupon_core::Timestamp;
use coupon_host::{App, Schedule};
use http::{Request, Response, StatusCode, header};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The `admin_token` the sweep authenticates with: as resolved from the
/// environment or `--generate-secrets`, else the manifest's default.
pub fn admin_token(
    manifest: &coupon_host::Manifest,
    variables: &BTreeMap<String, String>,
) -> Result<String> {
    let declared = manifest.variables.get("admin_token").with_context(|| {
        format!(
            "--sweep-schedule sends POST /expirations with the app variable admin_token, but {} declares none",
            manifest.path.display()
        )
    })?;
    variables
        .get("admin_token")
        .or(declared.default.as_ref())
        .cloned()
        .context("--sweep-schedule needs the admin_token variable: set SPIN_VARIABLE_ADMIN_TOKEN, or pass --generate-secrets")
}

/// Most `POST /expirations` calls in one firing of the sweep (each examines
/// up to 1000 coupons): a cursor that never ends cannot hold a firing forever.
const MAX_SWEEP_CALLS: u32 = 100_000;

/// The longest wait between two looks at the system clock: the timer runs on
/// the monotonic clock, which a clock change or a suspend leaves behind.
const MAX_SWEEP_WAIT: Duration = Duration::from_secs(60);

/// How long a sweep may go on after the host is asked to stop (its call in
/// flight finishes; no new one starts).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the expiry sweep at every fire time of `schedule`, by the system
/// clock, until `stop` turns true. Fire times missed while a sweep runs are
/// skipped, not queued.
pub async fn run(
    app: App,
    schedule: Schedule,
    admin_token: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut after = Timestamp::now();
    loop {
        let Some(due) = schedule.next_after(after) else {
            eprintln!("coupon-host: --sweep-schedule \"{schedule}\" fires no more; sweeps end");
            return;
        };
        loop {
            let now = Timestamp::now();
            if now >= due {
                break;
            }
            let wait = Duration::try_from(due.duration_since(now)).unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(wait.min(MAX_SWEEP_WAIT)) => {}
                _ = stop.changed() => return,
            }
        }
        sweep(&app, &admin_token, &stop).await;
        after = due.max(Timestamp::now());
    }
}

/// How one firing of the sweep ended.
enum SweepEnd {
    /// `next_cursor` was null: all that was due is expired.
    Done,
    /// A call failed; the next firing starts over.
    Failed(String),
    /// The host is stopping.
    Stopped,
    /// `MAX_SWEEP_CALLS` calls, and still a cursor.
    CallLimit,
}

/// `POST /expirations`'s answer.
#[derive(serde::Deserialize)]
struct ExpirationStep {
    expired: u64,
    returned: u64,
    settled: u64,
    next_cursor: Option<String>,
}

/// One firing: `POST /expirations` from the start, then from each
/// `next_cursor` until it is null. Logs one JSON line to stdout (`"sweep"`:
/// `done`, `failed`, `stopped` or `call_limit`, with the last call's status),
/// and why to stderr when it ended early.
async fn sweep(app: &App, admin_token: &str, stop: &watch::Receiver<bool>) {
    let started = Instant::now();
    let (mut expired, mut returned, mut settled) = (0u64, 0u64, 0u64);
    let (mut calls, mut status) = (0u32, None);
    let mut cursor: Option<String> = None;
    let end = loop {
        if *stop.borrow() {
            break SweepEnd::Stopped;
        }
        if calls == MAX_SWEEP_CALLS {
            break SweepEnd::CallLimit;
        }
        calls += 1;
        let response = match post_expirations(app, admin_token, cursor.as_deref()).await {
            Ok(response) => response,
            Err(e) => break SweepEnd::Failed(format!("{e:#}")),
        };
        status = Some(response.status().as_u16());
        let body = String::from_utf8_lossy(response.body());
        if response.status() != StatusCode::OK {
            break SweepEnd::Failed(format!("answered {}: {}", response.status(), body.trim()));
        }
        match serde_json::from_str::<ExpirationStep>(&body) {
            Ok(step) => {
                expired += step.expired;
                returned += step.returned;
                settled += step.settled;
                match step.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break SweepEnd::Done,
                }
            }
            Err(e) => {
                break SweepEnd::Failed(format!(
                    "answered 200 with an unexpected body ({e}): {body}"
                ));
            }
        }
    };
    let ms = started.elapsed().as_millis();
    let label = match &end {
        SweepEnd::Done => "done",
        SweepEnd::Failed(reason) => {
            eprintln!("coupon-host: expiry sweep: POST /expirations (call {calls}) {reason}");
            "failed"
        }
        SweepEnd::Stopped => "stopped",
        SweepEnd::CallLimit => {
            eprintln!(
                "coupon-host: expiry sweep: still a cursor after {MAX_SWEEP_CALLS} calls; the next firing starts over"
            );
            "call_limit"
        }
    };
    let status = status.map_or("null".to_owned(), |s| s.to_string());
    println!(
        r#"{{"sweep":"{label}","path":"/expirations","status":{status},"expired":{expired},"returned":{returned},"settled":{settled},"calls":{calls},"ms":{ms}}}"#
    );
}

/// Sends `POST /expirations` as an operator would, through the app in
/// process: the admin token, and the cursor to go on from, if any (no body:
/// everything due now, from the start).
async fn post_expirations(
    app: &App,
    admin_token: &str,
    cursor: Option<&str>,
) -> Result<Response<Bytes>> {
    let request = Request::post("/expirations")
        .header(header::AUTHORIZATION, format!("Bearer {admin_token}"));
    let request = match cursor {
        Some(cursor) => request
            .header(header::CONTENT_TYPE, "application/json")
            .body(Bytes::from(
                serde_json::json!({ "cursor": cursor }).to_string(),
            ))?,
        None => request.body(Bytes::new())?,
    };
    app.handle(request).await
}
