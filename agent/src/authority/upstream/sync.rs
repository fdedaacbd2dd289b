//! The sync task: follows the issuer's Sync stream, keeps what it sends
//! (entries, bundle, deny list) in memory and in `upstream.json`, and hands
//! each applied message to the agent as a [`SyncEvent`] over a channel.

use super::*;

/// What the sync task hands to the rest of the agent, in the order it happened.
/// The agent applies it (`app::sync`); the sync task never touches the
/// attestation pipeline or the credential cache itself, so data flows one way.
#[derive(Debug)]
#[non_exhaustive]
pub enum SyncEvent {
    /// One sync message applied: the issuer's entries as they now stand (all
    /// of them), and what its deny list newly names.
    Applied {
        /// Every entry the issuer has for this node.
        entries: Vec<Entry>,
        /// Credentials newly denied: drop them from the cache.
        denied: Denied,
        /// Answered once the denied credentials are out of the cache; the
        /// sync task persists the sync state only then.
        purged: tokio::sync::oneshot::Sender<()>,
    },
    /// Whether the last write of a file the sync task keeps failed (`error`),
    /// for `/readyz`.
    Persisted {
        /// The file's name in `data_dir`.
        file: &'static str,
        /// Why its last write failed; `None` once it is written.
        error: Option<String>,
    },
}

/// Sends `event`; the agent no longer listening means it is shutting down.
pub(super) async fn send(
    events: &mpsc::Sender<SyncEvent>,
    event: SyncEvent,
) -> Result<(), UpstreamError> {
    events
        .send(event)
        .await
        .map_err(|_| UpstreamError::ShuttingDown)
}

impl UpstreamAuthority {
    /// Keeps the agent in sync until `stop` (or until no one listens on
    /// `events`): what the issuer sends goes out on `events`, for the agent
    /// to apply to its pipeline and cache (this task imports neither).
    /// Reconnects with capped, jittered backoff.
    pub async fn run(
        self: Arc<Self>,
        events: mpsc::Sender<SyncEvent>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut failures: u32 = 0;
        loop {
            let r = tokio::select! {
                r = self.sync_once(&events, &mut failures) => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            if let Err(e) = r {
                if events.is_closed() {
                    return;
                }
                tracing::warn!(error = %e, failures, "upstream sync interrupted");
                self.set_state(LinkState::Down {
                    since: now(),
                    error: e.to_string(),
                });
                self.forget_link().await;
                // Try the next replica first: this one failed us.
                self.next_addr.fetch_add(1, Ordering::Relaxed);
            }
            failures = failures.saturating_add(1);
            let wait = backoff(failures);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    pub(super) async fn sync_once(
        &self,
        events: &mpsc::Sender<SyncEvent>,
        failures: &mut u32,
    ) -> Result<(), UpstreamError> {
        let link = self.session().await?;
        let since = self.synced.read().map(|s| s.revision).unwrap_or(0);
        let req = with_session(
            &link.session,
            pb::SyncRequest {
                since_revision: since,
            },
        )
        .map_err(status_err)?;
        let mut stream = match Self::client(&link.channel).sync(req).await {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::Unauthenticated => {
                self.forget_link().await;
                return Err(status_err(s));
            }
            Err(s) => return Err(status_err(s)),
        };
        let addr = self.cfg.addresses
            [self.next_addr.load(Ordering::Relaxed) % self.cfg.addresses.len().max(1)]
        .clone();
        // Renewal is checked each second, not only when the issuer sends
        // something: a quiet fleet must still renew its agent credentials.
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = tick.tick() => {
                    if let Err(e) = self.renew_if_due().await {
                        tracing::warn!(error = %e, "agent credential renewal failed; will retry");
                    }
                    self.retry_unsaved(events).await?;
                    continue;
                }
            };
            let msg = match msg {
                Ok(Some(m)) => m,
                Ok(None) => return Err(UpstreamError::StreamEnded),
                Err(s) => return Err(status_err(s)),
            };
            self.apply(msg, events).await?;
            *failures = 0;
            self.set_state(LinkState::Connected(addr.clone()));
        }
    }

    pub(super) async fn apply(
        &self,
        msg: pb::SyncResponse,
        events: &mpsc::Sender<SyncEvent>,
    ) -> Result<(), UpstreamError> {
        let (snapshot, newly_denied) = {
            let mut s = self.synced.write().unwrap_or_else(|p| p.into_inner());
            if msg.full {
                s.entries.clear();
            }
            // One pass over what is held, not one per incoming entry: a first
            // sync of n entries would otherwise cost n² comparisons.
            let replaced: std::collections::HashSet<&str> = msg
                .deleted_entry_ids
                .iter()
                .chain(msg.entries.iter().map(|e| &e.id))
                .map(String::as_str)
                .collect();
            s.entries.retain(|e| !replaced.contains(e.id.as_str()));
            for e in msg.entries {
                s.entries.push(WireEntry {
                    id: e.id,
                    subject: e.subject,
                    selectors: e.selectors,
                    ttl_secs: u64::try_from(e.ttl_secs).unwrap_or(0),
                    audiences: e.audiences,
                    networks: e.networks,
                });
            }
            s.revision = msg.revision;
            if let Some(b) = msg.bundle {
                s.trust_domain = b.trust_domain;
                s.x509_roots = b
                    .x509_roots
                    .iter()
                    .map(|d| crate::pem::encode("CERTIFICATE", d))
                    .collect();
                s.jwks = String::from_utf8_lossy(&b.jwks).into_owned();
            }
            let mut newly_denied = Denied::default();
            if !msg.deny_list.is_empty() {
                let held = self.deny.read().ok().and_then(|d| d.clone());
                match accept_deny_list(&msg.deny_list, &self.org, held.as_ref(), &s.denied_chains) {
                    Ok(list) => {
                        for j in &list.denied().jtis {
                            if !s.denied_jtis.contains(j) {
                                s.denied_jtis.push(j.clone());
                                newly_denied.jtis.insert(j.clone());
                            }
                        }
                        for c in &list.denied().chains {
                            if !s.denied_chains.contains(c) {
                                s.denied_chains.push(c.clone());
                                newly_denied.chains.insert(c.clone());
                            }
                        }
                        s.deny_list = msg.deny_list;
                        *self.deny.write().unwrap_or_else(|p| p.into_inner()) = Some(list);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "issuer sent a deny list that does not verify; ignored")
                    }
                }
            }
            (s.clone(), newly_denied)
        };
        let entries = to_entries(&snapshot.entries);
        let (purged, done) = tokio::sync::oneshot::channel();
        send(
            events,
            SyncEvent::Applied {
                entries,
                denied: newly_denied,
                purged,
            },
        )
        .await?;
        // `upstream.json` records the denials as applied: write it only once
        // the cache has dropped what they name. Written before, a restart in
        // between would bring the revoked credentials back from `cache.json`
        // with nothing left to purge them (later syncs send only new denials).
        done.await.map_err(|_| UpstreamError::ShuttingDown)?;
        self.persist_synced();
        self.report_unsaved(events).await?;
        Ok(())
    }
}

