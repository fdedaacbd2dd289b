//! The agent's answers on `/healthz`, `/readyz` and `/metrics`, served by the
//! runtime's bounded health server.

use std::sync::Arc;

use hyper::StatusCode;
use lanyard_runtime::health::{serve_with, Handler};
use tokio::sync::watch;

use crate::socket::api::{now, Ctx};

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
