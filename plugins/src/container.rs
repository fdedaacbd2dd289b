//! The `container` workload attestor: which container (and Kubernetes pod) a
//! process is in, from its cgroups.
//!
//! Selectors: `container:id:<64-hex>`, `container:pod-uid:<uid>` and
//! `container:runtime:<docker|containerd|cri-o|podman>`. A process in no container
//! gets none, which can only narrow what it matches. Nothing here asks a runtime's
//! API: the id comes from the kernel's record of the process's cgroups, so it holds
//! even when the runtime is down or lies. Checking the id against the runtime
//! (labels, image) is for attestors built on [`ContainerAttestor::info`].

use std::path::{Path, PathBuf};

use crate::cgroup::{self, CgroupInfo};
use crate::{AttestError, ProcessRef, Selector, WorkloadAttestor};

/// The `container` attestor.
#[derive(Debug, Clone)]
pub struct ContainerAttestor {
    proc_root: PathBuf,
}

impl Default for ContainerAttestor {
    fn default() -> Self {
        Self::new()
    }
}

impl ContainerAttestor {
    /// An attestor reading the host's `/proc`.
    pub fn new() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
        }
    }

    /// Reads `/proc` under another root (tests, or an agent whose host `/proc` is
    /// mounted elsewhere).
    pub fn with_proc_root(mut self, proc_root: impl Into<PathBuf>) -> Self {
        self.proc_root = proc_root.into();
        self
    }

    /// What the cgroups of process `pid` say: container id, pod uid, runtime and
    /// systemd unit.
    ///
    /// `/proc/PID/mountinfo` is consulted only when `/proc/PID/cgroup` names no
    /// container *and* puts the process at the root of every hierarchy (so it says
    /// nothing about where the process is, as when the agent shares the workload's
    /// cgroup namespace). A process the cgroup file places anywhere — a host
    /// process in `user.slice`, say — is not given a container id from its mount
    /// table, which it may have rearranged itself (see
    /// [`cgroup::container_from_mountinfo`]).
    pub fn info(&self, pid: i32) -> Result<CgroupInfo, AttestError> {
        let (path, text) = read_proc(&self.proc_root, pid, "cgroup")?;
        let mut info = cgroup::parse_cgroup(&text)
            .map_err(|e| AttestError::Parse(format!("{}: {e}", path.display())))?;
        if info.container_id.is_none() && cgroup::at_namespace_root(&text) {
            let (_, mounts) = read_proc(&self.proc_root, pid, "mountinfo")?;
            if let Some((id, runtime)) = cgroup::container_from_mountinfo(&mounts) {
                info.container_id = Some(id);
                info.runtime = runtime;
                // A service name from the cgroup file described a host process.
                info.systemd_unit = None;
            }
        }
        Ok(info)
    }
}

impl WorkloadAttestor for ContainerAttestor {
    fn name(&self) -> &'static str {
        "container"
    }

    /// `/proc/PID/cgroup` (and at most `/proc/PID/mountinfo`) only.
    fn is_quick(&self, _: &crate::Wanted) -> bool {
        true
    }

    fn attest(&self, p: &ProcessRef) -> Result<Vec<Selector>, AttestError> {
        let info = self.info(p.pid)?;
        // Without a container, a pod uid alone (a CRI-O conmon in the pod's slice)
        // is runtime machinery, not one of the pod's workloads: no selectors.
        let Some(id) = &info.container_id else {
            return Ok(Vec::new());
        };
        let mut out = vec![selector("container", "id", id)?];
        if let Some(uid) = &info.pod_uid {
            out.push(selector("container", "pod-uid", uid)?);
        }
        if let Some(runtime) = info.runtime {
            out.push(selector("container", "runtime", runtime.as_str())?);
        }
        out.sort();
        Ok(out)
    }
}

/// `ty:key:value`, through [`Selector::parse`] so that nothing read from `/proc`
/// becomes a selector unchecked.
pub(crate) fn selector(ty: &str, key: &str, value: &str) -> Result<Selector, AttestError> {
    let text = format!("{ty}:{key}:{value}");
    Selector::parse(&text).map_err(|e| AttestError::Parse(format!("{ty} selector: {e}")))
}

