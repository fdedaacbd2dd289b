//! The issuer's in-memory state: a snapshot ([`View`]) of the store refreshed
//! whenever its revision moves (so replicas sharing PostgreSQL see each other's
//! writes), single-use nonces, and agent sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use lanyard_plugins::node::{NodeAttestor, NodeRegistry};
use lanyard_runtime::authority::LocalAuthority;
use lanyard_token::deny::Denied;
use lanyard_token::PublicKey;
use tokio::sync::watch;

use crate::entry_index::EntryIndex;
use crate::limits::RateLimiter;
use crate::store::{AgentRecord, AgentStatus, Denial, EntryRecord, Store, StoreError};

/// How long a nonce may wait to be used.
pub const NONCE_TTL_SECS: u64 = 60;
/// Used nonces remembered until they expire (issued ones cost nothing); past
/// it, takes are refused until some expire.
pub const MAX_NONCES: usize = 100_000;
/// Longest session; the agent opens a new one (with a new nonce) after it.
pub const SESSION_TTL_SECS: u64 = 3600;
/// How often the store's revision is polled.
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The member of a stored JWK that holds its replica's chain token, which the
/// org key verifies. Stripped before the bundle is served.
const CHAIN_TOKEN_MEMBER: &str = "lanyard_chain_token";
/// The member of a stored JWK that holds its chain's CA certificate (base64
/// DER). Stripped before the bundle is served.
const CHAIN_CRT_MEMBER: &str = "lanyard_chain_crt";

/// The bundle agents serve, from every replica's published key: the JWKS and
/// the X.509 roots, both without revoked chains, so that a revoked chain's
/// JWT-SVIDs and X.509-SVIDs stop validating with what agents serve as soon as
/// they sync.
///
/// The store is not trusted for either: a row counts for its chain only if its
/// chain token verifies with the org key now, with the issuer role, and a
/// certificate becomes a root only if the org signed it for that chain's key.
/// A row with a token that does not verify is dropped whole. A row without a
/// token (a replica from before this release) keeps its JWT key, as before,
/// and gives no root.
///
/// The X.509 roots are the live replicas' chain CA certificates rather than the
/// org root: the org key is offline and can sign no CRL, so leaving a chain out
/// of the roots is how its SVIDs are revoked. When every chain is revoked there
/// are no roots, and nothing validates.
pub fn bundle_parts(
    keys: &[(String, String)],
    denied: &Denied,
    org: &lanyard_token::PublicKey,
    now: u64,
) -> (Vec<u8>, Vec<Vec<u8>>) {
    use base64::Engine as _;
    let mut jwks = Vec::new();
    let mut roots: Vec<Vec<u8>> = Vec::new();
    for (_, text) in keys {
        let Ok(serde_json::Value::Object(mut jwk)) = serde_json::from_str(text) else {
            continue;
        };
        let token = jwk
            .remove(CHAIN_TOKEN_MEMBER)
            .and_then(|c| c.as_str().map(str::to_owned));
        let crt = jwk
            .remove(CHAIN_CRT_MEMBER)
            .and_then(|c| c.as_str().map(str::to_owned))
            .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok());
        if let Some(token) = token {
            let chain = lanyard_token::Verifier::new(*org).verify(&token, now);
            let Ok(chain) = chain else { continue };
            let live_issuer = matches!(chain.anchor(), lanyard_token::Anchor::Org)
                && chain.has_role(lanyard_token::claims::ROLE_ISSUER)
                && !chain
                    .claims()
                    .jti
                    .as_ref()
                    .is_some_and(|j| denied.chains.contains(j));
            if !live_issuer {
                continue;
            }
            let certified = match (&crt, chain.holder()) {
                (Some(der), Some(key)) => {
                    lanyard_runtime::tls_identity::org_certifies(der, org, &key)
                }
                _ => false,
            };
            if let (true, Some(der)) = (certified, crt) {
                if !roots.contains(&der) {
                    roots.push(der);
                }
            }
        }
        jwks.push(serde_json::Value::Object(jwk));
    }
    let jwks = serde_json::to_vec(&serde_json::json!({"keys": jwks, "spiffe_refresh_hint": 300}))
        .unwrap_or_default();
    (jwks, roots)
}