/// The deny list an agent takes from its issuer: it must verify with the org
/// key, must not be signed by a chain already known to be revoked, and must
/// not be older than the one held (a stale replica after a failover).
pub(super) fn accept_deny_list(
    text: &str,
    org: &PublicKey,
    held: Option<&VerifiedDenyList>,
    denied_chains: &[String],
) -> Result<VerifiedDenyList, lanyard_token::DenyListError> {
    let list = lanyard_token::deny::parse(text, org, now())?;
    if list
        .signer_chain()
        .is_some_and(|c| denied_chains.iter().any(|d| d == c))
    {
        return Err(lanyard_token::DenyListError::BadChain(
            "signed by a revoked chain issuer".into(),
        ));
    }
    lanyard_token::deny::newer(held, list)
}

pub(super) fn to_entries(wire: &[WireEntry]) -> Vec<Entry> {
    wire.iter()
        .filter_map(|e| {
            let selectors = e
                .selectors
                .iter()
                .map(|s| Selector::parse(s))
                .collect::<Result<Vec<_>, _>>();
            match selectors {
                Ok(selectors) if !selectors.is_empty() => Some(Entry {
                    subject: e.subject.clone(),
                    selectors,
                    ttl_secs: e.ttl_secs.max(1),
                    audiences: e.audiences.clone(),
                    networks: e.networks.clone(),
                }),
                _ => {
                    tracing::warn!(entry = %e.id, "entry with invalid selectors ignored");
                    None
                }
            }
        })
        .collect()
}

/// Reconnect delay after `failures` in a row: 1 s doubling to 60 s, with full
/// jitter so a fleet does not return in step when the issuer comes back.
pub(super) fn backoff(failures: u32) -> std::time::Duration {
    let cap_ms = (1000u64 << (failures.clamp(1, 7) - 1)).min(60_000);
    let mut r = [0u8; 4];
    let _ = lanyard_token::keys::random_bytes(&mut r);
    let jitter = u64::from(u32::from_le_bytes(r)) % cap_ms.max(1);
    std::time::Duration::from_millis(cap_ms / 2 + jitter / 2)
}
