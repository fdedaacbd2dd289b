//! A bounded HTTP/1 server for `/healthz`, `/readyz` and `/metrics` on a
//! localhost address; each daemon passes its own [`Handler`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use tokio::sync::watch;

/// Answers one health path: `(status, body)`.
pub type Handler = Arc<dyn Fn(&str) -> (StatusCode, String) + Send + Sync>;

/// Health connections served at once; more are closed at accept. Probes and a
/// Prometheus scraper need a handful.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request headers.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest a health connection stays open, whatever it does.
pub const CONNECTION_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves `handler` over HTTP/1 until `shutdown` turns true.
///
/// The endpoint is often reachable by every local user, so it is bounded like
/// the Workload API: at most [`MAX_CONNECTIONS`] at once, request headers
/// within [`HEADER_TIMEOUT`], every connection closed after
/// [`CONNECTION_DEADLINE`], and accept errors (`EMFILE` when the process is out
/// of descriptors) back off up to a second instead of spinning. When every slot
/// is taken, the oldest connection that has not sent a request yet is closed to
/// make room: idle connections cannot lock a prober out.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    handler: Handler,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut live: std::collections::VecDeque<(Arc<AtomicBool>, tokio::task::AbortHandle)> =
        std::collections::VecDeque::new();
    let mut backoff = std::time::Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = std::time::Duration::from_millis(10);
                stream
            }
            Err(e) => {
                tracing::warn!(error = %e, "health endpoint: accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                continue;
            }
        };
        live.retain(|(_, task)| !task.is_finished());
        if live.len() >= MAX_CONNECTIONS {
            match live
                .iter()
                .position(|(asked, _)| !asked.load(Ordering::Relaxed))
            {
                Some(i) => {
                    if let Some((_, task)) = live.remove(i) {
                        task.abort();
                    }
                }
                // Every slot is answering a request: the newcomer waits for none.
                None => continue,
            }
        }
        let asked = Arc::new(AtomicBool::new(false));
        let handler = handler.clone();
        let flag = asked.clone();
        let task = tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                flag.store(true, Ordering::Relaxed);
                let path = req.uri().path();
                let (code, body) = handler(path);
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                *resp.status_mut() = code;
                let kind = if path == "/metrics" && code == StatusCode::OK {
                    crate::metrics::CONTENT_TYPE
                } else {
                    "text/plain; charset=utf-8"
                };
                resp.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(kind),
                );
                std::future::ready(Ok::<_, std::convert::Infallible>(resp))
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                // One request per connection: an answered connection cannot
                // sit idle in a slot the eviction above no longer frees.
                .keep_alive(false)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(io, svc);
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, conn).await;
        });
        live.push_back((asked, task.abort_handle()));
    }
}
