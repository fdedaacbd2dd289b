//! Compact JWS with EdDSA, the only algorithm lanyard's chained tokens use.
//!
//! Parsing is strict where laxness has bitten JWT libraries before: an `alg` other
//! than `EdDSA` (including `none` and HMAC) is refused before any key is chosen,
//! base64url must be unpadded and canonical, and a payload with a repeated claim
//! name is refused instead of letting the last copy silently win.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::Deserializer as _;

/// The one header lanyard writes, byte for byte as Choria writes it.
pub const HEADER_JSON: &str = r#"{"alg":"EdDSA","typ":"JWT"}"#;
/// Upper bound on a token's size; real tokens are under 4 KiB.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Why a compact JWS could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwsError {
    /// The input is empty.
    #[error("token is empty")]
    Empty,
    /// The input is larger than [`MAX_TOKEN_LEN`].
    #[error("token is {0} bytes, more than the {MAX_TOKEN_LEN} byte limit")]
    TooLarge(usize),
    /// Not three dot-separated segments.
    #[error("token must have 3 dot-separated segments, found {0}")]
    SegmentCount(usize),
    /// A segment is not unpadded, canonical base64url.
    #[error("{segment} is not valid unpadded base64url")]
    Base64 {
        /// `header`, `payload` or `signature`.
        segment: &'static str,
    },
    /// A segment is not a JSON object (or repeats a member name).
    #[error("{segment} is not a JSON object: {reason}")]
    Json {
        /// `header` or `payload`.
        segment: &'static str,
        /// What the JSON parser said.
        reason: String,
    },
    /// The header names an algorithm other than EdDSA.
    #[error("unsupported algorithm {0:?}: lanyard tokens are EdDSA only")]
    UnsupportedAlgorithm(String),
    /// The header carries `crit` extensions we do not understand (RFC 7515 §4.1.11).
    #[error("token header has critical extensions lanyard does not understand")]
    CriticalHeader,
    /// The signature is not 64 bytes.
    #[error("signature must be 64 bytes, got {0}")]
    SignatureLength(usize),
}

/// A compact JWS split and decoded, not yet verified.
#[derive(Debug)]
pub struct Parts<'a> {
    /// `<header>.<payload>` as sent: the bytes the signature covers.
    pub signing_input: &'a str,
    /// The decoded payload bytes (a JSON object).
    pub payload: Vec<u8>,
    /// The 64 signature bytes.
    pub signature: [u8; 64],
}

#[derive(serde::Deserialize)]
struct Header {
    alg: Option<String>,
    crit: Option<IgnoredAny>,
}

fn b64(segment: &'static str, s: &str) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| JwsError::Base64 { segment })
}

/// Splits and decodes a compact JWS, checking header and shape but not the signature.
pub fn parse(token: &str) -> Result<Parts<'_>, JwsError> {
    if token.is_empty() {
        return Err(JwsError::Empty);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwsError::TooLarge(token.len()));
    }
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(JwsError::SegmentCount(token.split('.').count()));
    };
    let header_bytes = b64("header", h)?;
    check_unique_members("header", &header_bytes)?;
    let header: Header = serde_json::from_slice(&header_bytes).map_err(|e| JwsError::Json {
        segment: "header",
        reason: e.to_string(),
    })?;
    match header.alg.as_deref() {
        Some("EdDSA") => {}
        Some(other) => return Err(JwsError::UnsupportedAlgorithm(other.to_owned())),
        None => return Err(JwsError::UnsupportedAlgorithm(String::new())),
    }
    if header.crit.is_some() {
        return Err(JwsError::CriticalHeader);
    }
    let payload = b64("payload", p)?;
    check_unique_members("payload", &payload)?;
    let sig = b64("signature", s)?;
    let signature =
        <[u8; 64]>::try_from(sig.as_slice()).map_err(|_| JwsError::SignatureLength(sig.len()))?;
    Ok(Parts {
        signing_input: &token[..h.len() + 1 + p.len()],
        payload,
        signature,
    })
}

