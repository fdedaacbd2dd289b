//! The Unix socket listener: each accepted connection is pinned to its peer
//! process before gRPC sees a byte of it.

use std::future::Future as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::server::Connected;

use crate::admission::{Admission, Slot};
use crate::authority_fix::Rewriter;
use crate::peer::Peer;

pub use crate::admission::ConnLimits;

/// A connection and its pinned peer; tonic puts the peer in every request's extensions.
#[derive(Debug)]
pub struct PeerStream {
    io: UnixStream,
    peer: Arc<Peer>,
    fix: Rewriter,
    eof: bool,
    /// Until the first whole request: a connection that completes no request
    /// in time is closed when this fires, so connections that send one byte,
    /// or an HTTP/2 preface and nothing more, cannot hold slots.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
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
                    if me.peer.active() {
                        me.idle = None;
                    }
                    if let Some(t) = me.idle.as_mut() {
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
                Poll::Ready(Ok(())) => me.fix.feed(rb.filled()),
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
                    let caller = match crate::peer::Accepted::of(&io) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::debug!(error = %e, "closing a connection whose peer cannot be pinned");
                            continue;
                        }
                    };
                    let (pid, principal) = (caller.pid(), caller.principal());
                    let Some(slot) = adm.admit(pid, principal) else {
                        tracing::debug!(
                            pid,
                            principal,
                            "connection refused: over the connection limit"
                        );
                        continue;
                    };
                    match caller.pin(&io) {
                        Ok(peer) => {
                            let idle = Some(Box::pin(tokio::time::sleep(adm.limits.idle_timeout)));
                            return Some((
                                Ok(PeerStream {
                                    io,
                                    peer,
                                    fix: Rewriter::default(),
                                    eof: false,
                                    idle,
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
