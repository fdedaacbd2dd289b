//! The agent process: restart after kill -9, config and bind errors, health, SIGTERM drain.

use std::os::unix::fs::PermissionsExt as _;

use lanyard_agent::client::{connect, with_header};
use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_tests::{lanyard, my_uid, rt, Deployment};

use super::entries;

#[test]
fn restart_after_kill9_serves_the_persisted_credential() {
    let d = Deployment::new("restart", &entries(my_uid()));
    let fetch = |dir: &str| {
        let out_dir = d.dir.join(dir);
        let out = lanyard(&[
            "fetch",
            "--socket",
            d.socket().to_str().unwrap(),
            "--out-dir",
            out_dir.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read = |f: &str| std::fs::read_to_string(out_dir.join(f)).unwrap();
        (
            read("credential.jwt"),
            read("credential.seed"),
            read("svid.pem"),
        )
    };
    let agent = d.start();
    let first = fetch("a");
    // The cache is written within the debounce (200 ms) of a change.
    let cache = d.dir.join("data/cache.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&cache)
        .is_ok_and(|s| s.contains(first.0.trim()) && s.contains("x509_svid"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "cache never persisted"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o600
    );
    agent.kill9();
    let agent = d.start();
    let second = fetch("b");
    assert_eq!(
        first, second,
        "restarted agent minted anew instead of serving its persisted cache"
    );
    // SIGTERM drains and exits cleanly.
    assert!(agent.terminate().success());
}

#[test]
fn bad_config_exits_64_naming_the_key() {
    let d = Deployment::new("badconf", "[[entries]]\nsubject = \"spiffe://example.org/x\"\nselectors = [\"unix:uid:0\"]\nttl = \"forever\"\n");
    let out = lanyard(&[
        "agent",
        "--config",
        d.dir.join("agent.toml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("entries[0].ttl") && err.contains("forever"),
        "{err}"
    );
}

#[test]
fn bind_and_permission_errors_exit_64_naming_the_key_and_the_os_error_once() {
    let d = Deployment::new("badbind", &entries(my_uid()));
    let config = d.dir.join("agent.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    // A regular file where the socket's directory should be.
    std::fs::write(d.dir.join("blocker"), "").unwrap();
    let blocked = text.replace(
        "socket_path = \"run/agent.sock\"",
        "socket_path = \"blocker/agent.sock\"",
    );
    assert_ne!(blocked, text);
    std::fs::write(&config, &blocked).unwrap();
    let out = lanyard(&["agent", "--config", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("config key socket_path"), "{err}");
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    // A health address another process holds.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    std::fs::write(
        &config,
        text.replace(
            "health_addr = \"off\"",
            &format!("health_addr = \"{addr}\""),
        ),
    )
    .unwrap();
    let out = lanyard(&["agent", "--config", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains(&format!("config key health_addr {addr}")),
        "{err}"
    );
    assert_eq!(err.matches("os error").count(), 1, "{err}");
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, out)
}

#[test]
fn health_readiness_and_metrics() {
    let d = Deployment::new("health", &entries(my_uid()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let conf = std::fs::read_to_string(d.dir.join("agent.toml"))
        .unwrap()
        .replace(
            "health_addr = \"off\"",
            &format!("health_addr = \"{addr}\""),
        );
    std::fs::write(d.dir.join("agent.toml"), conf).unwrap();
    let _agent = d.start();
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    // The socket accepts (kernel backlog) from the moment it is bound; readiness
    // follows once everything is started. It must get there promptly.
    lanyard_tests::wait_for(10, "/readyz 200", || {
        (http_get(&addr, "/readyz").0 == 200).then_some(())
    });
    let out = lanyard(&[
        "fetch",
        "--socket",
        d.socket().to_str().unwrap(),
        "--out-dir",
        d.dir.join("c").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let (code, metrics) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("lanyard_requests_total{rpc=\"FetchCredentials\",code=\"OK\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lanyard_attestation_seconds_count"),
        "{metrics}"
    );
    assert!(metrics.contains("lanyard_cache_entries 2"), "{metrics}");
    assert!(
        metrics.contains("lanyard_credential_expiry_seconds"),
        "{metrics}"
    );
}

#[test]
fn sigterm_ends_open_streams_and_exits_within_the_drain_deadline() {
    use lanyard_proto::spiffe::X509svidRequest;
    let d = Deployment::new("drain", &entries(my_uid()));
    let agent = d.start();
    rt().block_on(async {
        let mut c = SpiffeWorkloadApiClient::new(connect(&d.socket()).await.unwrap());
        let mut stream = c
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stream.message().await.unwrap().unwrap().svids.len(), 1);
        // The stream is open and idle; SIGTERM must still finish within drain_timeout (5 s).
        let start = std::time::Instant::now();
        let status = tokio::task::spawn_blocking(move || agent.terminate())
            .await
            .unwrap();
        assert!(status.success(), "{status}");
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "drain took {:?}",
            start.elapsed()
        );
        // The client sees its stream end, not hang.
        let end = tokio::time::timeout(std::time::Duration::from_secs(2), stream.message()).await;
        assert!(
            matches!(end, Ok(Ok(None)) | Ok(Err(_))),
            "stream still open after shutdown: {end:?}"
        );
    });
    assert!(!d.socket().exists(), "socket left behind");
}
