//! Who is on the other end of a connection, pinned so that it cannot be swapped.
//!
//! At accept the agent reads `SO_PEERCRED` and takes a pidfd (`SO_PEERPIDFD`, or
//! `pidfd_open` on kernels before 6.5). Before any response leaves, [`Peer::still_same`]
//! checks that the pidfd has not signalled exit and that the process's uid is
//! unchanged, so a PID reused while the request was in flight can never receive
//! the old process's identity: a pid cannot be reused while the process a pidfd
//! refers to is alive, so no start time needs comparing (and `/proc/PID/stat`,
//! which the kernel formats in full, is not read on every call).
//!
//! The pin also covers the process *image*: the executable (device and inode of
//! `/proc/PID/exe`) is noted at accept, and every attestation is checked
//! against it ([`Peer::check_image`]). A process that connects and then execs an entitled binary, while a
//! child relays requests over the inherited connection, would otherwise be
//! attested as that binary. What is left is an exec that completes between
//! `connect` and the agent's `accept` (short, but longer while connections
//! queue; the executable is read first thing after accept),
//! and a process of the same uid that ptraces an entitled one: the README's "On
//! the host" names both, and `kernel.yama.ptrace_scope >= 1` narrows the second.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use lanyard_plugins::ProcessRef;

mod sys;

/// Why a caller could not be pinned, or is no longer the process it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The socket has no peer credentials (not a Unix socket peer).
    #[error("no peer credentials: {0}")]
    Credentials(std::io::Error),
    /// The kernel did not report the peer's pid (it is in another pid namespace).
    #[error("peer pid is not visible from the agent's pid namespace")]
    NoPid,
    /// No pidfd could be taken.
    #[error("cannot take a pidfd for pid {pid}: {source}")]
    Pidfd {
        /// The peer pid.
        pid: i32,
        /// The OS error.
        source: std::io::Error,
    },
    /// The process exited or was replaced.
    #[error("caller pid {0} exited or was replaced before the response")]
    Changed(i32),
    /// The process runs another executable than when it connected.
    #[error("caller pid {0} executed another binary after it connected")]
    Exec(i32),
}

/// The pinned peer of one connection.
#[derive(Debug)]
pub struct Peer {
    process: ProcessRef,
    /// Whom the caller's connections and streams are counted against
    /// ([`principal`]).
    principal: u32,
    /// Set once a whole request (with the security header) has arrived.
    active: std::sync::atomic::AtomicBool,
    pidfd: OwnedFd,
    /// `(dev, ino)` of the executable at accept.
    image: Option<(u64, u64)>,
    memo: Memo,
}

/// State a stage above the socket keeps per connection (the agent's last
/// attestation). The socket stage holds it for the connection's life but does
/// not know its type, so it does not depend on the stages that use it.
#[derive(Default)]
struct Memo(std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>);

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Memo(set)"
        } else {
            "Memo(empty)"
        })
    }
}

/// What the agent learns about a caller at accept, before it decides whether to
/// serve the connection at all: cheap facts, taken in the order that matters.
#[derive(Debug)]
pub struct Accepted {
    pid: i32,
    uid: u32,
    gid: u32,
    /// `(dev, ino)` of the executable, read first of all.
    image: Option<(u64, u64)>,
    pidfd: OwnedFd,
    /// Whether the kernel gave the pidfd with the connection (`SO_PEERPIDFD`)
    /// rather than `pidfd_open` on a pid that could have been reused.
    exact: bool,
    principal: u32,
}

impl Accepted {
    /// Reads the caller of `stream`: its credentials, its executable (first:
    /// every moment until this read is room for the connect-then-exec race),
    /// a pidfd and whom its budgets count against ([`principal`]).
    pub fn of(stream: &tokio::net::UnixStream) -> Result<Self, PeerError> {
        let cred = stream.peer_cred().map_err(PeerError::Credentials)?;
        let pid = cred.pid().filter(|&p| p > 0).ok_or(PeerError::NoPid)?;
        let image = image_of(pid);
        let (pidfd, exact) = match sys::peer_pidfd(stream.as_fd()) {
            Ok(fd) => (fd, true),
            Err(_) => {
                let p = rustix::process::Pid::from_raw(pid).ok_or(PeerError::NoPid)?;
                let fd = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                    .map_err(|e| PeerError::Pidfd {
                        pid,
                        source: e.into(),
                    })?;
                (fd, false)
            }
        };
        let principal = principal_of(pid, Some(pidfd.as_fd()), cred.uid());
        Ok(Self {
            pid,
            uid: cred.uid(),
            gid: cred.gid(),
            image,
            pidfd,
            exact,
            principal,
        })
    }

