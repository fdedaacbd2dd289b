//! Keyed token buckets: per agent for signing, per caller address for the
//! unauthenticated calls. A refused call is answered `ResourceExhausted` at the
//! cost of one map lookup, so a flood cannot slow the issuer down.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Keys tracked before idle buckets are swept (bounds memory under a flood of
/// distinct callers).
const MAX_KEYS: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by key.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `per_sec` sustained, `burst` at once, per key.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        Self {
            per_sec: f64::from(per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; `false` if its bucket is empty.
    pub fn allow(&self, key: &str) -> bool {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: &str, now: Instant) -> bool {
        let Ok(mut map) = self.buckets.lock() else {
            return false;
        };
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            // Full buckets are indistinguishable from absent ones: drop them.
            let (per_sec, burst) = (self.per_sec, self.burst);
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec < burst);
            if map.len() >= MAX_KEYS {
                return false;
            }
        }
        let b = map.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * self.per_sec;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
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
}
