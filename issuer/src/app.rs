//! `build(config) -> Bound`, then `wait_termination()`, like the agent: the
//! store is opened and migrated, the chain credential checked, and every socket
//! bound before the issuer reports ready.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use hyper::StatusCode;
use lanyard_plugins::node::{
    DeviceAttestor, JoinTokenAttestor, NodeAttestor, PsatAttestor, PsatConfig,
};
use lanyard_proto::issuer::admin_server::AdminServer;
use lanyard_proto::issuer::node_server::NodeServer;
use lanyard_runtime::authority::{AuthorityError, LocalAuthority};
use tokio::sync::watch;

use crate::admin::AdminService;
use crate::config::IssuerConfig;
use crate::node_api::NodeService;
use crate::state::{Issuer, REFRESH_EVERY};
use crate::store::StoreError;

/// Largest request accepted from an agent or operator. Real requests are a few
/// hundred bytes; a PSAT or a batch of selectors stays far below this.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest response an agent accepts (a full sync of many entries).
pub const MAX_SYNC_BYTES: usize = 64 * 1024 * 1024;

/// Why the issuer could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The chain issuer credential is missing or invalid.
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    /// The chain credential was not delegated with the issuer role, so agents
    /// would refuse it as their issuer and no verifier would accept the agent
    /// credentials it signs.
    #[error("the chain credential {0} has no issuer role: delegate the issuer's chain with `lanyard org delegate --role issuer` (README, upgrade notes)")]
    NotAnIssuerChain(String),
    /// The random source failed (no key for nonces).
    #[error("the random source failed")]
    NoRandomness,
    /// The store could not be opened or migrated.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The TLS identity could not be made.
    #[error("TLS: {0}")]
    Tls(#[from] lanyard_runtime::tls::TlsError),
    /// A node attestor's configuration is invalid.
    #[error("node attestor {0}: {1}")]
    Attestor(&'static str, String),
    /// A socket or address could not be bound.
    #[error("{what}: {source}")]
    Bind {
        /// What was being bound.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A started issuer.
#[derive(Debug)]
pub struct Bound {
    listen_addr: std::net::SocketAddr,
    health_addr: Option<std::net::SocketAddr>,
    admin_socket: std::path::PathBuf,
    issuer: Arc<Issuer>,
    shutdown: watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    drain: std::time::Duration,
}

fn bind_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let what = what.into();
    move |source| BuildError::Bind { what, source }
}

fn attestors(config: &IssuerConfig) -> Result<Vec<Box<dyn NodeAttestor>>, BuildError> {
    let mut v: Vec<Box<dyn NodeAttestor>> = vec![
        Box::new(JoinTokenAttestor::new()),
        Box::new(DeviceAttestor::new()),
    ];
    if let Some(p) = &config.k8s_psat {
        let jwks = lanyard_plugins::node::k8s_psat::load_jwks_file(&p.jwks_file)
            .map_err(|e| BuildError::Attestor("k8s_psat", e.to_string()))?;
        let psat = PsatAttestor::new(PsatConfig {
            cluster: p.cluster.clone(),
            audience: p.audience.clone(),
            allowed: p.allowed.clone(),
            jwks,
            issuer: p.issuer.clone(),
        })
        .map_err(|e| BuildError::Attestor("k8s_psat", e.to_string()))?;
        v.push(Box::new(psat));
    }
    Ok(v)
}

/// Opens the store, checks the credential, binds everything and starts serving.
pub async fn build(config: IssuerConfig) -> Result<Bound, BuildError> {
    let now = lanyard_runtime::clock::now();
    let authority = LocalAuthority::load(&config.authority, &config.trust_domain, now)?;
    if !authority
        .chain()
        .grant()
        .has_role(lanyard_token::claims::ROLE_ISSUER)
    {
        return Err(BuildError::NotAnIssuerChain(
            config.authority.chain_jwt.display().to_string(),
        ));
    }
    let org_der = lanyard_runtime::authority::Authority::bundle(&authority)
        .x509_roots
        .into_iter()
        .next()
        .unwrap_or_default();
    let tls = lanyard_runtime::tls::server_config(
        authority.chain_key(),
        authority.chain().token(),
        authority.chain_der().to_vec(),
        org_der,
        authority.chain().expires_at(),
        now,
    )?;
    let store = crate::store::open(&config.store).await?;
    let issuer = Arc::new(
        Issuer::new(
            config.trust_domain.clone(),
            authority,
            store,
            attestors(&config)?,
            config.agent_ttl_secs,
            config.limits,
        )
        .ok_or(BuildError::NoRandomness)
        .map(|mut i| {
            i.x509_chain_roots = config.x509_chain_roots;
            i
        })?,
    );
    issuer.publish_key().await?;
    issuer.refresh(now).await?;

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(bind_err(format!("listen {}", config.listen)))?;
    let listen_addr = listener
        .local_addr()
        .map_err(bind_err(format!("listen {}", config.listen)))?;
    let admin = lanyard_runtime::server::bind_with_mode(&config.admin_socket, 0o660).map_err(
        bind_err(format!("admin_socket {}", config.admin_socket.display())),
    )?;

    let (shutdown, shutdown_rx) = watch::channel(false);
    let store_ok = Arc::new(AtomicBool::new(true));
    // Every Node API request (agents' calls), for /metrics: what a fleet costs
    // the issuer, and whether reconnecting agents come back in a storm.
    let node_requests = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let mut health_addr = None;
    if let Some(addr) = config.health_addr {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_err(format!("health_addr {addr}")))?;
        health_addr = l.local_addr().ok();
        tasks.push(tokio::spawn(lanyard_runtime::health::serve_with(
            l,
            health_handler(
                issuer.clone(),
                store_ok.clone(),
                node_requests.clone(),
                shutdown_rx.clone(),
            ),
            shutdown_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(refresh_loop(
        issuer.clone(),
        store_ok,
        shutdown_rx.clone(),
    )));

    let node = NodeService {
        issuer: issuer.clone(),
        shutdown: shutdown_rx.clone(),
    };
    let mut stop = shutdown_rx.clone();
    let counter = node_requests.clone();
    let node_server = tonic::transport::Server::builder()
        .layer(tower::util::MapRequestLayer::new(
            move |req: tonic::codegen::http::Request<tonic::body::Body>| {
                counter.fetch_add(1, Ordering::Relaxed);
                req
            },
        ))
        .layer(tower::util::MapResponseLayer::new(
            lanyard_runtime::server::oversize_is_resource_exhausted,
        ))
        .add_service(
            NodeServer::new(node)
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(MAX_SYNC_BYTES),
        )
        .serve_with_incoming_shutdown(lanyard_runtime::tls::incoming(listener, tls), async move {
            let _ = stop.wait_for(|s| *s).await;
        });
    let mut stop = shutdown_rx.clone();
    let admin_server = tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            lanyard_runtime::server::oversize_is_resource_exhausted,
        ))
        .add_service(
            AdminServer::new(AdminService {
                issuer: issuer.clone(),
            })
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_SYNC_BYTES),
        )
        .serve_with_incoming_shutdown(
            lanyard_runtime::server::incoming(
                admin,
                // The admin socket is for operators (mode 0660), and its calls
                // mark no response as served: no idle cut-off worth having.
                lanyard_runtime::admission::Admission::new(
                    lanyard_runtime::admission::ConnLimits {
                        idle_timeout: std::time::Duration::from_secs(3600),
                        ..Default::default()
                    },
                ),
            ),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        );
    let servers = vec![
        tokio::spawn(async move {
            if let Err(e) = node_server.await {
                tracing::error!(error = %e, "node server failed");
            }
        }),
        tokio::spawn(async move {
            if let Err(e) = admin_server.await {
                tracing::error!(error = %e, "admin server failed");
            }
        }),
    ];
    tracing::info!(listen = %listen_addr, admin = %config.admin_socket.display(), "lanyard issuer ready");
    Ok(Bound {
        listen_addr,
        health_addr,
        admin_socket: config.admin_socket,
        issuer,
        shutdown,
        servers,
        tasks,
        drain: config.drain_timeout,
    })
}

/// Polls the store's revision; a failure marks the issuer not ready until the
/// store answers again (PostgreSQL restarts are ridden out, not fatal).
async fn refresh_loop(issuer: Arc<Issuer>, ok: Arc<AtomicBool>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match issuer.refresh(lanyard_runtime::clock::now()).await {
            Ok(_) => {
                if !ok.swap(true, Ordering::Relaxed) {
                    tracing::info!("store reachable again");
                }
            }
            Err(e) => {
                if ok.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "store unreachable; serving the last view");
                }
            }
        }
    }
}

