//! The client-side rate limit on Neon API requests, shared by every job in the process.
//!
//! Neon allows about 700 requests a minute per account, with bursts of 40 a second per
//! route, and answers `429` beyond. A token bucket would let `burst + rate` through in a
//! minute, so this is a sliding window over the requests themselves: a request may start
//! only when fewer than `per_minute` requests started in the minute before it and fewer
//! than `per_second` in the second before it. Each caller reserves its start time under the
//! lock (reservations are in order, so callers are served first come, first served) and
//! then sleeps until it. The windows are padded (1.05 s and 61 s): the server counts
//! arrivals, which trail our reservations by scheduling and network jitter.
//!
//! A `429` holds every caller back until its `Retry-After` has passed (`hold_until`): the
//! server told us the account is over budget, whoever in this process asks next.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

const SECOND: Duration = Duration::from_millis(1_050);
const MINUTE: Duration = Duration::from_secs(61);

/// Requests per minute and per second; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    pub per_minute: u32,
    pub per_second: u32,
}

impl RateLimits {
    /// 600 a minute and 30 a second: below Neon's 700 and 40, leaving room for the
    /// console and other tools on the same account. With N worker processes on one
    /// account, give each `PGFLEET_NEON_RATE_LIMIT` = budget / N.
    pub const DEFAULT: RateLimits = RateLimits {
        per_minute: 600,
        per_second: 30,
    };
}

pub struct RateLimiter {
    limits: RateLimits,
    state: Mutex<State>,
}

struct State {
    /// Start times reserved in the last minute, oldest first (some may be in the future).
    started: VecDeque<Instant>,
    /// No request starts before this (a `429`'s `Retry-After`).
    hold: Option<Instant>,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        let limits = RateLimits {
            per_minute: limits.per_minute.max(1),
            per_second: limits.per_second.max(1),
        };
        Self {
            limits,
            state: Mutex::new(State {
                started: VecDeque::with_capacity(limits.per_minute as usize),
                hold: None,
            }),
        }
    }

    pub fn limits(&self) -> RateLimits {
        self.limits
    }

    /// Waits until a request may start, and counts it as started then.
    pub async fn acquire(&self) {
        let at = self.reserve(Instant::now());
        tokio::time::sleep_until(at).await;
    }

    /// Keeps every request back until `until` (a `429`'s `Retry-After`).
    pub fn hold_until(&self, until: Instant) {
        let mut state = self.state.lock().expect("not poisoned");
        if state.hold.is_none_or(|h| h < until) {
            state.hold = Some(until);
        }
    }

    fn reserve(&self, now: Instant) -> Instant {
        let mut state = self.state.lock().expect("not poisoned");
        while state
            .started
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= MINUTE)
        {
            state.started.pop_front();
        }
        let mut at = now.max(state.hold.unwrap_or(now));
        if let Some(last) = state.started.back() {
            at = at.max(*last);
        }
        let n = state.started.len();
        let (per_minute, per_second) = (self.limits.per_minute as usize, self.limits.per_second as usize);
        if n >= per_minute {
            at = at.max(state.started[n - per_minute] + MINUTE);
        }
        if n >= per_second {
            at = at.max(state.started[n - per_second] + SECOND);
        }
        state.started.push_back(at);
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The most starts in any window of `len` beginning at a start.
    fn most_in_window(starts: &[Instant], len: Duration) -> usize {
        starts
            .iter()
            .map(|s| starts.iter().filter(|t| **t >= *s && **t < *s + len).count())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn no_window_ever_holds_more_than_the_limits() {
        let limiter = RateLimiter::new(RateLimits {
            per_minute: 50,
            per_second: 4,
        });
        let t0 = Instant::now();
        // 200 callers arriving in bursts, faster than allowed.
        let starts: Vec<Instant> = (0..200)
            .map(|i| limiter.reserve(t0 + Duration::from_millis((i / 10) * 300)))
            .collect();
        assert!(starts.windows(2).all(|w| w[0] <= w[1]), "served in order");
        assert!(most_in_window(&starts, Duration::from_secs(1)) <= 4);
        assert!(most_in_window(&starts, Duration::from_secs(60)) <= 50);
        // And not slower than needed: start 150 waits three minute windows, the last 50
        // then go at 4 a second.
        let last = *starts.last().unwrap() - t0;
        assert!(
            last >= 3 * MINUTE && last < 3 * MINUTE + Duration::from_secs(15),
            "{last:?}"
        );
    }

    #[test]
    fn a_hold_delays_everyone_after_it() {
        let limiter = RateLimiter::new(RateLimits::DEFAULT);
        let t0 = Instant::now();
        limiter.hold_until(t0 + Duration::from_secs(2));
        assert!(limiter.reserve(t0) >= t0 + Duration::from_secs(2));
        assert!(limiter.reserve(t0 + Duration::from_millis(10)) >= t0 + Duration::from_secs(2));
    }
}
