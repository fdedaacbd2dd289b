//! Shared helpers for the token integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use lanyard_token::{
    claims::Constraints, delegate, ChainIssuer, DelegateRequest, KeyPair, PublicKey,
};

/// The Choria interop vectors, copied byte for byte from `shared/interop/choria`.
pub fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/choria")
}

pub fn read(rel: &str) -> String {
    std::fs::read_to_string(vectors().join(rel)).unwrap()
}

pub fn public(rel: &str) -> PublicKey {
    PublicKey::from_file_text(&read(rel)).unwrap()
}

/// The vectors were minted at this time; never verify them "before" it.
pub const VECTORS_IAT: u64 = 1_795_435_390;

pub fn now() -> u64 {
    let sys = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    sys.max(VECTORS_IAT + 60)
}

/// A fixed time for tokens minted in tests.
pub const T0: u64 = 1_800_000_000;

pub struct Org {
    pub org: KeyPair,
    pub chain_key: KeyPair,
    pub chain_jwt: String,
}

impl Org {
    pub fn new(validity_secs: u64, constraints: Constraints) -> Self {
        Self::with_roles(validity_secs, constraints, &[])
    }

    /// A chain with `roles` (e.g. `["issuer"]`).
    pub fn with_roles(validity_secs: u64, constraints: Constraints, roles: &[&str]) -> Self {
        let org = KeyPair::generate().unwrap();
        let chain_key = KeyPair::generate().unwrap();
        let req = DelegateRequest {
            name: "test-chain".into(),
            validity_secs,
            constraints,
            roles: roles.iter().map(|r| r.to_string()).collect(),
        };
        let chain_jwt = delegate(&org, &chain_key.public(), &req, T0).unwrap();
        Self {
            org,
            chain_key,
            chain_jwt,
        }
    }

    pub fn issuer(&self) -> ChainIssuer {
        ChainIssuer::new(&self.chain_jwt, self.chain_key.clone()).unwrap()
    }
}
