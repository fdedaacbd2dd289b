//! The `join_token` node attestor: a one-time secret that an operator hands to a
//! new node.
//!
//! The issuer stores only the SHA-256 of the token text, so a leaked store does
//! not leak usable tokens. Redeeming is atomic in the store: of two nodes racing
//! with the same token, exactly one wins. A node attested this way cannot
//! re-attest (the token is spent); its agent must keep its credential fresh.

use base64::Engine as _;
use futures_util::future::BoxFuture;
use lanyard_token::PublicKey;
use sha2::{Digest as _, Sha256};

use super::{AttestedNode, NodeAttestError, NodeAttestor, NodeEvidence, NodeRegistry};
use crate::Selector;

/// The attestor name and selector type.
pub const NAME: &str = "join_token";
/// The type of the selector it produces: `join:name:NAME`.
pub const SELECTOR_TYPE: &str = "join";
/// Every token starts with this, so a leaked one is easy to recognise and grep for.
pub const PREFIX: &str = "lanyard-jt-";
/// Longest token text considered: real ones are 54 bytes; anything far longer is
/// refused before hashing so a client cannot make the issuer hash megabytes.
pub const MAX_TOKEN_LEN: usize = 256;

/// Why a join token could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinTokenError {
    /// The operating system's random source failed.
    #[error("random source failed: {0}")]
    Rng(String),
}

/// A new token: (token text, SHA-256 lowercase hex of the text). Give the text to
/// the node; store only the hash.
pub fn generate() -> Result<(String, String), JoinTokenError> {
    let mut secret = [0u8; 32];
    lanyard_token::keys::random_bytes(&mut secret)
        .map_err(|e| JoinTokenError::Rng(e.to_string()))?;
    let token = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let hash = hash(&token);
    Ok((token, hash))
}

/// SHA-256 of the token text, lowercase hex: the form the store keeps.
pub fn hash(token: &str) -> String {
    lanyard_token::hex::encode(&Sha256::digest(token.as_bytes()))
}

/// Redeems join tokens against the issuer's store.
#[derive(Debug, Default, Clone, Copy)]
pub struct JoinTokenAttestor;

impl JoinTokenAttestor {
    /// The attestor.
    pub fn new() -> Self {
        Self
    }
}

impl NodeAttestor for JoinTokenAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn attest<'a>(
        &'a self,
        evidence: &'a NodeEvidence,
        registry: &'a dyn NodeRegistry,
        _nonce: &'a [u8],
        _agent_public_key: &'a PublicKey,
        now: u64,
    ) -> BoxFuture<'a, Result<AttestedNode, NodeAttestError>> {
        Box::pin(async move {
            let NodeEvidence::JoinToken { token } = evidence else {
                return Err(NodeAttestError::WrongEvidence);
            };
            if token.len() > MAX_TOKEN_LEN {
                return Err(NodeAttestError::UnknownOrUsedJoinToken);
            }
            let name = registry
                .redeem_join_token(&hash(token), now)
                .await
                .map_err(NodeAttestError::Registry)?
                .ok_or(NodeAttestError::UnknownOrUsedJoinToken)?;
            // The name came from an operator via the store; still, refuse one that
            // would make a malformed selector rather than trust it blindly.
            // The selector type is `join` (the contract), the attestor `join_token`.
            let selector = Selector::parse(&format!("{SELECTOR_TYPE}:name:{name}"))
                .map_err(|e| NodeAttestError::Registry(format!("join token name: {e}")))?;
            Ok(AttestedNode::new(NAME, name, vec![selector], false))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{block_on, FakeRegistry};
    use super::*;

    fn registry_with(token: &str, name: &str, expires: u64) -> FakeRegistry {
        let reg = FakeRegistry::default();
        reg.tokens
            .lock()
            .unwrap()
            .insert(hash(token), (name.to_owned(), expires, false));
        reg
    }

    fn attest(reg: &FakeRegistry, token: &str, now: u64) -> Result<AttestedNode, NodeAttestError> {
        let key = lanyard_token::KeyPair::generate().unwrap().public();
        let ev = NodeEvidence::JoinToken {
            token: token.to_owned(),
        };
        block_on(JoinTokenAttestor.attest(&ev, reg, b"nonce", &key, now))
    }

    #[test]
    fn generate_shape() {
        let (token, h) = generate().unwrap();
        assert!(token.starts_with(PREFIX));
        assert_eq!(token.len(), PREFIX.len() + 43);
        assert_eq!(h, hash(&token));
        assert_eq!(h.len(), 64);
        assert_ne!(generate().unwrap().0, token);
        // A known vector, so the store and the CLI agree on the hash forever.
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn single_use() {
        let (token, _) = generate().unwrap();
        let reg = registry_with(&token, "edge-1", 1000);
        let node = attest(&reg, &token, 10).unwrap();
        assert_eq!(node.attestor(), "join_token");
        assert_eq!(node.name(), "edge-1");
        assert_eq!(node.selectors()[0].as_str(), "join:name:edge-1");
        assert!(!node.can_reattest());
        assert_eq!(
            attest(&reg, &token, 11).unwrap_err(),
            NodeAttestError::UnknownOrUsedJoinToken
        );
    }

    #[test]
    fn unknown_expired_oversize() {
        let (token, _) = generate().unwrap();
        let reg = registry_with(&token, "edge-1", 1000);
        let (other, _) = generate().unwrap();
        assert_eq!(
            attest(&reg, &other, 10).unwrap_err(),
            NodeAttestError::UnknownOrUsedJoinToken
        );
        assert_eq!(
            attest(&reg, &token, 1000).unwrap_err(),
            NodeAttestError::UnknownOrUsedJoinToken
        );
        let big = "x".repeat(MAX_TOKEN_LEN + 1);
        let reg = registry_with(&big, "edge-2", 1000);
        assert_eq!(
            attest(&reg, &big, 10).unwrap_err(),
            NodeAttestError::UnknownOrUsedJoinToken
        );
    }

    #[test]
    fn wrong_evidence() {
        let reg = FakeRegistry::default();
        let key = lanyard_token::KeyPair::generate().unwrap().public();
        let ev = NodeEvidence::K8sPsat { token: "x".into() };
        assert_eq!(
            block_on(JoinTokenAttestor.attest(&ev, &reg, b"n", &key, 0)).unwrap_err(),
            NodeAttestError::WrongEvidence
        );
    }
}
