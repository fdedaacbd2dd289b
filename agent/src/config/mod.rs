//! The agent's TOML configuration. Every key is documented in the README; each
//! `LANYARD_<KEY>` environment variable overrides the top-level key of that name.
//! Any error names the key and the bad value; the CLI exits 64 on it.

use std::path::{Path, PathBuf};

use lanyard_plugins::Selector;
use lanyard_token::{duration, subject};
use serde::Deserialize;

pub use lanyard_runtime::config::{
    err, health_addr, parse_toml, resolve_path, AuthorityFiles, ConfigError, RawAuthority,
    DEFAULT_TTL_SECS,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    trust_domain: Option<String>,
    socket_path: Option<String>,
    data_dir: Option<String>,
    health_addr: Option<String>,
    drain_timeout: Option<String>,
    allow_insecure_dirs: Option<bool>,
    authority: Option<RawAuthority>,
    upstream: Option<RawUpstream>,
    #[serde(default)]
    entries: Vec<RawEntry>,
    #[serde(default)]
    plugins: RawPlugins,
    connections: Option<RawConnections>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnections {
    max_total: Option<usize>,
    max_per_process: Option<usize>,
    max_per_uid: Option<usize>,
    reserve: Option<usize>,
    reserve_per_uid: Option<usize>,
    max_streams_per_connection: Option<u32>,
    max_streams_per_uid: Option<usize>,
    idle_timeout: Option<String>,
    /// The name `idle_timeout` had before a connection had to complete a
    /// request, not just send a byte, to stay open.
    first_byte_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    address: String,
    org_public: String,
    join_token: Option<String>,
    device_seed: Option<String>,
    device_name: Option<String>,
    psat_token_file: Option<String>,
    issuer_id: Option<String>,
    legacy_issuer: Option<bool>,
}

/// How the agent proves its node to the upstream issuer the first time (and
/// again when its agent credential has lapsed).
#[derive(Clone, PartialEq, Eq)]
pub enum NodeEvidence {
    /// A single-use join token.
    JoinToken(String),
    /// A device key pinned at the issuer.
    Device {
        /// The seed file.
        seed: PathBuf,
        /// The name it is pinned under.
        name: String,
    },
    /// A projected Kubernetes service-account token, re-read at each use.
    PsatTokenFile(PathBuf),
}

impl std::fmt::Debug for NodeEvidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // A join token is a bearer secret until redeemed: never logged.
            Self::JoinToken(_) => f.write_str("JoinToken(..)"),
            Self::Device { seed, name } => write!(f, "Device({name}, {})", seed.display()),
            Self::PsatTokenFile(p) => write!(f, "PsatTokenFile({})", p.display()),
        }
    }
}

/// `[upstream]`: get credentials from an issuer instead of holding a chain credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// The issuer's `host:port` (several, comma-separated, are tried in turn).
    pub addresses: Vec<String>,
    /// The org public key file: all the agent needs to trust the issuer.
    pub org_public: PathBuf,
    /// Node attestation evidence.
    pub evidence: NodeEvidence,
    /// Only this issuer chain (its name or its chain token jti) is accepted as
    /// the issuer; any non-revoked issuer-role chain of the org when unset.
    pub issuer_id: Option<String>,
    /// Upgrade window only: also accept an issuer whose TLS leaf carries no
    /// chain token (a release before chain roles). It drops the role check
    /// for such issuers, so any org chain could pose as one again.
    pub legacy_issuer: bool,
}

