//! The host's cgroup tree, for an agent in a cgroup namespace of its own.
//!
//! A pod on cgroup v2 gets a private cgroup namespace, so the agent reads other
//! pods' cgroups as `/../../kubepods.slice/…`: relative to its own namespace
//! root, whose place on the host it is not told. Given the host's cgroup v2
//! filesystem (a read-only `hostPath` mount of `/sys/fs/cgroup`), the agent
//! finds that place once, by looking for the directory whose `cgroup.procs`
//! lists the agent itself, and can then turn every `/../…` path into a host
//! directory and check who owns it like any other.

use std::path::{Path, PathBuf};

/// Where the agent's cgroup namespace root is on the host's cgroup v2 tree.
#[derive(Debug, Clone)]
pub struct HostView {
    /// The host's cgroup v2 mount, as the agent sees it.
    root: PathBuf,
    /// The agent's namespace root, as segments below `root`.
    ns_root: Vec<String>,
}

/// Why the host view could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostViewError {
    /// The agent's own cgroup file could not be read or parsed.
    #[error("cannot read the agent's own cgroup: {0}")]
    Own(String),
    /// No directory of the host tree lists the agent.
    #[error("the agent's pid {pid} is in no cgroup under {root}")]
    NotFound {
        /// The agent's pid.
        pid: u32,
        /// The host tree searched.
        root: String,
    },
}

/// How many directories the search looks at before giving up.
const MAX_DIRS: usize = 200_000;

impl HostView {
    /// Finds the agent's own place in the host tree mounted at `root` (a
    /// cgroup v2 mount; on a hybrid host, where `root` holds the v1
    /// hierarchies, its `unified` directory is used).
    pub fn locate(root: &Path) -> Result<Self, HostViewError> {
        let unified = root.join("unified");
        let root = if root.join("cgroup.controllers").exists() {
            root
        } else if unified.join("cgroup.controllers").exists() {
            unified.as_path()
        } else {
            return Err(HostViewError::Own(format!(
                "{} is not a cgroup v2 mount (no cgroup.controllers)",
                root.display()
            )));
        };
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| HostViewError::Own(e.to_string()))?;
        // The unified line: where the agent is, relative to its namespace root.
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or_else(|| HostViewError::Own("no cgroup v2 line".into()))?;
        let rel: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        if rel.iter().any(|s| *s == ".." || *s == ".") {
            return Err(HostViewError::Own(format!("unexpected path {rel:?}")));
        }
        let pid = std::process::id();
        let found = find_pid(root, pid).ok_or_else(|| HostViewError::NotFound {
            pid,
            root: root.display().to_string(),
        })?;
        // The namespace root is the found directory minus where the agent is
        // below it.
        let keep = found
            .len()
            .checked_sub(rel.len())
            .filter(|&k| found[k..] == rel[..]);
        let Some(keep) = keep else {
            return Err(HostViewError::Own(format!(
                "the agent is at {found:?} on the host, which does not end in {rel:?}"
            )));
        };
        Ok(Self {
            root: root.to_path_buf(),
            ns_root: found[..keep].to_vec(),
        })
    }

    /// The host directory for a namespace-relative cgroup path (`/../../x/y`),
    /// as segments below the host root, or `None` if the path climbs above the
    /// host root or has `..` anywhere but at its start.
    pub fn resolve(&self, dir: &str) -> Option<Vec<String>> {
        let segs: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
        let ups = segs.iter().take_while(|s| **s == "..").count();
        let rest = &segs[ups..];
        if rest.iter().any(|s| *s == ".." || *s == ".") || ups > self.ns_root.len() {
            return None;
        }
        let mut out = self.ns_root[..self.ns_root.len() - ups].to_vec();
        out.extend(rest.iter().map(|s| (*s).to_owned()));
        Some(out)
    }

    /// The host's cgroup v2 mount.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// The segments below `root` of the directory whose `cgroup.procs` lists
/// `pid`, searched breadth first without following symlinks, and only through
/// directories root owns: a user's delegated subtree can be made unreadable,
/// or filled with thousands of directories, but never holds the agent.
fn find_pid(root: &Path, pid: u32) -> Option<Vec<String>> {
    use std::os::unix::fs::MetadataExt as _;
    let want = pid.to_string();
    let mut queue = std::collections::VecDeque::from([Vec::<String>::new()]);
    let mut dirs = 0;
    while let Some(segs) = queue.pop_front() {
        let dir = segs.iter().fold(root.to_path_buf(), |p, s| p.join(s));
        if std::fs::read_to_string(dir.join("cgroup.procs"))
            .is_ok_and(|t| t.lines().any(|l| l == want))
        {
            return Some(segs);
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_dir() || meta.uid() != 0 {
                continue;
            }
            dirs += 1;
            if dirs > MAX_DIRS {
                return None;
            }
            let mut next = segs.clone();
            next.push(e.file_name().to_string_lossy().into_owned());
            queue.push_back(next);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths_relative_to_the_namespace_root() {
        let v = HostView {
            root: PathBuf::from("/host"),
            ns_root: vec![
                "kubepods.slice".into(),
                "pod-a.slice".into(),
                "agent.scope".into(),
            ],
        };
        assert_eq!(
            v.resolve("/../../pod-b.slice/c.scope").unwrap(),
            ["kubepods.slice", "pod-b.slice", "c.scope"]
        );
        assert_eq!(
            v.resolve("/").unwrap(),
            ["kubepods.slice", "pod-a.slice", "agent.scope"]
        );
        assert_eq!(
            v.resolve("/../../../system.slice").unwrap(),
            ["system.slice"]
        );
        assert_eq!(v.resolve("/../../../../x"), None, "above the host root");
        assert_eq!(v.resolve("/a/../b"), None);
    }

    #[test]
    fn finds_a_pid_only_through_root_owned_directories() {
        // A stand-in tree: a/b lists the pid. The test runs as root in CI, so
        // its directories are root's; as another user nothing is found.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::create_dir_all(dir.path().join("x/y")).unwrap();
        std::fs::write(dir.path().join("cgroup.procs"), "1\n").unwrap();
        std::fs::write(dir.path().join("a/b/cgroup.procs"), "7\n4242\n").unwrap();
        let root_owned =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.path()).unwrap()) == 0;
        if root_owned {
            assert_eq!(find_pid(dir.path(), 4242).unwrap(), ["a", "b"]);
            // The same directory owned by a user is never searched.
            std::os::unix::fs::chown(dir.path().join("a"), Some(1001), None).unwrap();
            assert_eq!(find_pid(dir.path(), 4242), None);
        } else {
            assert_eq!(find_pid(dir.path(), 4242), None);
        }
        assert_eq!(find_pid(dir.path(), 99), None);
    }
}
