//! `Authority`: the one seam between "who are you" and "sign this" (DESIGN.md).
//! [`LocalAuthority`] holds a chain issuer credential (standalone mode); the
//! upstream issuer's client will implement the same trait. The cache and the
//! servers never know which one they talk to.

pub mod der;
pub mod pem;
pub mod svid;
pub mod tls;
pub mod tls_identity;

use futures_util::future::BoxFuture;
use lanyard_token::{ChainIssuer, KeyPair, LeafRequest, PublicKey, Verifier};

use crate::config::AuthorityFiles;
use crate::svid::{JwtSigner, JwtSvidError, SvidError, X509Signer, X509Svid};

/// Why the authority did not sign.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// A credential file could not be read or is invalid.
    #[error("authority file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The chain issuer refused to mint (expired, out of constraints, …).
    #[error("mint refused: {0}")]
    Mint(#[from] lanyard_token::MintError),
    /// An SVID could not be made.
    #[error(transparent)]
    Svid(#[from] SvidError),
    /// The upstream issuer could not be reached or refused. The source is the
    /// agent's own error type (`UpstreamError`), which this crate cannot name.
    #[error("upstream issuer: {0}")]
    Upstream(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What to mint a seed + JWT credential for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRequest {
    /// The entry's subject.
    pub subject: String,
    /// Audiences (already canonical: sorted, no duplicates).
    pub audiences: Vec<String>,
    /// Networks.
    pub networks: Vec<String>,
    /// Lifetime in seconds (clamped to the chain issuer).
    pub ttl_secs: u64,
    /// Attested facts recorded in the token's `attrs`.
    pub attrs: Vec<String>,
}

/// Trust material the agent publishes.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The trust domain.
    pub trust_domain: String,
    /// X.509 roots, DER.
    pub x509_roots: Vec<Vec<u8>>,
    /// The JWKS document (every key has a `kid`).
    pub jwks: Vec<u8>,
    /// The org public key, hex.
    pub org_public: String,
}

/// Signs on the agent's behalf.
pub trait Authority: Send + Sync + std::fmt::Debug {
    /// A chained JWT for `holder`.
    fn mint_credential<'a>(
        &'a self,
        req: &'a CredentialRequest,
        holder: PublicKey,
        now: u64,
    ) -> BoxFuture<'a, Result<(String, u64), AuthorityError>>;
    /// An ES256 JWT-SVID.
    fn jwt_svid<'a>(
        &'a self,
        spiffe_id: &'a str,
        audiences: &'a [String],
        ttl_secs: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<(String, u64), AuthorityError>>;
    /// An X.509-SVID.
    fn x509_svid<'a>(
        &'a self,
        spiffe_id: &'a str,
        ttl_secs: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<X509Svid, AuthorityError>>;
    /// The current bundle.
    fn bundle(&self) -> Bundle;
    /// Checks a JWT-SVID against the bundle; returns its claims.
    fn validate_jwt_svid(
        &self,
        token: &str,
        audience: &str,
        now: u64,
    ) -> Result<serde_json::Map<String, serde_json::Value>, JwtSvidError>;
    /// A verifier for seed + JWT credentials (org key only).
    fn verifier(&self) -> Verifier;
    /// When the authority itself stops being able to sign.
    fn expires_at(&self) -> u64;
    /// For an upstream authority: whether the agent can serve, and a line about
    /// the link for `/readyz`. `None` for a local authority.
    fn link_state(&self) -> Option<(bool, String)> {
        None
    }
}

/// Standalone mode: signs with a chain issuer credential held on this host.
#[derive(Debug)]
pub struct LocalAuthority {
    chain: ChainIssuer,
    chain_key: KeyPair,
    chain_der: Vec<u8>,
    org: PublicKey,
    x509: X509Signer,
    jwt: JwtSigner,
    bundle: Bundle,
}

fn read(path: &std::path::Path) -> Result<String, AuthorityError> {
    std::fs::read_to_string(path).map_err(|e| AuthorityError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn bad(path: &std::path::Path, reason: impl ToString) -> AuthorityError {
    AuthorityError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl LocalAuthority {
    /// Loads and checks the chain issuer credential: it must verify against the org
    /// key right now, so a misconfigured agent fails at start, not at first request.
    pub fn load(
        files: &AuthorityFiles,
        trust_domain: &str,
        now: u64,
    ) -> Result<Self, AuthorityError> {
        let org = PublicKey::from_file_text(&read(&files.org_public)?)
            .map_err(|e| bad(&files.org_public, e))?;
        let jwt = read(&files.chain_jwt)?;
        let verified = Verifier::new(org)
            .verify(jwt.trim(), now)
            .map_err(|e| bad(&files.chain_jwt, e))?;
        let seed = crate::fsutil::read_seed_text(&files.chain_seed)
            .map_err(|e| bad(&files.chain_seed, e))?;
        let key = KeyPair::from_seed_text(&seed).map_err(|e| bad(&files.chain_seed, e))?;
        let chain =
            ChainIssuer::new(jwt.trim(), key.clone()).map_err(|e| bad(&files.chain_jwt, e))?;
        let roots = crate::pem::decode_certs(&read(&files.org_crt)?);
        let chain_crt = crate::pem::decode_certs(&read(&files.chain_crt)?)
            .into_iter()
            .next()
            .ok_or_else(|| bad(&files.chain_crt, "no certificate"))?;
        if roots.is_empty() {
            return Err(bad(&files.org_crt, "no certificate"));
        }
        let nbf = verified.claims().nbf.unwrap_or(now);
        let x509 = X509Signer::new(&key, chain_crt.clone(), nbf, chain.expires_at())?;
        let jwt_signer = JwtSigner::derive(&key)?;
        let jwks = serde_json::json!({"keys": [jwt_signer.jwk()], "spiffe_refresh_hint": 300});
        let bundle = Bundle {
            trust_domain: trust_domain.to_owned(),
            x509_roots: roots,
            jwks: serde_json::to_vec(&jwks).unwrap_or_default(),
            org_public: org.to_hex(),
        };
        Ok(Self {
            chain,
            chain_key: key,
            chain_der: chain_crt,
            org,
            x509,
            jwt: jwt_signer,
            bundle,
        })
    }
}

impl LocalAuthority {
    /// The chain issuer (the upstream issuer mints agent credentials and signs
    /// deny lists with it).
    pub fn chain(&self) -> &ChainIssuer {
        &self.chain
    }
    /// The chain key (the issuer's TLS identity is certified by it).
    pub fn chain_key(&self) -> &KeyPair {
        &self.chain_key
    }
    /// The chain CA certificate, DER.
    pub fn chain_der(&self) -> &[u8] {
        &self.chain_der
    }
    /// The X.509-SVID signer.
    pub fn x509(&self) -> &X509Signer {
        &self.x509
    }
    /// The JWT-SVID signer.
    pub fn jwt_signer(&self) -> &JwtSigner {
        &self.jwt
    }
    /// The org public key.
    pub fn org(&self) -> PublicKey {
        self.org
    }
}

impl LocalAuthority {
    /// SVIDs obey the chain's grant as tokens do: an X.509 name constraint can
    /// only hold an SVID to a trust domain, and a JWT-SVID has none, so the
    /// subject prefixes are checked here, with the one rule `mint` uses.
    pub fn within_grant(&self, spiffe_id: &str) -> Result<(), AuthorityError> {
        let c = &self.chain.grant().constraints;
        lanyard_token::constraints::check(
            &lanyard_token::Constraints {
                subject_prefixes: c.subject_prefixes.clone(),
                ..Default::default()
            },
            lanyard_token::claims::PURPOSE_WORKLOAD,
            Some(spiffe_id),
            &[],
        )
        .map_err(|e| AuthorityError::Mint(e.into()))
    }
}

impl Authority for LocalAuthority {
    fn mint_credential<'a>(
        &'a self,
        req: &'a CredentialRequest,
        holder: PublicKey,
        now: u64,
    ) -> BoxFuture<'a, Result<(String, u64), AuthorityError>> {
        Box::pin(async move {
            let mut leaf = LeafRequest::workload(req.subject.clone(), holder, req.ttl_secs);
            leaf.audiences = req.audiences.clone();
            leaf.networks = req.networks.clone();
            leaf.clamp_to_issuer = true;
            if !req.attrs.is_empty() {
                leaf.attrs
                    .insert("selectors".into(), req.attrs.clone().into());
            }
            let token = self.chain.mint(&leaf, now)?;
            let exp = now
                .saturating_add(req.ttl_secs)
                .min(self.chain.expires_at());
            Ok((token, exp))
        })
    }

    fn jwt_svid<'a>(
        &'a self,
        spiffe_id: &'a str,
        audiences: &'a [String],
        ttl_secs: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<(String, u64), AuthorityError>> {
        Box::pin(async move {
            self.within_grant(spiffe_id)?;
            let exp = now.saturating_add(ttl_secs).min(self.chain.expires_at());
            Ok((self.jwt.sign(spiffe_id, audiences, now, exp, None)?, exp))
        })
    }

    fn x509_svid<'a>(
        &'a self,
        spiffe_id: &'a str,
        ttl_secs: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<X509Svid, AuthorityError>> {
        Box::pin(async move {
            self.within_grant(spiffe_id)?;
            Ok(self.x509.sign(spiffe_id, now, ttl_secs)?)
        })
    }

    fn bundle(&self) -> Bundle {
        self.bundle.clone()
    }

    fn validate_jwt_svid(
        &self,
        token: &str,
        audience: &str,
        now: u64,
    ) -> Result<serde_json::Map<String, serde_json::Value>, JwtSvidError> {
        self.jwt.validate(token, audience, now)
    }

    fn verifier(&self) -> Verifier {
        Verifier::new(self.org)
    }

    fn expires_at(&self) -> u64 {
        self.chain.expires_at()
    }
}