/// Everything the issuer serves from, as of one store revision.
#[derive(Debug, Default)]
pub struct View {
    /// The store revision this view reflects.
    pub revision: i64,
    /// Live entries and tombstones, indexed.
    pub entries: EntryIndex,
    /// Agents by id.
    pub agents: HashMap<String, AgentRecord>,
    /// What is revoked.
    pub denied: Denied,
    /// The deny list, signed by this replica's chain ("" when nothing is denied).
    pub deny_list: String,
    /// The JWKS of every replica's JWT-SVID key.
    pub jwks: Vec<u8>,
    /// The CA certificates (DER) of the live, unrevoked replica chains, which
    /// agents serve as X.509 roots unless `x509_bundle = "org"` (see
    /// [`bundle_parts`]).
    pub x509_roots: Vec<Vec<u8>>,
}

impl View {
    /// Whether every node selector of `e` is among `node_selectors`.
    pub fn in_scope(e: &EntryRecord, node_selectors: &[String]) -> bool {
        e.node_selectors.iter().all(|s| node_selectors.contains(s))
    }

    /// A live entry for `subject` within the node scope, if any: one with that
    /// subject, or a template that renders to it.
    pub fn scoped_entry(&self, subject: &str, node_selectors: &[String]) -> Option<&EntryRecord> {
        let exact = self
            .entries
            .with_subject(subject)
            .find(|e| Self::in_scope(e, node_selectors));
        exact.or_else(|| {
            self.entries.templates().find(|e| {
                Self::in_scope(e, node_selectors)
                    && lanyard_plugins::template::matches(&e.subject, "", subject)
            })
        })
    }
}

/// A session opened with an agent credential and a fresh nonce signature.
#[derive(Debug, Clone)]
pub struct Session {
    /// The agent.
    pub agent_id: String,
    /// The `jti` of the credential that opened it: revoking that jti ends it.
    pub credential_jti: String,
    /// When the session ends.
    pub expires_at: u64,
}

/// Why a session lookup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// No `lanyard-session` metadata, or not a session this replica opened.
    #[error("no valid session: open one with OpenSession")]
    Unknown,
    /// The session ended.
    #[error("session expired")]
    Expired,
    /// The agent has been suspended or revoked.
    #[error("agent {0} is {1}")]
    Refused(String, &'static str),
    /// The credential that opened the session has been revoked (by jti).
    #[error("the agent credential that opened this session is revoked")]
    CredentialRevoked,
    /// This replica's own chain issuer credential is revoked or expired: it
    /// must not sign, so agents move to another replica.
    #[error("this issuer replica's chain credential is revoked or expired; use another replica")]
    ChainRevoked,
}

