//! The attestors' one HTTP client: hyper's, for dockerd over its Unix socket
//! and the kubelet over TLS. hyper reads the status line, the headers, a
//! `Content-Length` or chunked body, and treats a body cut short as an error
//! (a truncated pod list must never read as a list without the caller's pod).
//! Replaces two hand-written HTTP/1.0 readers of different strictness.
//!
//! The attestors are synchronous: they run on the agent's blocking pool, and
//! `lanyard attest` has no runtime at all. So each request runs on a
//! current-thread runtime of its own; making one costs tens of microseconds,
//! next to a request to another process that takes milliseconds.

use std::future::Future;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// An answer: the status code and the whole body.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body, at most the limit the request gave.
    pub body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Connecting, or the TLS handshake (with certificate verification).
    #[error("{0}")]
    Connect(std::io::Error),
    /// The request could not be written as HTTP (a header value with a
    /// newline, say), so it was not sent.
    #[error("bad request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The exchange failed, or the answer is not HTTP or was cut short.
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// The body is longer than the request allowed.
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    /// No complete answer in time.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// The runtime for the request could not be made (out of descriptors).
    #[error("cannot start the request's runtime: {0}")]
    Runtime(std::io::Error),
}

/// `GET path` on the connection `connect` makes, with `headers`, reading at
/// most `max_body` bytes, all within `deadline`.
pub fn get<IO, C>(
    connect: impl FnOnce() -> C,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    max_body: usize,
    deadline: Duration,
) -> Result<Response, HttpError>
where
    C: Future<Output = std::io::Result<IO>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(HttpError::Runtime)?;
    let mut request = hyper::Request::get(path).header(hyper::header::HOST, host);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Empty::<Bytes>::new())?;
    let answer = rt.block_on(async move {
        let exchange = async move {
            let io = connect().await.map_err(HttpError::Connect)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
            // The connection is driven beside the request; dropping it at the
            // end closes the socket.
            let conn = tokio::spawn(conn);
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), max_body)
                .collect()
                .await
                .map_err(|e| match e.downcast::<hyper::Error>() {
                    Ok(e) => HttpError::Http(*e),
                    Err(_) => HttpError::TooLarge(max_body),
                })?
                .to_bytes();
            conn.abort();
            Ok(Response { status, body })
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| HttpError::Timeout(deadline))?
    });
    // A name lookup (getaddrinfo on the runtime's blocking pool) can outlive
    // the deadline; dropping the runtime would wait for it. Leave it behind.
    rt.shutdown_background();
    answer
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::{Read as _, Write as _};

    use super::*;

    /// A one-shot server on a Unix socket that answers `reply` (raw bytes).
    fn serve(reply: &'static [u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let mut c = c.unwrap();
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let _ = c.write_all(reply);
            }
        });
        (dir, sock)
    }

    fn ask(sock: &std::path::Path, max: usize) -> Result<Response, HttpError> {
        let sock = sock.to_owned();
        get(
            move || tokio::net::UnixStream::connect(sock),
            "test",
            "/x",
            &[],
            max,
            Duration::from_secs(2),
        )
    }

    #[test]
    fn lengths_and_chunks_are_read_and_a_short_body_is_an_error() {
        let (_d, s) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        let r = ask(&s, 1024).unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
        let (_d, s) = serve(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        let r = ask(&s, 1024).unwrap();
        assert_eq!((r.status, &r.body[..]), (404, &b"abc"[..]));
        // The server closes after 3 of 10 bytes: not a 3-byte answer.
        let (_d, s) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        assert!(matches!(ask(&s, 1024), Err(HttpError::Http(_))));
        // A chunked body without its last chunk, likewise.
        let (_d, s) = serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
        assert!(matches!(ask(&s, 1024), Err(HttpError::Http(_))));
    }

    #[test]
    fn oversized_garbled_and_silent_answers_are_refused() {
        let (_d, s) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert!(matches!(ask(&s, 4), Err(HttpError::TooLarge(4))));
        let (_d, s) = serve(b"not http at all\r\n\r\n");
        assert!(matches!(ask(&s, 1024), Err(HttpError::Http(_))));
        // A header value with a newline is never sent (no header injection).
        let (_d, s) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let sock = s.clone();
        let r = get(
            move || tokio::net::UnixStream::connect(sock),
            "test",
            "/x",
            &[("authorization", "Bearer a\r\nX-Evil: 1")],
            1024,
            Duration::from_secs(2),
        );
        assert!(matches!(r, Err(HttpError::Request(_))), "{r:?}");
        // A server that accepts and never answers: the deadline ends it.
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("silent.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let _keep = std::thread::spawn(move || {
            let held: Vec<_> = l.incoming().take(1).collect();
            std::thread::sleep(Duration::from_secs(3));
            drop(held);
        });
        let r = get(
            move || tokio::net::UnixStream::connect(sock),
            "test",
            "/x",
            &[],
            1024,
            Duration::from_millis(300),
        );
        assert!(matches!(r, Err(HttpError::Timeout(_))), "{r:?}");
    }
}
