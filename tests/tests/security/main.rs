//! The security suite (issue 6, part 4): what a reviewer of a SPIFFE agent would
//! try, each an assertion against real processes.
//!
//! - the caller: a wrong uid, a reused pid, a workload in one container asking
//!   for another container's identity;
//! - the tokens: a forged chain, another org's chain, a token from a revoked
//!   chain, tampered and unsigned JWT-SVIDs;
//! - the issuer: a replayed attestation nonce, one join token used by many nodes
//!   at once;
//! - the wire: an oversized gRPC message, a missing security header, bytes that
//!   are not HTTP/2 at all;
//! - at rest: the agent's files are private and no seed reaches its log.
#![allow(clippy::unwrap_used, clippy::panic)]

mod at_rest;
mod caller;
mod issuer;
mod tokens;
mod wire;

use std::path::Path;

use lanyard_agent::client::{connect, with_header};
use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::spiffe::JwtsvidRequest;
use lanyard_tests::{lanyard, rt};

/// A JWT-SVID for this process, or the gRPC status.
pub(crate) fn jwt_svid(socket: &Path, spiffe_id: &str) -> Result<String, tonic::Status> {
    rt().block_on(async {
        let ch = connect(socket).await.unwrap();
        let r = SpiffeWorkloadApiClient::new(ch)
            .fetch_jwtsvid(with_header(JwtsvidRequest {
                audience: vec!["security".into()],
                spiffe_id: spiffe_id.into(),
            }))
            .await?;
        Ok(r.into_inner().svids.remove(0).svid)
    })
}

pub(crate) fn mint(dir: &Path, chain: &str, out: &str) {
    let d = dir.display();
    let o = lanyard(&[
        "token",
        "mint",
        "--issuer-jwt",
        &format!("{d}/{chain}/chain.jwt"),
        "--issuer-seed",
        &format!("{d}/{chain}/chain.seed"),
        "--subject",
        "spiffe://example.org/w",
        "--out",
        &format!("{d}/{out}"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
