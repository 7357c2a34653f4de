//! Load shedding per component: a bounded number of requests run at once, a
//! bounded number wait a short while for their turn, and the rest are refused
//! at once with `503 overloaded` and `Retry-After`.
//!
//! Spin answers errors once its instance pool is full; shedding here, per
//! component, happens before that and keeps a claim storm from filling the
//! queue that checkout's redemptions wait in.

use crate::refusal::refusal;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a request may wait for a free slot before it is shed.
const MAX_WAIT: Duration = Duration::from_millis(250);

/// One component's admission: `limit` requests run, as many again may wait.
pub(crate) struct Admission {
    running: Arc<Semaphore>,
    /// Requests running or waiting. One counter for both, so a waiter handed
    /// a slot is counted once the moment the slot is freed, not when its task
    /// next runs: a request that finds fewer than `2 × limit` present is
    /// never shed.
    present: Arc<AtomicUsize>,
    limit: usize,
}

/// A request's place in its component, given back when dropped.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    _presence: Presence,
}

/// One request counted in [`Admission::present`] until dropped.
struct Presence(Arc<AtomicUsize>);

impl Drop for Presence {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            running: Arc::new(Semaphore::new(limit)),
            present: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    /// A slot (freed when dropped) at once, or after a wait of at most 250 ms
    /// if fewer than `2 × limit` requests are running or waiting; `None`:
    /// shed it.
    pub(crate) async fn enter(&self) -> Option<Slot> {
        let presence = Presence(self.present.clone());
        if self.present.fetch_add(1, Ordering::SeqCst) >= 2 * self.limit {
            return None;
        }
        let permit = match self.running.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => tokio::time::timeout(MAX_WAIT, self.running.clone().acquire_owned())
                .await
                .ok()?
                .ok()?,
        };
        Some(Slot {
            _permit: permit,
            _presence: presence,
        })
    }
}

/// The answer to a shed request, in the API's error shape.
pub(crate) fn overloaded(component: &str) -> Response<Bytes> {
    let message = format!(
        "component {component} is at its limit of concurrent requests; retry after the \
         Retry-After seconds with the same Idempotency-Key"
    );
    let mut response = refusal(StatusCode::SERVICE_UNAVAILABLE, "overloaded", &message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_the_limit_and_the_queue_requests_are_shed() {
        let admission = Admission::new(2);
        let running = (admission.enter().await, admission.enter().await);
        assert!(running.0.is_some() && running.1.is_some());
        // Two wait (and time out), the fifth is refused at once.
        let waiting = async { tokio::join!(admission.enter(), admission.enter()) };
        let refused = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let started = std::time::Instant::now();
            let answer = admission.enter().await;
            (answer, started.elapsed())
        };
        let (waited, (refused, refused_after)) = tokio::join!(waiting, refused);
        assert!(waited.0.is_none() && waited.1.is_none());
        assert!(refused.is_none());
        assert!(refused_after < MAX_WAIT, "refused without waiting");
        drop(running);
        assert!(admission.enter().await.is_some());
    }

    #[tokio::test]
    async fn a_waiting_request_runs_when_a_slot_frees() {
        let admission = Admission::new(1);
        let first = admission.enter().await.expect("a free slot");
        let second = admission.enter();
        let release = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(first);
        };
        let (second, ()) = tokio::join!(second, release);
        assert!(second.is_some());
    }

    /// A freed slot goes to the first waiter at once; a request arriving
    /// before that waiter's task runs must find room to wait, not be shed.
    #[tokio::test(flavor = "current_thread")]
    async fn a_slot_handed_to_a_waiter_frees_room_in_the_queue() {
        let admission = Admission::new(1);
        let first = admission.enter().await.expect("a free slot");
        let mut second = Box::pin(admission.enter());
        assert!(poll_once(second.as_mut()).await.is_none(), "second waits");
        drop(first);
        // The slot is now the second's, though its task has not run again.
        let mut third = Box::pin(admission.enter());
        assert!(
            poll_once(third.as_mut()).await.is_none(),
            "third waits, not shed"
        );
        let second = second.await.expect("the freed slot");
        drop(second);
        assert!(third.await.is_some());
    }

    /// Polls `future` once: `Some` with its output if it was ready.
    async fn poll_once<F: Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
