//! The credential cache: one mint in flight per key, rotation at half-life with
//! jitter, a still-valid credential kept when renewal fails, a hard size bound,
//! and persistence to `data_dir` so that a restarted agent serves at once.
//!
//! Memory bound: at most [`MAX_ENTRIES`] keys. A key is an identity plus a
//! canonical audience set (sorted, de-duplicated `Vec`, so `{"ab","cd"}` and
//! `{"a","bcd"}` never collide). When full, the least recently used key is
//! dropped; an X.509-SVID entry is the largest, about 2 KiB.

pub mod restore;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::authority::{Authority, AuthorityError, CredentialRequest};
use crate::fsutil::{remove_stale_temps, write_atomic_with, Replace};

/// Most keys held; see the module docs.
pub const MAX_ENTRIES: usize = 8192;
/// The cache file in `data_dir`.
pub const CACHE_FILE: &str = "cache.json";

/// What kind of credential a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// ed25519 seed + chained JWT.
    Credential,
    /// ES256 JWT-SVID.
    JwtSvid,
    /// X.509-SVID.
    X509Svid,
}

/// A cache key: kind, identity and canonical audience set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Key {
    /// What is cached.
    pub kind: Kind,
    /// The identity.
    pub subject: String,
    /// Sorted, de-duplicated audiences.
    pub audiences: Vec<String>,
}

impl Key {
    /// A key with its audiences made canonical.
    pub fn new(kind: Kind, subject: &str, audiences: impl IntoIterator<Item = String>) -> Self {
        let mut audiences: Vec<String> = audiences.into_iter().collect();
        audiences.sort();
        audiences.dedup();
        Self {
            kind,
            subject: subject.to_owned(),
            audiences,
        }
    }
}

/// How to mint (again) what a key names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// Lifetime in seconds.
    pub ttl_secs: u64,
    /// Networks of a seed + JWT credential.
    pub networks: Vec<String>,
    /// Selectors recorded in the credential.
    pub attrs: Vec<String>,
}

/// A cached credential.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Value {
    /// Seed (hex) and chained JWT.
    Credential {
        /// The seed, 64 hex characters.
        seed: Zeroizing<String>,
        /// The JWT.
        jwt: String,
    },
    /// A JWT-SVID.
    JwtSvid {
        /// The token.
        token: String,
    },
    /// An X.509-SVID.
    X509Svid {
        /// Base64 DER certificates, leaf first.
        chain: Vec<String>,
        /// Base64 PKCS#8 key.
        key: Zeroizing<String>,
    },
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Credential { .. } => f.write_str("Credential(..)"),
            Value::JwtSvid { .. } => f.write_str("JwtSvid(..)"),
            Value::X509Svid { .. } => f.write_str("X509Svid(..)"),
        }
    }
}

/// A value with its times.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    /// The credential.
    pub value: Value,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds.
    pub expires_at: u64,
    /// When rotation starts.
    pub refresh_at: u64,
    /// How it was minted.
    pub spec: Spec,
}

#[derive(Debug)]
struct Slot {
    value: tokio::sync::Mutex<Option<Stored>>,
    last_used: AtomicU64,
    /// Consecutive failed renewals, and when the next may be tried.
    failures: AtomicU64,
    retry_at: AtomicU64,
}

impl Slot {
    fn new(now: u64) -> Self {
        Self {
            value: tokio::sync::Mutex::new(None),
            last_used: AtomicU64::new(now),
            failures: AtomicU64::new(0),
            retry_at: AtomicU64::new(0),
        }
    }
}

/// Seconds before the next renewal attempt after `failures` in a row: doubling
/// from 2 s, capped at 5 min, with ±50 % jitter so that a fleet recovering from an
/// issuer outage does not come back in step.
fn backoff(failures: u64) -> u64 {
    let base = (1u64 << failures.min(9)).min(300);
    let mut r = [0u8; 2];
    let _ = lanyard_token::keys::random_bytes(&mut r);
    base / 2 + base * u64::from(u16::from_le_bytes(r)) / u64::from(u16::MAX)
}

/// Why the cache could not produce a credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The authority failed and nothing valid is cached.
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    /// A key could not be generated.
    #[error("key generation: {0}")]
    Key(String),
}

