//! The cache on disk: `cache.json` in `data_dir`, loaded at start (each
//! credential verified before it is served again), saved after changes and at
//! shutdown, written atomically.

use super::*;

#[derive(Serialize, Deserialize)]
pub(super) struct CacheFile {
    version: u32,
    entries: Vec<(Key, Stored)>,
}

impl Cache {
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
