//! The clock jumping past credential expiry (libfaketime), local and upstream.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lanyard_agent::client::{connect, with_header};
use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::spiffe::X509svidRequest;
use lanyard_tests::{lanyard_bin, my_uid, rt, spawn_command, wait_for, Fleet};

use super::fleet::{connected, upstream_agent};
use super::{
    credentials, jwt_svid, local_agent, org_key, readyz, unix_now, x509_not_after, x509_svids,
};

/// libfaketime, preloaded into a process, moves its wall clock by what
/// `FAKETIME_TIMESTAMP_FILE` says, re-read at every call (the monotonic clock,
/// which tokio's timers use, is left alone).
fn faketime_env(cmd: &mut Command, file: &Path) {
    let lib = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|a| PathBuf::from(format!("/usr/lib/{a}/faketime/libfaketime.so.1")))
        .find(|p| p.exists())
        .expect("libfaketime is missing: apt-get install faketime (scripts/test-all.sh does)");
    cmd.env("LD_PRELOAD", lib)
        .env("FAKETIME_TIMESTAMP_FILE", file)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
}

/// The wall clock jumps 20 minutes forward under a running agent whose
/// credentials live 10 minutes: every later answer is a fresh credential valid
/// at the new time (never the expired one), and an open X.509 stream gets a
/// renewed SVID pushed by itself.
#[test]
fn clock_jumps_past_credential_expiry() {
    let (d, health) = local_agent("faults-clock", "10m");
    let org = org_key(&d.dir.join("org/org.public"));
    let offset = d.dir.join("faketime");
    // First, libfaketime really moves the Rust binary's clock: three days on,
    // the one-day chain issuer credential is expired.
    let verify_chain = || {
        let mut c = Command::new(lanyard_bin());
        c.args(["token", "verify", "--org-public"])
            .arg(d.dir.join("org/org.public"))
            .arg(d.dir.join("chain/chain.jwt"));
        faketime_env(&mut c, &offset);
        c.output().unwrap()
    };
    std::fs::write(&offset, "+3d\n").unwrap();
    let out = verify_chain();
    assert_eq!(
        out.status.code(),
        Some(1),
        "libfaketime does not move the clock of the lanyard binary: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&offset, "+0\n").unwrap();
    assert!(verify_chain().status.success());

    let sock = d.socket();
    let mut cmd = Command::new(lanyard_bin());
    cmd.args(["agent", "--config"])
        .arg(d.dir.join("agent.toml"));
    faketime_env(&mut cmd, &offset);
    let _agent = spawn_command(cmd, d.dir.join("agent.log"), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let rt = rt();
    let (_, tok1, exp1) = rt.block_on(jwt_svid(&sock, "clock")).unwrap();
    assert!(exp1 <= unix_now() + 600 + 5, "{exp1}");
    let creds1 = rt
        .block_on(credentials(&sock, "clock", org, unix_now()))
        .unwrap();
    let x1 = rt.block_on(x509_svids(&sock)).unwrap();
    assert_eq!(x1.len(), 1);

    rt.block_on(async {
        let mut stream = SpiffeWorkloadApiClient::new(connect(&sock).await.unwrap())
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert_eq!(x509_not_after(&first.svids[0].x509_svid), x1[0].1);

        // Jump.
        let jump = 20 * 60;
        std::fs::write(&offset, format!("+{jump}\n")).unwrap();
        let fake_now = || unix_now() + jump;
        assert!(fake_now() > exp1 && fake_now() > x1[0].1 && fake_now() > creds1[0].1);

        // The open stream is pushed a renewed SVID, valid at the new time.
        let pushed = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("no renewed X.509-SVID pushed within 10 s of the jump")
            .unwrap()
            .unwrap();
        let not_after = x509_not_after(&pushed.svids[0].x509_svid);
        assert!(not_after > fake_now(), "pushed an expired X.509-SVID");

        // Every new request: fresh, valid at the new time.
        let (_, tok2, exp2) = jwt_svid(&sock, "clock").await.unwrap();
        assert_ne!(tok2, tok1, "the expired JWT-SVID was served again");
        assert!(exp2 > fake_now(), "expired JWT-SVID served: exp {exp2}");
        // `credentials` verifies at the given time: an expired one panics.
        let creds2 = credentials(&sock, "clock", org, fake_now()).await.unwrap();
        assert!(creds2[0].1 > fake_now());
        for (_, not_after) in x509_svids(&sock).await.unwrap() {
            assert!(not_after > fake_now(), "expired X.509-SVID served");
        }
    });
    let (code, body) = readyz(&health).unwrap();
    assert_eq!(code, 200, "{body}");
}

/// The same clock jump with an issuer: issuer and agent share one faked clock
/// that jumps 20 minutes past 10-minute credentials. After the jump the agent
/// answers only with credentials the issuer signed for the new time (or an
/// error while it renews), never an expired one, and stays connected.
#[test]
fn clock_jumps_past_credential_expiry_upstream() {
    let f = Fleet::new("faults-clock-up");
    let addr = f.issuer_config("issuer1", "sqlite://issuer1/issuer.db");
    let org = org_key(&f.dir.join("org/org.public"));
    let offset = f.dir.join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let admin = f.dir.join("issuer1/admin.sock");
    let mut cmd = Command::new(lanyard_bin());
    cmd.args(["issuer", "--config"])
        .arg(f.dir.join("issuer1.toml"));
    faketime_env(&mut cmd, &offset);
    let _issuer = spawn_command(cmd, f.dir.join("issuer1.log"), || {
        std::os::unix::net::UnixStream::connect(&admin).is_ok()
    });
    let health = upstream_agent(&f, "gw1", &addr);
    let sock = f.agent_socket("gw1");
    let mut cmd = Command::new(lanyard_bin());
    cmd.args(["agent", "--config"])
        .arg(f.dir.join("agent-gw1.toml"));
    faketime_env(&mut cmd, &offset);
    let _agent = spawn_command(cmd, f.dir.join("agent-gw1.log"), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    wait_for(20, "agent connected", || connected(&health));
    f.admin_cmd(
        "issuer1",
        &[
            "entry",
            "create",
            "--subject",
            "spiffe://example.org/clock",
            "--selector",
            &format!("unix:uid:{}", my_uid()),
            "--node-selector",
            "join:name:gw1",
            "--ttl",
            "10m",
        ],
    );
    let (_, tok1, exp1) = wait_for(10, "the entry at the agent", || {
        rt().block_on(jwt_svid(&sock, "clock")).ok()
    });
    assert!(exp1 <= unix_now() + 600 + 5);
    let creds1 = rt()
        .block_on(credentials(&sock, "clock", org, unix_now()))
        .unwrap();

    let jump = 20 * 60;
    std::fs::write(&offset, format!("+{jump}\n")).unwrap();
    let fake_now = || unix_now() + jump;
    assert!(fake_now() > exp1 && fake_now() > creds1[0].1);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut fresh_jwt, mut fresh_cred) = (false, false);
    while !(fresh_jwt && fresh_cred) {
        assert!(
            Instant::now() < deadline,
            "no fresh credential within 20 s of the jump"
        );
        if let Ok((_, tok, exp)) = rt().block_on(jwt_svid(&sock, "clock")) {
            assert_ne!(tok, tok1, "the expired JWT-SVID was served again");
            assert!(exp > fake_now(), "expired JWT-SVID served: exp {exp}");
            fresh_jwt = true;
        }
        // Verified at the new time: an expired credential panics here.
        if let Ok(c) = rt().block_on(credentials(&sock, "clock", org, fake_now())) {
            assert!(c.iter().all(|(_, exp)| *exp > fake_now()));
            fresh_cred = !c.is_empty();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for(10, "still connected after the jump", || connected(&health));
}
