//! Pacing repeated work: one backoff for retries and one rate limit for log
//! lines, shared by both connectors.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Exponential backoff with jitter: each wait doubles, up to `max`, and is
/// drawn from its upper half at random, so many clients retrying after the
/// same outage do not come back in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `min` and doubles up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            next: min.min(max),
            max,
        }
    }

    /// How long to wait before the next attempt: between half the current
    /// step and the whole of it.
    pub fn next_wait(&mut self) -> Duration {
        let step = self.next;
        self.next = step.saturating_mul(2).min(self.max);
        step / 2 + step.mul_f64(fastrand::f64() / 2.0)
    }
}

/// Lets one event through per `period` (e.g. a log line about a failure that
/// repeats on every poll); the counters keep every occurrence.
#[derive(Debug)]
pub struct RateLimit {
    period: Duration,
    last: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// One event per `period`.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last: Mutex::new(None),
        }
    }

    /// Whether this event may pass (the first one always does).
    pub fn allow(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.period) {
            return false;
        }
        *last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_ceiling_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        for step in [100u64, 200, 400, 400, 400] {
            let wait = b.next_wait();
            let step = Duration::from_millis(step);
            assert!(
                wait >= step / 2 && wait <= step,
                "{wait:?} for a step of {step:?}"
            );
        }
    }

    #[test]
    fn a_rate_limit_lets_the_first_event_through_then_none_within_its_period() {
        let limit = RateLimit::new(Duration::from_secs(3600));
        assert!(limit.allow());
        assert!(!limit.allow());
        let open = RateLimit::new(Duration::ZERO);
        assert!(open.allow() && open.allow());
    }
}
