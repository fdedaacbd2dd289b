//! The `unix` workload attestor: uid, gid, user and group names, supplementary
//! groups, the executable's path and its SHA-256.
//!
//! The uid and gid come from `SO_PEERCRED` (the kernel's word at connect time), not
//! from `/proc`, which the process could have changed since. Hashing is cached by
//! (device, inode, size, mtime, ctime) and capped in size, because hashing a large
//! binary on every call would let any local process burn the agent's CPU. The
//! ctime is what makes the key honest: a file's owner can set its mtime back
//! after rewriting it (`touch -d`), but any write or `utimes` moves the ctime to
//! the present, and only the clock can set it.

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use sha2::{Digest as _, Sha256};

use crate::{AttestError, ProcessRef, Selector, Wanted, WorkloadAttestor};

/// Default largest binary that is hashed: 256 MiB.
pub const DEFAULT_MAX_HASH_BYTES: u64 = 256 << 20;
/// How many binaries' hashes are remembered before the cache starts over.
pub const HASH_CACHE_ENTRIES: usize = 4096;
/// How many different binaries are hashed at once. A burst of new processes is
/// mostly one binary (hashed once, the rest wait for it); distinct large binaries
/// queue instead of each taking a core.
pub const MAX_PARALLEL_HASHES: usize = 2;

/// The `unix` attestor.
#[derive(Debug)]
pub struct UnixAttestor {
    proc_root: PathBuf,
    etc_root: PathBuf,
    max_hash_bytes: u64,
    hashes: Mutex<Hashes>,
    /// Signalled whenever a hash finishes (or fails), for callers waiting on it.
    hashed: Condvar,
    /// How many times a binary was read to be hashed (single flight keeps this low).
    hash_reads: std::sync::atomic::AtomicU64,
    // Parsed /etc/passwd and /etc/group, re-read only when the file changes.
    names: Mutex<HashMap<&'static str, NameFile>>,
    /// Whether a process in another mount or user namespace than the agent's
    /// still gets `unix:path` and `unix:sha256`.
    foreign_namespaces: bool,
    /// The agent's own mount and user namespaces (inode numbers).
    own_namespaces: Option<(u64, u64)>,
}

fn poisoned() -> AttestError {
    AttestError::Io {
        what: "the binary hash cache".into(),
        source: std::io::Error::other("lock poisoned"),
    }
}

/// Known hashes, and the binaries being hashed right now: concurrent callers of
/// one binary share one read of it (single flight).
#[derive(Debug, Default)]
struct Hashes {
    /// Hashes, each with `None` when kept for good, or `Some(n)` when it is
    /// only for the callers that were waiting for hash number `n` (a file
    /// changed within the last second; see `exe_sha256`).
    done: HashMap<FileId, (String, Option<u64>)>,
    in_flight: std::collections::HashSet<FileId>,
    /// Hashes finished so far.
    finished: u64,
}

/// A parsed `/etc/passwd` or `/etc/group`, the stamp of the file it came from,
/// and when that stamp was last compared with the file.
type NameFile = (FileId, std::time::Instant, HashMap<u32, String>);

/// How long a parsed `/etc/passwd` or `/etc/group` is used without a `stat`: a
/// renamed user shows within this, and a burst of new processes costs no stats.
pub const NAMES_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// What identifies a binary's contents without reading them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

impl Default for UnixAttestor {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_HASH_BYTES)
    }
}

