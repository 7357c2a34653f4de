//! The expiry sweep on a schedule (`up --sweep-schedule`): at each fire
//! time, `POST /expirations` through the app in process, with the operator's
//! token, in [`PARTITIONS`] partitions side by side, each from the start and
//! then from each `next_cursor` until it is null.

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

/// Most `POST /expirations` calls of one partition in one firing of the sweep
/// (each examines up to 1000 coupons): a cursor that never ends cannot hold a
/// firing forever.
const MAX_SWEEP_CALLS: u32 = 100_000;

/// Walks of one firing side by side, each over its share of the stock shards
/// (`"partition": "i/16"`): a component takes a coupon's lock one round trip
/// at a time, so sixteen walks lock sixteen at once, one per stock shard of a
/// campaign with the default shards (see BENCHMARKS.md, the sweep: 100,000
/// coupons at 12,000–17,000 a second with 4, 23,000–25,000 with 16).
const PARTITIONS: u32 = 16;

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

/// What one partition's walk did.
#[derive(Default)]
struct Walked {
    expired: u64,
    returned: u64,
    settled: u64,
    calls: u32,
    status: Option<u16>,
}

/// One firing: the [`PARTITIONS`] walks side by side. Logs one JSON line to
/// stdout (`"sweep"`: `done`, or how the first walk that did not finish
/// ended: `failed`, `stopped` or `call_limit`, with the last call's status),
/// and why to stderr when a walk ended early.
async fn sweep(app: &App, admin_token: &str, stop: &watch::Receiver<bool>) {
    let started = Instant::now();
    let walks: Vec<_> = (0..PARTITIONS)
        .map(|index| {
            let (app, admin_token, stop) = (app.clone(), admin_token.to_owned(), stop.clone());
            tokio::spawn(async move { walk(&app, &admin_token, &stop, index).await })
        })
        .collect();
    let mut total = Walked::default();
    let mut end = SweepEnd::Done;
    for walk in walks {
        let (walked, ended) = match walk.await {
            Ok(outcome) => outcome,
            Err(e) => (
                Walked::default(),
                SweepEnd::Failed(format!("the walk panicked: {e}")),
            ),
        };
        total.expired += walked.expired;
        total.returned += walked.returned;
        total.settled += walked.settled;
        total.calls += walked.calls;
        total.status = total.status.max(walked.status);
        if matches!(end, SweepEnd::Done) {
            end = ended;
        }
    }
    let ms = started.elapsed().as_millis();
    let label = match &end {
        SweepEnd::Done => "done",
        SweepEnd::Failed(_) => "failed",
        SweepEnd::Stopped => "stopped",
        SweepEnd::CallLimit => "call_limit",
    };
    let Walked {
        expired,
        returned,
        settled,
        calls,
        status,
    } = total;
    tracing::info!(
        target: "sweep",
        sweep = label,
        path = "/expirations",
        status,
        expired,
        returned,
        settled,
        calls,
        ms = ms as u64,
    );
}

/// Partition `index`'s walk: `POST /expirations` from the start, then from
/// each `next_cursor` until it is null.
async fn walk(
    app: &App,
    admin_token: &str,
    stop: &watch::Receiver<bool>,
    index: u32,
) -> (Walked, SweepEnd) {
    let mut walked = Walked::default();
    let mut cursor: Option<String> = None;
    let end = loop {
        if *stop.borrow() {
            break SweepEnd::Stopped;
        }
        if walked.calls == MAX_SWEEP_CALLS {
            eprintln!(
                "coupon-host: expiry sweep: still a cursor after {MAX_SWEEP_CALLS} calls; the next firing starts over"
            );
            break SweepEnd::CallLimit;
        }
        walked.calls += 1;
        let response = match post_expirations(app, admin_token, index, cursor.as_deref()).await {
            Ok(response) => response,
            Err(e) => break SweepEnd::Failed(format!("{e:#}")),
        };
        walked.status = Some(response.status().as_u16());
        let body = String::from_utf8_lossy(response.body());
        if response.status() != StatusCode::OK {
            break SweepEnd::Failed(format!("answered {}: {}", response.status(), body.trim()));
        }
        match serde_json::from_str::<ExpirationStep>(&body) {
            Ok(step) => {
                walked.expired += step.expired;
                walked.returned += step.returned;
                walked.settled += step.settled;
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
    if let SweepEnd::Failed(reason) = &end {
        eprintln!(
            "coupon-host: expiry sweep: POST /expirations (partition {index}/{PARTITIONS}, call {}) {reason}",
            walked.calls
        );
    }
    (walked, end)
}

/// Sends `POST /expirations` as an operator would, through the app in
/// process: the admin token, the partition, and the cursor to go on from, if
/// any (none: everything due now, from the start).
async fn post_expirations(
    app: &App,
    admin_token: &str,
    index: u32,
    cursor: Option<&str>,
) -> Result<Response<Bytes>> {
    let body =
        serde_json::json!({ "partition": format!("{index}/{PARTITIONS}"), "cursor": cursor });
    let request = Request::post("/expirations")
        .header(header::AUTHORIZATION, format!("Bearer {admin_token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Bytes::from(body.to_string()))?;
    app.handle(request).await
}
