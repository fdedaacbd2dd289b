//! Signed deny lists: revocation that, like everything else, verifies with the org
//! public key alone.
//!
//! A deny list is a compact JWS signed by the org key (`purpose:
//! lanyard_deny_list`, `iss: I-<org hex>`). It names chain issuers (by their token
//! `jti`) and individual tokens (by `jti`). A [`Verifier`](crate::Verifier) given a
//! [`VerifiedDenyList`] refuses any token it names, and any leaf minted by a chain
//! issuer it names. `serial` only grows, so a holder can refuse an older list.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::claims::ORG_ISSUER_PREFIX;
use crate::jws::{self, JwsError};
use crate::keys::{KeyPair, PublicKey};
use crate::ksuid::{GenerateError, Ksuid};

/// `purpose` of a deny list.
pub const PURPOSE_DENY_LIST: &str = "lanyard_deny_list";

/// What is denied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Denied {
    /// Chain issuers, by the `jti` of their chain issuer token.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub chains: BTreeSet<String>,
    /// Individual tokens, by `jti`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub jtis: BTreeSet<String>,
    /// Agents, by id: their own credentials and every credential that names
    /// them as its broker (`agent_id` in tokens and JWT-SVIDs).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub agents: BTreeSet<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyClaims {
    purpose: String,
    iss: String,
    iat: u64,
    jti: String,
    serial: u64,
    deny: Denied,
    /// Set when a chain issuer (the online issuer) signed the list: its chain
    /// token, which the org key verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain: Option<String>,
}

/// Why a deny list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DenyListError {
    /// Not a well-formed EdDSA JWS.
    #[error("malformed deny list: {0}")]
    Malformed(#[from] JwsError),
    /// The claims are not a deny list's.
    #[error("not a deny list: {0}")]
    Claims(String),
    /// Not signed by this org.
    #[error("deny list not signed by the org")]
    NotSignedByOrg,
    /// Signed by a chain issuer whose token does not verify against the org key.
    #[error("deny list signed by an invalid chain issuer: {0}")]
    BadChain(String),
    /// Older than one already held.
    #[error("deny list serial {got} is older than the held serial {held}")]
    Rollback {
        /// The list's serial.
        got: u64,
        /// The serial already held.
        held: u64,
    },
}

/// A deny list whose org signature checked out. Only [`parse`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDenyList {
    serial: u64,
    issued_at: u64,
    denied: Denied,
    signer_chain: Option<String>,
}

impl VerifiedDenyList {
    /// The `jti` of the chain issuer that signed it; `None` if the org did. A
    /// holder refuses lists from a chain it already knows to be revoked.
    pub fn signer_chain(&self) -> Option<&str> {
        self.signer_chain.as_deref()
    }
    /// The list's serial.
    pub fn serial(&self) -> u64 {
        self.serial
    }
    /// When the org signed it.
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }
    /// What it denies.
    pub fn denied(&self) -> &Denied {
        &self.denied
    }
    /// Whether a chain issuer (its token `jti`) is denied.
    pub fn denies_chain(&self, chain_jti: &str) -> bool {
        self.denied.chains.contains(chain_jti)
    }
    /// Whether a token `jti` is denied.
    pub fn denies_jti(&self, jti: &str) -> bool {
        self.denied.jtis.contains(jti)
    }
    /// Whether an agent (its id) is denied, with what it brokered.
    pub fn denies_agent(&self, agent_id: &str) -> bool {
        self.denied.agents.contains(agent_id)
    }
}

/// Verifies a deny list against the org key at Unix time `now`: signed by the
/// org itself, or by a chain issuer with the `issuer` role whose token it
/// carries and that is valid *now*. The list's own `iat` is the signer's word,
/// so it never decides whether the signer was valid: an expired chain's seed
/// could otherwise backdate a list, and a standalone host's chain could sign one.
pub fn parse(text: &str, org: &PublicKey, now: u64) -> Result<VerifiedDenyList, DenyListError> {
    parse_at(text, org, Some(now))
}

/// Re-reads a list its holder accepted earlier (with [`parse`]) and stored
/// where only it can write: the signatures are checked, and a chain signer is
/// checked as of the list's own `iat`, since the chain may have expired or been
/// rotated since. Denials only ever refuse, so an old list stays useful; never
/// use this for a list that arrives from elsewhere.
pub fn parse_held(text: &str, org: &PublicKey) -> Result<VerifiedDenyList, DenyListError> {
    parse_at(text, org, None)
}