fn health_handler(
    issuer: Arc<Issuer>,
    store_ok: Arc<AtomicBool>,
    node_requests: Arc<AtomicU64>,
    stop: watch::Receiver<bool>,
) -> lanyard_runtime::health::Handler {
    Arc::new(move |path: &str| match path {
        "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
        "/readyz" => {
            let now = lanyard_runtime::clock::now();
            if *stop.borrow() {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: shutting down\n".into(),
                )
            } else if issuer.authority.chain().expires_at() <= now {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: the chain issuer credential has expired\n".into(),
                )
            } else if issuer.chain_revoked() {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: this replica's chain issuer credential is revoked\n".into(),
                )
            } else if !store_ok.load(Ordering::Relaxed) {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: store unreachable\n".into(),
                )
            } else {
                (StatusCode::OK, "ready\n".into())
            }
        }
        "/metrics" => {
            use lanyard_runtime::metrics::Family;
            use prometheus_client::metrics::MetricType;
            let v = issuer.view();
            let families = vec![
                Family::one(
                    "lanyard_issuer_revision",
                    "The store revision this replica serves",
                    MetricType::Gauge,
                    v.revision,
                ),
                Family::one(
                    "lanyard_issuer_entries",
                    "Registration entries in this replica's view",
                    MetricType::Gauge,
                    v.entries.len(),
                ),
                Family::one(
                    "lanyard_issuer_agents",
                    "Agents known to the store",
                    MetricType::Gauge,
                    v.agents.len(),
                ),
                Family::one(
                    "lanyard_issuer_node_requests",
                    "Node API requests (agents' calls) served",
                    MetricType::Counter,
                    node_requests.load(Ordering::Relaxed),
                ),
            ];
            (
                StatusCode::OK,
                lanyard_runtime::metrics::encode(families, &[]),
            )
        }
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    })
}

impl Bound {
    /// Where agents connect.
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        self.listen_addr
    }

    /// Where the health server listens, if enabled.
    pub fn health_addr(&self) -> Option<std::net::SocketAddr> {
        self.health_addr
    }

    /// The shared state (benchmarks and tests).
    pub fn issuer(&self) -> &Arc<Issuer> {
        &self.issuer
    }

    /// Waits for SIGTERM or SIGINT, then drains.
    pub async fn wait_termination(self) -> std::io::Result<()> {
        lanyard_runtime::termination::termination_signal().await?;
        self.drain().await;
        Ok(())
    }

    /// Stops accepting, ends streams, and waits at most the drain deadline.
    pub async fn drain(self) {
        lanyard_runtime::termination::drain(&self.shutdown, self.servers, self.tasks, self.drain)
            .await;
        let _ = std::fs::remove_file(&self.admin_socket);
    }
}
