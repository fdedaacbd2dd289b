//! What the upstream authority keeps in `data_dir` (the agent credential, the
//! last sync), so that a restart with the issuer down still serves; writes
//! that fail (a full disk) are retried and reported to `/readyz`.

use super::sync::send;
use super::*;

/// Persisted files whose last write failed.
#[derive(Debug, Default)]
pub(super) struct Unsaved {
    /// The agent credential's last write, when it failed.
    agent: Option<String>,
    /// The sync state's last write, when it failed.
    synced: Option<String>,
    /// What was last reported (`None` before the first report): a report is
    /// sent only when this changes, so the once-a-second retry does not fill
    /// the sync channel.
    reported: Option<(Option<String>, Option<String>)>,
}

impl UpstreamAuthority {
    pub(super) fn load_persisted(&self) {
        for f in [AGENT_CREDENTIAL_FILE, SYNCED, DENY_LIST_FILE] {
            let stale = crate::fsutil::remove_stale_temps(&self.data_dir.join(f));
            if stale > 0 {
                tracing::info!(file = f, stale, "removed temp files of interrupted writes");
            }
        }
        let stored = std::fs::read(self.data_dir.join(AGENT_CREDENTIAL_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<StoredAgent>(&b).ok());
        if let Some(StoredAgent { seed, jwt }) = stored {
            match (
                KeyPair::from_seed_text(&seed),
                self.check_agent_jwt(jwt.trim()),
            ) {
                (Ok(key), Ok((id, iat, exp))) if key.public().to_hex() == self.jwt_holder(&jwt) => {
                    *self.agent.lock().unwrap_or_else(|p| p.into_inner()) = Some(AgentCredential {
                        key,
                        jwt: jwt.trim().to_owned(),
                        id,
                        issued_at: iat,
                        expires_at: exp,
                    });
                }
                _ => tracing::warn!(
                    "persisted agent credential is invalid; the node will attest again"
                ),
            }
        }
        if let Ok(bytes) = std::fs::read(self.data_dir.join(SYNCED)) {
            match serde_json::from_slice::<Synced>(&bytes) {
                Ok(s) => {
                    if let Ok(list) = lanyard_token::deny::parse_held(&s.deny_list, &self.org) {
                        *self.deny.write().unwrap_or_else(|p| p.into_inner()) = Some(list);
                    }
                    *self.synced.write().unwrap_or_else(|p| p.into_inner()) = s;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "persisted sync state is unreadable; waiting for the issuer")
                }
            }
        }
    }

    /// Writes the agent credential held in memory; a failure is kept for
    /// `/readyz` and retried by [`UpstreamAuthority::retry_unsaved`].
    pub(super) fn persist_agent(&self) {
        let Some(cred) = self.agent.lock().ok().and_then(|a| a.clone()) else {
            return;
        };
        let stored = StoredAgent {
            seed: cred.key.seed_text(),
            jwt: cred.jwt.clone(),
        };
        let bytes = zeroize::Zeroizing::new(serde_json::to_vec(&stored).unwrap_or_default());
        let r = crate::fsutil::write_atomic(
            &self.data_dir.join(AGENT_CREDENTIAL_FILE),
            &bytes,
            0o600,
            crate::fsutil::Replace::Yes,
        );
        let mut u = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Ok(()) => u.agent = None,
            Err(e) => {
                if u.agent.is_none() {
                    tracing::error!(error = %e, "cannot persist the agent credential; a restart would need to attest again");
                }
                u.agent = Some(e.to_string());
            }
        }
    }

    /// Writes the sync state (and the deny list file) held in memory.
    pub(super) fn persist_synced(&self) {
        let snapshot = self
            .synced
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut r = Ok(());
        if !snapshot.deny_list.is_empty() {
            r = crate::fsutil::write_atomic(
                &self.data_dir.join(DENY_LIST_FILE),
                snapshot.deny_list.as_bytes(),
                0o644,
                crate::fsutil::Replace::Yes,
            );
        }
        let bytes = serde_json::to_vec(&snapshot).unwrap_or_default();
        let r = r.and(crate::fsutil::write_atomic(
            &self.data_dir.join(SYNCED),
            &bytes,
            0o600,
            crate::fsutil::Replace::Yes,
        ));
        let mut u = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Ok(()) => u.synced = None,
            Err(e) => {
                if u.synced.is_none() {
                    // Serving goes on from memory; the sync loop tries again.
                    tracing::error!(error = %e, "cannot persist the sync state");
                }
                u.synced = Some(e.to_string());
            }
        }
    }

    /// Retries the writes that failed, and reports them (readiness).
    pub(super) async fn retry_unsaved(
        &self,
        events: &mpsc::Sender<SyncEvent>,
    ) -> Result<(), UpstreamError> {
        let (agent, synced) = {
            let u = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
            (u.agent.is_some(), u.synced.is_some())
        };
        if agent {
            self.persist_agent();
        }
        if synced {
            self.persist_synced();
        }
        self.report_unsaved(events).await
    }

    pub(super) async fn report_unsaved(
        &self,
        events: &mpsc::Sender<SyncEvent>,
    ) -> Result<(), UpstreamError> {
        let (agent, synced) = {
            let mut u = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
            let now = (u.agent.clone(), u.synced.clone());
            if u.reported.as_ref() == Some(&now) {
                return Ok(());
            }
            u.reported = Some(now.clone());
            now
        };
        for (file, error) in [(AGENT_CREDENTIAL_FILE, agent), (SYNCED, synced)] {
            send(events, SyncEvent::Persisted { file, error }).await?;
        }
        Ok(())
    }
}
