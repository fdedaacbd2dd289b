//! `cold_start_to_first_credential_ms`: an upstream-mode agent that has synced an
//! entry and cached a credential once, restarted with its issuer down (the IoT
//! gateway boot case): the time from spawning the agent process to the first
//! successful `FetchJWTSVID` on its socket.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;

/// One FetchJWTSVID on a fresh connection; true on success.
async fn fetch_once(socket: &Path) -> bool {
    let Ok(ch) = lanyard_agent::client::connect(socket).await else {
        return false;
    };
    SpiffeWorkloadApiClient::new(ch)
        .fetch_jwtsvid(crate::probe::request())
        .await
        .is_ok()
}

/// Polls every millisecond until a fetch succeeds; the times since `start` at
/// which the socket first accepted a connection and the first fetch succeeded.
async fn first_credential(
    socket: &Path,
    start: Instant,
    limit: Duration,
) -> Option<(Duration, Duration)> {
    let mut bound = None;
    while start.elapsed() < limit {
        if bound.is_none() && std::os::unix::net::UnixStream::connect(socket).is_ok() {
            bound = Some(start.elapsed());
        }
        if bound.is_some() && fetch_once(socket).await {
            return Some((bound?, start.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// SIGTERM (the agent drains and exits), then reaps.
fn stop(mut child: Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// `starts` agent starts: the medians of spawn → socket bound and spawn → first
/// credential, in milliseconds.
async fn starts_median(socket: &Path, agent_args: &[&str], starts: usize) -> (f64, f64) {
    let (mut bound, mut first) = (Vec::new(), Vec::new());
    for _ in 0..starts {
        let start = Instant::now();
        let agent = crate::spawn_self(agent_args);
        let t = first_credential(socket, start, Duration::from_secs(30)).await;
        stop(agent);
        let (b, f) = t.expect("no credential from the persisted cache with the issuer down");
        bound.push(b.as_secs_f64() * 1e3);
        first.push(f.as_secs_f64() * 1e3);
    }
    (crate::token::median(bound), crate::token::median(first))
}

/// Medians over the cold starts, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct ColdStart {
    /// Spawn to the first successful FetchJWTSVID, default config.
    pub first_credential_ms: f64,
    /// Spawn to the socket accepting connections.
    pub socket_ms: f64,
    /// Spawn to the first FetchJWTSVID with `[plugins.unix] max_hash_bytes`
    /// below the client's size: no `unix:sha256` selector to compute.
    pub first_credential_no_hash_ms: f64,
}

/// `starts` cold starts with the default config, then `starts` without hashing.
pub async fn measure(dir: &Path, uid: u32, starts: usize) -> ColdStart {
    let iss_dir = dir.join("issuer");
    let addr = crate::issuer::setup(&iss_dir);
    let issuer = crate::spawn_self(&["__issuer", iss_dir.to_str().unwrap()]);
    crate::wait_socket(&iss_dir.join("admin.sock"));
    let mut adm = crate::issuer::admin(&iss_dir).await;
    let token = crate::issuer::join_token(&mut adm, "cold").await;
    crate::issuer::entry(&mut adm, "spiffe://example.org/bench/cold", "cold", uid).await;

    let agent_dir = dir.join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let config = format!(
        "trust_domain = \"example.org\"\nsocket_path = \"agent.sock\"\ndata_dir = \"data\"\nhealth_addr = \"off\"\n\
         [upstream]\naddress = \"{addr}\"\norg_public = \"{}\"\njoin_token = \"{token}\"\n",
        iss_dir.join("org.public").display()
    );
    std::fs::write(agent_dir.join("agent.toml"), &config).unwrap();
    let socket = agent_dir.join("agent.sock");
    let agent_args = ["__agent", agent_dir.to_str().unwrap()];

    // First start: attest, sync the entry, cache a JWT-SVID; then stop both.
    let agent = crate::spawn_self(&agent_args);
    let synced = first_credential(&socket, Instant::now(), Duration::from_secs(30)).await;
    assert!(
        synced.is_some(),
        "the upstream agent never served its entry"
    );
    // Let the cache and upstream state reach the disk.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop(agent);
    stop(issuer);

    // Cold starts with the issuer down.
    let (socket_ms, first_credential_ms) = starts_median(&socket, &agent_args, starts).await;
    std::fs::write(
        agent_dir.join("agent.toml"),
        format!("{config}[plugins.unix]\nmax_hash_bytes = 1048576\n"),
    )
    .unwrap();
    let (_, first_credential_no_hash_ms) = starts_median(&socket, &agent_args, starts).await;
    ColdStart {
        first_credential_ms,
        socket_ms,
        first_credential_no_hash_ms,
    }
}
