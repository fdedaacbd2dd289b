//! Real cgroups for the container tests: a process placed in a cgroup with a
//! container runtime's naming, in every hierarchy this machine mounts.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// The cgroup hierarchies a process is placed in: v2, the `pids` v1 controller
/// and systemd's named v1 hierarchy, where mounted (a systemd host keeps the
/// last two in step with the unit tree).
pub fn hierarchies() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut out: Vec<(usize, PathBuf)> = Vec::new();
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(ty), Some(opts)) = (f.get(2), f.get(3)) else {
            continue;
        };
        let opts: Vec<&str> = opts.split(',').collect();
        let kind = match *ty {
            "cgroup2" => 0,
            "cgroup" if opts.contains(&"pids") => 1,
            "cgroup" if opts.contains(&"name=systemd") => 2,
            _ => continue,
        };
        if !out.iter().any(|(k, _)| *k == kind) {
            out.push((kind, PathBuf::from(f[1])));
        }
    }
    out.into_iter().map(|(_, p)| p).collect()
}

/// The unified (cgroup v2) hierarchy's mount point, if there is one.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"cgroup2"))
        .map(|f| PathBuf::from(f[1]))
}

/// A process moved into `rel` in every hierarchy before it runs its program;
/// killed and its cgroups removed on drop.
#[derive(Debug)]
pub struct InCgroup {
    child: Option<Child>,
    dirs: Vec<PathBuf>,
}

impl InCgroup {
    /// `sleep 60` in `rel`.
    pub fn new(rel: &str) -> Option<Self> {
        Self::spawn(rel, "sleep", &["60"])
    }

    /// `program args…` in `rel`: a shell is placed in the cgroups first and
    /// then execs the program (same pid), so its first instruction already
    /// runs inside them. Its stdout and stderr are captured.
    pub fn spawn(rel: &str, program: &str, args: &[&str]) -> Option<Self> {
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"read _ && exec "$0" "$@""#)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        // Built first, so that Drop reaps the child on every path below.
        let mut me = Self {
            child: Some(child),
            dirs: Vec::new(),
        };
        for root in hierarchies() {
            let dir = root.join(rel.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).ok()?;
            me.dirs.push(dir.clone());
            std::fs::write(dir.join("cgroup.procs"), me.pid().to_string()).ok()?;
        }
        let mut stdin = me.child.as_mut()?.stdin.take()?;
        stdin.write_all(b"go\n").ok()?;
        Some(me)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The cgroup directories it was placed in, one per hierarchy.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Waits for the program to exit; its output.
    pub fn output(mut self) -> Option<Output> {
        self.child.take()?.wait_with_output().ok()
    }
}

impl Drop for InCgroup {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in &self.dirs {
            // Remove the leaf and its now-empty parents (never a hierarchy root).
            let mut p = d.clone();
            while std::fs::remove_dir(&p).is_ok() {
                if !p.pop() {
                    break;
                }
            }
        }
    }
}
