//! The issuer's TOML configuration (every key is in the README). Errors name the
//! key and the bad value; the CLI exits 64 on them, as for the agent.

use std::path::{Path, PathBuf};

use lanyard_runtime::config::{
    parse_toml, resolve_path, AuthorityFiles, ConfigError, RawAuthority,
};
use lanyard_token::{duration, subject};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    trust_domain: Option<String>,
    listen: Option<String>,
    admin_socket: Option<String>,
    store: Option<String>,
    health_addr: Option<String>,
    drain_timeout: Option<String>,
    agent_ttl: Option<String>,
    x509_bundle: Option<String>,
    authority: Option<RawAuthority>,
    #[serde(default)]
    node_attestors: RawNodeAttestors,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNodeAttestors {
    k8s_psat: Option<RawPsat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPsat {
    cluster: String,
    audience: String,
    allowed: Vec<String>,
    jwks_file: Option<String>,
    issuer: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    sign_per_sec: Option<u32>,
    sign_burst: Option<u32>,
    attest_per_sec: Option<u32>,
    attest_burst: Option<u32>,
}

/// `[node_attestors.k8s_psat]`.
#[derive(Debug, Clone)]
pub struct PsatSettings {
    /// Cluster name in the selectors.
    pub cluster: String,
    /// Required audience.
    pub audience: String,
    /// `namespace:serviceaccount` pairs allowed to attest.
    pub allowed: Vec<String>,
    /// The cluster's JWKS (`kubectl get --raw /openid/v1/jwks`).
    pub jwks_file: PathBuf,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
}

/// Signing and attestation rate limits (token buckets).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sustained signing requests per second, per agent.
    pub sign_per_sec: u32,
    /// Burst of signing requests per agent.
    pub sign_burst: u32,
    /// Sustained unauthenticated calls (nonce, attest, session) per second, per caller address.
    pub attest_per_sec: u32,
    /// Their burst.
    pub attest_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            sign_per_sec: 200,
            sign_burst: 2000,
            attest_per_sec: 20,
            attest_burst: 100,
        }
    }
}

/// The validated issuer configuration.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The SPIFFE trust domain.
    pub trust_domain: String,
    /// `host:port` agents connect to (TLS).
    pub listen: String,
    /// The operators' Unix socket (0660).
    pub admin_socket: PathBuf,
    /// `sqlite:///path` or `postgres://…`.
    pub store: String,
    /// `/healthz`, `/readyz`, `/metrics`; `None` disables.
    pub health_addr: Option<std::net::SocketAddr>,
    /// SIGTERM drain deadline.
    pub drain_timeout: std::time::Duration,
    /// Lifetime of agent credentials.
    pub agent_ttl_secs: u64,
    /// The chain issuer credential.
    pub authority: AuthorityFiles,
    /// The k8s PSAT node attestor, if enabled.
    pub k8s_psat: Option<PsatSettings>,
    /// Rate limits.
    pub limits: Limits,
    /// The X.509 roots agents serve: the live issuer chains' CA certificates
    /// (`true`, the default: a revoked chain drops out), or the org root
    /// (`false`: for a rolling upgrade from a release whose replicas do not
    /// publish their certificate; no X.509 revocation then).
    pub x509_chain_roots: bool,
}

fn err(key: &str, value: impl Into<String>, reason: impl ToString) -> ConfigError {
    ConfigError::new(key, value, reason)
}

fn secs(key: &str, v: Option<String>, default: &str) -> Result<u64, ConfigError> {
    let v = v.unwrap_or_else(|| default.to_owned());
    match duration::parse_secs(&v) {
        Ok(0) => Err(err(key, v, "must be more than zero")),
        Ok(s) => Ok(s),
        Err(e) => Err(err(key, v, e)),
    }
}

