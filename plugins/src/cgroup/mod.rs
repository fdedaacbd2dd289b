//! Which container, Kubernetes pod and systemd unit a process is in, read from
//! `/proc/PID/cgroup`.
//!
//! `/proc/PID/cgroup` is written by the kernel: a process can move between cgroups
//! only where it has write access to the cgroup filesystem, and it cannot make the
//! file say anything else. That is why it is the source of truth here, and why
//! `/proc/PID/mountinfo` is never read: a process can rearrange its own mount
//! table in a user and mount namespace, so it says nothing the agent can trust.
//!
//! Each line is `hierarchy-id:controllers:path`. Cgroup v2 has one line, `0::/path`;
//! v1 has one line per hierarchy (`12:pids:/kubepods/…`, `1:name=systemd:/…`);
//! hybrid systems have both. Paths are shown relative to the *reader's* cgroup
//! namespace, so an agent in its own namespace sees `/../../<id>`.
//!
//! Runtimes name cgroups after the container's 64-hex id, in a few layouts:
//!
//! | layout | example segment(s) |
//! |---|---|
//! | docker, cgroupfs driver | `/docker/<id>` |
//! | docker, systemd driver | `docker-<id>.scope` |
//! | containerd CRI, systemd driver | `cri-containerd-<id>.scope` |
//! | containerd, no CRI | `/<namespace>/<id>` (e.g. `/default/<id>`) |
//! | CRI-O | `crio-<id>.scope` (not `crio-conmon-<id>.scope`: the monitor) |
//! | podman | `libpod-<id>.scope`, `/libpod_parent/libpod-<id>` (not `libpod-conmon-…`) |
//! | kubelet, cgroupfs driver | `/kubepods/<qos>/pod<uid>/<id>` |
//! | kubelet, systemd driver | `kubepods-<qos>-pod<uid_with_underscores>.slice/…` |
//!
//! Nesting (kind, docker-in-docker) puts one layout inside another:
//! `/docker/<node>/kubepods/besteffort/pod<uid>/<id>`. The innermost container on
//! a path is the one the process is in.
//!
//! Trust: a cgroup's name is chosen by whoever created it. Under cgroup v2 an
//! unprivileged user can create cgroups only in a subtree delegated to them (below
//! `user@UID.service`, or inside a container given a writable cgroupfs), and pod
//! uids and container ids are world-readable in every `/proc/PID/cgroup`. So a
//! user who makes `…/user@1001.service/kubepods.slice/…/cri-containerd-<id>.scope`
//! and moves into it would carry another container's name. The parser therefore
//! drops every id found at or below a `user@*.service` segment
//! ([`Distrust::Delegated`]), and reports where each remaining id was found
//! ([`CgroupInfo::claims`]) so that the container attestor can check that those
//! directories are owned by root ([`crate::container`]). Rootless containers
//! (rootless podman's `libpod-<id>.scope`) get no container selectors: entries
//! for them pin `unix:uid`.

mod path;
#[cfg(test)]
mod tests;

use path::{analyze_path, cut_after, service_of};
use std::fmt;

/// A container runtime recognised from the shape of a cgroup path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Runtime {
    /// Docker (`/docker/<id>`, `docker-<id>.scope`).
    Docker,
    /// containerd, through CRI (`cri-containerd-<id>.scope`) or directly
    /// (`/<namespace>/<id>`).
    Containerd,
    /// CRI-O (`crio-<id>.scope`).
    CriO,
    /// Podman, rootful or rootless (`libpod-<id>.scope`).
    Podman,
}

