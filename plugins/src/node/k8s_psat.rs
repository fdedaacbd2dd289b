//! The `k8s_psat` node attestor: a Kubernetes projected service-account token,
//! checked offline against the cluster's JWKS (`kubectl get --raw /openid/v1/jwks`).
//!
//! The agent runs as a DaemonSet with a projected token whose audience is the
//! issuer's. Kubernetes ≥ 1.30 puts the node's name and uid in that token, which
//! is what makes it *node* evidence: the kubelet only hands a pod a token naming
//! the node the pod runs on. Offline checking needs no API-server credentials at
//! the issuer, at the price of not noticing a deleted pod before the token expires
//! (keep `expirationSeconds` short).
//!
//! Only RS256 and ES256 are accepted, by name: `none`, `HS*` and everything else
//! are refused before any key is touched, so there is no algorithm confusion.

use std::io::Read as _;
use std::path::Path;

use aws_lc_rs::signature::{
    ParsedPublicKey, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256,
};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use futures_util::future::BoxFuture;
use lanyard_token::PublicKey;
use serde::Deserialize;

use super::{
    is_plain_name, AttestedNode, NodeAttestError, NodeAttestor, NodeEvidence, NodeRegistry,
};
use crate::Selector;

/// The attestor name and selector type.
pub const NAME: &str = "k8s_psat";
/// Largest token considered; real ones are around 1 KiB.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Largest JWKS file [`load_jwks_file`] reads.
pub const MAX_JWKS_LEN: u64 = 1024 * 1024;
/// Clock skew forgiven on `nbf` and `iat` (the API server's clock may run ahead).
/// `exp` gets none: an expired credential is refused on time.
pub const SKEW_SECS: u64 = 60;
/// Longest Kubernetes name (a DNS subdomain) or uid accepted in a selector.
const MAX_K8S_NAME: usize = 253;

/// Why a JWKS or a [`PsatConfig`] was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PsatError {
    /// The JWKS file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The JWKS file is larger than [`MAX_JWKS_LEN`].
    #[error("{0}: larger than {MAX_JWKS_LEN} bytes, not a JWKS")]
    TooLarge(String),
    /// The JWKS is not JSON of the shape `{"keys": [...]}`.
    #[error("JWKS is not valid JSON: {0}")]
    Json(String),
    /// A key of a supported type is malformed.
    #[error("JWKS key {kid:?}: {reason}")]
    Key {
        /// The key's `kid`, if it has one.
        kid: Option<String>,
        /// What is wrong with it.
        reason: String,
    },
    /// Two usable keys share a `kid`, so a token could not name one of them.
    #[error("JWKS has two keys with kid {0:?}")]
    DuplicateKid(String),
    /// The JWKS holds no RS256 or ES256 signing key.
    #[error("JWKS has no RSA or P-256 signing key")]
    NoKeys,
    /// A [`PsatConfig`] field is invalid.
    #[error("k8s_psat config: {0}")]
    Config(String),
}

/// Which algorithm a key verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Rs256,
    Es256,
}

