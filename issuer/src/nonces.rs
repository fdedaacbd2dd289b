//! Single-use nonces that cost the issuer no memory until they are used.
//!
//! A nonce is `random(16) ‖ expiry(8, big-endian) ‖ HMAC-SHA256(key, both)[..8]`
//! under a per-replica key. Handing one out stores nothing, so a flood of
//! `GetNonce` (unauthenticated, from any address, the agent's own included)
//! can neither fill a table nor push out the nonce a legitimate agent is about
//! to use, and `GetNonce` needs no per-address budget that a flood could drain.
//! Only a *used* nonce is remembered, until it expires, to refuse its replay.
//! Nonces taken by unauthenticated calls (attestation) and by authenticated
//! ones (session opening after the credential verified, renewal inside a
//! session) are remembered apart, each with its own cap: a flood of
//! attestations with the attacker's own keys can fill only the first, so it
//! can hold up new nodes but never a known agent's session or renewal.

use std::collections::HashMap;

use aws_lc_rs::hmac;

/// Bytes of a nonce.
pub const NONCE_LEN: usize = 32;
const RANDOM_LEN: usize = 16;
const TAG_LEN: usize = 8;

/// Who is taking a nonce, which decides where its use is remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taker<'a> {
    /// A call nobody has authenticated yet (node attestation).
    Unauthenticated,
    /// This agent, whose credential or session and signature already checked
    /// out. Each agent has its own cap, so one compromised node cannot fill
    /// the memory that every other agent's sessions and renewals need.
    Agent(&'a str),
}

/// Used nonces an agent may have remembered at once (a nonce lives a minute;
/// a healthy agent uses a few).
pub const PER_AGENT_CAP: usize = 64;

/// Used nonces until their expiry, with a cap, and a cap per owner.
#[derive(Debug)]
struct Used {
    map: HashMap<[u8; NONCE_LEN], (u64, Option<String>)>,
    per_owner: HashMap<String, usize>,
    cap: usize,
    /// When expired entries were last swept: at most once a second, so a full
    /// map costs one scan a second, not one per call.
    swept_at: u64,
}

impl Used {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            per_owner: HashMap::new(),
            cap: cap.max(1),
            swept_at: 0,
        }
    }

    fn owner_full(&self, owner: Option<&str>) -> bool {
        owner.is_some_and(|o| self.per_owner.get(o).copied().unwrap_or(0) >= PER_AGENT_CAP)
    }

    fn sweep(&mut self, now: u64) {
        let per_owner = &mut self.per_owner;
        self.map.retain(|_, (exp, owner)| {
            let keep = *exp > now;
            if let (false, Some(o)) = (keep, owner.as_deref()) {
                if let Some(n) = per_owner.get_mut(o) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        per_owner.remove(o);
                    }
                }
            }
            keep
        });
        self.swept_at = now;
    }

    /// Records `nonce` for `owner`; `false` if it was used already, or the map
    /// (or the owner's share) is full of unexpired nonces: refused, never
    /// forgotten early, which would let a replay through.
    fn record(
        &mut self,
        nonce: [u8; NONCE_LEN],
        expires_at: u64,
        now: u64,
        owner: Option<&str>,
    ) -> bool {
        if (self.map.len() >= self.cap || self.owner_full(owner)) && self.swept_at != now {
            self.sweep(now);
        }
        if self.map.len() >= self.cap || self.owner_full(owner) || self.map.contains_key(&nonce) {
            return false;
        }
        self.map
            .insert(nonce, (expires_at, owner.map(str::to_owned)));
        if let Some(o) = owner {
            *self.per_owner.entry(o.to_owned()).or_insert(0) += 1;
        }
        true
    }
}

/// Issues and takes nonces for one replica.
#[derive(Debug)]
pub struct Nonces {
    key: hmac::Key,
    unauthenticated: Used,
    authenticated: Used,
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
            unauthenticated: Used::new(cap),
            authenticated: Used::new(cap),
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

