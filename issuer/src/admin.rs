//! `lanyard.issuer.v1.Admin` on the local admin socket (0660). Only root, the
//! issuer's own user, or members of its group (the socket's mode decides) reach it;
//! each call also checks the caller's kernel-reported uid/gid.

use std::sync::Arc;

use lanyard_plugins::node::join_token;
use lanyard_plugins::Selector;
use lanyard_proto::issuer as pb;
use lanyard_proto::issuer::admin_server::Admin;
use lanyard_runtime::peer::Peer;
use lanyard_token::{duration, subject};
use tonic::{Request, Response, Status};

use crate::node_api::to_pb;
use crate::state::Issuer;
use crate::store::{AgentStatus, Denial, NewEntry, StoreError};

/// Longest join token lifetime.
pub const MAX_JOIN_TOKEN_TTL_SECS: u64 = 7 * 86_400;

/// The Admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    /// Shared state.
    pub issuer: Arc<Issuer>,
}

fn store_err(e: StoreError) -> Status {
    match e {
        StoreError::Conflict(m) => Status::already_exists(m),
        StoreError::Invalid(m) => Status::invalid_argument(m),
        e => Status::unavailable(e.to_string()),
    }
}

fn authorize<T>(req: &Request<T>) -> Result<(), Status> {
    let peer = req
        .extensions()
        .get::<Arc<Peer>>()
        .ok_or_else(|| Status::permission_denied("unknown caller"))?;
    let p = peer.process();
    let me = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    if p.uid == 0 || p.uid == me.0 || p.gid == me.1 {
        Ok(())
    } else {
        Err(Status::permission_denied(
            "the admin socket is for root and the issuer's user or group",
        ))
    }
}

