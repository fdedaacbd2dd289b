//! The credential cache: one mint in flight per key, rotation at half-life with
//! jitter, a still-valid credential kept when renewal fails, a hard size bound,
//! and persistence to `data_dir` so that a restarted agent serves at once.
//!
//! Memory bound: at most [`MAX_ENTRIES`] keys. A key is an identity plus a
//! canonical audience set (sorted, de-duplicated `Vec`, so `{"ab","cd"}` and
//! `{"a","bcd"}` never collide). When full, the least recently used key is
//! dropped; an X.509-SVID entry is the largest, about 2 KiB.

mod persist;

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
}

#[cfg(test)]
mod tests;
