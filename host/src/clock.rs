//! A wall clock the test sets, so time-dependent behaviour (expiry, windows)
//! is tested without waiting.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmtime_wasi::HostWallClock;

/// A wall clock that only moves when told to.
///
/// Guests read it through both WASI 0.2 `wall-clock` (Rust's
/// `SystemTime::now()`) and WASI 0.3 `system-clock`. Clones share the same
/// time, so a test keeps one clone and moves it while the app runs. Monotonic
/// clocks and timers are not affected.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// A clock stopped at the current real time.
    pub fn at_now() -> Self {
        Self::new(SystemTime::now())
    }

    /// The time it shows.
    pub fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the time it shows.
    pub fn set(&self, time: SystemTime) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = time;
    }

    /// Moves it forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }
}

impl HostWallClock for ManualClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    /// Time since the Unix epoch; a time set before 1970 reads as the epoch,
    /// since WASI's wall clock cannot go below it.
    fn now(&self) -> Duration {
        ManualClock::now(self)
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_time_that_moves_only_when_told() {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let clock = ManualClock::new(start);
        let view = clock.clone();
        assert_eq!(
            HostWallClock::now(&view),
            Duration::from_secs(1_700_000_000)
        );
        clock.advance(Duration::from_millis(1500));
        assert_eq!(view.now(), start + Duration::from_millis(1500));
        clock.set(UNIX_EPOCH - Duration::from_secs(1));
        assert_eq!(HostWallClock::now(&view), Duration::ZERO);
    }
}
