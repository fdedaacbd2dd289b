//! Who owns a cgroup directory, looked up on the agent's own cgroup mounts.
//!
//! A cgroup's name proves nothing by itself: anyone with write access to a
//! cgroup directory can create a child under any name. On a host only root can
//! write outside the subtrees it delegates (systemd chowns a delegated subtree,
//! `user@UID.service` among them, to the user it is for). So a container id is
//! believed only when every directory from the hierarchy's root down to the
//! cgroup that names it is owned by root.
//!
//! The mounts come from the agent's own `/proc/self/mountinfo`, which the agent
//! controls, never from the workload's, which the workload may have rearranged
//! in a mount namespace of its own.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::cgroup::{CgroupClaim, Distrust};

/// The agent's cgroup mounts: the unified hierarchy and each v1 hierarchy.
#[derive(Debug, Clone, Default)]
pub struct CgroupFs {
    unified: Option<PathBuf>,
    /// v1 mounts with their super options (`rw,memory`, `rw,xattr,name=systemd`).
    v1: Vec<(Vec<String>, PathBuf)>,
    /// The uid every directory must belong to: root, except in tests.
    owner: u32,
    /// The host's cgroup v2 tree, for paths outside the agent's namespace.
    host: Option<crate::hostcgroup::HostView>,
}

impl CgroupFs {
    /// The agent's own cgroup mounts. With none readable, every container id is
    /// [`Distrust::Unverifiable`]: the attestor fails closed.
    pub fn of_this_process() -> Self {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|t| Self::from_mountinfo(&t))
            .unwrap_or_default()
    }

    /// The cgroup mounts in a `mountinfo` text. Only mounts of a hierarchy's
    /// root (root field `/`) are used: a mount of a subtree would shift every
    /// path. The first mount of each hierarchy wins.
    pub fn from_mountinfo(text: &str) -> Self {
        let mut fs = Self::default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let (Some(&root), Some(&point)) = (fields.get(3), fields.get(4)) else {
                continue;
            };
            let Some(dash) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            let (Some(&fstype), Some(&opts)) = (fields.get(dash + 1), fields.get(dash + 3)) else {
                continue;
            };
            if root != "/" {
                continue;
            }
            let point = PathBuf::from(unescape(point));
            match fstype {
                "cgroup2" if fs.unified.is_none() => fs.unified = Some(point),
                "cgroup" => fs
                    .v1
                    .push((opts.split(',').map(str::to_owned).collect(), point)),
                _ => {}
            }
        }
        fs
    }

    /// Resolves paths outside the agent's cgroup namespace (`/../…`, on the
    /// unified hierarchy) through the host's tree, so that their owners are
    /// checked too.
    pub fn with_host_view(mut self, host: crate::hostcgroup::HostView) -> Self {
        self.host = Some(host);
        self
    }

    /// Requires directories to belong to `uid` instead of root (tests that do
    /// not run as root).
    pub fn with_owner(mut self, uid: u32) -> Self {
        self.owner = uid;
        self
    }

    /// The mount point of the hierarchy `claim` is on.
    fn mount_of(&self, claim: &CgroupClaim) -> Option<&Path> {
        if claim.hierarchy == 0 && claim.controllers.is_empty() {
            return self.unified.as_deref();
        }
        let want: Vec<&str> = claim.controllers.split(',').collect();
        self.v1
            .iter()
            .find(|(opts, _)| want.iter().all(|w| opts.iter().any(|o| o == w)))
            .map(|(_, p)| p.as_path())
    }

    /// Checks that every directory from the hierarchy's root down to
    /// `claim.dir` exists on the agent's mounts and is owned by root. `Ok(false)`
    /// when the agent mounts no such hierarchy, so that the claim cannot be
    /// looked at (see [`CgroupFs::check_all`]).
    pub fn check(&self, claim: &CgroupClaim) -> Result<bool, Distrust> {
        let unverifiable = |reason: String| Distrust::Unverifiable {
            dir: claim.dir.clone(),
            reason,
        };
        let segments: Vec<&str> = claim.dir.split('/').filter(|s| !s.is_empty()).collect();
        if segments.contains(&"..") || segments.contains(&".") {
            let unified = claim.hierarchy == 0 && claim.controllers.is_empty();
            if !unified && self.host.is_some() {
                // The host view covers the unified tree only. A v1 line is then
                // like an unmounted hierarchy: skipped, so that the unified
                // line decides (and check_all still needs one checked claim).
                return Ok(false);
            }
            let resolved = self
                .host
                .as_ref()
                .filter(|_| unified)
                .and_then(|h| Some((h.root(), h.resolve(&claim.dir)?)));
            let Some((root, host_segments)) = resolved else {
                return Err(Distrust::OutsideNamespace {
                    dir: claim.dir.clone(),
                });
            };
            let host_segments: Vec<&str> = host_segments.iter().map(String::as_str).collect();
            return self
                .walk(root, &host_segments, &unverifiable)
                .map(|()| true);
        }
        let Some(mount) = self.mount_of(claim) else {
            return Ok(false);
        };
        self.walk(mount, &segments, &unverifiable).map(|()| true)
    }

    /// Every directory from `mount` down through `segments` must exist, be a
    /// directory (not a symlink) and belong to the owner.
    fn walk(
        &self,
        mount: &Path,
        segments: &[&str],
        unverifiable: &dyn Fn(String) -> Distrust,
    ) -> Result<(), Distrust> {
        let mut dir = mount.to_path_buf();
        for seg in segments {
            dir.push(seg);
            let meta = std::fs::symlink_metadata(&dir)
                .map_err(|e| unverifiable(format!("{}: {e}", dir.display())))?;
            if !meta.is_dir() {
                return Err(unverifiable(format!(
                    "{} is not a directory",
                    dir.display()
                )));
            }
            if meta.uid() != self.owner {
                return Err(Distrust::NotRootOwned {
                    dir: dir.display().to_string(),
                    uid: meta.uid(),
                });
            }
        }
        Ok(())
    }

    /// Checks every claim. A hierarchy the agent does not mount (a v1 controller
    /// left out of a container's `/sys/fs/cgroup`) is skipped, but at least one
    /// claim must be checked and every checked one must pass: an attacker's
    /// delegated subtree on an unmounted hierarchy names nothing that the
    /// mounted ones confirm.
    ///
    /// With `trust_unverifiable`, a claim outside the agent's cgroup namespace
    /// (`/../…`) is let through on its name alone, which the parser has already
    /// refused below `user@*.service`. Nothing else is: a directory that is
    /// gone or unreadable still fails, and one the agent can see must be root's.
    pub fn check_all(
        &self,
        claims: &[CgroupClaim],
        trust_unverifiable: bool,
    ) -> Result<(), Distrust> {
        let mut checked = trust_unverifiable;
        for c in claims {
            match self.check(c) {
                Ok(seen) => checked |= seen,
                Err(Distrust::OutsideNamespace { .. }) if trust_unverifiable => {}
                Err(e) => return Err(e),
            }
        }
        match claims.first() {
            Some(first) if !checked => Err(Distrust::Unverifiable {
                dir: first.dir.clone(),
                reason: "the agent mounts none of the cgroup hierarchies that name it".into(),
            }),
            _ => Ok(()),
        }
    }
}

