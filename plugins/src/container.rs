//! The `container` workload attestor: which container (and Kubernetes pod) a
//! process is in, from its cgroups.
//!
//! Selectors: `container:id:<64-hex>`, `container:pod-uid:<uid>` and
//! `container:runtime:<docker|containerd|cri-o|podman>`. A process in no container
//! gets none, which can only narrow what it matches. Nothing here asks a runtime's
//! API: the id comes from the kernel's record of the process's cgroups, so it holds
//! even when the runtime is down or lies. Checking the id against the runtime
//! (labels, image) is for attestors built on [`ContainerAttestor::info`].
//!
//! A name in a cgroup path is only believed where an unprivileged user could not
//! have chosen it: not below a `user@*.service` (the parser drops those), and
//! only when every directory down to it is owned by root on the agent's own
//! cgroup mounts ([`CgroupFs`]). Otherwise the process gets no container
//! selectors at all, and entries that need them do not match.

use std::path::{Path, PathBuf};

use crate::cgroup::{self, CgroupInfo};
use crate::cgroupfs::CgroupFs;
use crate::{AttestError, ProcessRef, Selector, WorkloadAttestor};

/// The `container` attestor.
#[derive(Debug, Clone)]
pub struct ContainerAttestor {
    proc_root: PathBuf,
    cgroupfs: std::sync::Arc<CgroupFs>,
    trust_unverifiable: bool,
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
            cgroupfs: std::sync::Arc::new(CgroupFs::of_this_process()),
            trust_unverifiable: false,
        }
    }

    /// Believes ids in cgroups the agent cannot look at (paths outside its
    /// cgroup namespace, `/../…`) on their names alone, still never below a
    /// `user@*.service` (`[plugins.container] unverifiable_cgroups =
    /// "trust_names"`). For an agent that must run in a private cgroup
    /// namespace, such as a Kubernetes DaemonSet on cgroup v2. This is weaker:
    /// a user with a delegated cgroup subtree not named `user@*.service` (a
    /// `Delegate=yes` unit with `User=`), or root in a container with a writable
    /// cgroupfs, can name a cgroup after another pod. The kubelet confirms that
    /// such a pod and container exist on the node, not that the caller is in
    /// them.
    pub fn trusting_unverifiable(mut self, trust: bool) -> Self {
        self.trust_unverifiable = trust;
        self
    }

    /// Checks the owners of cgroups outside the agent's cgroup namespace on the
    /// host's cgroup v2 tree mounted at `root` (`[plugins.container]
    /// host_cgroup_root`, a read-only `hostPath` of `/sys/fs/cgroup` in a
    /// DaemonSet). Fails if the agent cannot find itself there.
    pub fn with_host_cgroup_root(
        mut self,
        root: &std::path::Path,
    ) -> Result<Self, crate::hostcgroup::HostViewError> {
        let view = crate::hostcgroup::HostView::locate(root)?;
        self.cgroupfs = std::sync::Arc::new((*self.cgroupfs).clone().with_host_view(view));
        Ok(self)
    }

    /// Checks cgroup ownership on `fs` instead of the agent's own mounts (tests).
    pub fn with_cgroupfs(mut self, fs: CgroupFs) -> Self {
        self.cgroupfs = std::sync::Arc::new(fs);
        self
    }

    /// Reads `/proc` under another root (tests, or an agent whose host `/proc` is
    /// mounted elsewhere).
    pub fn with_proc_root(mut self, proc_root: impl Into<PathBuf>) -> Self {
        self.proc_root = proc_root.into();
        self
    }

    /// What the cgroups of process `pid` say: container id, pod uid, runtime and
    /// systemd unit, with the ids dropped ([`CgroupInfo::distrust`]) unless every
    /// cgroup directory that named them is owned by root.
    ///
    /// `/proc/PID/mountinfo` is never consulted: the process may have rearranged
    /// its mount table in a namespace of its own (bind-mounting a container's
    /// cgroup directory over `/sys/fs/cgroup`), while `/proc/PID/cgroup` is the
    /// kernel's record of where the process is.
    pub fn info(&self, pid: i32) -> Result<CgroupInfo, AttestError> {
        let (path, text) = read_proc(&self.proc_root, pid, "cgroup")?;
        let mut info = cgroup::parse_cgroup(&text)
            .map_err(|e| AttestError::Parse(format!("{}: {e}", path.display())))?;
        if let Err(why) = self
            .cgroupfs
            .check_all(&info.claims, self.trust_unverifiable)
        {
            info.distrust(why);
        }
        if let Some(why) = &info.distrust {
            tracing::debug!(pid, %why, "container names in the cgroup path are not believed");
        }
        Ok(info)
    }
}

