//! End-to-end: the real `lanyard agent` binary, the real Rust `spiffe` client,
//! openssl for X.509 chain checks, and `setpriv` for another uid.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};

use lanyard_agent::client::{connect, with_header};
use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::spiffe::JwtsvidRequest;
use lanyard_proto::workload::credentials_client::CredentialsClient;
use lanyard_proto::workload::FetchCredentialsRequest;
use lanyard_tests::{lanyard, my_uid, rt, Deployment};
use spiffe::{WorkloadApiClient, X509Svid};

fn entries(uid: u32) -> String {
    format!(
        "[[entries]]\nsubject = \"spiffe://example.org/e2e\"\nselectors = [\"unix:uid:{uid}\"]\nttl = \"1h\"\naudiences = [\"mqtt\"]\n\
         [[entries]]\nsubject = \"spiffe://example.org/nobody\"\nselectors = [\"unix:uid:{uid}\", \"unix:path:/nonexistent\"]\n"
    )
}

fn pem(der: &[u8]) -> String {
    lanyard_agent::pem::encode("CERTIFICATE", der)
}

fn openssl(dir: &std::path::Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write as _;
    let mut c = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin).unwrap();
    c.wait_with_output().unwrap()
}

#[test]
fn rust_spiffe_client_gets_and_validates_svids() {
    let d = Deployment::new("spiffe-rs", &entries(my_uid()));
    let _agent = d.start();
    rt().block_on(async {
        let client = WorkloadApiClient::connect_to(format!("unix:{}", d.socket().display()))
            .await
            .unwrap();

        // JWT-SVID: fetched, validated by the agent, and validated locally by the
        // spiffe crate against the JWT bundle the agent publishes.
        let svid = client.fetch_jwt_svid(["billing"], None).await.unwrap();
        assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/e2e");
        let validated = client
            .validate_jwt_token(["billing"], svid.token())
            .await
            .unwrap();
        assert_eq!(validated.spiffe_id(), svid.spiffe_id());
        assert!(
            client
                .validate_jwt_token(["other"], svid.token())
                .await
                .is_err(),
            "wrong audience accepted"
        );
        let bundles = client.fetch_jwt_bundles().await.unwrap();
        let local =
            spiffe::JwtSvid::parse_and_validate(svid.token(), &bundles, &["billing"]).unwrap();
        assert_eq!(local.spiffe_id(), svid.spiffe_id());
        // The same audience set again is served from the cache.
        let again = client.fetch_jwt_svid(["billing"], None).await.unwrap();
        assert_eq!(again.token(), svid.token());

        // X.509-SVID: one URI SAN, and its chain verifies to the bundle (openssl).
        let x: X509Svid = client.fetch_x509_svid().await.unwrap();
        assert_eq!(x.spiffe_id().to_string(), "spiffe://example.org/e2e");
        let xb = client.fetch_x509_bundles().await.unwrap();
        let td = spiffe::TrustDomain::new("example.org").unwrap();
        let bundle = xb.get(&td).unwrap();
        let roots = bundle.authorities();
        assert!(!roots.is_empty());
        let chain: String = x.cert_chain().iter().map(|c| pem(c.as_ref())).collect();
        let root: String = roots.iter().map(|c| pem(c.as_ref())).collect();
        std::fs::write(d.dir.join("leaf.pem"), pem(x.cert_chain()[0].as_ref())).unwrap();
        std::fs::write(d.dir.join("chain.pem"), chain).unwrap();
        std::fs::write(d.dir.join("root.pem"), &root).unwrap();
        let out = openssl(
            &d.dir.0,
            &[
                "verify",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "chain.pem",
                "-purpose",
                "sslclient",
                "leaf.pem",
            ],
            b"",
        );
        assert!(
            out.status.success(),
            "openssl: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The bundle's root key is the org public key: one anchor.
        let org_public = std::fs::read_to_string(d.dir.join("org/org.public")).unwrap();
        let spki = openssl(
            &d.dir.0,
            &["x509", "-noout", "-pubkey", "-in", "root.pem"],
            b"",
        );
        let der = openssl(
            &d.dir.0,
            &["pkey", "-pubin", "-outform", "DER"],
            &spki.stdout,
        );
        assert!(
            lanyard_token::hex::encode(&der.stdout).ends_with(&org_public),
            "root key is not the org key"
        );
    });
}

#[test]
fn header_audience_and_identity_errors_use_spiffe_codes() {
    let d = Deployment::new("codes", &entries(my_uid()));
    let _agent = d.start();
    rt().block_on(async {
        let ch = connect(&d.socket()).await.unwrap();
        let mut c = SpiffeWorkloadApiClient::new(ch.clone());
        let req = JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        };
        let err = c.fetch_jwtsvid(tonic::Request::new(req)).await.unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "no header: {err:?}"
        );
        let err = c
            .fetch_jwtsvid(with_header(JwtsvidRequest {
                audience: vec![],
                spiffe_id: String::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "empty audience: {err:?}"
        );
        let err = c
            .fetch_jwtsvid(with_header(JwtsvidRequest {
                audience: vec!["a".into()],
                spiffe_id: "spiffe://example.org/nobody".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::PermissionDenied,
            "identity not issued to caller: {err:?}"
        );
        let mut creds = CredentialsClient::new(ch);
        let err = creds
            .fetch_credentials(tonic::Request::new(FetchCredentialsRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    });
}

#[test]
fn seed_and_jwt_verify_against_the_org_key() {
    let d = Deployment::new("seedjwt", &entries(my_uid()));
    let _agent = d.start();
    let out_dir = d.dir.join("creds");
    let out = lanyard(&[
        "fetch",
        "--socket",
        d.socket().to_str().unwrap(),
        "--out-dir",
        out_dir.to_str().unwrap(),
        "--audience",
        "billing",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwt = out_dir.join("credential.jwt");
    let org = d.dir.join("org/org.public");
    let v = lanyard(&[
        "token",
        "verify",
        "--json",
        "--org-public",
        org.to_str().unwrap(),
        "--audience",
        "mqtt",
        jwt.to_str().unwrap(),
    ]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let claims: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(claims["claims"]["sub"], "spiffe://example.org/e2e");
    // The seed the workload got is the key the token names.
    let seed = lanyard_token::KeyPair::from_seed_text(
        &std::fs::read_to_string(out_dir.join("credential.seed")).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["claims"]["public_key"], seed.public().to_hex());
    for f in ["credential.seed", "svid.key", "jwt_svid.billing.token"] {
        assert_eq!(
            std::fs::metadata(out_dir.join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600,
            "{f}"
        );
    }
    // Proof of possession with the delivered seed.
    let nonce = d.dir.join("nonce");
    std::fs::write(&nonce, "e2e-nonce").unwrap();
    let sig = lanyard(&[
        "token",
        "prove",
        "--seed",
        out_dir.join("credential.seed").to_str().unwrap(),
        "--nonce-file",
        nonce.to_str().unwrap(),
    ]);
    let sig = String::from_utf8(sig.stdout).unwrap();
    let ok = lanyard(&[
        "token",
        "check-proof",
        "--token",
        jwt.to_str().unwrap(),
        "--nonce-file",
        nonce.to_str().unwrap(),
        "--signature",
        sig.trim(),
        "--org-public",
        org.to_str().unwrap(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

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

/// The venv `scripts/test-all.sh` creates with the PyPI `spiffe` package.
fn python() -> std::path::PathBuf {
    let p = std::env::var_os("LANYARD_PYTHON").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-venv/bin/python"),
        std::path::PathBuf::from,
    );
    assert!(
        p.exists(),
        "{} missing: scripts/test-all.sh creates the venv with the spiffe package",
        p.display()
    );
    p
}

#[test]
fn python_spiffe_client_over_grpc_c_core() {
    let d = Deployment::new("python", &entries(my_uid()));
    let agent = d.start();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/spiffe_client.py");
    let out = Command::new(python())
        .arg(script)
        .arg(d.socket())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python client failed: {}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["jwt_spiffe_id"], "spiffe://example.org/e2e");
    assert_eq!(v["jwt_audience"], serde_json::json!(["billing"]));
    assert_eq!(v["x509_spiffe_id"], "spiffe://example.org/e2e");
    assert_eq!(v["x509_chain_len"], 2);
    assert_eq!(v["x509_bundle_roots"], 1);
}

#[test]
fn attest_explains_matches_and_misses() {
    let d = Deployment::new("attest", &entries(my_uid()));
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let out = lanyard(&[
        "attest",
        "--pid",
        &sleeper.id().to_string(),
        "--config",
        d.dir.join("agent.toml").to_str().unwrap(),
        "--json",
    ]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sel: Vec<&str> = v["selectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        sel.contains(&format!("unix:uid:{}", my_uid()).as_str()),
        "{sel:?}"
    );
    assert!(
        sel.iter()
            .any(|s| s.starts_with("unix:path:") && s.ends_with("/sleep")),
        "{sel:?}"
    );
    assert!(sel.iter().any(|s| s.starts_with("unix:sha256:")), "{sel:?}");
    assert_eq!(v["entries"][0]["subject"], "spiffe://example.org/e2e");
    assert_eq!(v["entries"][0]["matches"], true);
    assert_eq!(v["entries"][1]["matches"], false);
    assert_eq!(
        v["entries"][1]["missing_selectors"],
        serde_json::json!(["unix:path:/nonexistent"])
    );
}

#[test]
fn dev_runs_a_working_deployment_until_interrupted() {
    let dir = lanyard_tests::TempDir::new("dev");
    let mut dev = Command::new(lanyard_tests::lanyard_bin())
        .args(["dev", "--dir", dir.0.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = dir.join("agent.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "lanyard dev did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // What `lanyard dev` printed, up to its `fetch` line, which must work as
    // printed: run by a shell with no `lanyard` on PATH.
    use std::io::BufRead as _;
    let mut stdout = std::io::BufReader::new(dev.stdout.take().unwrap());
    let mut printed = String::new();
    let fetch_line = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "{printed}");
        printed.push_str(&line);
        if line.contains(" fetch --socket ") {
            break line.trim().to_owned();
        }
    };
    let out = Command::new("sh")
        .args(["-c", &fetch_line])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{fetch_line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = lanyard(&[
        "token",
        "verify",
        "--org-public",
        dir.join("org/org.public").to_str().unwrap(),
        dir.join("creds/credential.jwt").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&v.stdout)
        .contains(&format!("spiffe://example.org/dev/uid/{}", my_uid())));
    Command::new("kill")
        .args(["-INT", &dev.id().to_string()])
        .status()
        .unwrap();
    let status = dev.wait().unwrap();
    assert!(status.success(), "{status}");
    std::io::Read::read_to_string(&mut stdout, &mut printed).unwrap();
    assert!(
        printed.contains("export SPIFFE_ENDPOINT_SOCKET=unix://"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("config:   {}", dir.join("agent.toml").display())),
        "{printed}"
    );
    assert!(!socket.exists(), "socket left behind after shutdown");
}

#[test]
fn sign_public_key_keeps_the_seed_in_the_workload() {
    use lanyard_proto::workload::{GetNonceRequest, SignPublicKeyRequest};
    let d = Deployment::new("signpk", &entries(my_uid()));
    let _agent = d.start();
    rt().block_on(async {
        let mut c = CredentialsClient::new(connect(&d.socket()).await.unwrap());
        let key = lanyard_token::KeyPair::generate().unwrap();
        let nonce = c
            .get_nonce(with_header(GetNonceRequest {}))
            .await
            .unwrap()
            .into_inner()
            .nonce;
        let sig = lanyard_token::pop::prove(&key, nonce.as_bytes()).unwrap();
        let req = |nonce: &str, sig: &str| SignPublicKeyRequest {
            subject: "spiffe://example.org/e2e".into(),
            public_key: key.public().to_hex(),
            nonce: nonce.into(),
            signature: sig.into(),
            audiences: vec!["billing".into()],
        };
        let r = c
            .sign_public_key(with_header(req(&nonce, &sig)))
            .await
            .unwrap()
            .into_inner();
        let org = lanyard_token::PublicKey::from_file_text(
            &std::fs::read_to_string(d.dir.join("org/org.public")).unwrap(),
        )
        .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let t = lanyard_token::Verifier::new(org)
            .with_audience("billing")
            .verify(&r.jwt, now)
            .unwrap();
        assert_eq!(
            t.holder(),
            Some(key.public()),
            "the JWT must name the workload's own key"
        );
        // The nonce is single use.
        let again = c
            .sign_public_key(with_header(req(&nonce, &sig)))
            .await
            .unwrap_err();
        assert_eq!(again.code(), tonic::Code::PermissionDenied);
        // A proof by another key is refused.
        let nonce = c
            .get_nonce(with_header(GetNonceRequest {}))
            .await
            .unwrap()
            .into_inner()
            .nonce;
        let other = lanyard_token::pop::prove(
            &lanyard_token::KeyPair::generate().unwrap(),
            nonce.as_bytes(),
        )
        .unwrap();
        let err = c
            .sign_public_key(with_header(req(&nonce, &other)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    });
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
fn fetch_watch_starts_the_child_only_after_every_file_is_written() {
    let d = Deployment::new("watch", &entries(my_uid()));
    let _agent = d.start();
    let out = d.dir.join("creds");
    let probe = format!(
        "for f in credential.seed credential.jwt org.public svid.pem svid.key bundle.pem jwt_svid.billing.token; do test -s {0}/$f || exit 1; done; echo complete > {0}/child-saw",
        out.display()
    );
    let mut watch = Command::new(lanyard_tests::lanyard_bin())
        .args([
            "fetch",
            "--socket",
            d.socket().to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--audience",
            "billing",
            "--watch",
            "--exec",
            "sh",
            "-c",
            &probe,
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let seen = out.join("child-saw");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !seen.exists() {
        assert!(watch.try_wait().unwrap().is_none(), "fetch --watch exited");
        assert!(
            std::time::Instant::now() < deadline,
            "the child never saw a complete set of files"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(std::fs::read_to_string(seen).unwrap().trim(), "complete");
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