/// Where the agent's signing power comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // built once per process
pub enum Source {
    /// `[authority]`: a chain issuer credential on this host (standalone).
    Local(AuthorityFiles),
    /// `[upstream]`: an upstream issuer.
    Upstream(UpstreamConfig),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    subject: String,
    selectors: Vec<String>,
    ttl: Option<String>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    networks: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugins {
    unix: Option<RawUnix>,
    container: Option<RawContainer>,
    k8s: Option<RawK8s>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawK8s {
    kubelet_host: Option<String>,
    kubelet_port: Option<u16>,
    token_file: Option<String>,
    ca_file: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
    node_name: Option<String>,
    pod_wait: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainer {
    docker_socket: Option<String>,
    unverifiable_cgroups: Option<String>,
    host_cgroup_root: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnix {
    max_hash_bytes: Option<u64>,
    foreign_namespace_paths: Option<bool>,
}

/// A registration entry: who gets which identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// SPIFFE ID or `urn:` name.
    pub subject: String,
    /// All must be among the caller's selectors.
    pub selectors: Vec<Selector>,
    /// Credential lifetime in seconds.
    pub ttl_secs: u64,
    /// Default audiences of the seed + JWT credential.
    pub audiences: Vec<String>,
    /// Networks the credential is a member of.
    pub networks: Vec<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The SPIFFE trust domain.
    pub trust_domain: String,
    /// The Workload API socket.
    pub socket_path: PathBuf,
    /// Persistent state (the credential cache).
    pub data_dir: PathBuf,
    /// `host:port` for `/healthz`, `/readyz`, `/metrics`; `None` disables.
    pub health_addr: Option<std::net::SocketAddr>,
    /// How long SIGTERM waits for in-flight requests.
    pub drain_timeout: std::time::Duration,
    /// `allow_insecure_dirs`: start even when `data_dir` or the socket's
    /// directory is owned by another user or writable by group or others.
    pub allow_insecure_dirs: bool,
    /// Standalone authority files, or the upstream issuer.
    pub source: Source,
    /// Registration entries.
    pub entries: Vec<Entry>,
    /// Largest binary the unix attestor hashes.
    pub unix_max_hash_bytes: u64,
    /// `[plugins.unix] foreign_namespace_paths`: whether processes in another
    /// mount or user namespace than the agent's get `unix:path` and
    /// `unix:sha256` (off: they can bind-mount any binary over any path).
    pub unix_foreign_namespace_paths: bool,
    /// `[plugins.container] docker_socket`: a Docker-compatible Engine API
    /// (dockerd, `podman system service`) for labels and images.
    pub docker_socket: Option<PathBuf>,
    /// `[plugins.container] unverifiable_cgroups = "trust_names"`: believe
    /// container names in cgroups outside the agent's cgroup namespace, whose
    /// owner it cannot check (default `"refuse"`).
    pub trust_unverifiable_cgroups: bool,
    /// `[plugins.container] host_cgroup_root`: the host's cgroup v2 tree, for
    /// checking the owners of cgroups outside the agent's cgroup namespace.
    pub host_cgroup_root: Option<PathBuf>,
    /// `[plugins.k8s]`, if the k8s attestor is enabled.
    pub k8s: Option<lanyard_plugins::k8s::K8sConfig>,
    /// `[connections]`: how many Workload API connections, and how long silent.
    pub connections: crate::server::ConnLimits,
}

impl Config {
    /// Reads and validates a config file; relative paths are relative to its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("--config", path.display().to_string(), e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, |k| std::env::var(k).ok())
    }

    /// Parses config text; `env` looks up `LANYARD_*` overrides.
    pub fn parse(
        text: &str,
        base: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw: Raw = parse_toml(text)?;
        let pick = lanyard_runtime::config::env_override(&env);
        let path = |p: &str| resolve_path(base, p);

        let trust_domain = pick("trust_domain", raw.trust_domain)
            .ok_or_else(|| err("trust_domain", "", "is required"))?;
        subject::validate(&format!("spiffe://{trust_domain}"))
            .map_err(|e| err("trust_domain", &trust_domain, e))?;
        if trust_domain.contains('/') {
            return Err(err(
                "trust_domain",
                &trust_domain,
                "a trust domain has no path",
            ));
        }
        let socket_path = pick("socket_path", raw.socket_path)
            .ok_or_else(|| err("socket_path", "", "is required"))?;
        let data_dir =
            pick("data_dir", raw.data_dir).ok_or_else(|| err("data_dir", "", "is required"))?;
        let health_addr = health_addr(pick("health_addr", raw.health_addr), 9188)?;
        let drain = pick("drain_timeout", raw.drain_timeout).unwrap_or_else(|| "10s".to_owned());
        let drain_timeout = std::time::Duration::from_secs(
            duration::parse_secs(&drain).map_err(|e| err("drain_timeout", &drain, e))?,
        );
        let source = match (raw.authority, raw.upstream) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "upstream",
                    "",
                    "give either [authority] (standalone) or [upstream], not both",
                ))
            }
            (Some(a), None) => Source::Local(a.resolve(base)),
            (None, Some(u)) => Source::Upstream(upstream(u, base)?),
            (None, None) => {
                return Err(err(
                    "authority",
                    "",
                    "is required (standalone mode: chain_jwt, chain_seed, org_public; or an [upstream] issuer)",
                ))
            }
        };
        let connections = raw
            .connections
            .map(connections)
            .transpose()?
            .unwrap_or_default();
        let mut entries: Vec<Entry> = Vec::with_capacity(raw.entries.len());
        for (i, e) in raw.entries.into_iter().enumerate() {
            let e = entry(i, e, &trust_domain)?;
            // The same identity for the same selectors twice is a mistake (a
            // pasted block), never a second grant.
            let same = |a: &Entry| {
                let (mut x, mut y) = (a.selectors.clone(), e.selectors.clone());
                x.sort();
                x.dedup();
                y.sort();
                y.dedup();
                a.subject == e.subject && x == y
            };
            if let Some(j) = entries.iter().position(same) {
                return Err(err(
                    format!("entries[{i}]"),
                    &e.subject,
                    format!("duplicates entries[{j}] (same subject and selectors)"),
                ));
            }
            entries.push(e);
        }
        Ok(Self {
            trust_domain,
            socket_path: path(&socket_path),
            data_dir: path(&data_dir),
            health_addr,
            drain_timeout,
            allow_insecure_dirs: raw.allow_insecure_dirs.unwrap_or(false),
            source,
            entries,
            connections,
            k8s: raw.plugins.k8s.map(|k| k8s(k, base, &env)).transpose()?,
            docker_socket: raw
                .plugins
                .container
                .as_ref()
                .and_then(|c| c.docker_socket.as_deref())
                .map(|p| resolve_path(base, p)),
            host_cgroup_root: raw
                .plugins
                .container
                .as_ref()
                .and_then(|c| c.host_cgroup_root.as_deref())
                .map(|p| resolve_path(base, p)),
            trust_unverifiable_cgroups: match raw
                .plugins
                .container
                .as_ref()
                .and_then(|c| c.unverifiable_cgroups.as_deref())
            {
                None | Some("refuse") => false,
                Some("trust_names") => true,
                Some(other) => {
                    return Err(err(
                        "plugins.container.unverifiable_cgroups",
                        other,
                        "must be \"refuse\" or \"trust_names\"",
                    ))
                }
            },
            unix_max_hash_bytes: raw
                .plugins
                .unix
                .as_ref()
                .and_then(|u| u.max_hash_bytes)
                .unwrap_or(lanyard_plugins::unix::DEFAULT_MAX_HASH_BYTES),
            unix_foreign_namespace_paths: raw
                .plugins
                .unix
                .as_ref()
                .and_then(|u| u.foreign_namespace_paths)
                .unwrap_or(false),
        })
    }
}