impl IssuerConfig {
    /// Reads and validates a config file; relative paths are relative to its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("--config", path.display().to_string(), e))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")), |k| {
            std::env::var(k).ok()
        })
    }

    /// Parses config text; `env` looks up `LANYARD_*` overrides of top-level keys.
    pub fn parse(
        text: &str,
        base: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw: Raw = parse_toml(text)?;
        let pick = lanyard_runtime::config::env_override(&env);
        let trust_domain = pick("trust_domain", raw.trust_domain)
            .ok_or_else(|| err("trust_domain", "", "is required"))?;
        subject::validate(&format!("spiffe://{trust_domain}"))
            .map_err(|e| err("trust_domain", &trust_domain, e))?;
        if trust_domain.contains('/') {
            return Err(err(
                "trust_domain",
                trust_domain,
                "a trust domain has no path",
            ));
        }
        let listen = pick("listen", raw.listen).ok_or_else(|| err("listen", "", "is required"))?;
        if !listen.contains(':') {
            return Err(err("listen", listen, "expected host:port"));
        }
        let admin_socket = pick("admin_socket", raw.admin_socket)
            .ok_or_else(|| err("admin_socket", "", "is required"))?;
        let store = pick("store", raw.store).ok_or_else(|| err("store", "", "is required"))?;
        let store = match store.strip_prefix("sqlite://") {
            // A relative SQLite path is relative to the config file, like every path.
            Some(p) if !p.starts_with('/') => {
                format!("sqlite://{}", resolve_path(base, p).display())
            }
            Some(_) => store,
            None if store.starts_with("postgres://") || store.starts_with("postgresql://") => store,
            None => {
                return Err(err(
                    "store",
                    store,
                    "expected sqlite:///path/issuer.db or postgres://user@host/db",
                ))
            }
        };
        let health_addr =
            lanyard_runtime::config::health_addr(pick("health_addr", raw.health_addr), 9189)?;
        let drain_timeout = std::time::Duration::from_secs(secs(
            "drain_timeout",
            pick("drain_timeout", raw.drain_timeout),
            "10s",
        )?);
        let agent_ttl_secs = secs("agent_ttl", pick("agent_ttl", raw.agent_ttl), "1h")?;
        let x509_chain_roots = match pick("x509_bundle", raw.x509_bundle).as_deref() {
            None | Some("chains") => true,
            Some("org") => false,
            Some(other) => return Err(err("x509_bundle", other, "expected \"chains\" or \"org\"")),
        };
        let authority = raw
            .authority
            .ok_or_else(|| {
                err(
                    "authority",
                    "",
                    "is required (chain_jwt, chain_seed, org_public)",
                )
            })?
            .resolve(base);
        let k8s_psat = raw
            .node_attestors
            .k8s_psat
            .map(|p| -> Result<_, ConfigError> {
                let jwks_file = p.jwks_file.ok_or_else(|| {
                    err(
                        "node_attestors.k8s_psat.jwks_file",
                        "",
                        "is required (jwks_url is not supported yet)",
                    )
                })?;
                if p.allowed.is_empty() {
                    return Err(err(
                        "node_attestors.k8s_psat.allowed",
                        "[]",
                        "name at least one namespace:serviceaccount",
                    ));
                }
                Ok(PsatSettings {
                    cluster: p.cluster,
                    audience: p.audience,
                    allowed: p.allowed,
                    jwks_file: resolve_path(base, &jwks_file),
                    issuer: p.issuer,
                })
            });
        let d = Limits::default();
        let l = raw.limits;
        let limits = Limits {
            sign_per_sec: l.sign_per_sec.unwrap_or(d.sign_per_sec).max(1),
            sign_burst: l.sign_burst.unwrap_or(d.sign_burst).max(1),
            attest_per_sec: l.attest_per_sec.unwrap_or(d.attest_per_sec).max(1),
            attest_burst: l.attest_burst.unwrap_or(d.attest_burst).max(1),
        };
        Ok(Self {
            trust_domain,
            listen,
            admin_socket: resolve_path(base, &admin_socket),
            store,
            health_addr,
            drain_timeout,
            agent_ttl_secs,
            authority,
            k8s_psat: k8s_psat.transpose()?,
            limits,
            x509_chain_roots,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = r#"
trust_domain = "example.org"
listen = "127.0.0.1:8443"
admin_socket = "/run/lanyard/admin.sock"
store = "sqlite://issuer.db"
[authority]
chain_jwt = "chain.jwt"
chain_seed = "chain.seed"
org_public = "org.public"
"#;

    #[test]
    fn contract_keys_parse_and_paths_resolve() {
        let c = IssuerConfig::parse(GOOD, Path::new("/etc/lanyard"), |_| None).unwrap();
        assert_eq!(c.store, "sqlite:///etc/lanyard/issuer.db");
        assert_eq!(c.authority.chain_crt, Path::new("/etc/lanyard/chain.crt"));
        assert_eq!(c.agent_ttl_secs, 3600);
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            (GOOD.replace("sqlite://issuer.db", "mysql://x"), "store"),
            (GOOD.replace("127.0.0.1:8443", "nowhere"), "listen"),
            (GOOD.replace("[authority]", "[authority]\nx = 1"), "x"),
            (format!("{GOOD}\n[limits]\nsign_per_sec = \"fast\""), "sign_per_sec"),
            (
                format!("{GOOD}\n[node_attestors.k8s_psat]\ncluster = \"c\"\naudience = \"a\"\nallowed = []\njwks_file = \"j\""),
                "node_attestors.k8s_psat.allowed",
            ),
        ] {
            let e = IssuerConfig::parse(&text, Path::new("/"), |_| None).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
    }
}
