//! `lanyard.issuer.v1.Node`: what agents call, over TLS.
//!
//! Unauthenticated calls (nonce, attest, open session) are rate limited per
//! caller address. Everything else needs a session, which only a fresh nonce
//! signature with the agent's seed opens; each call re-checks the agent's
//! standing, so a suspension or revocation takes effect within one store poll.

use std::sync::Arc;

use lanyard_plugins::node::NodeEvidence;
use lanyard_proto::issuer as pb;
use lanyard_proto::issuer::node_server::Node;
use lanyard_token::pop::{issuer_proof_message, IssuerProof};
use lanyard_token::{LeafRequest, PublicKey};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use lanyard_runtime::authority::Authority as _;

use crate::state::{Issuer, SessionError, View};
use crate::store::{AgentRecord, AgentStatus};

/// Metadata that carries the session id.
pub const SESSION_HEADER: &str = "lanyard-session";
/// Longest agent-chosen string (subject, audience, selector) accepted.
const MAX_FIELD: usize = 2048;
/// Most audiences, networks or attrs in one request.
const MAX_ITEMS: usize = 32;

/// The Node service.
#[derive(Debug, Clone)]
pub struct NodeService {
    /// Shared state.
    pub issuer: Arc<Issuer>,
    /// Turns true on shutdown: open Sync streams end.
    pub shutdown: watch::Receiver<bool>,
}

fn now() -> u64 {
    lanyard_runtime::clock::now()
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The rate-limit key of a caller: its IPv4 address, or its IPv6 /64 (one
/// host usually holds a whole /64, so per-address keys would not limit it).
fn caller<T>(req: &Request<T>) -> String {
    let ip = req
        .extensions()
        .get::<std::net::SocketAddr>()
        .copied()
        .or_else(|| req.remote_addr())
        .map(|a| a.ip());
    match ip {
        Some(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(std::net::IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map_or_else(String::new, |v4| v4.to_string()),
        Some(ip) => ip.to_string(),
        None => "unknown".into(),
    }
}

fn limit_caller<T>(issuer: &Issuer, req: &Request<T>) -> Result<(), Status> {
    if issuer.attest_limit.allow(&caller(req)) {
        Ok(())
    } else {
        Err(Status::resource_exhausted(
            "too many unauthenticated calls from this address; back off",
        ))
    }
}

fn check_len(what: &str, s: &str) -> Result<(), Status> {
    if s.len() > MAX_FIELD {
        return Err(Status::invalid_argument(format!(
            "{what} is longer than {MAX_FIELD} bytes"
        )));
    }
    Ok(())
}

fn check_list(what: &str, v: &[String]) -> Result<(), Status> {
    if v.len() > MAX_ITEMS {
        return Err(Status::invalid_argument(format!(
            "more than {MAX_ITEMS} {what}"
        )));
    }
    v.iter().try_for_each(|s| check_len(what, s))
}

fn public_key(hex: &str) -> Result<PublicKey, Status> {
    PublicKey::from_hex(hex, false)
        .map_err(|e| Status::invalid_argument(format!("public key: {e}")))
}

fn jti_and_exp(token: &str) -> (String, u64) {
    lanyard_token::jws::parse(token)
        .ok()
        .and_then(|p| serde_json::from_slice::<lanyard_token::Claims>(&p.payload).ok())
        .map(|c| (c.jti.unwrap_or_default(), c.exp.unwrap_or(0)))
        .unwrap_or_default()
}

impl NodeService {
    fn not_revoked(&self) -> Result<(), Status> {
        if self.issuer.chain_revoked() {
            return Err(Status::unavailable(SessionError::ChainRevoked.to_string()));
        }
        Ok(())
    }

    /// The signature over the nonce, checked before the nonce is used: only
    /// the key's holder can use a nonce up, so nobody can fill the memory of
    /// used nonces with someone else's.
    fn check_proof(
        nonce: &[u8],
        key: &PublicKey,
        sig: &[u8],
        what: IssuerProof,
    ) -> Result<(), Status> {
        if key.verify(&issuer_proof_message(what, nonce), sig) {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "the nonce signature does not match the key",
            ))
        }
    }

    /// Uses the nonce up, remembered for `taker`: an attestation is
    /// unauthenticated (the attacker's own key will do), a session's or a
    /// renewal's nonce belongs to an agent that checked out, with its own cap.
    fn use_nonce(
        &self,
        nonce: &[u8],
        now: u64,
        taker: crate::nonces::Taker<'_>,
    ) -> Result<(), Status> {
        if self.issuer.take_nonce(nonce, now, taker) {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "nonce unknown, used or expired (or too many in use): get a fresh one from GetNonce",
            ))
        }
    }

    fn session<T>(&self, req: &Request<T>, now: u64) -> Result<AgentRecord, Status> {
        let id = req
            .metadata()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("no lanyard-session metadata"))?;
        match self.issuer.session(id, now) {
            Ok((_, agent)) => Ok(agent),
            Err(e @ (SessionError::Unknown | SessionError::Expired)) => {
                Err(Status::unauthenticated(e.to_string()))
            }
            Err(e @ SessionError::ChainRevoked) => Err(Status::unavailable(e.to_string())),
            // The session is void; opening a new one needs an unrevoked
            // credential (a device or PSAT node attests again).
            Err(e @ SessionError::CredentialRevoked) => Err(Status::unauthenticated(e.to_string())),
            Err(e) => Err(Status::permission_denied(e.to_string())),
        }
    }

    fn signing_session<T>(&self, req: &Request<T>, now: u64) -> Result<AgentRecord, Status> {
        let agent = self.session(req, now)?;
        if !self.issuer.sign_limit.allow(&agent.id) {
            return Err(Status::resource_exhausted(format!(
                "signing rate limit for {} reached; back off",
                agent.id
            )));
        }
        Ok(agent)
    }

    fn mint_agent(&self, agent_id: &str, key: PublicKey, now: u64) -> Result<String, Status> {
        let mut leaf = LeafRequest::workload(agent_id, key, self.issuer.agent_ttl_secs);
        leaf.purpose = lanyard_token::claims::PURPOSE_AGENT.into();
        leaf.clamp_to_issuer = true;
        self.issuer
            .authority
            .chain()
            .mint(&leaf, now)
            .map_err(|e| Status::unavailable(format!("cannot mint: {e}")))
    }

    async fn refresh(&self, now: u64) -> Result<(), Status> {
        self.issuer
            .refresh(now)
            .await
            .map(|_| ())
            .map_err(|e| Status::unavailable(e.to_string()))
    }
}

