//! SPIFFE SVIDs: JWT-SVIDs (ES256, as SPIFFE clients require) and X.509-SVIDs,
//! both anchored on the org key.
//!
//! - X.509: the org root certificate (self-signed by the org ed25519 key) signs a CA
//!   certificate for the chain issuer key at `lanyard org delegate`; the agent signs
//!   SVIDs with the chain key. The bundle is the org root, whose public key is the
//!   org public key.
//! - JWT: the ES256 key is derived from the chain seed, so every agent holding the
//!   same chain credential signs with the same key and publishes the same `kid`.

use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use lanyard_token::KeyPair;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256, PKCS_ED25519,
};
use sha2::{Digest as _, Sha256};

/// Why an SVID could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SvidError {
    /// Certificate generation failed.
    #[error("x509: {0}")]
    X509(#[from] rcgen::Error),
    /// A key could not be derived or used.
    #[error("key: {0}")]
    Key(String),
    /// The SPIFFE ID is not a valid URI for a SAN.
    #[error("subject {0:?} cannot be an X.509-SVID URI SAN")]
    Subject(String),
}

/// PKCS#8 v1 for an ed25519 seed (RFC 8410).
fn ed25519_pkcs8(seed_hex: &str) -> Result<Vec<u8>, SvidError> {
    let seed =
        lanyard_token::hex::decode(seed_hex, false).map_err(|e| SvidError::Key(e.to_string()))?;
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&seed);
    Ok(der)
}

/// An rcgen signing key for an ed25519 key pair.
pub fn rcgen_ed25519(key: &KeyPair) -> Result<rcgen::KeyPair, SvidError> {
    let der = ed25519_pkcs8(&key.seed_text())?;
    Ok(rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &der.into(),
        &PKCS_ED25519,
    )?)
}

pub(crate) fn dn(cn: String) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "lanyard");
    dn.push(DnType::CommonName, cn);
    dn
}

pub(crate) fn time(unix: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(i64::MAX))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// The org root's parameters: derived from the org key alone, so anyone can
/// rebuild the issuer name a chain CA certificate must name.
pub fn org_root_params(org_public_hex: &str, not_before: u64, not_after: u64) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(format!(
        "lanyard org {}",
        &org_public_hex[..16.min(org_public_hex.len())]
    ));
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = time(not_before);
    p.not_after = time(not_after);
    p
}

/// A chain issuer CA's parameters, from its public key and token validity.
pub fn chain_ca_params(
    chain_public_hex: &str,
    trust_domain: Option<&str>,
    not_before: u64,
    not_after: u64,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(format!(
        "lanyard chain {}",
        &chain_public_hex[..16.min(chain_public_hex.len())]
    ));
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    if let Some(td) = trust_domain {
        if let Ok(uri) = format!("spiffe://{td}").try_into() {
            p.subject_alt_names = vec![SanType::URI(uri)];
        }
    }
    p.not_before = time(not_before);
    p.not_after = time(not_after);
    p
}

/// The critical name constraints extension (RFC 5280, 4.2.1.10) that keeps a
/// chain CA's X.509-SVIDs inside its grant's trust domains: one permitted URI
/// subtree per trust domain of its `spiffe://` subject prefixes, or a subtree
/// no SPIFFE ID can match (`invalid`) when its prefixes are all `urn:` names.
/// `None` for an unconstrained grant. X.509 URI constraints name a host, never
/// a path, so a path prefix (`spiffe://td/web`) narrows to its trust domain
/// here; the path is enforced where lanyard signs and verifies (README, "Trust
/// anchors").
pub fn name_constraints(subject_prefixes: &[String]) -> Option<rcgen::CustomExtension> {
    if subject_prefixes.is_empty() {
        return None;
    }
    let mut hosts: Vec<&str> = subject_prefixes
        .iter()
        .filter_map(|p| p.strip_prefix("spiffe://"))
        .map(|rest| rest.split('/').next().unwrap_or_default())
        .filter(|td| !td.is_empty())
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    if hosts.is_empty() {
        hosts.push("invalid");
    }
    let subtrees: Vec<u8> = hosts
        .iter()
        // GeneralSubtree { base: uniformResourceIdentifier [6] IA5String }
        .flat_map(|h| crate::der::tlv(0x30, &crate::der::tlv(0x86, h.as_bytes())))
        .collect();
    // NameConstraints { permittedSubtrees [0] GeneralSubtrees }
    let value = crate::der::tlv(0x30, &crate::der::tlv(0xa0, &subtrees));
    let mut ext = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 30], value);
    ext.set_criticality(true);
    Some(ext)
}

