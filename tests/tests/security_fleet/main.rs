//! The fleet's trust boundaries (issue 12), each written from the attacker's
//! side against a real `lanyard issuer` and a real `lanyard agent`:
//! - a chain without the issuer role (a standalone gateway's, whose seed an
//!   attacker stole) cannot open a session as a node, nor pose as the issuer;
//! - an agent's old, superseded credential opens no session;
//! - with `[upstream] issuer_id`, another issuer chain is not the issuer.
//!
//! The token-level halves (re-signed agent credentials, prefix escapes, deny
//! lists) are in `token/tests/`; the TLS-identity checks one by one are in
//! `agent/src/tls_identity.rs`.
#![allow(clippy::unwrap_used, clippy::panic)]

mod constrained;
mod flood;
mod revocation;
mod sessions;

use lanyard_proto::issuer as pb;
use lanyard_proto::issuer::node_client::NodeClient;
use lanyard_tests::{lanyard, Fleet};
use lanyard_token::pop::{issuer_proof_message, IssuerProof};
use lanyard_token::{ChainIssuer, KeyPair, PublicKey};

pub(crate) fn now() -> u64 {
    lanyard_agent::api::now()
}

/// `lanyard org delegate` of chain `name` in the fleet's org, with `extra` flags.
pub(crate) fn delegate(f: &Fleet, name: &str, extra: &[&str]) {
    let d = f.dir.0.display().to_string();
    let mut args = vec![
        "org".to_owned(),
        "delegate".into(),
        "--org-seed".into(),
        format!("{d}/org/org.seed"),
        "--out".into(),
        format!("{d}/{name}"),
        "--name".into(),
        name.into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = lanyard(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Chain `name`'s key, from its seed file (what an attacker who stole it holds).
pub(crate) fn chain_key(f: &Fleet, name: &str) -> KeyPair {
    let seed = std::fs::read_to_string(f.dir.join(&format!("{name}/chain.seed"))).unwrap();
    KeyPair::from_seed_text(&seed).unwrap()
}

pub(crate) fn chain(f: &Fleet, name: &str) -> ChainIssuer {
    let jwt = std::fs::read_to_string(f.dir.join(&format!("{name}/chain.jwt"))).unwrap();
    ChainIssuer::new(&jwt, chain_key(f, name)).unwrap()
}

pub(crate) fn org(f: &Fleet) -> PublicKey {
    PublicKey::from_file_text(&std::fs::read_to_string(f.dir.join("org/org.public")).unwrap())
        .unwrap()
}

/// OpenSession with `jwt`, proving possession with `key`.
pub(crate) async fn open_session(
    c: &mut NodeClient<tonic::transport::Channel>,
    jwt: &str,
    key: &KeyPair,
) -> Result<pb::OpenSessionResponse, tonic::Status> {
    let nonce = c
        .get_nonce(pb::GetNonceRequest {})
        .await?
        .into_inner()
        .nonce;
    let sig = key.sign(&issuer_proof_message(IssuerProof::Session, &nonce));
    Ok(c.open_session(pb::OpenSessionRequest {
        agent_jwt: jwt.to_owned(),
        nonce,
        nonce_signature: sig.to_vec(),
    })
    .await?
    .into_inner())
}
