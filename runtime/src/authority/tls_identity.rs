//! Who may be the issuer: the chain credential behind the issuer's TLS leaf.
//!
//! An X.509 path to the org root only proves that *some* org-delegated chain
//! signed the leaf. Every chain has one, a standalone gateway's included, so
//! that alone let any chain pose as the issuer (and collect join tokens). The
//! role lives in the org-signed grant of the chain's token, not in X.509, so the
//! issuer carries its chain token in its TLS leaf ([`CHAIN_TOKEN_OID`]) and the
//! agent checks, during the handshake and before sending anything:
//! 1. the token verifies with the org key *now* (lanyard rules, grant included);
//! 2. its grant has the `issuer` role;
//! 3. the chain is not on the deny list the agent holds;
//! 4. the leaf's signature verifies with the token's key, which binds the
//!    token to this very leaf, whichever intermediates were presented;
//! 5. with `[upstream] issuer_id` set, the chain's name or id is that one.

use std::sync::{Arc, RwLock};

use lanyard_token::claims::ROLE_ISSUER;
use lanyard_token::{Anchor, PublicKey, VerifiedDenyList, Verifier};
use x509_parser::prelude::{FromDer as _, X509Certificate};

/// The non-critical extension in the issuer's TLS leaf that holds its chain
/// token (a DER UTF8String). lanyard has no registered enterprise number yet;
/// this private arc is read by lanyard agents only and is ignored by every
/// other verifier.
pub const CHAIN_TOKEN_OID: [u64; 9] = [1, 3, 6, 1, 4, 1, 65535, 7, 1];
/// id-Ed25519 (RFC 8410): chain keys are ed25519, so is the leaf's signature.
const ED25519_OID: &str = "1.3.101.112";

/// Why a presented issuer identity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The leaf does not parse, or carries no chain token.
    #[error("the issuer's TLS leaf carries no chain token (an issuer older than this agent, or not an issuer)")]
    NoChainToken,
    /// The chain token does not verify with the org key now.
    #[error("the issuer's chain token does not verify: {0}")]
    ChainToken(String),
    /// The chain was not delegated with the issuer role.
    #[error("chain {0} has no issuer role: it may not act as the issuer")]
    NotAnIssuer(String),
    /// The chain is on the deny list.
    #[error("chain {0} is revoked")]
    Revoked(String),
    /// The leaf was not signed by the key in the chain token.
    #[error("the TLS leaf was not signed by the chain token's key")]
    NotSignedByChain,
    /// The chain is not the one `[upstream] issuer_id` names.
    #[error("chain {got} is not the configured issuer {want}")]
    NotTheConfiguredIssuer {
        /// The chain's name and id.
        got: String,
        /// `issuer_id`.
        want: String,
    },
}

/// The DER UTF8String holding `token`, for the leaf's extension.
pub fn chain_token_extension(token: &str) -> rcgen::CustomExtension {
    rcgen::CustomExtension::from_oid_content(
        &CHAIN_TOKEN_OID,
        crate::der::tlv(0x0c, token.as_bytes()),
    )
}

/// The UTF8String's text, if `der` is exactly one.
fn utf8_string(der: &[u8]) -> Option<&str> {
    std::str::from_utf8(crate::der::body(0x0c, der)?).ok()
}

/// Whether `cert_der` is a CA certificate for `chain_key` that the org signed:
/// an ed25519 signature by `org` over its TBS, and `chain_key` as its subject
/// key. The issuer uses this on every chain certificate a replica publishes
/// before it serves one as a bundle root.
pub fn org_certifies(cert_der: &[u8], org: &PublicKey, chain_key: &PublicKey) -> bool {
    let Ok((rest, cert)) = X509Certificate::from_der(cert_der) else {
        return false;
    };
    rest.is_empty()
        && cert.signature_algorithm.algorithm.to_id_string() == ED25519_OID
        && cert.public_key().algorithm.algorithm.to_id_string() == ED25519_OID
        && cert.public_key().subject_public_key.data.as_ref() == chain_key.as_bytes()
        && org.verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
}

/// What an agent requires of its issuer; shared with the upstream link, which
/// updates the deny list as lists arrive.
#[derive(Debug, Clone)]
pub struct IssuerPolicy {
    org: PublicKey,
    issuer_id: Option<String>,
    deny: Arc<RwLock<Option<VerifiedDenyList>>>,
    legacy: bool,
}

impl IssuerPolicy {
    /// Any non-revoked issuer-role chain of `org`, or only `issuer_id` (a chain
    /// name or chain token jti) when set. `deny` is read at every handshake.
    pub fn new(
        org: PublicKey,
        issuer_id: Option<String>,
        deny: Arc<RwLock<Option<VerifiedDenyList>>>,
    ) -> Self {
        Self {
            org,
            issuer_id,
            deny,
            legacy: false,
        }
    }

