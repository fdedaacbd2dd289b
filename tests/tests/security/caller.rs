//! The caller: a wrong uid, a reused pid, another container's identity.

use std::path::Path;
use std::process::{Command, Stdio};

use lanyard_agent::client::{connect, with_header};
use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::spiffe::JwtsvidRequest;
use lanyard_tests::cgroups::{hierarchies, InCgroup};
use lanyard_tests::{entry, lanyard, lanyard_bin, my_uid, rt, script, Deployment};

use super::jwt_svid;

#[test]
fn a_caller_with_another_uid_gets_nothing() {
    let d = Deployment::new(
        "sec-uid",
        &entry("me", &[&format!("unix:uid:{}", my_uid())]),
    );
    let agent = d.start();
    let never = d.dir.join("never-written");
    // The socket is 0777: the caller's uid, not file permissions, decides.
    let out = Command::new("setpriv")
        .args(["--reuid", "54321", "--regid", "54321", "--clear-groups"])
        .arg(lanyard_bin())
        .args(["fetch", "--socket", d.socket().to_str().unwrap()])
        .args(["--out-dir", never.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "uid 54321 got credentials");
    assert!(err.contains("PermissionDenied"), "{err}");
    assert!(!never.exists());
    assert!(agent.log().contains("no entry matches"), "{}", agent.log());
    // This uid is served: the refusal above was about the uid alone.
    jwt_svid(&d.socket(), "").unwrap();
}

/// Puts a new `sleep` of uid 54321 on exactly `pid` (through `ns_last_pid`),
/// retrying while other processes on the machine take the number first.
fn occupy_pid(pid: u32) -> std::process::Child {
    for _ in 0..500 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .expect("writing ns_last_pid needs root in the initial pid namespace");
        // setpriv execs sleep: same pid.
        let mut c = Command::new("setpriv")
            .args([
                "--reuid",
                "54321",
                "--regid",
                "54321",
                "--clear-groups",
                "sleep",
                "60",
            ])
            .spawn()
            .unwrap();
        if c.id() == pid {
            return c;
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    panic!("could not get pid {pid} reused in 500 tries");
}

#[test]
fn a_reused_pid_never_receives_the_new_process_identity() {
    let sleep = std::fs::canonicalize("/bin/sleep").unwrap();
    let d = Deployment::new(
        "sec-pid",
        &entry(
            "privileged",
            &["unix:uid:54321", &format!("unix:path:{}", sleep.display())],
        ),
    );
    let _agent = d.start();
    let proxy = d.dir.join("relay");
    std::fs::create_dir_all(&proxy).unwrap();
    std::fs::set_permissions(&proxy, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let proxy = proxy.join("relay.sock");

    // The attacker runs as the same uid as the victim (the hard case: the uid
    // alone cannot tell them apart). It connects, hands its connection to a
    // child and exits.
    let attacker = Command::new("setpriv")
        .args(["--reuid", "54321", "--regid", "54321", "--clear-groups"])
        .args(["/usr/bin/python3", &script("pid_reuse.py")])
        .arg(d.socket())
        .arg(&proxy)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(attacker.status.success());
    let pid: u32 = String::from_utf8_lossy(&attacker.stdout)
        .trim()
        .parse()
        .unwrap();
    // `output()` reaped it: the number is free. The victim, whose binary is
    // entitled, takes it.
    let mut victim = occupy_pid(pid);
    // The agent would give that process the identity, were it to ask.
    let out = lanyard(&[
        "attest",
        "--pid",
        &pid.to_string(),
        "--config",
        d.dir.join("agent.toml").to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.to_string().contains("spiffe://example.org/privileged"),
        "the victim must be entitled for the attack to mean anything: {v}"
    );

    // The attacker's relay asks, over the connection the dead process opened.
    let status = rt().block_on(async {
        let ch = connect(&proxy).await.unwrap();
        let mut c = SpiffeWorkloadApiClient::new(ch);
        c.fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["security".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err()
    });
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let _ = victim.kill();
    let _ = victim.wait();
}

fn python() -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-venv/bin/python");
    assert!(p.exists(), "scripts/test-all.sh creates the Python venv");
    p
}

#[test]
fn a_workload_cannot_get_another_containers_identity() {
    assert!(
        my_uid() == 0 && !hierarchies().is_empty(),
        "the security suite runs as root on a machine with cgroups"
    );
    let (a, b) = ("a1".repeat(32), "b2".repeat(32));
    let d = Deployment::new(
        "sec-ctr",
        &format!(
            "{}{}",
            entry("ctr-a", &[&format!("container:id:{a}")]),
            entry("ctr-b", &[&format!("container:id:{b}")])
        ),
    );
    let _agent = d.start();
    let sock = d.socket().display().to_string();
    let ask = |wanted: &str| -> String {
        let p = InCgroup::spawn(
            &format!("lanyard-sec/docker/{a}"),
            python().to_str().unwrap(),
            &[&script("ask_for.py"), &sock, wanted],
        )
        .expect("a process in container a's cgroup");
        let out = p.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let own = ask("spiffe://example.org/ctr-a");
    assert_eq!(own, "ok spiffe://example.org/ctr-a");
    let other = ask("spiffe://example.org/ctr-b");
    assert!(other.starts_with("refused"), "{other}");
    assert!(other.contains("PERMISSION_DENIED"), "{other}");
    // The host process (no container) gets neither.
    let host = jwt_svid(&d.socket(), "").unwrap_err();
    assert_eq!(host.code(), tonic::Code::PermissionDenied);
}
