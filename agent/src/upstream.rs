//! `UpstreamAuthority`: the agent's signing power comes from an upstream issuer.
//!
//! - Trust: TLS to the issuer is checked against the org public key alone
//!   ([`crate::tls`]).
//! - Identity: the node attests once (join token, device key or PSAT) and gets
//!   an agent seed + JWT; every session is opened by signing a fresh nonce with
//!   that seed. The seed and JWT are persisted (0600), so a restart needs no new
//!   join token.
//! - Entries, the bundle and the deny list arrive on one `Sync` stream; they
//!   are persisted too, so an agent that boots while the issuer is down serves
//!   its cache for the entries it last knew.
//! - Failures back off exponentially (1 s to 60 s) with full jitter, and several
//!   issuer addresses are tried in turn.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures_util::future::BoxFuture;
use lanyard_plugins::Selector;
use lanyard_proto::issuer as pb;
use lanyard_proto::issuer::node_client::NodeClient;
use lanyard_token::deny::{Denied, VerifiedDenyList};
use lanyard_token::pop::{issuer_proof_message, IssuerProof};
use lanyard_token::{KeyPair, PublicKey, Verifier};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::Status;

use crate::attest::Pipeline;
use crate::authority::{Authority, AuthorityError, Bundle, CredentialRequest};
use crate::cache::{Cache, Key, Kind, Spec};
use crate::config::{Entry, NodeEvidence, UpstreamConfig};
use crate::svid::X509Svid;

/// Metadata that carries the session id (the issuer's name for it).
const SESSION_HEADER: &str = "lanyard-session";
/// The agent credential, persisted.
/// One file (0600), written atomically: a seed and its JWT can never be torn
/// apart by a crash, which for a join-token node would mean a new token.
pub const AGENT_CREDENTIAL_FILE: &str = "agent.cred";

/// The persisted agent credential.
#[derive(Serialize, Deserialize)]
struct StoredAgent {
    seed: zeroize::Zeroizing<String>,
    jwt: String,
}
/// Entries, bundle and deny list, persisted.
const SYNCED: &str = "upstream.json";
/// The latest deny list, for verifiers on this host
/// (`lanyard token verify --deny-list DATA_DIR/deny.jwt`).
pub const DENY_LIST_FILE: &str = "deny.jwt";
/// Largest sync message accepted (many entries).
const MAX_SYNC_BYTES: usize = 64 * 1024 * 1024;

fn now() -> u64 {
    crate::api::now()
}

/// The agent's own credential.
#[derive(Debug, Clone)]
struct AgentCredential {
    key: KeyPair,
    jwt: String,
    id: String,
    issued_at: u64,
    expires_at: u64,
}

/// What the last sync brought, as persisted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Synced {
    revision: i64,
    entries: Vec<WireEntry>,
    trust_domain: String,
    x509_roots: Vec<String>,
    jwks: String,
    deny_list: String,
    /// Every denial ever seen: revocations are permanent, so lists are unioned.
    #[serde(default)]
    denied_jtis: Vec<String>,
    #[serde(default)]
    denied_chains: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireEntry {
    id: String,
    subject: String,
    selectors: Vec<String>,
    ttl_secs: u64,
    audiences: Vec<String>,
    networks: Vec<String>,
}

#[derive(Debug, Clone)]
struct Link {
    channel: Channel,
    session: String,
    opened_at: u64,
    expires_at: u64,
}

impl Link {
    /// Usable at `now`: a new session is opened a little before this one ends
    /// (a quarter of its life, at most 30 s), so a call never races the expiry.
    fn usable(&self, now: u64) -> bool {
        let margin = (self.expires_at.saturating_sub(self.opened_at) / 4).min(30);
        now + margin < self.expires_at
    }
}

/// The upstream connection's state, for `/readyz` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Not yet connected since start.
    Connecting,
    /// Syncing from the issuer at this address.
    Connected(String),
    /// Unreachable or refusing since this time, with the last error.
    Down {
        /// Unix seconds.
        since: u64,
        /// The last error.
        error: String,
    },
}

