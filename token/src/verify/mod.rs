//! Verification with nothing but the org public key.
//!
//! Two rule sets:
//! - [`Rules::Lanyard`] (the default) checks everything Choria checks, plus the
//!   org-signed [`ChainGrant`](crate::ChainGrant) that binds the chain issuer's expiry and
//!   constraints, purposes, subjects, `cnf`, audiences and networks.
//! - [`Rules::Choria`] applies exactly choria-io/tokens v0.0.4's rules, for tokens
//!   Choria minted. Its checks run in Choria's order (chain, then JWT signature, then
//!   time) so that it fails for the same reason Choria does.

mod checks;

use crate::claims::{Claims, CHAIN_ISSUER_PREFIX, KNOWN_PURPOSES, PURPOSE_AGENT};
use crate::constraints::ConstraintViolation;
use crate::hex;
use crate::jws::{self, JwsError};
use crate::keys::PublicKey;
use crate::ksuid::KsuidError;
use crate::subject::SubjectError;
use checks::{chain_ref, invalid};

/// Why a token is not valid. Each variant is one broken rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The token is not a well-formed EdDSA compact JWS.
    #[error("malformed token: {0}")]
    Malformed(#[from] JwsError),
    /// The claims are not the right JSON types.
    #[error("malformed claims: {0}")]
    Claims(String),
    /// A claim the rules require is absent.
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    /// A claim is present but unusable.
    #[error("invalid claim {claim}: {reason}")]
    InvalidClaim {
        /// The claim's name.
        claim: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `jti` is not a KSUID.
    #[error("invalid jti: {0}")]
    Ksuid(#[from] KsuidError),
    /// The time inside `jti` differs from `iat`.
    #[error("jti is not based on the issued time (iat)")]
    IdNotBasedOnIssuedTime,
    /// `iss` is neither `I-` nor `C-` (lanyard rules), or has the wrong shape.
    #[error("unsupported issuer {0:?}")]
    UnsupportedIssuer(String),
    /// The org did not sign the chain issuer (Choria: "chain issuer credentials not signed by org issuer").
    #[error("chain not signed by org: chain issuer credentials not signed by org issuer")]
    ChainNotSignedByOrg,
    /// The chain issuer did not sign this leaf's `tcs` (Choria: "invalid chain signature").
    #[error("invalid chain signature: the chain issuer did not sign this leaf")]
    InvalidChainSignature,
    /// The JWT signature does not verify (Choria: "ed25519: verification error").
    #[error("bad signature: the JWT signature does not verify")]
    BadSignature,
    /// lanyard rules: the chain grant is missing.
    #[error("chain not signed by org: no lanyard_chain grant (a plain Choria token; verify it with --choria)")]
    MissingChainGrant,
    /// lanyard rules: `issexp` differs from the expiry the org signed for the chain issuer.
    #[error("chain expiry mismatch: issexp {issexp} is not the org-signed chain expiry {granted}")]
    ChainExpiryMismatch {
        /// The leaf's `issexp`.
        issexp: u64,
        /// The org-signed expiry.
        granted: u64,
    },
    /// The token (or its chain issuer) has expired.
    #[error("expired at {expired_at} (now {now})")]
    Expired {
        /// The effective expiry.
        expired_at: u64,
        /// The verification time.
        now: u64,
    },
    /// `nbf` is in the future.
    #[error("not yet valid: nbf {nbf} is after now {now}")]
    NotYetValid {
        /// The token's nbf.
        nbf: u64,
        /// The verification time.
        now: u64,
    },
    /// `iat` is in the future.
    #[error("not yet valid: issued at {iat}, after now {now}")]
    IssuedInFuture {
        /// The token's iat.
        iat: u64,
        /// The verification time.
        now: u64,
    },
    /// The purpose is not one lanyard knows.
    #[error("unknown purpose {0:?}")]
    UnknownPurpose(String),
    /// The subject is not a SPIFFE ID or `urn:` name.
    #[error("invalid subject: {0}")]
    Subject(#[from] SubjectError),
    /// The leaf is outside its chain issuer's constraints.
    #[error("constraint violated: {0}")]
    Constraint(#[from] ConstraintViolation),
    /// The chain issuer that signed the leaf lacks the role its purpose needs
    /// (an agent credential from a chain that is not an issuer).
    #[error("the chain issuer has no {role:?} role, which purpose {purpose:?} needs")]
    RoleMissing {
        /// The role the org did not grant.
        role: &'static str,
        /// The leaf's purpose.
        purpose: String,
    },
    /// `cnf` names a different key than `public_key`.
    #[error("cnf key does not match public_key")]
    ConfirmationMismatch,
    /// The verifier's audience is not in `aud`.
    #[error("audience {expected:?} not in token audiences {actual:?}")]
    AudienceMismatch {
        /// The verifier's audience.
        expected: String,
        /// The token's audiences.
        actual: Vec<String>,
    },
    /// The token, or the chain issuer that minted it, is on the deny list.
    #[error("revoked: {0} is on the deny list")]
    Revoked(String),
    /// None of the token's networks is on the verifier's access list.
    #[error("network not accepted: token networks {actual:?}, accepted {accepted:?}")]
    NetworkNotAccepted {
        /// The token's networks.
        actual: Vec<String>,
        /// The verifier's access list.
        accepted: Vec<String>,
    },
}

/// Which rules to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// lanyard's rules: Choria's plus the chain grant and claim checks.
    Lanyard,
    /// choria-io/tokens v0.0.4, exactly.
    Choria,
}

/// How a verified token is anchored to the org.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // one per verification; boxing would only add an allocation
pub enum Anchor {
    /// Signed by the org key itself (a chain issuer, or a Choria direct token).
    Org,
    /// Signed by a chain issuer that the org delegated.
    Chain {
        /// The chain issuer token's `jti`.
        jti: String,
        /// The chain issuer's public key.
        public_key: PublicKey,
    },
}

/// A token that passed verification. Only [`Verifier::verify`] can make one.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    claims: Claims,
    anchor: Anchor,
    // Raw bytes: turning them into a curve point costs as much as a third of a
    // signature check, so it waits until a proof actually needs it.
    holder: Option<[u8; 32]>,
    expires_at: Option<u64>,
    grant_checked: bool,
}

impl VerifiedToken {
    /// The verified claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }
    /// Who signed it.
    pub fn anchor(&self) -> &Anchor {
        &self.anchor
    }
    /// The holder's key (`public_key`), which proofs of possession must verify
    /// with; `None` if the token has none or it is not a valid ed25519 key.
    pub fn holder(&self) -> Option<PublicKey> {
        self.holder
            .as_ref()
            .and_then(|b| PublicKey::from_bytes(b).ok())
    }
    /// Effective expiry: min(exp, issexp), or the chain grant's expiry if sooner.
    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }
    /// Whether the org granted `role` to the chain this token is, or was signed
    /// by. Under lanyard rules the grant's signature was checked; a token
    /// verified under Choria rules has no checked grant, so never has a role.
    pub fn has_role(&self, role: &str) -> bool {
        self.grant_checked
            && self
                .claims
                .lanyard_chain
                .as_ref()
                .is_some_and(|g| g.has_role(role))
    }
    /// The chain issuer token's `jti`: its own for a chain token (anchored on the
    /// org), the signer's for a leaf.
    pub fn chain_jti(&self) -> Option<&str> {
        match &self.anchor {
            Anchor::Chain { jti, .. } => Some(jti),
            Anchor::Org => self.claims.jti.as_deref(),
        }
    }
}

/// Verifies tokens against one org public key.
#[derive(Debug, Clone)]
pub struct Verifier {
    org: PublicKey,
    rules: Rules,
    audience: Option<String>,
    networks: Vec<String>,
    leeway_secs: u64,
    chain_keys: ChainKeyCache,
    deny: Option<std::sync::Arc<crate::deny::VerifiedDenyList>>,
}

/// Chain issuer keys already decoded to curve points. A fleet has a handful of
/// chain issuers and every leaf names one, so decoding each key once saves a
/// point decompression per verification. Only keys whose chain signature
/// verified are added, and the cache is emptied when full, so it stays small
/// and an attacker can at most slow it down.
#[derive(Debug, Clone, Default)]
struct ChainKeyCache(std::sync::Arc<std::sync::Mutex<Vec<PublicKey>>>);

impl ChainKeyCache {
    const CAPACITY: usize = 32;

    fn get_or_decode(&self, bytes: &[u8; 32]) -> Result<PublicKey, crate::KeyError> {
        if let Ok(keys) = self.0.lock() {
            if let Some(k) = keys.iter().find(|k| k.as_bytes() == bytes) {
                return Ok(*k);
            }
        }
        PublicKey::from_bytes(bytes)
    }

    fn remember(&self, key: PublicKey) {
        if let Ok(mut keys) = self.0.lock() {
            if keys.contains(&key) {
                return;
            }
            if keys.len() >= Self::CAPACITY {
                keys.clear();
            }
            keys.push(key);
        }
    }
}

/// Clock skew forgiven on `nbf` and `iat` under lanyard rules. Expiry gets none.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

impl Verifier {
    /// lanyard rules.
    pub fn new(org: PublicKey) -> Self {
        Self {
            org,
            rules: Rules::Lanyard,
            audience: None,
            networks: Vec::new(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
            chain_keys: ChainKeyCache::default(),
            deny: None,
        }
    }

    /// Choria v0.0.4 rules (no leeway, as Choria has none).
    pub fn choria(org: PublicKey) -> Self {
        Self {
            rules: Rules::Choria,
            leeway_secs: 0,
            ..Self::new(org)
        }
    }

    /// The org key everything is verified against.
    pub fn org(&self) -> &PublicKey {
        &self.org
    }

    /// Require `aud` to contain `audience`.
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Accept only tokens in one of `networks` (the verifier's access list).
    pub fn with_networks(mut self, networks: Vec<String>) -> Self {
        self.networks = networks;
        self
    }

    /// Refuse tokens (and chain issuers) that `list` names.
    pub fn with_deny_list(mut self, list: crate::deny::VerifiedDenyList) -> Self {
        self.deny = Some(std::sync::Arc::new(list));
        self
    }

    /// Set the clock skew forgiven on `nbf` and `iat`.
    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.leeway_secs = secs;
        self
    }

    /// The rules in force.
    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// Verifies `token` at Unix time `now`.
    pub fn verify(&self, token: &str, now: u64) -> Result<VerifiedToken, VerifyError> {
        let parts = jws::parse(token)?;
        let claims: Claims = serde_json::from_slice(&parts.payload)
            .map_err(|e| VerifyError::Claims(e.to_string()))?;
        let lenient = self.rules == Rules::Choria;
        let iss = claims.iss.as_deref().unwrap_or_default();

        if self.rules == Rules::Lanyard && !KNOWN_PURPOSES.contains(&claims.purpose.as_str()) {
            return Err(VerifyError::UnknownPurpose(claims.purpose.clone()));
        }

        // 1-3: find the key that must have signed the JWT, proving the chain on the way.
        let (signer, anchor) = if iss.starts_with(CHAIN_ISSUER_PREFIX) {
            let chain = chain_ref(&claims, lenient, &self.chain_keys)?;
            match self.rules {
                Rules::Choria => {
                    let org_sig = hex::decode(chain.org_tcs, true)
                        .map_err(|_| VerifyError::ChainNotSignedByOrg)?;
                    // Choria re-encodes the key in lowercase before checking.
                    let signed = format!("{}.{}", chain.jti, chain.public.to_hex());
                    if !self.org.verify(signed.as_bytes(), &org_sig) {
                        return Err(VerifyError::ChainNotSignedByOrg);
                    }
                }
                Rules::Lanyard => {
                    let grant = claims
                        .lanyard_chain
                        .as_ref()
                        .ok_or(VerifyError::MissingChainGrant)?;
                    self.check_grant(grant, chain.org_tcs, chain.jti, chain.public_hex)?;
                    // The chain key must not claim a later issuer expiry than the org signed.
                    let issexp = claims.issexp.unwrap_or_default();
                    if issexp != grant.exp {
                        return Err(VerifyError::ChainExpiryMismatch {
                            issexp,
                            granted: grant.exp,
                        });
                    }
                }
            }
            let leaf_jti = claims.jti.as_deref().unwrap_or_default();
            if !chain.public.verify(
                format!("{leaf_jti}.{}", chain.org_tcs).as_bytes(),
                &chain.chain_sig,
            ) {
                return Err(VerifyError::InvalidChainSignature);
            }
            self.chain_keys.remember(chain.public);
            (
                chain.public,
                Anchor::Chain {
                    jti: chain.jti.to_owned(),
                    public_key: chain.public,
                },
            )
        } else {
            if self.rules == Rules::Lanyard {
                self.check_org_issued(&claims, iss)?;
            }
            (self.org, Anchor::Org)
        };

        // 4: the JWT signature.
        if !signer.verify(parts.signing_input.as_bytes(), &parts.signature) {
            return Err(VerifyError::BadSignature);
        }

        // 5: time.
        let expires_at = self.check_time(&claims, now)?;

        // Revocation: the token itself, or the chain issuer that signed it (or, for
        // a chain issuer token, its own jti).
        if let Some(deny) = &self.deny {
            let jti = claims.jti.as_deref().unwrap_or_default();
            if deny.denies_jti(jti) || deny.denies_chain(jti) {
                return Err(VerifyError::Revoked(format!("token {jti}")));
            }
            if let Anchor::Chain { jti: chain, .. } = &anchor {
                if deny.denies_chain(chain) {
                    return Err(VerifyError::Revoked(format!("chain issuer {chain}")));
                }
            }
            // A revoked agent takes its own credential and everything it brokered.
            let agent = match claims.purpose.as_str() {
                PURPOSE_AGENT => claims.sub.as_deref(),
                _ => claims.agent_id.as_deref(),
            };
            if let Some(agent) = agent.filter(|a| deny.denies_agent(a)) {
                return Err(VerifyError::Revoked(format!("agent {agent}")));
            }
        }

        // lanyard's claim rules.
        let holder = match claims.public_key.as_deref() {
            Some(h) => {
                Some(hex::decode_array::<32>(h, lenient).map_err(|e| invalid("public_key", e))?)
            }
            None => None,
        };
        if self.rules == Rules::Lanyard {
            self.check_lanyard_claims(&claims, &anchor, holder.as_ref())?;
        }
        Ok(VerifiedToken {
            claims,
            anchor,
            holder,
            expires_at,
            grant_checked: self.rules == Rules::Lanyard,
        })
    }
}
