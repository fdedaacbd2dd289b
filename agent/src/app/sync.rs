//! Applies what the upstream sync task sends ([`SyncEvent`]) to the stages it
//! concerns: entries to the attestation pipeline, deny lists and persistence
//! failures to the credential cache. The sync task only sends; this is the one
//! place that knows both ends.

use std::sync::Arc;

use lanyard_token::deny::Denied;
use tokio::sync::mpsc;

use crate::attest::Pipeline;
use crate::authority::upstream::SyncEvent;
use crate::cache::{Cache, Key, Kind, Spec, Stored, Value};
use crate::clock::now;

/// How many sync events may wait: a burst of sync messages waits on the
/// agent applying them instead of piling up in memory.
pub const QUEUE: usize = 16;

/// How long one pre-mint may take before the next entry's.
const PREMINT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Drops from `cache` what `denied` names: at start, the credentials a deny
/// list synced before the restart names (a crash can come between a purge and
/// the next save of `cache.json`).
pub async fn purge(cache: &Cache, denied: &Denied) -> usize {
    if *denied == Denied::default() {
        return 0;
    }
    cache.purge(|_, stored| revoked(denied, stored)).await
}

/// Applies events until the sync task stops (its sender is dropped).
pub async fn apply(
    mut events: mpsc::Receiver<SyncEvent>,
    pipeline: Arc<Pipeline>,
    cache: Arc<Cache>,
) {
    // Pre-minting runs beside the loop: it calls the issuer, and a slow or
    // stalled replica must not hold up the next deny list. New entries
    // supersede the old pre-mint.
    let mut minting: Option<tokio::task::JoinHandle<()>> = None;
    while let Some(event) = events.recv().await {
        match event {
            SyncEvent::Applied {
                entries,
                denied,
                purged,
            } => {
                pipeline.set_entries(entries.clone());
                if denied != Denied::default() {
                    let dropped = purge(&cache, &denied).await;
                    tracing::info!(dropped, "deny list applied to the credential cache");
                }
                let _ = purged.send(());
                if let Some(old) = minting.take() {
                    old.abort();
                }
                let cache = cache.clone();
                minting = Some(tokio::spawn(async move { premint(&cache, &entries).await }));
            }
            SyncEvent::Persisted { file, error } => {
                let result = error.map_or(Ok(()), |e| Err(std::io::Error::other(e)));
                cache.record_persist(file, &result);
            }
        }
    }
    // The sync task has stopped (shutdown): so does pre-minting.
    if let Some(m) = minting {
        m.abort();
    }
}

/// Pre-mints X.509-SVIDs so the first workload call is a cache hit.
async fn premint(cache: &Cache, entries: &[crate::config::Entry]) {
    for e in entries
        .iter()
        .filter(|e| e.subject.starts_with("spiffe://"))
    {
        let key = Key::new(Kind::X509Svid, &e.subject, Vec::new());
        let spec = Spec {
            ttl_secs: e.ttl_secs,
            networks: e.networks.clone(),
            attrs: Vec::new(),
        };
        match tokio::time::timeout(PREMINT_TIMEOUT, cache.get(&key, &spec, now())).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::debug!(subject = %e.subject, error = %err, "pre-mint failed"),
            Err(_) => tracing::debug!(subject = %e.subject, "pre-mint timed out"),
        }
    }
}

/// Whether a cached credential is named by `denied` (its jti, or its chain).
fn revoked(denied: &Denied, stored: &Stored) -> bool {
    if !denied.chains.is_empty() {
        // A revoked chain takes everything it signed with it, SVIDs included.
        return true;
    }
    let token = match &stored.value {
        Value::Credential { jwt, .. } => jwt,
        Value::JwtSvid { token } => token,
        Value::X509Svid { .. } => return false,
    };
    let jti = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, p).ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["jti"].as_str().map(str::to_owned));
    jti.is_some_and(|j| denied.jtis.contains(&j))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stored(value: Value) -> Stored {
        Stored {
            value,
            issued_at: 0,
            expires_at: 0,
            refresh_at: 0,
            spec: Spec {
                ttl_secs: 60,
                networks: Vec::new(),
                attrs: Vec::new(),
            },
        }
    }

    fn jwt(jti: &str) -> String {
        use base64::Engine as _;
        let b = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.sig",
            b(serde_json::json!({"alg": "ES256"})),
            b(serde_json::json!({"jti": jti}))
        )
    }

    #[test]
    fn a_denied_jti_names_its_credential_in_every_format_and_nothing_else() {
        let denied = Denied {
            jtis: std::iter::once("bad".to_owned()).collect(),
            ..Denied::default()
        };
        let svid = |j: &str| stored(Value::JwtSvid { token: jwt(j) });
        let cred = |j: &str| {
            stored(Value::Credential {
                seed: String::new().into(),
                jwt: jwt(j),
            })
        };
        assert!(revoked(&denied, &svid("bad")));
        assert!(revoked(&denied, &cred("bad")));
        assert!(!revoked(&denied, &svid("good")));
        assert!(!revoked(&denied, &cred("good")));
        // An X.509-SVID has no jti; only a denied chain takes it.
        let x509 = stored(Value::X509Svid {
            chain: Vec::new(),
            key: String::new().into(),
        });
        assert!(!revoked(&denied, &x509));
        let chain = Denied {
            chains: std::iter::once("c".to_owned()).collect(),
            ..Denied::default()
        };
        assert!(revoked(&chain, &x509));
        // A token whose payload is not JSON is not taken for a denied one.
        assert!(!revoked(
            &denied,
            &stored(Value::JwtSvid {
                token: "a.b.c".into()
            })
        ));
    }
}
