//! The `k8s` workload attestor: which Kubernetes pod and container a process is
//! in, as the node's kubelet describes them.
//!
//! Selectors: `k8s:ns:<ns>`, `k8s:sa:<sa>`, `k8s:pod-name:<n>`, `k8s:pod-uid:<uid>`,
//! `k8s:pod-label:<k>:<v>`, `k8s:pod-owner:<Kind>:<name>`, `k8s:node-name:<n>`,
//! `k8s:container-name:<n>` and `k8s:container-image:<image>`.
//!
//! The pod uid and container id come from the kernel's cgroup record
//! ([`ContainerAttestor::info`]), never from the kubelet, so the kubelet can only
//! add facts about a container the kernel placed the process in. A process in no
//! pod gets no selectors (and costs no kubelet request).
//!
//! The source is the kubelet's own `GET /pods` (port 10250), not the API server:
//! it is on the node, answers for static pods under the uid their cgroups carry,
//! and knows a container as soon as it starts. The exchange is authenticated both
//! ways: the agent's service-account token as a bearer token (re-read at every
//! fetch, since the kubelet rotates it), and the kubelet's serving certificate
//! checked against a configured CA.
//!
//! A container that has just started may not be in the kubelet's pod status yet,
//! so a miss is retried (every [`K8sConfig::retry_every`], up to
//! [`K8sConfig::pod_wait`]) before failing closed. All concurrent attestations
//! share one in-flight fetch, so a burst of new workloads costs the kubelet one
//! request per round, not one per workload.
//!
//! The client is minimal and blocking, like the attestor trait: TLS with rustls
//! over a `TcpStream` with timeouts, `GET /pods HTTP/1.0` so that the answer is
//! never chunked and ends at EOF.

mod client;
mod pods;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use rustls::pki_types::ServerName;

use crate::container::{selector, ContainerAttestor};
use crate::{AttestError, ProcessRef, Selector, WorkloadAttestor};
use client::{load_roots, NoVerification};
use pods::{container_image, find};

/// Bound on a whole exchange: per-read timeouts alone would let a kubelet that
/// trickles a byte at a time hold every waiting attestation indefinitely.
const FETCH_DEADLINE: Duration = Duration::from_secs(15);

/// Where and how to reach the kubelet, and how long to wait for new containers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct K8sConfig {
    /// The kubelet's host: an IP address or a DNS name its serving certificate
    /// names. Default `127.0.0.1` (an agent on the host network).
    pub kubelet_host: String,
    /// The kubelet's authenticated port. Default 10250.
    pub kubelet_port: u16,
    /// The agent's service-account token, sent as a bearer token. Read at every
    /// fetch: projected tokens are rotated in place by the kubelet.
    pub token_file: PathBuf,
    /// PEM CA certificate(s) the kubelet's serving certificate must chain to.
    /// Required unless [`K8sConfig::insecure_skip_verify`] is set: there is no
    /// implicit trust store for a kubelet.
    pub ca_file: Option<PathBuf>,
    /// Accept any kubelet certificate. Off by default; on, anyone able to
    /// intercept node-local traffic can name a process's pod. Logged at start.
    pub insecure_skip_verify: bool,
    /// This node's name. When set, a pod the kubelet places on another node is
    /// refused (the agent is talking to the wrong kubelet).
    pub node_name: Option<String>,
    /// How long one pod list answers attestations. Default 1 s.
    pub cache_ttl: Duration,
    /// How long a pod or container not yet in the kubelet's pod list (or an
    /// unreachable kubelet) is retried before the attestation fails. Default 30 s.
    pub pod_wait: Duration,
    /// How often the pod list is refetched while waiting. Default 250 ms.
    pub retry_every: Duration,
}

impl K8sConfig {
    /// The defaults, with the agent's service-account token at `token_file`: the
    /// kubelet at `127.0.0.1:10250`, no CA (set [`K8sConfig::ca_file`]), 1 s
    /// cache, 30 s wait for new containers, retried every 250 ms.
    pub fn new(token_file: impl Into<PathBuf>) -> Self {
        Self {
            kubelet_host: "127.0.0.1".to_owned(),
            kubelet_port: 10250,
            token_file: token_file.into(),
            ca_file: None,
            insecure_skip_verify: false,
            node_name: None,
            cache_ttl: Duration::from_secs(1),
            pod_wait: Duration::from_secs(30),
            retry_every: Duration::from_millis(250),
        }
    }
}

