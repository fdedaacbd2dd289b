//! The claims of a chained token, as they travel on the wire.
//!
//! Choria's claims keep their names and meaning (`purpose`, `public_key`, `tcs`,
//! `issexp`, `iss`, `jti`); lanyard only adds claims, so Choria verifiers still
//! accept lanyard tokens. Unknown claims (Choria's `callerid`, `permissions`, …) are
//! kept in `extra` so that viewing a Choria token loses nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::keys::PublicKey;

/// `purpose` of a workload credential minted by lanyard.
pub const PURPOSE_WORKLOAD: &str = "lanyard_workload";
/// `purpose` of an agent's own credential (used by the upstream issuer).
pub const PURPOSE_AGENT: &str = "lanyard_agent";
/// Choria's client id purpose; chain issuer tokens carry it too, as Choria's do.
pub const PURPOSE_CHORIA_CLIENT: &str = "choria_client_id";
/// Choria's server purpose.
pub const PURPOSE_CHORIA_SERVER: &str = "choria_server";
/// Every purpose the default verifier accepts.
pub const KNOWN_PURPOSES: [&str; 4] = [
    PURPOSE_WORKLOAD,
    PURPOSE_AGENT,
    PURPOSE_CHORIA_CLIENT,
    PURPOSE_CHORIA_SERVER,
];

/// The chain role that may act as the issuer: serve the Node API, sign agent
/// credentials (`lanyard_agent`) and sign deny lists. A chain without it (the
/// default, for standalone hosts) signs workload credentials only.
pub const ROLE_ISSUER: &str = "issuer";
/// Every role `lanyard org delegate` grants.
pub const KNOWN_ROLES: [&str; 1] = [ROLE_ISSUER];

/// `iss` prefix of a chain issuer token: `I-<org public key hex>`.
pub const ORG_ISSUER_PREFIX: &str = "I-";
/// `iss` prefix of a leaf: `C-<chain jti>.<chain public key hex>`.
pub const CHAIN_ISSUER_PREFIX: &str = "C-";

/// What a chain issuer may sign. An empty list means "no restriction" on that axis.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// Leaf subjects must equal one of these or sit below it (segment-aware).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_prefixes: Vec<String>,
    /// Leaf `purpose` must be one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purposes: Vec<String>,
    /// Leaf `networks` must be a non-empty subset of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
}

/// lanyard's extra org signature over a chain issuer (claim `lanyard_chain`).
///
/// Choria's `tcs` covers only `<jti>.<public key>`, so a chain key can outlive its
/// token. The grant's signature also covers the chain issuer's expiry and
/// constraints, and it covers Choria's `tcs` itself, so one check proves both.
/// The chain issuer token carries it and copies it unchanged into every leaf.
///
/// Version 2 adds `roles` to what the org signs. A grant without roles is still
/// written as version 1, byte for byte as before, so a default-role chain from
/// this release verifies with older lanyard verifiers too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainGrant {
    /// Format version: 1 (no roles) or 2 (roles signed too).
    pub v: u32,
    /// The chain issuer's expiry (its `exp`), as the org signed it.
    pub exp: u64,
    /// What the chain issuer may sign.
    #[serde(default)]
    pub constraints: Constraints,
    /// What the chain may act as, beyond signing workload credentials
    /// ([`ROLE_ISSUER`]). Version 2 only; sorted and de-duplicated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Hex ed25519 signature by the org over [`ChainGrant::signed_bytes`].
    pub sig: String,
}

impl ChainGrant {
    /// Whether the org granted `role`. Only meaningful on a grant whose
    /// signature a verifier checked (a [`VerifiedToken`](crate::VerifiedToken)'s).
    pub fn has_role(&self, role: &str) -> bool {
        self.v >= 2 && self.roles.iter().any(|r| r == role)
    }

    /// The exact bytes the org signs for version `v`. Lists are JSON-encoded, so
    /// no value can smuggle a line break into the framing. Version 1 has no
    /// roles line, so a v1 grant can never be read as granting a role.
    pub fn signed_bytes(
        v: u32,
        tcs: &str,
        chain_jti: &str,
        chain_public: &str,
        exp: u64,
        constraints: &Constraints,
        roles: &[String],
    ) -> Vec<u8> {
        let list = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
        let mut text = format!(
            "lanyard-chain-grant-v{v}\ntcs={tcs}\njti={chain_jti}\npublic_key={chain_public}\nexp={exp}\nsubject_prefixes={}\npurposes={}\nnetworks={}",
            list(&constraints.subject_prefixes),
            list(&constraints.purposes),
            list(&constraints.networks),
        );
        if v >= 2 {
            text.push_str(&format!("\nroles={}", list(roles)));
        }
        text.into_bytes()
    }
}

/// An OKP JSON Web Key holding an ed25519 public key (RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OkpJwk {
    /// Always `OKP`.
    pub kty: String,
    /// Always `Ed25519`.
    pub crv: String,
    /// The raw public key, unpadded base64url.
    pub x: String,
}

/// The confirmation claim (RFC 7800), as the WIMSE workload identity token uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The key the holder proves possession of.
    pub jwk: OkpJwk,
}

impl Confirmation {
    /// The `cnf` for a public key.
    pub fn for_key(key: &PublicKey) -> Self {
        Self::for_bytes(key.as_bytes())
    }

    /// The `cnf` for a public key's raw bytes.
    pub fn for_bytes(key: &[u8; 32]) -> Self {
        Self {
            jwk: OkpJwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: crate::jws::b64url(key),
            },
        }
    }
}

/// All claims of a lanyard or Choria token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// What the token is for (see [`KNOWN_PURPOSES`]).
    #[serde(default)]
    pub purpose: String,
    /// Choria trust chain signature(s), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcs: Option<String>,
    /// The holder's ed25519 public key, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The chain issuer's expiry (Choria).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issexp: Option<u64>,
    /// `I-<org hex>` or `C-<chain jti>.<chain pub hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The workload's identity: a SPIFFE ID or a `urn:` name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audiences; a single string on input is accepted, as RFC 7519 allows.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_or_list"
    )]
    pub aud: Vec<String>,
    /// Expiry, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Not before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, Unix seconds; equals the time inside `jti`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// A KSUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Networks (realms) the holder belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// The holder's key as an OKP JWK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// Attested attributes, free-form.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, serde_json::Value>,
    /// lanyard's org-signed chain grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lanyard_chain: Option<ChainGrant>,
    /// The agent that brokered this credential (its SPIFFE ID), set by the
    /// issuer: revoking that agent revokes what it obtained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Claims lanyard does not interpret (Choria's `callerid`, `identity`, …).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Claims {
    /// min(exp, issexp): when the token stops being valid, as Choria computes it.
    pub fn effective_expiry(&self) -> Option<u64> {
        match (self.exp, self.issexp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The name a human knows the token by: `sub`, else Choria's `callerid` or `identity`.
    pub fn display_subject(&self) -> Option<&str> {
        self.sub.as_deref().or_else(|| {
            ["callerid", "identity"]
                .iter()
                .find_map(|k| self.extra.get(*k).and_then(|v| v.as_str()))
        })
    }
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}
