//! The issuer's listener: accepting TCP connections and running their TLS
//! handshakes within per-address and global limits. Server side only: the TLS
//! configurations, the org-key verifier and the agents' channel stay in the parent.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long an accepted connection may take to finish its handshake. TLS 1.3
/// needs one round trip; a client that stalls longer is holding a slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Handshakes in progress at once from one address (an IPv4 address or an
/// IPv6 /64): a thousand stalled handshakes from one place hold this many
/// slots, not all of [`MAX_HANDSHAKES`], so others keep connecting.
const MAX_HANDSHAKES_PER_ADDRESS: usize = 32;
/// Handshakes in progress at once: beyond this, new clients wait in the listen
/// backlog, so a flood of silent connections cannot exhaust memory.
const MAX_HANDSHAKES: usize = 1024;
/// Handshaken connections waiting for the gRPC server to pick them up.
const READY_QUEUE: usize = 64;

/// The per-address key of a handshake: an IPv4 address, or an IPv6 /64 (one
/// host usually holds a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IpKey {
    V4(std::net::Ipv4Addr),
    V6([u16; 4]),
}

impl From<std::net::IpAddr> for IpKey {
    fn from(ip: std::net::IpAddr) -> Self {
        match ip {
            std::net::IpAddr::V4(v4) => Self::V4(v4),
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4),
                None => {
                    let s = v6.segments();
                    Self::V6([s[0], s[1], s[2], s[3]])
                }
            },
        }
    }
}

/// One handshake's place in its address's count; released on drop.
struct AddressSlot {
    counts: Arc<std::sync::Mutex<HashMap<IpKey, usize>>>,
    key: IpKey,
}

impl AddressSlot {
    fn take(
        counts: &Arc<std::sync::Mutex<HashMap<IpKey, usize>>>,
        ip: std::net::IpAddr,
    ) -> Option<Self> {
        let key = IpKey::from(ip);
        let mut map = counts.lock().ok()?;
        let n = map.entry(key).or_insert(0);
        if *n >= MAX_HANDSHAKES_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(Self {
            counts: counts.clone(),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.counts.lock() {
            if let Some(n) = map.get_mut(&self.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&self.key);
                }
            }
        }
    }
}

/// A handshaken TLS connection from an agent, ready for tonic.
#[derive(Debug)]
pub struct TlsConn {
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    info: TcpConnectInfo,
}

impl TlsConn {
    /// The agent's address.
    pub fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        self.info.remote_addr
    }
}

impl Connected for TlsConn {
    // tonic's own TCP info, so `Request::remote_addr()` works in handlers.
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}

/// TLS connections accepted on `listener`, for `Server::serve_with_incoming`.
///
/// Each handshake runs in its own task with a 10 s limit, so a client that connects
/// and sends nothing delays nobody else. A failed or timed-out handshake is logged
/// at debug and dropped: it is the client's problem, and an error item would stop
/// the server. At most 1024 handshakes are in progress at once. The accept loop is a
/// spawned task (so call this inside a tokio runtime); it ends, closing the
/// listener, when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> impl futures_util::Stream<Item = Result<TlsConn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(READY_QUEUE);
    tokio::spawn(accept_loop(
        listener,
        tokio_rustls::TlsAcceptor::from(config),
        tx,
    ));
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|conn| (Ok(conn), rx))
    })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    tx: mpsc::Sender<TlsConn>,
) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let per_address = Arc::new(std::sync::Mutex::new(HashMap::<IpKey, usize>::new()));
    loop {
        // Taking a permit before accepting leaves excess clients in the kernel's
        // backlog rather than in our memory.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = tx.closed() => return,
        };
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = tx.closed() => return,
        };
        let Some(address_slot) = AddressSlot::take(&per_address, remote.ip()) else {
            tracing::debug!(%remote, "too many handshakes in progress from this address");
            continue;
        };
        // gRPC messages are small and latency-bound.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%remote, error = %e, "TCP_NODELAY");
        }
        let info = TcpConnectInfo {
            local_addr: tcp.local_addr().ok(),
            remote_addr: Some(remote),
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop(permit);
            drop(address_slot);
            match handshake {
                Ok(Ok(tls)) => {
                    // Fails only when the server has stopped; the connection just closes.
                    let _ = tx.send(TlsConn { tls, info }).await;
                }
                Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
            }
        });
    }
}