/// Certificates for a chain issuer, made where the org seed is: `(org.crt, chain.crt)` in PEM.
/// `chain.crt` carries [`name_constraints`] for `subject_prefixes` (the grant's).
pub fn delegate_certs(
    org: &KeyPair,
    chain_public: &lanyard_token::PublicKey,
    subject_prefixes: &[String],
    not_before: u64,
    not_after: u64,
) -> Result<(String, String), SvidError> {
    let org_key = rcgen_ed25519(org)?;
    let org_hex = org.public().to_hex();
    // The root outlives any chain issuer it certifies.
    let root = org_root_params(
        &org_hex,
        not_before,
        not_after.saturating_add(10 * 365 * 86_400),
    )
    .self_signed(&org_key)?;
    let issuer = Issuer::new(org_root_params(&org_hex, not_before, not_after), org_key);
    let chain_key = Ed25519Public(*chain_public.as_bytes());
    let mut params = chain_ca_params(&chain_public.to_hex(), None, not_before, not_after);
    params
        .custom_extensions
        .extend(name_constraints(subject_prefixes));
    let chain = params.signed_by(&chain_key, &issuer)?;
    Ok((root.pem(), chain.pem()))
}

/// The rcgen issuer for a chain key. Its name must equal the subject of the CA
/// certificate `delegate_certs` made for that key, so it is rebuilt from the same
/// parameters; every certificate the chain key signs (X.509-SVIDs, the issuer's
/// TLS leaf) goes through here.
pub fn chain_issuer(
    chain_key: &KeyPair,
    not_before: u64,
    not_after: u64,
) -> Result<Issuer<'static, rcgen::KeyPair>, SvidError> {
    let params = chain_ca_params(&chain_key.public().to_hex(), None, not_before, not_after);
    Ok(Issuer::new(params, rcgen_ed25519(chain_key)?))
}

/// A random positive 128-bit serial number (RFC 5280 allows up to 20 octets).
pub(crate) fn random_serial() -> Result<rcgen::SerialNumber, SvidError> {
    let mut serial = [0u8; 16];
    lanyard_token::keys::random_bytes(&mut serial).map_err(|e| SvidError::Key(e.to_string()))?;
    serial[0] &= 0x7f;
    Ok(rcgen::SerialNumber::from_slice(&serial))
}

/// An ed25519 public key for rcgen to certify (the chain issuer's).
struct Ed25519Public([u8; 32]);

impl rcgen::PublicKeyData for Ed25519Public {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &PKCS_ED25519
    }
}

/// An X.509-SVID: leaf certificate chain (DER, leaf first) and its PKCS#8 key.
#[derive(Debug, Clone)]
pub struct X509Svid {
    /// Leaf, then the chain CA certificate.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8 DER of the leaf's P-256 key.
    pub key_pkcs8: Vec<u8>,
    /// Unix seconds.
    pub expires_at: u64,
}

/// Signs X.509-SVIDs with the chain issuer key.
pub struct X509Signer {
    issuer: Issuer<'static, rcgen::KeyPair>,
    chain_der: Vec<u8>,
    not_after: u64,
}

impl std::fmt::Debug for X509Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Signer")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl X509Signer {
    /// A signer for the chain key whose CA certificate (signed by the org) is `chain_der`.
    pub fn new(
        chain_key: &KeyPair,
        chain_der: Vec<u8>,
        not_before: u64,
        not_after: u64,
    ) -> Result<Self, SvidError> {
        Ok(Self {
            issuer: chain_issuer(chain_key, not_before, not_after)?,
            chain_der,
            not_after,
        })
    }

    /// An X.509-SVID for `spiffe_id` with a fresh P-256 key, valid from `now` for
    /// `ttl` (clamped to the chain).
    pub fn sign(&self, spiffe_id: &str, now: u64, ttl: u64) -> Result<X509Svid, SvidError> {
        let key = rcgen::KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let (chain, expires_at) = self.certify(spiffe_id, &key, now, ttl)?;
        Ok(X509Svid {
            chain,
            key_pkcs8: key.serialize_der(),
            expires_at,
        })
    }

    /// Certifies a P-256 public key (65-byte uncompressed point) someone else
    /// holds: the issuer signs for keys its agents generate. Returns the chain
    /// (leaf first) and the expiry.
    pub fn certify_p256(
        &self,
        spiffe_id: &str,
        point: &[u8],
        now: u64,
        ttl: u64,
    ) -> Result<(Vec<Vec<u8>>, u64), SvidError> {
        if point.len() != 65 || point[0] != 4 {
            return Err(SvidError::Key("not an uncompressed P-256 point".into()));
        }
        // Refuse points off the curve before putting them in a certificate.
        aws_lc_rs::signature::ParsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            point,
        )
        .map_err(|_| SvidError::Key("not a P-256 public key".into()))?;
        self.certify(spiffe_id, &P256Public(point.to_vec()), now, ttl)
    }

    fn certify(
        &self,
        spiffe_id: &str,
        key: &impl rcgen::PublicKeyData,
        now: u64,
        ttl: u64,
    ) -> Result<(Vec<Vec<u8>>, u64), SvidError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = dn("lanyard workload".to_owned());
        let uri = spiffe_id
            .to_owned()
            .try_into()
            .map_err(|_| SvidError::Subject(spiffe_id.to_owned()))?;
        p.subject_alt_names = vec![SanType::URI(uri)];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        // Allow a little clock skew at the relying party.
        p.not_before = time(now.saturating_sub(60));
        let expires_at = now.saturating_add(ttl).min(self.not_after);
        p.not_after = time(expires_at);
        p.serial_number = Some(random_serial()?);
        let cert = p.signed_by(key, &self.issuer)?;
        Ok((
            vec![cert.der().to_vec(), self.chain_der.clone()],
            expires_at,
        ))
    }
}

