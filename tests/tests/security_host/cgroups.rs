//! Findings 1 and 2: forged container and pod cgroups, and a forged cgroup mount.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lanyard_tests::{entry, lanyard_bin, Deployment};

use super::{as_user, attacker_dir, StdinBytes, ATTACKER};

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
