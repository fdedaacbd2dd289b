//! Shutdown for both daemons: wait for SIGTERM or SIGINT, then trigger (stop
//! accepting, end streams) and drain with a deadline.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Returns at SIGTERM or SIGINT (daemons then drain).
pub async fn termination_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        r = tokio::signal::ctrl_c() => { r?; tracing::info!("interrupt: draining"); }
    }
    Ok(())
}

/// Triggers shutdown, then waits for `servers` until `deadline` has passed
/// (a server still running then is dropped, which closes its connections),
/// then gives each background task a second.
pub async fn drain(
    shutdown: &watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    deadline: Duration,
) {
    let _ = shutdown.send(true);
    let until = tokio::time::Instant::now() + deadline;
    for s in servers {
        if tokio::time::timeout_at(until, s).await.is_err() {
            tracing::warn!(
                ?deadline,
                "drain deadline passed; closing remaining connections"
            );
        }
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
    }
}
