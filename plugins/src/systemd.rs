//! The `systemd` workload attestor: `systemd:unit:<name.service>`, the system
//! service a process belongs to, read from its cgroup path.
//!
//! No D-Bus: systemd places every service's processes in a cgroup named after the
//! unit, and the kernel's `/proc/PID/cgroup` says which one a process is in. A
//! process cannot leave its service's cgroup subtree without write access to
//! cgroups outside it, which only root has. What counts as the unit, and why units
//! nested in delegated subtrees (user managers, containers) do not, is in
//! [`crate::cgroup::parse_cgroup`].

use std::path::PathBuf;

use crate::cgroup;
use crate::container::{read_proc, selector};
use crate::{AttestError, ProcessRef, Selector, WorkloadAttestor};

/// The `systemd` attestor.
#[derive(Debug, Clone)]
pub struct SystemdAttestor {
    proc_root: PathBuf,
}

impl Default for SystemdAttestor {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemdAttestor {
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
}

impl WorkloadAttestor for SystemdAttestor {
    fn name(&self) -> &'static str {
        "systemd"
    }

    /// `/proc/PID/cgroup` (and at most `/proc/PID/mountinfo`) only.
    fn is_quick(&self, _: &crate::Wanted) -> bool {
        true
    }

    fn attest(&self, p: &ProcessRef) -> Result<Vec<Selector>, AttestError> {
        let (path, text) = read_proc(&self.proc_root, p.pid, "cgroup")?;
        let info = cgroup::parse_cgroup(&text)
            .map_err(|e| AttestError::Parse(format!("{}: {e}", path.display())))?;
        info.systemd_unit
            .map(|unit| selector("systemd", "unit", &unit))
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attest(cgroup: Option<&str>) -> Result<Vec<String>, AttestError> {
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = cgroup {
            let pid = dir.path().join("77");
            std::fs::create_dir(&pid).unwrap();
            std::fs::write(pid.join("cgroup"), text).unwrap();
        }
        let a = SystemdAttestor::new().with_proc_root(dir.path());
        assert_eq!(a.name(), "systemd");
        let p = ProcessRef {
            pid: 77,
            uid: 33,
            gid: 33,
            groups: None,
        };
        Ok(a.attest(&p)?.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn service() {
        assert_eq!(
            attest(Some("0::/system.slice/nginx.service\n")).unwrap(),
            ["systemd:unit:nginx.service"]
        );
        assert_eq!(
            attest(Some(
                "0::/system.slice/system-getty.slice/getty@tty1.service\n"
            ))
            .unwrap(),
            ["systemd:unit:getty@tty1.service"]
        );
    }

    #[test]
    fn no_service_no_selectors() {
        for text in [
            "0::/user.slice/user-0.slice/session-3.scope\n",
            "0::/init.scope\n",
            "0::/\n",
            // A container under a service is not the service.
            "0::/system.slice/containerd.service/kubepods-besteffort-pod2299b863_527e_46a0_b1a3_a8fe6591f3bb.slice:cri-containerd:395928619ee04aebc5e33bfeafdf36d8bebf73b2f48216d46e34b091100a4a85\n",
        ] {
            assert_eq!(attest(Some(text)).unwrap(), Vec::<String>::new(), "{text}");
        }
    }

    #[test]
    fn errors() {
        assert!(matches!(attest(None), Err(AttestError::ProcessGone(77))));
        assert!(matches!(attest(Some("junk")), Err(AttestError::Parse(_))));
    }

    #[test]
    fn this_process() {
        let p = ProcessRef {
            pid: std::process::id() as i32,
            uid: 0,
            gid: 0,
            groups: None,
        };
        SystemdAttestor::default().attest(&p).unwrap();
    }
}
