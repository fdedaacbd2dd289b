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

/// What one cgroup path says.
#[derive(Debug, Default)]
struct Found {
    id: Option<String>,
    runtime: Option<Runtime>,
    pod_uid: Option<String>,
    /// Index of the innermost segment that named the id or pod kept above.
    claim_end: Option<usize>,
    /// Whether a `user@*.service` segment comes at or before `claim_end`.
    delegated: bool,
}

/// What one path segment is.
#[derive(Debug)]
enum Segment {
    /// A container, named in a way that says which runtime made it.
    Container {
        id: String,
        runtime: Runtime,
        pod_uid: Option<String>,
    },
    /// A bare 64-hex id: what made it depends on the segments around it.
    BareId(String),
    /// A Kubernetes pod's cgroup.
    Pod(String),
    /// A runtime or kubelet cgroup that is not a container itself (`docker`,
    /// `kubepods`, a conmon scope).
    Marker,
    /// Anything else (slices, services, sessions, `..`).
    Other,
}

/// Prefixes runtimes give a container's systemd scope (`docker-<id>.scope`) or
/// cgroupfs directory (`libpod-<id>`).
const PREFIXES: &[(&str, Runtime)] = &[
    ("cri-containerd-", Runtime::Containerd),
    ("docker-", Runtime::Docker),
    ("crio-", Runtime::CriO),
    ("libpod-", Runtime::Podman),
    // nerdctl, with the systemd cgroup manager: a containerd client.
    ("nerdctl-", Runtime::Containerd),
];

/// The runtime named by the middle of a systemd-style `slice:prefix:name` cgroup
/// parent (seen as a literal leaf when kubelet uses the systemd driver but the
/// runtime uses cgroupfs).
fn runtime_of_prefix(prefix: &str) -> Option<Runtime> {
    match prefix {
        "cri-containerd" | "nerdctl" => Some(Runtime::Containerd),
        "docker" => Some(Runtime::Docker),
        "crio" => Some(Runtime::CriO),
        "libpod" => Some(Runtime::Podman),
        _ => None,
    }
}

fn classify(seg: &str) -> Segment {
    if let [slice, prefix, name] = seg.split(':').collect::<Vec<_>>()[..] {
        let name = name.strip_suffix(".scope").unwrap_or(name);
        if let Some(runtime) = runtime_of_prefix(prefix).filter(|_| is_container_id(name)) {
            return Segment::Container {
                id: name.to_owned(),
                runtime,
                pod_uid: pod_uid_of(slice),
            };
        }
    }
    let base = seg.strip_suffix(".scope").unwrap_or(seg);
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = base.strip_prefix(prefix).filter(|r| is_container_id(r)) {
            return Segment::Container {
                id: id.to_owned(),
                runtime: *runtime,
                pod_uid: None,
            };
        }
    }
    if is_container_id(seg) {
        return Segment::BareId(seg.to_owned());
    }
    if let Some(uid) = pod_uid_of(seg) {
        return Segment::Pod(uid);
    }
    // conmon (CRI-O's and podman's container monitor) runs next to the container in
    // a scope named after it; it is runtime machinery, not the workload.
    if seg == "docker"
        || seg == "libpod_parent"
        || seg.contains("kubepods")
        || base.starts_with("crio-conmon-")
        || base.starts_with("libpod-conmon-")
    {
        return Segment::Marker;
    }
    Segment::Other
}