/// `[connections]`: every limit must be at least 1, the per-process and
/// per-uid caps cannot exceed the total, and the reserve must leave a general
/// pool.
fn connections(c: RawConnections) -> Result<crate::server::ConnLimits, ConfigError> {
    let mut l = crate::server::ConnLimits::default();
    let count = |key: &str, v: Option<usize>, max: usize, dflt: usize| match v {
        Some(n) if n == 0 || n > max => Err(err(
            key,
            n.to_string(),
            format!("must be between 1 and {max}"),
        )),
        Some(n) => Ok(n),
        None => Ok(dflt.min(max)),
    };
    l.max_total = count(
        "connections.max_total",
        c.max_total,
        usize::MAX,
        l.max_total,
    )?;
    l.max_per_process = count(
        "connections.max_per_process",
        c.max_per_process,
        l.max_total,
        l.max_per_process,
    )?;
    l.max_per_uid = count(
        "connections.max_per_uid",
        c.max_per_uid,
        l.max_total,
        l.max_per_uid,
    )?;
    l.reserve = match c.reserve {
        Some(n) if n >= l.max_total => {
            return Err(err(
                "connections.reserve",
                n.to_string(),
                "must be less than connections.max_total",
            ))
        }
        Some(n) => n,
        None => l.reserve.min(l.max_total / 4),
    };
    l.reserve_per_uid = count(
        "connections.reserve_per_uid",
        c.reserve_per_uid,
        l.max_per_uid,
        l.reserve_per_uid,
    )?;
    l.max_streams_per_uid = count(
        "connections.max_streams_per_uid",
        c.max_streams_per_uid,
        usize::MAX,
        l.max_streams_per_uid,
    )?;
    if let Some(n) = c.max_streams_per_connection {
        l.max_streams_per_connection = u32::try_from(count(
            "connections.max_streams_per_connection",
            usize::try_from(n).ok(),
            1 << 16,
            0,
        )?)
        .unwrap_or(u32::MAX);
    }
    let (key, timeout) = match (c.idle_timeout, c.first_byte_timeout) {
        (Some(_), Some(t)) => {
            return Err(err(
                "connections.first_byte_timeout",
                &t,
                "is the old name of connections.idle_timeout; set only one",
            ))
        }
        (Some(t), None) => ("connections.idle_timeout", Some(t)),
        (None, t) => ("connections.first_byte_timeout", t),
    };
    if let Some(t) = timeout {
        let secs = duration::parse_secs(&t).map_err(|e| err(key, &t, e))?;
        if secs == 0 {
            return Err(err(key, &t, "must be at least 1s"));
        }
        l.idle_timeout = std::time::Duration::from_secs(secs);
    }
    Ok(l)
}