    /// The caller's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whom the caller's connections and streams are counted against.
    pub fn principal(&self) -> u32 {
        self.principal
    }

    /// Pins the admitted caller of `stream` for the connection's life.
    pub fn pin(self, stream: &tokio::net::UnixStream) -> Result<Arc<Peer>, PeerError> {
        // Taken with the uid and gid at connect; an error leaves the attestor to
        // read `/proc/PID/status` instead.
        let groups = sys::peer_groups(stream.as_fd()).ok().map(Arc::from);
        let peer = Peer {
            process: ProcessRef {
                pid: self.pid,
                uid: self.uid,
                gid: self.gid,
                groups,
            },
            principal: self.principal,
            active: std::sync::atomic::AtomicBool::new(false),
            pidfd: self.pidfd,
            image: self.image,
            memo: Memo::default(),
        };
        // With pidfd_open the pid could have been reused between connect and open;
        // the original peer must still be alive (it holds the socket), and the pidfd
        // must refer to a live process whose uid matches what SO_PEERCRED said.
        if !self.exact {
            peer.still_same()?;
        }
        Ok(Arc::new(peer))
    }
}

impl Peer {
    /// Pins the peer of `stream` at once ([`Accepted::of`], then [`Accepted::pin`]).
    pub fn of(stream: &tokio::net::UnixStream) -> Result<Arc<Self>, PeerError> {
        Accepted::of(stream)?.pin(stream)
    }

    /// This connection's state of type `T`, made on first use. `None` only if
    /// another type was asked for first on this connection (one stage owns it).
    pub fn memo<T: Default + Send + Sync + 'static>(&self) -> Option<&T> {
        self.memo
            .0
            .get_or_init(|| Box::new(T::default()))
            .downcast_ref()
    }

    /// Whether `exe` (the `(dev, ino)` of the executable now, `None` for none)
    /// is the executable the caller had at accept.
    pub fn same_image(&self, exe: Option<(u64, u64)>) -> bool {
        exe == self.image
    }

    /// Fails unless the caller still runs the executable it had at accept.
    ///
    /// The pipeline calls this *after* its attestors read `/proc`: if any read
    /// saw an executable exec'd since the connect, the exec came before this
    /// check, which then fails. An exec after it changes nothing already
    /// derived, which describes the binary that connected.
    pub fn check_image(&self) -> Result<(), PeerError> {
        if self.same_image(image_of(self.process.pid)) {
            Ok(())
        } else {
            Err(PeerError::Exec(self.process.pid))
        }
    }

    /// Whom this connection's budgets are counted against.
    pub fn principal(&self) -> u32 {
        self.principal
    }

    /// Notes that a whole request arrived on this connection: it is no longer
    /// subject to the idle timeout.
    pub fn mark_active(&self) {
        self.active
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a whole request arrived on this connection.
    pub fn active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The process as attestors see it.
    pub fn process(&self) -> &ProcessRef {
        &self.process
    }

    /// Fails unless the caller is still the process pinned at accept.
    pub fn still_same(&self) -> Result<(), PeerError> {
        let pid = self.process.pid;
        let changed = || PeerError::Changed(pid);
        if sys::pidfd_exited(&self.pidfd) {
            return Err(changed());
        }
        // The pidfd answers without a path walk (Linux 6.13+); /proc otherwise.
        let same_uid = match sys::pidfd_euid(self.pidfd.as_fd()) {
            Some(euid) => euid == self.process.uid,
            None => uid_is(pid, self.process.uid),
        };
        if !same_uid {
            return Err(changed());
        }
        // /proc was read while the pidfd's process was alive: check once more that
        // it did not exit (and the pid get reused) during those reads.
        if sys::pidfd_exited(&self.pidfd) {
            return Err(changed());
        }
        Ok(())
    }
}

/// Whom a caller's budgets are counted against: its `uid` when it is in the
/// agent's user namespace; otherwise the uid that created the outermost user
/// namespace between it and the agent. All of a user's subordinate uids
/// (`unshare --map-auto`) thus count as that user. A namespace that cannot be
/// read is counted against the (unprivileged) uid `u32::MAX - 1`, never root.
pub fn principal(pid: i32, uid: u32) -> u32 {
    principal_of(pid, None, uid)
}

