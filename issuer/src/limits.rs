//! Keyed token buckets: per agent for signing, per caller address for the
//! unauthenticated calls. A refused call is answered `ResourceExhausted` at the
//! cost of one map lookup, so a flood cannot slow the issuer down.
//!
//! Under a flood of distinct keys (many addresses) the map is capped. Past the
//! cap, idle buckets are swept at most once per [`SWEEP_EVERY`], and keys that
//! still find no room share one overflow bucket: a newcomer during the flood
//! competes with the flood, instead of being refused outright (or paying for a
//! scan of the whole map on every call).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked before idle buckets are swept (bounds memory under a flood of
/// distinct callers).
const MAX_KEYS: usize = 65_536;
/// The least time between two sweeps of a full map.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Refills for the time since the last take, then takes one token if any.
    fn take(&mut self, now: Instant, per_sec: f64, burst: f64) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * per_sec;
        self.tokens = (self.tokens + refill).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Token buckets by key.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    buckets: HashMap<String, Bucket>,
    /// Shared by every key that found the map full.
    overflow: Bucket,
    last_sweep: Option<Instant>,
}

impl RateLimiter {
    /// `per_sec` sustained, `burst` at once, per key.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        Self {
            per_sec: f64::from(per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            state: Mutex::new(State {
                buckets: HashMap::new(),
                overflow: Bucket {
                    tokens: f64::from(burst.max(1)),
                    at: Instant::now(),
                },
                last_sweep: None,
            }),
        }
    }

    /// Takes one token for `key`; `false` if its bucket is empty.
    pub fn allow(&self, key: &str) -> bool {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: &str, now: Instant) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let (per_sec, burst) = (self.per_sec, self.burst);
        let st = &mut *state;
        if st.buckets.len() >= MAX_KEYS && !st.buckets.contains_key(key) {
            let due = st
                .last_sweep
                .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY);
            if due {
                st.last_sweep = Some(now);
                // Full buckets are indistinguishable from absent ones: drop them.
                st.buckets.retain(|_, b| {
                    b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec < burst
                });
            }
            if st.buckets.len() >= MAX_KEYS {
                return st.overflow.take(now, per_sec, burst);
            }
        }
        st.buckets
            .entry(key.to_owned())
            .or_insert(Bucket {
                tokens: burst,
                at: now,
            })
            .take(now, per_sec, burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_per_key() {
        let l = RateLimiter::new(10, 3);
        let t = Instant::now();
        assert!((0..3).all(|_| l.allow_at("a", t)));
        assert!(!l.allow_at("a", t));
        assert!(l.allow_at("b", t), "keys are independent");
        assert!(l.allow_at("a", t + Duration::from_millis(110)));
        assert!(!l.allow_at("a", t + Duration::from_millis(110)));
    }

    #[test]
    fn a_flood_of_keys_shares_one_bucket_and_sweeps_at_most_once_a_second() {
        let l = RateLimiter::new(10, 2);
        let t = Instant::now();
        // The flood: every key takes a token, so none is idle.
        for i in 0..MAX_KEYS {
            assert!(l.allow_at(&format!("flood{i}"), t));
        }
        // Newcomers share the overflow bucket (burst 2), not refused outright.
        assert!(l.allow_at("new1", t));
        assert!(l.allow_at("new2", t));
        assert!(!l.allow_at("new3", t), "the overflow bucket is empty");
        // A key already tracked keeps its own bucket.
        assert!(l.allow_at("flood0", t));
        // Within SWEEP_EVERY, no sweep (every flood bucket has refilled, yet
        // all are still there), while the overflow bucket refills as any does.
        let soon = t + Duration::from_millis(500);
        assert!(l.allow_at("new4", soon));
        assert!(l.allow_at("new5", soon));
        assert!(!l.allow_at("new6", soon));
        assert_eq!(l.state.lock().unwrap().buckets.len(), MAX_KEYS);
        // Once the flood's buckets have refilled, a sweep drops them and a
        // newcomer gets its own bucket again.
        let later = t + Duration::from_secs(3);
        assert!(l.allow_at("new7", later));
        let st = l.state.lock().unwrap();
        assert!(st.buckets.contains_key("new7"));
        assert!(st.buckets.len() < 10, "{}", st.buckets.len());
    }
}