/// Why the attestor could not be built, or a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum K8sError {
    /// The CA file could not be read or holds no usable certificate.
    #[error("kubelet CA {path}: {reason}")]
    Ca {
        /// The file.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
    /// Neither a CA nor `insecure_skip_verify`: the kubelet cannot be verified.
    #[error("the k8s attestor needs ca_file (the CA that signed the kubelet's serving certificate), or insecure_skip_verify = true")]
    NoCa,
    /// `kubelet_host` is not an IP address or a DNS name.
    #[error("kubelet host {0:?} is not an IP address or DNS name")]
    Host(String),
    /// The TLS configuration could not be built.
    #[error("TLS setup: {0}")]
    Tls(rustls::Error),
    /// The token file could not be read, or is empty.
    #[error("service-account token {path}: {reason}")]
    Token {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// Connecting, the TLS handshake (including verification) or the exchange
    /// failed.
    #[error("kubelet at {addr}: {source}")]
    Io {
        /// `host:port`.
        addr: String,
        /// The error.
        source: crate::http::HttpError,
    },
    /// The kubelet answered with a status other than 200.
    #[error("kubelet answered HTTP {code}{hint}: {body}")]
    Status {
        /// The HTTP status.
        code: u16,
        /// What the status usually means here.
        hint: &'static str,
        /// The start of the body.
        body: String,
    },
    /// The answer was not a pod list.
    #[error("kubelet answered unexpectedly: {0}")]
    Protocol(String),
}

/// The `k8s` attestor.
#[derive(Debug)]
pub struct K8sAttestor {
    config: K8sConfig,
    container: ContainerAttestor,
    tls: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    state: Mutex<State>,
    fetched: Condvar,
    requests: AtomicU64,
}

/// The single-flight state: at most one fetch runs; everyone else waits for it.
#[derive(Debug, Default)]
struct State {
    in_flight: bool,
    last: Option<Fetch>,
}

/// A completed fetch. Errors are shared too: every waiter fails the same way.
#[derive(Debug, Clone)]
struct Fetch {
    /// When the request was started: what the pod list is at least as new as.
    started: Instant,
    result: Result<Arc<Vec<Pod>>, Arc<K8sError>>,
}

impl K8sAttestor {
    /// An attestor asking the kubelet in `config` about pods `container` finds.
    /// The CA is loaded now, so a bad `ca_file` fails at agent start rather than
    /// at the first attestation.
    pub fn new(config: K8sConfig, container: ContainerAttestor) -> Result<Self, K8sError> {
        let server_name = ServerName::try_from(config.kubelet_host.clone())
            .map_err(|_| K8sError::Host(config.kubelet_host.clone()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(K8sError::Tls)?;
        let tls = if config.insecure_skip_verify {
            tracing::warn!(
                kubelet = %config.kubelet_host,
                "k8s attestor: insecure_skip_verify is set; the kubelet's certificate is not checked, so whoever can intercept its port decides which pod a process is in"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth()
        } else {
            let path = config.ca_file.as_ref().ok_or(K8sError::NoCa)?;
            builder
                .with_root_certificates(load_roots(path)?)
                .with_no_client_auth()
        };
        Ok(Self {
            config,
            container,
            tls: Arc::new(tls),
            server_name,
            state: Mutex::new(State::default()),
            fetched: Condvar::new(),
            requests: AtomicU64::new(0),
        })
    }

    /// How many requests this attestor has sent the kubelet.
    pub fn kubelet_requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two fields set together under the lock; a panic elsewhere
        // cannot leave them inconsistent, so poisoning is ignored.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A pod list from a fetch started no earlier than `not_before` (any cached
    /// one when `None`): the last one if it qualifies, else the one in flight if
    /// it does, else a new fetch made by this caller while the others wait.
    fn pods(&self, not_before: Option<Instant>) -> Fetch {
        let fresh = |f: &Fetch| not_before.is_none_or(|t| f.started >= t);
        let mut state = self.lock();
        loop {
            if let Some(last) = state.last.as_ref().filter(|f| fresh(f)) {
                return last.clone();
            }
            if !state.in_flight {
                break;
            }
            // A fetch is bounded by FETCH_DEADLINE, and the flight guard below
            // clears in_flight however it ends, so this wait ends.
            state = self
                .fetched
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.in_flight = true;
        drop(state);

        let mut flight = Flight {
            attestor: self,
            done: None,
        };
        let started = Instant::now();
        let result = self.fetch().map(Arc::new).map_err(Arc::new);
        let fetch = Fetch { started, result };
        flight.done = Some(fetch.clone());
        fetch
    }

    /// One `GET /pods`.
    fn fetch(&self) -> Result<Vec<Pod>, K8sError> {
        let token = self.token()?;
        let addr = format!("{}:{}", self.config.kubelet_host, self.config.kubelet_port);
        let io = |source| K8sError::Io {
            addr: addr.clone(),
            source,
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let host = match self.server_name {
            ServerName::IpAddress(rustls::pki_types::IpAddr::V6(_)) => {
                format!(
                    "[{}]:{}",
                    self.config.kubelet_host, self.config.kubelet_port
                )
            }
            _ => addr.clone(),
        };
        let (tls, name) = (self.tls.clone(), self.server_name.clone());
        let (kubelet, port) = (self.config.kubelet_host.clone(), self.config.kubelet_port);
        // The handshake (and so certificate verification) is part of connecting.
        let connect = move || async move {
            let tcp = tokio::net::TcpStream::connect((kubelet.as_str(), port)).await?;
            tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
        };
        let bearer = format!("Bearer {token}");
        let answer = crate::http::get(
            connect,
            &host,
            "/pods",
            &[
                ("authorization", bearer.as_str()),
                ("accept", "application/json"),
                ("user-agent", "lanyard-agent"),
            ],
            client::MAX_BODY,
            FETCH_DEADLINE,
        )
        .map_err(io)?;
        let (code, body) = (answer.status, &answer.body[..]);
        if code != 200 {
            let hint = match code {
                401 => " (the token was not accepted)",
                403 => " (the token's service account may not read nodes/proxy)",
                _ => "",
            };
            return Err(K8sError::Status {
                code,
                hint,
                body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            });
        }
        let list: k8s_openapi::List<Pod> = serde_json::from_slice(body)
            .map_err(|e| K8sError::Protocol(format!("not a PodList: {e}")))?;
        Ok(list.items)
    }

    fn token(&self) -> Result<String, K8sError> {
        let path = &self.config.token_file;
        let err = |reason: String| K8sError::Token {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(err("empty".into()));
        }
        // It goes into a header line: a control character would end or split it.
        if token.chars().any(|c| c.is_control() || c == ' ') {
            return Err(err("contains whitespace or control characters".into()));
        }
        Ok(token.to_owned())
    }

    /// The selectors for container `id` of pod `pod_uid`, retrying while the
    /// kubelet does not list it yet (or cannot be reached) up to `pod_wait`.
    fn attest_container(&self, pod_uid: &str, id: &str) -> Result<Vec<Selector>, AttestError> {
        let deadline = Instant::now() + self.config.pod_wait;
        // The first look may use a recent list; retries need one made after the
        // miss, since the container was not in the list the miss came from.
        let mut not_before = Instant::now().checked_sub(self.config.cache_ttl);
        loop {
            let fetch = self.pods(not_before);
            let failure = match &fetch.result {
                Ok(pods) => match find(pods, pod_uid, id) {
                    Some((pod, status)) => return self.selectors(pod, status),
                    None => None,
                },
                Err(e) => Some(e.clone()),
            };
            let now = Instant::now();
            if now >= deadline {
                let wait = self.config.pod_wait;
                let message = match failure {
                    Some(e) => format!("{e} (still failing after {wait:?})"),
                    None => format!(
                        "container {id} of pod {pod_uid} not in the kubelet's pod list after {wait:?}"
                    ),
                };
                return Err(kubelet_error(message));
            }
            std::thread::sleep(self.config.retry_every.min(deadline - now));
            not_before = Some(Instant::now());
        }
    }

    fn selectors(&self, pod: &Pod, status: &ContainerStatus) -> Result<Vec<Selector>, AttestError> {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let node = spec.and_then(|s| s.node_name.as_deref());
        if let Some(want) = &self.config.node_name {
            if node != Some(want.as_str()) {
                // Not retried: the list comes from the wrong kubelet, or lies.
                return Err(kubelet_error(format!(
                    "pod {} is on node {}, not this node {want}",
                    meta.uid.as_deref().unwrap_or_default(),
                    node.unwrap_or("(none)")
                )));
            }
        }
        let mut out = Vec::new();
        // Absent fields give no selector rather than an empty one: a missing
        // selector can only narrow what the workload matches.
        let mut push = |key: &str, value: Option<&str>| -> Result<(), AttestError> {
            match value.filter(|v| !v.is_empty()) {
                Some(v) => {
                    out.push(selector("k8s", key, v)?);
                    Ok(())
                }
                None => Ok(()),
            }
        };
        push("ns", meta.namespace.as_deref())?;
        let sa = spec.and_then(|s| {
            s.service_account_name
                .as_deref()
                .or(s.service_account.as_deref())
        });
        push("sa", sa)?;
        push("pod-name", meta.name.as_deref())?;
        push("pod-uid", meta.uid.as_deref())?;
        push("node-name", node)?;
        push("container-name", Some(&status.name))?;
        push("container-image", container_image(pod, status))?;
        let owners = meta.owner_references.as_deref().unwrap_or_default();
        // The controller is the owner that manages the pod; other owners (rare)
        // are only named when there is no controller.
        let controllers: Vec<_> = owners
            .iter()
            .filter(|o| o.controller == Some(true))
            .collect();
        let owners = if controllers.is_empty() {
            owners.iter().collect()
        } else {
            controllers
        };
        for o in owners {
            push("pod-owner", Some(&format!("{}:{}", o.kind, o.name)))?;
        }
        for (k, v) in meta.labels.iter().flatten() {
            // A label that cannot be a selector is left out, like docker labels.
            if let Ok(s) = selector("k8s", "pod-label", &format!("{k}:{v}")) {
                out.push(s);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl WorkloadAttestor for K8sAttestor {
    fn name(&self) -> &'static str {
        "k8s"
    }

    fn attest(&self, p: &ProcessRef) -> Result<Vec<Selector>, AttestError> {
        let info = self.container.info(p.pid)?;
        // Not in a pod's container (a host process, a plain docker container, a
        // pod's runtime machinery): nothing to ask the kubelet about.
        let (Some(pod_uid), Some(id)) = (info.pod_uid, info.container_id) else {
            return Ok(Vec::new());
        };
        self.attest_container(&pod_uid, &id)
    }
}

/// Clears `in_flight` and wakes the waiters however the fetch ends, publishing
/// its result (or, had it panicked, leaving the last one so a waiter retries).
struct Flight<'a> {
    attestor: &'a K8sAttestor,
    done: Option<Fetch>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut state = self.attestor.lock();
        state.in_flight = false;
        if let Some(f) = self.done.take() {
            state.last = Some(f);
        }
        drop(state);
        self.attestor.fetched.notify_all();
    }
}

fn kubelet_error(message: String) -> AttestError {
    AttestError::Io {
        what: "kubelet".into(),
        source: std::io::Error::other(message),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn config_defaults_verify() {
        let c = K8sConfig::new("/var/run/secrets/kubernetes.io/serviceaccount/token");
        assert!(!c.insecure_skip_verify);
        assert_eq!(
            (c.kubelet_host.as_str(), c.kubelet_port),
            ("127.0.0.1", 10250)
        );
        assert!(matches!(
            K8sAttestor::new(c, ContainerAttestor::new()),
            Err(K8sError::NoCa)
        ));
    }
}