fn mint_err(e: lanyard_token::MintError) -> Status {
    match e {
        // This replica cannot sign any more: the agent should use another.
        e @ lanyard_token::MintError::IssuerExpired { .. } => {
            Status::unavailable(format!("cannot mint: {e}"))
        }
        e => Status::invalid_argument(format!("cannot mint: {e}")),
    }
}

/// A SPIFFE ID in this trust domain (the SVID endpoints sign nothing else).
fn spiffe_id(trust_domain: &str, id: &str) -> Result<(), Status> {
    lanyard_token::subject::validate(id)
        .map_err(|e| Status::invalid_argument(format!("spiffe_id: {e}")))?;
    if !id.starts_with(&format!("spiffe://{trust_domain}/")) {
        return Err(Status::invalid_argument(format!(
            "{id} is not a SPIFFE ID in trust domain {trust_domain}"
        )));
    }
    Ok(())
}

fn scoped<'v>(
    view: &'v View,
    subject: &str,
    agent: &AgentRecord,
) -> Result<&'v crate::store::EntryRecord, Status> {
    view.scoped_entry(subject, &agent.selectors).ok_or_else(|| {
        Status::permission_denied(format!(
            "no entry for {subject} within the node scope of {}",
            agent.id
        ))
    })
}

fn ttl(requested: i64, entry_ttl: u64) -> u64 {
    match u64::try_from(requested) {
        Ok(t) if t > 0 => t.min(entry_ttl),
        _ => entry_ttl,
    }
}

// What each request turns into before the handler consults any state: pure
// functions of the message (and, for OpenSession, the verifier and the time),
// so that the fuzzer (`lanyard_issuer::fuzzing`) runs exactly the server's code.

