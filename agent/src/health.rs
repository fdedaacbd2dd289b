//! `/healthz`, `/readyz` and `/metrics` over plain HTTP/1 on a localhost address.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use tokio::sync::watch;

use crate::api::{now, Ctx};

/// Answers one health path: `(status, body)`.
pub type Handler = Arc<dyn Fn(&str) -> (StatusCode, String) + Send + Sync>;

/// The agent's answers.
fn agent_handler(ctx: Arc<Ctx>, ready: watch::Receiver<bool>) -> Handler {
    Arc::new(move |path: &str| match path {
        "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
        "/readyz" => {
            let authority_ok = ctx.authority.expires_at() > now();
            // A write to data_dir failing (a full disk): requests are still
            // served from memory, but what a restart needs is not on disk.
            if let Some(why) = ctx.cache.persist_failure() {
                let link = ctx
                    .authority
                    .link_state()
                    .map(|(_, line)| format!("{line}\n"))
                    .unwrap_or_default();
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: cannot persist to data_dir ({why}); serving from memory\n{link}"),
                );
            }
            if let Some((serving, line)) = ctx.authority.link_state() {
                return if *ready.borrow() && serving {
                    (StatusCode::OK, format!("ready\n{line}\n"))
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready\n{line}\n"),
                    )
                };
            }
            if *ready.borrow() && authority_ok {
                (StatusCode::OK, "ready\n".to_owned())
            } else if !authority_ok {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: the chain issuer credential has expired\n".to_owned(),
                )
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned())
            }
        }
        "/metrics" => {
            let ttl = ctx
                .cache
                .soonest_expiry()
                .map(|e| i64::try_from(e).unwrap_or(i64::MAX) - i64::try_from(now()).unwrap_or(0));
            (StatusCode::OK, ctx.metrics.render(ctx.cache.len(), ttl))
        }
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    })
}

/// Serves the agent's health endpoints until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<Ctx>,
    ready: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) {
    serve_with(listener, agent_handler(ctx, ready), shutdown).await;
}

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
