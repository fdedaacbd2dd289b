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

mod jwks;
#[cfg(test)]
mod tests;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::future::BoxFuture;
use lanyard_token::PublicKey;
use serde::Deserialize;

use super::{
    is_plain_name, AttestedNode, NodeAttestError, NodeAttestor, NodeEvidence, NodeRegistry,
};
use crate::Selector;
use jwks::Alg;
pub use jwks::{load_jwks_file, Jwks};

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
        let (Some(h), Some(_), Some(_), None) =
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
        // The JWS (signature under the selected key, the algorithm, audience,
        // issuer) is jsonwebtoken's; the times are checked below against the
        // caller's `now` (jsonwebtoken reads the system clock).
        let mut rules = jsonwebtoken::Validation::new(alg.jws());
        rules.validate_exp = false;
        rules.validate_nbf = false;
        rules.leeway = 0;
        rules.set_audience(&[&self.config.audience]);
        if let Some(want) = &self.config.issuer {
            rules.set_issuer(&[want]);
        }
        rules.set_required_spec_claims(&["exp", "aud"]);
        let c: Claims = jsonwebtoken::decode(token, &key.key, &rules)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidRsaKey(_) => NodeAttestError::BadSignature,
                    ErrorKind::InvalidAudience => NodeAttestError::WrongAudience,
                    ErrorKind::InvalidIssuer => NodeAttestError::WrongIssuer,
                    ErrorKind::MissingRequiredClaim(c) if c == "aud" => {
                        NodeAttestError::WrongAudience
                    }
                    ErrorKind::MissingRequiredClaim(c) if c == "iss" => {
                        NodeAttestError::WrongIssuer
                    }
                    ErrorKind::MissingRequiredClaim(c) if c == "exp" => malformed("no exp claim"),
                    ErrorKind::InvalidAlgorithm => {
                        NodeAttestError::UnsupportedAlgorithm(header.alg.clone())
                    }
                    ErrorKind::Base64(_) => malformed("payload or signature is not base64url"),
                    _ => NodeAttestError::Token(format!("payload: {e}")),
                }
            })?
            .claims;
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
        // jsonwebtoken checked `aud` and `iss`; both are checked again here, as
        // what a token for another service or cluster must never pass.
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