fn analyze_path(path: &str) -> Found {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut found = Found::default();
    // A pod seen since the last container: it belongs to the next container down
    // (kind: `/docker/<node>/kubepods/…/pod<uid>/<id>` pairs uid with <id>, not
    // with the node).
    let mut pending_pod: Option<String> = None;
    // Whether a runtime or kubelet already showed up on this path, which rules out
    // reading a trailing bare id as containerd's `/<namespace>/<id>`.
    let mut marked = false;
    // Index of the pending pod's segment.
    let mut pending_at = 0;
    // Index of the first `user@*.service` segment.
    let mut user_service: Option<usize> = None;
    for (i, seg) in segments.iter().enumerate() {
        if user_service.is_none() && is_user_service(seg) {
            user_service = Some(i);
        }
        match classify(seg) {
            Segment::Container {
                id,
                runtime,
                pod_uid,
            } => {
                found.id = Some(id);
                found.runtime = Some(runtime);
                found.pod_uid = pod_uid.or_else(|| pending_pod.take());
                pending_pod = None;
                found.claim_end = Some(i);
                marked = true;
            }
            Segment::BareId(id) => {
                let prev = i.checked_sub(1).and_then(|p| segments.get(p)).copied();
                found.runtime = if prev == Some("docker") {
                    Some(Runtime::Docker)
                } else if !marked && i + 1 == segments.len() && prev.is_some_and(is_namespace) {
                    // Plain containerd (ctr, or a client that did not choose a
                    // parent) puts a container at /<namespace>/<id>. A docker
                    // `--cgroup-parent=/x` container looks the same, which is why
                    // this is tried only when nothing else on the path names a
                    // runtime.
                    Some(Runtime::Containerd)
                } else {
                    // The kubelet's cgroupfs layout is the same for every CRI runtime.
                    None
                };
                found.id = Some(id);
                found.pod_uid = pending_pod.take();
                found.claim_end = Some(i);
                marked = true;
            }
            Segment::Pod(uid) => {
                pending_pod = Some(uid);
                pending_at = i;
                marked = true;
            }
            Segment::Marker => marked = true,
            Segment::Other => {}
        }
    }
    // A pod cgroup with no container below it (conmon, or a process the runtime
    // left in the pod's cgroup) is still that pod's. Below a container it would
    // be a pod of a nested cluster the process is not in a container of.
    if found.id.is_none() && pending_pod.is_some() {
        found.pod_uid = pending_pod;
        found.claim_end = Some(pending_at);
    }
    found.delegated = matches!((user_service, found.claim_end), (Some(u), Some(end)) if u <= end);
    found
}

/// `user@UID.service`: the per-user systemd manager, which systemd gives a
/// delegated cgroup subtree that the user controls.
fn is_user_service(seg: &str) -> bool {
    seg.strip_prefix("user@")
        .and_then(|r| r.strip_suffix(".service"))
        .is_some_and(|uid| !uid.is_empty())
}

/// `path` cut after its `end`-th non-empty segment (0-based), keeping the
/// leading `/` and any `..` segments as they were.
fn cut_after(path: &str, end: usize) -> &str {
    let mut seen = 0;
    let mut pos = 0;
    for (start, seg) in path.split('/').scan(0usize, |at, seg| {
        let start = *at;
        *at += seg.len() + 1;
        Some((start, seg))
    }) {
        if seg.is_empty() {
            continue;
        }
        if seen == end {
            pos = start + seg.len();
            break;
        }
        seen += 1;
    }
    &path[..pos]
}

/// The service a cgroup path belongs to, as `sd_pid_get_unit` finds it: skip the
/// slices, and the first unit below them is the system manager's unit for the
/// process. Only a `.service` counts (a `.scope` is a session or a container).
///
/// Deeper unit names (`user@1000.service/app.slice/dbus.service`, a service of a
/// systemd inside a container) are in a subtree delegated to someone else, who
/// names them at will: reporting them would let any user run a user unit called
/// `nginx.service` and match entries written for the host's.
fn service_of(path: &str) -> Option<String> {
    path.split('/')
        // `..`: the path is relative to the reader's cgroup namespace.
        .filter(|s| !s.is_empty() && *s != "..")
        .find(|s| !s.ends_with(".slice"))
        .filter(|s| s.len() > ".service".len() && s.ends_with(".service"))
        .map(str::to_owned)
}