/// Builds `<header>.<payload>.<signature>` with `sign` producing the signature.
pub fn encode(payload_json: &[u8], sign: impl FnOnce(&[u8]) -> [u8; 64]) -> String {
    let mut out = String::with_capacity(40 + payload_json.len() * 4 / 3 + 90);
    URL_SAFE_NO_PAD.encode_string(HEADER_JSON, &mut out);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(payload_json, &mut out);
    let sig = sign(out.as_bytes());
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(sig, &mut out);
    out
}

/// Unpadded base64url, as used for proofs of possession and JWK members.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded, canonical base64url.
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// Refuses a JSON value that is not an object, or an object that repeats a member.
fn check_unique_members(segment: &'static str, json: &[u8]) -> Result<(), JwsError> {
    struct Unique;
    impl<'de> Visitor<'de> for Unique {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::BTreeSet::new();
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(key.clone()) {
                    return Err(serde::de::Error::custom(format!(
                        "member {key:?} appears twice"
                    )));
                }
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    de.deserialize_map(Unique)
        .and_then(|()| de.end())
        .map_err(|e| JwsError::Json {
            segment,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(header: &str, payload: &str) -> String {
        format!(
            "{}.{}.{}",
            b64url(header.as_bytes()),
            b64url(payload.as_bytes()),
            b64url(&[0; 64])
        )
    }

    #[test]
    fn refuses_other_algorithms() {
        for alg in ["none", "HS256", "RS256", "ES256", "EDDSA"] {
            let t = tok(&format!(r#"{{"alg":"{alg}"}}"#), "{}");
            assert_eq!(
                parse(&t).unwrap_err(),
                JwsError::UnsupportedAlgorithm(alg.into())
            );
        }
        assert!(matches!(
            parse(&tok("{}", "{}")),
            Err(JwsError::UnsupportedAlgorithm(_))
        ));
        assert_eq!(
            parse(&tok(r#"{"alg":"EdDSA","crit":["b64"]}"#, "{}")).unwrap_err(),
            JwsError::CriticalHeader
        );
    }

    #[test]
    fn refuses_bad_shapes() {
        assert_eq!(parse("").unwrap_err(), JwsError::Empty);
        assert_eq!(parse("a.b").unwrap_err(), JwsError::SegmentCount(2));
        assert_eq!(parse("a.b.c.d").unwrap_err(), JwsError::SegmentCount(4));
        assert!(matches!(
            parse("!!.b.c"),
            Err(JwsError::Base64 { segment: "header" })
        ));
        assert!(matches!(
            parse(&tok(HEADER_JSON, "[1]")),
            Err(JwsError::Json {
                segment: "payload",
                ..
            })
        ));
        assert!(matches!(
            parse(&tok(HEADER_JSON, r#"{"a":1,"a":2}"#)),
            Err(JwsError::Json { .. })
        ));
        assert!(matches!(
            parse(&tok(HEADER_JSON, r#"{"a":1} x"#)),
            Err(JwsError::Json { .. })
        ));
        let padded = format!(
            "{}=.{}.{}",
            b64url(HEADER_JSON.as_bytes()),
            b64url(b"{}"),
            b64url(&[0; 64])
        );
        assert!(matches!(parse(&padded), Err(JwsError::Base64 { .. })));
        let short_sig = format!(
            "{}.{}.{}",
            b64url(HEADER_JSON.as_bytes()),
            b64url(b"{}"),
            b64url(&[0; 63])
        );
        assert_eq!(
            parse(&short_sig).unwrap_err(),
            JwsError::SignatureLength(63)
        );
    }

    #[test]
    fn round_trip() {
        let t = encode(br#"{"a":1}"#, |_| [7; 64]);
        let p = parse(&t).unwrap();
        assert_eq!(p.payload, br#"{"a":1}"#);
        assert_eq!(p.signature, [7; 64]);
        assert!(t.starts_with("eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9."));
    }
}
