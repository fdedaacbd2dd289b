//! Checking each Node request before its handler consults any state. Kept apart
//! from the handlers so that the fuzzer's entry points are visibly the server's
//! own stateless code and nothing more.

use lanyard_plugins::node::NodeEvidence;
use lanyard_proto::issuer as pb;
use lanyard_token::PublicKey;
use tonic::Status;

// What each request turns into before the handler consults any state: pure
// functions of the message (and, for OpenSession, the verifier and the time),
// so that the fuzzer (`lanyard_issuer::fuzzing`) runs exactly the server's code.

/// Longest agent-chosen string (subject, audience, selector) accepted.
const MAX_FIELD: usize = 2048;
/// Most audiences, networks or attrs in one request.
const MAX_ITEMS: usize = 32;

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
