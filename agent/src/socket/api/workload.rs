//! `lanyard.workload.v1.Credentials`: seed + chained JWT credentials.

use std::sync::Arc;

use lanyard_proto::workload::{
    credentials_server::Credentials, Credential, FetchCredentialsRequest, FetchCredentialsResponse,
    GetNonceRequest, GetNonceResponse, SignPublicKeyRequest, SignPublicKeyResponse,
};
use lanyard_token::{pop, PublicKey};
use tonic::{Request, Response, Status};

use super::{now, Ctx, Stream};
use crate::authority::CredentialRequest;
use crate::cache::{Kind, Value};

/// How long a SignPublicKey nonce lives.
const NONCE_TTL_SECS: u64 = 60;
/// Outstanding nonces at most, in all.
const MAX_NONCES: usize = 4096;
/// Outstanding nonces at most per process, so that one caller cannot use up the
/// store for everyone else.
const MAX_NONCES_PER_PID: usize = 16;

/// The service.
#[derive(Debug, Clone)]
pub struct CredentialsService(pub Arc<Ctx>);

/// The extra audiences a FetchCredentials request asks for (each entry's own
/// audiences come first).
pub fn fetch_credentials_request(r: FetchCredentialsRequest) -> Vec<String> {
    r.audiences
}

/// A SignPublicKey request, once checked: the key parsed and its proof of
/// possession over the nonce verified. Whose nonce it is, the handler checks
/// first (a nonce is used up even by a malformed request).
#[derive(Debug, Clone)]
pub struct SignPublicKeyAsk {
    /// The key to certify, proven held.
    pub key: PublicKey,
    /// The subject asked for; `None` when the caller has only one.
    pub subject: Option<String>,
    /// Audiences beyond the entry's.
    pub audiences: Vec<String>,
}

/// Checks a SignPublicKey request: a hex ed25519 key (`InvalidArgument`) that
/// signed the nonce (`PermissionDenied`).
pub fn sign_public_key_request(r: SignPublicKeyRequest) -> Result<SignPublicKeyAsk, Status> {
    let key = PublicKey::from_hex(&r.public_key, false)
        .map_err(|e| Status::invalid_argument(format!("public_key: {e}")))?;
    pop::check(&key, r.nonce.as_bytes(), &r.signature)
        .map_err(|e| Status::permission_denied(format!("proof of possession: {e}")))?;
    Ok(SignPublicKeyAsk {
        key,
        subject: (!r.subject.is_empty()).then_some(r.subject),
        audiences: r.audiences,
    })
}

#[tonic::async_trait]
impl Credentials for CredentialsService {
    type FetchCredentialsStream = Stream<FetchCredentialsResponse>;

    async fn fetch_credentials(
        &self,
        req: Request<FetchCredentialsRequest>,
    ) -> Result<Response<Self::FetchCredentialsStream>, Status> {
        const RPC: &str = "FetchCredentials";
        let (peer, attested) = self.0.authorize(&req, RPC).await?;
        let extra = fetch_credentials_request(req.into_inner());
        let stream = self.0.stream(RPC, peer, move |ctx| {
            let (attested, extra) = (attested.clone(), extra.clone());
            async move {
                let org_public = ctx.authority.bundle().org_public;
                let mut credentials = Vec::new();
                for e in attested.entries() {
                    let auds = e.audiences.iter().chain(&extra).cloned();
                    let s = ctx.credential(Kind::Credential, e, auds, &attested).await?;
                    if let Value::Credential { seed, jwt } = &s.value {
                        credentials.push(Credential {
                            subject: e.subject.clone(),
                            seed: seed.to_string(),
                            jwt: jwt.clone(),
                            org_public: org_public.clone(),
                            expires_at: i64::try_from(s.expires_at).unwrap_or(i64::MAX),
                        });
                    }
                }
                Ok(FetchCredentialsResponse { credentials })
            }
        });
        Ok(Response::new(stream))
    }

    async fn get_nonce(
        &self,
        req: Request<GetNonceRequest>,
    ) -> Result<Response<GetNonceResponse>, Status> {
        const RPC: &str = "GetNonce";
        let (peer, _) = self.0.authorize(&req, RPC).await?;
        let nonce = pop::new_nonce().map_err(|e| Status::internal(e.to_string()))?;
        let now = now();
        {
            let mut n = self
                .0
                .nonces
                .lock()
                .map_err(|_| Status::internal("nonce store poisoned"))?;
            n.retain(|_, (_, exp)| *exp > now);
            let pid = peer.process().pid;
            if n.values().filter(|(p, _)| *p == pid).count() >= MAX_NONCES_PER_PID {
                self.0.metrics.request(RPC, tonic::Code::ResourceExhausted);
                return Err(Status::resource_exhausted(
                    "too many outstanding nonces for this process",
                ));
            }
            if n.len() >= MAX_NONCES {
                self.0.metrics.request(RPC, tonic::Code::ResourceExhausted);
                return Err(Status::resource_exhausted("too many outstanding nonces"));
            }
            n.insert(nonce.clone(), (peer.process().pid, now + NONCE_TTL_SECS));
        }
        self.0.recheck(RPC, &peer)?;
        self.0.metrics.request(RPC, tonic::Code::Ok);
        Ok(Response::new(GetNonceResponse { nonce }))
    }

    async fn sign_public_key(
        &self,
        req: Request<SignPublicKeyRequest>,
    ) -> Result<Response<SignPublicKeyResponse>, Status> {
        const RPC: &str = "SignPublicKey";
        let (peer, attested) = self.0.authorize(&req, RPC).await?;
        let r = req.into_inner();
        // The nonce is single use and bound to the process that asked for it.
        let owner = self
            .0
            .nonces
            .lock()
            .ok()
            .and_then(|mut n| n.remove(&r.nonce));
        match owner {
            Some((pid, exp)) if pid == peer.process().pid && exp > now() => {}
            _ => {
                return Err(Status::permission_denied(
                    "unknown, expired or foreign nonce",
                ))
            }
        }
        let ask = sign_public_key_request(r)?;
        let entry = match (&ask.subject, attested.entries()) {
            (None, [only]) => only,
            (None, _) => {
                return Err(Status::invalid_argument(
                    "caller has several identities: name the subject",
                ))
            }
            (Some(subject), all) => all
                .iter()
                .find(|e| e.subject == *subject)
                .ok_or_else(|| Status::permission_denied("subject not issued to this process"))?,
        };
        let key = ask.key;
        let mut audiences: Vec<String> = entry
            .audiences
            .iter()
            .chain(&ask.audiences)
            .cloned()
            .collect();
        audiences.sort();
        audiences.dedup();
        let creq = CredentialRequest {
            subject: entry.subject.clone(),
            audiences,
            networks: entry.networks.clone(),
            ttl_secs: entry.ttl_secs,
            attrs: attested
                .selectors()
                .iter()
                .map(ToString::to_string)
                .collect(),
        };
        let (jwt, exp) = self
            .0
            .authority
            .mint_credential(&creq, key, now())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        self.0.recheck(RPC, &peer)?;
        self.0.metrics.request(RPC, tonic::Code::Ok);
        Ok(Response::new(SignPublicKeyResponse {
            subject: entry.subject.clone(),
            jwt,
            org_public: self.0.authority.bundle().org_public,
            expires_at: i64::try_from(exp).unwrap_or(i64::MAX),
        }))
    }
}
