//! Node attestation: how an agent proves, once, which machine it runs on.
//!
//! The issuer runs a [`NodeAttestor`] over the [`NodeEvidence`] an agent presents
//! (over TLS) and, on success, gets an [`AttestedNode`]: a proof value that only the
//! attestors in this crate can build. The node's selectors then scope which entries
//! that agent may ever receive credentials for.
//!
//! Three attestors:
//! - [`join_token`]: a one-time secret, stored hashed at the issuer;
//! - [`device`]: an ed25519 key pinned at the issuer, challenge-response;
//! - [`k8s_psat`]: a Kubernetes projected service-account token, checked offline
//!   against the cluster's JWKS.

pub mod device;
pub mod join_token;
pub mod k8s_psat;
#[cfg(feature = "testing")]
pub mod psat_testing;

use futures_util::future::BoxFuture;
use lanyard_token::PublicKey;

use crate::Selector;

pub use device::DeviceAttestor;
pub use join_token::JoinTokenAttestor;
pub use k8s_psat::{Jwks, PsatAttestor, PsatConfig};

/// Evidence a node presents. Node attestation happens over TLS to the issuer.
#[derive(Clone)]
pub enum NodeEvidence {
    /// A one-time join token, as `lanyard` printed it.
    JoinToken {
        /// The token text (`lanyard-jt-…`).
        token: String,
    },
    /// ed25519 signature by the pinned device key over
    /// [`device::challenge`]`(nonce, agent_public_key)`.
    DeviceKey {
        /// The name the device key is pinned under.
        name: String,
        /// The 64 byte signature.
        signature: Vec<u8>,
    },
    /// A Kubernetes projected service-account token (compact JWS).
    K8sPsat {
        /// The token text.
        token: String,
    },
}

impl std::fmt::Debug for NodeEvidence {
    // Join tokens and PSATs are bearer secrets: never print them, even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::JoinToken { token } => f
                .debug_struct("JoinToken")
                .field("token", &format_args!("<{} bytes>", token.len()))
                .finish(),
            Self::DeviceKey { name, signature } => f
                .debug_struct("DeviceKey")
                .field("name", name)
                .field("signature", &format_args!("<{} bytes>", signature.len()))
                .finish(),
            Self::K8sPsat { token } => f
                .debug_struct("K8sPsat")
                .field("token", &format_args!("<{} bytes>", token.len()))
                .finish(),
        }
    }
}

impl NodeEvidence {
    /// The attestor name that handles this kind of evidence.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::JoinToken { .. } => join_token::NAME,
            Self::DeviceKey { .. } => device::NAME,
            Self::K8sPsat { .. } => k8s_psat::NAME,
        }
    }
}

/// What node attestation established. Only the attestors in this crate build it,
/// so holding one means the evidence was checked.
#[derive(Debug, Clone)]
pub struct AttestedNode {
    attestor: &'static str,
    name: String,
    selectors: Vec<Selector>,
    can_reattest: bool,
}

impl AttestedNode {
    pub(crate) fn new(
        attestor: &'static str,
        name: String,
        selectors: Vec<Selector>,
        can_reattest: bool,
    ) -> Self {
        Self {
            attestor,
            name,
            selectors,
            can_reattest,
        }
    }

    /// The attestor that vouched (`join_token`, `device`, `k8s_psat`).
    pub fn attestor(&self) -> &'static str {
        self.attestor
    }

    /// The node's name: the join token's name, the device name, or
    /// `<cluster>/<node name>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node selectors (`join:name:…`, `device:name:…`, `k8s_psat:…`).
    pub fn selectors(&self) -> &[Selector] {
        &self.selectors
    }

    /// Whether the same evidence source can attest this node again (a device key or
    /// a fresh PSAT can; a used join token cannot).
    pub fn can_reattest(&self) -> bool {
        self.can_reattest
    }
}

/// Lookups that live in the issuer's store.
pub trait NodeRegistry: Send + Sync {
    /// Atomically marks a join token (by SHA-256 hex of its text) used; `Some(name)`
    /// if it was unused and unexpired at `now`.
    fn redeem_join_token<'a>(
        &'a self,
        hash_hex: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<String>, String>>;
    /// The ed25519 public key pinned for a device name.
    fn device_key<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<PublicKey>, String>>;
}

