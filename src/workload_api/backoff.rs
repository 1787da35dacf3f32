//! Reconnect delays: exponential, bounded, jittered.

use std::time::Duration;

/// How long the client waits before reconnecting after a failed connect or a broken stream.
///
/// The n-th consecutive retry waits a random time in `[d/2, d]` where
/// `d = min(max, initial * 2^(n-1))`: exponential so that a dead agent is not hammered, bounded
/// so that a recovered agent is found again within `max`, and jittered so that many workloads
/// restarted together do not reconnect in lockstep. The count starts again once a stream has
/// delivered a message.
///
/// ```
/// use std::time::Duration;
/// use tower_mtls::workload_api::Backoff;
///
/// // Tests want to see reconnects quickly.
/// let fast = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
/// assert_eq!(fast.max(), Duration::from_millis(100));
/// assert_eq!(Backoff::default().initial(), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `initial` and doubles up to `max` (raised to `initial` when smaller; a zero
    /// `initial` is raised to 1 ms so that a broken agent never turns into a busy loop).
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
        }
    }

    /// The delay ceiling of the first retry.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The largest delay between two attempts.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay ceiling of retry number `attempt` (1-based), before jitter.
    fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The jittered delay of retry number `attempt` (1-based).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        // Nanosecond resolution; a ceiling beyond u64 nanoseconds (584 years) is not a backoff.
        let spread = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        half.saturating_add(Duration::from_nanos(fastrand::u64(0..=spread)))
    }
}

impl Default for Backoff {
    /// 1 s doubling up to 30 s (go-spiffe waits 1 s more per attempt, up to 30 s).
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ceilings: Vec<_> = (1..=6).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_half_and_full() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 1..=40 {
            let ceiling = b.ceiling(attempt);
            for _ in 0..50 {
                let d = b.delay(attempt);
                assert!(
                    d >= ceiling / 2 && d <= ceiling,
                    "{d:?} outside {ceiling:?}"
                );
            }
        }
    }

    #[test]
    fn degenerate_settings_are_raised() {
        let b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.initial(), Duration::from_millis(1));
        assert_eq!(b.max(), Duration::from_millis(1));
        assert!(b.delay(1) >= Duration::from_micros(500));
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert!(huge.delay(100) >= Duration::MAX / 2);
    }
}
