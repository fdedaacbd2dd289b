//! Single-use nonces with a hard cap. When the table is full the oldest
//! outstanding nonce is dropped rather than refusing new callers, so a flood
//! from many addresses cannot lock out agents (a dropped nonce only costs its
//! holder a retry with a fresh one).

use std::collections::{HashMap, VecDeque};

/// Outstanding nonces by value (expiry) plus their issue order.
#[derive(Debug, Default)]
pub struct Nonces {
    live: HashMap<[u8; 32], u64>,
    order: VecDeque<[u8; 32]>,
    cap: usize,
}

impl Nonces {
    /// At most `cap` outstanding nonces.
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            ..Self::default()
        }
    }

    /// Records `nonce` until `expires_at`, dropping the oldest if full.
    pub fn insert(&mut self, nonce: [u8; 32], expires_at: u64) {
        while self.live.len() >= self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.live.remove(&old);
                }
                None => break,
            }
        }
        // Taken nonces leave stale slots in `order`; compact now and then.
        if self.order.len() >= self.cap.saturating_mul(2) {
            let live = &self.live;
            self.order.retain(|n| live.contains_key(n));
        }
        self.live.insert(nonce, expires_at);
        self.order.push_back(nonce);
    }

    /// Uses up `nonce`: `true` once, if it is outstanding and fresh at `now`.
    pub fn take(&mut self, nonce: &[u8], now: u64) -> bool {
        let Ok(key) = <[u8; 32]>::try_from(nonce) else {
            return false;
        };
        self.live.remove(&key).is_some_and(|exp| exp > now)
    }

    /// Outstanding nonces.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether none are outstanding.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u8) -> [u8; 32] {
        [i; 32]
    }

    #[test]
    fn single_use_and_expiring() {
        let mut t = Nonces::new(10);
        t.insert(n(1), 100);
        assert!(!t.take(&[1; 31], 0), "wrong length");
        assert!(t.take(&n(1), 99));
        assert!(!t.take(&n(1), 99), "used twice");
        t.insert(n(2), 100);
        assert!(!t.take(&n(2), 100), "expired");
    }

    #[test]
    fn a_full_table_drops_the_oldest_instead_of_refusing() {
        let mut t = Nonces::new(3);
        for i in 0..10 {
            t.insert(n(i), 1000);
        }
        assert_eq!(t.len(), 3);
        assert!(!t.take(&n(0), 0), "the oldest went first");
        assert!(t.take(&n(9), 0), "the newest is always accepted");
        // Stale order slots are compacted; memory stays bounded.
        for i in 10..200 {
            t.insert(n(i), 1000);
            let _ = t.take(&n(i), 0);
        }
        assert!(t.order.len() <= 6, "{}", t.order.len());
    }
}