    /// Uses up `nonce` for `taker`: `true` once, if this replica issued it and
    /// it has not expired at `now`. A nonce is single-use across both takers.
    pub fn take(&mut self, nonce: &[u8], now: u64, taker: Taker<'_>) -> bool {
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
        let (mine, other, owner) = match taker {
            Taker::Unauthenticated => (&mut self.unauthenticated, &self.authenticated, None),
            Taker::Agent(id) => (&mut self.authenticated, &self.unauthenticated, Some(id)),
        };
        !other.map.contains_key(&nonce) && mine.record(nonce, expires_at, now, owner)
    }

    /// Used nonces still remembered.
    pub fn len(&self) -> usize {
        self.unauthenticated.map.len() + self.authenticated.map.len()
    }

    /// Whether none are remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        assert!(!t.take(&n[..31], 0, Taker::Agent("a")), "wrong length");
        assert!(t.take(&n, 99, Taker::Agent("a")));
        assert!(!t.take(&n, 99, Taker::Agent("a")), "used twice");
        let n = t.issue(100).unwrap();
        assert!(!t.take(&n, 100, Taker::Agent("a")), "expired");
    }

    #[test]
    fn attacker_forged_or_foreign_nonces_are_refused() {
        let mut t = Nonces::new(10).unwrap();
        let other = Nonces::new(10).unwrap();
        assert!(
            !t.take(&other.issue(100).unwrap(), 0, Taker::Unauthenticated),
            "another replica's"
        );
        let mut n = t.issue(100).unwrap();
        // Stretching the expiry breaks the tag.
        n[RANDOM_LEN + 7] ^= 1;
        assert!(!t.take(&n, 0, Taker::Agent("a")));
        assert!(!t.take(&[0u8; NONCE_LEN], 0, Taker::Agent("a")));
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
        assert!(t.take(&mine, 1, Taker::Agent("a")));
    }

    #[test]
    fn a_full_memory_of_used_nonces_refuses_rather_than_forgets() {
        let mut t = Nonces::new(2).unwrap();
        let a = t.issue(100).unwrap();
        let b = t.issue(100).unwrap();
        let c = t.issue(100).unwrap();
        assert!(t.take(&a, 1, Taker::Agent("a")) && t.take(&b, 1, Taker::Agent("a")));
        assert!(!t.take(&c, 1, Taker::Agent("a")), "full: refused");
        assert!(
            !t.take(&a, 1, Taker::Agent("a")),
            "and a is still remembered"
        );
        // Once they expire there is room again.
        let d = t.issue(300).unwrap();
        assert!(t.take(&d, 150, Taker::Agent("a")));
    }
}

#[cfg(test)]
mod flood_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The review's lock-out: attestations with the attacker's own keys fill
    /// the unauthenticated memory; known agents still open sessions.
    #[test]
    fn attacker_filling_the_attestation_memory_leaves_sessions_alone() {
        let mut t = Nonces::new(3).unwrap();
        for _ in 0..3 {
            let n = t.issue(100).unwrap();
            assert!(t.take(&n, 1, Taker::Unauthenticated));
        }
        let n = t.issue(100).unwrap();
        assert!(!t.take(&n, 1, Taker::Unauthenticated), "full: refused");
        let n = t.issue(100).unwrap();
        assert!(t.take(&n, 1, Taker::Agent("a")), "a session still opens");
        // Single use across both: a nonce one taker used, the other cannot.
        let n = t.issue(100).unwrap();
        assert!(t.take(&n, 1, Taker::Agent("a")));
        assert!(!t.take(&n, 1, Taker::Unauthenticated));
    }

    /// The second review: one compromised node (its own credential, its own
    /// key) loops sessions and renewals; it meets its own cap, not everyone's.
    #[test]
    fn attacker_one_node_cannot_fill_the_authenticated_memory() {
        let mut t = Nonces::new(1_000).unwrap();
        for _ in 0..PER_AGENT_CAP {
            let n = t.issue(100).unwrap();
            assert!(t.take(&n, 1, Taker::Agent("greedy")));
        }
        let n = t.issue(100).unwrap();
        assert!(!t.take(&n, 1, Taker::Agent("greedy")), "its cap");
        let n = t.issue(100).unwrap();
        assert!(t.take(&n, 1, Taker::Agent("other")), "others unaffected");
        // Its share frees up as its nonces expire.
        let n = t.issue(300).unwrap();
        assert!(t.take(&n, 150, Taker::Agent("greedy")));
    }
}
