//! One clock for every process of a run: `CLOCK_MONOTONIC` is system-wide on Linux, so a time
//! read in a worker and a time read here can be subtracted.

use std::time::Duration;

/// Nanoseconds on the system-wide monotonic clock.
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The time from `earlier` to `later`, both from [`now_ns`] (zero if they are out of order).
pub fn between(earlier: u64, later: u64) -> Duration {
    Duration::from_nanos(later.saturating_sub(earlier))
}
