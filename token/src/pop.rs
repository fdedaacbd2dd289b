//! Proof of possession: the holder signs the ASCII bytes of a server nonce with its
//! seed, and sends the signature as unpadded base64url.

use crate::jws;
use crate::keys::{random_bytes, KeyError, KeyPair, PublicKey};
use crate::verify::VerifiedToken;

/// Longest nonce accepted.
pub const MAX_NONCE_LEN: usize = 4096;

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The nonce is empty, too long, or not ASCII.
    #[error("nonce must be 1..={MAX_NONCE_LEN} ASCII bytes")]
    BadNonce,
    /// The signature is not unpadded base64url.
    #[error("signature is not unpadded base64url")]
    Encoding,
    /// The token has no usable `public_key` to check against.
    #[error("token has no usable public_key")]
    NoHolderKey,
    /// The signature does not verify.
    #[error("proof does not verify: the signer does not hold the token's seed")]
    Invalid,
}

fn check_nonce(nonce: &[u8]) -> Result<(), ProofError> {
    if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN || !nonce.is_ascii() {
        return Err(ProofError::BadNonce);
    }
    Ok(())
}

/// A fresh nonce: 24 random bytes as unpadded base64url (32 ASCII characters).
pub fn new_nonce() -> Result<String, KeyError> {
    let mut b = [0u8; 24];
    random_bytes(&mut b)?;
    Ok(jws::b64url(&b))
}

/// Signs `nonce` with `key`.
pub fn prove(key: &KeyPair, nonce: &[u8]) -> Result<String, ProofError> {
    check_nonce(nonce)?;
    Ok(jws::b64url(&key.sign(nonce)))
}

/// Checks that `signature` is `key`'s signature over `nonce`.
pub fn check(key: &PublicKey, nonce: &[u8], signature: &str) -> Result<(), ProofError> {
    check_nonce(nonce)?;
    let sig = jws::b64url_decode(signature.trim()).ok_or(ProofError::Encoding)?;
    if key.verify(nonce, &sig) {
        Ok(())
    } else {
        Err(ProofError::Invalid)
    }
}

impl VerifiedToken {
    /// Checks a proof of possession against this token's holder key.
    pub fn check_proof(&self, nonce: &[u8], signature: &str) -> Result<(), ProofError> {
        check(
            &self.holder().ok_or(ProofError::NoHolderKey)?,
            nonce,
            signature,
        )
    }
}

/// What an agent signs to prove it holds a key to the upstream issuer: the
/// nonce, prefixed with what the proof is for, so that a signature made to
/// attest cannot be replayed to open a session (or the other way round).
pub fn issuer_proof_message(context: IssuerProof, nonce: &[u8]) -> Vec<u8> {
    let label: &[u8] = match context {
        IssuerProof::Attest => b"lanyard-issuer-attest-v1\0",
        IssuerProof::Session => b"lanyard-issuer-session-v1\0",
        IssuerProof::Renew => b"lanyard-issuer-renew-v1\0",
    };
    let mut m = Vec::with_capacity(label.len() + nonce.len());
    m.extend_from_slice(label);
    m.extend_from_slice(nonce);
    m
}

/// The purposes of [`issuer_proof_message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssuerProof {
    /// Node attestation with a new agent key.
    Attest,
    /// Opening a session with an agent credential.
    Session,
    /// Renewing the agent credential for a new key.
    Renew,
}
