//! JWT-SVID signing and validation, from the attacker's side: every token
//! below that is not the signer's own, for this audience, in time, is refused
//! for its reason.

#![allow(clippy::unwrap_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::*;

const NOW: u64 = 1_800_000_000;

fn signer() -> JwtSigner {
    JwtSigner::derive(&KeyPair::generate().unwrap()).unwrap()
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn its_own_tokens_validate_and_nothing_else_does() {
    let s = signer();
    let aud = vec!["billing".to_owned()];
    let t = s
        .sign(
            "spiffe://example.org/web",
            &aud,
            NOW,
            NOW + 60,
            Some("agent-1"),
        )
        .unwrap();
    let claims = s.validate(&t, "billing", NOW).unwrap();
    assert_eq!(claims["sub"], "spiffe://example.org/web");
    assert_eq!(claims["agent_id"], "agent-1");

    // Another audience, expired, or at its exp second.
    assert_eq!(
        s.validate(&t, "payroll", NOW),
        Err(JwtSvidError::Audience("payroll".into()))
    );
    assert_eq!(
        s.validate(&t, "billing", NOW + 60),
        Err(JwtSvidError::Expired)
    );
    // Another signer's key (same kid is impossible; its own kid is unknown).
    let other = signer();
    let t2 = other
        .sign("spiffe://example.org/web", &aud, NOW, NOW + 60, None)
        .unwrap();
    assert_eq!(
        s.validate(&t2, "billing", NOW),
        Err(JwtSvidError::UnknownKid)
    );

    let parts: Vec<&str> = t.split('.').collect();
    // A payload changed after signing (a wider audience, a longer life).
    let mut claims = serde_json::to_value(&claims).unwrap();
    claims["exp"] = (NOW + 86_400).into();
    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert_eq!(
        s.validate(&forged, "billing", NOW),
        Err(JwtSvidError::BadSignature)
    );
    // Re-signed by another key under this signer's kid.
    let resigned = other
        .sign("spiffe://example.org/web", &aud, NOW, NOW + 60, None)
        .unwrap();
    let r: Vec<&str> = resigned.split('.').collect();
    let swapped = format!("{}.{}.{}", parts[0], r[1], r[2]);
    assert_eq!(
        s.validate(&swapped, "billing", NOW),
        Err(JwtSvidError::BadSignature)
    );
    // alg none, and HS256 keyed with the public key, under this kid.
    for alg in ["none", "HS256", "ES384", "EdDSA"] {
        let h = serde_json::json!({"alg": alg, "kid": s.kid(), "typ": "JWT"});
        let t = format!("{}.{}.{}", b64(&h), parts[1], parts[2]);
        let e = s.validate(&t, "billing", NOW).unwrap_err();
        assert!(
            matches!(e, JwtSvidError::UnsupportedAlg(_) | JwtSvidError::BadHeader),
            "{alg}: {e:?}"
        );
        let unsigned = format!("{}.{}.", b64(&h), parts[1]);
        assert!(
            s.validate(&unsigned, "billing", NOW).is_err(),
            "{alg} unsigned"
        );
    }
    // Not a compact JWS; too large.
    assert_eq!(
        s.validate("a.b", "billing", NOW),
        Err(JwtSvidError::NotCompactJws)
    );
    assert_eq!(
        s.validate(&format!("{t}.x"), "billing", NOW),
        Err(JwtSvidError::NotCompactJws)
    );
    let huge = "a".repeat(lanyard_token::jws::MAX_TOKEN_LEN + 1);
    assert_eq!(
        s.validate(&huge, "billing", NOW),
        Err(JwtSvidError::TooLarge)
    );
}

#[test]
fn a_token_without_sub_or_exp_is_refused_even_when_signed() {
    // Signed by the right key, but missing a claim a JWT-SVID must have (a
    // `sub` that is not a string is no `sub`).
    let s = signer();
    let header = jsonwebtoken::Header {
        kid: Some(s.kid().to_owned()),
        ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256)
    };
    for (claims, want) in [
        (
            serde_json::json!({"aud": ["billing"], "exp": NOW + 60}),
            JwtSvidError::Missing("sub"),
        ),
        (
            serde_json::json!({"sub": "spiffe://example.org/web", "aud": ["billing"]}),
            JwtSvidError::Missing("exp"),
        ),
        (
            serde_json::json!({"sub": 7, "aud": ["billing"], "exp": NOW + 60}),
            JwtSvidError::Missing("sub"),
        ),
    ] {
        let t = jsonwebtoken::encode(&header, &claims, &s.encoding).unwrap();
        assert_eq!(s.validate(&t, "billing", NOW), Err(want), "{claims}");
    }
}
