//! Node attestors through the public API: join tokens and device keys against an
//! in-memory registry, and real-shaped Kubernetes projected tokens signed with
//! real RSA-2048 and P-256 keys.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, OnceLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::future::BoxFuture;
use lanyard_plugins::node::{
    device, join_token, AttestedNode, DeviceAttestor, JoinTokenAttestor, Jwks, NodeAttestError,
    NodeAttestor, NodeEvidence, NodeRegistry, PsatAttestor, PsatConfig,
};
use lanyard_token::{KeyPair, PublicKey};
use serde_json::{json, Value};

/// The store, in memory: join tokens by hash (name, expires_at, used) and devices.
#[derive(Default)]
struct Registry {
    tokens: Mutex<HashMap<String, (String, u64, bool)>>,
    devices: HashMap<String, PublicKey>,
}

impl NodeRegistry for Registry {
    fn redeem_join_token<'a>(
        &'a self,
        hash_hex: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            // One lock around check-and-mark: the atomic single use a store must give.
            let mut tokens = self.tokens.lock().unwrap();
            Ok(match tokens.get_mut(hash_hex) {
                Some((name, exp, used)) if !*used && now < *exp => {
                    *used = true;
                    Some(name.clone())
                }
                _ => None,
            })
        })
    }

    fn device_key<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<PublicKey>, String>> {
        Box::pin(async move { Ok(self.devices.get(name).copied()) })
    }
}

/// Our futures never wait with this registry: one poll finishes them.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("future waited"),
    }
}

fn attest(
    a: &dyn NodeAttestor,
    ev: &NodeEvidence,
    reg: &Registry,
    nonce: &[u8],
    agent: &PublicKey,
    now: u64,
) -> Result<AttestedNode, NodeAttestError> {
    block_on(a.attest(ev, reg, nonce, agent, now))
}

fn agent_key() -> PublicKey {
    KeyPair::generate().unwrap().public()
}

#[test]
fn join_token_is_single_use() {
    let (token, hash) = join_token::generate().unwrap();
    let reg = Registry::default();
    reg.tokens
        .lock()
        .unwrap()
        .insert(hash, ("edge-1".into(), 1_000, false));
    let ev = NodeEvidence::JoinToken {
        token: token.clone(),
    };
    let agent = agent_key();

    let node = attest(&JoinTokenAttestor, &ev, &reg, b"n", &agent, 10).unwrap();
    assert_eq!(
        (node.attestor(), node.name(), node.can_reattest()),
        ("join_token", "edge-1", false)
    );
    assert_eq!(node.selectors()[0].as_str(), "join:name:edge-1");

    let again = attest(&JoinTokenAttestor, &ev, &reg, b"n", &agent, 11);
    assert_eq!(again.unwrap_err(), NodeAttestError::UnknownOrUsedJoinToken);

    let unknown = NodeEvidence::JoinToken {
        token: join_token::generate().unwrap().0,
    };
    let err = attest(&JoinTokenAttestor, &unknown, &reg, b"n", &agent, 10).unwrap_err();
    assert_eq!(err, NodeAttestError::UnknownOrUsedJoinToken);

    let big = "j".repeat(257);
    reg.tokens
        .lock()
        .unwrap()
        .insert(join_token::hash(&big), ("edge-2".into(), 1_000, false));
    let ev = NodeEvidence::JoinToken { token: big };
    let err = attest(&JoinTokenAttestor, &ev, &reg, b"n", &agent, 10).unwrap_err();
    assert_eq!(err, NodeAttestError::UnknownOrUsedJoinToken);

    // Secrets stay out of debug output.
    assert!(!format!(
        "{:?}",
        NodeEvidence::JoinToken {
            token: token.clone()
        }
    )
    .contains(&token));
}