/// Reads `/proc/PID/<rel>` under `proc_root`, returning the path for messages. A
/// missing file or `ESRCH` means the process exited.
pub(crate) fn read_proc(
    proc_root: &Path,
    pid: i32,
    rel: &str,
) -> Result<(PathBuf, String), AttestError> {
    let path = proc_root.join(pid.to_string()).join(rel);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((path, text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(3) => {
            Err(AttestError::ProcessGone(pid))
        }
        Err(e) => Err(AttestError::Io {
            what: path.display().to_string(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "c72b44f312b344d22b2be689192bc97c7a1c7b7e0dec34aa172140e89d47980b";
    const FORGED: &str = "c5c847ef408b575db48d31e94e1d3eb9b88719ffca09391c8fa8166bf399df00";

    /// A fake `/proc` with one process, 4242.
    fn fake_proc(cgroup: &str, mountinfo: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("4242");
        std::fs::create_dir(&pid).unwrap();
        std::fs::write(pid.join("cgroup"), cgroup).unwrap();
        if let Some(m) = mountinfo {
            std::fs::write(pid.join("mountinfo"), m).unwrap();
        }
        dir
    }

    fn attest(dir: &tempfile::TempDir) -> Result<Vec<String>, AttestError> {
        let a = ContainerAttestor::new().with_proc_root(dir.path());
        assert_eq!(a.name(), "container");
        let p = ProcessRef {
            pid: 4242,
            uid: 0,
            gid: 0,
        };
        Ok(a.attest(&p)?.iter().map(ToString::to_string).collect())
    }

    /// A docker v1 container's cgroup mounts, as its own mountinfo shows them with
    /// the host's cgroup namespace.
    fn docker_mountinfo(id: &str) -> String {
        format!(
            "1261 1256 0:53 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/ABC:/var/lib/docker/overlay2/l/DEF\n\
             1266 1263 0:28 /docker/{id} /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:15 - cgroup cgroup rw,memory\n\
             1267 1263 0:29 /docker/{id} /sys/fs/cgroup/pids ro,nosuid,nodev,noexec,relatime master:16 - cgroup cgroup rw,pids\n\
             1268 1263 0:30 /docker/{id} /sys/fs/cgroup/systemd ro,nosuid,nodev,noexec,relatime master:9 - cgroup cgroup rw,xattr,name=systemd\n\
             1290 1261 253:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw\n"
        )
    }

    #[test]
    fn kubernetes_container() {
        let dir = fake_proc(
            &format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8b9dd266_60dd_4433_8e5e_3bdcc7697bee.slice/cri-containerd-{ID}.scope\n"
            ),
            None,
        );
        assert_eq!(
            attest(&dir).unwrap(),
            [
                format!("container:id:{ID}"),
                "container:pod-uid:8b9dd266-60dd-4433-8e5e-3bdcc7697bee".to_owned(),
                "container:runtime:containerd".to_owned(),
            ]
        );
    }

    #[test]
    fn host_process_has_no_selectors_even_with_a_forged_mountinfo() {
        // A local user can bind-mount a container's cgroup over /sys/fs/cgroup in
        // their own user+mount namespace; the cgroup file still says user.slice.
        let dir = fake_proc(
            "0::/user.slice/user-1000.slice/session-3.scope\n",
            Some(&docker_mountinfo(FORGED)),
        );
        assert_eq!(attest(&dir).unwrap(), Vec::<String>::new());
        let dir = fake_proc("0::/system.slice/nginx.service\n", None);
        assert_eq!(attest(&dir).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn forged_mountinfo_does_not_override_the_cgroup_id() {
        let dir = fake_proc(
            &format!("0::/system.slice/docker-{ID}.scope\n"),
            Some(&docker_mountinfo(FORGED)),
        );
        assert_eq!(
            attest(&dir).unwrap(),
            [
                format!("container:id:{ID}"),
                "container:runtime:docker".to_owned()
            ]
        );
    }

    #[test]
    fn mountinfo_fallback_when_cgroup_says_nothing() {
        let cgroup = "12:memory:/\n11:pids:/\n1:name=systemd:/\n0::/\n";
        let dir = fake_proc(cgroup, Some(&docker_mountinfo(ID)));
        assert_eq!(
            attest(&dir).unwrap(),
            [
                format!("container:id:{ID}"),
                "container:runtime:docker".to_owned()
            ]
        );
        // No container in the mounts either: a host process.
        let host = "25 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
                    31 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let dir = fake_proc(cgroup, Some(host));
        assert_eq!(attest(&dir).unwrap(), Vec::<String>::new());
        // Two containers in the mounts: no guess.
        let two = format!("{}{}", docker_mountinfo(ID), docker_mountinfo(FORGED));
        let dir = fake_proc(cgroup, Some(&two));
        assert_eq!(attest(&dir).unwrap(), Vec::<String>::new());
        // The fallback's mountinfo is required reading: if it is gone, so is the process.
        let dir = fake_proc(cgroup, None);
        assert!(matches!(attest(&dir), Err(AttestError::ProcessGone(4242))));
    }

    #[test]
    fn conflict_fails_closed() {
        let dir = fake_proc(
            &format!("4:pids:/docker/{ID}\n3:memory:/docker/{FORGED}\n"),
            None,
        );
        let err = attest(&dir).unwrap_err();
        assert!(matches!(err, AttestError::Parse(_)), "{err}");
        assert!(err.to_string().contains(FORGED), "{err}");
    }

    #[test]
    fn garbage_is_a_parse_error() {
        let dir = fake_proc("not a cgroup file\n", None);
        assert!(matches!(attest(&dir), Err(AttestError::Parse(_))));
        let dir = fake_proc("", None);
        assert!(matches!(attest(&dir), Err(AttestError::Parse(_))));
    }

    #[test]
    fn gone_process() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(attest(&dir), Err(AttestError::ProcessGone(4242))));
    }

    #[test]
    fn info_exposes_ids() {
        let dir = fake_proc(
            &format!("0::/kubepods/besteffort/pod1eea9d90-af39-488d-9c44-3171eadc1718/{ID}\n"),
            None,
        );
        let info = ContainerAttestor::new()
            .with_proc_root(dir.path())
            .info(4242)
            .unwrap();
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(
            info.pod_uid.as_deref(),
            Some("1eea9d90-af39-488d-9c44-3171eadc1718")
        );
        assert_eq!(info.runtime, None);
    }

    #[test]
    fn this_process() {
        let pid = std::process::id() as i32;
        ContainerAttestor::default().info(pid).unwrap();
        let p = ProcessRef {
            pid,
            uid: 0,
            gid: 0,
        };
        ContainerAttestor::default().attest(&p).unwrap();
    }

    #[test]
    fn selectors_are_checked() {
        assert!(selector("container", "id", ID).is_ok());
        assert!(matches!(
            selector("container", "id", "a\nb"),
            Err(AttestError::Parse(_))
        ));
    }
}
