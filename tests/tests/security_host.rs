//! The host security suite (issue 13): an unprivileged local user (uid 1001)
//! attacking the agent and other workloads, against real cgroups, namespaces
//! and processes. Each test is written from the attacker's side and names the
//! review finding it closes.
//!
//! The tests run as root, because only root can set up what a real host has:
//! a cgroup subtree delegated to a user (what systemd's `Delegate=yes` does for
//! `user@UID.service`), uids to switch to, and user namespaces mapped the way
//! `newuidmap` maps subordinate uids. The attacks themselves run as uid 1001
//! through `setpriv`.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lanyard_agent::client::{connect, with_header};
use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::spiffe::{JwtsvidRequest, X509svidRequest};
use lanyard_tests::{entry, lanyard_bin, rt, script, Deployment};

/// The attacker's uid.
const ATTACKER: u32 = 1001;

/// `setpriv` running the rest as `uid` (and gid), with no supplementary groups.
fn as_user(uid: u32) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".into(),
    ]);
    c
}

/// A directory the attacker owns.
fn attacker_dir(d: &Deployment, name: &str) -> PathBuf {
    let p = d.dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    std::os::unix::fs::chown(&p, Some(ATTACKER), Some(ATTACKER)).unwrap();
    p
}

/// `lanyard fetch` into `out`: (success, stderr).
fn fetch_cmd(mut c: Command, socket: &Path, out: &Path) -> (bool, String) {
    let o = c
        .arg(lanyard_bin())
        .args(["fetch", "--socket", socket.to_str().unwrap()])
        .args(["--out-dir", out.to_str().unwrap()])
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A JWT-SVID for this process (root) over `socket`, or the gRPC status.
fn jwt_svid(socket: &Path) -> Result<String, tonic::Status> {
    rt().block_on(async {
        let ch = connect(socket).await.unwrap();
        let r = SpiffeWorkloadApiClient::new(ch)
            .fetch_jwtsvid(with_header(JwtsvidRequest {
                audience: vec!["security".into()],
                spiffe_id: String::new(),
            }))
            .await?;
        Ok(r.into_inner().svids.remove(0).svid)
    })
}

// ---------------------------------------------------------------------------
// Finding 1: container and pod names in a cgroup the user made.

/// The unified (v2) cgroup hierarchy's mount point.
fn cgroup2_root() -> PathBuf {
    lanyard_tests::cgroups::cgroup2_root().expect("a cgroup2 mount")
}

/// A cgroup subtree removed (deepest first) on drop, once its processes are gone.
struct CgroupTree(PathBuf);

impl Drop for CgroupTree {
    fn drop(&mut self) {
        fn rm(p: &Path) {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        rm(&e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(p);
        }
        rm(&self.0);
    }
}

/// What systemd does for a delegated unit: the directory and its control
/// files belong to the user.
fn delegate_to(dir: &Path, uid: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for f in [
        "",
        "cgroup.procs",
        "cgroup.threads",
        "cgroup.subtree_control",
    ] {
        std::os::unix::fs::chown(dir.join(f), Some(uid), Some(uid)).unwrap();
    }
}

/// Runs `sh -c script` as `uid` (root when `None`), first placed by root into
/// the cgroup `dir` (as systemd places a user's manager): its output.
fn run_in_cgroup(uid: Option<u32>, dir: &Path, script: &str) -> Output {
    let mut c = match uid {
        Some(u) => as_user(u),
        None => Command::new("env"),
    };
    let mut child = c
        .args(["sh", "-c", &format!("read _ && {script}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn attacker_names_its_own_cgroup_like_a_pod_and_gets_nothing() {
    let pod = "8b9dd266-60dd-4433-8e5e-3bdcc7697bee";
    let id = "c72b44f312b344d22b2be689192bc97c7a1c7b7e0dec34aa172140e89d47980b";
    let pod_path = format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{id}.scope",
        pod.replace('-', "_")
    );
    let d = Deployment::new(
        "sec-cgroup",
        &format!(
            "{}{}",
            entry(
                "ns/prod/sa/payments",
                &[&format!("container:pod-uid:{pod}")]
            ),
            entry("docker-app", &[&format!("container:id:{id}")])
        ),
    );
    let _agent = d.start();
    let base = cgroup2_root().join(format!("lanyard-sec-{}", std::process::id()));
    let _tree = CgroupTree(base.clone());
    let lanyard = lanyard_bin().display().to_string();
    let sock = d.socket().display().to_string();

    // The control: a root process in a root-made cgroup of that name is that
    // pod, so the names alone would be worth stealing.
    let real = base.join(&pod_path);
    std::fs::create_dir_all(&real).unwrap();
    let out = d.dir.join("root-out");
    let o = run_in_cgroup(
        None,
        &real,
        &format!(
            "exec {lanyard} fetch --socket {sock} --out-dir {}",
            out.display()
        ),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let svid = std::fs::read(out.join("svid.pem")).unwrap();
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName"])
        .stdin_bytes(&svid);
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("spiffe://example.org/ns/prod/sa/payments"),
        "{text}"
    );

    // The attacks: the same names below the user's systemd manager, and below
    // another unit delegated to the user (where only ownership tells).
    for delegated in [
        base.join(format!(
            "user.slice/user-{ATTACKER}.slice/user@{ATTACKER}.service"
        )),
        base.join("system.slice/build-runner.service"),
    ] {
        delegate_to(&delegated, ATTACKER);
        let out = attacker_dir(&d, "stolen");
        let forged = delegated.join(&pod_path);
        let o = run_in_cgroup(
            Some(ATTACKER),
            &delegated,
            &format!(
                "mkdir -p {f} && echo $$ > {f}/cgroup.procs && cat /proc/self/cgroup >&2 && exec {lanyard} fetch --socket {sock} --out-dir {out}",
                f = forged.display(),
                out = out.display()
            ),
        );
        let err = String::from_utf8_lossy(&o.stderr);
        let rel = forged
            .strip_prefix(cgroup2_root())
            .unwrap()
            .display()
            .to_string();
        assert!(
            err.contains(&format!("0::/{rel}\n")),
            "the attacker must really be in its forged cgroup {rel}: {err}"
        );
        assert!(
            !o.status.success(),
            "uid {ATTACKER} got the pod's identity: {err}"
        );
        assert!(err.contains("PermissionDenied"), "{err}");
        assert!(!out.join("svid.pem").exists());
    }
}

// ---------------------------------------------------------------------------
// Finding 2: a forged cgroup mount.

#[test]
fn attacker_bind_mounts_a_container_cgroup_over_its_own_and_gets_nothing() {
    let id = "d0a0270154a54fe1f1afc2a5abf4d9edf124e6110dcfd7daaed725d497a76cba";
    let d = Deployment::new(
        "sec-mountinfo",
        &entry("stolen", &[&format!("container:id:{id}")]),
    );
    let _agent = d.start();
    // A container's cgroup (root made it, as dockerd's cgroupfs driver does).
    let pids = lanyard_tests::cgroups::hierarchies()
        .into_iter()
        .find(|h| h.ends_with("pids"))
        .expect("a pids v1 hierarchy");
    let container = pids.join(format!("docker/{id}"));
    std::fs::create_dir_all(&container).unwrap();
    let _tree = CgroupTree(container.clone());
    // The attacker, at the root of every hierarchy (a host without systemd):
    // its cgroup file says "/" on every line. In a user and mount namespace of
    // its own it bind-mounts the container's cgroup over its pids mount, so its
    // mountinfo names the container.
    let out = attacker_dir(&d, "out");
    let mut child = as_user(ATTACKER)
        .args(["sh", "-c"])
        .arg(format!(
            "read _ && cat /proc/self/cgroup >&2 && exec unshare --user --map-root-user --mount sh -c \
             'mount --bind {container} {pids} && grep docker /proc/self/mountinfo >&2 && exec {lanyard} fetch --socket {sock} --out-dir {out}'",
            container = container.display(),
            pids = pids.display(),
            lanyard = lanyard_bin().display(),
            sock = d.socket().display(),
            out = out.display()
        ))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    for m in mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
    {
        if matches!(m.get(2), Some(&"cgroup") | Some(&"cgroup2")) {
            let _ = std::fs::write(Path::new(m[1]).join("cgroup.procs"), child.id().to_string());
        }
    }
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.lines()
            .take_while(|l| !l.contains("docker"))
            .all(|l| l.ends_with(":/")),
        "the attacker must be at the root of every hierarchy: {err}"
    );
    assert!(
        err.contains(&format!("/docker/{id} {}", pids.display())),
        "the mount must be forged: {err}"
    );
    assert!(
        !o.status.success(),
        "uid {ATTACKER} got the container's identity: {err}"
    );
    assert!(err.contains("PermissionDenied"), "{err}");
}

/// The selectors `lanyard attest` gives `pid`, run the way a DaemonSet agent
/// on cgroup v2 runs: in a cgroup namespace of its own (rooted at `agent_cg`),
/// with `config`.
fn attest_from_cgroupns(agent_cg: &Path, pid: u32, config: &Path) -> Vec<String> {
    std::fs::create_dir_all(agent_cg).unwrap();
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {procs} && exec unshare --cgroup {lanyard} attest --pid {pid} --json --config {config}",
            procs = agent_cg.join("cgroup.procs").display(),
            lanyard = lanyard_bin().display(),
            config = config.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    serde_json::from_value(v["selectors"].clone()).unwrap()
}

/// A process (`sleep`) of `uid` that has moved itself into `target`, having
/// been placed by root into `start` (as systemd places a unit's processes).
fn sleeper_in(uid: Option<u32>, start: &Path, target: &Path) -> Child {
    let mut c = match uid {
        Some(u) => as_user(u),
        None => Command::new("env"),
    };
    let mut child = c
        .args(["sh", "-c"])
        .arg(format!(
            "read _ && mkdir -p {t} && echo $$ > {t}/cgroup.procs && exec sleep 60",
            t = target.display()
        ))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(start.join("cgroup.procs"), child.id().to_string()).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let rel = target
        .strip_prefix(cgroup2_root())
        .unwrap()
        .display()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(format!("/proc/{}/cgroup", child.id()))
        .is_ok_and(|t| t.contains(&format!("0::/{rel}\n")))
        || std::fs::read_link(format!("/proc/{}/exe", child.id()))
            .is_ok_and(|e| !e.ends_with("sleep"))
    {
        assert!(Instant::now() < deadline, "the process never reached {rel}");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// The same attack seen by an agent in a cgroup namespace of its own, where
/// the path reads `/../…`: given the host's cgroup tree, it checks the owner
/// there too.
#[test]
fn attacker_forged_pod_cgroup_is_refused_by_an_agent_in_its_own_cgroup_namespace() {
    let pod = "8b9dd266-60dd-4433-8e5e-3bdcc7697bee";
    let id = "c72b44f312b344d22b2be689192bc97c7a1c7b7e0dec34aa172140e89d47980b";
    let pod_path = format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{id}.scope",
        pod.replace('-', "_")
    );
    let base = cgroup2_root().join(format!("lanyard-sec-ns-{}", std::process::id()));
    let _tree = CgroupTree(base.clone());
    let dir = lanyard_tests::TempDir::new("sec-cgns");
    let config = dir.join("agent.toml");
    lanyard_tests::write_attest_config(
        &config,
        &format!("host_cgroup_root = \"{}\"", cgroup2_root().display()),
    );
    let agent_cg = base.join("kubepods.slice/kubepods-burstable.slice/agent.scope");
    // The control: root's process in a root-made cgroup of that name.
    let real = base
        .join("kubepods.slice")
        .join(pod_path.strip_prefix("kubepods.slice/").unwrap());
    std::fs::create_dir_all(real.parent().unwrap()).unwrap();
    let mut root_proc = sleeper_in(None, &base, &real);
    let got = attest_from_cgroupns(&agent_cg, root_proc.id(), &config);
    assert!(got.contains(&format!("container:pod-uid:{pod}")), "{got:?}");
    let _ = root_proc.kill();
    let _ = root_proc.wait();
    // The attack, below a unit delegated to uid 1001 that is not user@.
    let delegated = base.join("system.slice/build-runner.service");
    delegate_to(&delegated, ATTACKER);
    let mut attacker = sleeper_in(Some(ATTACKER), &delegated, &delegated.join(&pod_path));
    let got = attest_from_cgroupns(&agent_cg, attacker.id(), &config);
    assert!(
        !got.iter().any(|s| s.starts_with("container:")),
        "uid {ATTACKER} got container selectors: {got:?}"
    );
    let _ = attacker.kill();
    let _ = attacker.wait();
}

/// `Command` output with bytes on stdin.
trait StdinBytes {
    fn stdin_bytes(&mut self, input: &[u8]) -> Vec<u8>;
}

impl StdinBytes for Command {
    fn stdin_bytes(&mut self, input: &[u8]) -> Vec<u8> {
        let mut c = self
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input).unwrap();
        c.wait_with_output().unwrap().stdout
    }
}

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

// ---------------------------------------------------------------------------
// Finding 7: connection slots, from several uids at once.

/// Runs `hold_slots.py` inside a user namespace that `ATTACKER` made, with the
/// attacker as root in it and uids 1..3 mapped to subordinate host uids
/// 200000..200002 by a privileged helper (what `newuidmap` does for
/// `unshare --map-auto`): four host uids, one user.
fn hold_slots(socket: &Path, per_uid: usize) -> (Child, usize) {
    let mut c = as_user(ATTACKER)
        .args(["unshare", "--user", "sh", "-c"])
        .arg(format!(
            "read _ && exec /usr/bin/python3 {} {} {per_uid} 0 1 2 3",
            script("hold_slots.py"),
            socket.display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // setpriv execs unshare, which unshares and execs sh: wait for the new
    // namespace, then map it.
    let pid = c.id();
    let own = std::fs::read_link("/proc/self/ns/user").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{pid}/ns/user"))
        .ok()
        .as_ref()
        == Some(&own)
        || std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|e| !e.ends_with("sh") && !e.ends_with("dash") && !e.ends_with("bash"))
    {
        assert!(Instant::now() < deadline, "no user namespace");
        std::thread::sleep(Duration::from_millis(10));
    }
    let map = format!("0 {ATTACKER} 1\n1 200000 3\n");
    std::fs::write(format!("/proc/{pid}/uid_map"), &map).unwrap();
    std::fs::write(format!("/proc/{pid}/gid_map"), &map).unwrap();
    c.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let held = line.trim().strip_prefix("held ").unwrap().parse().unwrap();
    (c, held)
}

#[test]
fn attacker_with_subordinate_uids_cannot_take_every_connection() {
    let d = Deployment::new(
        "sec-slots",
        &format!(
            "{}{}[connections]\nmax_total = 64\nmax_per_uid = 16\nfirst_byte_timeout = \"60s\"\n",
            entry("root", &["unix:uid:0"]),
            entry("other", &["unix:uid:1002"])
        ),
    );
    let _agent = d.start();
    // (`first_byte_timeout`: `idle_timeout`'s old name, which every version
    // reads, so that this test also runs against the code before the fix.)
    // Four uids, 32 connections each: counted by uid they would fill all 64.
    let (mut attacker, held) = hold_slots(&d.socket(), 32);
    assert_eq!(held, 16, "all of a user's uids count as that user");
    // Root and another user are still served while the attacker holds its share.
    jwt_svid(&d.socket()).unwrap();
    let other = d.dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::os::unix::fs::chown(&other, Some(1002), Some(1002)).unwrap();
    let (ok, err) = fetch_cmd(as_user(1002), &d.socket(), &other.join("out"));
    assert!(ok, "{err}");
    drop(attacker.stdin.take());
    attacker.wait().unwrap();
}

#[test]
fn attacker_connections_that_never_complete_a_request_are_closed() {
    let d = Deployment::new(
        "sec-idle",
        &format!(
            "{}[connections]\nfirst_byte_timeout = \"2s\"\n",
            entry("root", &["unix:uid:0"])
        ),
    );
    let _agent = d.start();
    // Each connection sends the HTTP/2 preface, which once reset the timer.
    let (mut attacker, held) = hold_slots(&d.socket(), 8);
    assert!(held > 0);
    std::thread::sleep(Duration::from_secs(4));
    drop(attacker.stdin.take());
    let out = attacker.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("closed {held}")), "{text}");
}

// ---------------------------------------------------------------------------
// Finding 8: the health endpoint.

#[test]
fn attacker_floods_the_health_endpoint_and_fetches_still_work() {
    let d = Deployment::new("sec-health", &entry("root", &["unix:uid:0"]));
    let addr = d.enable_health();
    let cfg = d.dir.join("agent.toml");
    // The agent with systemd's default soft limit of 1,024 descriptors.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=1024:1024", "--"])
        .arg(lanyard_bin())
        .args(["agent", "--config", cfg.to_str().unwrap()]);
    let sock = d.socket();
    let agent = lanyard_tests::spawn_command(cmd, d.dir.join("agent.log"), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    // 1,100 idle TCP connections from uid 1001, held open.
    let flood = "import socket,sys\n\
        host,port=sys.argv[1].rsplit(':',1); conns=[]\n\
        for _ in range(1100):\n\
        \x20   try:\n\
        \x20       conns.append(socket.create_connection((host,int(port)),timeout=2))\n\
        \x20   except OSError: pass\n\
        print(len(conns),flush=True); sys.stdin.read()\n";
    let mut attacker = as_user(ATTACKER)
        .args(["/usr/bin/python3", "-c", flood, &addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(attacker.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    // The agent holds at most its cap of them, and keeps descriptors to spare.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))
        .unwrap()
        .count();
    assert!(
        fds < 200,
        "the agent holds {fds} descriptors during the flood"
    );
    jwt_svid(&d.socket()).unwrap();
    let (ok, err) = fetch_cmd(Command::new("env"), &d.socket(), &d.dir.join("out"));
    assert!(ok, "{err}");
    // The health endpoint still answers a prober: the oldest idle connection
    // makes room for it.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let probe = || -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(&addr)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")?;
            let mut resp = String::new();
            std::io::Read::read_to_string(&mut s, &mut resp)?;
            Ok(resp)
        };
        match probe() {
            Ok(r) if r.contains(" 200 ") => break,
            other => assert!(
                Instant::now() < deadline,
                "/healthz never answered: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(attacker.stdin.take());
    attacker.wait().unwrap();
}

// ---------------------------------------------------------------------------
// Finding 9: HTTP/2 streams.

#[test]
fn attacker_cannot_open_thousands_of_watch_streams() {
    // MAX_CONCURRENT_STREAMS is advertised before any request, with the
    // default config.
    let d = Deployment::new("sec-settings", &entry("root", &["unix:uid:0"]));
    let agent = d.start();
    let o = Command::new("/usr/bin/python3")
        .arg(script("h2_settings.py"))
        .arg(d.socket())
        .output()
        .unwrap();
    let settings = String::from_utf8_lossy(&o.stdout);
    assert!(
        settings.lines().any(|l| l == "3=32"),
        "SETTINGS: {settings}"
    );
    drop(agent);
    let d = Deployment::new(
        "sec-streams",
        &format!(
            "{}[connections]\nmax_streams_per_uid = 8\n",
            entry("root", &["unix:uid:0"])
        ),
    );
    let _agent = d.start();
    // One identity, many watch streams over two connections: 8 are served,
    // the rest refused.
    let (ok, exhausted) = rt().block_on(async {
        let mut ok = 0;
        let mut exhausted = 0;
        let mut keep = Vec::new();
        for _ in 0..2 {
            let ch = connect(&d.socket()).await.unwrap();
            for _ in 0..6 {
                let mut c = SpiffeWorkloadApiClient::new(ch.clone());
                match c.fetch_x509svid(with_header(X509svidRequest {})).await {
                    Ok(r) => {
                        let mut s = r.into_inner();
                        match s.message().await {
                            Ok(Some(_)) => {
                                ok += 1;
                                keep.push(s);
                            }
                            Err(st) if st.code() == tonic::Code::ResourceExhausted => {
                                exhausted += 1
                            }
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    Err(st) if st.code() == tonic::Code::ResourceExhausted => exhausted += 1,
                    Err(st) => panic!("unexpected {st:?}"),
                }
            }
        }
        (ok, exhausted)
    });
    assert_eq!((ok, exhausted), (8, 4));
}

// ---------------------------------------------------------------------------
// Finding 10: files the agent trusts.

#[test]
fn the_agent_refuses_a_data_dir_or_socket_dir_others_control() {
    let d = Deployment::new("sec-dirs", &entry("root", &["unix:uid:0"]));
    let cfg = d.dir.join("agent.toml");
    let run = |mutate: &dyn Fn()| {
        let _ = std::fs::remove_dir_all(d.dir.join("data"));
        let _ = std::fs::remove_dir_all(d.dir.join("run"));
        mutate();
        let mut c = Command::new(lanyard_bin())
            .args(["agent", "--config", cfg.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(c.stderr.as_mut().unwrap(), &mut err).unwrap();
                return (Some(status), err);
            }
            if std::os::unix::net::UnixStream::connect(d.socket()).is_ok()
                || Instant::now() > deadline
            {
                let _ = c.kill();
                let _ = c.wait();
                return (None, String::new());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let data = d.dir.join("data");
    let run_dir = d.dir.join("run");
    for (what, mutate, key) in [
        (
            "data_dir owned by the attacker",
            Box::new(|| {
                std::fs::create_dir_all(&data).unwrap();
                std::os::unix::fs::chown(&data, Some(ATTACKER), Some(ATTACKER)).unwrap();
            }) as Box<dyn Fn()>,
            "data_dir",
        ),
        (
            "data_dir writable by all",
            Box::new(|| {
                std::fs::create_dir_all(&data).unwrap();
                std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
            }),
            "data_dir",
        ),
        (
            "socket directory owned by the attacker",
            Box::new(|| {
                std::fs::create_dir_all(&run_dir).unwrap();
                std::os::unix::fs::chown(&run_dir, Some(ATTACKER), Some(ATTACKER)).unwrap();
            }),
            "socket_path",
        ),
        (
            "socket directory writable by group",
            Box::new(|| {
                std::fs::create_dir_all(&run_dir).unwrap();
                std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o775)).unwrap();
            }),
            "socket_path",
        ),
    ] {
        let (status, err) = run(&*mutate);
        let status = status.unwrap_or_else(|| panic!("{what}: the agent started"));
        assert!(!status.success(), "{what}");
        assert!(
            err.contains(key) && err.contains("allow_insecure_dirs"),
            "{what}: {err}"
        );
    }
    // The operator's explicit override.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("allow_insecure_dirs = true\n{text}")).unwrap();
    let (status, _) = run(&|| {
        std::fs::create_dir_all(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    });
    assert!(
        status.is_none(),
        "allow_insecure_dirs = true starts the agent"
    );
}

/// Runs `openssl args…`, failing the test if it fails.
fn openssl(args: &[&str]) -> Vec<u8> {
    let o = Command::new("openssl").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

#[test]
fn a_planted_x509_svid_in_the_cache_file_is_never_served() {
    let d = Deployment::new("sec-plant", &entry("me", &["unix:uid:0"]));
    let agent = d.start();
    // A real SVID gets cached and persisted.
    let first = x509_leaf(&d.socket());
    assert!(agent.terminate().success());
    let cache = d.dir.join("data/cache.json");
    let text = std::fs::read_to_string(&cache).unwrap();
    assert!(text.contains("\"x509_svid\""), "{text}");
    let real: serde_json::Value = serde_json::from_str(&text).unwrap();
    let real_entry = real["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e[1]["value"]["type"] == "x509_svid")
        .unwrap()[1]["value"]
        .clone();
    let real_chain: Vec<String> = serde_json::from_value(real_entry["chain"].clone()).unwrap();

    // The attacker's material: an ed25519 CA of its own, a P-256 key, and
    // leaves for the same name.
    let f = |n: &str| d.dir.join(n).display().to_string();
    std::fs::write(
        d.dir.join("ext"),
        "subjectAltName=URI:spiffe://example.org/me\n",
    )
    .unwrap();
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", &f("ca.key")]);
    openssl(&[
        "req",
        "-x509",
        "-key",
        &f("ca.key"),
        "-subj",
        "/CN=attacker-ca",
        "-days",
        "1",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-out",
        &f("ca.pem"),
    ]);
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &f("leaf.key"),
        "-subj",
        "/CN=me",
        "-out",
        &f("leaf.csr"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &f("leaf.csr"),
        "-CA",
        &f("ca.pem"),
        "-CAkey",
        &f("ca.key"),
        "-days",
        "1",
        "-extfile",
        &f("ext"),
        "-out",
        &f("leaf.pem"),
    ]);
    openssl(&[
        "req",
        "-x509",
        "-key",
        &f("leaf.key"),
        "-subj",
        "/CN=me",
        "-days",
        "1",
        "-addext",
        "subjectAltName=URI:spiffe://example.org/me",
        "-out",
        &f("self.pem"),
    ]);
    let der = |pem: &str| base64_std(&openssl(&["x509", "-in", &f(pem), "-outform", "DER"]));
    let key = base64_std(&openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        &f("leaf.key"),
        "-outform",
        "DER",
    ]));

    // Each forgery, and the check that stops it.
    let forgeries = [
        (
            "its own CA",
            vec![der("leaf.pem"), der("ca.pem")],
            "not certified by the org",
        ),
        (
            "the real CA, a self-signed leaf",
            vec![der("self.pem"), real_chain[1].clone()],
            "not signed by the CA",
        ),
        (
            "the real chain, the attacker's key",
            real_chain.clone(),
            "private key does not match",
        ),
        (
            "a lone self-signed leaf",
            vec![der("self.pem")],
            "leaf + CA",
        ),
    ];
    for (what, chain, reason) in forgeries {
        let mut v = real.clone();
        for e in v["entries"].as_array_mut().unwrap() {
            if e[1]["value"]["type"] == "x509_svid" {
                e[1]["value"]["chain"] = serde_json::json!(chain.clone());
                e[1]["value"]["key"] = serde_json::json!(key.clone());
            }
        }
        std::fs::write(&cache, serde_json::to_string(&v).unwrap()).unwrap();
        let agent = d.start();
        let served = x509_leaf(&d.socket());
        assert_ne!(
            base64_std(&served),
            chain[0],
            "{what}: the planted certificate was served"
        );
        assert_ne!(served, first, "{what}: a fresh SVID is minted");
        let log = agent.log();
        assert!(
            log.contains("does not verify") && log.contains(reason),
            "{what}: {log}"
        );
        assert!(agent.terminate().success());
    }
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The DER of the X.509-SVID leaf the agent serves this process.
fn x509_leaf(socket: &Path) -> Vec<u8> {
    rt().block_on(async {
        let ch = connect(socket).await.unwrap();
        let mut s = SpiffeWorkloadApiClient::new(ch)
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await
            .unwrap()
            .into_inner();
        let m = s.message().await.unwrap().unwrap();
        let chain = &m.svids[0].x509_svid;
        // The first certificate of the concatenated DER chain: a SEQUENCE with
        // a two-byte long-form length.
        assert_eq!(&chain[..2], &[0x30, 0x82]);
        let len = 4 + usize::from(u16::from_be_bytes([chain[2], chain[3]]));
        chain[..len].to_vec()
    })
}