/// [`principal`], asking `pidfd` for the namespace where the kernel can answer
/// (Linux 6.11+): an ioctl on the pidfd costs less than walking
/// `/proc/PID/ns/user`, whose entries the kernel builds anew for every new pid.
fn principal_of(pid: i32, pidfd: Option<std::os::fd::BorrowedFd<'_>>, uid: u32) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    const UNKNOWN: u32 = u32::MAX - 1;
    // The agent's own user namespace never changes: read it once.
    static OWN: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();
    let own = *OWN.get_or_init(|| {
        std::fs::metadata("/proc/self/ns/user")
            .ok()
            .map(|m| (m.dev(), m.ino()))
    });
    let id = |f: &std::fs::File| f.metadata().ok().map(|m| (m.dev(), m.ino()));
    let ns = match pidfd.map(sys::pidfd_user_namespace) {
        Some(Ok(fd)) => std::fs::File::from(fd),
        // No pidfd, or a kernel without the ioctl: the /proc path.
        _ => {
            let path = format!("/proc/{pid}/ns/user");
            // The common case, one stat: the caller is in the agent's namespace.
            let theirs = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
            if theirs.is_some() && theirs == own {
                return uid;
            }
            let Ok(file) = std::fs::File::open(&path) else {
                return UNKNOWN;
            };
            file
        }
    };
    let first = id(&ns);
    if first.is_none() {
        return UNKNOWN;
    }
    if first == own {
        return uid;
    }
    // Walk up to the child of the agent's namespace (or as far as we may see).
    let mut ns: OwnedFd = ns.into();
    for _ in 0..32 {
        let Some(parent) = sys::userns_parent(ns.as_fd()) else {
            break;
        };
        let pf = std::fs::File::from(parent);
        if id(&pf) == own {
            break;
        }
        ns = pf.into();
    }
    sys::userns_owner(ns.as_fd()).unwrap_or(UNKNOWN)
}

/// The device and inode of the executable `pid` runs, if it has one.
pub fn image_of(pid: i32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(format!("/proc/{pid}/exe"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// The effective uid of this process.
pub fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether the process's effective uid is `uid`. The owner of `/proc/PID` is the
/// effective uid and costs one `stat`; any mismatch is settled by
/// `/proc/PID/status` (the kernel's `task_dump_owner` rules differ by file, so
/// the directory's owner is taken as a fast yes only).
fn uid_is(pid: i32, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid)
        || effective_uid(pid) == Some(uid)
}

/// The effective uid and gid from `/proc/PID/status` (what `SO_PEERCRED` reports).
pub fn effective_ids(pid: i32) -> Option<(u32, u32)> {
    let status =
        lanyard_plugins::reads::read_proc(std::path::Path::new(&format!("/proc/{pid}/status")))
            .ok()?;
    let field = |name: &str| -> Option<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("Uid:")?, field("Gid:")?))
}

/// The real and effective uid from `/proc/PID/status` (the owner of
/// `/proc/PID` is root for a process that is not dumpable).
pub fn real_and_effective_uid(pid: i32) -> Option<(u32, u32)> {
    let status =
        lanyard_plugins::reads::read_proc(std::path::Path::new(&format!("/proc/{pid}/status")))
            .ok()?;
    let mut ids = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .map(str::parse::<u32>);
    Some((ids.next()?.ok()?, ids.next()?.ok()?))
}