/// Why an upstream call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// No issuer address answered.
    #[error("no issuer reachable: {0}")]
    Unreachable(String),
    /// The issuer refused (attestation, session or signing).
    #[error("issuer refused: {0}")]
    Refused(String),
    /// A local file could not be read or written.
    #[error("{0}")]
    Local(String),
}

impl From<UpstreamError> for AuthorityError {
    fn from(e: UpstreamError) -> Self {
        AuthorityError::Upstream(e.to_string())
    }
}

fn status_err(s: Status) -> UpstreamError {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
            UpstreamError::Unreachable(s.message().to_owned())
        }
        _ => UpstreamError::Refused(format!("{:?}: {}", s.code(), s.message())),
    }
}

/// Signs through the upstream issuer.
#[derive(Debug)]
pub struct UpstreamAuthority {
    cfg: UpstreamConfig,
    org: PublicKey,
    data_dir: PathBuf,
    tls: Arc<rustls::ClientConfig>,
    link: tokio::sync::Mutex<Option<Link>>,
    agent: Mutex<Option<AgentCredential>>,
    synced: RwLock<Synced>,
    /// Shared with the TLS verifier, which refuses a revoked issuer chain.
    deny: Arc<RwLock<Option<VerifiedDenyList>>>,
    state: Mutex<LinkState>,
    next_addr: AtomicUsize,
    sessions_opened: AtomicU64,
    /// Files whose last write failed (a full disk), to retry and report.
    unsaved: Mutex<Unsaved>,
}

/// Persisted files whose last write failed.
#[derive(Debug, Default)]
struct Unsaved {
    /// The agent credential's last write, when it failed.
    agent: Option<String>,
    /// The sync state's last write, when it failed.
    synced: Option<String>,
}

impl UpstreamAuthority {
    /// Reads the org key and any persisted agent credential and sync state.
    pub fn load(
        cfg: UpstreamConfig,
        trust_domain: &str,
        data_dir: PathBuf,
    ) -> Result<Self, AuthorityError> {
        let text = std::fs::read_to_string(&cfg.org_public).map_err(|e| AuthorityError::File {
            path: cfg.org_public.display().to_string(),
            reason: e.to_string(),
        })?;
        let org = PublicKey::from_file_text(&text).map_err(|e| AuthorityError::File {
            path: cfg.org_public.display().to_string(),
            reason: e.to_string(),
        })?;
        let deny = Arc::new(RwLock::new(None));
        let mut policy =
            crate::tls_identity::IssuerPolicy::new(org, cfg.issuer_id.clone(), deny.clone());
        if cfg.legacy_issuer {
            tracing::warn!("[upstream] legacy_issuer is on: issuers without a chain token are accepted (upgrade window only)");
            policy = policy.accept_legacy_issuers();
        }
        let tls = crate::tls::client_config_with(policy)
            .map_err(|e| AuthorityError::Upstream(e.to_string()))?;
        let me = Self {
            cfg,
            org,
            tls,
            link: tokio::sync::Mutex::new(None),
            agent: Mutex::new(None),
            synced: RwLock::new(Synced {
                trust_domain: trust_domain.to_owned(),
                ..Synced::default()
            }),
            deny,
            state: Mutex::new(LinkState::Connecting),
            next_addr: AtomicUsize::new(0),
            sessions_opened: AtomicU64::new(0),
            unsaved: Mutex::new(Unsaved::default()),
            data_dir,
        };
        me.load_persisted();
        Ok(me)
    }

