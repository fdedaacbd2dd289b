//! The one place with `unsafe`: `getsockopt(SO_PEERPIDFD)`, which neither std,
//! tokio nor rustix wraps yet. Everything else uses safe rustix calls.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::event::{poll, PollFd, PollFlags, Timespec};

/// `SO_PEERPIDFD` (Linux 6.5+; the same value on x86_64 and aarch64).
const SO_PEERPIDFD: libc::c_int = 77;

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
    // SAFETY: NS_GET_PARENT takes no argument and returns a new fd or -1.
    let fd = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_PARENT) };
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