/// `[plugins.k8s]`. In a DaemonSet the kubelet's address and the node's name
/// are only known per pod, so `LANYARD_K8S_KUBELET_HOST` and
/// `LANYARD_K8S_NODE_NAME` (from the downward API) override those two keys.
fn k8s(
    k: RawK8s,
    base: &Path,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<lanyard_plugins::k8s::K8sConfig, ConfigError> {
    let wait = k.pod_wait.unwrap_or_else(|| "30s".into());
    let pod_wait =
        duration::parse_secs(&wait).map_err(|e| err("plugins.k8s.pod_wait", &wait, e))?;
    if k.ca_file.is_none() && !k.insecure_skip_verify {
        return Err(err(
            "plugins.k8s.ca_file",
            "",
            "is required (the kubelet's serving CA); insecure_skip_verify = true turns verification off",
        ));
    }
    let mut c = lanyard_plugins::k8s::K8sConfig::new(resolve_path(
        base,
        k.token_file
            .as_deref()
            .unwrap_or("/var/run/secrets/kubernetes.io/serviceaccount/token"),
    ));
    if let Some(h) = env("LANYARD_K8S_KUBELET_HOST").or(k.kubelet_host) {
        c.kubelet_host = h;
    }
    if let Some(p) = k.kubelet_port {
        c.kubelet_port = p;
    }
    c.ca_file = k.ca_file.as_deref().map(|p| resolve_path(base, p));
    c.insecure_skip_verify = k.insecure_skip_verify;
    c.node_name = env("LANYARD_K8S_NODE_NAME").or(k.node_name);
    c.pod_wait = std::time::Duration::from_secs(pod_wait);
    Ok(c)
}

fn upstream(u: RawUpstream, base: &Path) -> Result<UpstreamConfig, ConfigError> {
    let addresses: Vec<String> = u
        .address
        .split(',')
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .collect();
    if addresses.is_empty() || addresses.iter().any(|a| !a.contains(':')) {
        return Err(err(
            "upstream.address",
            u.address,
            "expected host:port[,host:port…]",
        ));
    }
    let evidence = match (u.join_token, u.device_seed, u.psat_token_file) {
        (Some(t), None, None) if !t.trim().is_empty() => {
            NodeEvidence::JoinToken(t.trim().to_owned())
        }
        (None, Some(seed), None) => NodeEvidence::Device {
            seed: resolve_path(base, &seed),
            name: u
                .device_name
                .ok_or_else(|| err("upstream.device_name", "", "is required with device_seed"))?,
        },
        (None, None, Some(p)) => NodeEvidence::PsatTokenFile(resolve_path(base, &p)),
        _ => {
            return Err(err(
                "upstream.join_token",
                "",
                "give exactly one of join_token, device_seed or psat_token_file",
            ))
        }
    };
    let issuer_id = match u.issuer_id {
        Some(id) if id.trim().is_empty() => {
            return Err(err(
                "upstream.issuer_id",
                id,
                "expected a chain name or chain id (the jti of its chain.jwt)",
            ))
        }
        id => id.map(|i| i.trim().to_owned()),
    };
    let legacy_issuer = u.legacy_issuer.unwrap_or(false);
    if legacy_issuer && issuer_id.is_some() {
        // A legacy issuer shows no chain token, so nothing could be pinned: the
        // pin would silently not apply.
        return Err(err(
            "upstream.legacy_issuer",
            "true",
            "cannot be combined with issuer_id (a legacy issuer has no chain to pin)",
        ));
    }
    Ok(UpstreamConfig {
        addresses,
        org_public: resolve_path(base, &u.org_public),
        evidence,
        issuer_id,
        legacy_issuer,
    })
}

fn entry(i: usize, e: RawEntry, trust_domain: &str) -> Result<Entry, ConfigError> {
    let key = |k: &str| format!("entries[{i}].{k}");
    // `{trust_domain}` is known now; `{type:key}` placeholders are filled per caller.
    let subject = e.subject.replace("{trust_domain}", trust_domain);
    if lanyard_plugins::template::is_template(&subject) {
        lanyard_plugins::template::validate(&subject, trust_domain)
            .map_err(|x| err(key("subject"), &e.subject, x))?;
    } else {
        subject::validate(&subject).map_err(|x| err(key("subject"), &e.subject, x))?;
    }
    if let Some(rest) = subject.strip_prefix("spiffe://") {
        let td = rest.split('/').next().unwrap_or_default();
        if td != trust_domain {
            return Err(err(
                key("subject"),
                &e.subject,
                format!("is outside trust domain {trust_domain}"),
            ));
        }
    }
    if e.selectors.is_empty() {
        // An entry with no selectors would match every process on the host.
        return Err(err(key("selectors"), "[]", "needs at least one selector"));
    }
    let selectors = e
        .selectors
        .iter()
        .map(|s| Selector::parse_workload(s).map_err(|x| err(key("selectors"), s, x)))
        .collect::<Result<Vec<_>, _>>()?;
    let ttl_secs = match &e.ttl {
        None => DEFAULT_TTL_SECS,
        Some(t) => match duration::parse_secs(t) {
            Ok(0) => return Err(err(key("ttl"), t, "must be more than zero")),
            Ok(s) => s,
            Err(x) => return Err(err(key("ttl"), t, x)),
        },
    };
    Ok(Entry {
        subject,
        selectors,
        ttl_secs,
        audiences: e.audiences,
        networks: e.networks,
    })
}

#[cfg(test)]
mod tests;
