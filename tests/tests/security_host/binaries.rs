//! Findings 3 to 5: exec after connect, a rewritten hashed binary, a bind-mounted binary.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lanyard_tests::{entry, lanyard_bin, script, Deployment};

use super::{as_user, attacker_dir, jwt_svid, ATTACKER};

// ---------------------------------------------------------------------------
// Finding 3: connect, then exec an entitled binary.

/// `/bin/sleep` (its canonical path) and a deployment whose one entry,
/// `entitled`, is for uid 1001 running exactly that binary.
fn sleep_is_entitled(name: &str) -> (PathBuf, Deployment) {
    let sleep = std::fs::canonicalize("/bin/sleep").unwrap();
    let d = Deployment::new(
        name,
        &entry(
            "entitled",
            &[
                &format!("unix:uid:{ATTACKER}"),
                &format!("unix:path:{}", sleep.display()),
            ],
        ),
    );
    (sleep, d)
}

#[test]
fn attacker_connects_then_execs_an_entitled_binary_and_gets_nothing() {
    let (sleep, d) = sleep_is_entitled("sec-exec");
    let _agent = d.start();
    let relay = attacker_dir(&d, "relay").join("relay.sock");
    let mut attacker = as_user(ATTACKER)
        .args(["/usr/bin/python3", &script("connect_exec.py")])
        .arg(d.socket())
        .arg(&relay)
        .arg(&sleep)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(attacker.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: u32 = line.trim().parse().unwrap();
    // Wait until the connecting process runs the entitled binary.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .as_deref()
        != Some(sleep.as_path())
    {
        assert!(Instant::now() < deadline, "the attacker never exec'd");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The agent would give that process the identity, were it to ask itself.
    let o = lanyard_tests::lanyard(&[
        "attest",
        "--pid",
        &pid.to_string(),
        "--config",
        d.dir.join("agent.toml").to_str().unwrap(),
        "--json",
    ]);
    let v = String::from_utf8_lossy(&o.stdout);
    assert!(v.contains("spiffe://example.org/entitled"), "{v}");
    // The relay asks over the connection the attacker's own binary opened.
    let status = jwt_svid(&relay).unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("executed another binary"),
        "{status:?}"
    );
    let _ = attacker.kill();
    let _ = attacker.wait();
    let _ = Command::new("kill").arg(pid.to_string()).status();
}

// ---------------------------------------------------------------------------
// Finding 4: rewrite a hashed binary and set its mtime back.

#[test]
fn attacker_rewrites_a_hashed_binary_resets_mtime_and_gets_nothing() {
    let d0 = lanyard_tests::TempDir::new("sec-hash-src");
    // The attacker's own copy of a client binary, which an entry entitles by
    // hash (say it was vetted).
    let tool = d0.join("tool");
    std::fs::copy(lanyard_bin(), &tool).unwrap();
    let sum = Command::new("sha256sum").arg(&tool).output().unwrap();
    let hash = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let d = Deployment::new(
        "sec-hash",
        &entry(
            "vetted",
            &[
                &format!("unix:uid:{ATTACKER}"),
                &format!("unix:sha256:{hash}"),
            ],
        ),
    );
    let _agent = d.start();
    std::os::unix::fs::chown(&tool, Some(ATTACKER), Some(ATTACKER)).unwrap();
    // The agent keeps the hash only of a file unchanged for over a second.
    std::thread::sleep(Duration::from_millis(2100));
    let run = |out: &str| {
        let out = attacker_dir(&d, out);
        let o = as_user(ATTACKER)
            .arg(&tool)
            .args(["fetch", "--socket", d.socket().to_str().unwrap()])
            .args(["--out-dir", out.to_str().unwrap()])
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // The vetted bytes get the identity (and the agent caches their hash).
    let (ok, err) = run("first");
    assert!(ok, "{err}");
    // As the file's owner: one byte of a help text changed in place (same
    // inode, same size), then mtime set back to what it was.
    let patch = "import os,sys\n\
        p=sys.argv[1]; st=os.stat(p); b=open(p,'rb').read(); i=b.index(b'Usage')\n\
        f=open(p,'r+b'); f.seek(i); f.write(b'u'); f.close()\n\
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))\n\
        assert os.stat(p).st_mtime_ns == st.st_mtime_ns and os.stat(p).st_ino == st.st_ino\n";
    let o = as_user(ATTACKER)
        .args(["/usr/bin/python3", "-c", patch])
        .arg(&tool)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (ok, err) = run("second");
    assert!(!ok, "the rewritten binary got the vetted identity");
    assert!(err.contains("PermissionDenied"), "{err}");
}

// ---------------------------------------------------------------------------
// Finding 5: bind-mount one's own binary over an entitled path.

#[test]
fn attacker_bind_mounts_its_binary_over_an_entitled_path_and_gets_nothing() {
    let (sleep, d) = sleep_is_entitled("sec-bind");
    let _agent = d.start();
    let out = attacker_dir(&d, "out");
    // In a user and mount namespace of its own, uid 1001 may bind-mount
    // anything over anything: its fetch runs "as" /usr/bin/sleep.
    let o = as_user(ATTACKER)
        .args([
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
        ])
        .arg(format!(
            "mount --bind {lanyard} {sleep} && exec {sleep} fetch --socket {sock} --out-dir {out}",
            lanyard = lanyard_bin().display(),
            sleep = sleep.display(),
            sock = d.socket().display(),
            out = out.display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "the bind-mounted binary got the identity: {err}"
    );
    assert!(err.contains("PermissionDenied"), "{err}");
    assert!(!out.join("svid.pem").exists());
}
