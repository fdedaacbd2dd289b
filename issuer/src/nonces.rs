//! Single-use nonces that cost the issuer no memory until they are used.
//!
//! A nonce is `random(16) ‖ expiry(8, big-endian) ‖ HMAC-SHA256(key, both)[..8]`
//! under a per-replica key. Handing one out stores nothing, so a flood of
//! `GetNonce` (unauthenticated, from any address, the agent's own included)
//! can neither fill a table nor push out the nonce a legitimate agent is about
//! to use, and `GetNonce` needs no per-address budget that a flood could drain.
//! Only a *used* nonce is remembered, until it expires, to refuse its replay;
//! uses are bounded by the budgets of the calls that take nonces (attestation
//! by address, session opening by agent).

use std::collections::HashMap;

use aws_lc_rs::hmac;

/// Bytes of a nonce.
pub const NONCE_LEN: usize = 32;
const RANDOM_LEN: usize = 16;
const TAG_LEN: usize = 8;

/// Issues and takes nonces for one replica.
#[derive(Debug)]
pub struct Nonces {
    key: hmac::Key,
    /// Used nonces until their expiry.
    used: HashMap<[u8; NONCE_LEN], u64>,
    cap: usize,
}

impl Nonces {
    /// Remembers at most `cap` used, unexpired nonces; past that, takes are
    /// refused (never forgotten early, which would allow a replay). `None` only
    /// if the random source fails.
    pub fn new(cap: usize) -> Option<Self> {
        let mut key = [0u8; 32];
        lanyard_token::keys::random_bytes(&mut key).ok()?;
        Some(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            used: HashMap::new(),
            cap: cap.max(1),
        })
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG_LEN] {
        let full = hmac::sign(&self.key, body);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full.as_ref()[..TAG_LEN]);
        tag
    }

    /// A fresh nonce that expires at `expires_at` (`None` if no randomness).
    pub fn issue(&self, expires_at: u64) -> Option<[u8; NONCE_LEN]> {
        let mut nonce = [0u8; NONCE_LEN];
        lanyard_token::keys::random_bytes(&mut nonce[..RANDOM_LEN]).ok()?;
        nonce[RANDOM_LEN..RANDOM_LEN + 8].copy_from_slice(&expires_at.to_be_bytes());
        let tag = self.tag(&nonce[..NONCE_LEN - TAG_LEN]);
        nonce[NONCE_LEN - TAG_LEN..].copy_from_slice(&tag);
        Some(nonce)
    }

    /// Uses up `nonce`: `true` once, if this replica issued it and it has not
    /// expired at `now`.
    pub fn take(&mut self, nonce: &[u8], now: u64) -> bool {
        let Ok(nonce) = <[u8; NONCE_LEN]>::try_from(nonce) else {
            return false;
        };
        let (body, tag) = nonce.split_at(NONCE_LEN - TAG_LEN);
        // Constant time: the tag is the secret-dependent part.
        let expected = self.tag(body);
        let same = expected
            .iter()
            .zip(tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&body[RANDOM_LEN..]);
        let expires_at = u64::from_be_bytes(exp);
        if !same || expires_at <= now {
            return false;
        }
        if self.used.len() >= self.cap {
            self.used.retain(|_, e| *e > now);
            if self.used.len() >= self.cap {
                return false;
            }
        }
        self.used.insert(nonce, expires_at).is_none()
    }

    /// Used nonces still remembered.
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// Whether none are remembered.
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn single_use_and_expiring() {
        let mut t = Nonces::new(10).unwrap();
        let n = t.issue(100).unwrap();
        assert!(!t.take(&n[..31], 0), "wrong length");
        assert!(t.take(&n, 99));
        assert!(!t.take(&n, 99), "used twice");
        let n = t.issue(100).unwrap();
        assert!(!t.take(&n, 100), "expired");
    }

    #[test]
    fn attacker_forged_or_foreign_nonces_are_refused() {
        let mut t = Nonces::new(10).unwrap();
        let other = Nonces::new(10).unwrap();
        assert!(!t.take(&other.issue(100).unwrap(), 0), "another replica's");
        let mut n = t.issue(100).unwrap();
        // Stretching the expiry breaks the tag.
        n[RANDOM_LEN + 7] ^= 1;
        assert!(!t.take(&n, 0));
        assert!(!t.take(&[0u8; NONCE_LEN], 0));
    }

    /// A flood of issued nonces stores nothing and evicts nothing: the one a
    /// legitimate agent holds still works after a million others.
    #[test]
    fn a_flood_of_issued_nonces_costs_no_memory_and_evicts_nothing() {
        let mut t = Nonces::new(4).unwrap();
        let mine = t.issue(100).unwrap();
        for _ in 0..100_000 {
            t.issue(100).unwrap();
        }
        assert!(t.is_empty());
        assert!(t.take(&mine, 1));
    }

    #[test]
    fn a_full_memory_of_used_nonces_refuses_rather_than_forgets() {
        let mut t = Nonces::new(2).unwrap();
        let a = t.issue(100).unwrap();
        let b = t.issue(100).unwrap();
        let c = t.issue(100).unwrap();
        assert!(t.take(&a, 1) && t.take(&b, 1));
        assert!(!t.take(&c, 1), "full: refused");
        assert!(!t.take(&a, 1), "and a is still remembered");
        // Once they expire there is room again.
        let d = t.issue(300).unwrap();
        assert!(t.take(&d, 150));
    }
}
