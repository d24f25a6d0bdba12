//! The client-side rate limit on Neon API requests, shared by every job in the process.
//!
//! Neon allows about 700 requests a minute per account, with bursts of 40 a second per
//! route, and answers `429` beyond. A token bucket would let `burst + rate` through in a
//! minute, so this is a sliding window over the requests themselves, and it holds at the
//! server, not only here: a request is counted from the moment it may start until its
//! answer is back (the server saw it somewhere in between, however late scheduling or the
//! network delivered it), and a request may start only a whole window after the `k`-th
//! request before it *ended* (`k` = the window's limit). Then no window at the server can
//! hold more than `k`: of any `k + 1` requests, the last started a window after the first
//! ended. It costs each window the requests' latency, not more.
//!
//! A `429` holds every caller back until its `Retry-After` has passed (`hold_until`): the
//! server told us the account is over budget, whoever in this process asks next.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

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
    /// Wakes callers waiting for a request to end.
    ended: Notify,
}

struct Request {
    id: u64,
    start: Instant,
    /// When its answer (or failure) was back; `None` while in flight.
    end: Option<Instant>,
}

struct State {
    /// Requests of the last minute, in start order (some may start in the future).
    requests: VecDeque<Request>,
    next_id: u64,
    /// No request starts before this (a `429`'s `Retry-After`).
    hold: Option<Instant>,
}

/// A request's place in the limiter; dropping it records that the request has ended.
pub struct Permit<'a> {
    limiter: &'a RateLimiter,
    id: u64,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.finish(self.id, Instant::now());
    }
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
                requests: VecDeque::with_capacity(limits.per_minute as usize + 1),
                next_id: 0,
                hold: None,
            }),
            ended: Notify::new(),
        }
    }

    pub fn limits(&self) -> RateLimits {
        self.limits
    }

    /// Waits until a request may start; keep the permit until its answer is read.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            // Created before looking, so an end recorded in between is not missed.
            let ended = self.ended.notified();
            if let Some((id, at)) = self.try_reserve(Instant::now()) {
                tokio::time::sleep_until(at).await;
                return Permit { limiter: self, id };
            }
            ended.await;
        }
    }

    /// Keeps every request back until `until` (a `429`'s `Retry-After`).
    pub fn hold_until(&self, until: Instant) {
        let mut state = self.state.lock().expect("not poisoned");
        if state.hold.is_none_or(|h| h < until) {
            state.hold = Some(until);
        }
    }

    /// The next request's (id, start), or `None` while the request that decides it is
    /// still in flight.
    fn try_reserve(&self, now: Instant) -> Option<(u64, Instant)> {
        let mut state = self.state.lock().expect("not poisoned");
        while state.requests.front().is_some_and(|r| {
            r.end
                .is_some_and(|end| now.saturating_duration_since(end) >= MINUTE)
        }) {
            state.requests.pop_front();
        }
        let mut at = now.max(state.hold.unwrap_or(now));
        if let Some(last) = state.requests.back() {
            at = at.max(last.start);
        }
        let n = state.requests.len();
        for (limit, window) in [(self.limits.per_minute, MINUTE), (self.limits.per_second, SECOND)] {
            let limit = limit as usize;
            if n >= limit {
                at = at.max(state.requests[n - limit].end? + window);
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        state.requests.push_back(Request {
            id,
            start: at,
            end: None,
        });
        Some((id, at))
    }

    fn finish(&self, id: u64, at: Instant) {
        {
            let mut state = self.state.lock().expect("not poisoned");
            if let Some(request) = state.requests.iter_mut().rev().find(|r| r.id == id) {
                request.end = Some(at.max(request.start));
            }
        }
        self.ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` requests through the limiter, each answered `latency` after it starts,
    /// arriving in bursts faster than allowed; returns their (start, end).
    fn simulate(limiter: &RateLimiter, n: usize, latency: Duration) -> Vec<(Instant, Instant)> {
        let t0 = Instant::now();
        let mut done: Vec<(Instant, Instant)> = Vec::new();
        let mut in_flight: Vec<(u64, Instant)> = Vec::new();
        let mut clock = t0;
        while done.len() < n {
            let wanted = done.len() + in_flight.len() < n;
            match wanted.then(|| limiter.try_reserve(clock)).flatten() {
                Some((id, at)) => in_flight.push((id, at)),
                None => {
                    // Nothing may start before the oldest request in flight ends.
                    let (id, start) = in_flight.remove(0);
                    let end = start + latency;
                    limiter.finish(id, end);
                    done.push((start, end));
                    clock = clock.max(end);
                }
            }
        }
        done
    }

    #[test]
    fn a_request_starts_a_window_after_the_kth_before_it_ended() {
        let limits = RateLimits {
            per_minute: 50,
            per_second: 4,
        };
        let limiter = RateLimiter::new(limits);
        let requests = simulate(&limiter, 200, Duration::from_millis(30));
        assert!(requests.windows(2).all(|w| w[0].0 <= w[1].0), "served in order");
        for (k, window) in [(50, MINUTE), (4, SECOND)] {
            for i in 0..requests.len() - k {
                // Whenever the server saw request i (between its start and end) and request
                // i + k, they were a whole window apart.
                assert!(
                    requests[i + k].0 >= requests[i].1 + window,
                    "window {window:?} at {i}"
                );
            }
        }
        // And not slower than needed: request 150 waits three minute windows (plus the
        // requests' latency), the last 50 then go 4 a second.
        let t0 = requests[0].0;
        let last = requests.last().unwrap().0 - t0;
        assert!(
            last >= 3 * MINUTE && last < 3 * MINUTE + Duration::from_secs(16),
            "{last:?}"
        );
    }

    #[test]
    fn a_hold_delays_everyone_after_it() {
        let limiter = RateLimiter::new(RateLimits::DEFAULT);
        let t0 = Instant::now();
        limiter.hold_until(t0 + Duration::from_secs(2));
        assert!(limiter.try_reserve(t0).unwrap().1 >= t0 + Duration::from_secs(2));
        assert!(
            limiter.try_reserve(t0 + Duration::from_millis(10)).unwrap().1 >= t0 + Duration::from_secs(2)
        );
    }
}
