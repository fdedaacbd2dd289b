//! The one place with `unsafe`: the socket options and ioctls that neither std,
//! tokio nor rustix wraps yet (`SO_PEERPIDFD`, `SO_PEERGROUPS`, the namespace
//! ioctls). Everything else uses safe rustix calls.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::event::{poll, PollFd, PollFlags, Timespec};

/// `SO_PEERPIDFD` (Linux 6.5+; the same value on x86_64 and aarch64).
const SO_PEERPIDFD: libc::c_int = 77;
/// `SO_PEERGROUPS` (Linux 4.13+; the same value on x86_64 and aarch64).
const SO_PEERGROUPS: libc::c_int = 59;

/// A pidfd for the process that connected `sock`, taken atomically with the
/// connection by the kernel.
pub fn peer_pidfd(sock: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` and `len` are valid for writes of the sizes given; the kernel
    // writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&raw mut fd).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if fd < 0 {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidData));
    }
    // SAFETY: on success the kernel returned a new file descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the pidfd's process has exited (the pidfd polls readable).
pub fn pidfd_exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&zero)) {
        Ok(0) => false,
        // Readable, hung up or in error: treat all as gone (fail closed).
        Ok(_) | Err(_) => true,
    }
}

/// `NS_GET_PARENT` (`_IO(0xb7, 0x2)`): the parent of a user namespace.
const NS_GET_PARENT: libc::c_ulong = 0xb702;
/// `NS_GET_OWNER_UID` (`_IO(0xb7, 0x4)`): the uid that created a user namespace.
const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;

/// The parent of the user namespace `ns`, or `None` at the top of what this
/// process may see (the kernel answers `EPERM` for a parent outside our own
/// user namespace).
pub fn userns_parent(ns: BorrowedFd<'_>) -> Option<OwnedFd> {
    // SAFETY: NS_GET_PARENT reads no memory (the argument is 0) and returns a
    // new fd or -1.
    let fd = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_PARENT, 0 as libc::c_ulong) };
    // SAFETY: on success the kernel returned a new file descriptor that we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The uid (as this process sees it) that created the user namespace `ns`.
pub fn userns_owner(ns: BorrowedFd<'_>) -> Option<u32> {
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t to the pointer given.
    let rc = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_OWNER_UID, &raw mut uid) };
    (rc == 0).then_some(uid)
}

/// The supplementary groups of the process that connected `sock`, as the kernel
/// recorded them at `connect` together with `SO_PEERCRED`'s uid and gid.
pub fn peer_groups(sock: BorrowedFd<'_>) -> std::io::Result<Vec<u32>> {
    // Most processes have a handful of groups; the kernel says how many more
    // room it needs (ERANGE) when they do not fit.
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut len = std::mem::size_of_val(groups.as_slice()) as libc::socklen_t;
        // SAFETY: `groups` is valid for writes of `len` bytes, and `len` for one
        // socklen_t; the kernel writes at most `len` bytes and sets `len`.
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n.min(groups.len()));
            return Ok(groups);
        }
        let err = std::io::Error::last_os_error();
        // NGROUPS_MAX is 65536: anything more is not an answer to trust.
        if err.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65_536 {
            groups.resize(n, 0);
            continue;
        }
        return Err(err);
    }
}

/// `PIDFD_GET_USER_NAMESPACE` (`_IO(0xFF, 9)`, Linux 6.11+): the user
/// namespace of a pidfd's process, without walking `/proc/PID/ns/user`.
const PIDFD_GET_USER_NAMESPACE: libc::c_ulong = 0xff09;

/// The user namespace of `pidfd`'s process, or the error (`ENOTTY`/`EINVAL` on
/// kernels before 6.11, `EACCES` where the agent may not inspect the process).
pub fn pidfd_user_namespace(pidfd: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    // The argument must be 0: the kernel refuses any other with EINVAL, and a
    // variadic call without one passes whatever the register holds.
    // SAFETY: PIDFD_GET_USER_NAMESPACE reads no memory and returns a new fd or -1.
    let fd = unsafe {
        libc::ioctl(
            pidfd.as_raw_fd(),
            PIDFD_GET_USER_NAMESPACE,
            0 as libc::c_ulong,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: on success the kernel returned a new file descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct pidfd_info` as of Linux 6.13 (64 bytes, `PIDFD_INFO_SIZE_VER0`);
/// later kernels append fields and answer a shorter struct with what fits.
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
}

/// `PIDFD_GET_INFO` (`_IOWR(0xFF, 11, struct pidfd_info)`, Linux 6.13+).
const PIDFD_GET_INFO: libc::c_ulong = 0xc000_0000 | (64 << 16) | 0xff00 | 11;
/// `PIDFD_INFO_CREDS`: the uids and gids are filled in.
const PIDFD_INFO_CREDS: u64 = 1 << 1;

/// The effective uid (as this process sees it) of `pidfd`'s process, asked of
/// the pidfd instead of `stat`ing `/proc/PID`; `None` on kernels before 6.13
/// or once the process is gone.
pub fn pidfd_euid(pidfd: BorrowedFd<'_>) -> Option<u32> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_CREDS,
        ..PidfdInfo::default()
    };
    // SAFETY: `info` is a `struct pidfd_info` of the size encoded in the
    // request; the kernel writes at most that many bytes.
    let rc = unsafe { libc::ioctl(pidfd.as_raw_fd(), PIDFD_GET_INFO, &raw mut info) };
    (rc == 0 && info.mask & PIDFD_INFO_CREDS != 0).then_some(info.euid)
}
