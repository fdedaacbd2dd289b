//! Attestation plugins: who is this process, in facts the kernel vouches for.
//!
//! A [`WorkloadAttestor`] turns a [`ProcessRef`] (what `SO_PEERCRED` said at accept)
//! into [`Selector`]s. Plugins know nothing about gRPC, caches or entries; the agent
//! runs them and decides. Attestors are blocking (they read `/proc`); the agent
//! runs them on its blocking pool. [`container`] and [`systemd`] read a process's
//! cgroups through the [`cgroup`] parser; [`docker`] and [`k8s`] add what the
//! container runtime or the kubelet knows about the container found there.
//!
//! A [`node::NodeAttestor`] checks the evidence an agent presents to the issuer
//! once per node (a join token, a pinned device key, a Kubernetes service-account
//! token) and yields a [`node::AttestedNode`]. Node attestors are async: they may
//! consult the issuer's store.

pub mod cgroup;
pub mod cgroupfs;
pub mod container;
pub mod docker;
pub mod fuzzing;
pub mod hostcgroup;
pub mod http;
pub mod k8s;
#[cfg(feature = "testing")]
pub mod k8s_testing;
pub mod node;
pub mod reads;
pub mod selector;
pub mod systemd;
pub mod template;
pub mod unix;

pub use selector::{Selector, SelectorError, Wanted};

/// The process a request came from, as the kernel reported it at accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRef {
    /// Process id.
    pub pid: i32,
    /// Effective uid at connect time (`SO_PEERCRED`).
    pub uid: u32,
    /// Effective gid at connect time (`SO_PEERCRED`).
    pub gid: u32,
    /// Supplementary groups at connect time (`SO_PEERGROUPS`), taken with the
    /// uid and gid so that all three describe the same moment. `None` when
    /// there is no socket (`lanyard attest PID`): the [`unix`] attestor then
    /// reads them from `/proc/PID/status`.
    pub groups: Option<std::sync::Arc<[u32]>>,
}

impl ProcessRef {
    /// A process known by pid and ids only (no socket to ask for groups).
    pub fn new(pid: i32, uid: u32, gid: u32) -> Self {
        Self {
            pid,
            uid,
            gid,
            groups: None,
        }
    }
}

/// Why an attestor could not vouch for a process. Any error fails the request
/// closed: a partial selector set is never used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The process went away while it was being examined.
    #[error("process {0} exited during attestation")]
    ProcessGone(i32),
    /// Reading `/proc` or a file it points to failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `/proc` held something this attestor cannot parse.
    #[error("unexpected contents in {0}")]
    Parse(String),
}

/// Derives selectors for a process.
pub trait WorkloadAttestor: Send + Sync + std::fmt::Debug {
    /// The selector type this attestor emits (`unix`, `container`, …).
    fn name(&self) -> &'static str;
    /// Selectors for `process`, all of type [`WorkloadAttestor::name`].
    fn attest(&self, process: &ProcessRef) -> Result<Vec<Selector>, AttestError>;
    /// [`WorkloadAttestor::attest`], free to leave out selectors that cost real
    /// work (reading a whole binary) when `wanted` does not name them.
    fn attest_wanted(
        &self,
        process: &ProcessRef,
        wanted: &Wanted,
    ) -> Result<Vec<Selector>, AttestError> {
        let _ = wanted;
        self.attest(process)
    }
    /// Whether [`WorkloadAttestor::attest_wanted`] with `wanted` only reads
    /// `/proc` and small files, never the network or a whole binary, so that the
    /// agent may run it on an async worker instead of its blocking pool.
    fn is_quick(&self, wanted: &Wanted) -> bool {
        let _ = wanted;
        false
    }
}
