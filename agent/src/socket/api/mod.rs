//! The gRPC services on the agent socket and what they share: the security
//! header, the caller's pinned peer, attestation, and the last-moment recheck.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tonic::{Request, Status};

use crate::attest::{AttestedWorkload, Pipeline, PipelineError};
use crate::authority::Authority;
use crate::cache::{Cache, Key, Kind, Spec, Stored};
use crate::config::Entry;
use crate::metrics::Metrics;
use crate::peer::Peer;

pub mod spiffe;
pub mod workload;

/// The header every Workload API call must carry (SPIFFE Workload API spec).
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// Everything the services need.
#[derive(Debug)]
pub struct Ctx {
    /// Attestors and entries.
    pub pipeline: Arc<Pipeline>,
    /// The credential cache.
    pub cache: Arc<Cache>,
    /// The signer.
    pub authority: Arc<dyn Authority>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Becomes true on shutdown; streams end.
    pub shutdown: watch::Receiver<bool>,
    /// Outstanding SignPublicKey nonces: nonce → (pid, expiry).
    pub nonces: Mutex<HashMap<String, (i32, u64)>>,
    /// Connection and stream budgets (watch streams are counted here).
    pub admission: Arc<crate::admission::Admission>,
}

/// Unix seconds now (the one clock, in the runtime).
pub use crate::clock::now;

/// A boxed response stream.
pub type Stream<T> = Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send>>;

impl Ctx {
    /// Header, peer and attestation, in that order; fails closed.
    pub async fn authorize<T>(
        &self,
        req: &Request<T>,
        rpc: &'static str,
    ) -> Result<(Arc<Peer>, AttestedWorkload), Status> {
        let peer = self.check_header(req, rpc)?;
        let (res, secs) = self.pipeline.attest(&peer).await;
        self.metrics.attestation(secs);
        let attested = res.map_err(|e| {
            let status = match &e {
                PipelineError::Attestor {
                    source: lanyard_plugins::AttestError::ProcessGone(_),
                    ..
                }
                | PipelineError::Changed(_) => Status::unauthenticated(e.to_string()),
                _ => Status::permission_denied(format!("attestation failed: {e}")),
            };
            self.deny(rpc, &peer, status)
        })?;
        if attested.entries().is_empty() {
            let sel: Vec<&str> = attested.selectors().iter().map(|s| s.as_str()).collect();
            tracing::info!(rpc, pid = peer.process().pid, uid = peer.process().uid, selectors = ?sel, "denied: no entry matches the caller's selectors");
            self.metrics.request(rpc, tonic::Code::PermissionDenied);
            return Err(Status::permission_denied(
                "no identity issued: no registration entry matches this process",
            ));
        }
        Ok((peer, attested))
    }

    /// The header and the peer only (for calls that need no identity).
    pub fn check_header<T>(
        &self,
        req: &Request<T>,
        rpc: &'static str,
    ) -> Result<Arc<Peer>, Status> {
        if req
            .metadata()
            .get(SECURITY_HEADER)
            .and_then(|v| v.to_str().ok())
            != Some("true")
        {
            tracing::info!(rpc, "denied: missing {SECURITY_HEADER} header");
            self.metrics.request(rpc, tonic::Code::InvalidArgument);
            return Err(Status::invalid_argument(
                "security header missing from request",
            ));
        }
        let peer = req
            .extensions()
            .get::<Arc<Peer>>()
            .cloned()
            .ok_or_else(|| {
                self.metrics.request(rpc, tonic::Code::Unauthenticated);
                Status::unauthenticated("caller could not be identified")
            })?;
        // A whole request with the security header arrived: the connection is
        // in use, and a slow answer (a kubelet wait, docker retries) must not
        // be cut off by the idle timeout.
        peer.mark_active();
        Ok(peer)
    }

    fn deny(&self, rpc: &'static str, peer: &Peer, status: Status) -> Status {
        tracing::info!(rpc, pid = peer.process().pid, code = ?status.code(), reason = status.message(), "denied");
        self.metrics.request(rpc, status.code());
        status
    }

    /// The last check before anything leaves: the caller is still the process
    /// that connected. Otherwise nothing is sent.
    pub fn recheck(&self, rpc: &'static str, peer: &Peer) -> Result<(), Status> {
        peer.still_same()
            .map_err(|e| self.deny(rpc, peer, Status::unauthenticated(e.to_string())))
    }

    /// A cached credential for an entry.
    pub async fn credential(
        &self,
        kind: Kind,
        entry: &Entry,
        audiences: impl IntoIterator<Item = String>,
        attrs: &AttestedWorkload,
    ) -> Result<Stored, Status> {
        let key = Key::new(kind, &entry.subject, audiences);
        let spec = Spec {
            ttl_secs: entry.ttl_secs,
            networks: entry.networks.clone(),
            attrs: if kind == Kind::Credential {
                attrs.selectors().iter().map(ToString::to_string).collect()
            } else {
                Vec::new()
            },
        };
        self.cache.get(&key, &spec, now()).await.map_err(|e| {
            tracing::warn!(subject = %entry.subject, error = %e, "cannot mint");
            Status::unavailable(format!("cannot mint a credential: {e}"))
        })
    }

    /// Runs `make` now and on every cache change until the client leaves or the
    /// agent shuts down, sending each result after a recheck of the caller.
    pub fn stream<T, F, Fut>(
        self: &Arc<Self>,
        rpc: &'static str,
        peer: Arc<Peer>,
        make: F,
    ) -> Stream<T>
    where
        T: Send + prost::Message + 'static,
        F: Fn(Arc<Ctx>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, Status>> + Send,
    {
        let (tx, rx) = mpsc::channel(2);
        let ctx = self.clone();
        // Each watch stream is a task woken on every cache change: a principal
        // gets a bounded number of them over all its connections.
        let Some(slot) = self.admission.take_stream(peer.principal()) else {
            let status = self.deny(
                rpc,
                &peer,
                Status::resource_exhausted("too many open streams for this uid"),
            );
            return Box::pin(futures_util::stream::once(async move { Err(status) }));
        };
        tokio::spawn(async move {
            let _slot = slot;
            let mut changes = ctx.cache.subscribe();
            let mut shutdown = ctx.shutdown.clone();
            // A digest of the last message sent, not a copy: a stream may carry
            // thousands of SVIDs and there may be many streams.
            let mut last: Option<[u8; 32]> = None;
            loop {
                let msg = make(ctx.clone())
                    .await
                    .and_then(|m| ctx.recheck(rpc, &peer).map(|()| m));
                match msg {
                    Ok(m) => {
                        use sha2::Digest as _;
                        let digest: [u8; 32] = sha2::Sha256::digest(m.encode_to_vec()).into();
                        // Nothing this caller sees changed: send nothing.
                        if last != Some(digest) {
                            last = Some(digest);
                            ctx.metrics.request(rpc, tonic::Code::Ok);
                            if tx.send(Ok(m)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    _ = shutdown.changed() => return,
                    () = tx.closed() => return,
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}