#[test]
fn device_key_challenge() {
    let device = KeyPair::generate().unwrap();
    let mut reg = Registry::default();
    reg.devices.insert("gw-1".into(), device.public());
    let agent = agent_key();
    let ev = |sig: Vec<u8>, name: &str| NodeEvidence::DeviceKey {
        name: name.into(),
        signature: sig.to_vec(),
    };

    let good = device.sign(&device::challenge(b"nonce-1", &agent)).to_vec();
    let node = attest(
        &DeviceAttestor,
        &ev(good.clone(), "gw-1"),
        &reg,
        b"nonce-1",
        &agent,
        0,
    )
    .unwrap();
    assert_eq!(
        (node.attestor(), node.name(), node.can_reattest()),
        ("device", "gw-1", true)
    );
    assert_eq!(node.selectors()[0].as_str(), "device:name:gw-1");

    // The same signature cannot enrol another agent key, nor answer another nonce.
    let err = attest(
        &DeviceAttestor,
        &ev(good.clone(), "gw-1"),
        &reg,
        b"nonce-1",
        &agent_key(),
        0,
    );
    assert_eq!(err.unwrap_err(), NodeAttestError::BadSignature);
    let err = attest(
        &DeviceAttestor,
        &ev(good.clone(), "gw-1"),
        &reg,
        b"nonce-2",
        &agent,
        0,
    );
    assert_eq!(err.unwrap_err(), NodeAttestError::BadSignature);
    let err = attest(
        &DeviceAttestor,
        &ev(good, "gw-2"),
        &reg,
        b"nonce-1",
        &agent,
        0,
    );
    assert_eq!(err.unwrap_err(), NodeAttestError::UnknownDevice);
    // The wrong attestor for the evidence.
    let err = attest(
        &JoinTokenAttestor,
        &ev(vec![], "gw-1"),
        &reg,
        b"n",
        &agent,
        0,
    );
    assert_eq!(err.unwrap_err(), NodeAttestError::WrongEvidence);
}

// ---- Kubernetes projected service-account tokens ----

const NOW: u64 = 1_760_000_000;
const ISS: &str = "https://kubernetes.default.svc.cluster.local";

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// RSA-2048 generation is slow; one key serves every test.
fn rsa() -> &'static RsaKeyPair {
    static KEY: OnceLock<RsaKeyPair> = OnceLock::new();
    KEY.get_or_init(|| RsaKeyPair::generate(KeySize::Rsa2048).unwrap())
}

fn ec() -> &'static EcdsaKeyPair {
    static KEY: OnceLock<EcdsaKeyPair> = OnceLock::new();
    KEY.get_or_init(|| EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
}

/// `n` and `e` from a PKCS#1 `RSAPublicKey` (SEQUENCE { INTEGER n, INTEGER e }).
fn rsa_n_e(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    fn tlv(b: &[u8], tag: u8) -> (&[u8], &[u8]) {
        assert_eq!(b[0], tag);
        let (len, hdr) = match b[1] {
            l if l < 0x80 => (l as usize, 2),
            0x81 => (b[2] as usize, 3),
            0x82 => (((b[2] as usize) << 8) | b[3] as usize, 4),
            other => panic!("length form {other:#x}"),
        };
        (&b[hdr..hdr + len], &b[hdr + len..])
    }
    let (seq, _) = tlv(der, 0x30);
    let (n, rest) = tlv(seq, 0x02);
    let (e, _) = tlv(rest, 0x02);
    let strip = |v: &[u8]| v[v.iter().position(|&x| x != 0).unwrap()..].to_vec();
    (strip(n), strip(e))
}

/// The JWKS a cluster publishes at /openid/v1/jwks, plus a P-256 key.
fn jwks_json() -> String {
    let (n, e) = rsa_n_e(rsa().public_key().as_ref());
    let p = ec().public_key().as_ref();
    json!({"keys": [
        {"use": "sig", "kty": "RSA", "kid": "rsa-1", "alg": "RS256", "n": b64(&n), "e": b64(&e)},
        {"use": "sig", "kty": "EC", "kid": "ec-1", "crv": "P-256", "alg": "ES256",
         "x": b64(&p[1..33]), "y": b64(&p[33..])},
    ]})
    .to_string()
}