/// An Attest request, checked.
#[derive(Debug)]
pub struct AttestAsk {
    /// The agent's new key.
    pub key: PublicKey,
    /// The node's evidence, for the attestor of its kind.
    pub evidence: NodeEvidence,
    /// The nonce from GetNonce.
    pub nonce: Vec<u8>,
    /// The agent key's signature over the nonce.
    pub nonce_signature: Vec<u8>,
}

/// Checks an Attest request: a hex ed25519 key and some evidence.
pub fn attest_request(r: pb::AttestRequest) -> Result<AttestAsk, Status> {
    let key = public_key(&r.agent_public_key)?;
    let evidence = match r.evidence {
        Some(pb::attest_request::Evidence::JoinToken(token)) => NodeEvidence::JoinToken { token },
        Some(pb::attest_request::Evidence::Device(d)) => NodeEvidence::DeviceKey {
            name: d.name,
            signature: d.signature,
        },
        Some(pb::attest_request::Evidence::K8sPsat(token)) => NodeEvidence::K8sPsat { token },
        None => return Err(Status::invalid_argument("no node evidence")),
    };
    Ok(AttestAsk {
        key,
        evidence,
        nonce: r.nonce,
        nonce_signature: r.nonce_signature,
    })
}

/// An OpenSession request whose agent credential verified.
#[derive(Debug)]
pub struct SessionAsk {
    /// The agent's id (the credential's subject).
    pub agent_id: String,
    /// The credential's jti.
    pub jti: String,
    /// The credential's holder key, which must sign the nonce.
    pub key: PublicKey,
    /// When the session ends: the credential's expiry, at most a session TTL away.
    pub expires_at: u64,
    /// The nonce from GetNonce.
    pub nonce: Vec<u8>,
    /// The holder key's signature over the nonce.
    pub nonce_signature: Vec<u8>,
}

/// Checks an OpenSession request: an agent credential (`purpose lanyard_agent`,
/// with a holder key) that `verifier` accepts at `now`.
pub fn open_session_request(
    r: pb::OpenSessionRequest,
    verifier: &lanyard_token::Verifier,
    now: u64,
) -> Result<SessionAsk, Status> {
    let verified = verifier
        .verify(&r.agent_jwt, now)
        .map_err(|e| Status::permission_denied(format!("agent credential: {e}")))?;
    let claims = verified.claims();
    if claims.purpose != lanyard_token::claims::PURPOSE_AGENT {
        return Err(Status::permission_denied(
            "not an agent credential (purpose lanyard_agent)",
        ));
    }
    let key = verified
        .holder()
        .ok_or_else(|| Status::permission_denied("agent credential has no public_key"))?;
    let expires_at = verified
        .expires_at()
        .unwrap_or(now)
        .min(now.saturating_add(crate::state::SESSION_TTL_SECS));
    Ok(SessionAsk {
        agent_id: claims.sub.clone().unwrap_or_default(),
        jti: claims.jti.clone().unwrap_or_default(),
        key,
        expires_at,
        nonce: r.nonce,
        nonce_signature: r.nonce_signature,
    })
}

/// A RenewAgent request, checked.
#[derive(Debug)]
pub struct RenewAsk {
    /// The agent's new key.
    pub key: PublicKey,
    /// The nonce from GetNonce.
    pub nonce: Vec<u8>,
    /// The new key's signature over the nonce.
    pub nonce_signature: Vec<u8>,
}

/// Checks a RenewAgent request: a hex ed25519 key.
pub fn renew_agent_request(r: pb::RenewAgentRequest) -> Result<RenewAsk, Status> {
    Ok(RenewAsk {
        key: public_key(&r.agent_public_key)?,
        nonce: r.nonce,
        nonce_signature: r.nonce_signature,
    })
}

/// The revision a Sync request starts from (0 or less, or one ahead of the
/// store, means a full resend).
pub fn sync_request(r: &pb::SyncRequest) -> i64 {
    r.since_revision
}