    fn load_persisted(&self) {
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

    fn jwt_holder(&self, jwt: &str) -> String {
        Verifier::new(self.org)
            .with_leeway(u64::MAX / 4)
            .verify(jwt.trim(), now())
            .ok()
            .and_then(|v| v.holder())
            .map(|k| k.to_hex())
            .unwrap_or_default()
    }

    /// (agent id, iat, exp) of an agent credential signed under our org.
    fn check_agent_jwt(&self, jwt: &str) -> Result<(String, u64, u64), String> {
        // Expired is fine here: an expired credential is replaced, not trusted.
        let v = Verifier::new(self.org)
            .with_leeway(u64::MAX / 4)
            .verify(jwt, now())
            .map_err(|e| e.to_string())?;
        let c = v.claims();
        if c.purpose != lanyard_token::claims::PURPOSE_AGENT {
            return Err("not an agent credential".into());
        }
        Ok((
            c.sub.clone().unwrap_or_default(),
            c.iat.unwrap_or(0),
            v.expires_at().unwrap_or(0),
        ))
    }

    /// The entries last synced (persisted across restarts).
    pub fn entries(&self) -> Vec<Entry> {
        let s = self.synced.read().unwrap_or_else(|p| p.into_inner());
        to_entries(&s.entries)
    }

    /// The upstream link's state.
    pub fn state(&self) -> LinkState {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or(LinkState::Connecting)
    }

    /// The agent's id at the issuer, once attested.
    pub fn agent_id(&self) -> Option<String> {
        self.agent
            .lock()
            .ok()
            .and_then(|a| a.as_ref().map(|a| a.id.clone()))
    }

    /// Sessions opened so far (each with a fresh nonce signature).
    pub fn sessions_opened(&self) -> u64 {
        self.sessions_opened.load(Ordering::Relaxed)
    }

    fn set_state(&self, s: LinkState) {
        if let Ok(mut st) = self.state.lock() {
            if let (LinkState::Down { .. }, LinkState::Down { since, error }) = (&*st, &s) {
                // Keep the first failure time; update the error.
                if let LinkState::Down { error: e, .. } = &mut *st {
                    e.clone_from(error);
                }
                let _ = since;
                return;
            }
            *st = s;
        }
    }

    async fn connect(&self) -> Result<(Channel, String), UpstreamError> {
        let n = self.cfg.addresses.len().max(1);
        let mut last = String::new();
        for i in 0..n {
            let idx = (self.next_addr.load(Ordering::Relaxed) + i) % n;
            let addr = &self.cfg.addresses[idx];
            match crate::tls::channel(addr, self.tls.clone()).await {
                Ok(ch) => {
                    self.next_addr.store(idx, Ordering::Relaxed);
                    return Ok((ch, addr.clone()));
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        // Start the next round at the following address.
        self.next_addr.fetch_add(1, Ordering::Relaxed);
        Err(UpstreamError::Unreachable(last))
    }

    fn client(ch: &Channel) -> NodeClient<Channel> {
        NodeClient::new(ch.clone()).max_decoding_message_size(MAX_SYNC_BYTES)
    }

    async fn nonce(ch: &Channel) -> Result<Vec<u8>, UpstreamError> {
        Ok(Self::client(ch)
            .get_nonce(pb::GetNonceRequest {})
            .await
            .map_err(status_err)?
            .into_inner()
            .nonce)
    }

    async fn attest(&self, ch: &Channel) -> Result<AgentCredential, UpstreamError> {
        let key = KeyPair::generate().map_err(|e| UpstreamError::Local(e.to_string()))?;
        let evidence = match &self.cfg.evidence {
            NodeEvidence::JoinToken(t) => Evidence::JoinToken(t.clone()),
            NodeEvidence::Device { seed, name } => {
                let text = crate::fsutil::read_seed_text(seed)
                    .map_err(|e| UpstreamError::Local(format!("{}: {e}", seed.display())))?;
                let device = KeyPair::from_seed_text(&text)
                    .map_err(|e| UpstreamError::Local(format!("{}: {e}", seed.display())))?;
                Evidence::Device {
                    name: name.clone(),
                    key: Box::new(device),
                }
            }
            NodeEvidence::PsatTokenFile(p) => {
                // Re-read each time: the kubelet rotates projected tokens.
                let t = std::fs::read_to_string(p)
                    .map_err(|e| UpstreamError::Local(format!("{}: {e}", p.display())))?;
                Evidence::K8sPsat(t.trim().to_owned())
            }
        };
        let r = attest_node(&mut Self::client(ch), &key, evidence)
            .await
            .map_err(status_err)?;
        let cred = self.accept_agent(key, r)?;
        tracing::info!(agent = %cred.id, "node attested to the issuer");
        Ok(cred)
    }

    fn accept_agent(
        &self,
        key: KeyPair,
        r: pb::AgentCredential,
    ) -> Result<AgentCredential, UpstreamError> {
        let (id, iat, exp) = self.check_agent_jwt(&r.jwt).map_err(|e| {
            UpstreamError::Refused(format!("issuer sent a bad agent credential: {e}"))
        })?;
        if self.jwt_holder(&r.jwt) != key.public().to_hex() {
            return Err(UpstreamError::Refused(
                "issuer sent an agent credential for another key".into(),
            ));
        }
        let cred = AgentCredential {
            key,
            jwt: r.jwt,
            id,
            issued_at: iat,
            expires_at: exp,
        };
        // In memory first: if the disk refuses, the agent goes on serving and
        // retries the write every second from the sync loop.
        *self.agent.lock().unwrap_or_else(|p| p.into_inner()) = Some(cred.clone());
        self.persist_agent();
        Ok(cred)
    }

    /// Writes the agent credential held in memory; a failure is kept for
    /// `/readyz` and retried by [`UpstreamAuthority::retry_unsaved`].
    fn persist_agent(&self) {
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
    fn persist_synced(&self) {
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

    /// Retries the writes that failed, and reports them to `cache` (readiness).
    fn retry_unsaved(&self, cache: &Cache) {
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
        self.report_unsaved(cache);
    }

    fn report_unsaved(&self, cache: &Cache) {
        let u = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
        let as_result = |e: &Option<String>| match e {
            Some(e) => Err(std::io::Error::other(e.clone())),
            None => Ok(()),
        };
        cache.record_persist(AGENT_CREDENTIAL_FILE, &as_result(&u.agent));
        cache.record_persist(SYNCED, &as_result(&u.synced));
    }

    async fn open_session(&self, ch: &Channel) -> Result<Link, UpstreamError> {
        let held = self.agent.lock().ok().and_then(|a| a.clone());
        let agent = match held {
            Some(a) if a.expires_at > now() + 1 => a,
            _ => self.attest(ch).await?,
        };
        let r = open_session(&mut Self::client(ch), &agent.key, &agent.jwt)
            .await
            .map_err(status_err)?;
        self.sessions_opened.fetch_add(1, Ordering::Relaxed);
        Ok(Link {
            channel: ch.clone(),
            session: r.session,
            opened_at: now(),
            expires_at: u64::try_from(r.expires_at).unwrap_or(0),
        })
    }

    /// A live session, opening one (and attesting, if needed) on the first
    /// reachable address.
    async fn session(&self) -> Result<Link, UpstreamError> {
        let mut guard = self.link.lock().await;
        if let Some(l) = guard.as_ref().filter(|l| l.usable(now())) {
            return Ok(l.clone());
        }
        let (ch, addr) = self.connect().await?;
        let link = match self.open_session(&ch).await {
            Err(UpstreamError::Refused(m))
                if m.contains("agent credential")
                    && !matches!(self.cfg.evidence, NodeEvidence::JoinToken(_)) =>
            {
                // The credential was refused (revoked jti, unknown chain): a node
                // that can prove itself again does so.
                tracing::warn!(reason = %m, "agent credential refused; attesting again");
                if let Ok(mut a) = self.agent.lock() {
                    *a = None;
                }
                self.open_session(&ch).await?
            }
            r => r?,
        };
        tracing::debug!(issuer = %addr, "session opened");
        *guard = Some(link.clone());
        Ok(link)
    }

    async fn forget_link(&self) {
        *self.link.lock().await = None;
    }

    /// Runs `call` with a session; on an unknown session (issuer restarted,
    /// another replica) opens a new one once.
    async fn call_in_session<T>(
        &self,
        call: impl Fn(NodeClient<Channel>, &str) -> BoxFuture<'static, Result<T, Status>>,
    ) -> Result<T, UpstreamError> {
        for attempt in 0..2 {
            let link = self.session().await?;
            match call(Self::client(&link.channel), &link.session).await {
                Ok(v) => return Ok(v),
                Err(s) if s.code() == tonic::Code::Unauthenticated && attempt == 0 => {
                    self.forget_link().await;
                }
                Err(s) => {
                    if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) {
                        // This replica cannot sign (down, draining, its chain
                        // revoked): the next session goes to the next address.
                        self.forget_link().await;
                        self.next_addr.fetch_add(1, Ordering::Relaxed);
                    }
                    return Err(status_err(s));
                }
            }
        }
        Err(UpstreamError::Unreachable("session refused twice".into()))
    }

    /// Renews the agent credential past its half-life, with a new key.
    async fn renew_if_due(&self) -> Result<(), UpstreamError> {
        let Some(a) = self.agent.lock().ok().and_then(|a| a.clone()) else {
            return Ok(());
        };
        let half = a.issued_at + (a.expires_at.saturating_sub(a.issued_at)) / 2;
        if now() < half {
            return Ok(());
        }
        let link = self.session().await?;
        let key = KeyPair::generate().map_err(|e| UpstreamError::Local(e.to_string()))?;
        let nonce = Self::nonce(&link.channel).await?;
        let sig = key.sign(&issuer_proof_message(IssuerProof::Renew, &nonce));
        let req = with_session(
            &link.session,
            pb::RenewAgentRequest {
                nonce,
                agent_public_key: key.public().to_hex(),
                nonce_signature: sig.to_vec(),
            },
        )
        .map_err(status_err)?;
        let r = Self::client(&link.channel)
            .renew_agent(req)
            .await
            .map_err(status_err)?
            .into_inner();
        let cred = self.accept_agent(key, r)?;
        tracing::info!(agent = %cred.id, expires_at = cred.expires_at, "agent credential renewed");
        Ok(())
    }

    /// Keeps the agent in sync until `stop`: entries into `pipeline`, the deny
    /// list into `cache`. Reconnects with capped, jittered backoff.
    pub async fn run(
        self: Arc<Self>,
        pipeline: Arc<Pipeline>,
        cache: Arc<Cache>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut failures: u32 = 0;
        loop {
            let r = tokio::select! {
                r = self.sync_once(&pipeline, &cache, &mut failures) => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            if let Err(e) = r {
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

    async fn sync_once(
        &self,
        pipeline: &Pipeline,
        cache: &Cache,
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
                    self.retry_unsaved(cache);
                    continue;
                }
            };
            let msg = match msg {
                Ok(Some(m)) => m,
                Ok(None) => return Err(UpstreamError::Unreachable("sync stream ended".into())),
                Err(s) => return Err(status_err(s)),
            };
            self.apply(msg, pipeline, cache).await?;
            *failures = 0;
            self.set_state(LinkState::Connected(addr.clone()));
        }
    }

    async fn apply(
        &self,
        msg: pb::SyncResponse,
        pipeline: &Pipeline,
        cache: &Cache,
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
        pipeline.set_entries(entries.clone());
        if newly_denied != Denied::default() {
            let dropped = cache
                .purge(|_, stored| revoked(&newly_denied, stored))
                .await;
            tracing::info!(dropped, "deny list applied to the credential cache");
        }
        self.persist_synced();
        self.report_unsaved(cache);
        // Pre-mint X.509-SVIDs so the first workload call is a cache hit.
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
        Ok(())
    }
}

/// Node evidence, as [`attest_node`] presents it.
#[derive(Debug)]
pub enum Evidence {
    /// A single-use join token.
    JoinToken(String),
    /// A pinned device key, which signs the nonce and the new agent key.
    Device {
        /// The name it is pinned under.
        name: String,
        /// The device key (boxed: it is much larger than the other variants).
        key: Box<KeyPair>,
    },
    /// A projected service-account token.
    K8sPsat(String),
}

/// Node attestation: a fresh nonce, signed with the new agent `key`, plus the
/// evidence. The one implementation of the agent's side of the protocol; tests
/// and benchmarks speak it through here too.
pub async fn attest_node(
    client: &mut NodeClient<Channel>,
    key: &KeyPair,
    evidence: Evidence,
) -> Result<pb::AgentCredential, Status> {
    let nonce = client
        .get_nonce(pb::GetNonceRequest {})
        .await?
        .into_inner()
        .nonce;
    let evidence = match evidence {
        Evidence::JoinToken(t) => pb::attest_request::Evidence::JoinToken(t),
        Evidence::Device { name, key: device } => {
            let challenge = lanyard_plugins::node::device::challenge(&nonce, &key.public());
            pb::attest_request::Evidence::Device(pb::DeviceEvidence {
                name,
                signature: device.sign(&challenge).to_vec(),
            })
        }
        Evidence::K8sPsat(t) => pb::attest_request::Evidence::K8sPsat(t),
    };
    let sig = key.sign(&issuer_proof_message(IssuerProof::Attest, &nonce));
    Ok(client
        .attest(pb::AttestRequest {
            nonce,
            agent_public_key: key.public().to_hex(),
            nonce_signature: sig.to_vec(),
            evidence: Some(evidence),
        })
        .await?
        .into_inner())
}

/// Opens a session: the agent credential plus its key's signature over a fresh nonce.
pub async fn open_session(
    client: &mut NodeClient<Channel>,
    key: &KeyPair,
    agent_jwt: &str,
) -> Result<pb::OpenSessionResponse, Status> {
    let nonce = client
        .get_nonce(pb::GetNonceRequest {})
        .await?
        .into_inner()
        .nonce;
    let sig = key.sign(&issuer_proof_message(IssuerProof::Session, &nonce));
    Ok(client
        .open_session(pb::OpenSessionRequest {
            agent_jwt: agent_jwt.to_owned(),
            nonce,
            nonce_signature: sig.to_vec(),
        })
        .await?
        .into_inner())
}

/// A request carrying the session id.
pub fn with_session<T>(session: &str, msg: T) -> Result<tonic::Request<T>, Status> {
    let v = session
        .parse()
        .map_err(|_| Status::invalid_argument("malformed session id"))?;
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(SESSION_HEADER, v);
    Ok(r)
}

/// The deny list an agent takes from its issuer: it must verify with the org
/// key, must not be signed by a chain already known to be revoked, and must
/// not be older than the one held (a stale replica after a failover).
fn accept_deny_list(
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

/// Whether a cached credential is named by `denied` (its jti, or its chain).
fn revoked(denied: &Denied, stored: &crate::cache::Stored) -> bool {
    use crate::cache::Value;
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

fn to_entries(wire: &[WireEntry]) -> Vec<Entry> {
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
fn backoff(failures: u32) -> std::time::Duration {
    let cap_ms = (1000u64 << (failures.clamp(1, 7) - 1)).min(60_000);
    let mut r = [0u8; 4];
    let _ = lanyard_token::keys::random_bytes(&mut r);
    let jitter = u64::from(u32::from_le_bytes(r)) % cap_ms.max(1);
    std::time::Duration::from_millis(cap_ms / 2 + jitter / 2)
}

impl Authority for UpstreamAuthority {
    fn mint_credential<'a>(
        &'a self,
        req: &'a CredentialRequest,
        holder: PublicKey,
        _now: u64,
    ) -> BoxFuture<'a, Result<(String, u64), AuthorityError>> {
        Box::pin(async move {
            let msg = pb::SignCredentialRequest {
                subject: req.subject.clone(),
                public_key: holder.to_hex(),
                audiences: req.audiences.clone(),
                networks: req.networks.clone(),
                ttl_secs: i64::try_from(req.ttl_secs).unwrap_or(i64::MAX),
                attrs: req.attrs.clone(),
            };
            let r = self
                .call_in_session(|mut c, s| {
                    let req = with_session(s, msg.clone());
                    Box::pin(async move { c.sign_credential(req?).await.map(|r| r.into_inner()) })
                })
                .await?;
            Ok((r.jwt, u64::try_from(r.expires_at).unwrap_or(0)))
        })
    }

    fn jwt_svid<'a>(
        &'a self,
        spiffe_id: &'a str,
        audiences: &'a [String],
        ttl_secs: u64,
        _now: u64,
    ) -> BoxFuture<'a, Result<(String, u64), AuthorityError>> {
        Box::pin(async move {
            let msg = pb::SignJwtSvidRequest {
                spiffe_id: spiffe_id.to_owned(),
                audiences: audiences.to_vec(),
                ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX),
            };
            let r = self
                .call_in_session(|mut c, s| {
                    let req = with_session(s, msg.clone());
                    Box::pin(async move { c.sign_jwt_svid(req?).await.map(|r| r.into_inner()) })
                })
                .await?;
            Ok((r.token, u64::try_from(r.expires_at).unwrap_or(0)))
        })
    }

    fn x509_svid<'a>(
        &'a self,
        spiffe_id: &'a str,
        ttl_secs: u64,
        _now: u64,
    ) -> BoxFuture<'a, Result<X509Svid, AuthorityError>> {
        Box::pin(async move {
            // The key is made here and never leaves the agent; the issuer certifies it.
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| AuthorityError::Upstream(e.to_string()))?;
            let msg = pb::SignX509SvidRequest {
                spiffe_id: spiffe_id.to_owned(),
                public_key: key.public_key_raw().to_vec(),
                ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX),
            };
            let r = self
                .call_in_session(|mut c, s| {
                    let req = with_session(s, msg.clone());
                    Box::pin(async move { c.sign_x509_svid(req?).await.map(|r| r.into_inner()) })
                })
                .await?;
            if r.chain.is_empty() {
                return Err(AuthorityError::Upstream(
                    "issuer sent no certificate".into(),
                ));
            }
            Ok(X509Svid {
                chain: r.chain,
                key_pkcs8: key.serialize_der(),
                expires_at: u64::try_from(r.expires_at).unwrap_or(0),
            })
        })
    }

