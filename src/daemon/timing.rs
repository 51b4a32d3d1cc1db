//! The daemon's clocks: the settle window that coalesces changes, and exponential backoff.

use std::time::Duration;

use tokio::time::Instant;

/// How far ahead a deadline goes when `now + wait` is past what `Instant` can hold (the same
/// horizon tokio uses for a sleep that never ends): about 30 years.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `t + d` without the panic on overflow: a wait too long to represent ends in the far future.
pub fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(FAR_FUTURE.min(d)))
        .unwrap_or(t)
}

/// Coalesces changes: apply `min` after the last change, but no later than `max` after the first
/// (consul-template's `wait`), so a burst of scaling events causes one reload.
#[derive(Debug, Clone)]
pub struct Settle {
    min: Duration,
    max: Duration,
    first: Option<Instant>,
    deadline: Option<Instant>,
}

impl Settle {
    /// A window; `max` is raised to `min` if lower.
    pub fn new(min: Duration, max: Duration) -> Self {
        Settle {
            min,
            max: max.max(min),
            first: None,
            deadline: None,
        }
    }

    /// Records a change at `now`.
    pub fn change(&mut self, now: Instant) {
        let first = *self.first.get_or_insert(now);
        self.deadline = Some(later(now, self.min).min(later(first, self.max)));
    }

    /// When to apply, if a change is waiting.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Forgets the waiting changes (they are being applied).
    pub fn clear(&mut self) {
        self.first = None;
        self.deadline = None;
    }
}

/// Exponential backoff: `base`, `2×base`, `4×base`, ... capped at `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
    until: Option<Instant>,
}

impl Backoff {
    /// A backoff with no failures yet.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            failures: 0,
            until: None,
        }
    }

    /// Records a failure at `now`; returns the wait before the next try.
    pub fn fail(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let factor = 2u32.saturating_pow(self.failures.saturating_sub(1).min(30));
        let wait = self.base.saturating_mul(factor).min(self.cap);
        self.until = Some(later(now, wait));
        wait
    }

    /// Records a success; returns how many failures came before it.
    pub fn succeed(&mut self) -> u32 {
        self.until = None;
        std::mem::take(&mut self.failures)
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// True while waiting out a failure.
    pub fn is_waiting(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// When the wait ends, if waiting.
    pub fn until(&self) -> Option<Instant> {
        self.until
    }
}

/// A random delay in `[0, period × fraction)` so that hosts started together spread out.
pub fn jitter_delay(period: Duration, fraction: f64) -> Duration {
    // NaN is neither above nor below zero: no jitter either.
    if fraction.is_nan() || fraction <= 0.0 {
        return Duration::ZERO;
    }
    let share = fraction.min(1.0) * fastrand::f64();
    Duration::try_from_secs_f64(period.as_secs_f64() * share)
        .unwrap_or(Duration::ZERO)
        .min(period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn settle_waits_for_quiet_but_not_forever() {
        let mut s = Settle::new(Duration::from_secs(2), Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(s.deadline(), None);
        s.change(t0);
        assert_eq!(s.deadline(), Some(t0 + Duration::from_secs(2)));
        // Changes every second keep pushing the deadline, up to first + max.
        for i in 1..=10 {
            tokio::time::advance(Duration::from_secs(1)).await;
            s.change(Instant::now());
            let expected = (t0 + Duration::from_secs(i + 2)).min(t0 + Duration::from_secs(5));
            assert_eq!(s.deadline(), Some(expected));
        }
        s.clear();
        assert_eq!(s.deadline(), None);
        let t1 = Instant::now();
        s.change(t1);
        assert_eq!(s.deadline(), Some(t1 + Duration::from_secs(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let now = Instant::now();
        let waits: Vec<u64> = (0..12).map(|_| b.fail(now).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert!(b.is_waiting(now));
        tokio::time::advance(Duration::from_secs(301)).await;
        assert!(!b.is_waiting(Instant::now()));
        assert_eq!(b.succeed(), 12);
        assert_eq!(b.failures(), 0);
        assert_eq!(b.fail(Instant::now()).as_secs(), 1);
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let period = Duration::from_secs(10);
        for _ in 0..1000 {
            let d = jitter_delay(period, 0.2);
            assert!(d < Duration::from_secs(2), "{d:?}");
        }
        assert_eq!(jitter_delay(period, 0.0), Duration::ZERO);
        // Not all the same: the point is to spread hosts out.
        let samples: std::collections::HashSet<_> =
            (0..50).map(|_| jitter_delay(period, 0.5)).collect();
        assert!(samples.len() > 10);
    }

    #[tokio::test(start_paused = true)]
    async fn no_duration_overflows_the_clock() {
        let huge = Duration::MAX;
        let now = Instant::now();
        let mut s = Settle::new(huge, huge);
        s.change(now);
        let deadline = s.deadline().unwrap();
        assert!(deadline > now + Duration::from_secs(86_400 * 365));
        s.change(now + Duration::from_secs(1));
        assert!(s.deadline().unwrap() >= deadline);

        let mut s = Settle::new(Duration::from_secs(u64::MAX), Duration::from_secs(u64::MAX));
        s.change(now);
        assert!(s.deadline().is_some());

        let mut b = Backoff::new(huge, huge);
        for _ in 0..40 {
            assert_eq!(b.fail(now), huge);
        }
        assert!(b.is_waiting(now + Duration::from_secs(86_400 * 365)));

        assert!(jitter_delay(huge, 1.0) <= huge);
        assert_eq!(jitter_delay(huge, f64::NAN), Duration::ZERO);
        assert!(jitter_delay(Duration::from_secs(1), f64::INFINITY) <= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn later_adds_or_saturates() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(later(now, Duration::MAX), now + FAR_FUTURE);
    }
}
