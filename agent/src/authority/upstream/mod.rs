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

mod persist;
mod session;
mod sync;

use persist::Unsaved;
pub use session::{attest_node, open_session, with_session, Evidence};
use sync::to_entries;
pub use sync::SyncEvent;

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
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;
use tonic::Status;

use crate::authority::{Authority, AuthorityError, Bundle, CredentialRequest};
use crate::config::{Entry, NodeEvidence, UpstreamConfig};
use crate::svid::{JwtSvidError, X509Svid};

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
    crate::clock::now()
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
    /// No issuer address could be connected to; the last one tried, and why.
    #[error("no issuer reachable: {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// Why the TLS connection failed.
        #[source]
        source: crate::tls::TlsError,
    },
    /// The config names no issuer address.
    #[error("no issuer reachable: no issuer address is configured")]
    NoAddress,
    /// The issuer is down, draining or too slow (`UNAVAILABLE`,
    /// `DEADLINE_EXCEEDED`, `UNKNOWN`).
    #[error("no issuer reachable: {}", .0.message())]
    Unavailable(tonic::Status),
    /// The issuer refused (attestation, session or signing).
    #[error("issuer refused: {:?}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
    /// The Sync stream ended (the issuer restarted or failed over).
    #[error("no issuer reachable: sync stream ended")]
    StreamEnded,
    /// A fresh session was refused as unknown right after it was opened.
    #[error("no issuer reachable: session refused twice")]
    SessionRefusedTwice,
    /// The issuer sent an agent credential the agent cannot use.
    #[error("issuer refused: issuer sent a bad agent credential: {0}")]
    BadAgentCredential(#[from] AgentCredentialError),
    /// A file the node attests with (device seed, PSAT token) cannot be read.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key could not be generated or the device seed does not parse.
    #[error("{0}")]
    Key(#[from] lanyard_token::KeyError),
    /// The agent is shutting down (no one applies what the sync task sends).
    #[error("the agent is shutting down")]
    ShuttingDown,
}

/// Why an agent credential from the issuer (or from `data_dir`) is not used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentCredentialError {
    /// It does not verify with the org key.
    #[error("{0}")]
    Verify(#[from] lanyard_token::VerifyError),
    /// It verifies, but its purpose is not an agent's.
    #[error("not an agent credential")]
    NotAgent,
    /// It is bound to another key than the one the agent sent.
    #[error("an agent credential for another key")]
    OtherKey,
}

impl From<UpstreamError> for AuthorityError {
    fn from(e: UpstreamError) -> Self {
        AuthorityError::Upstream(Box::new(e))
    }
}

fn status_err(s: Status) -> UpstreamError {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
            UpstreamError::Unavailable(s)
        }
        _ => UpstreamError::Refused(s),
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
            .map_err(|e| AuthorityError::Upstream(Box::new(e)))?;
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
    fn check_agent_jwt(&self, jwt: &str) -> Result<(String, u64, u64), AgentCredentialError> {
        // Expired is fine here: an expired credential is replaced, not trusted.
        let v = Verifier::new(self.org)
            .with_leeway(u64::MAX / 4)
            .verify(jwt, now())?;
        let c = v.claims();
        if c.purpose != lanyard_token::claims::PURPOSE_AGENT {
            return Err(AgentCredentialError::NotAgent);
        }
        Ok((
            c.sub.clone().unwrap_or_default(),
            c.iat.unwrap_or(0),
            v.expires_at().unwrap_or(0),
        ))
    }

    /// The credential ids (jtis) the deny lists synced so far name, persisted
    /// across restarts: a restored cache is purged of them at start.
    pub fn denied_jtis(&self) -> Denied {
        let s = self.synced.read().unwrap_or_else(|p| p.into_inner());
        Denied {
            jtis: s.denied_jtis.iter().cloned().collect(),
            ..Denied::default()
        }
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
                .map_err(|e| AuthorityError::Upstream(Box::new(e)))?;
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
    ) -> Result<serde_json::Map<String, serde_json::Value>, JwtSvidError> {
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
                    return Err(JwtSvidError::AgentRevoked(agent.clone()));
                }
            }
            // Never skip the check on a claim of the wrong type.
            Some(_) => return Err(JwtSvidError::BadAgentId),
        }
        // A JWT-SVID revoked by its own id, by any deny list synced so far
        // (the held list only grows; the synced set also survives restarts).
        if let Some(jti) = claims.get("jti").and_then(serde_json::Value::as_str) {
            let s = self.synced.read().unwrap_or_else(|p| p.into_inner());
            if s.denied_jtis.iter().any(|d| d == jti) {
                return Err(JwtSvidError::Revoked(jti.to_owned()));
            }
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
mod tests;
