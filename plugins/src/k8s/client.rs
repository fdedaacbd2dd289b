//! The minimal blocking HTTPS client that fetches the kubelet's `GET /pods`:
//! connecting, TLS trust, and reading a raw HTTP/1.0 answer. Kept apart from the
//! attestor, which only decides what the pod list means.

use std::io::Read as _;
use std::net::{TcpStream, ToSocketAddrs as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::{K8sError, FETCH_DEADLINE};

/// Largest `/pods` body read. A node's pod list is well under a MiB even at the
/// default 110 pods; the cap only stops a runaway answer from exhausting memory.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Room for the status line and headers on top of [`MAX_BODY`].
const MAX_HEAD: usize = 64 * 1024;
/// Connect, read and write timeout of each socket operation.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads the CA bundle at `path` into a root store.
pub(super) fn load_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, K8sError> {
    let err = |reason: String| K8sError::Ca {
        path: path.display().to_string(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))? {
        let cert = cert.map_err(|e| err(e.to_string()))?;
        roots.add(cert).map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no CERTIFICATE in the file".into()));
    }
    Ok(roots)
}

/// Connects to the first address of `host:port` that answers within the timeout.
pub(super) fn connect(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
            Ok(s) => {
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the host resolved to no address")))
}

/// Reads the whole response (HTTP/1.0: the kubelet closes after it), up to
/// [`MAX_BODY`] plus headers and within `deadline`.
pub(super) fn read_response(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    deadline: Instant,
) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no complete answer within {FETCH_DEADLINE:?}"),
            ));
        }
        match tls.read(&mut buf) {
            Ok(0) => return Ok(raw),
            Ok(n) => {
                raw.extend_from_slice(buf.get(..n).unwrap_or_default());
                if raw.len() > MAX_BODY + MAX_HEAD {
                    return Err(std::io::Error::other(format!(
                        "answer larger than {} MiB",
                        MAX_BODY >> 20
                    )));
                }
            }
            // The peer closed without close_notify. Safe only if the headers
            // said how long the body is and all of it arrived: otherwise a
            // truncated list would look like a list without the container.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return if complete_by_length(&raw) {
                    Ok(raw)
                } else {
                    Err(e)
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Position of the blank line ending the headers.
fn head_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n")
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())
            .flatten()
    })
}

fn complete_by_length(raw: &[u8]) -> bool {
    let Some(end) = head_end(raw) else {
        return false;
    };
    let head = String::from_utf8_lossy(raw.get(..end).unwrap_or_default());
    content_length(&head) == Some(raw.len() - end - 4)
}

/// The status code and body of a raw HTTP/1.x response.
pub(super) fn split_response(raw: &[u8]) -> Result<(u16, &[u8]), K8sError> {
    let end = head_end(raw).ok_or_else(|| K8sError::Protocol("no end of headers".into()))?;
    let head = String::from_utf8_lossy(raw.get(..end).unwrap_or_default());
    let body = raw.get(end + 4..).unwrap_or_default();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| K8sError::Protocol("no status line".into()))?;
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    });
    if chunked {
        // Not expected for an HTTP/1.0 request; refusing beats misreading.
        return Err(K8sError::Protocol("chunked answer to HTTP/1.0".into()));
    }
    if let Some(len) = content_length(&head) {
        if len != body.len() {
            return Err(K8sError::Protocol(format!(
                "body is {} bytes, Content-Length says {len}",
                body.len()
            )));
        }
    }
    if body.len() > MAX_BODY {
        return Err(K8sError::Protocol(format!(
            "body larger than {} MiB",
            MAX_BODY >> 20
        )));
    }
    Ok((code, body))
}

/// The verifier behind `insecure_skip_verify`: any certificate is accepted, but
/// handshake signatures are still checked so the connection is at least to the
/// holder of *some* key.
#[derive(Debug)]
pub(super) struct NoVerification(pub(super) Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn responses_are_split_and_checked() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(split_response(ok).unwrap(), (200, &b"{}"[..]));
        assert!(complete_by_length(ok));
        assert!(!complete_by_length(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}"
        ));
        assert!(!complete_by_length(b"HTTP/1.1 200 OK\r\n\r\n{}"));
        assert!(matches!(
            split_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}"),
            Err(K8sError::Protocol(_))
        ));
        assert!(matches!(
            split_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}"),
            Err(K8sError::Protocol(_))
        ));
        assert!(matches!(
            split_response(b"garbage"),
            Err(K8sError::Protocol(_))
        ));
    }
}
