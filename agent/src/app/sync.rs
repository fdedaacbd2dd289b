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

/// Applies events until the sync task stops (its sender is dropped).
pub async fn apply(
    mut events: mpsc::Receiver<SyncEvent>,
    pipeline: Arc<Pipeline>,
    cache: Arc<Cache>,
) {
    while let Some(event) = events.recv().await {
        match event {
            SyncEvent::Applied { entries, denied } => {
                pipeline.set_entries(entries.clone());
                if denied != Denied::default() {
                    let dropped = cache.purge(|_, stored| revoked(&denied, stored)).await;
                    tracing::info!(dropped, "deny list applied to the credential cache");
                }
                premint(&cache, &entries).await;
            }
            SyncEvent::Persisted { file, error } => {
                let result = error.map_or(Ok(()), |e| Err(std::io::Error::other(e)));
                cache.record_persist(file, &result);
            }
        }
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
        if let Err(err) = cache.get(&key, &spec, now()).await {
            tracing::debug!(subject = %e.subject, error = %err, "pre-mint failed");
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