/// A P-256 public key someone else holds, for rcgen to certify.
struct P256Public(Vec<u8>);

impl rcgen::PublicKeyData for P256Public {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// The ES256 key that signs JWT-SVIDs, derived from the chain seed.
pub struct JwtSigner {
    /// The public key (an uncompressed P-256 point), to validate with.
    public: Vec<u8>,
    /// The private key as PKCS#8, as jsonwebtoken signs with it.
    encoding: jsonwebtoken::EncodingKey,
    kid: String,
    jwk: serde_json::Value,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// Derives the P-256 key: SHA-256 over a label and the chain seed (re-hashed
    /// with a counter in the negligible case the result is not a valid scalar).
    pub fn derive(chain_key: &KeyPair) -> Result<Self, SvidError> {
        let seed = chain_key.seed_text();
        for counter in 0u8..=255 {
            let scalar = Sha256::new()
                .chain_update(b"lanyard jwt-svid es256 v1\0")
                .chain_update([counter])
                .chain_update(seed.as_bytes())
                .finalize();
            // RFC 5915 ECPrivateKey with the P-256 curve OID; the public key is computed.
            let mut der = vec![0x30, 0x31, 0x02, 0x01, 0x01, 0x04, 0x20];
            der.extend_from_slice(&scalar);
            der.extend_from_slice(&[
                0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
            ]);
            if let Ok(key) =
                EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            {
                return Self::from_key(key);
            }
        }
        Err(SvidError::Key("could not derive a P-256 key".into()))
    }

    fn from_key(key: EcdsaKeyPair) -> Result<Self, SvidError> {
        let point = key.public_key().as_ref().to_vec(); // 0x04 || X || Y
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..65]),
        );
        // RFC 7638 thumbprint: the required members in lexicographic order.
        let thumb = Sha256::digest(format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#
        ));
        let kid = URL_SAFE_NO_PAD.encode(thumb);
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "jwt-svid", "alg": "ES256"});
        let pkcs8 = key
            .to_pkcs8v1()
            .map_err(|_| SvidError::Key("cannot encode the P-256 key".into()))?;
        Ok(Self {
            encoding: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
            public: point,
            kid,
            jwk,
        })
    }

    /// The key id in JWT headers and the bundle.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK (with `kid`).
    pub fn jwk(&self) -> &serde_json::Value {
        &self.jwk
    }

    /// Signs a JWT-SVID; `agent_id` names the agent that brokered it (the
    /// issuer sets it, so that revoking the agent revokes the SVID).
    pub fn sign(
        &self,
        spiffe_id: &str,
        audiences: &[String],
        now: u64,
        exp: u64,
        agent_id: Option<&str>,
    ) -> Result<String, SvidError> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let mut jti = [0u8; 16];
        lanyard_token::keys::random_bytes(&mut jti).map_err(|e| SvidError::Key(e.to_string()))?;
        let mut claims = serde_json::json!({
            "sub": spiffe_id, "aud": audiences, "exp": exp, "iat": now,
            "jti": URL_SAFE_NO_PAD.encode(jti),
        });
        if let Some(agent) = agent_id {
            claims["agent_id"] = agent.into();
        }
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| SvidError::Key(format!("ES256 sign failed: {e}")))
    }

    /// Validates a JWT-SVID signed by this key for `audience`; returns its claims.
    pub fn validate(
        &self,
        token: &str,
        audience: &str,
        now: u64,
    ) -> Result<serde_json::Map<String, serde_json::Value>, JwtSvidError> {
        validate_jwt_svid(token, audience, now, |kid| {
            (kid == self.kid).then(|| self.public.clone())
        })
    }
}

