//! Minting: the org delegates a chain issuer, the chain issuer mints leaves.
//!
//! Every byte that is signed follows `interop/choria/README.md`; lanyard's
//! [`ChainGrant`] is added beside Choria's claims, never in place of them.

use std::collections::BTreeMap;

use crate::claims::{
    ChainGrant, Claims, Confirmation, Constraints, CHAIN_ISSUER_PREFIX, KNOWN_PURPOSES,
    KNOWN_ROLES, ORG_ISSUER_PREFIX, PURPOSE_AGENT, PURPOSE_CHORIA_CLIENT, PURPOSE_CHORIA_SERVER,
    PURPOSE_WORKLOAD, ROLE_ISSUER,
};
use crate::constraints::{self, ConstraintViolation};
use crate::keys::{KeyPair, PublicKey};
use crate::ksuid::{GenerateError, Ksuid};
use crate::subject::{self, SubjectError};
use crate::{hex, jws};

/// Why a token was not minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// Random source failure or a time outside the KSUID range.
    #[error(transparent)]
    Id(#[from] GenerateError),
    /// A validity of zero was asked for.
    #[error("validity must be more than zero")]
    ZeroValidity,
    /// The chain issuer has expired.
    #[error("chain issuer expired at {expired_at} (now {now})")]
    IssuerExpired {
        /// The chain issuer's expiry.
        expired_at: u64,
        /// The time of the request.
        now: u64,
    },
    /// The leaf would outlive the chain issuer and clamping was not allowed.
    #[error("requested expiry {requested} is beyond the chain issuer's expiry {issuer_exp}; ask for a shorter validity")]
    BeyondIssuerExpiry {
        /// The expiry asked for.
        requested: u64,
        /// The chain issuer's expiry.
        issuer_exp: u64,
    },
    /// The leaf is outside the chain issuer's constraints.
    #[error("refused: {0}")]
    Constraint(#[from] ConstraintViolation),
    /// The subject is not a SPIFFE ID or `urn:` name.
    #[error("invalid subject: {0}")]
    Subject(#[from] SubjectError),
    /// The purpose is not one lanyard mints.
    #[error("unknown purpose {0:?}")]
    UnknownPurpose(String),
    /// The role is not one lanyard grants.
    #[error("unknown role {0:?} (known: issuer)")]
    UnknownRole(String),
    /// The chain issuer lacks the role this purpose needs.
    #[error("refused: this chain issuer has no {role:?} role, which purpose {purpose:?} needs (delegate it with --role {role})")]
    RoleMissing {
        /// The role.
        role: &'static str,
        /// The purpose asked for.
        purpose: String,
    },
    /// The chain issuer credential is unusable.
    #[error("not a usable lanyard chain issuer credential: {0}")]
    NotAChainIssuer(&'static str),
    /// The seed does not belong to the chain issuer credential.
    #[error("the seed's public key {seed_public} does not match the credential's public_key {token_public}")]
    KeyMismatch {
        /// From the seed.
        seed_public: String,
        /// From the token.
        token_public: String,
    },
}

/// What the org grants a chain issuer.
#[derive(Debug, Clone, Default)]
pub struct DelegateRequest {
    /// Human name, written to Choria's `callerid`.
    pub name: String,
    /// Lifetime in seconds.
    pub validity_secs: u64,
    /// What it may sign.
    pub constraints: Constraints,
    /// What it may act as ([`ROLE_ISSUER`]); empty for a standalone host's
    /// chain, which signs workload credentials only.
    pub roles: Vec<String>,
}

/// Signs a chain issuer token for `chain_public` with the org key.
pub fn delegate(
    org: &KeyPair,
    chain_public: &PublicKey,
    req: &DelegateRequest,
    now: u64,
) -> Result<String, MintError> {
    if req.validity_secs == 0 {
        return Err(MintError::ZeroValidity);
    }
    let constraints = normalize(&req.constraints)?;
    let mut roles = req.roles.clone();
    roles.sort();
    roles.dedup();
    if let Some(r) = roles.iter().find(|r| !KNOWN_ROLES.contains(&r.as_str())) {
        return Err(MintError::UnknownRole(r.clone()));
    }
    // Without roles the grant stays version 1, byte for byte as before.
    let v = if roles.is_empty() { 1 } else { 2 };
    let jti = Ksuid::generate(now)?.to_string();
    let public_hex = chain_public.to_hex();
    let exp = now.saturating_add(req.validity_secs);
    let tcs = hex::encode(&org.sign(format!("{jti}.{public_hex}").as_bytes()));
    let grant_sig = org.sign(&ChainGrant::signed_bytes(
        v,
        &tcs,
        &jti,
        &public_hex,
        exp,
        &constraints,
        &roles,
    ));
    let mut extra = serde_json::Map::new();
    let name = if req.name.is_empty() {
        "lanyard_chain_issuer"
    } else {
        &req.name
    };
    extra.insert("callerid".into(), name.into());
    let claims = Claims {
        purpose: PURPOSE_CHORIA_CLIENT.into(),
        tcs: Some(tcs),
        public_key: Some(public_hex),
        iss: Some(format!("{ORG_ISSUER_PREFIX}{}", org.public().to_hex())),
        exp: Some(exp),
        nbf: Some(now),
        iat: Some(now),
        jti: Some(jti),
        lanyard_chain: Some(ChainGrant {
            v,
            exp,
            constraints,
            roles,
            sig: hex::encode(&grant_sig),
        }),
        extra,
        ..Claims::default()
    };
    Ok(sign(&claims, org))
}

/// Sorted, de-duplicated constraints with every subject prefix well formed.
fn normalize(c: &Constraints) -> Result<Constraints, MintError> {
    let tidy = |v: &Vec<String>| {
        let mut v = v.clone();
        v.sort();
        v.dedup();
        v
    };
    // A prefix is stored in its normal form: a valid subject, without the one
    // trailing separator a user may write (`spiffe://td/ns/`, `urn:x:gw:`).
    let mut prefixes = Vec::with_capacity(c.subject_prefixes.len());
    for p in &c.subject_prefixes {
        let sep = if p.starts_with("spiffe://") { '/' } else { ':' };
        let p = p.strip_suffix(sep).unwrap_or(p);
        subject::validate(p)?;
        prefixes.push(p.to_owned());
    }
    for p in &c.purposes {
        if !KNOWN_PURPOSES.contains(&p.as_str()) {
            return Err(MintError::UnknownPurpose(p.clone()));
        }
    }
    Ok(Constraints {
        subject_prefixes: tidy(&prefixes),
        purposes: tidy(&c.purposes),
        networks: tidy(&c.networks),
    })
}

fn sign(claims: &Claims, key: &KeyPair) -> String {
    // Serializing a struct of strings, numbers and maps with string keys cannot fail.
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    jws::encode(&payload, |input| key.sign(input))
}

/// A leaf to mint.
#[derive(Debug, Clone)]
pub struct LeafRequest {
    /// `lanyard_workload` unless said otherwise.
    pub purpose: String,
    /// SPIFFE ID or `urn:` name.
    pub subject: String,
    /// Lifetime in seconds.
    pub validity_secs: u64,
    /// `aud`.
    pub audiences: Vec<String>,
    /// `networks`.
    pub networks: Vec<String>,
    /// The holder's key; the holder keeps the seed.
    pub holder: PublicKey,
    /// Attested attributes.
    pub attrs: BTreeMap<String, serde_json::Value>,
    /// Shorten the leaf to the chain issuer's expiry instead of refusing.
    pub clamp_to_issuer: bool,
    /// The agent that brokered it (the issuer sets it), as `agent_id`.
    pub agent_id: Option<String>,
}

impl LeafRequest {
    /// A workload leaf for `subject` held by `holder`.
    pub fn workload(subject: impl Into<String>, holder: PublicKey, validity_secs: u64) -> Self {
        Self {
            purpose: PURPOSE_WORKLOAD.into(),
            subject: subject.into(),
            validity_secs,
            audiences: Vec::new(),
            networks: Vec::new(),
            holder,
            attrs: BTreeMap::new(),
            clamp_to_issuer: false,
            agent_id: None,
        }
    }
}

/// A chain issuer credential: its token and its key, ready to mint leaves.
pub struct ChainIssuer {
    key: KeyPair,
    token: String,
    jti: String,
    public_hex: String,
    tcs: String,
    exp: u64,
    grant: ChainGrant,
    claims: Claims,
}

impl std::fmt::Debug for ChainIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainIssuer")
            .field("jti", &self.jti)
            .field("public_key", &self.public_hex)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

impl ChainIssuer {
    /// Loads a chain issuer from its token and seed. This checks the two belong
    /// together and that the token has the shape of a lanyard chain issuer; it
    /// does not check the org signature (the minted leaves carry it to verifiers).
    pub fn new(token: &str, key: KeyPair) -> Result<Self, MintError> {
        let parts =
            jws::parse(token.trim()).map_err(|_| MintError::NotAChainIssuer("not a JWT"))?;
        let claims: Claims = serde_json::from_slice(&parts.payload)
            .map_err(|_| MintError::NotAChainIssuer("claims are not valid"))?;
        if !claims
            .iss
            .as_deref()
            .is_some_and(|i| i.starts_with(ORG_ISSUER_PREFIX))
        {
            return Err(MintError::NotAChainIssuer("iss is not I-<org public key>"));
        }
        let (Some(jti), Some(public_hex), Some(tcs), Some(exp), Some(grant)) = (
            claims.jti.clone(),
            claims.public_key.clone(),
            claims.tcs.clone(),
            claims.exp,
            claims.lanyard_chain.clone(),
        ) else {
            return Err(MintError::NotAChainIssuer(
                "jti, public_key, tcs, exp or lanyard_chain is missing (delegate it with `lanyard org delegate`)",
            ));
        };
        if tcs.contains('.') {
            return Err(MintError::NotAChainIssuer(
                "tcs has more than one part: this is a leaf",
            ));
        }
        let seed_public = key.public().to_hex();
        if seed_public != public_hex {
            return Err(MintError::KeyMismatch {
                seed_public,
                token_public: public_hex,
            });
        }
        Ok(Self {
            key,
            token: token.trim().to_owned(),
            jti,
            public_hex,
            tcs,
            exp,
            grant,
            claims,
        })
    }

    /// The chain issuer token's claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The chain issuer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `<jti>.<public key hex>`: what leaves name after `C-` in `iss`.
    pub fn issuer_id(&self) -> String {
        format!("{}.{}", self.jti, self.public_hex)
    }

    /// The chain token's `jti` (what a deny list names to revoke this chain).
    pub fn jti(&self) -> &str {
        &self.jti
    }

    /// The chain key's public half.
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }

    /// Signs `msg` with the chain key (deny lists; never a token payload a
    /// caller chose, which `mint` builds itself).
    pub(crate) fn sign_raw(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg)
    }

    /// The org's grant to this chain (as the token carries it; unverified here).
    pub fn grant(&self) -> &ChainGrant {
        &self.grant
    }

    /// The name the org delegated it under (Choria's `callerid`).
    pub fn name(&self) -> Option<&str> {
        self.claims.extra.get("callerid").and_then(|v| v.as_str())
    }

    /// When this chain issuer expires.
    pub fn expires_at(&self) -> u64 {
        self.exp
    }

    /// Signs a leaf for `req`.
    pub fn mint(&self, req: &LeafRequest, now: u64) -> Result<String, MintError> {
        if req.validity_secs == 0 {
            return Err(MintError::ZeroValidity);
        }
        if now >= self.exp {
            return Err(MintError::IssuerExpired {
                expired_at: self.exp,
                now,
            });
        }
        if !KNOWN_PURPOSES.contains(&req.purpose.as_str()) {
            return Err(MintError::UnknownPurpose(req.purpose.clone()));
        }
        // One subject grammar for every purpose, as the verifier applies it.
        subject::validate_for(&req.purpose, &req.subject)?;
        constraints::check(
            &self.grant.constraints,
            &req.purpose,
            Some(&req.subject),
            &req.networks,
        )?;
        if req.purpose == PURPOSE_AGENT && !self.grant.has_role(ROLE_ISSUER) {
            return Err(MintError::RoleMissing {
                role: ROLE_ISSUER,
                purpose: req.purpose.clone(),
            });
        }
        let requested = now.saturating_add(req.validity_secs);
        if requested > self.exp && !req.clamp_to_issuer {
            return Err(MintError::BeyondIssuerExpiry {
                requested,
                issuer_exp: self.exp,
            });
        }
        let jti = Ksuid::generate(now)?.to_string();
        let chain_sig = self.key.sign(format!("{jti}.{}", self.tcs).as_bytes());
        let mut extra = serde_json::Map::new();
        // Choria consumers look for these names; keep them in step with `sub`.
        match req.purpose.as_str() {
            PURPOSE_CHORIA_CLIENT => {
                drop(extra.insert("callerid".into(), req.subject.clone().into()))
            }
            PURPOSE_CHORIA_SERVER => {
                drop(extra.insert("identity".into(), req.subject.clone().into()))
            }
            _ => {}
        }
        let claims = Claims {
            purpose: req.purpose.clone(),
            tcs: Some(format!("{}.{}", self.tcs, hex::encode(&chain_sig))),
            public_key: Some(req.holder.to_hex()),
            issexp: Some(self.exp),
            iss: Some(format!(
                "{CHAIN_ISSUER_PREFIX}{}.{}",
                self.jti, self.public_hex
            )),
            sub: Some(req.subject.clone()),
            aud: req.audiences.clone(),
            exp: Some(requested.min(self.exp)),
            nbf: Some(now),
            iat: Some(now),
            jti: Some(jti),
            networks: req.networks.clone(),
            cnf: Some(Confirmation::for_key(&req.holder)),
            attrs: req.attrs.clone(),
            lanyard_chain: Some(self.grant.clone()),
            agent_id: req.agent_id.clone(),
            extra,
        };
        Ok(sign(&claims, &self.key))
    }
}
