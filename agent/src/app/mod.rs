//! `build(config) -> Bound`, then `wait_termination()`: everything is bound (and
//! every error reported) before the agent reports ready; SIGTERM first stops new
//! work and ends streams, then drains with a hard deadline.

mod sync;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lanyard_proto::spiffe::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use lanyard_proto::workload::credentials_server::CredentialsServer;
use tokio::sync::watch;

use crate::attest::Pipeline;
use crate::authority::upstream::UpstreamAuthority;
use crate::authority::{Authority, AuthorityError, LocalAuthority};
use crate::cache::Cache;
use crate::config::{Config, Source};
use crate::metrics::Metrics;
use crate::socket::api::spiffe::SpiffeService;
use crate::socket::api::workload::CredentialsService;
use crate::socket::api::{now, Ctx};

/// Largest request message accepted. Real requests are a few hundred bytes (a
/// JWT-SVID to validate is the largest); anything bigger is refused with
/// `ResourceExhausted` (gRPC's code for a size limit) before it is decoded.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The authority's files are missing or invalid.
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    /// An attestor's configuration is invalid (a CA file, …).
    #[error("{0}")]
    Attestor(String),
    /// A socket, directory or address could not be bound.
    #[error("{what}: {source}")]
    Bind {
        /// What was being bound.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `data_dir` or the socket's directory is not the agent's alone.
    #[error("{key}: {source} (set allow_insecure_dirs = true to start anyway)")]
    UnsafeDir {
        /// The config key.
        key: &'static str,
        /// What is wrong with it.
        source: crate::fsutil::UnsafeDir,
    },
}

/// A started agent.
#[derive(Debug)]
pub struct Bound {
    socket_path: PathBuf,
    health_addr: Option<std::net::SocketAddr>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    drain: std::time::Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn bind_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let what = what.into();
    move |source| BuildError::Bind { what, source }
}

/// The attestors `config` enables: unix, container and systemd always; docker
/// with `[plugins.container] docker_socket`; k8s with `[plugins.k8s]`.
pub fn default_attestors(
    config: &Config,
) -> Result<Vec<Box<dyn lanyard_plugins::WorkloadAttestor>>, BuildError> {
    let mut container = lanyard_plugins::container::ContainerAttestor::new()
        .trusting_unverifiable(config.trust_unverifiable_cgroups);
    if let Some(root) = &config.host_cgroup_root {
        container = container.with_host_cgroup_root(root).map_err(|e| {
            BuildError::Attestor(format!("plugins.container.host_cgroup_root: {e}"))
        })?;
    }
    let mut v = attestors(
        lanyard_plugins::unix::UnixAttestor::new(config.unix_max_hash_bytes)
            .with_foreign_namespaces(config.unix_foreign_namespace_paths),
        container.clone(),
        config.docker_socket.as_deref(),
    );
    if let Some(c) = &config.k8s {
        let a = lanyard_plugins::k8s::K8sAttestor::new(c.clone(), container)
            .map_err(|e| BuildError::Attestor(format!("k8s: {e}")))?;
        v.push(Box::new(a));
    }
    Ok(v)
}

/// unix, container and systemd; docker when an Engine API socket is given.
pub fn attestors(
    unix: lanyard_plugins::unix::UnixAttestor,
    container: lanyard_plugins::container::ContainerAttestor,
    docker_socket: Option<&std::path::Path>,
) -> Vec<Box<dyn lanyard_plugins::WorkloadAttestor>> {
    use lanyard_plugins::{docker, systemd};
    let mut v: Vec<Box<dyn lanyard_plugins::WorkloadAttestor>> = vec![
        Box::new(unix),
        Box::new(container.clone()),
        Box::new(systemd::SystemdAttestor::new()),
    ];
    if let Some(sock) = docker_socket {
        v.push(Box::new(docker::DockerAttestor::new(
            container,
            docker::DockerClient::new(sock),
        )));
    }
    v
}

/// Binds everything for `config` and starts serving.
pub async fn build(config: Config) -> Result<Bound, BuildError> {
    let attestors = default_attestors(&config)?;
    build_with(config, attestors).await
}