/// A stand-in cgroup filesystem under `root` for tests that use a fake `/proc`:
/// every directory the `cgroup` files name is created (on the unified mount at
/// `root/unified`, or on `root/<controllers>` for v1 lines), owned by the
/// caller, whose uid then stands in for root. Paths with `..` are not created.
#[cfg(any(test, feature = "testing"))]
pub fn fake(root: &Path, cgroup_files: &[&str]) -> std::io::Result<CgroupFs> {
    std::fs::create_dir_all(root)?;
    let mut mountinfo = String::new();
    let mut seen = std::collections::BTreeSet::new();
    for line in cgroup_files.iter().flat_map(|t| t.lines()) {
        let mut parts = line.splitn(3, ':');
        let (_, Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let name = if controllers.is_empty() {
            "unified"
        } else {
            controllers
        };
        let mount = root.join(name);
        std::fs::create_dir_all(&mount)?;
        if !path.contains("..") {
            std::fs::create_dir_all(mount.join(path.trim_start_matches('/')))?;
        }
        if seen.insert(name.to_owned()) {
            mountinfo += &if controllers.is_empty() {
                format!("31 30 0:27 / {} rw - cgroup2 cgroup2 rw\n", mount.display())
            } else {
                format!(
                    "32 30 0:28 / {} rw - cgroup cgroup rw,{controllers}\n",
                    mount.display()
                )
            };
        }
    }
    let owner = std::fs::metadata(root)?.uid();
    Ok(CgroupFs::from_mountinfo(&mountinfo).with_owner(owner))
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let oct = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u32, |n, b| n * 8 + u32::from(b - b'0')));
        match oct.and_then(|n| u8::try_from(n).ok()) {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(hierarchy: u32, controllers: &str, dir: &str) -> CgroupClaim {
        CgroupClaim {
            hierarchy,
            controllers: controllers.into(),
            dir: dir.into(),
        }
    }

    #[test]
    fn mounts_from_mountinfo() {
        let fs = CgroupFs::from_mountinfo(
            "30 25 0:26 / /sys/fs/cgroup rw shared:9 - tmpfs tmpfs rw\n\
             31 30 0:27 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw,nsdelegate\n\
             32 30 0:28 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd\n\
             33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw shared:12 - cgroup cgroup rw,cpu,cpuacct\n\
             34 30 0:30 /docker/x /sys/fs/cgroup/memory rw shared:13 - cgroup cgroup rw,memory\n\
             35 30 0:31 / /mnt/with\\040space rw - cgroup cgroup rw,pids\n\
             bad line\n",
        );
        assert_eq!(
            fs.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            fs.mount_of(&claim(1, "name=systemd", "/")),
            Some(Path::new("/sys/fs/cgroup/systemd"))
        );
        assert_eq!(
            fs.mount_of(&claim(4, "cpu,cpuacct", "/")),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        // A mount of a subtree is not used.
        assert_eq!(fs.mount_of(&claim(5, "memory", "/")), None);
        assert_eq!(
            fs.mount_of(&claim(6, "pids", "/")),
            Some(Path::new("/mnt/with space"))
        );
    }

    #[test]
    fn ownership_of_every_directory_on_the_way() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("system.slice/docker-a.scope")).unwrap();
        let me = rustix_uid();
        let mountinfo = format!(
            "31 30 0:27 / {} rw - cgroup2 cgroup2 rw\n",
            root.path().display()
        );
        let fs = CgroupFs::from_mountinfo(&mountinfo).with_owner(me);
        assert!(fs
            .check(&claim(0, "", "/system.slice/docker-a.scope"))
            .unwrap());
        // Owned by someone else than the required owner: refused.
        let other = CgroupFs::from_mountinfo(&mountinfo).with_owner(me.wrapping_add(1));
        assert!(matches!(
            other.check(&claim(0, "", "/system.slice/docker-a.scope")),
            Err(Distrust::NotRootOwned { uid, .. }) if uid == me
        ));
        // On no mount: skipped, but not enough on its own.
        let unmounted = claim(3, "memory", "/system.slice/docker-a.scope");
        assert!(!fs.check(&unmounted).unwrap());
        assert!(matches!(
            fs.check_all(std::slice::from_ref(&unmounted), false),
            Err(Distrust::Unverifiable { .. })
        ));
        fs.check_all(
            &[unmounted, claim(0, "", "/system.slice/docker-a.scope")],
            false,
        )
        .unwrap();
        fs.check_all(&[], false).unwrap();
        // Trusting what cannot be seen: a path outside the namespace passes on
        // its name, one on the agent's mounts is still checked.
        let outside = claim(0, "", "/../system.slice/docker-a.scope");
        assert!(fs.check_all(std::slice::from_ref(&outside), false).is_err());
        fs.check_all(std::slice::from_ref(&outside), true).unwrap();
        assert!(matches!(
            other.check_all(
                &[outside, claim(0, "", "/system.slice/docker-a.scope")],
                true
            ),
            Err(Distrust::NotRootOwned { .. })
        ));
        // Gone: unverifiable, even when trusting names. Outside the namespace:
        // a reason of its own.
        let gone = claim(0, "", "/system.slice/docker-b.scope");
        assert!(matches!(
            fs.check(&gone),
            Err(Distrust::Unverifiable { .. })
        ));
        assert!(fs.check_all(std::slice::from_ref(&gone), true).is_err());
        assert!(matches!(
            fs.check(&claim(0, "", "/../system.slice/docker-a.scope")),
            Err(Distrust::OutsideNamespace { .. })
        ));
        // A symlink in the way is not followed.
        std::os::unix::fs::symlink(root.path().join("system.slice"), root.path().join("link"))
            .unwrap();
        assert!(matches!(
            fs.check(&claim(0, "", "/link/docker-a.scope")),
            Err(Distrust::Unverifiable { .. })
        ));
    }

    fn rustix_uid() -> u32 {
        std::fs::metadata("/proc/self").unwrap().uid()
    }
}