fn parse_at(
    text: &str,
    org: &PublicKey,
    now: Option<u64>,
) -> Result<VerifiedDenyList, DenyListError> {
    let parts = jws::parse(text.trim())?;
    let signed_by_org = org.verify(parts.signing_input.as_bytes(), &parts.signature);
    let parsed = serde_json::from_slice::<DenyClaims>(&parts.payload);
    let c = if signed_by_org {
        let c = parsed.map_err(|e| DenyListError::Claims(e.to_string()))?;
        if c.chain.is_some() || c.iss != format!("{ORG_ISSUER_PREFIX}{}", org.to_hex()) {
            return Err(DenyListError::NotSignedByOrg);
        }
        c
    } else {
        // Not the org's signature: only a list carrying a chain token can still
        // be valid. Its claims name the signer; nothing is trusted until the
        // chain verifies against the org key and the list against the chain key.
        let c = match parsed {
            Ok(c) if c.chain.is_some() => c,
            _ => return Err(DenyListError::NotSignedByOrg),
        };
        let chain = c.chain.as_deref().unwrap_or_default();
        let verified = crate::Verifier::new(*org)
            .verify(chain, now.unwrap_or(c.iat))
            .map_err(|e| DenyListError::BadChain(e.to_string()))?;
        if !verified.has_role(crate::claims::ROLE_ISSUER) {
            return Err(DenyListError::BadChain(
                "the chain has no issuer role, so it may not sign deny lists".into(),
            ));
        }
        let (Some(key), Some(jti), true) = (
            verified.holder(),
            verified.claims().jti.as_deref(),
            matches!(verified.anchor(), crate::Anchor::Org)
                && verified.claims().lanyard_chain.is_some(),
        ) else {
            return Err(DenyListError::BadChain("not a chain issuer token".into()));
        };
        if c.iss != format!("C-{jti}.{}", key.to_hex()) {
            return Err(DenyListError::BadChain(
                "iss does not name the chain".into(),
            ));
        }
        if !key.verify(parts.signing_input.as_bytes(), &parts.signature) {
            return Err(DenyListError::BadChain(
                "signature is not the chain's".into(),
            ));
        }
        c
    };
    if c.purpose != PURPOSE_DENY_LIST {
        return Err(DenyListError::Claims(format!("purpose is {:?}", c.purpose)));
    }
    let signer_chain = c
        .chain
        .is_some()
        .then(|| c.iss.strip_prefix("C-").and_then(|r| r.split('.').next()))
        .flatten()
        .map(str::to_owned);
    Ok(VerifiedDenyList {
        serial: c.serial,
        issued_at: c.iat,
        denied: c.deny,
        signer_chain,
    })
}

/// Signs a deny list with the org key; `serial` must exceed the previous list's.
pub fn sign(
    org: &KeyPair,
    denied: &Denied,
    serial: u64,
    now: u64,
) -> Result<String, GenerateError> {
    let claims = DenyClaims {
        purpose: PURPOSE_DENY_LIST.into(),
        iss: format!("{ORG_ISSUER_PREFIX}{}", org.public().to_hex()),
        iat: now,
        jti: Ksuid::generate(now)?.to_string(),
        serial,
        deny: denied.clone(),
        chain: None,
    };
    let payload = serde_json::to_vec(&claims).unwrap_or_default();
    Ok(jws::encode(&payload, |m| org.sign(m)))
}

/// Signs a deny list with a chain issuer's key (the online issuer, which never
/// holds the org seed). Verifiers need only the org key: the list carries the
/// chain token.
pub fn sign_by_chain(
    chain: &crate::ChainIssuer,
    denied: &Denied,
    serial: u64,
    now: u64,
) -> Result<String, GenerateError> {
    let claims = DenyClaims {
        purpose: PURPOSE_DENY_LIST.into(),
        iss: format!("C-{}", chain.issuer_id()),
        iat: now,
        jti: Ksuid::generate(now)?.to_string(),
        serial,
        deny: denied.clone(),
        chain: Some(chain.token().to_owned()),
    };
    let payload = serde_json::to_vec(&claims).unwrap_or_default();
    Ok(jws::encode(&payload, |m| chain.sign_raw(m)))
}

/// Keeps `new` only if it is not older than `held`: a higher serial, or the
/// same serial with the same content (the issuer re-sends its current list).
/// A different list under a serial already held is refused like an older one,
/// so nobody can swap what a serial means.
///
/// One exception: a list that revokes the chain which signed the held list
/// replaces it whatever its serial. Otherwise a compromised issuer chain could
/// sign one list with the highest serial and no word about itself, and its
/// holders would refuse every later list, its own revocation included.
pub fn newer(
    held: Option<&VerifiedDenyList>,
    new: VerifiedDenyList,
) -> Result<VerifiedDenyList, DenyListError> {
    match held {
        Some(h) if h.signer_chain().is_some_and(|c| new.denies_chain(c)) => Ok(new),
        Some(h) if new.serial < h.serial || (new.serial == h.serial && new.denied != h.denied) => {
            Err(DenyListError::Rollback {
                got: new.serial,
                held: h.serial,
            })
        }
        _ => Ok(new),
    }
}