/// A SignCredential request, checked: bounded strings and lists, a hex key.
/// Whether the entry allows it is the handler's check.
#[derive(Debug)]
pub struct CredentialAsk {
    /// The subject asked for.
    pub subject: String,
    /// Audiences.
    pub audiences: Vec<String>,
    /// Networks; must equal the entry's.
    pub networks: Vec<String>,
    /// The workload's selectors, recorded in the token.
    pub attrs: Vec<String>,
    /// The key the credential is for.
    pub holder: PublicKey,
    /// The lifetime asked for; 0 or less for the entry's.
    pub ttl_secs: i64,
}

/// Checks a SignCredential request.
pub fn sign_credential_request(r: pb::SignCredentialRequest) -> Result<CredentialAsk, Status> {
    check_len("subject", &r.subject)?;
    check_list("audiences", &r.audiences)?;
    check_list("networks", &r.networks)?;
    check_list("attrs", &r.attrs)?;
    Ok(CredentialAsk {
        holder: public_key(&r.public_key)?,
        subject: r.subject,
        audiences: r.audiences,
        networks: r.networks,
        attrs: r.attrs,
        ttl_secs: r.ttl_secs,
    })
}

/// A SignX509SVID request, checked: a SPIFFE ID in `trust_domain`.
#[derive(Debug)]
pub struct X509SvidAsk {
    /// The SPIFFE ID.
    pub spiffe_id: String,
    /// The P-256 public key (DER), checked when certified.
    pub public_key: Vec<u8>,
    /// The lifetime asked for; 0 or less for the entry's.
    pub ttl_secs: i64,
}

/// Checks a SignX509SVID request.
pub fn x509_svid_request(
    r: pb::SignX509SvidRequest,
    trust_domain: &str,
) -> Result<X509SvidAsk, Status> {
    check_len("spiffe_id", &r.spiffe_id)?;
    spiffe_id(trust_domain, &r.spiffe_id)?;
    Ok(X509SvidAsk {
        spiffe_id: r.spiffe_id,
        public_key: r.public_key,
        ttl_secs: r.ttl_secs,
    })
}

/// A SignJWTSVID request, checked: a SPIFFE ID in `trust_domain`, 1 to 32 audiences.
#[derive(Debug)]
pub struct JwtSvidAsk {
    /// The SPIFFE ID.
    pub spiffe_id: String,
    /// The audiences.
    pub audiences: Vec<String>,
    /// The lifetime asked for; 0 or less for the entry's.
    pub ttl_secs: i64,
}

