//! What the agent's and the issuer's configs share: an error that names the
//! key, TOML errors with line and column, `LANYARD_*` overrides of top-level
//! keys, the `[authority]` table, `health_addr`, and paths relative to the
//! config file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A configuration error: which key, what value, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`{}: {reason}", if value.is_empty() { String::new() } else { format!(" = {value:?}") })]
pub struct ConfigError {
    /// Dotted path of the key, e.g. `entries[0].ttl`.
    pub key: String,
    /// The offending value, if there is one.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    /// An error naming `key`, its bad `value` (may be empty) and the reason.
    pub fn new(key: impl Into<String>, value: impl Into<String>, reason: impl ToString) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            reason: reason.to_string(),
        }
    }
}

pub fn err(key: impl Into<String>, value: impl Into<String>, reason: impl ToString) -> ConfigError {
    ConfigError::new(key, value, reason)
}

/// Parses TOML into `T`; a syntax or type error names the offending key.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        // The error's span points into the offending line: name its key, and
        // say where (1-based line and column), as an editor would.
        let at = e.span().and_then(|span| text.get(..span.start));
        let key = at
            .map(|before| {
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                let line = text[line_start..].lines().next().unwrap_or_default();
                line.split('=').next().unwrap_or_default().trim().to_owned()
            })
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| "(file)".to_owned());
        let place = at
            .map(|before| {
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(" (line {line}, column {col})")
            })
            .unwrap_or_default();
        err(
            key,
            "",
            format!(
                "{}{place}",
                e.message().lines().next().unwrap_or("invalid TOML")
            ),
        )
    })
}

/// How both configs let `LANYARD_<KEY>` override a top-level key: `pick(key,
/// value)` is the variable if `env` has it, else the file's value.
pub fn env_override(
    env: impl Fn(&str) -> Option<String>,
) -> impl Fn(&str, Option<String>) -> Option<String> {
    move |key: &str, v: Option<String>| env(&format!("LANYARD_{}", key.to_uppercase())).or(v)
}

/// The `[authority]` table as written (shared with the issuer's config).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthority {
    chain_jwt: String,
    chain_seed: String,
    org_public: String,
    chain_crt: Option<String>,
    org_crt: Option<String>,
}

impl RawAuthority {
    /// Resolves the paths against the config file's folder; the certificates
    /// default to `chain.crt` and `org.crt` beside `chain_jwt`.
    pub fn resolve(&self, base: &Path) -> AuthorityFiles {
        let path = |p: &str| resolve_path(base, p);
        let chain_jwt = path(&self.chain_jwt);
        let sibling = |name: &str| chain_jwt.parent().unwrap_or(Path::new(".")).join(name);
        AuthorityFiles {
            chain_crt: self
                .chain_crt
                .as_deref()
                .map_or_else(|| sibling("chain.crt"), path),
            org_crt: self
                .org_crt
                .as_deref()
                .map_or_else(|| sibling("org.crt"), path),
            chain_seed: path(&self.chain_seed),
            org_public: path(&self.org_public),
            chain_jwt,
        }
    }
}

/// The `health_addr` key: `127.0.0.1:<default_port>` when absent, `None` for
/// `"off"` or `""`, else a `host:port`.
pub fn health_addr(
    value: Option<String>,
    default_port: u16,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    match value {
        None => Ok(Some(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            default_port,
        )))),
        Some(s) if s.is_empty() || s == "off" => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|e| err("health_addr", &s, format!("not host:port ({e})"))),
    }
}

/// `p` if absolute, else relative to `base`.
pub fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

/// Where the standalone authority's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityFiles {
    /// The chain issuer token.
    pub chain_jwt: PathBuf,
    /// The chain issuer seed.
    pub chain_seed: PathBuf,
    /// The org public key.
    pub org_public: PathBuf,
    /// The chain issuer's X.509 CA certificate (default: `chain.crt` beside `chain_jwt`).
    pub chain_crt: PathBuf,
    /// The org root certificate (default: `org.crt` beside `chain_jwt`).
    pub org_crt: PathBuf,
}

/// Credentials' lifetime when an entry names none.
pub const DEFAULT_TTL_SECS: u64 = 3600;