    /// For the upgrade window only (`[upstream] legacy_issuer`): a leaf with
    /// no chain token, from an issuer of a release before chain roles, passes
    /// on its X.509 path alone, as every issuer did then. A leaf that carries a
    /// token is checked in full.
    pub fn accept_legacy_issuers(mut self) -> Self {
        self.legacy = true;
        self
    }

    /// The org key.
    pub fn org(&self) -> &PublicKey {
        &self.org
    }

    /// Checks the issuer's TLS leaf (DER) at Unix time `now`.
    pub fn check_leaf(&self, leaf_der: &[u8], now: u64) -> Result<(), IdentityError> {
        let (_, leaf) =
            X509Certificate::from_der(leaf_der).map_err(|_| IdentityError::NoChainToken)?;
        let token = leaf
            .tbs_certificate
            .extensions()
            .iter()
            .find(|e| {
                e.oid
                    .iter()
                    .is_some_and(|arcs| arcs.eq(CHAIN_TOKEN_OID.iter().copied()))
            })
            .map(|e| utf8_string(e.value).ok_or(IdentityError::NoChainToken));
        let token = match token {
            Some(t) => t?,
            None if self.legacy => {
                tracing::warn!("accepting a legacy issuer without a chain token ([upstream] legacy_issuer): remove the key once every issuer is upgraded");
                return Ok(());
            }
            None => return Err(IdentityError::NoChainToken),
        };
        let deny = self
            .deny
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut verifier = Verifier::new(self.org);
        if let Some(list) = deny {
            verifier = verifier.with_deny_list(list);
        }
        let chain = verifier.verify(token, now).map_err(|e| match e {
            lanyard_token::VerifyError::Revoked(what) => IdentityError::Revoked(what),
            e => IdentityError::ChainToken(e.to_string()),
        })?;
        let jti = chain.claims().jti.clone().unwrap_or_default();
        if !matches!(chain.anchor(), Anchor::Org) || chain.claims().lanyard_chain.is_none() {
            return Err(IdentityError::ChainToken("not a chain issuer token".into()));
        }
        if !chain.has_role(ROLE_ISSUER) {
            return Err(IdentityError::NotAnIssuer(jti));
        }
        let key = chain
            .holder()
            .ok_or_else(|| IdentityError::ChainToken("no public_key".into()))?;
        let signed_by_chain = leaf.signature_algorithm.algorithm.to_id_string() == ED25519_OID
            && key.verify(leaf.tbs_certificate.as_ref(), &leaf.signature_value.data);
        if !signed_by_chain {
            return Err(IdentityError::NotSignedByChain);
        }
        if let Some(want) = &self.issuer_id {
            let name = chain
                .claims()
                .extra
                .get("callerid")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            if want != &jti && want != name {
                return Err(IdentityError::NotTheConfiguredIssuer {
                    got: format!("{name} ({jti})"),
                    want: want.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::tests::{chain_jwt, delegate, now};
    use lanyard_token::KeyPair;

    /// The issuer's TLS leaf as `chain` would present it, carrying `token`.
    fn leaf(org: &KeyPair, chain: &KeyPair, token: &str) -> Vec<u8> {
        let (org_crt, chain_crt) = delegate(org, chain, now() - 60, now() + 86_400);
        let (certs, _) =
            crate::tls::issuer_chain(chain, token, chain_crt, org_crt, now() + 86_400, now())
                .unwrap();
        certs[0].to_vec()
    }

    fn policy(org: &KeyPair, id: Option<&str>, deny: Option<VerifiedDenyList>) -> IssuerPolicy {
        IssuerPolicy::new(
            org.public(),
            id.map(str::to_owned),
            Arc::new(RwLock::new(deny)),
        )
    }

    fn jti(token: &str) -> String {
        let p = lanyard_token::jws::parse(token).unwrap();
        serde_json::from_slice::<lanyard_token::Claims>(&p.payload)
            .unwrap()
            .jti
            .unwrap()
    }

    #[test]
    fn an_issuer_role_chain_is_the_issuer() {
        let (org, chain) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let token = chain_jwt(&org, &chain, now() - 60, now() + 86_400);
        let der = leaf(&org, &chain, &token);
        assert_eq!(policy(&org, None, None).check_leaf(&der, now()), Ok(()));
        // issuer_id matches the chain's name or its id.
        assert_eq!(
            policy(&org, Some("issuer-0"), None).check_leaf(&der, now()),
            Ok(())
        );
        let id = jti(&token);
        assert_eq!(
            policy(&org, Some(&id), None).check_leaf(&der, now()),
            Ok(())
        );
    }

    /// A standalone gateway's chain (default role) makes a valid X.509 path to
    /// the org, and used to be taken for the issuer.
    #[test]
    fn attacker_a_default_role_chain_is_not_the_issuer() {
        let (org, chain) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let req = lanyard_token::DelegateRequest {
            name: "gateway".into(),
            validity_secs: 86_400,
            ..Default::default()
        };
        let token = lanyard_token::delegate(&org, &chain.public(), &req, now() - 60).unwrap();
        let der = leaf(&org, &chain, &token);
        assert!(matches!(
            policy(&org, None, None).check_leaf(&der, now()),
            Err(IdentityError::NotAnIssuer(_))
        ));
    }

    #[test]
    fn attacker_a_revoked_issuer_chain_is_refused() {
        let (org, chain) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let token = chain_jwt(&org, &chain, now() - 60, now() + 86_400);
        let mut denied = lanyard_token::deny::Denied::default();
        denied.chains.insert(jti(&token));
        let list = lanyard_token::deny::parse(
            &lanyard_token::deny::sign(&org, &denied, 1, now()).unwrap(),
            &org.public(),
            now(),
        )
        .unwrap();
        let der = leaf(&org, &chain, &token);
        assert!(matches!(
            policy(&org, None, Some(list)).check_leaf(&der, now()),
            Err(IdentityError::Revoked(_))
        ));
    }

    /// The real issuer's chain token is public (every leaf carries its grant);
    /// copied into a leaf that another chain signs, it proves nothing.
    #[test]
    fn attacker_a_copied_issuer_token_in_another_chains_leaf_is_refused() {
        let (org, issuer, attacker) = (
            KeyPair::generate().unwrap(),
            KeyPair::generate().unwrap(),
            KeyPair::generate().unwrap(),
        );
        let issuer_token = chain_jwt(&org, &issuer, now() - 60, now() + 86_400);
        let der = leaf(&org, &attacker, &issuer_token);
        assert_eq!(
            policy(&org, None, None).check_leaf(&der, now()),
            Err(IdentityError::NotSignedByChain)
        );
    }

    #[test]
    fn attacker_another_issuer_than_the_configured_one_is_refused() {
        let (org, chain) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let token = chain_jwt(&org, &chain, now() - 60, now() + 86_400);
        let der = leaf(&org, &chain, &token);
        assert!(matches!(
            policy(&org, Some("issuer-1"), None).check_leaf(&der, now()),
            Err(IdentityError::NotTheConfiguredIssuer { .. })
        ));
    }

    #[test]
    fn attacker_an_expired_or_foreign_chain_token_is_refused() {
        let (org, chain) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let token = chain_jwt(&org, &chain, now() - 7_200, now() - 3_600);
        let der = leaf(&org, &chain, &token);
        assert!(matches!(
            policy(&org, None, None).check_leaf(&der, now()),
            Err(IdentityError::ChainToken(_))
        ));
        let other = KeyPair::generate().unwrap();
        let token = chain_jwt(&other, &chain, now() - 60, now() + 86_400);
        let der = leaf(&org, &chain, &token);
        assert!(matches!(
            policy(&org, None, None).check_leaf(&der, now()),
            Err(IdentityError::ChainToken(_))
        ));
        assert_eq!(
            policy(&org, None, None).check_leaf(b"not a certificate", now()),
            Err(IdentityError::NoChainToken)
        );
    }

    /// The upgrade window: a leaf without a chain token (an old issuer) passes
    /// only with `legacy_issuer`; a leaf with a role-less chain's token never.
    #[test]
    fn legacy_issuers_pass_only_when_allowed_and_only_without_a_token() {
        let (org, chain) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let issuer = crate::svid::chain_issuer(&chain, now() - 60, now() + 86_400).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["lanyard-issuer".into()]).unwrap();
        p.not_before = crate::svid::time(now() - 60);
        p.not_after = crate::svid::time(now() + 3_600);
        let old = p.signed_by(&key, &issuer).unwrap().der().to_vec();
        assert_eq!(
            policy(&org, None, None).check_leaf(&old, now()),
            Err(IdentityError::NoChainToken)
        );
        let legacy = policy(&org, None, None).accept_legacy_issuers();
        assert_eq!(legacy.check_leaf(&old, now()), Ok(()));
        let req = lanyard_token::DelegateRequest {
            name: "gateway".into(),
            validity_secs: 86_400,
            ..Default::default()
        };
        let token = lanyard_token::delegate(&org, &chain.public(), &req, now() - 60).unwrap();
        assert!(matches!(
            legacy.check_leaf(&leaf(&org, &chain, &token), now()),
            Err(IdentityError::NotAnIssuer(_))
        ));
    }
}