impl Runtime {
    /// The name used in selectors: `docker`, `containerd`, `cri-o` or `podman`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
            Self::Podman => "podman",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a process's cgroups say about it. All fields are `None` for a plain host
/// process outside any service (a login session, a kernel thread).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CgroupInfo {
    /// The innermost container's id: 64 lowercase hex characters.
    pub container_id: Option<String>,
    /// The Kubernetes pod uid (`8-4-4-4-12` lowercase hex) of the pod the container
    /// belongs to. When there is no container id, the pod the process's cgroup is in
    /// (a CRI-O `conmon`, for example).
    pub pod_uid: Option<String>,
    /// The runtime, when the path's shape names one. A bare id under the kubelet's
    /// cgroupfs layout (`/kubepods/…/pod<uid>/<id>`) does not, so this is `None`.
    pub runtime: Option<Runtime>,
    /// The systemd service the process belongs to (`nginx.service`), if it is in
    /// one and not in a container.
    pub systemd_unit: Option<String>,
    /// Where the container id and pod uid were found: one directory per line that
    /// named them, cut after the innermost segment that did. Empty when there are
    /// no ids. The container attestor checks who owns these.
    pub claims: Vec<CgroupClaim>,
    /// Why ids the path named were dropped, if they were. The ids are then `None`
    /// (and so are `runtime` and the claims), so that nothing downstream can use
    /// a name the caller may have chosen itself.
    pub distrust: Option<Distrust>,
}

impl CgroupInfo {
    /// Drops the container id, pod uid and runtime, saying why.
    pub fn distrust(&mut self, why: Distrust) {
        self.container_id = None;
        self.pod_uid = None;
        self.runtime = None;
        self.claims.clear();
        self.distrust = Some(why);
    }
}

/// One cgroup directory that named a container or pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupClaim {
    /// The hierarchy id (`0` for the unified hierarchy).
    pub hierarchy: u32,
    /// The hierarchy's controllers as the line lists them (`memory`,
    /// `cpu,cpuacct`, `name=systemd`; empty on the unified line).
    pub controllers: String,
    /// The path from the hierarchy's root, up to and including the innermost
    /// segment that named the container (or the pod).
    pub dir: String,
}

/// Why a cgroup's container or pod names are not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Distrust {
    /// The names are below a `user@*.service`: a subtree systemd delegates to an
    /// unprivileged user, who may name cgroups there at will.
    #[error("{dir} is in a user's delegated cgroup subtree")]
    Delegated {
        /// The path as `/proc/PID/cgroup` shows it.
        dir: String,
    },
    /// A directory on the way to the container's cgroup is owned by a user other
    /// than root, who could have created it under any name.
    #[error("cgroup {dir} is owned by uid {uid}, not root")]
    NotRootOwned {
        /// The directory on the agent's cgroup filesystem.
        dir: String,
        /// Its owner.
        uid: u32,
    },
    /// The path leaves the agent's cgroup namespace (`/../…`), so the agent
    /// cannot find the directory to check its owner.
    #[error("cgroup {dir} is outside the agent's cgroup namespace; its owner cannot be checked")]
    OutsideNamespace {
        /// The path as `/proc/PID/cgroup` shows it.
        dir: String,
    },
    /// The directory could not be examined on the agent's cgroup filesystems
    /// (gone, unreadable, not a directory, or no hierarchy that names it is
    /// mounted), so its owner cannot be checked.
    #[error("cannot check who owns cgroup {dir}: {reason}")]
    Unverifiable {
        /// The path as `/proc/PID/cgroup` shows it.
        dir: String,
        /// Why.
        reason: String,
    },
    /// The container runtime does not put this process's container where the
    /// cgroup path says (another cgroup, or no such running container).
    #[error("the container runtime does not confirm container {id}: {reason}")]
    NotConfirmed {
        /// The container id from the path.
        id: String,
        /// What the runtime said.
        reason: String,
    },
}

/// Why a cgroup file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// The file had no lines. Every live process is in at least one cgroup; an
    /// empty read means the process is exiting, or this is not a cgroup file.
    #[error("no cgroup lines")]
    Empty,
    /// A line is not `hierarchy-id:controllers:/path`.
    #[error("line {line}: {text:?} is not hierarchy-id:controllers:/path")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// The line as read.
        text: String,
    },
    /// Two hierarchies put the process in different containers (or pods, or
    /// runtimes). A process is in one container; rather than guess which line is
    /// right, the caller fails closed.
    #[error("one hierarchy says {what} {first}, another says {second}")]
    Conflict {
        /// `container`, `pod` or `runtime`.
        what: &'static str,
        /// The value seen first.
        first: String,
        /// The different value seen later.
        second: String,
    },
}

