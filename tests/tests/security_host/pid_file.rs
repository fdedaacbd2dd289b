//! Finding 6: `lanyard fetch --signal` and a pid file the workload writes.

use std::process::Command;

use lanyard_tests::{entry, lanyard_bin, Deployment};

use super::{as_user, attacker_dir, ATTACKER};

// ---------------------------------------------------------------------------
// Finding 6: `lanyard fetch --signal` and a pid file the workload writes.

#[test]
fn attacker_writes_minus_one_into_the_pid_file_and_nothing_is_signalled() {
    let d = Deployment::new("sec-signal", &entry("root", &["unix:uid:0"]));
    let _agent = d.start();
    let dir = attacker_dir(&d, "run");
    for bad in ["-1", "-999999", "0", "1", "nonsense"] {
        let pid_file = dir.join("server.pid");
        // The workload writes the pid file (it is its own server's).
        let o = as_user(ATTACKER)
            .args([
                "sh",
                "-c",
                &format!("printf -- '{bad}' > {}", pid_file.display()),
            ])
            .status()
            .unwrap();
        assert!(o.success());
        // In a private pid namespace, so that a kill(-1) could only hit the
        // processes of this test: two of the attacker's servers and the
        // sidecar's own shell.
        let o = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "sh", "-c"])
            .arg(format!(
                "setpriv --reuid={ATTACKER} --regid={ATTACKER} --clear-groups sleep 60 & a=$!; \
                 setpriv --reuid={ATTACKER} --regid={ATTACKER} --clear-groups sleep 60 & b=$!; \
                 sleep 0.2; \
                 {lanyard} fetch --socket {sock} --out-dir {out} --signal TERM --pid-file {pid_file}; \
                 echo \"rc=$?\"; sleep 0.5; \
                 kill -0 $a && kill -0 $b && echo alive; kill $a $b",
                lanyard = lanyard_bin().display(),
                sock = d.socket().display(),
                out = d.dir.join("sidecar").display(),
                pid_file = pid_file.display()
            ))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stdout.contains("alive"),
            "{bad:?}: processes were signalled: {stdout} {stderr}"
        );
        assert!(
            !stdout.contains("rc=0"),
            "{bad:?}: fetch accepted the pid file: {stdout}"
        );
        assert!(stderr.contains("--pid-file"), "{bad:?}: {stderr}");
        assert_eq!(
            stderr.lines().filter(|l| l.contains("pid")).count(),
            1,
            "one clear line: {stderr}"
        );
        assert!(
            !d.dir.join("sidecar").exists(),
            "{bad:?}: the error comes before any fetch"
        );
    }
}

#[test]
fn attacker_names_a_root_process_in_its_pid_file_and_it_is_not_signalled() {
    let d = Deployment::new("sec-signal-root", &entry("root", &["unix:uid:0"]));
    let _agent = d.start();
    let dir = attacker_dir(&d, "run");
    let pid_file = dir.join("server.pid");
    // In a private pid namespace: a root process (standing in for the kubelet)
    // and the attacker's own server. The attacker's pid file names first the
    // root process, then its own server: only the second is signalled.
    let root_pid_file = d.dir.join("root.pid");
    let run = |write: &str| {
        let o = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "sh", "-c"])
            .arg(format!(
                "sleep 60 & root=$!; echo $root > {root_pid_file}; \
                 setpriv --reuid={ATTACKER} --regid={ATTACKER} --clear-groups sleep 60 & own=$!; \
                 rm -f {pid_file}; setpriv --reuid={ATTACKER} --regid={ATTACKER} --clear-groups sh -c \"{write}\"; \
                 {lanyard} fetch --socket {sock} --out-dir {out} --signal TERM --pid-file {pid_file}; \
                 echo \"rc=$?\"; sleep 0.3; \
                 kill -0 $root && echo root-alive; kill -0 $own && echo own-alive; kill $root $own 2>/dev/null; true",
                lanyard = lanyard_bin().display(),
                sock = d.socket().display(),
                out = d.dir.join("sidecar").display(),
                pid_file = pid_file.display(),
                root_pid_file = root_pid_file.display()
            ))
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let p = pid_file.display();
    let (out, err) = run(&format!("echo $root > {p}"));
    assert!(
        out.contains("root-alive"),
        "the root process was signalled: {out} {err}"
    );
    assert!(!out.contains("rc=0"), "{out}");
    assert!(err.contains("belongs to uid 1001"), "{err}");
    // A symlink to root's own pid file (root-owned, so it would look like
    // root's word): not read at all.
    let (out, err) = run(&format!("ln -s {} {p}", root_pid_file.display()));
    assert!(
        out.contains("root-alive"),
        "the root process was signalled: {out} {err}"
    );
    assert!(err.contains("symlink"), "{err}");
    // The control: its own server is signalled (TERM), as the flag promises.
    let (out, err) = run(&format!("echo $own > {p}"));
    assert!(out.contains("rc=0"), "{out} {err}");
    assert!(
        !out.contains("own-alive"),
        "the attacker's own server was not signalled: {out}"
    );
}