impl UnixAttestor {
    /// An attestor reading the host's `/proc` and `/etc`.
    pub fn new(max_hash_bytes: u64) -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            etc_root: PathBuf::from("/etc"),
            max_hash_bytes,
            hashes: Mutex::new(Hashes::default()),
            hashed: Condvar::new(),
            hash_reads: std::sync::atomic::AtomicU64::new(0),
            names: Mutex::new(HashMap::new()),
            foreign_namespaces: false,
            own_namespaces: namespaces(Path::new("/proc/self")),
        }
    }

    /// Gives `unix:path` and `unix:sha256` to processes in other mount or user
    /// namespaces too (`[plugins.unix] foreign_namespace_paths = true`).
    ///
    /// Off by default. A path is a name in the caller's mount namespace, and a
    /// process with a user and mount namespace of its own can bind-mount any
    /// binary over any path there (`/usr/bin/payments`), so that `readlink
    /// /proc/PID/exe` shows the entitled path while its own code runs. Turn this
    /// on only where every such namespace is made by something trusted (a
    /// container runtime) and entries pin the container too.
    pub fn with_foreign_namespaces(mut self, allow: bool) -> Self {
        self.foreign_namespaces = allow;
        self
    }

    /// Whether `pid` shares the agent's mount and user namespaces.
    fn in_own_namespaces(&self, pid: i32) -> bool {
        let theirs = namespaces(&self.proc_path(pid, ""));
        theirs.is_some() && theirs == self.own_namespaces
    }

    /// Reads `/proc` and `/etc` under other roots (tests, or an agent whose host
    /// filesystem is mounted elsewhere).
    pub fn with_roots(
        mut self,
        proc_root: impl Into<PathBuf>,
        etc_root: impl Into<PathBuf>,
    ) -> Self {
        self.proc_root = proc_root.into();
        self.etc_root = etc_root.into();
        self
    }

    fn proc_path(&self, pid: i32, rel: &str) -> PathBuf {
        self.proc_root.join(pid.to_string()).join(rel)
    }

    fn io(&self, pid: i32, what: &Path, e: std::io::Error) -> AttestError {
        if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(3) {
            AttestError::ProcessGone(pid)
        } else {
            AttestError::Io {
                what: what.display().to_string(),
                source: e,
            }
        }
    }

    /// SHA-256 of the process's executable, read through `/proc/PID/exe` so that it
    /// is the inode actually running even if the path was replaced. `None` if the
    /// binary is larger than the cap (the selector is then absent, which can only
    /// narrow what the workload matches).
    fn exe_sha256(&self, pid: i32) -> Result<Option<String>, AttestError> {
        let path = self.proc_path(pid, "exe");
        // Taken before the stat: whether the file is over a second old is
        // judged from here, not from after the read.
        let started = std::time::SystemTime::now();
        let mut file = File::open(&path).map_err(|e| self.io(pid, &path, e))?;
        let meta = file.metadata().map_err(|e| self.io(pid, &path, e))?;
        let id = FileId::of(&meta);
        if meta.size() > self.max_hash_bytes {
            return Ok(None);
        }
        // Wait while this binary is being hashed by another caller, or while the
        // parallel-hash slots are taken; then either use the result or take the job.
        {
            let mut h = self.hashes.lock().map_err(|_| poisoned())?;
            let arrived = h.finished;
            loop {
                match h.done.get(&id) {
                    Some((hex, None)) => return Ok(Some(hex.clone())),
                    // Finished while this caller waited for it.
                    Some((hex, Some(n))) if *n > arrived => return Ok(Some(hex.clone())),
                    _ => {}
                }
                if !h.in_flight.contains(&id) && h.in_flight.len() < MAX_PARALLEL_HASHES {
                    h.in_flight.insert(id);
                    break;
                }
                h = self.hashed.wait(h).map_err(|_| poisoned())?;
            }
        }
        self.hash_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = self.hash_file(pid, &path, &mut file);
        // Used at all only if the file did not change while it was read. Kept
        // for later callers only if it was not changed within the last second
        // either: ctime has the resolution of the kernel's coarse clock, so a
        // rewrite in the same tick as the `stat` above would leave the same
        // key over other bytes.
        let unchanged = file.metadata().is_ok_and(|m| FileId::of(&m) == id);
        let old = started
            .duration_since(std::time::UNIX_EPOCH)
            .is_ok_and(|now| {
                now.as_secs()
                    > u64::try_from(id.ctime.0)
                        .unwrap_or(u64::MAX)
                        .saturating_add(1)
            });
        if let Ok(mut h) = self.hashes.lock() {
            h.in_flight.remove(&id);
            h.finished += 1;
            let n = h.finished;
            if let (true, Ok(Some(hex))) = (unchanged, &result) {
                if h.done.len() >= HASH_CACHE_ENTRIES {
                    h.done.clear();
                }
                h.done.insert(id, (hex.clone(), (!old).then_some(n)));
            }
        }
        self.hashed.notify_all();
        // Bytes read from a file that changed meanwhile describe no binary:
        // no hash selector at all (which can only narrow what matches).
        if unchanged {
            result
        } else {
            Ok(None)
        }
    }

    /// Reads `file` to the end; `None` if it grows past the cap while read.
    fn hash_file(
        &self,
        pid: i32,
        path: &Path,
        file: &mut File,
    ) -> Result<Option<String>, AttestError> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(|e| self.io(pid, path, e))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > self.max_hash_bytes {
                return Ok(None); // grew while we read it
            }
            hasher.update(&buf[..n]);
        }
        Ok(Some(lanyard_token::hex::encode(&hasher.finalize())))
    }

    /// The executable's path, if that path, looked up in the agent's own mount
    /// namespace, is the very file the process runs (same device and inode).
    ///
    /// `readlink /proc/PID/exe` is only a name: a process can exec a binary
    /// through another process's root (`/proc/<helper>/root/usr/bin/payments`)
    /// or through a file descriptor a helper opened in a mount namespace where
    /// its own binary is bind-mounted over an entitled path, and the link then
    /// shows the entitled path. The path is a selector only when it names what
    /// runs.
    fn exe_path(&self, pid: i32) -> Result<Option<PathBuf>, AttestError> {
        let exe = self.proc_path(pid, "exe");
        let path = std::fs::read_link(&exe).map_err(|e| self.io(pid, &exe, e))?;
        let running = std::fs::metadata(&exe).map_err(|e| self.io(pid, &exe, e))?;
        let named = std::fs::metadata(&path).ok();
        Ok(named
            .filter(|n| (n.dev(), n.ino()) == (running.dev(), running.ino()))
            .map(|_| path))
    }

    /// Supplementary groups from `/proc/PID/status`, for a process known by pid
    /// only (the agent takes them from the socket, `SO_PEERGROUPS`).
    fn groups(&self, pid: i32) -> Result<Vec<u32>, AttestError> {
        let path = self.proc_path(pid, "status");
        let status = crate::reads::read_proc(&path).map_err(|e| self.io(pid, &path, e))?;
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .ok_or_else(|| AttestError::Parse(path.display().to_string()))?;
        line.split_whitespace()
            .map(|g| {
                g.parse()
                    .map_err(|_| AttestError::Parse(path.display().to_string()))
            })
            .collect()
    }

    /// Looks up a name for `id` in an `/etc/passwd`-style file (name:x:id:…).
    /// The parsed file is kept until its inode, size or mtime changes, which is
    /// checked at most every [`NAMES_RECHECK`].
    fn name_of(&self, file: &'static str, id: u32) -> Option<String> {
        let now = std::time::Instant::now();
        let mut names = self.names.lock().ok()?;
        if let Some((_, checked, map)) = names.get(file) {
            if now.duration_since(*checked) < NAMES_RECHECK {
                return map.get(&id).cloned();
            }
        }
        let path = self.etc_root.join(file);
        let meta = std::fs::metadata(&path).ok()?;
        let stamp = FileId::of(&meta);
        if let Some((s, checked, _)) = names.get_mut(file) {
            if *s == stamp {
                *checked = now;
            }
        }
        if names.get(file).is_none_or(|(s, _, _)| *s != stamp) {
            let text = std::fs::read_to_string(&path).ok()?;
            let map = text
                .lines()
                .filter_map(|l| {
                    let mut f = l.split(':');
                    let (name, _, num) = (f.next()?, f.next()?, f.next()?);
                    Some((num.parse().ok()?, name.to_owned()))
                        .filter(|(_, n): &(u32, String)| !n.is_empty())
                })
                .rev() // the first line for an id wins, as getpwuid does
                .collect();
            names.insert(file, (stamp, now, map));
        }
        names.get(file).and_then(|(_, _, m)| m.get(&id).cloned())
    }
}

