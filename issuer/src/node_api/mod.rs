//! `lanyard.issuer.v1.Node`: what agents call, over TLS.
//!
//! Unauthenticated calls (nonce, attest, open session) are rate limited per
//! caller address. Everything else needs a session, which only a fresh nonce
//! signature with the agent's seed opens; each call re-checks the agent's
//! standing, so a suspension or revocation takes effect within one store poll.

mod handlers;
mod requests;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use lanyard_proto::issuer as pb;
use lanyard_token::pop::{issuer_proof_message, IssuerProof};
use lanyard_token::{LeafRequest, PublicKey};
use tokio::sync::watch;
use tonic::{Request, Status};

use lanyard_runtime::authority::Authority as _;

use crate::state::{Issuer, SessionError, View};
use crate::store::AgentRecord;
pub use requests::{
    attest_request, jwt_svid_request, open_session_request, renew_agent_request,
    sign_credential_request, sync_request, x509_svid_request, AttestAsk, CredentialAsk, JwtSvidAsk,
    RenewAsk, SessionAsk, X509SvidAsk,
};

/// Metadata that carries the session id.
pub const SESSION_HEADER: &str = "lanyard-session";

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