impl WorkloadAttestor for ContainerAttestor {
    fn name(&self) -> &'static str {
        "container"
    }

    /// `/proc/PID/cgroup` and a few `stat`s of cgroup directories only.
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
    match crate::reads::read_to_string(&path) {
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

    fn my_uid() -> u32 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/proc/self").unwrap().uid()
    }

    /// A fake `/proc` with one process, 4242, and a fake cgroup filesystem in
    /// `cg/` where every directory the cgroup file names exists, owned by this
    /// test's uid (which stands in for root).
    fn fake_proc(cgroup: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("4242");
        std::fs::create_dir(&pid).unwrap();
        std::fs::write(pid.join("cgroup"), cgroup).unwrap();
        std::fs::write(dir.path().join("cgroup.txt"), cgroup).unwrap();
        dir
    }

    fn cgroupfs(dir: &tempfile::TempDir, owner: u32) -> CgroupFs {
        let text = std::fs::read_to_string(dir.path().join("cgroup.txt")).unwrap_or_default();
        crate::cgroupfs::fake(&dir.path().join("cg"), &[&text])
            .unwrap()
            .with_owner(owner)
    }

    fn attest_as(dir: &tempfile::TempDir, owner: u32) -> Result<Vec<String>, AttestError> {
        let a = ContainerAttestor::new()
            .with_proc_root(dir.path())
            .with_cgroupfs(cgroupfs(dir, owner));
        assert_eq!(a.name(), "container");
        let p = ProcessRef {
            pid: 4242,
            uid: 0,
            gid: 0,
            groups: None,
        };
        Ok(a.attest(&p)?.iter().map(ToString::to_string).collect())
    }

    fn attest(dir: &tempfile::TempDir) -> Result<Vec<String>, AttestError> {
        attest_as(dir, my_uid())
    }

    #[test]
    fn kubernetes_container() {
        let dir = fake_proc(&format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8b9dd266_60dd_4433_8e5e_3bdcc7697bee.slice/cri-containerd-{ID}.scope\n"
        ));
        assert_eq!(
            attest(&dir).unwrap(),
            [
                format!("container:id:{ID}"),
                "container:pod-uid:8b9dd266-60dd-4433-8e5e-3bdcc7697bee".to_owned(),
                "container:runtime:containerd".to_owned(),
            ]
        );
    }

    /// The review's attack, on a fake filesystem: a pod's cgroup names made
    /// where the caller could make them.
    #[test]
    fn names_the_caller_could_have_chosen_give_nothing() {
        let pod = format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8b9dd266_60dd_4433_8e5e_3bdcc7697bee.slice/cri-containerd-{ID}.scope"
        );
        // Below a user's systemd manager.
        let dir = fake_proc(&format!(
            "0::/user.slice/user-1001.slice/user@1001.service/{pod}\n"
        ));
        assert_eq!(attest(&dir).unwrap(), Vec::<String>::new());
        // Owned by someone other than root.
        let dir = fake_proc(&format!("0::/{pod}\n"));
        assert_eq!(
            attest_as(&dir, my_uid().wrapping_add(1)).unwrap(),
            Vec::<String>::new()
        );
        // Not on the agent's cgroup mounts (outside its cgroup namespace)...
        let dir = fake_proc(&format!("0::/../../{pod}\n"));
        assert_eq!(attest(&dir).unwrap(), Vec::<String>::new());
        // ...unless the config trusts names there, and never below user@.
        let trusting = |dir: &tempfile::TempDir| {
            ContainerAttestor::new()
                .with_proc_root(dir.path())
                .with_cgroupfs(cgroupfs(dir, my_uid()))
                .trusting_unverifiable(true)
                .info(4242)
                .unwrap()
        };
        assert_eq!(trusting(&dir).container_id.as_deref(), Some(ID));
        let dir = fake_proc(&format!("0::/../../user@1001.service/{pod}\n"));
        assert_eq!(trusting(&dir).container_id, None);
        // The same path, on the agent's mounts and owned by "root": believed.
        let dir = fake_proc(&format!("0::/{pod}\n"));
        assert_eq!(attest(&dir).unwrap().len(), 3);
        let a = ContainerAttestor::new()
            .with_proc_root(dir.path())
            .with_cgroupfs(cgroupfs(&dir, my_uid().wrapping_add(1)));
        assert!(matches!(
            a.info(4242).unwrap().distrust,
            Some(cgroup::Distrust::NotRootOwned { .. })
        ));
    }

    #[test]
    fn a_host_process_has_no_container_selectors() {
        let dir = fake_proc("0::/user.slice/user-1000.slice/session-3.scope\n");
        assert_eq!(attest(&dir).unwrap(), Vec::<String>::new());
        let dir = fake_proc("0::/system.slice/nginx.service\n");
        assert_eq!(attest(&dir).unwrap(), Vec::<String>::new());
        // At the root of every hierarchy: no container, and no mount table is
        // consulted to find one.
        let dir = fake_proc("12:memory:/\n11:pids:/\n1:name=systemd:/\n0::/\n");
        assert_eq!(attest(&dir).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn conflict_fails_closed() {
        let dir = fake_proc(&format!("4:pids:/docker/{ID}\n3:memory:/docker/{FORGED}\n"));
        let err = attest(&dir).unwrap_err();
        assert!(matches!(err, AttestError::Parse(_)), "{err}");
        assert!(err.to_string().contains(FORGED), "{err}");
    }

    #[test]
    fn garbage_is_a_parse_error() {
        let dir = fake_proc("not a cgroup file\n");
        assert!(matches!(attest(&dir), Err(AttestError::Parse(_))));
        let dir = fake_proc("");
        assert!(matches!(attest(&dir), Err(AttestError::Parse(_))));
    }

    #[test]
    fn gone_process() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(attest(&dir), Err(AttestError::ProcessGone(4242))));
    }

    #[test]
    fn info_exposes_ids() {
        let dir = fake_proc(&format!(
            "0::/kubepods/besteffort/pod1eea9d90-af39-488d-9c44-3171eadc1718/{ID}\n"
        ));
        let info = ContainerAttestor::new()
            .with_proc_root(dir.path())
            .with_cgroupfs(cgroupfs(&dir, my_uid()))
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
            groups: None,
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