/// Parses the contents of `/proc/PID/cgroup`.
///
/// The same container id on many v1 lines is normal; lines that show no container
/// (`4:rdma:/`, the `0::` line of a hybrid system) are too. Two different ids are a
/// [`CgroupError::Conflict`].
pub fn parse_cgroup(text: &str) -> Result<CgroupInfo, CgroupError> {
    let mut info = CgroupInfo::default();
    // The line systemd's own hierarchy is on: `name=systemd` on v1 and hybrid
    // systems, else the unified `0::` line.
    let mut systemd_path: Option<(bool, &str)> = None;
    let mut any = false;
    // The first claim found inside a user's delegated subtree.
    let mut delegated: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        if raw.is_empty() {
            continue;
        }
        let (hierarchy, controllers, path) =
            split_line(raw).ok_or_else(|| CgroupError::Malformed {
                line: i + 1,
                text: raw.to_owned(),
            })?;
        any = true;
        let found = analyze_path(path);
        if let Some(end) = found.claim_end {
            let dir = cut_after(path, end);
            if found.delegated && delegated.is_none() {
                delegated = Some(dir.to_owned());
            }
            info.claims.push(CgroupClaim {
                hierarchy,
                controllers: controllers.to_owned(),
                dir: dir.to_owned(),
            });
        }
        if let Some(id) = found.id {
            merge(&mut info.container_id, id, "container")?;
            if let Some(rt) = found.runtime {
                merge(&mut info.runtime, rt, "runtime")?;
            }
        }
        if let Some(uid) = found.pod_uid {
            merge(&mut info.pod_uid, uid, "pod")?;
        }
        let named = controllers.split(',').any(|c| c == "name=systemd");
        if named || (hierarchy == 0 && controllers.is_empty()) {
            match systemd_path {
                Some((true, _)) => {}
                _ => systemd_path = Some((named, path)),
            }
        }
    }
    if !any {
        return Err(CgroupError::Empty);
    }
    // One delegated line is enough to drop every id: the lines of one process
    // cannot name two places, and a fail-closed answer costs nothing but the
    // container selectors.
    if let Some(dir) = delegated {
        info.distrust(Distrust::Delegated { dir });
    }
    // A service's name is reported only for host processes: a container inside a
    // service's subtree (`containerd.service/…:cri-containerd:<id>`) is not that
    // service, and must not match entries written for it.
    if info.container_id.is_none() {
        info.systemd_unit = systemd_path.and_then(|(_, p)| service_of(p));
    }
    Ok(info)
}

/// `hierarchy-id:controllers:path`, with the path checked to be absolute. The path
/// itself may contain `:` (systemd-style `slice:prefix:name` leaves).
fn split_line(line: &str) -> Option<(u32, &str, &str)> {
    // A cgroup removed while the process was still in it (a zombie) is shown with
    // this suffix on cgroup v2.
    let line = line.strip_suffix(" (deleted)").unwrap_or(line);
    let mut parts = line.splitn(3, ':');
    let hierarchy = parts.next()?.parse().ok()?;
    let controllers = parts.next()?;
    let path = parts.next()?;
    if !path.starts_with('/') || path.chars().any(char::is_control) {
        return None;
    }
    Some((hierarchy, controllers, path))
}

/// Sets `slot` to `value`, or fails if it already holds something else.
fn merge<T: PartialEq + fmt::Display>(
    slot: &mut Option<T>,
    value: T,
    what: &'static str,
) -> Result<(), CgroupError> {
    match slot {
        Some(seen) if *seen != value => Err(CgroupError::Conflict {
            what,
            first: seen.to_string(),
            second: value.to_string(),
        }),
        Some(_) => Ok(()),
        None => {
            *slot = Some(value);
            Ok(())
        }
    }
}
