//! What a restored cache entry must prove before it is served again.
//!
//! `data_dir/cache.json` is a file on disk, and anyone who could write it (a
//! mis-owned `data_dir`, a restored backup, a bug) could plant an identity in
//! it: a self-signed X.509-SVID with their own key, served to root's `fetch`.
//! So everything restored is checked as if it came over the network:
//!
//! - an X.509-SVID's leaf must be signed (ed25519) by the CA certificate stored
//!   with it, the org (whose key comes from the config) must have signed that
//!   CA for its key, the bundle must trust it (as a root, or through the org's
//!   root), the leaf
//!   must name exactly the cached subject and be valid now, and the stored
//!   private key must be the leaf's key;
//! - a JWT-SVID must validate against the bundle for its audience and name the
//!   cached subject.
//!
//! Seed + JWT credentials are checked by the cache itself (org key, holder).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use lanyard_token::PublicKey;
use x509_parser::prelude::{FromDer as _, GeneralName, ParsedExtension, X509Certificate};

use crate::authority::Bundle;

/// Why a restored entry is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// Base64 or DER that does not parse, or a chain of the wrong length.
    #[error("unreadable: {0}")]
    Unreadable(&'static str),
    /// The leaf's signature does not verify with the CA stored with it.
    #[error("the leaf is not signed by the CA stored with it")]
    NotSignedByCa,
    /// The org did not certify the CA, or the current bundle does not trust it.
    #[error("the CA is not certified by the org or not trusted by the bundle")]
    UntrustedCa,
    /// The leaf names another subject, or is outside its validity.
    #[error("the certificate does not name {0} or is not valid now")]
    WrongSubject(String),
    /// The private key is not the certificate's.
    #[error("the stored private key does not match the certificate")]
    KeyMismatch,
    /// The JWT-SVID does not validate.
    #[error("JWT-SVID: {0}")]
    Jwt(#[from] crate::svid::JwtSvidError),
    /// The JWT-SVID was stored without an audience.
    #[error("JWT-SVID: no audience")]
    JwtNoAudience,
    /// The JWT-SVID names another subject than the one it was stored for.
    #[error("JWT-SVID: it does not name {0}")]
    JwtWrongSubject(String),
}

const ED25519_OID: &str = "1.3.101.112";

/// Checks a restored X.509-SVID: `chain` (base64 DER, leaf first, then its CA)
/// and `key_b64` (base64 PKCS#8, P-256) for `subject`.
pub fn x509_svid(
    chain: &[String],
    key_b64: &str,
    subject: &str,
    org: &PublicKey,
    bundle: &Bundle,
    now: u64,
) -> Result<(), RestoreError> {
    let der: Vec<Vec<u8>> = chain
        .iter()
        .map(|c| STANDARD.decode(c))
        .collect::<Result<_, _>>()
        .map_err(|_| RestoreError::Unreadable("certificate base64"))?;
    let [leaf_der, ca_der] = der.as_slice() else {
        return Err(RestoreError::Unreadable("the chain is not leaf + CA"));
    };
    let (leaf, ca) = (parse(leaf_der)?, parse(ca_der)?);
    // The CA's key signed the leaf.
    let ca_key = ed25519_key(&ca).ok_or(RestoreError::NotSignedByCa)?;
    if leaf.signature_algorithm.algorithm.to_id_string() != ED25519_OID
        || !ca_key.verify(leaf.tbs_certificate.as_ref(), &leaf.signature_value.data)
    {
        return Err(RestoreError::NotSignedByCa);
    }
    // The org signed the CA for its key (the org key comes from the agent's
    // config, not from anything in data_dir), and the bundle trusts it: as a
    // root itself, or through the org's root.
    let certified = crate::tls_identity::org_certifies(ca_der, org, &ca_key);
    let org_root_in_bundle = bundle
        .x509_roots
        .iter()
        .filter_map(|r| parse(r).ok())
        .any(|r| ed25519_key(&r).as_ref() == Some(org));
    if !certified || !(org_root_in_bundle || bundle.x509_roots.iter().any(|r| r == ca_der)) {
        return Err(RestoreError::UntrustedCa);
    }
    // It names exactly this subject, now.
    let names_subject = leaf
        .extensions()
        .iter()
        .any(|e| match e.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                let uris: Vec<&str> = san
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::URI(u) => Some(*u),
                        _ => None,
                    })
                    .collect();
                uris == [subject]
            }
            _ => false,
        });
    let valid_now = i64::try_from(now).is_ok_and(|n| {
        leaf.validity().not_before.timestamp() <= n && n < leaf.validity().not_after.timestamp()
    });
    if !names_subject || !valid_now {
        return Err(RestoreError::WrongSubject(subject.to_owned()));
    }
    // The key is the leaf's.
    let key = zeroize::Zeroizing::new(
        STANDARD
            .decode(key_b64.as_bytes())
            .map_err(|_| RestoreError::Unreadable("key base64"))?,
    );
    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &key,
    )
    .map_err(|_| RestoreError::Unreadable("PKCS#8 P-256 key"))?;
    use aws_lc_rs::signature::KeyPair as _;
    if pair.public_key().as_ref() != leaf.public_key().subject_public_key.data.as_ref() {
        return Err(RestoreError::KeyMismatch);
    }
    Ok(())
}

/// One whole DER certificate.
fn parse(der: &[u8]) -> Result<X509Certificate<'_>, RestoreError> {
    X509Certificate::from_der(der)
        .ok()
        .filter(|(rest, _)| rest.is_empty())
        .map(|(_, c)| c)
        .ok_or(RestoreError::Unreadable("certificate DER"))
}

/// The ed25519 subject key of `cert`, if that is what it has.
fn ed25519_key(cert: &X509Certificate<'_>) -> Option<PublicKey> {
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() != ED25519_OID {
        return None;
    }
    let bytes = spki.subject_public_key.data.as_ref().try_into().ok()?;
    PublicKey::from_bytes(bytes).ok()
}

/// Checks a restored JWT-SVID: it validates with `validate` (the authority's
/// bundle check) for its first audience and names `subject`.
pub fn jwt_svid(
    token: &str,
    subject: &str,
    audiences: &[String],
    validate: impl Fn(
        &str,
        &str,
    )
        -> Result<serde_json::Map<String, serde_json::Value>, crate::svid::JwtSvidError>,
) -> Result<(), RestoreError> {
    let aud = audiences.first().ok_or(RestoreError::JwtNoAudience)?;
    let claims = validate(token, aud)?;
    if claims.get("sub").and_then(serde_json::Value::as_str) != Some(subject) {
        return Err(RestoreError::JwtWrongSubject(subject.to_owned()));
    }
    Ok(())
}