/// The cache. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Cache {
    authority: Arc<dyn Authority>,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    generation: watch::Sender<u64>,
    dirty: tokio::sync::Notify,
    path: PathBuf,
    /// Files in `data_dir` whose last write failed, with the error (readiness).
    persist_failures: Mutex<BTreeMap<String, String>>,
}

fn refresh_point(issued: u64, expires: u64) -> u64 {
    let life = expires.saturating_sub(issued);
    // Half-life, minus up to 10% of the lifetime so a fleet does not renew in step.
    let mut r = [0u8; 2];
    let _ = lanyard_token::keys::random_bytes(&mut r);
    let jitter = life / 10 * u64::from(u16::from_le_bytes(r)) / u64::from(u16::MAX);
    issued + life / 2 - jitter.min(life / 2)
}

impl Cache {
    /// An empty cache persisting to `data_dir/cache.json`.
    pub fn new(authority: Arc<dyn Authority>, data_dir: PathBuf) -> Self {
        Self {
            authority,
            slots: Mutex::new(HashMap::new()),
            generation: watch::channel(0).0,
            dirty: tokio::sync::Notify::new(),
            path: data_dir.join(CACHE_FILE),
            persist_failures: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records how the last write of `file` (in `data_dir`) went: a failure
    /// makes the agent not ready (it serves from memory, but a restart would
    /// lose what is not on disk) until a later write of that file succeeds.
    pub fn record_persist(&self, file: &str, result: &std::io::Result<()>) {
        let mut f = self
            .persist_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => {
                f.remove(file);
            }
            Err(e) => {
                f.insert(file.to_owned(), e.to_string());
            }
        }
    }

    /// Why persisting fails, if it does: `file: error` for each failing file.
    pub fn persist_failure(&self) -> Option<String> {
        let f = self
            .persist_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        (!f.is_empty()).then(|| {
            f.iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Bumps whenever a cached value changes: streams resend on it.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.slots.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, key: &Key, now: u64) -> Arc<Slot> {
        let Ok(mut slots) = self.slots.lock() else {
            return Arc::new(Slot::new(now));
        };
        if let Some(s) = slots.get(key) {
            s.last_used.store(now, Ordering::Relaxed);
            return s.clone();
        }
        if slots.len() >= MAX_ENTRIES {
            if let Some(oldest) = slots
                .iter()
                .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone())
            {
                slots.remove(&oldest);
            }
        }
        let s = Arc::new(Slot::new(now));
        slots.insert(key.clone(), s.clone());
        s
    }

    /// The credential for `key`: the cached one while it is valid, else minted
    /// (once, however many callers ask at the same time). Renewal past the
    /// half-life is [`Cache::rotate_due`]'s job, so a request never waits on the
    /// authority while a valid credential exists (after a restart, during an
    /// issuer outage).
    pub async fn get(&self, key: &Key, spec: &Spec, now: u64) -> Result<Stored, CacheError> {
        self.get_or_mint(key, spec, now, false).await
    }

    /// With `renew`, mints past the refresh point too. If minting fails, a
    /// still-valid cached value is returned.
    async fn get_or_mint(
        &self,
        key: &Key,
        spec: &Spec,
        now: u64,
        renew: bool,
    ) -> Result<Stored, CacheError> {
        let slot = self.slot(key, now);
        let mut guard = slot.value.lock().await;
        if let Some(s) = guard.as_ref() {
            let fresh_enough = if renew {
                now < s.refresh_at
            } else {
                now < s.expires_at
            };
            if fresh_enough && s.spec == *spec {
                return Ok(s.clone());
            }
        }
        match self.mint(key, spec, now).await {
            Ok(fresh) => {
                *guard = Some(fresh.clone());
                drop(guard);
                self.changed();
                Ok(fresh)
            }
            Err(e) => match guard.as_ref() {
                Some(s) if now < s.expires_at => {
                    tracing::warn!(subject = %key.subject, error = %e, "renewal failed; serving the still-valid credential");
                    Ok(s.clone())
                }
                _ => Err(e),
            },
        }
    }

    fn changed(&self) {
        self.generation.send_modify(|g| *g += 1);
        self.dirty.notify_one();
    }

    async fn mint(&self, key: &Key, spec: &Spec, now: u64) -> Result<Stored, CacheError> {
        let (value, expires_at) = match key.kind {
            Kind::Credential => {
                let holder = lanyard_token::KeyPair::generate()
                    .map_err(|e| CacheError::Key(e.to_string()))?;
                let req = CredentialRequest {
                    subject: key.subject.clone(),
                    audiences: key.audiences.clone(),
                    networks: spec.networks.clone(),
                    ttl_secs: spec.ttl_secs,
                    attrs: spec.attrs.clone(),
                };
                let (jwt, exp) = self
                    .authority
                    .mint_credential(&req, holder.public(), now)
                    .await?;
                (
                    Value::Credential {
                        seed: holder.seed_text(),
                        jwt,
                    },
                    exp,
                )
            }
            Kind::JwtSvid => {
                let (token, exp) = self
                    .authority
                    .jwt_svid(&key.subject, &key.audiences, spec.ttl_secs, now)
                    .await?;
                (Value::JwtSvid { token }, exp)
            }
            Kind::X509Svid => {
                let svid = self
                    .authority
                    .x509_svid(&key.subject, spec.ttl_secs, now)
                    .await?;
                let chain = svid.chain.iter().map(|c| STANDARD.encode(c)).collect();
                (
                    Value::X509Svid {
                        chain,
                        key: Zeroizing::new(STANDARD.encode(&svid.key_pkcs8)),
                    },
                    svid.expires_at,
                )
            }
        };
        Ok(Stored {
            value,
            issued_at: now,
            expires_at,
            refresh_at: refresh_point(now, expires_at),
            spec: spec.clone(),
        })
    }

    /// Re-mints every key past its refresh point. Run periodically. A key whose
    /// renewal failed waits out its backoff; its still-valid value keeps serving.
    ///
    /// Only keys used within their last lifetime are renewed (an open stream
    /// counts: it re-reads after every renewal); the rest are dropped once expired,
    /// so an entry removed from the config, or an audience asked for once, does not
    /// keep the agent minting.
    pub async fn rotate_due(&self, now: u64) {
        let dropped;
        let due: Vec<(Key, Arc<Slot>)> = {
            let Ok(mut slots) = self.slots.lock() else {
                return;
            };
            let held = slots.len();
            let idle = |s: &Slot, st: &Stored| {
                now.saturating_sub(s.last_used.load(Ordering::Relaxed))
                    > st.expires_at.saturating_sub(st.issued_at)
            };
            slots.retain(|_, s| {
                s.value.try_lock().map_or(true, |v| {
                    v.as_ref()
                        .is_none_or(|st| now < st.expires_at || !idle(s, st))
                })
            });
            dropped = held - slots.len();
            slots
                .iter()
                .filter(|(_, s)| now >= s.retry_at.load(Ordering::Relaxed))
                .filter(|(_, s)| {
                    s.value.try_lock().ok().is_some_and(|v| {
                        v.as_ref()
                            .is_some_and(|st| now >= st.refresh_at && !idle(s, st))
                    })
                })
                .map(|(k, s)| (k.clone(), s.clone()))
                .collect()
        };
        if dropped > 0 {
            // Open streams re-read: a watched credential that went unused for a
            // whole lifetime (the clock jumped, the host slept) is minted afresh
            // for its watchers instead of silently disappearing.
            self.changed();
        }
        for (key, slot) in due {
            let mut guard = slot.value.lock().await;
            let Some(spec) = guard
                .as_ref()
                .filter(|st| now >= st.refresh_at)
                .map(|st| st.spec.clone())
            else {
                continue;
            };
            match self.mint(&key, &spec, now).await {
                Ok(fresh) => {
                    *guard = Some(fresh);
                    drop(guard);
                    slot.failures.store(0, Ordering::Relaxed);
                    slot.retry_at.store(0, Ordering::Relaxed);
                    self.changed();
                }
                Err(e) => {
                    let n = slot.failures.fetch_add(1, Ordering::Relaxed) + 1;
                    let wait = backoff(n);
                    slot.retry_at.store(now + wait, Ordering::Relaxed);
                    tracing::warn!(subject = %key.subject, error = %e, failures = n, retry_in_secs = wait, "renewal failed; the current credential keeps serving");
                }
            }
        }
    }

    /// Drops every cached credential `revoked` says is revoked, so the next
    /// request mints afresh; open streams are told. Returns how many went.
    pub async fn purge(&self, revoked: impl Fn(&Key, &Stored) -> bool) -> usize {
        let slots: Vec<(Key, Arc<Slot>)> = match self.slots.lock() {
            Ok(s) => s.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => return 0,
        };
        let mut dropped = 0;
        for (key, slot) in slots {
            let mut v = slot.value.lock().await;
            if v.as_ref().is_some_and(|s| revoked(&key, s)) {
                *v = None;
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.changed();
        }
        dropped
    }

    /// Seconds until the soonest cached expiry (for metrics).
    pub fn soonest_expiry(&self) -> Option<u64> {
        let slots = self.slots.lock().ok()?;
        slots
            .values()
            .filter_map(|s| {
                s.value
                    .try_lock()
                    .ok()
                    .and_then(|v| v.as_ref().map(|x| x.expires_at))
            })
            .min()
    }

    /// Loads the persisted cache, dropping anything expired, unreadable or that
    /// does not verify: a seed + JWT credential against the org key and its
    /// seed, SVIDs against the bundle ([`crate::cache::restore`]).
    pub fn load(&self, now: u64) -> usize {
        let stale = remove_stale_temps(&self.path);
        if stale > 0 {
            tracing::info!(stale, "removed temp files of interrupted cache writes");
        }
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return 0;
        };
        let Ok(file) = serde_json::from_str::<CacheFile>(&text) else {
            tracing::warn!(path = %self.path.display(), "cache file unreadable; starting empty");
            return 0;
        };
        let verifier = self.authority.verifier();
        let bundle = self.authority.bundle();
        let org = *verifier.org();
        let mut n = 0;
        for (key, stored) in file.entries {
            if now >= stored.expires_at {
                continue;
            }
            // Everything restored is checked as if it came over the network
            // (crate::cache::restore): a planted entry is dropped, never served.
            let checked = match &stored.value {
                Value::X509Svid { chain, key: pkcs8 } => {
                    crate::cache::restore::x509_svid(chain, pkcs8, &key.subject, &org, &bundle, now)
                }
                Value::JwtSvid { token } => crate::cache::restore::jwt_svid(
                    token,
                    &key.subject,
                    &key.audiences,
                    |t, aud| self.authority.validate_jwt_svid(t, aud, now),
                ),
                Value::Credential { .. } => Ok(()),
            };
            if let Err(e) = checked {
                tracing::warn!(subject = %key.subject, error = %e, "dropping a cache entry that does not verify");
                continue;
            }
            if let Value::Credential { seed, jwt } = &stored.value {
                let ok = verifier
                    .verify(jwt, now)
                    .ok()
                    .and_then(|t| t.holder())
                    .zip(lanyard_token::KeyPair::from_seed_text(seed).ok());
                if !ok.is_some_and(|(h, k)| h == k.public()) {
                    continue;
                }
            }
            let slot = self.slot(&key, now);
            let loaded = match slot.value.try_lock() {
                Ok(mut v) => {
                    *v = Some(stored);
                    true
                }
                Err(_) => false,
            };
            n += usize::from(loaded);
        }
        n
    }

    /// Writes the cache file (0600, atomically), streaming one entry at a time so
    /// that saving never doubles the cache's memory.
    pub fn save(&self) -> std::io::Result<()> {
        use std::io::Write as _;
        let slots: Vec<(Key, Arc<Slot>)> = match self.slots.lock() {
            Ok(s) => s.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => return Ok(()),
        };
        write_atomic_with(&self.path, 0o600, Replace::Yes, |w| {
            w.write_all(b"{\"version\":1,\"entries\":[")?;
            let mut first = true;
            for (key, slot) in &slots {
                // A slot being minted right now is skipped; the next save has it.
                let Ok(v) = slot.value.try_lock() else {
                    continue;
                };
                let Some(stored) = v.as_ref() else { continue };
                if !first {
                    w.write_all(b",")?;
                }
                first = false;
                serde_json::to_writer(&mut *w, &(key, stored)).map_err(std::io::Error::other)?;
            }
            w.write_all(b"]}")
        })
    }

    /// Saves after changes, at most every `debounce`, until `stop` fires. A
    /// failed save (a full disk) is retried every few seconds even without a
    /// new change, so the file catches up as soon as there is room again.
    pub async fn persist_loop(
        self: Arc<Self>,
        debounce: std::time::Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut failing = false;
        loop {
            let retry = if failing {
                std::time::Duration::from_secs(2)
            } else {
                std::time::Duration::from_secs(86_400)
            };
            tokio::select! {
                () = self.dirty.notified() => {}
                () = tokio::time::sleep(retry) => {}
                _ = stop.changed() => break,
            }
            tokio::time::sleep(debounce).await;
            let me = self.clone();
            let r = match tokio::task::spawn_blocking(move || me.save()).await {
                Ok(r) => r,
                Err(e) => Err(std::io::Error::other(format!("cache writer panicked: {e}"))),
            };
            if let Err(e) = &r {
                if !failing {
                    tracing::error!(error = %e, "cannot persist the credential cache; serving from memory");
                }
            } else if failing {
                tracing::info!("credential cache persisted again");
            }
            failing = r.is_err();
            self.record_persist(CACHE_FILE, &r);
        }
        let _ = self.save();
    }
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    entries: Vec<(Key, Stored)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_sets_do_not_collide() {
        let a = Key::new(
            Kind::JwtSvid,
            "spiffe://t/x",
            ["ab".to_owned(), "cd".to_owned()],
        );
        let b = Key::new(
            Kind::JwtSvid,
            "spiffe://t/x",
            ["a".to_owned(), "bcd".to_owned()],
        );
        assert_ne!(a, b);
        let c = Key::new(
            Kind::JwtSvid,
            "spiffe://t/x",
            ["cd".to_owned(), "ab".to_owned(), "ab".to_owned()],
        );
        assert_eq!(a, c);
    }

    #[test]
    fn refresh_is_near_half_life() {
        for _ in 0..100 {
            let r = refresh_point(1000, 2000);
            assert!((1400..=1500).contains(&r), "{r}");
        }
    }
}

#[cfg(test)]
mod behaviour {
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use futures_util::future::BoxFuture;

    use super::*;
    use crate::authority::Bundle;
    use crate::svid::X509Svid;

    /// Counts mints, takes a while, and can be told to fail.
    #[derive(Debug, Default)]
    struct Fake {
        mints: AtomicUsize,
        attempts: AtomicUsize,
        fail: AtomicBool,
    }

    impl Authority for Fake {
        fn mint_credential<'a>(
            &'a self,
            _: &'a CredentialRequest,
            _: lanyard_token::PublicKey,
            _: u64,
        ) -> BoxFuture<'a, Result<(String, u64), AuthorityError>> {
            unreachable!()
        }
        fn jwt_svid<'a>(
            &'a self,
            sub: &'a str,
            _: &'a [String],
            ttl: u64,
            now: u64,
        ) -> BoxFuture<'a, Result<(String, u64), AuthorityError>> {
            Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                self.attempts.fetch_add(1, Ordering::SeqCst);
                if self.fail.load(Ordering::SeqCst) {
                    return Err(AuthorityError::File {
                        path: "fake".into(),
                        reason: "down".into(),
                    });
                }
                let n = self.mints.fetch_add(1, Ordering::SeqCst);
                Ok((format!("{sub}#{n}"), now + ttl))
            })
        }
        fn x509_svid<'a>(
            &'a self,
            _: &'a str,
            _: u64,
            _: u64,
        ) -> BoxFuture<'a, Result<X509Svid, AuthorityError>> {
            unreachable!()
        }
        fn bundle(&self) -> Bundle {
            unreachable!()
        }
        fn validate_jwt_svid(
            &self,
            _: &str,
            _: &str,
            _: u64,
        ) -> Result<serde_json::Map<String, serde_json::Value>, String> {
            unreachable!()
        }
        fn verifier(&self) -> lanyard_token::Verifier {
            unreachable!()
        }
        fn expires_at(&self) -> u64 {
            u64::MAX
        }
    }

    fn spec() -> Spec {
        Spec {
            ttl_secs: 100,
            networks: vec![],
            attrs: vec![],
        }
    }

    fn token(s: &Stored) -> String {
        match &s.value {
            Value::JwtSvid { token } => token.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_mint_in_flight_per_key() {
        let fake = Arc::new(Fake::default());
        let cache = Arc::new(Cache::new(fake.clone(), std::env::temp_dir()));
        let key = Key::new(Kind::JwtSvid, "spiffe://t/a", ["x".to_owned()]);
        let calls: Vec<_> = (0..32)
            .map(|_| {
                let (c, k) = (cache.clone(), key.clone());
                tokio::spawn(async move { token(&c.get(&k, &spec(), 1000).await.unwrap()) })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap(), "spiffe://t/a#0");
        }
        assert_eq!(fake.mints.load(Ordering::SeqCst), 1);
        // Another audience set is another key.
        let other = Key::new(Kind::JwtSvid, "spiffe://t/a", ["y".to_owned()]);
        cache.get(&other, &spec(), 1000).await.unwrap();
        assert_eq!(fake.mints.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn renews_after_half_life_and_keeps_valid_credential_on_failure() {
        let fake = Arc::new(Fake::default());
        let cache = Cache::new(fake.clone(), std::env::temp_dir());
        let key = Key::new(Kind::JwtSvid, "spiffe://t/a", []);
        let first = cache.get(&key, &spec(), 1000).await.unwrap();
        assert!(
            (1040..=1050).contains(&first.refresh_at),
            "{}",
            first.refresh_at
        );
        // Past the refresh point, the issuer is down: the old one is still valid and served.
        fake.fail.store(true, Ordering::SeqCst);
        assert_eq!(
            token(&cache.get(&key, &spec(), 1060).await.unwrap()),
            token(&first)
        );
        // Once it has expired, failure is an error: never an expired credential.
        assert!(cache.get(&key, &spec(), 1100).await.is_err());
        // The issuer is back: rotation mints a new one.
        fake.fail.store(false, Ordering::SeqCst);
        cache.rotate_due(1101).await;
        assert_eq!(
            token(&cache.get(&key, &spec(), 1102).await.unwrap()),
            "spiffe://t/a#1"
        );
    }

    #[tokio::test]
    async fn failed_renewals_back_off() {
        let fake = Arc::new(Fake::default());
        let cache = Cache::new(fake.clone(), std::env::temp_dir());
        let key = Key::new(Kind::JwtSvid, "spiffe://t/a", []);
        cache.get(&key, &spec(), 1000).await.unwrap();
        fake.fail.store(true, Ordering::SeqCst);
        // The rotation loop ticks every second for two minutes of an outage.
        for t in 1050..1170 {
            cache.rotate_due(t).await;
        }
        let tries = fake.attempts.load(Ordering::SeqCst) - 1;
        // Doubling from 2 s (±50 %): at most about log2(120) + a few, never 120.
        assert!(
            (3..=12).contains(&tries),
            "{tries} renewal attempts in 120 s"
        );
        for d in 1..20 {
            let b = backoff(d);
            let base = (1u64 << d.min(9)).min(300);
            assert!(b >= base / 2 && b <= base + base / 2, "backoff({d}) = {b}");
        }
    }

    #[tokio::test]
    async fn unused_keys_are_not_renewed_and_then_dropped() {
        let fake = Arc::new(Fake::default());
        let cache = Cache::new(fake.clone(), std::env::temp_dir());
        let used = Key::new(Kind::JwtSvid, "spiffe://t/used", []);
        let once = Key::new(Kind::JwtSvid, "spiffe://t/once", []);
        cache.get(&used, &spec(), 1000).await.unwrap();
        cache.get(&once, &spec(), 1000).await.unwrap();
        // `used` is asked for again, and renewed; `once` never again.
        let mut t = 1000;
        while t < 1300 {
            t += 1;
            if t % 30 == 0 {
                cache.get(&used, &spec(), t).await.unwrap();
            }
            cache.rotate_due(t).await;
        }
        assert!(
            cache.get(&used, &spec(), t).await.unwrap().issued_at > 1100,
            "used key not renewed"
        );
        assert_eq!(cache.len(), 1, "the key asked for once is still held");
    }

    #[tokio::test]
    async fn size_is_bounded() {
        let fake = Arc::new(Fake::default());
        let cache = Cache::new(fake, std::env::temp_dir());
        // Fill past the bound with distinct audience sets (what a hostile caller controls).
        for i in 0..(MAX_ENTRIES + 10) {
            let key = Key::new(Kind::JwtSvid, "spiffe://t/a", [format!("aud{i}")]);
            let slot = cache.slot(&key, i as u64);
            *slot.value.lock().await = None;
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
    }
}