#[derive(Debug, Clone)]
struct Jwk {
    kid: Option<String>,
    alg: Alg,
    key: ParsedPublicKey,
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
    fn select(&self, alg: Alg, kid: Option<&str>) -> Result<&Jwk, NodeAttestError> {
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
                let key = RsaPublicKeyComponents { n, e }
                    .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
                    .map_err(|_| bad("not a valid RSA public key"))?;
                (Alg::Rs256, key)
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
                let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
                    .map_err(|_| bad("not a point on P-256"))?;
                (Alg::Es256, key)
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

/// One cluster's PSAT settings.
#[derive(Debug, Clone)]
pub struct PsatConfig {
    /// The cluster's name in selectors and node names: 1..=128 of `[A-Za-z0-9._-]`.
    pub cluster: String,
    /// The audience the agent's projected token must carry (the issuer's).
    pub audience: String,
    /// Service accounts allowed to attest nodes, as `namespace:serviceaccount`.
    pub allowed: Vec<String>,
    /// The cluster's service-account signing keys.
    pub jwks: Jwks,
    /// The token issuer (`--service-account-issuer`), checked when set.
    pub issuer: Option<String>,
}

/// Checks projected service-account tokens for one cluster.
#[derive(Debug, Clone)]
pub struct PsatAttestor {
    config: PsatConfig,
}

impl PsatAttestor {
    /// The attestor for `config`, after checking it.
    pub fn new(config: PsatConfig) -> Result<Self, PsatError> {
        if !is_plain_name(&config.cluster, 128) {
            return Err(PsatError::Config(format!(
                "cluster {:?} must be 1 to 128 of [A-Za-z0-9._-]",
                config.cluster
            )));
        }
        if config.audience.is_empty() {
            return Err(PsatError::Config("audience must not be empty".into()));
        }
        if config.allowed.is_empty() {
            return Err(PsatError::Config(
                "allowed must name at least one namespace:serviceaccount".into(),
            ));
        }
        for a in &config.allowed {
            let ok = a.split_once(':').is_some_and(|(ns, sa)| {
                is_plain_name(ns, MAX_K8S_NAME) && is_plain_name(sa, MAX_K8S_NAME)
            });
            if !ok {
                return Err(PsatError::Config(format!(
                    "allowed entry {a:?} must look like namespace:serviceaccount"
                )));
            }
        }
        Ok(Self { config })
    }

    /// The checked configuration.
    pub fn config(&self) -> &PsatConfig {
        &self.config
    }

    fn check(&self, token: &str, now: u64) -> Result<AttestedNode, NodeAttestError> {
        let token = token.trim();
        if token.len() > MAX_TOKEN_LEN {
            return Err(malformed("larger than 16 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("not a compact JWS (header.payload.signature)"));
        };

        let header: Header = decode_json(h, "header")?;
        let alg = match header.alg.as_str() {
            "RS256" => Alg::Rs256,
            "ES256" => Alg::Es256,
            other => return Err(NodeAttestError::UnsupportedAlgorithm(other.to_owned())),
        };
        if header.crit.is_some() {
            return Err(malformed("crit header extensions are not supported"));
        }
        let key = self.config.jwks.select(alg, header.kid.as_deref())?;
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| malformed("signature is not base64url"))?;
        let signed = &token[..h.len() + 1 + p.len()];
        key.key
            .verify_sig(signed.as_bytes(), &sig)
            .map_err(|_| NodeAttestError::BadSignature)?;

        // Only signed claims from here on.
        let c: Claims = decode_json(p, "payload")?;
        let exp = c.exp.ok_or_else(|| malformed("no exp claim"))?;
        if now >= exp {
            return Err(NodeAttestError::Expired);
        }
        if [c.nbf, c.iat]
            .into_iter()
            .flatten()
            .any(|t| t > now.saturating_add(SKEW_SECS))
        {
            return Err(NodeAttestError::NotYetValid);
        }
        let audience_ok = match &c.aud {
            Some(Audience::One(a)) => *a == self.config.audience,
            Some(Audience::Many(all)) => all.contains(&self.config.audience),
            None => false,
        };
        if !audience_ok {
            return Err(NodeAttestError::WrongAudience);
        }
        if let Some(want) = &self.config.issuer {
            if c.iss.as_ref() != Some(want) {
                return Err(NodeAttestError::WrongIssuer);
            }
        }

        let k8s = c
            .k8s
            .ok_or_else(|| malformed("no kubernetes.io claim: not a projected token"))?;
        let ns = k8s.namespace;
        let sa = k8s.serviceaccount.name;
        // The sub and the structured claim are both signed, but a token where they
        // disagree was not made by a real API server: refuse rather than pick one.
        if c.sub.as_deref() != Some(format!("system:serviceaccount:{ns}:{sa}").as_str()) {
            return Err(malformed(
                "sub does not match kubernetes.io namespace and service account",
            ));
        }
        let ns = k8s_name(ns, "kubernetes.io.namespace")?;
        let sa = k8s_name(sa, "kubernetes.io.serviceaccount.name")?;
        let who = format!("{ns}:{sa}");
        if !self.config.allowed.contains(&who) {
            return Err(NodeAttestError::NotAllowed(who));
        }
        let node = k8s.node.ok_or_else(|| {
            malformed("no kubernetes.io.node claim (needs Kubernetes 1.30 or later)")
        })?;
        let node_name = k8s_name(node.name, "kubernetes.io.node.name")?;

        let cluster = &self.config.cluster;
        let mut selectors = vec![
            selector("cluster", cluster)?,
            selector("agent_ns", &ns)?,
            selector("agent_sa", &sa)?,
            selector("agent_node_name", &node_name)?,
        ];
        if let Some(pod) = k8s.pod {
            selectors.push(selector(
                "agent_pod_name",
                &k8s_name(pod.name, "kubernetes.io.pod.name")?,
            )?);
            if let Some(uid) = pod.uid {
                selectors.push(selector(
                    "agent_pod_uid",
                    &k8s_name(uid, "kubernetes.io.pod.uid")?,
                )?);
            }
        }
        if let Some(uid) = node.uid {
            selectors.push(selector(
                "agent_node_uid",
                &k8s_name(uid, "kubernetes.io.node.uid")?,
            )?);
        }
        Ok(AttestedNode::new(
            NAME,
            format!("{cluster}/{node_name}"),
            selectors,
            true,
        ))
    }
}

impl NodeAttestor for PsatAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn attest<'a>(
        &'a self,
        evidence: &'a NodeEvidence,
        _registry: &'a dyn NodeRegistry,
        _nonce: &'a [u8],
        _agent_public_key: &'a PublicKey,
        now: u64,
    ) -> BoxFuture<'a, Result<AttestedNode, NodeAttestError>> {
        Box::pin(async move {
            let NodeEvidence::K8sPsat { token } = evidence else {
                return Err(NodeAttestError::WrongEvidence);
            };
            self.check(token, now)
        })
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    #[serde(rename = "kubernetes.io")]
    k8s: Option<K8sClaim>,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct K8sClaim {
    namespace: String,
    serviceaccount: ObjectRef,
    pod: Option<ObjectRef>,
    node: Option<ObjectRef>,
}

#[derive(Deserialize)]
struct ObjectRef {
    name: String,
    uid: Option<String>,
}

fn malformed(why: &str) -> NodeAttestError {
    NodeAttestError::Token(why.to_owned())
}

fn decode_json<T: serde::de::DeserializeOwned>(
    part: &str,
    what: &str,
) -> Result<T, NodeAttestError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| NodeAttestError::Token(format!("{what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|e| NodeAttestError::Token(format!("{what}: {e}")))
}

/// Kubernetes names and uids are DNS subdomains or UUIDs; anything else (a colon,
/// a slash, a control character) would make selectors or node names ambiguous.
fn k8s_name(value: String, claim: &str) -> Result<String, NodeAttestError> {
    if is_plain_name(&value, MAX_K8S_NAME) {
        Ok(value)
    } else {
        Err(NodeAttestError::Token(format!(
            "{claim} {value:?} is not a Kubernetes name (1 to 253 of [A-Za-z0-9._-])"
        )))
    }
}

fn selector(key: &str, value: &str) -> Result<Selector, NodeAttestError> {
    Selector::parse(&format!("{NAME}:{key}:{value}"))
        .map_err(|e| NodeAttestError::Token(format!("cannot make a selector: {e}")))
}

#[cfg(test)]
mod tests {
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
}
