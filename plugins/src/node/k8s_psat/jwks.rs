//! Parsing a cluster's JWKS into the RS256 and ES256 keys a token may be checked
//! against. Kept apart from the token checks, which only ask it for a key.

use std::io::Read as _;
use std::path::Path;

use aws_lc_rs::signature::{
    ParsedPublicKey, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256,
};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde::Deserialize;

use super::{NodeAttestError, PsatError, MAX_JWKS_LEN};

/// Which algorithm a key verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alg {
    Rs256,
    Es256,
}

impl Alg {
    /// The same algorithm as jsonwebtoken names it.
    pub(super) fn jws(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

#[derive(Clone)]
pub(super) struct Jwk {
    pub(super) kid: Option<String>,
    alg: Alg,
    /// The key as jsonwebtoken verifies with it. (aws-lc parses it first, so
    /// a key that is not a valid RSA or P-256 key is an error at load time.)
    pub(super) key: jsonwebtoken::DecodingKey,
}

impl std::fmt::Debug for Jwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A cluster's service-account signing keys: the RS256 and ES256 keys of a JWKS.
#[derive(Debug, Clone)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<RawJwk>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// JWK members are base64url; some publishers pad, which RFC 7517 does not forbid.
const JWK_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl Jwks {
    /// Parses a JWKS document. Keys that are not signing keys (`use` other than
    /// `sig`), or of another type, curve or algorithm, are skipped; a malformed RSA
    /// or P-256 key is an error, since it is probably the one that was wanted.
    pub fn parse(json: &[u8]) -> Result<Self, PsatError> {
        let raw: RawJwks =
            serde_json::from_slice(json).map_err(|e| PsatError::Json(e.to_string()))?;
        let mut keys: Vec<Jwk> = Vec::new();
        for k in raw.keys {
            let Some(jwk) = Jwk::parse(k)? else { continue };
            if let Some(kid) = &jwk.kid {
                if keys.iter().any(|o| o.kid.as_ref() == Some(kid)) {
                    return Err(PsatError::DuplicateKid(kid.clone()));
                }
            }
            keys.push(jwk);
        }
        if keys.is_empty() {
            return Err(PsatError::NoKeys);
        }
        Ok(Self { keys })
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no usable key (never true for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token: by `kid`, or, without one, the only key for `alg`.
    pub(super) fn select(&self, alg: Alg, kid: Option<&str>) -> Result<&Jwk, NodeAttestError> {
        let mut candidates = self.keys.iter().filter(|k| k.alg == alg);
        match kid {
            // The key must also match the token's alg: a kid never widens what is accepted.
            Some(kid) => candidates
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or(NodeAttestError::UnknownKey),
            None => match (candidates.next(), candidates.next()) {
                (Some(k), None) => Ok(k),
                _ => Err(NodeAttestError::UnknownKey),
            },
        }
    }
}

impl Jwk {
    fn parse(k: RawJwk) -> Result<Option<Self>, PsatError> {
        if k.use_.as_deref().is_some_and(|u| u != "sig") {
            return Ok(None);
        }
        let kid = k.kid;
        let bad = |reason: &str| PsatError::Key {
            kid: kid.clone(),
            reason: reason.to_owned(),
        };
        let field = |v: Option<&String>, name: &str| -> Result<Vec<u8>, PsatError> {
            let v = v.ok_or_else(|| bad(&format!("missing {name}")))?;
            JWK_B64
                .decode(v)
                .map_err(|_| bad(&format!("{name} is not base64url")))
        };
        let (alg, key) = match k.kty.as_str() {
            "RSA" => {
                if k.alg.as_deref().is_some_and(|a| a != "RS256") {
                    return Ok(None);
                }
                let n = field(k.n.as_ref(), "n")?;
                let e = field(k.e.as_ref(), "e")?;
                // aws-lc wants big-endian without leading zeros; some encoders add one.
                let n = strip_zeros(&n);
                let e = strip_zeros(&e);
                if !(256..=1024).contains(&n.len()) {
                    return Err(bad("RSA modulus must be 2048 to 8192 bits"));
                }
                RsaPublicKeyComponents { n, e }
                    .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
                    .map_err(|_| bad("not a valid RSA public key"))?;
                (
                    Alg::Rs256,
                    jsonwebtoken::DecodingKey::from_rsa_raw_components(n, e),
                )
            }
            "EC" => {
                if k.crv.as_deref() != Some("P-256")
                    || k.alg.as_deref().is_some_and(|a| a != "ES256")
                {
                    return Ok(None);
                }
                let x = field(k.x.as_ref(), "x")?;
                let y = field(k.y.as_ref(), "y")?;
                if x.len() != 32 || y.len() != 32 {
                    return Err(bad("P-256 coordinates must be 32 bytes"));
                }
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
                    .map_err(|_| bad("not a point on P-256"))?;
                (Alg::Es256, jsonwebtoken::DecodingKey::from_ec_der(&point))
            }
            _ => return Ok(None),
        };
        Ok(Some(Self { kid, alg, key }))
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[start..]
}

/// Reads and parses a JWKS file (at most [`MAX_JWKS_LEN`] bytes).
pub fn load_jwks_file(path: impl AsRef<Path>) -> Result<Jwks, PsatError> {
    let path = path.as_ref();
    let io = |source| PsatError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_JWKS_LEN + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > MAX_JWKS_LEN {
        return Err(PsatError::TooLarge(path.display().to_string()));
    }
    Jwks::parse(&buf)
}