/// The mount and user namespace inodes of the process at `/proc/PID` (`dir`).
fn namespaces(dir: &Path) -> Option<(u64, u64)> {
    let ino = |ns: &str| {
        std::fs::metadata(dir.join("ns").join(ns))
            .ok()
            .map(|m| m.ino())
    };
    Some((ino("mnt")?, ino("user")?))
}

impl WorkloadAttestor for UnixAttestor {
    fn name(&self) -> &'static str {
        "unix"
    }

    fn attest(&self, p: &ProcessRef) -> Result<Vec<Selector>, AttestError> {
        self.attest_wanted(p, &Wanted::everything())
    }

    /// Reading a whole binary is not quick; everything else is `/proc` and `/etc`.
    fn is_quick(&self, wanted: &Wanted) -> bool {
        !wanted.wants("unix", "sha256")
    }

    /// Hashes the binary only when some entry names `unix:sha256`: on a cold
    /// start that read is most of the time to a first credential. The path is
    /// derived only when some entry names `unix:path`, too: its check costs
    /// three system calls that most deployments do not need.
    fn attest_wanted(&self, p: &ProcessRef, wanted: &Wanted) -> Result<Vec<Selector>, AttestError> {
        let mut out = vec![
            Selector::new("unix", "uid", p.uid),
            Selector::new("unix", "gid", p.gid),
        ];
        if let Some(user) = self.name_of("passwd", p.uid) {
            out.push(Selector::new("unix", "user", user));
        }
        if let Some(group) = self.name_of("group", p.gid) {
            out.push(Selector::new("unix", "group", group));
        }
        let groups = match &p.groups {
            Some(g) => g.to_vec(),
            None => self.groups(p.pid)?,
        };
        for g in groups {
            out.push(Selector::new("unix", "supplementary_gid", g));
        }
        let (want_path, want_hash) = (wanted.wants("unix", "path"), wanted.wants("unix", "sha256"));
        if !(want_path || want_hash) {
            // Nothing names the binary: no readlink, no namespace check.
            out.sort();
            out.dedup();
            return Ok(out);
        }
        if !self.foreign_namespaces && !self.in_own_namespaces(p.pid) {
            // No binary selectors for a process whose paths the agent cannot
            // read the way the process sees them (see `with_foreign_namespaces`).
            out.sort();
            out.dedup();
            return Ok(out);
        }
        if want_path {
            if let Some(path) = self.exe_path(p.pid)? {
                out.push(Selector::new("unix", "path", path.display()));
            }
        }
        if want_hash {
            if let Some(hash) = self.exe_sha256(p.pid)? {
                out.push(Selector::new("unix", "sha256", hash));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}
