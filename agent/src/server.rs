//! The Unix socket listener: each accepted connection is pinned to its peer
//! process before gRPC sees a byte of it.

use std::collections::HashMap;
use std::future::Future as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::server::Connected;

use crate::authority_fix::Rewriter;
use crate::peer::Peer;

/// A connection and its pinned peer; tonic puts the peer in every request's extensions.
#[derive(Debug)]
pub struct PeerStream {
    io: UnixStream,
    peer: Arc<Peer>,
    fix: Rewriter,
    eof: bool,
    /// Until the client's first byte: a connection that never speaks is closed
    /// when this fires, so idle sockets cannot pile up.
    first_byte: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Held for the connection's life; dropping it frees the slot.
    slot: Slot,
}

impl Connected for PeerStream {
    type ConnectInfo = Arc<Peer>;
    fn connect_info(&self) -> Arc<Peer> {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        loop {
            if me.fix.has_output() {
                let n = me.fix.drain_into(buf.initialize_unfilled());
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            if me.eof {
                return Poll::Ready(Ok(()));
            }
            // Everything from the client passes through the `:authority` rewriter.
            let mut tmp = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut me.io).poll_read(cx, &mut rb) {
                Poll::Pending => {
                    if let Some(t) = me.first_byte.as_mut() {
                        if t.as_mut().poll(cx).is_ready() {
                            me.slot.limits.idle_closed.fetch_add(1, Ordering::Relaxed);
                            return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    me.fix.finish();
                    me.eof = true;
                }
                Poll::Ready(Ok(())) => {
                    me.first_byte = None;
                    me.fix.feed(rb.filled());
                }
            }
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Binds the socket: parent directory created, a stale socket replaced (never a
/// regular file), mode 0777 because access is decided by attestation.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    bind_with_mode(path, 0o777)
}

/// [`bind`] with another socket mode (the issuer's admin socket is 0660).
pub fn bind_with_mode(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt as _;
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// How many Workload API connections the agent holds at once, and how long a
/// connection may stay silent. One local process cannot exhaust the agent's file
/// descriptors or memory for everyone else: it runs into its own per-process cap
/// long before the global one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once, all callers together.
    pub max_total: usize,
    /// Connections open at once from one process (by peer pid).
    pub max_per_process: usize,
    /// Connections open at once from one uid: an unprivileged user cannot
    /// starve others by spreading connections over many processes.
    pub max_per_uid: usize,
    /// A connection that has sent nothing for this long after accept is closed.
    pub first_byte_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_total: 4096,
            max_per_process: 64,
            max_per_uid: 1024,
            first_byte_timeout: Duration::from_secs(10),
        }
    }
}

/// The live connection counts behind [`ConnLimits`], shared with `/metrics`.
#[derive(Debug, Default)]
pub struct Admission {
    limits: ConnLimits,
    /// Open connections by peer pid and by peer uid.
    per_peer: Mutex<(HashMap<i32, usize>, HashMap<u32, usize>)>,
    open: AtomicU64,
    refused: AtomicU64,
    idle_closed: AtomicU64,
}

impl Admission {
    /// Admission control with these limits.
    pub fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            ..Self::default()
        })
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed at accept because a limit was reached.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed because they sent nothing in time.
    pub fn idle_closed(&self) -> u64 {
        self.idle_closed.load(Ordering::Relaxed)
    }

    /// A slot for one more connection from `pid` running as `uid`, or `None`
    /// over a limit.
    fn admit(self: &Arc<Self>, pid: i32, uid: u32) -> Option<Slot> {
        let Ok(mut maps) = self.per_peer.lock() else {
            return None;
        };
        let total: usize = usize::try_from(self.open()).unwrap_or(usize::MAX);
        let by_pid = maps.0.get(&pid).copied().unwrap_or(0);
        let by_uid = maps.1.get(&uid).copied().unwrap_or(0);
        if total >= self.limits.max_total
            || by_pid >= self.limits.max_per_process
            || by_uid >= self.limits.max_per_uid
        {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        maps.0.insert(pid, by_pid + 1);
        maps.1.insert(uid, by_uid + 1);
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            limits: self.clone(),
            pid,
            uid,
        })
    }
}

/// One admitted connection's place in the counts.
#[derive(Debug)]
struct Slot {
    limits: Arc<Admission>,
    pid: i32,
    uid: u32,
}

/// Takes one from `key`'s count, forgetting keys that reach zero.
fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut maps) = self.limits.per_peer.lock() {
            release(&mut maps.0, &self.pid);
            release(&mut maps.1, &self.uid);
        }
        self.limits.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepted, pinned connections. A connection over a limit, or whose peer cannot
/// be pinned, is closed at once; accept errors (EMFILE, …) back off instead of
/// spinning.
pub fn incoming(
    listener: UnixListener,
    admission: Arc<Admission>,
) -> impl futures_util::Stream<Item = std::io::Result<PeerStream>> {
    futures_util::stream::unfold((listener, admission), |(l, adm)| async move {
        loop {
            match l.accept().await {
                Ok((io, _)) => {
                    // The cheap pid lookup first: a refused connection never costs a pidfd.
                    let Some((pid, uid)) =
                        io.peer_cred().ok().and_then(|c| Some((c.pid()?, c.uid())))
                    else {
                        tracing::debug!("closing a connection without a visible peer pid");
                        continue;
                    };
                    let Some(slot) = adm.admit(pid, uid) else {
                        tracing::debug!(pid, "connection refused: over the connection limit");
                        continue;
                    };
                    match Peer::of(&io) {
                        Ok(peer) => {
                            let first_byte =
                                Some(Box::pin(tokio::time::sleep(adm.limits.first_byte_timeout)));
                            return Some((
                                Ok(PeerStream {
                                    io,
                                    peer,
                                    fix: Rewriter::default(),
                                    eof: false,
                                    first_byte,
                                    slot,
                                }),
                                (l, adm),
                            ));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "closing a connection whose peer cannot be pinned")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// tonic answers a request over `max_decoding_message_size` with `OutOfRange`;
/// a size cap is a limit, which gRPC (and the contract) answer with
/// `ResourceExhausted`. lanyard's handlers never return `OutOfRange` themselves,
/// so every such status is the decoder's.
pub fn oversize_is_resource_exhausted<B>(
    mut resp: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    let h = resp.headers_mut();
    if h.get("grpc-status").is_some_and(|v| v == "11") {
        h.insert(
            "grpc-status",
            tonic::codegen::http::HeaderValue::from_static("8"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_process_cannot_take_every_slot() {
        let adm = Admission::new(ConnLimits {
            max_total: 5,
            max_per_process: 2,
            max_per_uid: 3,
            first_byte_timeout: Duration::from_secs(1),
        });
        let a1 = adm.admit(100, 7).unwrap();
        let _a2 = adm.admit(100, 7).unwrap();
        assert!(adm.admit(100, 7).is_none(), "third from one pid");
        let _a3 = adm.admit(101, 7).unwrap();
        assert!(adm.admit(102, 7).is_none(), "fourth from one uid");
        let _c = adm.admit(300, 8).unwrap();
        let _d = adm.admit(301, 9).unwrap();
        assert!(adm.admit(400, 10).is_none(), "over the total");
        assert_eq!((adm.open(), adm.refused()), (5, 3));
        drop(a1);
        assert_eq!(adm.open(), 4);
        assert!(
            adm.admit(100, 7).is_some(),
            "a closed connection frees its slot"
        );
        let maps = adm.per_peer.lock().unwrap();
        assert_eq!(
            (maps.0.len(), maps.1.len()),
            (4, 3),
            "counts are forgotten at zero"
        );
    }
}
