//! The rule checks [`Verifier::verify`] runs one after another (the org grant,
//! org-issued tokens, time, lanyard's claim rules) and the parsing of a chain
//! issuer's claims they rely on. Kept apart so that `verify` reads as the order of
//! the checks, not their details.

use super::{Anchor, ChainKeyCache, Rules, Verifier, VerifyError};
use crate::claims::{
    ChainGrant, Claims, Confirmation, CHAIN_ISSUER_PREFIX, ORG_ISSUER_PREFIX, PURPOSE_AGENT,
    PURPOSE_WORKLOAD, ROLE_ISSUER,
};
use crate::constraints;
use crate::hex;
use crate::keys::PublicKey;
use crate::ksuid::Ksuid;
use crate::subject;

impl Verifier {
    /// The org grant covers Choria's `tcs` part 1, the chain's id, key, expiry and
    /// constraints, so this one org signature proves all of them.
    pub(super) fn check_grant(
        &self,
        grant: &ChainGrant,
        org_tcs: &str,
        jti: &str,
        public_hex: &str,
    ) -> Result<(), VerifyError> {
        match grant.v {
            // A v1 grant names no roles; one that does was not signed that way.
            1 if grant.roles.is_empty() => {}
            2 => {}
            v => {
                return Err(invalid(
                    "lanyard_chain",
                    format!("unsupported version {v}, or roles in a version 1 grant"),
                ))
            }
        }
        let sig = hex::decode(&grant.sig, false).map_err(|_| VerifyError::ChainNotSignedByOrg)?;
        let msg = ChainGrant::signed_bytes(
            grant.v,
            org_tcs,
            jti,
            public_hex,
            grant.exp,
            &grant.constraints,
            &grant.roles,
        );
        if !self.org.verify(&msg, &sig) {
            return Err(VerifyError::ChainNotSignedByOrg);
        }
        Ok(())
    }

    /// lanyard rules for a token the org signed itself: it must be a chain issuer
    /// token naming this org, with its grant.
    pub(super) fn check_org_issued(&self, claims: &Claims, iss: &str) -> Result<(), VerifyError> {
        let Some(org_hex) = iss.strip_prefix(ORG_ISSUER_PREFIX) else {
            return Err(VerifyError::UnsupportedIssuer(iss.to_owned()));
        };
        if org_hex != self.org.to_hex() {
            return Err(VerifyError::ChainNotSignedByOrg);
        }
        let (jti, public_hex, tcs) = required_chain_claims(claims)?;
        if tcs.contains('.') {
            return Err(invalid("tcs", "a chain issuer's tcs has exactly one part"));
        }
        let grant = claims
            .lanyard_chain
            .as_ref()
            .ok_or(VerifyError::MissingChainGrant)?;
        self.check_grant(grant, tcs, jti, public_hex)?;
        match claims.exp {
            Some(exp) if exp == grant.exp => Ok(()),
            Some(exp) => Err(VerifyError::ChainExpiryMismatch {
                issexp: exp,
                granted: grant.exp,
            }),
            None => Err(VerifyError::MissingClaim("exp")),
        }
    }

    pub(super) fn check_time(&self, claims: &Claims, now: u64) -> Result<Option<u64>, VerifyError> {
        let chained = claims
            .iss
            .as_deref()
            .is_some_and(|i| i.starts_with(CHAIN_ISSUER_PREFIX));
        let mut expires_at = match self.rules {
            // Choria: exp is optional on direct tokens; issexp counts on chained ones.
            Rules::Choria => claims.exp,
            Rules::Lanyard => Some(claims.exp.ok_or(VerifyError::MissingClaim("exp"))?),
        };
        if chained {
            expires_at = claims.effective_expiry();
        }
        if self.rules == Rules::Lanyard {
            if let Some(grant) = &claims.lanyard_chain {
                expires_at = expires_at.map(|e| e.min(grant.exp));
            }
        }
        if let Some(exp) = expires_at {
            if now >= exp {
                return Err(VerifyError::Expired {
                    expired_at: exp,
                    now,
                });
            }
        }
        if let Some(nbf) = claims.nbf {
            if nbf > now.saturating_add(self.leeway_secs) {
                return Err(VerifyError::NotYetValid { nbf, now });
            }
        }
        if let Some(iat) = claims.iat {
            if iat > now.saturating_add(self.leeway_secs) {
                return Err(VerifyError::IssuedInFuture { iat, now });
            }
        }
        Ok(expires_at)
    }