/// Checks a SignJWTSVID request.
pub fn jwt_svid_request(
    r: pb::SignJwtSvidRequest,
    trust_domain: &str,
) -> Result<JwtSvidAsk, Status> {
    check_len("spiffe_id", &r.spiffe_id)?;
    spiffe_id(trust_domain, &r.spiffe_id)?;
    check_list("audiences", &r.audiences)?;
    if r.audiences.is_empty() {
        return Err(Status::invalid_argument("a JWT-SVID needs an audience"));
    }
    Ok(JwtSvidAsk {
        spiffe_id: r.spiffe_id,
        audiences: r.audiences,
        ttl_secs: r.ttl_secs,
    })
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn get_nonce(
        &self,
        req: Request<pb::GetNonceRequest>,
    ) -> Result<Response<pb::GetNonceResponse>, Status> {
        // No per-address budget: issuing a nonce stores nothing (nonces.rs), and
        // a budget here is what a flood from an agent's own address drained to
        // keep it from opening its session. The calls that use a nonce have
        // budgets: attestation by address, session opening by agent.
        let _ = req;
        let now = now();
        let nonce = self
            .issuer
            .new_nonce(now)
            .ok_or_else(|| Status::unavailable("no random source for a nonce"))?;
        Ok(Response::new(pb::GetNonceResponse {
            nonce: nonce.to_vec(),
            expires_at: to_i64(now + crate::state::NONCE_TTL_SECS),
        }))
    }

    async fn attest(
        &self,
        req: Request<pb::AttestRequest>,
    ) -> Result<Response<pb::AgentCredential>, Status> {
        limit_caller(&self.issuer, &req)?;
        self.not_revoked()?;
        let now = now();
        let AttestAsk {
            key,
            evidence,
            nonce,
            nonce_signature,
        } = attest_request(req.into_inner())?;
        Self::check_proof(&nonce, &key, &nonce_signature, IssuerProof::Attest)?;
        self.use_nonce(&nonce, now, crate::nonces::Taker::Unauthenticated)?;
        let attestor = self
            .issuer
            .attestors
            .iter()
            .find(|a| a.name() == evidence.kind())
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "node attestor {} is not enabled on this issuer",
                    evidence.kind()
                ))
            })?;
        let registry = self.issuer.registry();
        let node = attestor
            .attest(&evidence, &registry, &nonce, &key, now)
            .await
            .map_err(|e| Status::permission_denied(format!("node attestation failed: {e}")))?;
        let agent_id = format!(
            "spiffe://{}/lanyard/agent/{}/{}",
            self.issuer.trust_domain,
            node.attestor(),
            node.name()
        );
        let existing = self
            .issuer
            .store
            .agent(&agent_id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if let Some(a) = existing.filter(|a| a.status != AgentStatus::Active) {
            return Err(Status::permission_denied(format!(
                "agent {agent_id} is {}",
                a.status.as_str()
            )));
        }
        let jwt = self.mint_agent(&agent_id, key, now)?;
        let (jti, exp) = jti_and_exp(&jwt);
        let selectors: Vec<String> = node.selectors().iter().map(ToString::to_string).collect();
        self.issuer
            .store
            .upsert_agent(&AgentRecord {
                id: agent_id.clone(),
                selectors: selectors.clone(),
                status: AgentStatus::Active,
                attested_at: now,
                credential_jti: jti,
                credential_exp: exp,
            })
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        // Serve the new agent from this replica at once; if the store cannot be
        // re-read now, the poll catches up. The credential is already minted and
        // stored, and the join token spent: it must reach the node.
        if let Err(e) = self.refresh(now).await {
            tracing::warn!(error = %e, "refresh after attestation failed");
        }
        tracing::info!(agent = %agent_id, attestor = node.attestor(), "node attested");
        Ok(Response::new(pb::AgentCredential {
            agent_id,
            jwt,
            expires_at: to_i64(exp),
            node_selectors: selectors,
        }))
    }

    async fn open_session(
        &self,
        req: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<pb::OpenSessionResponse>, Status> {
        // Not the unauthenticated per-address budget: known agents open and
        // renew sessions on a budget of their own, charged below once the
        // credential has verified.
        self.not_revoked()?;
        let now = now();
        let verifier = self
            .issuer
            .verifier()
            .ok_or_else(|| Status::unavailable("this replica's deny list does not verify"))?;
        let SessionAsk {
            agent_id,
            jti,
            key,
            expires_at,
            nonce,
            nonce_signature,
        } = open_session_request(req.into_inner(), &verifier, now)?;
        // Another replica may have attested this agent a moment ago.
        if !self.issuer.view().agents.contains_key(&agent_id) {
            self.refresh(now).await?;
        }
        let view = self.issuer.view();
        let agent = view
            .agents
            .get(&agent_id)
            .ok_or_else(|| Status::permission_denied(format!("unknown agent {agent_id}")))?;
        // The credential must be the agent's current one: the jti the issuer
        // minted for this agent, with its key, and has not replaced since. The
        // store decides, not this replica's view: another replica may have
        // renewed it a moment ago, and an old copy must not open a session
        // there. Sessions open rarely, so one read each is cheap.
        let current = self
            .issuer
            .store
            .agent(&agent_id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if current.is_none_or(|a| a.credential_jti != jti) {
            return Err(Status::permission_denied(format!(
                "agent credential {jti} is not {agent_id}'s current credential (superseded or never issued to it)"
            )));
        }
        // In this order: the proof (only the key's holder gets further), the
        // agent's standing, its budget (an old copy of the credential, or a
        // suspended node, cannot drain it), and only then the nonce is used up
        // (so neither can they fill the memory of used nonces).
        Self::check_proof(&nonce, &key, &nonce_signature, IssuerProof::Session)?;
        if agent.status != AgentStatus::Active {
            return Err(Status::permission_denied(format!(
                "agent {agent_id} is {}",
                agent.status.as_str()
            )));
        }
        if !self.issuer.session_limit.allow(&agent_id) {
            return Err(Status::resource_exhausted(format!(
                "session limit for {agent_id} reached; back off"
            )));
        }
        self.use_nonce(&nonce, now, crate::nonces::Taker::Agent(&agent_id))?;
        let session = self
            .issuer
            .open_session(&agent_id, &jti, expires_at, now)
            .ok_or_else(|| Status::unavailable("cannot open a session"))?;
        Ok(Response::new(pb::OpenSessionResponse {
            session,
            expires_at: to_i64(expires_at),
            agent_id,
        }))
    }

    async fn renew_agent(
        &self,
        req: Request<pb::RenewAgentRequest>,
    ) -> Result<Response<pb::AgentCredential>, Status> {
        let now = now();
        let agent = self.signing_session(&req, now)?;
        let RenewAsk {
            key,
            nonce,
            nonce_signature,
        } = renew_agent_request(req.into_inner())?;
        Self::check_proof(&nonce, &key, &nonce_signature, IssuerProof::Renew)?;
        self.use_nonce(&nonce, now, crate::nonces::Taker::Agent(&agent.id))?;
        let jwt = self.mint_agent(&agent.id, key, now)?;
        let (jti, exp) = jti_and_exp(&jwt);
        let record = AgentRecord {
            credential_jti: jti,
            credential_exp: exp,
            ..agent.clone()
        };
        self.issuer
            .store
            .upsert_agent(&record)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::AgentCredential {
            agent_id: agent.id,
            jwt,
            expires_at: to_i64(exp),
            node_selectors: agent.selectors,
        }))
    }

    type SyncStream = ReceiverStream<Result<pb::SyncResponse, Status>>;

    async fn sync(
        &self,
        req: Request<pb::SyncRequest>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let agent = self.session(&req, now())?;
        let session_id = req
            .metadata()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let since = sync_request(&req.into_inner());
        let (tx, rx) = mpsc::channel(4);
        let (issuer, mut shutdown) = (self.issuer.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            let mut views = issuer.subscribe();
            let mut sent = since;
            let mut first = true;
            // What the agent last got, so an unrelated store change (another
            // agent's renewal) sends it nothing.
            let (mut last_deny, mut last_jwks) = (String::new(), Vec::new());
            loop {
                let view = views.borrow_and_update().clone();
                if let Err(e) = issuer.session(&session_id, now()) {
                    // This replica's own chain was revoked: before it stops
                    // serving, it hands its agents the list that says so and the
                    // bundle without its keys and CA, so they stop trusting it
                    // and what it signed now, not when a sibling next reaches them.
                    if matches!(e, SessionError::ChainRevoked) {
                        let msg = delta(&view, sent, &agent.selectors, bundle(&issuer, &view));
                        if msg.deny_list != last_deny {
                            let _ = tx.send(Ok(msg)).await;
                        }
                    }
                    let status = match e {
                        SessionError::Refused(..) => Status::permission_denied(e.to_string()),
                        SessionError::ChainRevoked => Status::unavailable(e.to_string()),
                        SessionError::CredentialRevoked => Status::unauthenticated(e.to_string()),
                        _ => Status::unauthenticated(e.to_string()),
                    };
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                if first || view.revision != sent {
                    let msg = delta(&view, sent, &agent.selectors, bundle(&issuer, &view));
                    sent = view.revision;
                    let news = first
                        || !msg.entries.is_empty()
                        || !msg.deleted_entry_ids.is_empty()
                        || msg.deny_list != last_deny
                        || msg.bundle.as_ref().is_some_and(|b| b.jwks != last_jwks);
                    first = false;
                    if news {
                        last_deny.clone_from(&msg.deny_list);
                        if let Some(b) = &msg.bundle {
                            last_jwks.clone_from(&b.jwks);
                        }
                        if tx.send(Ok(msg)).await.is_err() {
                            return;
                        }
                    }
                }
                tokio::select! {
                    r = views.changed() => if r.is_err() { return },
                    _ = shutdown.wait_for(|s| *s) => return,
                    () = tx.closed() => return,
                    // Re-check the session (expiry) now and then even when idle.
                    () = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn sign_credential(
        &self,
        req: Request<pb::SignCredentialRequest>,
    ) -> Result<Response<pb::SignCredentialResponse>, Status> {
        let now = now();
        let agent = self.signing_session(&req, now)?;
        let r = sign_credential_request(req.into_inner())?;
        let view = self.issuer.view();
        let entry = scoped(&view, &r.subject, &agent)?;
        let (mut want, mut have) = (r.networks.clone(), entry.networks.clone());
        want.sort();
        have.sort();
        if want != have {
            return Err(Status::permission_denied(format!(
                "networks {want:?} differ from the entry's {have:?}"
            )));
        }
        let mut leaf = LeafRequest::workload(r.subject, r.holder, ttl(r.ttl_secs, entry.ttl_secs));
        leaf.audiences = r.audiences;
        leaf.networks = r.networks;
        leaf.clamp_to_issuer = true;
        // Names its broker: revoking this agent revokes the credential.
        leaf.agent_id = Some(agent.id.clone());
        if !r.attrs.is_empty() {
            leaf.attrs.insert("selectors".into(), r.attrs.into());
        }
        let jwt = self
            .issuer
            .authority
            .chain()
            .mint(&leaf, now)
            .map_err(mint_err)?;
        let (_, exp) = jti_and_exp(&jwt);
        Ok(Response::new(pb::SignCredentialResponse {
            jwt,
            expires_at: to_i64(exp),
        }))
    }

    async fn sign_x509_svid(
        &self,
        req: Request<pb::SignX509SvidRequest>,
    ) -> Result<Response<pb::SignX509SvidResponse>, Status> {
        let now = now();
        let agent = self.signing_session(&req, now)?;
        let r = x509_svid_request(req.into_inner(), &self.issuer.trust_domain)?;
        let view = self.issuer.view();
        let entry = scoped(&view, &r.spiffe_id, &agent)?;
        self.issuer
            .authority
            .within_grant(&r.spiffe_id)
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        let (chain, exp) = self
            .issuer
            .authority
            .x509()
            .certify_p256(
                &r.spiffe_id,
                &r.public_key,
                now,
                ttl(r.ttl_secs, entry.ttl_secs),
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::SignX509SvidResponse {
            chain,
            expires_at: to_i64(exp),
        }))
    }

    async fn sign_jwt_svid(
        &self,
        req: Request<pb::SignJwtSvidRequest>,
    ) -> Result<Response<pb::SignJwtSvidResponse>, Status> {
        let now = now();
        let agent = self.signing_session(&req, now)?;
        let r = jwt_svid_request(req.into_inner(), &self.issuer.trust_domain)?;
        let view = self.issuer.view();
        let entry = scoped(&view, &r.spiffe_id, &agent)?;
        self.issuer
            .authority
            .within_grant(&r.spiffe_id)
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        let exp = now
            .saturating_add(ttl(r.ttl_secs, entry.ttl_secs))
            .min(self.issuer.authority.chain().expires_at());
        let token = self
            .issuer
            .authority
            .jwt_signer()
            .sign(&r.spiffe_id, &r.audiences, now, exp, Some(&agent.id))
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::SignJwtSvidResponse {
            token,
            expires_at: to_i64(exp),
        }))
    }
}

/// The trust bundle agents publish: the org root and every replica's JWT-SVID key.
fn bundle(issuer: &Issuer, view: &View) -> pb::Bundle {
    let local = issuer.authority.bundle();
    pb::Bundle {
        trust_domain: issuer.trust_domain.clone(),
        // The live chains' CA certificates, so a revoked chain drops out; the
        // org root when the operator asked for it (a rolling upgrade).
        x509_roots: if issuer.x509_chain_roots {
            view.x509_roots.clone()
        } else {
            local.x509_roots
        },
        jwks: view.jwks.clone(),
        org_public: local.org_public,
    }
}

/// What an agent at revision `since` is missing from `view`, within its scope.
fn delta(
    view: &View,
    since: i64,
    node_selectors: &[String],
    bundle: pb::Bundle,
) -> pb::SyncResponse {
    let full = since <= 0 || since > view.revision;
    let entries = view
        .entries
        .changed_since(if full { i64::MIN } else { since })
        .filter(|e| View::in_scope(e, node_selectors))
        .map(to_pb)
        .collect();
    let deleted_entry_ids = if full {
        Vec::new()
    } else {
        view.entries
            .tombstones()
            .filter(|(_, rev)| *rev > since)
            .map(|(id, _)| id.to_owned())
            .collect()
    };
    pb::SyncResponse {
        revision: view.revision,
        full,
        entries,
        deleted_entry_ids,
        bundle: Some(bundle),
        deny_list: view.deny_list.clone(),
    }
}

/// The wire form of an entry.
pub fn to_pb(e: &crate::store::EntryRecord) -> pb::Entry {
    pb::Entry {
        id: e.id.clone(),
        subject: e.subject.clone(),
        selectors: e.selectors.clone(),
        node_selectors: e.node_selectors.clone(),
        ttl_secs: to_i64(e.ttl_secs),
        audiences: e.audiences.clone(),
        networks: e.networks.clone(),
        revision: e.revision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EntryRecord;

    fn entry(id: &str, node: &str, revision: i64) -> EntryRecord {
        EntryRecord {
            id: id.into(),
            subject: format!("spiffe://example.org/{id}"),
            selectors: vec!["unix:uid:1".into()],
            node_selectors: vec![node.into()],
            ttl_secs: 60,
            audiences: vec![],
            networks: vec![],
            revision,
            deleted: false,
        }
    }

    fn view() -> View {
        let mut v = View {
            revision: 9,
            ..View::default()
        };
        for e in [
            entry("a", "join:name:n1", 3),
            entry("b", "join:name:n2", 5),
            entry("c", "join:name:n1", 8),
        ] {
            v.entries.apply(e);
        }
        for (id, revision) in [("old", 4), ("gone", 9)] {
            v.entries.apply(EntryRecord {
                deleted: true,
                ..entry(id, "join:name:n1", revision)
            });
        }
        v
    }

    #[test]
    fn sync_is_full_at_first_then_incremental_and_always_scoped() {
        let v = view();
        let n1 = ["join:name:n1".to_owned(), "x:y:z".to_owned()];
        let ids = |r: &pb::SyncResponse| r.entries.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        let full = delta(&v, 0, &n1, pb::Bundle::default());
        assert!(full.full);
        assert_eq!(ids(&full), ["a", "c"]);
        assert!(full.deleted_entry_ids.is_empty());
        let inc = delta(&v, 4, &n1, pb::Bundle::default());
        assert!(!inc.full);
        assert_eq!(ids(&inc), ["c"]);
        assert_eq!(inc.deleted_entry_ids, ["gone"]);
        // An agent ahead of the store (another store, a restore): a full resend.
        assert!(delta(&v, 99, &n1, pb::Bundle::default()).full);
        // Another node sees only its own.
        assert_eq!(
            ids(&delta(
                &v,
                0,
                &["join:name:n2".to_owned()],
                pb::Bundle::default()
            )),
            ["b"]
        );
    }

    #[test]
    fn signing_scope_follows_node_selectors_not_what_the_agent_asks() {
        let mut v = view();
        let mut t = entry("t", "join:name:n1", 9);
        t.subject = "spiffe://example.org/ns/{k8s:ns}".into();
        v.entries.apply(t);
        let n1 = ["join:name:n1".to_owned()];
        assert!(v
            .scoped_entry("spiffe://example.org/ns/shop", &n1)
            .is_some());
        assert!(v
            .scoped_entry("spiffe://example.org/ns/shop/x", &n1)
            .is_none());
        assert!(v
            .scoped_entry("spiffe://example.org/ns/shop", &["join:name:n2".to_owned()])
            .is_none());
        let n1 = ["join:name:n1".to_owned()];
        assert!(v.scoped_entry("spiffe://example.org/a", &n1).is_some());
        assert!(v.scoped_entry("spiffe://example.org/b", &n1).is_none());
        assert!(v.scoped_entry("spiffe://example.org/nope", &n1).is_none());
    }
}