/// The issuer's shared state.
#[derive(Debug)]
pub struct Issuer {
    /// The trust domain.
    pub trust_domain: String,
    /// The chain issuer credential and its signers.
    pub authority: LocalAuthority,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Node attestors, by evidence kind.
    pub attestors: Vec<Box<dyn NodeAttestor>>,
    /// Agent credential lifetime.
    pub agent_ttl_secs: u64,
    /// Per-agent signing limit.
    pub sign_limit: RateLimiter,
    /// Per-address limit on unauthenticated calls (node attestation).
    pub attest_limit: RateLimiter,
    /// Per-agent limit on session opening: a budget of its own, keyed by the
    /// verified agent id, so no flood from the agent's address can starve it.
    pub session_limit: RateLimiter,
    /// Serve the live chains' CA certificates as X.509 roots (`x509_bundle =
    /// "chains"`), or the org root.
    pub x509_chain_roots: bool,
    view: watch::Sender<Arc<View>>,
    /// One refresh at a time: two racing refreshes could otherwise publish an
    /// older snapshot after a newer one (an agent just attested would vanish).
    refreshing: tokio::sync::Mutex<()>,
    nonces: Mutex<crate::nonces::Nonces>,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Issuer {
    /// An issuer with an empty view; call [`Issuer::refresh`] before serving.
    /// `None` only if the random source fails (no nonce key).
    pub fn new(
        trust_domain: String,
        authority: LocalAuthority,
        store: Arc<dyn Store>,
        attestors: Vec<Box<dyn NodeAttestor>>,
        agent_ttl_secs: u64,
        limits: crate::config::Limits,
    ) -> Option<Self> {
        Some(Self {
            trust_domain,
            authority,
            store,
            attestors,
            agent_ttl_secs,
            sign_limit: RateLimiter::new(limits.sign_per_sec, limits.sign_burst),
            attest_limit: RateLimiter::new(limits.attest_per_sec, limits.attest_burst),
            session_limit: RateLimiter::new(limits.attest_per_sec, limits.attest_burst),
            x509_chain_roots: true,
            view: watch::channel(Arc::new(View::default())).0,
            refreshing: tokio::sync::Mutex::new(()),
            nonces: Mutex::new(crate::nonces::Nonces::new(MAX_NONCES)?),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// Notified on every new view.
    pub fn subscribe(&self) -> watch::Receiver<Arc<View>> {
        self.view.subscribe()
    }

    /// Publishes this replica's JWT-SVID key so every replica's bundle lists it.
    pub async fn publish_key(&self) -> Result<(), StoreError> {
        use base64::Engine as _;
        let jwt = self.authority.jwt_signer();
        // The stored JWK names its chain, so that revoking the chain drops the
        // key from every agent's bundle (see `bundle_jwks`).
        let mut jwk = jwt.jwk().clone();
        jwk[CHAIN_TOKEN_MEMBER] = self.authority.chain().token().into();
        jwk[CHAIN_CRT_MEMBER] = base64::engine::general_purpose::STANDARD
            .encode(self.authority.chain_der())
            .into();
        self.store
            .publish_jwt_key(
                jwt.kid(),
                &jwk.to_string(),
                self.authority.chain().expires_at(),
            )
            .await
    }

    /// Rebuilds the view if the store's revision moved. Entries are applied
    /// incrementally; agents, denials and keys are small and re-read whole.
    pub async fn refresh(&self, now: u64) -> Result<bool, StoreError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let revision = self.store.revision().await?;
        let old = self.view();
        if revision == old.revision && old.revision != 0 {
            return Ok(false);
        }
        let changes = self.store.entries_since(old.revision).await?;
        let agents = self.store.agents().await?;
        let denials = self.store.denials().await?;
        let keys = self.store.jwt_keys(now).await?;

        // Shares every unchanged entry with the old view.
        let mut entries = old.entries.clone();
        changes.into_iter().for_each(|e| entries.apply(e));
        let mut denied = Denied::default();
        for d in denials {
            match d {
                Denial::Jti(j) => denied.jtis.insert(j),
                Denial::Chain(c) => denied.chains.insert(c),
            };
        }
        // A revoked agent is denied by id, which takes every credential it
        // brokered (their `agent_id`) with it. Revocation is final, so the
        // agent record's status is the durable record of it.
        denied.agents = agents
            .iter()
            .filter(|a| a.status == AgentStatus::Revoked)
            .map(|a| a.id.clone())
            .collect();
        // Re-sign only when the denials changed; the serial is the store revision,
        // which every replica sees grow, so agents can refuse an older list.
        let deny_list = if denied == old.denied && !old.deny_list.is_empty() {
            old.deny_list.clone()
        } else if denied == Denied::default() {
            String::new()
        } else {
            lanyard_token::deny::sign_by_chain(
                self.authority.chain(),
                &denied,
                u64::try_from(revision).unwrap_or(0),
                now,
            )
            .map_err(|e| StoreError::Invalid(e.to_string()))?
        };
        let (jwks, x509_roots) = bundle_parts(&keys, &denied, &self.authority.org(), now);
        let view = View {
            revision,
            entries,
            agents: agents.into_iter().map(|a| (a.id.clone(), a)).collect(),
            denied,
            deny_list,
            jwks,
            x509_roots,
        };
        self.view.send_replace(Arc::new(view));
        Ok(true)
    }

    /// A fresh nonce (`None` only if the random source fails).
    pub fn new_nonce(&self, now: u64) -> Option<[u8; 32]> {
        self.nonces.lock().ok()?.issue(now + NONCE_TTL_SECS)
    }

    /// Uses up a nonce: `true` once, if this replica issued it and it is fresh.
    pub fn take_nonce(&self, nonce: &[u8], now: u64, taker: crate::nonces::Taker<'_>) -> bool {
        self.nonces
            .lock()
            .is_ok_and(|mut t| t.take(nonce, now, taker))
    }

    /// Opens a session for an agent whose credential and nonce signature checked out.
    pub fn open_session(
        &self,
        agent_id: &str,
        credential_jti: &str,
        expires_at: u64,
        now: u64,
    ) -> Option<String> {
        let mut id = [0u8; 32];
        lanyard_token::keys::random_bytes(&mut id).ok()?;
        let id = lanyard_token::hex::encode(&id);
        let mut map = self.sessions.lock().ok()?;
        if map.len() >= MAX_NONCES {
            map.retain(|_, s| s.expires_at > now);
        }
        map.insert(
            id.clone(),
            Session {
                agent_id: agent_id.to_owned(),
                credential_jti: credential_jti.to_owned(),
                expires_at,
            },
        );
        Some(id)
    }

    /// The session `id` names, if it is live and its agent still active.
    pub fn session(&self, id: &str, now: u64) -> Result<(Session, AgentRecord), SessionError> {
        let s = self
            .sessions
            .lock()
            .ok()
            .and_then(|m| m.get(id).cloned())
            .ok_or(SessionError::Unknown)?;
        if s.expires_at <= now {
            return Err(SessionError::Expired);
        }
        if self.chain_revoked() || self.authority.chain().expires_at() <= now {
            return Err(SessionError::ChainRevoked);
        }
        let view = self.view();
        let agent = view
            .agents
            .get(&s.agent_id)
            .cloned()
            .ok_or(SessionError::Unknown)?;
        if agent.status != AgentStatus::Active {
            return Err(SessionError::Refused(
                agent.id.clone(),
                agent.status.as_str(),
            ));
        }
        // After the agent's standing: a revoked agent is told so, not merely
        // that its session ended.
        if view.denied.jtis.contains(&s.credential_jti) {
            return Err(SessionError::CredentialRevoked);
        }
        Ok((s, agent))
    }

    /// Whether this replica's chain credential has been revoked.
    pub fn chain_revoked(&self) -> bool {
        self.view()
            .denied
            .chains
            .contains(self.authority.chain().jti())
    }

    /// The store as a [`NodeRegistry`] for the node attestors.
    pub fn registry(&self) -> StoreRegistry<'_> {
        StoreRegistry(self.store.as_ref())
    }

    /// A verifier for agent credentials: the org key and the current deny
    /// list. `None` if this replica's own list does not parse: then nothing is
    /// verified (fail closed) rather than verified without revocations.
    pub fn verifier(&self) -> Option<lanyard_token::Verifier> {
        let v = lanyard_token::Verifier::new(self.authority.org());
        let view = self.view();
        if view.deny_list.is_empty() {
            return Some(v);
        }
        lanyard_token::deny::parse(
            &view.deny_list,
            &self.authority.org(),
            lanyard_runtime::clock::now(),
        )
        .ok()
        .map(|list| v.with_deny_list(list))
    }
}

/// The store seen through the node attestors' narrow lookup trait.
#[derive(Debug)]
pub struct StoreRegistry<'a>(&'a dyn Store);

impl NodeRegistry for StoreRegistry<'_> {
    fn redeem_join_token<'a>(
        &'a self,
        hash_hex: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            self.0
                .redeem_join_token(hash_hex, now)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn device_key<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<PublicKey>, String>> {
        Box::pin(async move {
            match self.0.device_key(name).await.map_err(|e| e.to_string())? {
                None => Ok(None),
                Some(hex) => PublicKey::from_hex(&hex, false)
                    .map(Some)
                    .map_err(|e| format!("pinned key for {name}: {e}")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Finding 3 and the second review: a revoked chain's JWT key and CA
    /// certificate leave the bundle; a forged row (a token that does not
    /// verify, a certificate the org did not sign, a role-less chain) adds no
    /// root; a legacy row keeps only its JWT key; all revoked means no roots.
    #[test]
    fn attacker_revoked_or_forged_chains_leave_the_bundle() {
        use base64::Engine as _;
        let now = lanyard_runtime::clock::now();
        let org = lanyard_token::KeyPair::generate().unwrap();
        let chain = |name: &str, roles: Vec<String>, org: &lanyard_token::KeyPair| {
            let key = lanyard_token::KeyPair::generate().unwrap();
            let req = lanyard_token::DelegateRequest {
                name: name.into(),
                validity_secs: 3_600,
                roles,
                ..Default::default()
            };
            let token = lanyard_token::delegate(org, &key.public(), &req, now - 10).unwrap();
            let (_, crt) = lanyard_runtime::svid::delegate_certs(
                org,
                &key.public(),
                &[],
                now - 10,
                now + 3_600,
            )
            .unwrap();
            let der = lanyard_runtime::pem::decode_certs(&crt).remove(0);
            (token, der)
        };
        let row = |kid: &str, token: &str, der: &[u8]| {
            let mut jwk = serde_json::json!({"kid": kid, "kty": "EC"});
            jwk[CHAIN_TOKEN_MEMBER] = token.into();
            jwk[CHAIN_CRT_MEMBER] = base64::engine::general_purpose::STANDARD.encode(der).into();
            (kid.to_owned(), jwk.to_string())
        };
        let issuer = || vec!["issuer".to_owned()];
        let (ta, ca) = chain("a", issuer(), &org);
        let (tb, cb) = chain("b", issuer(), &org);
        let (tg, cg) = chain("gateway", vec![], &org);
        let (tr, cr) = chain(
            "rogue",
            issuer(),
            &lanyard_token::KeyPair::generate().unwrap(),
        );
        let parts = |keys: &[(String, String)], denied: &Denied| {
            let (jwks, roots) = bundle_parts(keys, denied, &org.public(), now);
            let doc: serde_json::Value = serde_json::from_slice(&jwks).unwrap();
            let kids: Vec<String> = doc["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| {
                    assert!(k.get(CHAIN_TOKEN_MEMBER).is_none(), "stripped");
                    assert!(k.get(CHAIN_CRT_MEMBER).is_none(), "stripped");
                    k["kid"].as_str().unwrap().to_owned()
                })
                .collect();
            (kids, roots)
        };
        let mut keys = vec![row("k1", &ta, &ca), row("k2", &tb, &cb)];
        assert_eq!(
            parts(&keys, &Denied::default()),
            (vec!["k1".into(), "k2".into()], vec![ca.clone(), cb.clone()])
        );
        let jti = |t: &str| {
            lanyard_token::Verifier::new(org.public())
                .verify(t, now)
                .unwrap()
                .claims()
                .jti
                .clone()
                .unwrap()
        };
        let mut denied = Denied::default();
        denied.chains.insert(jti(&ta));
        assert_eq!(parts(&keys, &denied), (vec!["k2".into()], vec![cb.clone()]));
        // Forged rows: b's token with another certificate (the org signed it,
        // but for another key), a role-less chain, another org's chain.
        keys.push(row("k3", &tb, &ca));
        keys.push(row("k4", &tg, &cg));
        keys.push(row("k5", &tr, &cr));
        let (kids, roots) = parts(&keys, &denied);
        assert_eq!(kids, ["k2", "k3"], "k4 and k5 dropped whole");
        assert_eq!(roots, vec![cb.clone()]);
        // A legacy row: its JWT key, no root.
        keys.push(("k6".into(), r#"{"kid":"k6","kty":"EC"}"#.into()));
        assert_eq!(parts(&keys, &denied).1, vec![cb.clone()]);
        // Every chain revoked: no roots at all, never the org root.
        denied.chains.insert(jti(&tb));
        assert!(parts(&keys, &denied).1.is_empty());
    }
}
