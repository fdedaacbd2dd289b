//! Reading one cgroup path: which segments name a container, a pod or runtime
//! machinery. Kept apart from the line parser, which only merges what each path says.

use super::Runtime;

/// What one cgroup path says.
#[derive(Debug, Default)]
pub(super) struct Found {
    pub(super) id: Option<String>,
    pub(super) runtime: Option<Runtime>,
    pub(super) pod_uid: Option<String>,
    /// Index of the innermost segment that named the id or pod kept above.
    pub(super) claim_end: Option<usize>,
    /// Whether a `user@*.service` segment comes at or before `claim_end`.
    pub(super) delegated: bool,
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

pub(super) fn analyze_path(path: &str) -> Found {
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
pub(super) fn cut_after(path: &str, end: usize) -> &str {
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
pub(super) fn service_of(path: &str) -> Option<String> {
    path.split('/')
        // `..`: the path is relative to the reader's cgroup namespace.
        .filter(|s| !s.is_empty() && *s != "..")
        .find(|s| !s.ends_with(".slice"))
        .filter(|s| s.len() > ".service".len() && s.ends_with(".service"))
        .map(str::to_owned)
}

/// 64 lowercase hex characters: how docker, containerd, CRI-O and podman name
/// containers.
pub(super) fn is_container_id(s: &str) -> bool {
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
