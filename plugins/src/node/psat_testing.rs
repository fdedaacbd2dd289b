//! A stand-in for a Kubernetes cluster's service-account token issuer, for tests
//! where no API server can run: it signs projected tokens with the claims a
//! kubelet-requested token carries (Kubernetes 1.30+) and publishes the JWKS that
//! `/openid/v1/jwks` would.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// The issuer every token names.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A fake cluster token issuer (ES256).
#[derive(Debug)]
pub struct FakeCluster {
    key: EcdsaKeyPair,
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

impl FakeCluster {
    /// A cluster with a fresh P-256 signing key.
    pub fn new() -> Option<Self> {
        Some(Self {
            key: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).ok()?,
        })
    }

    /// The JWKS document, as `kubectl get --raw /openid/v1/jwks` prints it.
    pub fn jwks_json(&self) -> String {
        let p = self.key.public_key().as_ref();
        serde_json::json!({"keys": [{"use": "sig", "kty": "EC", "kid": "fake-1", "crv": "P-256",
            "alg": "ES256", "x": b64(&p[1..33]), "y": b64(&p[33..])}]})
        .to_string()
    }

    /// A projected token for `namespace:serviceaccount` in a pod on `node`.
    pub fn token(&self, namespace: &str, sa: &str, node: &str, audience: &str, now: u64) -> String {
        let claims = serde_json::json!({
            "aud": [audience], "exp": now + 3600, "iat": now, "nbf": now, "iss": ISSUER,
            "jti": "0b8e2f7c-1d6a-4c3b-9e5f-7a2d4c6b8e01",
            "kubernetes.io": {
                "namespace": namespace,
                "node": {"name": node, "uid": "4b2a9c1e-5d7f-4e0a-9b3c-8f6d2e1a0c9b"},
                "pod": {"name": "lanyard-agent-x7k2p", "uid": "0e8d6c4b-2a19-4f7e-8d5c-3b1a09f8e7d6"},
                "serviceaccount": {"name": sa, "uid": "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"},
                "warnafter": now + 3000
            },
            "sub": format!("system:serviceaccount:{namespace}:{sa}"),
        });
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"ES256","kid":"fake-1"}"#),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .map(|s| b64(s.as_ref()))
            .unwrap_or_default();
        format!("{input}.{sig}")
    }
}