fn attestor() -> PsatAttestor {
    PsatAttestor::new(PsatConfig {
        cluster: "prod-eu".into(),
        audience: "lanyard-issuer".into(),
        allowed: vec!["lanyard:lanyard-agent".into()],
        jwks: Jwks::parse(jwks_json().as_bytes()).unwrap(),
        issuer: Some(ISS.into()),
    })
    .unwrap()
}

/// Claims as a kubelet-requested projected token carries them (Kubernetes 1.30+).
fn claims() -> Value {
    json!({
        "aud": ["lanyard-issuer"],
        "exp": NOW + 3600,
        "iat": NOW - 10,
        "iss": ISS,
        "jti": "6f1c1b0c-3d9e-4a56-9c55-3f0c0d7b1a11",
        "kubernetes.io": {
            "namespace": "lanyard",
            "node": {"name": "ip-10-0-1-17.eu-west-1.compute.internal",
                     "uid": "4b2a9c1e-5d7f-4e0a-9b3c-8f6d2e1a0c9b"},
            "pod": {"name": "lanyard-agent-x7k2p", "uid": "0e8d6c4b-2a19-4f7e-8d5c-3b1a09f8e7d6"},
            "serviceaccount": {"name": "lanyard-agent", "uid": "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"},
            "warnafter": NOW + 3000
        },
        "nbf": NOW - 10,
        "sub": "system:serviceaccount:lanyard:lanyard-agent"
    })
}

fn sign_rs256(header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut sig = vec![0; rsa().public_modulus_len()];
    rsa()
        .sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .unwrap();
    format!("{input}.{}", b64(&sig))
}

fn sign_es256(header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = ec().sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    format!("{input}.{}", b64(sig.as_ref()))
}

fn rs(claims: &Value) -> String {
    sign_rs256(&json!({"alg": "RS256", "kid": "rsa-1"}), claims)
}

fn check(att: &PsatAttestor, token: String) -> Result<AttestedNode, NodeAttestError> {
    let ev = NodeEvidence::K8sPsat { token };
    attest(att, &ev, &Registry::default(), b"n", &agent_key(), NOW)
}

const SELECTORS: [&str; 7] = [
    "k8s_psat:cluster:prod-eu",
    "k8s_psat:agent_ns:lanyard",
    "k8s_psat:agent_sa:lanyard-agent",
    "k8s_psat:agent_node_name:ip-10-0-1-17.eu-west-1.compute.internal",
    "k8s_psat:agent_pod_name:lanyard-agent-x7k2p",
    "k8s_psat:agent_pod_uid:0e8d6c4b-2a19-4f7e-8d5c-3b1a09f8e7d6",
    "k8s_psat:agent_node_uid:4b2a9c1e-5d7f-4e0a-9b3c-8f6d2e1a0c9b",
];

fn assert_node(node: &AttestedNode) {
    assert_eq!(node.attestor(), "k8s_psat");
    assert_eq!(
        node.name(),
        "prod-eu/ip-10-0-1-17.eu-west-1.compute.internal"
    );
    assert!(node.can_reattest());
    let got: Vec<&str> = node.selectors().iter().map(|s| s.as_str()).collect();
    assert_eq!(got, SELECTORS);
}

#[test]
fn psat_rs256_and_es256_accepted() {
    let att = attestor();
    assert_node(&check(&att, rs(&claims())).unwrap());
    let es = sign_es256(&json!({"alg": "ES256", "kid": "ec-1"}), &claims());
    assert_node(&check(&att, es).unwrap());
    // No kid: the only key of the alg's type is used.
    assert_node(&check(&att, sign_rs256(&json!({"alg": "RS256"}), &claims())).unwrap());
    // A single-string aud, as some issuers write it.
    let mut c = claims();
    c["aud"] = "lanyard-issuer".into();
    assert_node(&check(&att, rs(&c)).unwrap());
}

