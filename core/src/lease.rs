//! Ownership that lapses when its owner dies, with increments only.
//!
//! A thing (an idempotency key, a coupon generation's ending, a step of the
//! brake) is owned by whoever moves `{key}:{n}` from 0 to 1, attempt `n`
//! starting at 1. The owner pays one increment and nothing else. Whoever
//! finds it owned and unfinished records when it first saw that
//! (`{key}:{n}:seen`, a register only observers write); once [`LEASE`] has
//! passed since, the owner is dead (see below), and the next attempt
//! `n + 1` can be taken the same way.
//!
//! Why that is safe: a request runs for at most [`MAX_REQUEST`] (the host's
//! limit), and a store call applies while its request runs or never, so an
//! owner first seen unfinished at `t` has finished or died by
//! `t + MAX_REQUEST`. An observer records the time its own request started,
//! up to [`MAX_REQUEST`] before it looked, and each clock may be off by
//! [`MAX_SKEW`]: the lease covers both. What the dead owner did before
//! it died is for the next owner to find in the store: each user of a lease
//! says how.

use crate::store::{Store, StoreResult};
use jiff::{SignedDuration, Timestamp};

/// The longest a request runs: `coupon-host` kills a guest after 30 s.
pub const MAX_REQUEST: SignedDuration = SignedDuration::from_secs(30);
/// The clock skew between hosts this design supports.
pub const MAX_SKEW: SignedDuration = SignedDuration::from_secs(5);
/// How long after an owner was first seen unfinished it counts as dead.
pub const LEASE: SignedDuration = SignedDuration::from_secs(90);

const _: () = assert!(LEASE.as_secs() >= 2 * MAX_REQUEST.as_secs() + 2 * MAX_SKEW.as_secs());

/// The counter that owns attempt `n` of `key`. Attempt 1 is `key` itself, so
/// keys written before leases existed keep their meaning.
pub fn attempt_key(key: &str, n: i64) -> String {
    match n {
        1 => key.to_owned(),
        n => format!("{key}:attempt:{n}"),
    }
}

fn seen_key(key: &str, n: i64) -> String {
    seen_register(&attempt_key(key, n))
}

/// The register that records when the counter `attempt` (an [`attempt_key`],
/// a turn, a slot) was first seen owned and unfinished.
pub(crate) fn seen_register(attempt: &str) -> String {
    format!("{attempt}:seen")
}

/// What trying to own attempt `n` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// This request owns attempt `n`.
    Owned(i64),
    /// Attempt `n` is owned by a request that may still run.
    Busy,
    /// Attempt `n`'s owner is dead: attempt `n + 1` may be tried.
    Lapsed,
}

/// Tries to own attempt `n` of `key` at `now`.
pub async fn try_own(
    store: &impl Store,
    key: &str,
    n: i64,
    now: Timestamp,
) -> StoreResult<Ownership> {
    if store.increment(&attempt_key(key, n), 1).await? == 1 {
        return Ok(Ownership::Owned(n));
    }
    lapsed(store, key, n, now).await
}

/// Whether attempt `n` of `key`, found owned and unfinished, has lapsed:
/// the first look records when, the look a lease later says so.
pub async fn lapsed(
    store: &impl Store,
    key: &str,
    n: i64,
    now: Timestamp,
) -> StoreResult<Ownership> {
    let seen = first_seen(store, &seen_key(key, n), now).await?;
    match now.duration_since(seen) >= LEASE {
        true => Ok(Ownership::Lapsed),
        false => Ok(Ownership::Busy),
    }
}

/// When something was first seen, as the register `key` records it (Unix
/// ms): the first look, at `now`, writes it. Looks that race may each write
/// their own `now`; any of them is no earlier than the thing seen.
pub async fn first_seen(store: &impl Store, key: &str, now: Timestamp) -> StoreResult<Timestamp> {
    let seen = store.get(key).await?.and_then(|bytes| parse_ms(&bytes));
    if let Some(seen) = seen {
        return Ok(seen);
    }
    store
        .set(key, now.as_millisecond().to_string().as_bytes())
        .await?;
    Ok(now)
}

/// A time as [`first_seen`] records it.
pub fn parse_ms(bytes: &[u8]) -> Option<Timestamp> {
    let ms = std::str::from_utf8(bytes).ok()?.parse::<i64>().ok()?;
    Timestamp::from_millisecond(ms).ok()
}

/// Owns the first attempt of `key` from `first` on that is free or whose
/// predecessors have all lapsed; `Busy` if one may still run.
pub async fn own(
    store: &impl Store,
    key: &str,
    first: i64,
    now: Timestamp,
) -> StoreResult<Ownership> {
    let mut n = first;
    loop {
        match try_own(store, key, n, now).await? {
            Ownership::Lapsed => n += 1,
            other => return Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::ts;
    use crate::store::memory::MemoryStore;
    use futures::executor::block_on;

    #[test]
    fn an_owner_first_seen_unfinished_lapses_a_lease_later() {
        let store = MemoryStore::default();
        let t0 = ts("2028-02-10T10:00:00+08:00");
        block_on(async {
            assert_eq!(own(&store, "k", 1, t0).await, Ok(Ownership::Owned(1)));
            // Seen unfinished now: busy until a lease has passed since.
            let later = t0 + SignedDuration::from_secs(30);
            assert_eq!(own(&store, "k", 1, later).await, Ok(Ownership::Busy));
            let almost = later + LEASE - SignedDuration::from_millis(1);
            assert_eq!(own(&store, "k", 1, almost).await, Ok(Ownership::Busy));
            // Lapsed: the next attempt, once.
            let lapsed = later + LEASE;
            assert_eq!(own(&store, "k", 1, lapsed).await, Ok(Ownership::Owned(2)));
            assert_eq!(own(&store, "k", 1, lapsed).await, Ok(Ownership::Busy));
        });
    }
}