    pub(super) fn check_lanyard_claims(
        &self,
        claims: &Claims,
        anchor: &Anchor,
        holder: Option<&[u8; 32]>,
    ) -> Result<(), VerifyError> {
        // One subject grammar for every purpose: a Choria purpose is no way
        // around the prefix check below (`…/web/../admin`, `…/web:admin`).
        if let Some(sub) = claims.sub.as_deref() {
            subject::validate_for(&claims.purpose, sub)?;
        }
        // Choria consumers read `callerid` / `identity`, not `sub`: under
        // lanyard rules they must name the same subject, or a constrained
        // chain could put an in-prefix `sub` beside `callerid: choria=admin`.
        // (A chain issuer token's own `callerid` is its name, and it has no
        // `sub`; only leaves are held to this.)
        if let Anchor::Chain { .. } = anchor {
            for name in ["callerid", "identity"] {
                if let Some(v) = claims.extra.get(name) {
                    if v.as_str() != claims.sub.as_deref() {
                        return Err(invalid(
                            if name == "callerid" {
                                "callerid"
                            } else {
                                "identity"
                            },
                            "must equal sub",
                        ));
                    }
                }
            }
        }
        if let Anchor::Chain { .. } = anchor {
            let grant = claims
                .lanyard_chain
                .as_ref()
                .ok_or(VerifyError::MissingChainGrant)?;
            constraints::check(
                &grant.constraints,
                &claims.purpose,
                claims.sub.as_deref(),
                &claims.networks,
            )?;
            // Only an issuer chain vouches for a node: any other chain's seed
            // (a standalone gateway's) must not be able to pose as an agent.
            if claims.purpose == PURPOSE_AGENT && !grant.has_role(ROLE_ISSUER) {
                return Err(VerifyError::RoleMissing {
                    role: ROLE_ISSUER,
                    purpose: claims.purpose.clone(),
                });
            }
        }
        if matches!(claims.purpose.as_str(), PURPOSE_WORKLOAD | PURPOSE_AGENT) {
            if claims.sub.is_none() {
                return Err(VerifyError::MissingClaim("sub"));
            }
            // Not a bearer token: without a holder key nothing can prove possession.
            if holder.is_none() {
                return Err(VerifyError::MissingClaim("public_key"));
            }
        }
        if let (Some(cnf), Some(holder)) = (&claims.cnf, holder) {
            if *cnf != Confirmation::for_bytes(holder) {
                return Err(VerifyError::ConfirmationMismatch);
            }
        }
        if let Some(aud) = &self.audience {
            if !claims.aud.iter().any(|a| a == aud) {
                return Err(VerifyError::AudienceMismatch {
                    expected: aud.clone(),
                    actual: claims.aud.clone(),
                });
            }
        }
        if !self.networks.is_empty() && !claims.networks.iter().any(|n| self.networks.contains(n)) {
            return Err(VerifyError::NetworkNotAccepted {
                actual: claims.networks.clone(),
                accepted: self.networks.clone(),
            });
        }
        Ok(())
    }
}

pub(super) fn invalid(claim: &'static str, reason: impl ToString) -> VerifyError {
    VerifyError::InvalidClaim {
        claim,
        reason: reason.to_string(),
    }
}

/// A claim Choria requires: present and not empty.
fn required_text<'a>(v: &'a Option<String>, name: &'static str) -> Result<&'a str, VerifyError> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .ok_or(VerifyError::MissingClaim(name))
}

/// A time claim Choria requires: present and not zero.
fn required_time(v: Option<u64>, name: &'static str) -> Result<u64, VerifyError> {
    v.filter(|&t| t != 0).ok_or(VerifyError::MissingClaim(name))
}

/// Presence of `jti`, `public_key`, `tcs`, `iat`, `exp`, and `jti`'s time == `iat`:
/// Choria's `verifyIssuerRequiredClaims`.
fn required_chain_claims(claims: &Claims) -> Result<(&str, &str, &str), VerifyError> {
    let public_hex = required_text(&claims.public_key, "public_key")?;
    let tcs = required_text(&claims.tcs, "tcs")?;
    let jti = required_text(&claims.jti, "jti")?;
    let iat = required_time(claims.iat, "iat")?;
    required_time(claims.exp, "exp")?;
    if Ksuid::parse(jti)?.unix_secs() != iat {
        return Err(VerifyError::IdNotBasedOnIssuedTime);
    }
    Ok((jti, public_hex, tcs))
}

pub(super) struct ChainRef<'a> {
    pub(super) jti: &'a str,
    pub(super) public_hex: &'a str,
    pub(super) public: PublicKey,
    pub(super) org_tcs: &'a str,
    pub(super) chain_sig: Vec<u8>,
}

/// Splits `iss = C-<jti>.<pub>` and `tcs = <org sig>.<chain sig>` (Choria's
/// `ParseChainIssuerData`).
pub(super) fn chain_ref<'a>(
    claims: &'a Claims,
    lenient: bool,
    keys: &ChainKeyCache,
) -> Result<ChainRef<'a>, VerifyError> {
    required_chain_claims(claims)?;
    required_time(claims.issexp, "issexp")?;
    let iss = claims.iss.as_deref().unwrap_or_default();
    let data = iss.strip_prefix(CHAIN_ISSUER_PREFIX).unwrap_or_default();
    let mut it = data.split('.');
    let (Some(jti), Some(public_hex), None) = (it.next(), it.next(), it.next()) else {
        return Err(VerifyError::UnsupportedIssuer(iss.to_owned()));
    };
    if jti.is_empty() || public_hex.is_empty() {
        return Err(VerifyError::UnsupportedIssuer(iss.to_owned()));
    }
    let public = hex::decode_array::<32>(public_hex, lenient)
        .map_err(crate::KeyError::from)
        .and_then(|b| keys.get_or_decode(&b))
        .map_err(|e| invalid("iss", format!("chain public key: {e}")))?;
    let tcs = claims.tcs.as_deref().unwrap_or_default();
    let mut it = tcs.split('.');
    let (Some(org_tcs), Some(sig), None) = (it.next(), it.next(), it.next()) else {
        return Err(invalid(
            "tcs",
            format!(
                "a leaf's tcs has exactly 2 dot-separated parts, found {}",
                tcs.split('.').count()
            ),
        ));
    };
    if org_tcs.is_empty() || sig.is_empty() {
        return Err(invalid("tcs", "empty part"));
    }
    let chain_sig = hex::decode(sig, lenient).map_err(|e| invalid("tcs", e))?;
    if !lenient {
        hex::decode(org_tcs, false).map_err(|e| invalid("tcs", e))?;
    }
    Ok(ChainRef {
        jti,
        public_hex,
        public,
        org_tcs,
        chain_sig,
    })
}
