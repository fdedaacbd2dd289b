//! Checking a leaf against its chain issuer's constraints; shared by mint and verify
//! so that what the issuer refuses to sign and what a verifier refuses to accept
//! can never drift apart.

use crate::claims::Constraints;
use crate::subject;

/// Which constraint a leaf breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConstraintViolation {
    /// The subject is outside every allowed prefix.
    #[error("subject {subject:?} is outside the chain issuer's subject prefixes {allowed:?}")]
    Subject {
        /// The leaf's subject.
        subject: String,
        /// The allowed prefixes.
        allowed: Vec<String>,
    },
    /// The purpose is not allowed.
    #[error("purpose {purpose:?} is not among the chain issuer's purposes {allowed:?}")]
    Purpose {
        /// The leaf's purpose.
        purpose: String,
        /// The allowed purposes.
        allowed: Vec<String>,
    },
    /// A network is not allowed, or the leaf names none under a network-bound issuer.
    #[error("networks {networks:?} are not a non-empty subset of the chain issuer's networks {allowed:?}")]
    Network {
        /// The leaf's networks.
        networks: Vec<String>,
        /// The allowed networks.
        allowed: Vec<String>,
    },
}

/// Checks a leaf's purpose, subject and networks against `c`.
pub fn check(
    c: &Constraints,
    purpose: &str,
    subject: Option<&str>,
    networks: &[String],
) -> Result<(), ConstraintViolation> {
    if !c.purposes.is_empty() && !c.purposes.iter().any(|p| p == purpose) {
        return Err(ConstraintViolation::Purpose {
            purpose: purpose.to_owned(),
            allowed: c.purposes.clone(),
        });
    }
    if !c.subject_prefixes.is_empty() {
        let sub = subject.unwrap_or_default();
        if !c.subject_prefixes.iter().any(|p| subject::is_under(sub, p)) {
            return Err(ConstraintViolation::Subject {
                subject: sub.to_owned(),
                allowed: c.subject_prefixes.clone(),
            });
        }
    }
    if !c.networks.is_empty()
        && (networks.is_empty() || !networks.iter().all(|n| c.networks.contains(n)))
    {
        return Err(ConstraintViolation::Network {
            networks: networks.to_vec(),
            allowed: c.networks.clone(),
        });
    }
    Ok(())
}