/// [`build`] with a given set of attestors (tests add a slow one).
pub async fn build_with(
    config: Config,
    attestors: Vec<Box<dyn lanyard_plugins::WorkloadAttestor>>,
) -> Result<Bound, BuildError> {
    // The cache holds private keys: a data_dir the agent creates is 0700 (its
    // parents, which others may need to traverse, get the usual mode).
    if let Some(parent) = config.data_dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(bind_err(format!("data_dir {}", config.data_dir.display())))?;
    }
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&config.data_dir)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(e),
        })
        .map_err(bind_err(format!("data_dir {}", config.data_dir.display())))?;
    if !config.allow_insecure_dirs {
        crate::fsutil::check_private_dir(&config.data_dir).map_err(|source| {
            BuildError::UnsafeDir {
                key: "data_dir",
                source,
            }
        })?;
    }
    let (authority, upstream): (Arc<dyn Authority>, Option<Arc<UpstreamAuthority>>) =
        match &config.source {
            Source::Local(files) => (
                Arc::new(LocalAuthority::load(files, &config.trust_domain, now())?),
                None,
            ),
            Source::Upstream(u) => {
                let up = Arc::new(UpstreamAuthority::load(
                    u.clone(),
                    &config.trust_domain,
                    config.data_dir.clone(),
                )?);
                (up.clone(), Some(up))
            }
        };
    let mut entries = config.entries.clone();
    if let Some(up) = &upstream {
        // The entries last synced, so a restart with the issuer down still serves.
        entries.extend(up.entries());
    }
    let cache = Arc::new(Cache::new(authority.clone(), config.data_dir.clone()));
    let restored = cache.load(now());
    tracing::info!(restored, "credential cache loaded");
    if let Some(up) = &upstream {
        let dropped = sync::purge(&cache, &up.denied_jtis()).await;
        if dropped > 0 {
            tracing::info!(
                dropped,
                "restored credentials the synced deny list names dropped"
            );
        }
    }

    let pipeline = Pipeline::new(attestors, entries);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::default());
    let admission = crate::admission::Admission::new(config.connections);
    let ctx = Arc::new(Ctx {
        pipeline: pipeline.clone(),
        cache: cache.clone(),
        authority,
        metrics: metrics.clone(),
        shutdown: shutdown_rx.clone(),
        nonces: Mutex::new(HashMap::new()),
        admission: admission.clone(),
    });

    if !config.allow_insecure_dirs {
        // Checked before binding: the socket is created only where no one else
        // could have put their own in its place.
        if let Some(dir) = config.socket_path.parent() {
            std::fs::create_dir_all(dir).map_err(bind_err(format!(
                "socket_path {}",
                config.socket_path.display()
            )))?;
            crate::fsutil::check_private_dir(dir).map_err(|source| BuildError::UnsafeDir {
                key: "socket_path",
                source,
            })?;
        }
    }
    let listener = crate::server::bind(&config.socket_path).map_err(bind_err(format!(
        "socket_path {}",
        config.socket_path.display()
    )))?;
    let mut tasks = Vec::new();
    let mut health_addr = None;
    if let Some(addr) = config.health_addr {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_err(format!("health_addr {addr}")))?;
        health_addr = l.local_addr().ok();
        tasks.push(tokio::spawn(crate::socket::health::serve(
            l,
            ctx.clone(),
            ready_rx,
            shutdown_rx.clone(),
        )));
    }

    metrics.track_connections(admission.clone());
    let mut stop = shutdown_rx.clone();
    let server = tonic::transport::Server::builder()
        // Advertised in SETTINGS: one connection cannot open thousands of
        // streams (each a task and its buffers).
        .max_concurrent_streams(Some(config.connections.max_streams_per_connection))
        .layer(tower::util::MapResponseLayer::new(
            crate::server::oversize_is_resource_exhausted,
        ))
        .add_service(
            SpiffeWorkloadApiServer::new(SpiffeService(ctx.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            CredentialsServer::new(CredentialsService(ctx.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(crate::server::incoming(listener, admission), async move {
            let _ = stop.wait_for(|s| *s).await;
        });
    let server = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "workload API server failed");
        }
    });

    tasks.push(tokio::spawn(cache.clone().persist_loop(
        std::time::Duration::from_millis(200),
        shutdown_rx.clone(),
    )));
    let (rot_cache, mut rot_stop) = (cache.clone(), shutdown_rx.clone());
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => rot_cache.rotate_due(now()).await,
                _ = rot_stop.changed() => return,
            }
        }
    }));
    if let Some(up) = upstream {
        let (tx, rx) = tokio::sync::mpsc::channel(sync::QUEUE);
        tasks.push(tokio::spawn(sync::apply(rx, pipeline, cache.clone())));
        tasks.push(tokio::spawn(up.run(tx, shutdown_rx.clone())));
    }
    let _ = ready_tx.send(true);
    // Keep readiness alive as long as the agent runs.
    tasks.push(tokio::spawn(async move {
        let mut s = shutdown_rx;
        let _ = s.wait_for(|v| *v).await;
        let _ = ready_tx.send(false);
    }));
    tracing::info!(socket = %config.socket_path.display(), "lanyard agent ready");
    Ok(Bound {
        socket_path: config.socket_path,
        health_addr,
        shutdown,
        server,
        cache,
        metrics,
        drain: config.drain_timeout,
        tasks,
    })
}

pub use lanyard_runtime::termination::termination_signal;

impl Bound {
    /// Where the health server listens, if enabled.
    pub fn health_addr(&self) -> Option<std::net::SocketAddr> {
        self.health_addr
    }

    /// The agent's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Waits for SIGTERM or SIGINT, then drains.
    pub async fn wait_termination(self) -> std::io::Result<()> {
        crate::app::termination_signal().await?;
        self.drain().await;
        Ok(())
    }

    /// Stops accepting, ends streams, and waits at most the drain deadline.
    pub async fn drain(self) {
        lanyard_runtime::termination::drain(
            &self.shutdown,
            vec![self.server],
            self.tasks,
            self.drain,
        )
        .await;
        if let Err(e) = self.cache.save() {
            tracing::error!(error = %e, "cannot persist the credential cache at shutdown");
        }
        let _ = std::fs::remove_file(&self.socket_path);
    }
}