fn now() -> u64 {
    lanyard_runtime::clock::now()
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn selectors(what: &str, v: &[String]) -> Result<Vec<String>, Status> {
    // Workload selectors must be ones an attestor derives; node selectors
    // come from node attestors, checked by shape.
    let parse = if what == "selector" {
        Selector::parse_workload
    } else {
        Selector::parse
    };
    let mut out = v
        .iter()
        .map(|s| {
            parse(s)
                .map(|s| s.to_string())
                .map_err(|e| Status::invalid_argument(format!("{what} {s:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

impl AdminService {
    async fn changed(&self) {
        // Serve the change from this replica at once; others see it on their next poll.
        if let Err(e) = self.issuer.refresh(now()).await {
            tracing::warn!(error = %e, "refresh after an admin change failed");
        }
    }
}

// What each request turns into before the handler touches the store: pure
// functions of the message (and the trust domain), so that the fuzzer
// (`lanyard_issuer::fuzzing`) runs exactly the server's code.

/// Checks an entry: a valid subject or template in `trust_domain`, at least one
/// selector and one node selector (sorted, deduplicated), a non-negative TTL (0
/// for the default).
pub fn entry_request(e: &pb::Entry, trust_domain: &str) -> Result<NewEntry, Status> {
    let td = trust_domain;
    // `{trust_domain}` is filled now; `{type:key}` per caller, by the agent.
    let subject = e.subject.replace("{trust_domain}", td);
    if lanyard_plugins::template::is_template(&subject) {
        lanyard_plugins::template::validate(&subject, td)
            .map_err(|x| Status::invalid_argument(format!("subject {:?}: {x}", e.subject)))?;
    } else {
        subject::validate(&subject)
            .map_err(|x| Status::invalid_argument(format!("subject {:?}: {x}", e.subject)))?;
    }
    if let Some(rest) = subject.strip_prefix("spiffe://") {
        if rest.split('/').next() != Some(td) {
            return Err(Status::invalid_argument(format!(
                "subject {} is outside trust domain {td}",
                e.subject
            )));
        }
    }
    let sel = selectors("selector", &e.selectors)?;
    let node = selectors("node selector", &e.node_selectors)?;
    if sel.is_empty() {
        return Err(Status::invalid_argument(
            "an entry needs at least one selector (it would match every process)",
        ));
    }
    if node.is_empty() {
        return Err(Status::invalid_argument(
            "an entry needs at least one node selector (it would reach every agent)",
        ));
    }
    let ttl_secs = match u64::try_from(e.ttl_secs) {
        Ok(0) => lanyard_runtime::config::DEFAULT_TTL_SECS,
        Ok(t) => t,
        Err(_) => return Err(Status::invalid_argument("ttl must be positive")),
    };
    Ok(NewEntry {
        subject,
        selectors: sel,
        node_selectors: node,
        ttl_secs,
        audiences: e.audiences.clone(),
        networks: e.networks.clone(),
    })
}

/// A CreateJoinToken request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenAsk {
    /// Lifetime: 1 s to [`MAX_JOIN_TOKEN_TTL_SECS`] (600 when the request says 0).
    pub ttl_secs: u64,
    /// The node name; `None` to derive one from the token's hash.
    pub name: Option<String>,
}

/// Checks a CreateJoinToken request.
pub fn join_token_request(r: pb::CreateJoinTokenRequest) -> Result<JoinTokenAsk, Status> {
    let ttl_secs = match u64::try_from(r.ttl_secs) {
        Ok(0) => 600,
        Ok(t) if t <= MAX_JOIN_TOKEN_TTL_SECS => t,
        _ => {
            return Err(Status::invalid_argument(format!(
                "ttl must be between 1s and {}",
                duration::format_secs(MAX_JOIN_TOKEN_TTL_SECS)
            )))
        }
    };
    let name = (!r.name.is_empty()).then_some(r.name);
    if let Some(name) = &name {
        node_name(name)?;
    }
    Ok(JoinTokenAsk { ttl_secs, name })
}

fn node_name(name: &str) -> Result<(), Status> {
    if lanyard_plugins::node::device::valid_name(name) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "name {name:?}: use 1-128 of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// Checks an AllowNode request: a valid node name and a hex ed25519 key.
pub fn allow_node_request(
    r: &pb::AllowNodeRequest,
) -> Result<(String, lanyard_token::PublicKey), Status> {
    node_name(&r.name)?;
    let key = lanyard_token::PublicKey::from_hex(r.public_key.trim(), false)
        .map_err(|e| Status::invalid_argument(format!("public key: {e}")))?;
    Ok((r.name.clone(), key))
}

/// Checks a SetAgentStatus request: `active`, `suspended` or `revoked`.
pub fn agent_status_request(r: pb::SetAgentStatusRequest) -> Result<(String, AgentStatus), Status> {
    let status = AgentStatus::parse(&r.status)
        .ok_or_else(|| Status::invalid_argument("status must be active, suspended or revoked"))?;
    Ok((r.id, status))
}

/// Checks a Revoke request: a jti or a chain id of 1 to 64 bytes.
pub fn revoke_request(r: pb::RevokeRequest) -> Result<Denial, Status> {
    match r.what {
        Some(pb::revoke_request::What::Jti(j)) if !j.is_empty() && j.len() <= 64 => {
            Ok(Denial::Jti(j))
        }
        Some(pb::revoke_request::What::ChainId(c)) if !c.is_empty() && c.len() <= 64 => {
            Ok(Denial::Chain(c))
        }
        _ => Err(Status::invalid_argument("name a jti or a chain id")),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_join_token(
        &self,
        req: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
        authorize(&req)?;
        let ask = join_token_request(req.into_inner())?;
        let (token, hash) = join_token::generate().map_err(|e| Status::internal(e.to_string()))?;
        // A stable, unguessable-enough default: the hash prefix (not the token).
        let name = ask
            .name
            .unwrap_or_else(|| format!("node-{}", hash.get(..12).unwrap_or(&hash)));
        node_name(&name)?;
        let expires_at = now() + ask.ttl_secs;
        self.issuer
            .store
            .create_join_token(&hash, &name, expires_at)
            .await
            .map_err(store_err)?;
        Ok(Response::new(pb::CreateJoinTokenResponse {
            token,
            name,
            expires_at: to_i64(expires_at),
        }))
    }

    async fn allow_node(
        &self,
        req: Request<pb::AllowNodeRequest>,
    ) -> Result<Response<pb::AllowNodeResponse>, Status> {
        authorize(&req)?;
        let (name, key) = allow_node_request(req.get_ref())?;
        self.issuer
            .store
            .allow_device(&name, &key.to_hex())
            .await
            .map_err(store_err)?;
        Ok(Response::new(pb::AllowNodeResponse {}))
    }

    async fn create_entry(&self, req: Request<pb::Entry>) -> Result<Response<pb::Entry>, Status> {
        authorize(&req)?;
        let e = entry_request(req.get_ref(), &self.issuer.trust_domain)?;
        // The same identity for the same workload on the same nodes twice is a
        // mistake (a re-run script), not a second grant. Both selector lists
        // are sorted and de-duplicated, by `entry_request` and in the store.
        self.changed().await;
        if let Some(dup) = self.issuer.view().entries.live().find(|r| {
            r.subject == e.subject
                && r.selectors == e.selectors
                && r.node_selectors == e.node_selectors
        }) {
            return Err(Status::already_exists(format!(
                "entry {} already gives {} to these selectors on these nodes",
                dup.id, e.subject
            )));
        }
        let rec = self
            .issuer
            .store
            .create_entry(&e)
            .await
            .map_err(store_err)?;
        self.changed().await;
        Ok(Response::new(to_pb(&rec)))
    }

    async fn list_entries(
        &self,
        req: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        authorize(&req)?;
        self.changed().await;
        let view = self.issuer.view();
        Ok(Response::new(pb::ListEntriesResponse {
            entries: view.entries.live().map(to_pb).collect(),
        }))
    }

    async fn delete_entry(
        &self,
        req: Request<pb::DeleteEntryRequest>,
    ) -> Result<Response<pb::DeleteEntryResponse>, Status> {
        authorize(&req)?;
        let id = req.into_inner().id;
        if !self
            .issuer
            .store
            .delete_entry(&id)
            .await
            .map_err(store_err)?
        {
            return Err(Status::not_found(format!("no entry {id}")));
        }
        self.changed().await;
        Ok(Response::new(pb::DeleteEntryResponse {}))
    }

    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        authorize(&req)?;
        let agents = self.issuer.store.agents().await.map_err(store_err)?;
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents
                .into_iter()
                .map(|a| pb::Agent {
                    id: a.id,
                    selectors: a.selectors,
                    status: a.status.as_str().into(),
                    attested_at: to_i64(a.attested_at),
                    credential_jti: a.credential_jti,
                    credential_expires_at: to_i64(a.credential_exp),
                })
                .collect(),
        }))
    }

    async fn set_agent_status(
        &self,
        req: Request<pb::SetAgentStatusRequest>,
    ) -> Result<Response<pb::SetAgentStatusResponse>, Status> {
        authorize(&req)?;
        let (id, status) = agent_status_request(req.into_inner())?;
        if status == AgentStatus::Revoked {
            // Revoking also denies the agent's current credential, so verifiers
            // elsewhere refuse it too, not only this issuer.
            if let Some(a) = self.issuer.store.agent(&id).await.map_err(store_err)? {
                if !a.credential_jti.is_empty() {
                    self.issuer
                        .store
                        .deny(&Denial::Jti(a.credential_jti))
                        .await
                        .map_err(store_err)?;
                }
            }
        }
        match self.issuer.store.set_agent_status(&id, status).await {
            Ok(true) => {}
            Ok(false) => return Err(Status::not_found(format!("no agent {id}"))),
            Err(StoreError::Conflict(m)) => return Err(Status::failed_precondition(m)),
            Err(e) => return Err(store_err(e)),
        }
        self.changed().await;
        Ok(Response::new(pb::SetAgentStatusResponse {}))
    }

    async fn revoke(
        &self,
        req: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        authorize(&req)?;
        let denial = revoke_request(req.into_inner())?;
        let revision = self.issuer.store.deny(&denial).await.map_err(store_err)?;
        self.changed().await;
        Ok(Response::new(pb::RevokeResponse { revision }))
    }
}