/// 64 lowercase hex characters: how docker, containerd, CRI-O and podman name
/// containers.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A Kubernetes pod uid from `pod<uid>` (cgroupfs driver) or
/// `kubepods-<qos>-pod<uid_with_underscores>.slice` (systemd driver, where `-`
/// separates slice levels so the uid's dashes become underscores).
fn pod_uid_of(seg: &str) -> Option<String> {
    if let Some(uid) = seg.strip_prefix("pod").filter(|u| is_uuid(u)) {
        return Some(uid.to_ascii_lowercase());
    }
    let stem = seg.strip_suffix(".slice")?;
    if !stem.contains("kubepods") {
        return None;
    }
    let uid = stem
        .rsplit('-')
        .next()?
        .strip_prefix("pod")?
        .replace('_', "-");
    is_uuid(&uid).then(|| uid.to_ascii_lowercase())
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// A containerd namespace name: letters, digits, `_`, `-`, `.`, starting with a
/// letter or digit. Systemd units (`.slice`, `.scope`, `.service`) are not.
fn is_namespace(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && ![".slice", ".scope", ".service"]
            .iter()
            .any(|suffix| s.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One real-world cgroup file and what it must parse to.
    struct Case {
        name: &'static str,
        text: &'static str,
        id: Option<&'static str>,
        pod: Option<&'static str>,
        runtime: Option<Runtime>,
        unit: Option<&'static str>,
    }

    const CASES: &[Case] = &[
        Case {
            name: "docker, cgroup v1 (hybrid), cgroupfs driver",
            text: "\
12:perf_event:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
11:hugetlb:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
10:pids:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
9:devices:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
8:memory:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
7:cpu,cpuacct:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
6:freezer:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
5:net_cls,net_prio:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
4:rdma:/
3:blkio:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
2:cpuset:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
1:name=systemd:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
0::/system.slice/containerd.service
",
            id: Some("00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60"),
            pod: None,
            runtime: Some(Runtime::Docker),
            unit: None,
        },
        Case {
            name: "docker, cgroup v1, systemd driver (CentOS 7)",
            text: "\
11:cpuset:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
10:devices:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
9:hugetlb:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
8:blkio:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
7:net_prio,net_cls:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
6:perf_event:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
5:memory:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
4:pids:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
3:cpuacct,cpu:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
2:freezer:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
1:name=systemd:/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
",
            id: Some("fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be"),
            pod: None,
            runtime: Some(Runtime::Docker),
            unit: None,
        },
        Case {
            name: "docker, cgroup v2, systemd driver",
            text: "0::/system.slice/docker-f378696bcfeb4336d887b249a2ff4355341fd5097388ffe8470866a7564997cc.scope\n",
            id: Some("f378696bcfeb4336d887b249a2ff4355341fd5097388ffe8470866a7564997cc"),
            pod: None,
            runtime: Some(Runtime::Docker),
            unit: None,
        },
        Case {
            name: "docker-in-docker, cgroupfs: the inner container",
            text: "0::/docker/abde15ba63dd23e3ce2854b1698542661cbd83e99078c8304a1ba8671269ab84/docker/8b6530b2da16b512aaee496a997a79f8198f1c6a074739bf815893fef20c541e\n",
            id: Some("8b6530b2da16b512aaee496a997a79f8198f1c6a074739bf815893fef20c541e"),
            pod: None,
            runtime: Some(Runtime::Docker),
            unit: None,
        },
        Case {
            name: "kubernetes, cgroup v1, cgroupfs driver, burstable",
            text: "\
12:hugetlb:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
11:memory:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
10:cpu,cpuacct:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
9:freezer:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
8:net_cls,net_prio:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
7:perf_event:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
6:blkio:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
5:pids:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
4:devices:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
3:cpuset:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
2:rdma:/
1:name=systemd:/kubepods/burstable/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
0::/
",
            id: Some("d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba"),
            pod: Some("cf3f6293-0883-4080-a53f-3ae526af0d93"),
            runtime: None,
            unit: None,
        },
        Case {
            name: "kubernetes, cgroup v1, cgroupfs driver, guaranteed",
            text: "4:pids:/kubepods/pod8c591483-617b-4195-963d-b3169d767f57/a391b89b20509c5096830afc0437fc6d49a14b20eb380b3aeb590dc82e5b5889\n1:name=systemd:/kubepods/pod8c591483-617b-4195-963d-b3169d767f57/a391b89b20509c5096830afc0437fc6d49a14b20eb380b3aeb590dc82e5b5889\n",
            id: Some("a391b89b20509c5096830afc0437fc6d49a14b20eb380b3aeb590dc82e5b5889"),
            pod: Some("8c591483-617b-4195-963d-b3169d767f57"),
            runtime: None,
            unit: None,
        },
        Case {
            name: "kubernetes, cgroup v2, systemd driver, containerd",
            text: "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8b9dd266_60dd_4433_8e5e_3bdcc7697bee.slice/cri-containerd-9048ab2eb51744058f0536db7f716e1a09170d58997dd38e063563873825da00.scope\n",
            id: Some("9048ab2eb51744058f0536db7f716e1a09170d58997dd38e063563873825da00"),
            pod: Some("8b9dd266-60dd-4433-8e5e-3bdcc7697bee"),
            runtime: Some(Runtime::Containerd),
            unit: None,
        },
        Case {
            name: "kubernetes, cgroup v2, systemd driver, guaranteed pod",
            text: "0::/kubepods.slice/kubepods-pod5805546d_637a_4421_afe7_4ca7edbffc99.slice/cri-containerd-476f00d81c362aae68996b886a7b2023e3d3c5c2382edc46e438d2090abbfc15.scope\n",
            id: Some("476f00d81c362aae68996b886a7b2023e3d3c5c2382edc46e438d2090abbfc15"),
            pod: Some("5805546d-637a-4421-afe7-4ca7edbffc99"),
            runtime: Some(Runtime::Containerd),
            unit: None,
        },
        Case {
            name: "kubernetes, cgroup v1, systemd driver, dockershim",
            text: "\
11:memory:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1eea9d90_af39_488d_9c44_3171eadc1718.slice/docker-26dbc6f166858421e8f8d98b4095ea1ad50ae3b9c0c77128be7581288664d675.scope
1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1eea9d90_af39_488d_9c44_3171eadc1718.slice/docker-26dbc6f166858421e8f8d98b4095ea1ad50ae3b9c0c77128be7581288664d675.scope
",
            id: Some("26dbc6f166858421e8f8d98b4095ea1ad50ae3b9c0c77128be7581288664d675"),
            pod: Some("1eea9d90-af39-488d-9c44-3171eadc1718"),
            runtime: Some(Runtime::Docker),
            unit: None,
        },
        Case {
            name: "kubelet systemd driver, containerd cgroupfs (slice:prefix:id leaf)",
            text: "0::/system.slice/containerd.service/kubepods-burstable-pod2299b863_527e_46a0_b1a3_a8fe6591f3bb.slice:cri-containerd:0e0065d1e04ebb6670e8bda93cfaa990e297977ab90a881cf60699c157f306b5\n",
            id: Some("0e0065d1e04ebb6670e8bda93cfaa990e297977ab90a881cf60699c157f306b5"),
            pod: Some("2299b863-527e-46a0-b1a3-a8fe6591f3bb"),
            runtime: Some(Runtime::Containerd),
            unit: None,
        },
        Case {
            name: "CRI-O, cgroup v2",
            text: "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podf7be8995_c0bf_4c68_a077_5eafc9b43c8f.slice/crio-3be863a8e166244c7df6466ee1e31a134b4bf60d6c85b5ad27792a77160fdb8c.scope\n",
            id: Some("3be863a8e166244c7df6466ee1e31a134b4bf60d6c85b5ad27792a77160fdb8c"),
            pod: Some("f7be8995-c0bf-4c68-a077-5eafc9b43c8f"),
            runtime: Some(Runtime::CriO),
            unit: None,
        },
        Case {
            name: "CRI-O, cgroup v2, crun's container sub-cgroup",
            text: "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podf7be8995_c0bf_4c68_a077_5eafc9b43c8f.slice/crio-dd1091166cb32cca867f1f7dd7383ea673fe74fdb024d5c5977d485b27f97d79.scope/container\n",
            id: Some("dd1091166cb32cca867f1f7dd7383ea673fe74fdb024d5c5977d485b27f97d79"),
            pod: Some("f7be8995-c0bf-4c68-a077-5eafc9b43c8f"),
            runtime: Some(Runtime::CriO),
            unit: None,
        },
        Case {
            name: "CRI-O conmon: the pod, but not a container",
            text: "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podf7be8995_c0bf_4c68_a077_5eafc9b43c8f.slice/crio-conmon-3be863a8e166244c7df6466ee1e31a134b4bf60d6c85b5ad27792a77160fdb8c.scope\n",
            id: None,
            pod: Some("f7be8995-c0bf-4c68-a077-5eafc9b43c8f"),
            runtime: None,
            unit: None,
        },
        Case {
            name: "CRI-O, cgroup v1, cgroupfs driver",
            text: "\
10:memory:/kubepods/besteffort/pod892875e5-5177-426a-b0bb-9d76048eb5b5/crio-53a7974b5ca6076ab370cd6839b1ab290e579e33e5ae8c3187cb521874322276
1:name=systemd:/kubepods/besteffort/pod892875e5-5177-426a-b0bb-9d76048eb5b5/crio-53a7974b5ca6076ab370cd6839b1ab290e579e33e5ae8c3187cb521874322276
",
            id: Some("53a7974b5ca6076ab370cd6839b1ab290e579e33e5ae8c3187cb521874322276"),
            pod: Some("892875e5-5177-426a-b0bb-9d76048eb5b5"),
            runtime: Some(Runtime::CriO),
            unit: None,
        },
        Case {
            name: "podman rootful, cgroup v2",
            text: "0::/machine.slice/libpod-505c03bf02b9e7ce9c3e39b346e3f49be16f62891b3ba98aeedde0e4d20793b4.scope/container\n",
            id: Some("505c03bf02b9e7ce9c3e39b346e3f49be16f62891b3ba98aeedde0e4d20793b4"),
            pod: None,
            runtime: Some(Runtime::Podman),
            unit: None,
        },
        Case {
            name: "podman rootful, cgroup v1, cgroupfs manager",
            text: "7:memory:/libpod_parent/libpod-7165ba5ca6f58618fd73eca699a5dc81446f41dc711ac5d0731b1bf805cbaf63\n1:name=systemd:/libpod_parent/libpod-7165ba5ca6f58618fd73eca699a5dc81446f41dc711ac5d0731b1bf805cbaf63\n",
            id: Some("7165ba5ca6f58618fd73eca699a5dc81446f41dc711ac5d0731b1bf805cbaf63"),
            pod: None,
            runtime: Some(Runtime::Podman),
            unit: None,
        },
        Case {
            // Named by the user in their own delegated subtree: not believed.
            name: "podman rootless, cgroup v2",
            text: "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-0eb77701f5b8e7b7d9eb434bdd7777e1999217cb9c5cfeaa5fca746f813033ee.scope/container\n",
            id: None,
            pod: None,
            runtime: None,
            unit: Some("user@1000.service"),
        },
        Case {
            name: "podman conmon",
            text: "0::/machine.slice/libpod-conmon-505c03bf02b9e7ce9c3e39b346e3f49be16f62891b3ba98aeedde0e4d20793b4.scope\n",
            id: None,
            pod: None,
            runtime: None,
            unit: None,
        },
        Case {
            name: "kind, cgroup v1: the pod's container inside the node container",
            text: "\
12:pids:/docker/c72b44f312b344d22b2be689192bc97c7a1c7b7e0dec34aa172140e89d47980b/kubepods/besteffort/pod1eea9d90-af39-488d-9c44-3171eadc1718/b47410b5e22be681951805c7e1e3c2128dae9267ea078605475cb23bab0a1464
1:name=systemd:/docker/c72b44f312b344d22b2be689192bc97c7a1c7b7e0dec34aa172140e89d47980b/kubepods/besteffort/pod1eea9d90-af39-488d-9c44-3171eadc1718/b47410b5e22be681951805c7e1e3c2128dae9267ea078605475cb23bab0a1464
0::/
",
            id: Some("b47410b5e22be681951805c7e1e3c2128dae9267ea078605475cb23bab0a1464"),
            pod: Some("1eea9d90-af39-488d-9c44-3171eadc1718"),
            runtime: None,
            unit: None,
        },
        Case {
            name: "kind, cgroup v2, host cgroup namespace",
            text: "0::/system.slice/docker-c72b44f312b344d22b2be689192bc97c7a1c7b7e0dec34aa172140e89d47980b.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod1eea9d90_af39_488d_9c44_3171eadc1718.slice/cri-containerd-a9368847e25405f4987469069d914b9b8d0b5df15c332e69987a8eae3d8178cd.scope\n",
            id: Some("a9368847e25405f4987469069d914b9b8d0b5df15c332e69987a8eae3d8178cd"),
            pod: Some("1eea9d90-af39-488d-9c44-3171eadc1718"),
            runtime: Some(Runtime::Containerd),
            unit: None,
        },
        Case {
            name: "kind node's own processes: the node container, not a pod",
            text: "0::/docker/c72b44f312b344d22b2be689192bc97c7a1c7b7e0dec34aa172140e89d47980b/kubepods/besteffort/pod1eea9d90-af39-488d-9c44-3171eadc1718\n",
            id: Some("c72b44f312b344d22b2be689192bc97c7a1c7b7e0dec34aa172140e89d47980b"),
            pod: None,
            runtime: Some(Runtime::Docker),
            unit: None,
        },
        Case {
            name: "namespace-relative: CRI-O sibling",
            text: "0::/../crio-2f421ac4640cd021faf68b700e3007022e4f999dcecd5c7ed0b1d88cfd9a83cc.scope\n",
            id: Some("2f421ac4640cd021faf68b700e3007022e4f999dcecd5c7ed0b1d88cfd9a83cc"),
            pod: None,
            runtime: Some(Runtime::CriO),
            unit: None,
        },
        Case {
            name: "namespace-relative: bare id",
            text: "0::/../../395928619ee04aebc5e33bfeafdf36d8bebf73b2f48216d46e34b091100a4a85\n",
            id: Some("395928619ee04aebc5e33bfeafdf36d8bebf73b2f48216d46e34b091100a4a85"),
            pod: None,
            runtime: None,
            unit: None,
        },
        Case {
            name: "namespace-relative: another pod's container",
            text: "0::/../../kubepods-besteffort-pod2299b863_527e_46a0_b1a3_a8fe6591f3bb.slice/cri-containerd-2c3dd5fecdd800ed55c3eca87d9d17301d02c7adc6137e036bdcabb2cf66585f.scope\n",
            id: Some("2c3dd5fecdd800ed55c3eca87d9d17301d02c7adc6137e036bdcabb2cf66585f"),
            pod: Some("2299b863-527e-46a0-b1a3-a8fe6591f3bb"),
            runtime: Some(Runtime::Containerd),
            unit: None,
        },
        Case {
            name: "containerd without CRI (ctr), namespace default",
            text: "0::/default/d189a8fbe0a47e25455842b4dc43b510c7fc2dc9a84cad222bdc3000dcdc6215\n",
            id: Some("d189a8fbe0a47e25455842b4dc43b510c7fc2dc9a84cad222bdc3000dcdc6215"),
            pod: None,
            runtime: Some(Runtime::Containerd),
            unit: None,
        },
        Case {
            name: "containerd without CRI, cgroup v1, namespace k8s.io",
            text: "5:pids:/k8s.io/ae3d42e156d8ce88e01376a5dd066d3c3a8ddfa3aebc32d6f11ddd2e783eaa74\n1:name=systemd:/k8s.io/ae3d42e156d8ce88e01376a5dd066d3c3a8ddfa3aebc32d6f11ddd2e783eaa74\n",
            id: Some("ae3d42e156d8ce88e01376a5dd066d3c3a8ddfa3aebc32d6f11ddd2e783eaa74"),
            pod: None,
            runtime: Some(Runtime::Containerd),
            unit: None,
        },
        Case {
            name: "host: login session",
            text: "0::/user.slice/user-0.slice/session-3.scope\n",
            id: None,
            pod: None,
            runtime: None,
            unit: None,
        },
        Case {
            name: "host: systemd itself",
            text: "0::/init.scope\n",
            id: None,
            pod: None,
            runtime: None,
            unit: None,
        },
        Case {
            name: "host: a system service, cgroup v2",
            text: "0::/system.slice/nginx.service\n",
            id: None,
            pod: None,
            runtime: None,
            unit: Some("nginx.service"),
        },
        Case {
            name: "host: a templated service in a sub-slice",
            text: "0::/system.slice/system-getty.slice/getty@tty1.service\n",
            id: None,
            pod: None,
            runtime: None,
            unit: Some("getty@tty1.service"),
        },
        Case {
            name: "host: a system service, cgroup v1 (name=systemd wins)",
            text: "\
11:devices:/system.slice/sshd.service
10:memory:/system.slice/sshd.service
9:cpuset:/
8:pids:/system.slice/sshd.service
7:cpu,cpuacct:/system.slice/sshd.service
6:blkio:/system.slice/sshd.service
5:freezer:/
4:net_cls,net_prio:/
3:hugetlb:/
2:perf_event:/
1:name=systemd:/system.slice/sshd.service
0::/
",
            id: None,
            pod: None,
            runtime: None,
            unit: Some("sshd.service"),
        },
        Case {
            name: "host: a service's delegated sub-cgroup",
            text: "0::/system.slice/containerd.service/kubepods-besteffort.slice\n",
            id: None,
            pod: None,
            runtime: None,
            unit: Some("containerd.service"),
        },
        Case {
            name: "host: the user manager itself",
            text: "0::/user.slice/user-1000.slice/user@1000.service/init.scope\n",
            id: None,
            pod: None,
            runtime: None,
            unit: Some("user@1000.service"),
        },
        Case {
            name: "host: a user unit is the user manager's, not a system nginx.service",
            text: "0::/user.slice/user-1000.slice/user@1000.service/app.slice/nginx.service\n",
            id: None,
            pod: None,
            runtime: None,
            unit: Some("user@1000.service"),
        },
        Case {
            name: "host: a service seen from another cgroup namespace",
            text: "0::/../../system.slice/chronyd.service\n",
            id: None,
            pod: None,
            runtime: None,
            unit: Some("chronyd.service"),
        },
        Case {
            name: "a systemd service inside a container is the container",
            text: "0::/system.slice/docker-b3c705634f9c3c4774d1f08c6d0c12fd45bc01bef5795069998d6a17a83b8123.scope/system.slice/nginx.service\n",
            id: Some("b3c705634f9c3c4774d1f08c6d0c12fd45bc01bef5795069998d6a17a83b8123"),
            pod: None,
            runtime: Some(Runtime::Docker),
            unit: None,
        },
        Case {
            name: "a zombie whose cgroup was removed",
            text: "0::/system.slice/docker-b90e571cd69bc5b90d52c39e122d8fd9405866bccaef33c76763b0c1095407c0.scope (deleted)\n",
            id: Some("b90e571cd69bc5b90d52c39e122d8fd9405866bccaef33c76763b0c1095407c0"),
            pod: None,
            runtime: Some(Runtime::Docker),
            unit: None,
        },
        Case {
            name: "look-alikes are not ids: short, uppercase, 65 chars",
            text: "\
4:memory:/process_api/3435bb37162b39ffd0f40f22998bdb3e
3:pids:/docker/00C17D83D9E2CCE991FE7AB71719554CD3CC103A08675F5BF170342650BCDF60
2:cpu:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf600
1:name=systemd:/user.slice/podnot-a-uid
0::/
",
            id: None,
            pod: None,
            runtime: None,
            unit: None,
        },
    ];

    #[test]
    fn table() {
        for case in CASES {
            let info = parse_cgroup(case.text).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let got = (
                info.container_id.as_deref(),
                info.pod_uid.as_deref(),
                info.runtime,
                info.systemd_unit.as_deref(),
            );
            assert_eq!(
                got,
                (case.id, case.pod, case.runtime, case.unit),
                "{}",
                case.name
            );
            // Every id comes with where it was found.
            assert_eq!(
                info.claims.is_empty(),
                info.container_id.is_none() && info.pod_uid.is_none(),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn distinct_ids_per_case() {
        // Each case expects its own id, so a case cannot pass because the parser
        // kept something over from another.
        let mut seen = std::collections::HashSet::new();
        for case in CASES {
            if let Some(id) = case.id {
                assert!(is_container_id(id), "{}", case.name);
                assert!(seen.insert(id), "{} reuses {id}", case.name);
            }
        }
    }

    #[test]
    fn conflicts() {
        let two_containers = "\
5:pids:/docker/00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60
4:memory:/docker/fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be
";
        assert!(matches!(
            parse_cgroup(two_containers),
            Err(CgroupError::Conflict {
                what: "container",
                ..
            })
        ));
        let v1_vs_v2 = "\
1:name=systemd:/system.slice/docker-00c17d83d9e2cce991fe7ab71719554cd3cc103a08675f5bf170342650bcdf60.scope
0::/system.slice/docker-fc1248f679f2be66d7bb9f1ea81272e01caa54a0a42339cd045986ebc0aea8be.scope
";
        assert!(matches!(
            parse_cgroup(v1_vs_v2),
            Err(CgroupError::Conflict {
                what: "container",
                ..
            })
        ));
        let two_pods = "\
2:pids:/kubepods/podcf3f6293-0883-4080-a53f-3ae526af0d93/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
1:name=systemd:/kubepods/pod8c591483-617b-4195-963d-b3169d767f57/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
";
        assert!(matches!(
            parse_cgroup(two_pods),
            Err(CgroupError::Conflict { what: "pod", .. })
        ));
        let two_runtimes = "\
2:pids:/docker/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
1:name=systemd:/default/d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba
";
        assert!(matches!(
            parse_cgroup(two_runtimes),
            Err(CgroupError::Conflict {
                what: "runtime",
                ..
            })
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in [
            "hello",
            "12:pids",
            "x:pids:/",
            "0::relative/path",
            "-1::/",
            "0::/ok\nnonsense\n",
            "\u{0}\u{1}\u{2}",
            "0::/a\u{7}b",
            "::::",
            "🦀:🦀:/🦀",
        ] {
            assert!(
                matches!(parse_cgroup(text), Err(CgroupError::Malformed { .. })),
                "{text:?}"
            );
        }
        assert_eq!(parse_cgroup(""), Err(CgroupError::Empty));
        assert_eq!(parse_cgroup("\n\n"), Err(CgroupError::Empty));
        let err = parse_cgroup("0::/ok\nnonsense\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn odd_but_valid_paths_do_not_panic() {
        for text in [
            "0::/",
            "0::/..",
            "0::/../../..",
            "0::/a:b:c",
            "0::/kubepods-pod.slice",
            "0::/x.slice:docker:zz",
            "0::/docker-.scope",
            "0::/pod",
            "0::/.service",
            "0:://///",
        ] {
            let info = parse_cgroup(text).unwrap();
            assert_eq!(info.container_id, None, "{text}");
        }
    }

    #[test]
    fn this_process() {
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        parse_cgroup(&text).unwrap();
    }

    #[test]
    fn runtime_names() {
        assert_eq!(Runtime::Docker.as_str(), "docker");
        assert_eq!(Runtime::Containerd.as_str(), "containerd");
        assert_eq!(Runtime::CriO.as_str(), "cri-o");
        assert_eq!(Runtime::Podman.to_string(), "podman");
    }

    /// The review's attack: a user makes a pod's and a container's cgroup names
    /// inside `user@1001.service` and moves into it.
    #[test]
    fn names_in_a_users_delegated_subtree_are_dropped() {
        let id = "c72b44f312b344d22b2be689192bc97c7a1c7b7e0dec34aa172140e89d47980b";
        for path in [
            format!("/user.slice/user-1001.slice/user@1001.service/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8b9dd266_60dd_4433_8e5e_3bdcc7697bee.slice/cri-containerd-{id}.scope"),
            format!("/user.slice/user-1001.slice/user@1001.service/app.slice/docker-{id}.scope"),
            format!("/user.slice/user-1001.slice/user@1001.service/docker/{id}"),
            "/user.slice/user-1001.slice/user@1001.service/kubepods/pod8b9dd266-60dd-4433-8e5e-3bdcc7697bee".to_owned(),
            // The agent in its own cgroup namespace sees the same names after `..`.
            format!("/../../user@1001.service/x/docker-{id}.scope"),
        ] {
            for text in [format!("0::{path}\n"), format!("3:memory:/\n1:name=systemd:{path}\n0::/\n")] {
                let info = parse_cgroup(&text).unwrap();
                assert_eq!(info.container_id, None, "{text}");
                assert_eq!(info.pod_uid, None, "{text}");
                assert_eq!(info.runtime, None, "{text}");
                assert!(info.claims.is_empty(), "{text}");
                assert!(matches!(info.distrust, Some(Distrust::Delegated { .. })), "{text}");
            }
        }
        // A container runtime's own subtree, or a service named like a user's,
        // is not a user's delegation.
        for text in [
            format!("0::/system.slice/docker-{id}.scope\n"),
            format!("0::/system.slice/user@.service/docker-{id}.scope\n"),
            format!("0::/system.slice/xuser@1001.service/docker-{id}.scope\n"),
        ] {
            let info = parse_cgroup(&text).unwrap();
            assert_eq!(info.container_id.as_deref(), Some(id), "{text}");
            assert_eq!(info.distrust, None, "{text}");
        }
        // A user@ segment *below* the container (a systemd inside the container)
        // is the container's own business.
        let info = parse_cgroup(&format!(
            "0::/system.slice/docker-{id}.scope/user.slice/user@1000.service/app.slice\n"
        ))
        .unwrap();
        assert_eq!(info.container_id.as_deref(), Some(id));
    }

    #[test]
    fn claims_name_the_directory_of_the_innermost_id() {
        let id = "c72b44f312b344d22b2be689192bc97c7a1c7b7e0dec34aa172140e89d47980b";
        let info = parse_cgroup(&format!(
            "4:memory:/kubepods/besteffort/pod1eea9d90-af39-488d-9c44-3171eadc1718/{id}/sub\n1:name=systemd:/kubepods/besteffort/pod1eea9d90-af39-488d-9c44-3171eadc1718\n0::/../x/docker-{id}.scope (deleted)\n"
        ))
        .unwrap();
        let dirs: Vec<(u32, &str, &str)> = info
            .claims
            .iter()
            .map(|c| (c.hierarchy, c.controllers.as_str(), c.dir.as_str()))
            .collect();
        assert_eq!(
            dirs,
            [
                (
                    4,
                    "memory",
                    format!("/kubepods/besteffort/pod1eea9d90-af39-488d-9c44-3171eadc1718/{id}")
                        .as_str()
                ),
                (
                    1,
                    "name=systemd",
                    "/kubepods/besteffort/pod1eea9d90-af39-488d-9c44-3171eadc1718"
                ),
                (0, "", format!("/../x/docker-{id}.scope").as_str()),
            ]
        );
        assert_eq!(cut_after("//a//b/c", 1), "//a//b");
        assert_eq!(cut_after("/a", 0), "/a");
    }
}