/// Why a node's evidence was refused. Every error fails attestation closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeAttestError {
    /// This attestor does not handle that kind of evidence.
    #[error("this node attestor does not handle that kind of evidence")]
    WrongEvidence,
    /// The join token is unknown, already used, expired, or could not be a token.
    #[error("join token is unknown, used or expired")]
    UnknownOrUsedJoinToken,
    /// No key is pinned under that device name (or the name is not a valid one).
    #[error("no device key is pinned under that name")]
    UnknownDevice,
    /// The signature does not verify under the pinned or published key.
    #[error("signature does not verify")]
    BadSignature,
    /// The PSAT is malformed or its claims are inconsistent.
    #[error("malformed service-account token: {0}")]
    Token(String),
    /// The token's `exp` has passed.
    #[error("token expired")]
    Expired,
    /// The token's `nbf` or `iat` is in the future (beyond the allowed skew).
    #[error("token not yet valid")]
    NotYetValid,
    /// The token's `aud` does not contain the configured audience.
    #[error("token audience does not include the configured audience")]
    WrongAudience,
    /// The token's `iss` is not the configured issuer.
    #[error("token issuer is not the configured issuer")]
    WrongIssuer,
    /// The service account is not on the allow-list.
    #[error("service account {0} is not allowed to attest nodes")]
    NotAllowed(String),
    /// The token's `kid` is not in the JWKS (or no key could be chosen without one).
    #[error("no key in the JWKS matches the token")]
    UnknownKey,
    /// The token's `alg` is not one this attestor accepts (RS256, ES256).
    #[error("unsupported token algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The issuer's store failed.
    #[error("node registry: {0}")]
    Registry(String),
}

/// Checks a node's evidence.
pub trait NodeAttestor: Send + Sync + std::fmt::Debug {
    /// The attestor name and selector type: `join_token`, `device` or `k8s_psat`.
    fn name(&self) -> &'static str;
    /// Checks `evidence`. `nonce` is the fresh issuer nonce, `agent_public_key` the
    /// key the agent will hold; `now` is Unix seconds.
    fn attest<'a>(
        &'a self,
        evidence: &'a NodeEvidence,
        registry: &'a dyn NodeRegistry,
        nonce: &'a [u8],
        agent_public_key: &'a PublicKey,
        now: u64,
    ) -> BoxFuture<'a, Result<AttestedNode, NodeAttestError>>;
}

/// Whether `s` is 1..=`max` characters of `[A-Za-z0-9._-]`: safe in a selector, a
/// name and a log line.
pub(crate) fn is_plain_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
pub(crate) mod testing {
    //! An in-memory registry and a one-poll executor for the unit tests.

    use std::collections::HashMap;
    use std::future::Future;
    use std::sync::Mutex;

    use super::*;

    /// Join tokens by hash: (name, expires_at, used); devices by name.
    #[derive(Debug, Default)]
    pub struct FakeRegistry {
        pub tokens: Mutex<HashMap<String, (String, u64, bool)>>,
        pub devices: HashMap<String, PublicKey>,
    }

    impl NodeRegistry for FakeRegistry {
        fn redeem_join_token<'a>(
            &'a self,
            hash_hex: &'a str,
            now: u64,
        ) -> BoxFuture<'a, Result<Option<String>, String>> {
            Box::pin(async move {
                let mut tokens = self.tokens.lock().unwrap();
                Ok(match tokens.get_mut(hash_hex) {
                    Some((name, exp, used)) if !*used && now < *exp => {
                        *used = true;
                        Some(name.clone())
                    }
                    _ => None,
                })
            })
        }

        fn device_key<'a>(
            &'a self,
            name: &'a str,
        ) -> BoxFuture<'a, Result<Option<PublicKey>, String>> {
            Box::pin(async move { Ok(self.devices.get(name).copied()) })
        }
    }

    /// Runs a future that never waits (all of ours, with this registry).
    pub fn block_on<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("test future waited"),
        }
    }
}
