//! The `lanyard.issuer.v1.Node` handlers, one per RPC. Kept apart from the
//! service's shared helpers (sessions, nonces, scoping, sync deltas) they call.

use lanyard_proto::issuer as pb;
use lanyard_proto::issuer::node_server::Node;
use lanyard_token::pop::IssuerProof;
use lanyard_token::LeafRequest;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    attest_request, bundle, delta, jti_and_exp, jwt_svid_request, limit_caller, mint_err, now,
    open_session_request, renew_agent_request, scoped, sign_credential_request, sync_request,
    to_i64, ttl, x509_svid_request, AttestAsk, NodeService, RenewAsk, SessionAsk, SESSION_HEADER,
};
use crate::state::SessionError;
use crate::store::{AgentRecord, AgentStatus};

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
