//! `lanyard fetch`, the sidecar, against a real agent: every identity written,
//! SPIFFE-style socket addresses, one-line mistakes, and `--watch` through an
//! agent restart with a child that is stopped the way a supervisor stops one.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lanyard_tests::{lanyard, my_uid, Deployment};

fn three_identities(uid: u32) -> String {
    format!(
        "[[entries]]\nsubject = \"spiffe://example.org/one\"\nselectors = [\"unix:uid:{uid}\"]\n\
         [[entries]]\nsubject = \"spiffe://example.org/two\"\nselectors = [\"unix:uid:{uid}\"]\n\
         [[entries]]\nsubject = \"urn:lanyard:three\"\nselectors = [\"unix:uid:{uid}\"]\n"
    )
}

fn one_identity(uid: u32) -> String {
    format!(
        "[[entries]]\nsubject = \"spiffe://example.org/one\"\nselectors = [\"unix:uid:{uid}\"]\n"
    )
}

fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn every_identity_is_written_with_an_index() {
    let d = Deployment::new("fetch-all", &three_identities(my_uid()));
    let _agent = d.start();
    let out = d.dir.join("creds");
    let r = lanyard(&[
        "fetch",
        "--socket",
        d.socket().to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "--audience",
        "billing",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let index: serde_json::Value =
        serde_json::from_str(&read(&out.join("identities.json"))).unwrap();
    let mut subjects: Vec<&str> = index["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subject"].as_str().unwrap())
        .collect();
    subjects.sort_unstable();
    assert_eq!(
        subjects,
        [
            "spiffe://example.org/one",
            "spiffe://example.org/two",
            "urn:lanyard:three"
        ]
    );
    assert_eq!(index["x509_svids"].as_array().unwrap().len(), 2);
    assert_eq!(index["jwt_svids"].as_array().unwrap().len(), 2);
    // Each file the index names exists, and says what the index says.
    for c in index["credentials"].as_array().unwrap() {
        let jwt = read(&out.join(c["jwt"].as_str().unwrap()));
        let v = lanyard(&[
            "token",
            "verify",
            "--org-public",
            d.dir.join("org/org.public").to_str().unwrap(),
            out.join(c["jwt"].as_str().unwrap()).to_str().unwrap(),
        ]);
        assert!(v.status.success(), "{jwt}");
        assert!(
            String::from_utf8_lossy(&v.stdout).contains(c["subject"].as_str().unwrap()),
            "{}",
            String::from_utf8_lossy(&v.stdout)
        );
        assert!(!read(&out.join(c["seed"].as_str().unwrap())).is_empty());
    }
    for s in index["x509_svids"].as_array().unwrap() {
        assert!(read(&out.join(s["cert"].as_str().unwrap())).contains("BEGIN CERTIFICATE"));
        assert!(read(&out.join(s["key"].as_str().unwrap())).contains("BEGIN PRIVATE KEY"));
    }
    // The default identity keeps the names a single-identity workload reads.
    for f in [
        "credential.seed",
        "credential.jwt",
        "svid.pem",
        "svid.key",
        "bundle.pem",
        "jwt_svid.billing.token",
        "org.public",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
}

#[test]
fn unix_addresses_and_spiffe_endpoint_socket_are_accepted() {
    let d = Deployment::new("fetch-addr", &one_identity(my_uid()));
    let _agent = d.start();
    let addr = format!("unix://{}", d.socket().display());
    let out = d.dir.join("a");
    let r = lanyard(&[
        "fetch",
        "--socket",
        &addr,
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(out.join("credential.jwt").exists());
    // No --socket: the variable every SPIFFE client reads.
    let out = d.dir.join("b");
    let r = Command::new(lanyard_tests::lanyard_bin())
        .args(["fetch", "--out-dir", out.to_str().unwrap()])
        .env("SPIFFE_ENDPOINT_SOCKET", &addr)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(out.join("credential.jwt").exists());
}

#[test]
fn signal_and_socket_mistakes_are_one_clear_line() {
    let dir = lanyard_tests::TempDir::new("fetch-mistakes");
    std::fs::write(dir.join("pid"), "4242").unwrap();
    let pid = dir.join("pid");
    let pid = pid.to_str().unwrap();
    let out = dir.join("o");
    let out = out.to_str().unwrap();
    for (args, want) in [
        (
            vec![
                "--socket",
                "/x.sock",
                "--signal",
                "BOGUS",
                "--pid-file",
                pid,
            ],
            "unknown signal",
        ),
        (
            vec!["--socket", "/x.sock", "--signal", "HUP"],
            "needs --pid-file",
        ),
        (
            vec!["--socket", "/x.sock", "--pid-file", pid],
            "needs --signal",
        ),
        (vec!["--socket", "tcp://127.0.0.1:1"], "Unix socket"),
        (vec![], "SPIFFE_ENDPOINT_SOCKET"),
    ] {
        let mut all = vec!["fetch", "--out-dir", out];
        all.extend(&args);
        let r = Command::new(lanyard_tests::lanyard_bin())
            .args(&all)
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// A child script that records its pid, and a TERM it receives.
fn recording_child(dir: &Path) -> String {
    format!(
        "echo $$ >> {0}/pids; trap 'echo $$ >> {0}/terms; exit 0' TERM; while :; do sleep 0.05; done",
        dir.display()
    )
}

#[test]
fn watch_follows_the_agent_through_a_restart_and_stops_its_child_with_sigterm() {
    let d = Deployment::new("fetch-watch", &one_identity(my_uid()));
    let agent = d.start();
    let out = d.dir.join("creds");
    let log = std::fs::File::create(d.dir.join("fetch.log")).unwrap();
    let mut watch = Command::new(lanyard_tests::lanyard_bin())
        .args([
            "fetch",
            "--socket",
            d.socket().to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--watch",
            "--grace",
            "5s",
            "--exec",
            "sh",
            "-c",
            &recording_child(&d.dir.0),
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pids = d.dir.join("pids");
    wait_until(20, "the first child", || read(&pids).lines().count() == 1);
    let first_jwt = read(&out.join("credential.jwt"));
    // The agent dies without a drain and comes back with no cache: new
    // credentials, which the sidecar must pick up on its own.
    agent.kill9();
    std::fs::remove_dir_all(d.dir.join("data")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        watch.try_wait().unwrap().is_none(),
        "fetch --watch exited with the agent: {}",
        read(&d.dir.join("fetch.log"))
    );
    let _agent = d.start();
    wait_until(30, "new files after the agent restarted", || {
        let jwt = read(&out.join("credential.jwt"));
        !jwt.is_empty() && jwt != first_jwt
    });
    // The child was restarted for the new files: the old one got SIGTERM first.
    wait_until(10, "a second child", || read(&pids).lines().count() == 2);
    let first_pid = read(&pids).lines().next().unwrap().to_owned();
    assert_eq!(
        read(&d.dir.join("terms")).lines().next(),
        Some(first_pid.as_str())
    );
    assert!(read(&d.dir.join("fetch.log")).contains("reconnecting"));
    // Stopping the sidecar stops its child the same way, and it exits 0.
    Command::new("kill")
        .args(["-TERM", &watch.id().to_string()])
        .status()
        .unwrap();
    let status = watch.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        read(&d.dir.join("terms")).lines().count(),
        2,
        "the second child got SIGTERM"
    );
}

#[test]
fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let d = Deployment::new("fetch-grace", &one_identity(my_uid()));
    let _agent = d.start();
    let child = format!(
        "echo $$ > {0}/pid; trap '' TERM; while :; do sleep 0.05; done",
        d.dir.0.display()
    );
    let mut watch = Command::new(lanyard_tests::lanyard_bin())
        .args([
            "fetch",
            "--socket",
            d.socket().to_str().unwrap(),
            "--out-dir",
            d.dir.join("creds").to_str().unwrap(),
            "--watch",
            "--grace",
            "1s",
            "--exec",
            "sh",
            "-c",
            &child,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(20, "the child", || {
        !read(&d.dir.join("pid")).trim().is_empty()
    });
    let pid = read(&d.dir.join("pid")).trim().to_owned();
    Command::new("kill")
        .args(["-TERM", &watch.id().to_string()])
        .status()
        .unwrap();
    let status = watch.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the child outlived the sidecar"
    );
}

#[test]
fn the_sidecar_exits_with_its_child() {
    let d = Deployment::new("fetch-exit", &one_identity(my_uid()));
    let _agent = d.start();
    let (socket, out) = (d.socket(), d.dir.join("creds"));
    for watch in [true, false] {
        let mut args = vec![
            "fetch",
            "--socket",
            socket.to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
        ];
        if watch {
            args.push("--watch");
        }
        args.extend(["--exec", "sh", "-c", "exit 7"]);
        let r = lanyard(&args);
        assert_eq!(
            r.status.code(),
            Some(7),
            "watch={watch}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }
}