    fn bundle(&self) -> Bundle {
        let s = self.synced.read().unwrap_or_else(|p| p.into_inner());
        Bundle {
            trust_domain: s.trust_domain.clone(),
            x509_roots: s
                .x509_roots
                .iter()
                .flat_map(|p| crate::pem::decode_certs(p))
                .collect(),
            jwks: s.jwks.clone().into_bytes(),
            org_public: self.org.to_hex(),
        }
    }

    fn validate_jwt_svid(
        &self,
        token: &str,
        audience: &str,
        now: u64,
    ) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        let jwks = self
            .synced
            .read()
            .map(|s| s.jwks.clone())
            .unwrap_or_default();
        let points = crate::svid::jwks_points(jwks.as_bytes());
        let claims =
            crate::svid::validate_jwt_svid(token, audience, now, |kid| points.get(kid).cloned())?;
        // A JWT-SVID brokered by an agent that has since been revoked.
        match claims.get("agent_id") {
            None => {}
            Some(serde_json::Value::String(agent)) => {
                let deny = self
                    .deny
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if deny.as_ref().is_some_and(|l| l.denies_agent(agent)) {
                    return Err(format!("revoked: agent {agent} is on the deny list"));
                }
            }
            // Never skip the check on a claim of the wrong type.
            Some(_) => return Err("agent_id is not a string".into()),
        }
        Ok(claims)
    }

    fn verifier(&self) -> Verifier {
        let v = Verifier::new(self.org);
        match self.deny.read().ok().and_then(|d| d.clone()) {
            Some(list) => v.with_deny_list(list),
            None => v,
        }
    }

    fn link_state(&self) -> Option<(bool, String)> {
        let has_entries = self.synced.read().is_ok_and(|s| !s.entries.is_empty());
        Some(match self.state() {
            LinkState::Connected(addr) => (true, format!("upstream: connected to {addr}")),
            LinkState::Connecting => (has_entries, "upstream: connecting".to_owned()),
            LinkState::Down { since, error } => (
                has_entries,
                format!(
                    "upstream: unreachable since {} ({error}); serving cached credentials",
                    crate::clock::rfc3339(since)
                ),
            ),
        })
    }

    fn expires_at(&self) -> u64 {
        // Credentials carry their own expiry; the agent's signing power lasts as
        // long as some issuer answers.
        u64::MAX
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter_so_a_fleet_spreads_out() {
        for (failures, cap_ms) in [
            (1u32, 1000u64),
            (2, 2000),
            (3, 4000),
            (6, 32_000),
            (7, 60_000),
            (50, 60_000),
        ] {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..200 {
                let d = backoff(failures).as_millis() as u64;
                assert!(d >= cap_ms / 2 && d < cap_ms, "failures {failures}: {d} ms");
                seen.insert(d);
            }
            // Jitter: 200 agents do not pick the same delay.
            assert!(
                seen.len() > 50,
                "failures {failures}: only {} distinct delays",
                seen.len()
            );
        }
    }

    #[test]
    fn deny_lists_from_the_issuer_never_roll_back_nor_come_from_a_revoked_chain() {
        use lanyard_token::deny::{sign_by_chain, Denied};
        use lanyard_token::{delegate, ChainIssuer, DelegateRequest, DenyListError};
        let now = crate::api::now();
        let org = KeyPair::generate().unwrap();
        let chain_key = KeyPair::generate().unwrap();
        let req = DelegateRequest {
            name: "replica".into(),
            validity_secs: 3600,
            roles: vec!["issuer".into()],
            ..Default::default()
        };
        let jwt = delegate(&org, &chain_key.public(), &req, now).unwrap();
        let chain = ChainIssuer::new(&jwt, chain_key).unwrap();
        let mut denied = Denied::default();
        denied.jtis.insert("3MVUmuoA6KiC9vfUlPWtgWZksOh".into());
        let newer = sign_by_chain(&chain, &denied, 9, now).unwrap();
        let older = sign_by_chain(&chain, &denied, 4, now).unwrap();

        let held = accept_deny_list(&newer, &org.public(), None, &[]).unwrap();
        assert!(matches!(
            accept_deny_list(&older, &org.public(), Some(&held), &[]),
            Err(DenyListError::Rollback { got: 4, held: 9 })
        ));
        // The same serial again is fine (a reconnect).
        assert!(accept_deny_list(&newer, &org.public(), Some(&held), &[]).is_ok());
        // Once the signing chain is known to be revoked, its lists are refused.
        let revoked = vec![chain.jti().to_owned()];
        assert!(matches!(
            accept_deny_list(&newer, &org.public(), None, &revoked),
            Err(DenyListError::BadChain(_))
        ));
        // Another org's key refuses it outright.
        let other = KeyPair::generate().unwrap().public();
        assert!(accept_deny_list(&newer, &other, None, &[]).is_err());
    }

    #[tokio::test]
    async fn a_session_is_replaced_before_it_ends() {
        let ch = tonic::transport::Endpoint::from_static("http://x").connect_lazy();
        let l = Link {
            channel: ch,
            session: "s".into(),
            opened_at: 1000,
            expires_at: 1000 + 3600,
        };
        assert!(l.usable(1000));
        assert!(l.usable(1000 + 3600 - 31));
        assert!(!l.usable(1000 + 3600 - 30));
        // Short sessions keep a quarter of their life in hand.
        let short = Link {
            expires_at: 1008,
            ..l
        };
        assert!(short.usable(1005));
        assert!(!short.usable(1006));
    }
}
