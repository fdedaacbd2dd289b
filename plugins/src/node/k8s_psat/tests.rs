//! Unit tests for the `k8s_psat` attestor: JWKS parsing, config checks and token
//! checks, with keys generated on the spot.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};

use super::*;

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn ec_jwk(kid: &str, kp: &EcdsaKeyPair) -> serde_json::Value {
    let p = kp.public_key().as_ref();
    serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
        "x": b64(&p[1..33]), "y": b64(&p[33..])})
}

fn ec_key() -> EcdsaKeyPair {
    EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap()
}

#[test]
fn jwks_parse_and_select() {
    let (a, b) = (ec_key(), ec_key());
    let doc = serde_json::json!({"keys": [
        ec_jwk("a", &a),
        {"kty": "oct", "k": "c2VjcmV0"},
        {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"},
        {"kty": "RSA", "use": "enc", "n": "AA", "e": "AQAB"},
        {"kty": "RSA", "alg": "PS256", "n": "AA", "e": "AQAB"},
        ec_jwk("b", &b),
    ]});
    let jwks = Jwks::parse(doc.to_string().as_bytes()).unwrap();
    assert_eq!(jwks.len(), 2);
    assert_eq!(
        jwks.select(Alg::Es256, Some("b")).unwrap().kid.as_deref(),
        Some("b")
    );
    assert!(jwks.select(Alg::Es256, Some("c")).is_err());
    assert!(jwks.select(Alg::Rs256, Some("a")).is_err());
    // Two ES256 keys: a token without a kid cannot choose.
    assert!(jwks.select(Alg::Es256, None).is_err());

    let one = serde_json::json!({"keys": [ec_jwk("a", &a)]}).to_string();
    let jwks = Jwks::parse(one.as_bytes()).unwrap();
    assert!(jwks.select(Alg::Es256, None).is_ok());
    assert!(jwks.select(Alg::Rs256, None).is_err());
}

#[test]
fn jwks_refusals() {
    let a = ec_key();
    let dup = serde_json::json!({"keys": [ec_jwk("a", &a), ec_jwk("a", &a)]}).to_string();
    assert!(matches!(
        Jwks::parse(dup.as_bytes()),
        Err(PsatError::DuplicateKid(_))
    ));
    assert!(matches!(
        Jwks::parse(br#"{"keys": []}"#),
        Err(PsatError::NoKeys)
    ));
    assert!(matches!(Jwks::parse(b"[]"), Err(PsatError::Json(_))));
    let short = r#"{"keys": [{"kty": "RSA", "kid": "k", "n": "AQAB", "e": "AQAB"}]}"#;
    assert!(matches!(
        Jwks::parse(short.as_bytes()),
        Err(PsatError::Key { .. })
    ));
    let off_curve = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256",
        "x": b64(&[1; 32]), "y": b64(&[2; 32])}]});
    assert!(matches!(
        Jwks::parse(off_curve.to_string().as_bytes()),
        Err(PsatError::Key { .. })
    ));
}

#[test]
fn config_checks() {
    let a = ec_key();
    let jwks = Jwks::parse(
        serde_json::json!({"keys": [ec_jwk("a", &a)]})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let cfg = |cluster: &str, allowed: &[&str]| PsatConfig {
        cluster: cluster.into(),
        audience: "lanyard".into(),
        allowed: allowed.iter().map(|s| s.to_string()).collect(),
        jwks: jwks.clone(),
        issuer: None,
    };
    assert!(PsatAttestor::new(cfg("prod-eu", &["lanyard:agent"])).is_ok());
    assert!(PsatAttestor::new(cfg("prod/eu", &["lanyard:agent"])).is_err());
    assert!(PsatAttestor::new(cfg("prod", &[])).is_err());
    assert!(PsatAttestor::new(cfg("prod", &["lanyard"])).is_err());
    assert!(PsatAttestor::new(cfg("prod", &["a:b:c"])).is_err());
}

#[test]
fn signature_input_and_claim_shapes() {
    let kp = ec_key();
    let jwks = Jwks::parse(
        serde_json::json!({"keys": [ec_jwk("a", &kp)]})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let att = PsatAttestor::new(PsatConfig {
        cluster: "c".into(),
        audience: "lanyard".into(),
        allowed: vec!["ns:sa".into()],
        jwks,
        issuer: None,
    })
    .unwrap();
    let sign = |claims: serde_json::Value| {
        let h = b64(br#"{"alg":"ES256","kid":"a"}"#);
        let p = b64(claims.to_string().as_bytes());
        let sig = kp
            .sign(&SystemRandom::new(), format!("{h}.{p}").as_bytes())
            .unwrap();
        format!("{h}.{p}.{}", b64(sig.as_ref()))
    };
    let base = serde_json::json!({"aud": "lanyard", "exp": 200, "sub": "system:serviceaccount:ns:sa",
        "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "sa"}, "node": {"name": "n1"}}});
    let node = att.check(&sign(base.clone()), 100).unwrap();
    assert_eq!(node.name(), "c/n1");
    let sels: Vec<_> = node.selectors().iter().map(Selector::as_str).collect();
    assert_eq!(
        sels,
        [
            "k8s_psat:cluster:c",
            "k8s_psat:agent_ns:ns",
            "k8s_psat:agent_sa:sa",
            "k8s_psat:agent_node_name:n1"
        ]
    );
    // A trailing newline from a token file is forgiven.
    assert!(att.check(&format!("{}\n", sign(base.clone())), 100).is_ok());

    let mut no_node = base.clone();
    no_node["kubernetes.io"]["node"] = serde_json::Value::Null;
    assert!(matches!(
        att.check(&sign(no_node), 100),
        Err(NodeAttestError::Token(_))
    ));
    let mut colon = base.clone();
    colon["kubernetes.io"]["node"]["name"] = "a:b".into();
    assert!(matches!(
        att.check(&sign(colon), 100),
        Err(NodeAttestError::Token(_))
    ));
    let mut ctl = base.clone();
    ctl["kubernetes.io"]["node"]["name"] = "a\nb".into();
    assert!(matches!(
        att.check(&sign(ctl), 100),
        Err(NodeAttestError::Token(_))
    ));
    let mut no_exp = base.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert!(matches!(
        att.check(&sign(no_exp), 100),
        Err(NodeAttestError::Token(_))
    ));
    let mut nbf = base.clone();
    nbf["nbf"] = 160.into();
    assert!(att.check(&sign(nbf.clone()), 100).is_ok());
    nbf["nbf"] = 161.into();
    assert_eq!(
        att.check(&sign(nbf), 100).unwrap_err(),
        NodeAttestError::NotYetValid
    );
    let mut aud = base.clone();
    aud["aud"] = serde_json::json!(["x", "lanyard"]);
    assert!(att.check(&sign(aud), 100).is_ok());
    assert_eq!(
        att.check(&sign(base), 200).unwrap_err(),
        NodeAttestError::Expired
    );

    assert!(matches!(
        att.check("a.b", 0),
        Err(NodeAttestError::Token(_))
    ));
    assert!(matches!(
        att.check("a.b.c.d", 0),
        Err(NodeAttestError::Token(_))
    ));
    assert!(matches!(
        att.check(&"a".repeat(MAX_TOKEN_LEN + 1), 0),
        Err(NodeAttestError::Token(_))
    ));
}