/// The P-256 points of a JWKS document by `kid` (keys of other types are skipped).
pub fn jwks_points(jwks: &[u8]) -> std::collections::HashMap<String, Vec<u8>> {
    let doc: serde_json::Value = serde_json::from_slice(jwks).unwrap_or_default();
    let mut out = std::collections::HashMap::new();
    for k in doc["keys"].as_array().into_iter().flatten() {
        let (Some(kid), Some(x), Some(y)) = (k["kid"].as_str(), k["x"].as_str(), k["y"].as_str())
        else {
            continue;
        };
        if k["kty"] != "EC" || k["crv"] != "P-256" {
            continue;
        }
        let (Ok(x), Ok(y)) = (URL_SAFE_NO_PAD.decode(x), URL_SAFE_NO_PAD.decode(y)) else {
            continue;
        };
        if x.len() == 32 && y.len() == 32 {
            let mut point = vec![4u8];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            out.insert(kid.to_owned(), point);
        }
    }
    out
}

/// Why a JWT-SVID was refused. The message is what a caller of
/// `ValidateJWTSVID` sees after "invalid JWT-SVID: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtSvidError {
    /// Longer than any token lanyard accepts.
    #[error("token too large")]
    TooLarge,
    /// Not three base64url parts separated by dots.
    #[error("not a compact JWS")]
    NotCompactJws,
    /// The header is not base64url JSON.
    #[error("bad header")]
    BadHeader,
    /// Not ES256 (the only algorithm lanyard signs JWT-SVIDs with).
    #[error("unsupported alg {0}")]
    UnsupportedAlg(String),
    /// No key of the bundle has the token's `kid`.
    #[error("unknown kid: not signed by this trust domain's key")]
    UnknownKid,
    /// The signature does not decode or does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The claims are not base64url JSON.
    #[error("bad claims")]
    BadClaims,
    /// A required claim is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// Past its `exp`.
    #[error("token has expired")]
    Expired,
    /// The audience asked for is not among the token's.
    #[error("audience {0:?} not in token")]
    Audience(String),
    /// Brokered by an agent that has since been revoked.
    #[error("revoked: agent {0} is on the deny list")]
    AgentRevoked(String),
    /// Its own id (`jti`) is on a deny list.
    #[error("revoked: {0} is on the deny list")]
    Revoked(String),
    /// An `agent_id` claim that is not a string (never skipped as absent).
    #[error("agent_id is not a string")]
    BadAgentId,
}

/// Validates an ES256 JWT-SVID for `audience`, with the public key (an
/// uncompressed P-256 point) that `key_for` returns for its `kid`.
///
/// The JWS itself goes through `jsonwebtoken` (aws-lc-rs backend): signature,
/// algorithm, audience and the required claims. Expiry is checked here
/// against `now`, the caller's clock, with no leeway: jsonwebtoken reads the
/// system clock, and the agent's tests and restores pass their own.
pub fn validate_jwt_svid(
    token: &str,
    audience: &str,
    now: u64,
    key_for: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<serde_json::Map<String, serde_json::Value>, JwtSvidError> {
    use jsonwebtoken::errors::ErrorKind;
    if token.len() > lanyard_token::jws::MAX_TOKEN_LEN {
        return Err(JwtSvidError::TooLarge);
    }
    if token.split('.').count() != 3 {
        return Err(JwtSvidError::NotCompactJws);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| JwtSvidError::BadHeader)?;
    if header.alg != jsonwebtoken::Algorithm::ES256 {
        return Err(JwtSvidError::UnsupportedAlg(format!("{:?}", header.alg)));
    }
    let point = header
        .kid
        .as_deref()
        .and_then(&key_for)
        .ok_or(JwtSvidError::UnknownKid)?;
    let mut rules = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    rules.validate_exp = false;
    rules.leeway = 0;
    rules.set_audience(&[audience]);
    rules.set_required_spec_claims(&["exp", "sub", "aud"]);
    let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
        token,
        &jsonwebtoken::DecodingKey::from_ec_der(&point),
        &rules,
    )
    .map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey => JwtSvidError::BadSignature,
        ErrorKind::InvalidAudience => JwtSvidError::Audience(audience.to_owned()),
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => JwtSvidError::Missing("exp"),
        ErrorKind::MissingRequiredClaim(c) if c == "sub" => JwtSvidError::Missing("sub"),
        ErrorKind::MissingRequiredClaim(_) => JwtSvidError::Audience(audience.to_owned()),
        ErrorKind::InvalidAlgorithm => JwtSvidError::UnsupportedAlg("not ES256".into()),
        _ => JwtSvidError::BadClaims,
    })?;
    let claims = data.claims;
    let exp = claims
        .get("exp")
        .and_then(serde_json::Value::as_u64)
        .ok_or(JwtSvidError::Missing("exp"))?;
    if now >= exp {
        return Err(JwtSvidError::Expired);
    }
    if claims
        .get("sub")
        .and_then(serde_json::Value::as_str)
        .is_none()
    {
        return Err(JwtSvidError::Missing("sub"));
    }
    Ok(claims)
}

#[cfg(test)]
#[path = "svid_tests.rs"]
mod tests;