fn effective_uid(pid: i32) -> Option<u32> {
    effective_ids(pid).map(|(uid, _)| uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pins_and_detects_exit() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let me = Peer::of(&a).unwrap();
        assert_eq!(me.process().pid, std::process::id() as i32);
        me.still_same().unwrap();

        // A child that connects, then exits: its pin must fail afterwards.
        let dir = std::env::temp_dir().join(format!("lanyard-peer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let mut child = std::process::Command::new("python3")
            .args(["-c", "import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); sys.stdin.read()"])
            .arg(&sock)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (conn, _) = listener.accept().await.unwrap();
        let peer = Peer::of(&conn).unwrap();
        assert_eq!(peer.process().pid, child.id() as i32);
        peer.still_same().unwrap();
        drop(child.stdin.take());
        child.wait().unwrap();
        assert!(matches!(peer.still_same(), Err(PeerError::Changed(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn subordinate_uids_count_as_their_owner() {
        let me = std::process::id() as i32;
        assert_eq!(
            principal(me, 4242),
            4242,
            "the agent's own namespace: the uid"
        );
        // A process in a user namespace this process made: counted as its
        // creator (this test's uid), whatever uid it claims.
        let mut c = std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "sleep", "30"])
            .spawn()
            .unwrap();
        let own = std::fs::read_link("/proc/self/ns/user").unwrap();
        for _ in 0..200 {
            if std::fs::read_link(format!("/proc/{}/ns/user", c.id())).is_ok_and(|l| l != own) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(principal(c.id() as i32, 123_456), current_uid());
        // The same answer through the pidfd (the ioctl on 6.11+), as at accept.
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(c.id() as i32).unwrap(),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap();
        assert_eq!(
            principal_of(c.id() as i32, Some(pidfd.as_fd()), 123_456),
            current_uid()
        );
        let own = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(me).unwrap(),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap();
        assert_eq!(principal_of(me, Some(own.as_fd()), 4242), 4242);
        // The ioctl itself answers on this kernel (6.11+), not only the /proc
        // fallback: the same namespace /proc names.
        if kernel_at_least(6, 11) {
            let ns = sys::pidfd_user_namespace(pidfd.as_fd()).expect("PIDFD_GET_USER_NAMESPACE");
            let via_ioctl = std::fs::File::from(ns).metadata().unwrap();
            let via_proc = std::fs::metadata(format!("/proc/{}/ns/user", c.id())).unwrap();
            use std::os::unix::fs::MetadataExt as _;
            assert_eq!(
                (via_ioctl.dev(), via_ioctl.ino()),
                (via_proc.dev(), via_proc.ino())
            );
        }
        c.kill().unwrap();
        c.wait().unwrap();
        assert_eq!(principal(i32::MAX, 5), u32::MAX - 1, "unreadable: not root");
    }

    /// Whether this kernel is at least `major.minor`.
    fn kernel_at_least(major: u32, minor: u32) -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut v = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>().unwrap_or(0));
        (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (major, minor)
    }

    /// Whether this kernel has `PIDFD_GET_INFO` (6.13+).
    fn kernel_has_pidfd_info() -> bool {
        kernel_at_least(6, 13)
    }

    #[test]
    fn the_pidfd_reports_the_effective_uid() {
        let me = rustix::process::pidfd_open(
            rustix::process::getpid(),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap();
        let got = sys::pidfd_euid(me.as_fd());
        if kernel_has_pidfd_info() {
            assert_eq!(got, Some(current_uid()));
        } else {
            assert_eq!(got, None);
        }
    }

    /// A root caller that connects and then drops to another uid is no longer
    /// the caller that connected: no response may reach it as root.
    #[tokio::test]
    async fn a_caller_that_changes_uid_after_connect_is_refused() {
        if current_uid() != 0 {
            // The test script (and CI) run the tests as root: there, skipping
            // would pass having checked nothing.
            assert!(
                std::env::var_os("CI").is_none()
                    && std::env::var_os("LANYARD_TEST_STRICT").is_none(),
                "needs root to setuid, and the test script runs as root"
            );
            eprintln!("SKIP: needs root to setuid");
            return;
        }
        let dir = std::env::temp_dir().join(format!("lanyard-setuid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let mut child = std::process::Command::new("python3")
            .args(["-c", "import os,socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); sys.stdin.readline(); os.setresuid(1001,1001,1001); print('done', flush=True); sys.stdin.read()"])
            .arg(&sock)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (conn, _) = listener.accept().await.unwrap();
        let peer = Peer::of(&conn).unwrap();
        assert_eq!(peer.process().uid, 0);
        peer.still_same().unwrap();
        use std::io::{BufRead as _, Write as _};
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "done");
        assert!(matches!(peer.still_same(), Err(PeerError::Changed(_))));
        drop(stdin);
        child.wait().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn groups_are_the_ones_at_connect() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let me = Peer::of(&a).unwrap();
        let mut want: Vec<u32> = rustix::process::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        let mut got = me.process().groups.as_deref().unwrap().to_vec();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn reads_effective_uid() {
        assert_eq!(
            effective_uid(std::process::id() as i32),
            Some(rustix::process::geteuid().as_raw())
        );
    }
}