#[test]
fn psat_time_audience_issuer() {
    let att = attestor();
    let mut c = claims();
    c["exp"] = NOW.into();
    assert_eq!(check(&att, rs(&c)).unwrap_err(), NodeAttestError::Expired);
    let mut c = claims();
    c["iat"] = (NOW + 120).into();
    assert_eq!(
        check(&att, rs(&c)).unwrap_err(),
        NodeAttestError::NotYetValid
    );
    let mut c = claims();
    c["aud"] = json!(["https://kubernetes.default.svc.cluster.local"]);
    assert_eq!(
        check(&att, rs(&c)).unwrap_err(),
        NodeAttestError::WrongAudience
    );
    let mut c = claims();
    c["iss"] = "https://evil.example".into();
    assert_eq!(
        check(&att, rs(&c)).unwrap_err(),
        NodeAttestError::WrongIssuer
    );
}

#[test]
fn psat_identity_checks() {
    let att = attestor();
    let mut c = claims();
    c["sub"] = "system:serviceaccount:default:default".into();
    c["kubernetes.io"]["namespace"] = "default".into();
    c["kubernetes.io"]["serviceaccount"]["name"] = "default".into();
    assert_eq!(
        check(&att, rs(&c)).unwrap_err(),
        NodeAttestError::NotAllowed("default:default".into())
    );
    // sub names an allowed account but the structured claim says otherwise.
    let mut c = claims();
    c["kubernetes.io"]["namespace"] = "default".into();
    assert!(matches!(
        check(&att, rs(&c)),
        Err(NodeAttestError::Token(_))
    ));
    let mut c = claims();
    c["sub"] = "system:serviceaccount:default:lanyard-agent".into();
    assert!(matches!(
        check(&att, rs(&c)),
        Err(NodeAttestError::Token(_))
    ));
}

#[test]
fn psat_signature_key_and_alg() {
    let att = attestor();
    // Tampered payload: swap in other claims under the original signature.
    let good = rs(&claims());
    let mut c = claims();
    c["kubernetes.io"]["node"]["name"] = "some-other-node".into();
    let forged = rs(&c);
    let parts: Vec<&str> = good.split('.').collect();
    let forged_parts: Vec<&str> = forged.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], forged_parts[1], parts[2]);
    assert_eq!(
        check(&att, tampered).unwrap_err(),
        NodeAttestError::BadSignature
    );

    let unknown = sign_rs256(&json!({"alg": "RS256", "kid": "rsa-2"}), &claims());
    assert_eq!(
        check(&att, unknown).unwrap_err(),
        NodeAttestError::UnknownKey
    );
    // A kid of the other key type is no key for this alg.
    let cross = sign_rs256(&json!({"alg": "RS256", "kid": "ec-1"}), &claims());
    assert_eq!(check(&att, cross).unwrap_err(), NodeAttestError::UnknownKey);

    let body = b64(claims().to_string().as_bytes());
    let none = format!("{}.{body}.", b64(br#"{"alg":"none"}"#));
    assert_eq!(
        check(&att, none).unwrap_err(),
        NodeAttestError::UnsupportedAlgorithm("none".into())
    );
    let hs = format!(
        "{}.{body}.{}",
        b64(br#"{"alg":"HS256","kid":"rsa-1"}"#),
        b64(&[0; 32])
    );
    assert_eq!(
        check(&att, hs).unwrap_err(),
        NodeAttestError::UnsupportedAlgorithm("HS256".into())
    );
    let err = check(&att, "x".repeat(16 * 1024 + 1)).unwrap_err();
    assert!(matches!(err, NodeAttestError::Token(_)));
}

#[test]
fn psat_jwks_file() {
    let dir = std::env::temp_dir().join(format!("lanyard-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jwks.json");
    std::fs::write(&path, jwks_json()).unwrap();
    assert_eq!(
        lanyard_plugins::node::k8s_psat::load_jwks_file(&path)
            .unwrap()
            .len(),
        2
    );
    assert!(lanyard_plugins::node::k8s_psat::load_jwks_file(dir.join("missing")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
