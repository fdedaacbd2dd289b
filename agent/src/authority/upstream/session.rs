//! Sessions with the issuer: node attestation (the agent credential),
//! renewal past half-life with a new key, sessions opened with a proof of
//! possession and replaced before they end, and calls retried once on a new
//! session.

use super::*;

impl UpstreamAuthority {
    pub(super) async fn connect(&self) -> Result<(Channel, String), UpstreamError> {
        let n = self.cfg.addresses.len().max(1);
        let mut last = UpstreamError::NoAddress;
        for i in 0..n {
            let idx = (self.next_addr.load(Ordering::Relaxed) + i) % n;
            let addr = &self.cfg.addresses[idx];
            match crate::tls::channel(addr, self.tls.clone()).await {
                Ok(ch) => {
                    self.next_addr.store(idx, Ordering::Relaxed);
                    return Ok((ch, addr.clone()));
                }
                Err(source) => {
                    last = UpstreamError::Connect {
                        addr: addr.clone(),
                        source,
                    }
                }
            }
        }
        // Start the next round at the following address.
        self.next_addr.fetch_add(1, Ordering::Relaxed);
        Err(last)
    }

    pub(super) fn client(ch: &Channel) -> NodeClient<Channel> {
        NodeClient::new(ch.clone()).max_decoding_message_size(MAX_SYNC_BYTES)
    }

    pub(super) async fn nonce(ch: &Channel) -> Result<Vec<u8>, UpstreamError> {
        Ok(Self::client(ch)
            .get_nonce(pb::GetNonceRequest {})
            .await
            .map_err(status_err)?
            .into_inner()
            .nonce)
    }

    pub(super) async fn attest(&self, ch: &Channel) -> Result<AgentCredential, UpstreamError> {
        let key = KeyPair::generate()?;
        let evidence = match &self.cfg.evidence {
            NodeEvidence::JoinToken(t) => Evidence::JoinToken(t.clone()),
            NodeEvidence::Device { seed, name } => {
                let text =
                    crate::fsutil::read_seed_text(seed).map_err(|source| UpstreamError::File {
                        path: seed.clone(),
                        source,
                    })?;
                let device = KeyPair::from_seed_text(&text)?;
                Evidence::Device {
                    name: name.clone(),
                    key: Box::new(device),
                }
            }
            NodeEvidence::PsatTokenFile(p) => {
                // Re-read each time: the kubelet rotates projected tokens.
                let t = std::fs::read_to_string(p).map_err(|source| UpstreamError::File {
                    path: p.clone(),
                    source,
                })?;
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

    pub(super) fn accept_agent(
        &self,
        key: KeyPair,
        r: pb::AgentCredential,
    ) -> Result<AgentCredential, UpstreamError> {
        let (id, iat, exp) = self.check_agent_jwt(&r.jwt)?;
        if self.jwt_holder(&r.jwt) != key.public().to_hex() {
            return Err(AgentCredentialError::OtherKey.into());
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

    pub(super) async fn open_session(&self, ch: &Channel) -> Result<Link, UpstreamError> {
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
    pub(super) async fn session(&self) -> Result<Link, UpstreamError> {
        let mut guard = self.link.lock().await;
        if let Some(l) = guard.as_ref().filter(|l| l.usable(now())) {
            return Ok(l.clone());
        }
        let (ch, addr) = self.connect().await?;
        let link = match self.open_session(&ch).await {
            Err(UpstreamError::Refused(m))
                if m.message().contains("agent credential")
                    && !matches!(self.cfg.evidence, NodeEvidence::JoinToken(_)) =>
            {
                // The credential was refused (revoked jti, unknown chain): a node
                // that can prove itself again does so.
                tracing::warn!(reason = %m.message(), "agent credential refused; attesting again");
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

    pub(super) async fn forget_link(&self) {
        *self.link.lock().await = None;
    }

    /// Runs `call` with a session; on an unknown session (issuer restarted,
    /// another replica) opens a new one once.
    pub(super) async fn call_in_session<T>(
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
        Err(UpstreamError::SessionRefusedTwice)
    }

    /// Renews the agent credential past its half-life, with a new key.
    pub(super) async fn renew_if_due(&self) -> Result<(), UpstreamError> {
        let Some(a) = self.agent.lock().ok().and_then(|a| a.clone()) else {
            return Ok(());
        };
        let half = a.issued_at + (a.expires_at.saturating_sub(a.issued_at)) / 2;
        if now() < half {
            return Ok(());
        }
        let link = self.session().await?;
        let key = KeyPair::generate()?;
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
