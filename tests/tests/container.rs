//! Container attestation against real kernel cgroups and a real Docker daemon.
//!
//! - Real cgroups: for every layout the parser knows, the test creates cgroups
//!   with those names in this machine's hierarchies (cgroup v2 and a v1
//!   controller), moves a live process in, and asks `lanyard attest --pid`.
//! - Real runtime: containerd + dockerd started by hand, an image imported from
//!   a busybox rootfs, a labelled container with a kubelet-shaped cgroup parent;
//!   a process inside it fetches its identity through the mounted agent socket.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanyard_plugins::container::ContainerAttestor;
use lanyard_plugins::k8s::{K8sAttestor, K8sConfig};
use lanyard_plugins::{ProcessRef, WorkloadAttestor};

use lanyard_plugins::k8s_testing::{pod_list_json, FakeContainer, FakeKubelet, FakePod};
use lanyard_tests::cgroups::{hierarchies, InCgroup};
use lanyard_tests::docker::{DockerDaemon, IMAGE};
use lanyard_tests::{lanyard, Deployment};

fn attest(pid: u32, config: Option<&Path>) -> serde_json::Value {
    let pid = pid.to_string();
    let mut args = vec!["attest", "--pid", pid.as_str(), "--json"];
    let cfg;
    if let Some(c) = config {
        cfg = c.display().to_string();
        args.extend(["--config", cfg.as_str()]);
    }
    let out = lanyard(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn selectors(v: &serde_json::Value) -> Vec<String> {
    v["selectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn id(n: u8) -> String {
    format!("{:02x}", n).repeat(32)
}

#[test]
fn every_cgroup_layout_on_real_hierarchies() {
    if hierarchies().is_empty() || !nix_root() {
        lanyard_tests::skip("needs root and a writable cgroup hierarchy");
        return;
    }
    let uid = "6d6a7b2c-1e3f-4a5b-9c8d-0e1f2a3b4c5d";
    let uid_ = uid.replace('-', "_");
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            format!("lanyard-t.slice/system.slice/docker-{}.scope", id(1)),
            vec![format!("container:id:{}", id(1)), "container:runtime:docker".into()],
        ),
        (
            format!("lanyard-t.slice/docker/{}", id(2)),
            vec![format!("container:id:{}", id(2)), "container:runtime:docker".into()],
        ),
        (
            format!("lanyard-t.slice/kubepods/besteffort/pod{uid}/{}", id(3)),
            vec![format!("container:id:{}", id(3)), format!("container:pod-uid:{uid}")],
        ),
        (
            format!(
                "lanyard-t.slice/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{}.scope",
                id(4)
            ),
            vec![
                format!("container:id:{}", id(4)),
                format!("container:pod-uid:{uid}"),
                "container:runtime:containerd".into(),
            ],
        ),
        (
            format!("lanyard-t.slice/kubepods.slice/kubepods-pod{uid_}.slice/crio-{}.scope", id(5)),
            vec![
                format!("container:id:{}", id(5)),
                format!("container:pod-uid:{uid}"),
                "container:runtime:cri-o".into(),
            ],
        ),
        (
            // Rootless podman: named by the user, in the user's delegated
            // subtree, so not believed; the user's systemd manager is the unit.
            format!(
                "lanyard-t.slice/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{}.scope/container",
                id(6)
            ),
            vec!["systemd:unit:user@1000.service".into()],
        ),
        (
            // kind: a node container holding a pod's container; the innermost wins.
            format!("lanyard-t.slice/docker/{}/kubepods/besteffort/pod{uid}/{}", id(7), id(8)),
            vec![format!("container:id:{}", id(8)), format!("container:pod-uid:{uid}")],
        ),
        (
            // containerd outside Kubernetes: /<namespace>/<id>.
            format!("lanyard-t.slice/default/{}", id(10)),
            vec![format!("container:id:{}", id(10)), "container:runtime:containerd".into()],
        ),
        (
            format!("lanyard-t.slice/machine.slice/libpod-{}.scope", id(11)),
            vec![format!("container:id:{}", id(11)), "container:runtime:podman".into()],
        ),
        (
            "lanyard-t.slice/system.slice/lanyard-test.service".into(),
            vec!["systemd:unit:lanyard-test.service".into()],
        ),
    ];
    for (rel, want) in cases {
        let Some(p) = InCgroup::new(&rel) else {
            lanyard_tests::skip(&format!("cannot create or join cgroup {rel}"));
            return;
        };
        let got = selectors(&attest(p.pid(), None));
        for w in &want {
            assert!(got.contains(w), "{rel}: {w} missing from {got:?}");
        }
        assert_eq!(
            got.iter()
                .filter(|s| s.starts_with("container:id:"))
                .count(),
            usize::from(want.iter().any(|w| w.starts_with("container:id:"))),
            "{rel}: {got:?}"
        );
        drop(p);
    }
    // Namespace-relative paths: an agent in its own cgroup namespace (a
    // container) sees a sibling's cgroup as `/../crio-<id>.scope`. The attest
    // runs in a new cgroup namespace rooted at a sibling cgroup.
    let target = InCgroup::new(&format!("lanyard-t.slice/crio-{}.scope", id(12))).unwrap();
    let agent_side = InCgroup::new("lanyard-t.slice/agent").unwrap();
    let procs: Vec<String> = agent_side
        .dirs()
        .iter()
        .map(|d| d.join("cgroup.procs").display().to_string())
        .collect();
    // By default the agent cannot check who owns a cgroup outside its
    // namespace, so it believes no name there; with `unverifiable_cgroups =
    // "trust_names"` it does.
    let trusting =
        std::env::temp_dir().join(format!("lanyard-trusting-{}.toml", std::process::id()));
    lanyard_tests::write_attest_config(&trusting, "unverifiable_cgroups = \"trust_names\"");
    let cfg = d_tmp(&trusting);
    // Or, better, given the host's cgroup v2 tree it finds its own place there
    // and checks the owners of `/../…` paths like any other.
    let host_view =
        std::env::temp_dir().join(format!("lanyard-hostview-{}.toml", std::process::id()));
    lanyard_tests::write_attest_config(
        &host_view,
        &format!(
            "host_cgroup_root = \"{}\"",
            lanyard_tests::cgroups::cgroup2_root()
                .expect("a cgroup2 mount")
                .display()
        ),
    );
    let hv = d_tmp(&host_view);
    for (config, believed) in [
        (None, false),
        (Some(cfg.as_str()), true),
        (Some(hv.as_str()), true),
    ] {
        let script = format!(
            "for f in {}; do echo $$ > $f; done; exec unshare --cgroup sh -c 'cat /proc/{pid}/cgroup >&2; exec {} attest --pid {pid} --json {}'",
            procs.join(" "),
            lanyard_tests::lanyard_bin().display(),
            config.map(|c| format!("--config {c}")).unwrap_or_default(),
            pid = target.pid()
        );
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // What the attest saw is relative to its own namespace root.
        let seen = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            seen.contains(&format!("/../crio-{}.scope", id(12))),
            "{seen}"
        );
        let got = selectors(&serde_json::from_slice(&out.stdout).unwrap());
        assert_eq!(
            got.contains(&format!("container:id:{}", id(12)))
                && got.contains(&"container:runtime:cri-o".to_owned()),
            believed,
            "{config:?}: {got:?} (host view: {seen})"
        );
    }
    let _ = std::fs::remove_file(&trusting);
    let _ = std::fs::remove_file(&host_view);
    drop((target, agent_side));

    // A CRI-O conmon process is not the container.
    let p = InCgroup::new(&format!(
        "lanyard-t.slice/kubepods.slice/crio-conmon-{}.scope",
        id(9)
    ))
    .unwrap();
    let got = selectors(&attest(p.pid(), None));
    assert!(
        !got.iter().any(|s| s.starts_with("container:id:")),
        "{got:?}"
    );
}

/// A path as text, for a shell line.
fn d_tmp(p: &Path) -> String {
    p.display().to_string()
}

fn k8s_config(dir: &Path, kubelet: &FakeKubelet, ca_pem: &str) -> K8sConfig {
    let ca = dir.join(format!("ca-{}.pem", kubelet.port()));
    std::fs::write(&ca, ca_pem).unwrap();
    let mut c = K8sConfig::new(dir.join("sa-token"));
    c.kubelet_port = kubelet.port();
    c.ca_file = Some(ca);
    c.pod_wait = std::time::Duration::from_secs(5);
    c.retry_every = std::time::Duration::from_millis(100);
    c
}

fn k8s_attestor_on_the_real_container(dir: &Path, pid: i32, pod: &str, container: &str) {
    let process = ProcessRef {
        pid,
        uid: 0,
        gid: 0,
        groups: None,
    };
    let id = Arc::new(Mutex::new(container.to_owned()));

    // 50 concurrent attestations, one kubelet request (it answers slowly so
    // that they overlap).
    let kubelet = FakeKubelet::start(
        "sa-token",
        pods(pod, id.clone()),
        Duration::from_millis(300),
    );
    let a = Arc::new(
        K8sAttestor::new(
            k8s_config(dir, &kubelet, &kubelet.ca_pem()),
            ContainerAttestor::new(),
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let (a, process) = (a.clone(), process.clone());
            std::thread::spawn(move || a.attest(&process))
        })
        .collect();
    for t in threads {
        let got = t.join().unwrap().unwrap();
        assert!(
            got.iter().any(|s| s.as_str() == "k8s:container-name:app"),
            "{got:?}"
        );
    }
    assert_eq!(
        kubelet.requests(),
        1,
        "50 attestations, one kubelet request"
    );

    // Not yet visible: the kubelet lists the pod without this container for
    // its first three answers; the attestation waits and then succeeds.
    let hidden_answers = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let late = {
        let hidden = pods(pod, Arc::new(Mutex::new(String::new())));
        let shown = pods(pod, id.clone());
        let count = hidden_answers.clone();
        FakeKubelet::start(
            "sa-token",
            move |_| {
                if count.load(std::sync::atomic::Ordering::SeqCst) < 3 {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    hidden(0)
                } else {
                    shown(0)
                }
            },
            Duration::ZERO,
        )
    };
    let a = K8sAttestor::new(
        k8s_config(dir, &late, &late.ca_pem()),
        ContainerAttestor::new(),
    )
    .unwrap();
    let got = a.attest(&process).unwrap();
    assert!(
        got.iter()
            .any(|s| s.as_str() == format!("k8s:pod-uid:{pod}")),
        "{got:?}"
    );
    // Three answers without the container were retried past, then one with it.
    assert_eq!(hidden_answers.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(late.requests(), 4);

    // TLS verification failure: another kubelet's CA. No selectors, no request.
    let other = FakeKubelet::start("sa-token", pods(pod, id), Duration::ZERO);
    let mut c = k8s_config(dir, &kubelet, &other.ca_pem());
    c.pod_wait = std::time::Duration::from_millis(500);
    let before = kubelet.requests();
    let a = K8sAttestor::new(c, ContainerAttestor::new()).unwrap();
    let e = a.attest(&process).unwrap_err();
    assert!(e.to_string().contains("kubelet"), "{e}");
    assert_eq!(
        kubelet.requests(),
        before,
        "no request over an unverified connection"
    );
}

/// The kubelet's view: one pod (the real container's pod uid) with one
/// container `app` (the real container's id, once it exists).
fn pods(
    pod: &str,
    container: Arc<Mutex<String>>,
) -> impl Fn(u64) -> String + Send + Sync + 'static {
    let pod = pod.to_owned();
    move |_| {
        let id = container.lock().unwrap().clone();
        pod_list_json(&[FakePod {
            namespace: "shop".into(),
            name: "cart-7d4b9c-x2k8p".into(),
            uid: pod.clone(),
            node_name: "node-1".into(),
            service_account: "cart".into(),
            labels: vec![("app".into(), "cart".into())],
            replica_set: Some("cart-7d4b9c".into()),
            containers: vec![FakeContainer {
                name: "app".into(),
                image: IMAGE.into(),
                container_id: (!id.is_empty()).then(|| format!("docker://{id}")),
            }],
        }])
    }
}

fn nix_root() -> bool {
    lanyard_tests::my_uid() == 0
}

#[test]
fn docker_container_is_attested_and_served_through_the_mounted_socket() {
    let d = match DockerDaemon::start() {
        Ok(d) => d,
        Err(e) => {
            lanyard_tests::skip(&format!("this machine cannot run containers: {}", e.0));
            return;
        }
    };
    let entries = "[[entries]]\nsubject = \"spiffe://example.org/demo\"\nselectors = [\"docker:label:app:demo\"]\n\
                   [[entries]]\nsubject = \"spiffe://{trust_domain}/ns/{k8s:ns}/sa/{k8s:sa}\"\nselectors = [\"k8s:container-name:app\"]\n";
    let dep = Deployment::new("docker", entries);
    let pod = "0e8d6c4b-2a19-4f7e-8d5c-3b1a09f8e7d6";

    // No kubelet can run here: a stand-in (HTTPS, bearer token, real-shaped
    // `/pods`) lists the pod whose uid and container id are the real container's.
    let container_id = Arc::new(Mutex::new(String::new()));
    let kubelet = FakeKubelet::start(
        "sa-token",
        pods(pod, container_id.clone()),
        std::time::Duration::ZERO,
    );
    std::fs::write(dep.dir.join("kubelet-ca.pem"), kubelet.ca_pem()).unwrap();
    std::fs::write(dep.dir.join("sa-token"), "sa-token").unwrap();
    let cfg = dep.dir.join("agent.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "[plugins.container]\ndocker_socket = \"{}\"\n[plugins.k8s]\nkubelet_port = {}\nca_file = \"kubelet-ca.pem\"\ntoken_file = \"sa-token\"\npod_wait = \"3s\"\n",
        d.socket().display(),
        kubelet.port()
    ));
    std::fs::write(&cfg, text).unwrap();

    // The lanyard binary and the host's libraries are mounted read-only (the
    // image is only busybox), and the agent socket's folder, as a DaemonSet does.
    let bin = lanyard_tests::lanyard_bin();
    let out = dep.dir.join("out");
    let sock_dir = dep.socket().parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&sock_dir).unwrap();
    let mounts = [
        format!("{}:/lanyard:ro", bin.display()),
        "/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:ro".into(),
        "/lib64:/lib64:ro".into(),
        format!("{}:/run/lanyard", sock_dir.display()),
        format!("{}:/out", out.display()),
    ];
    let with_mounts = |mut args: Vec<String>| {
        for m in &mounts {
            args.extend(["-v".to_owned(), m.clone()]);
        }
        args
    };

    // A labelled container in a kubelet-shaped cgroup parent.
    let parent = format!("/kubepods/besteffort/pod{pod}");
    let mut run: Vec<String> = [
        "run",
        "-d",
        "--network",
        "none",
        "--label",
        "app=demo",
        "--label",
        "tier=web",
        "--cgroup-parent",
        &parent,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    run = with_mounts(run);
    run.extend([IMAGE, "/bin/sleep", "300"].map(String::from));
    let sleeper = d.docker(&run.iter().map(String::as_str).collect::<Vec<_>>());
    *container_id.lock().unwrap() = sleeper.clone();
    let _agent = dep.start();

    // attest reports the container id, the pod uid, the labels, the image, and
    // the pod's metadata from the (stand-in) kubelet.
    let pid = u32::try_from(d.pid(&sleeper)).unwrap();
    let image_id = d.docker(&["inspect", "-f", "{{.Image}}", &sleeper]);
    let got = selectors(&attest(pid, Some(&cfg)));
    for w in [
        format!("container:id:{sleeper}"),
        // No container:runtime: a kubelet-shaped cgroupfs path does not name
        // the runtime, and the parser does not guess.
        format!("container:pod-uid:{pod}"),
        "docker:label:app:demo".into(),
        "docker:label:tier:web".into(),
        format!("docker:image_id:{image_id}"),
        format!("docker:image:{IMAGE}"),
        "k8s:ns:shop".into(),
        "k8s:sa:cart".into(),
        "k8s:pod-name:cart-7d4b9c-x2k8p".into(),
        format!("k8s:pod-uid:{pod}"),
        "k8s:container-name:app".into(),
        "k8s:node-name:node-1".into(),
    ] {
        assert!(got.contains(&w), "{w} missing from {got:?}");
    }

    // The k8s attestor itself, in process, against stand-in kubelets that list
    // this real container: one shared fetch for 50 concurrent attestations, a
    // container that shows up late, and a kubelet whose certificate the
    // configured CA did not sign.
    k8s_attestor_on_the_real_container(&dep.dir.0, i32::try_from(pid).unwrap(), pod, &sleeper);

    // Its identities: the label entry's, and the template's filled from the
    // pod's namespace and service account.
    let report = attest(pid, Some(&cfg));
    assert_eq!(
        report["identities"],
        serde_json::json!([
            "spiffe://example.org/demo",
            "spiffe://example.org/ns/shop/sa/cart"
        ]),
        "{report}"
    );

    // A process inside the container gets them through the mounted socket
    // (`lanyard fetch` writes the first, as SPIFFE's default SVID).
    d.docker(&[
        "exec",
        &sleeper,
        "/lanyard",
        "fetch",
        "--socket",
        "/run/lanyard/agent.sock",
        "--out-dir",
        "/out",
    ]);
    let jwt = std::fs::read_to_string(out.join("credential.jwt")).unwrap();
    let claims: lanyard_token::Claims =
        serde_json::from_slice(&lanyard_token::jws::parse(jwt.trim()).unwrap().payload).unwrap();
    assert_eq!(claims.sub.as_deref(), Some("spiffe://example.org/demo"));
    let x509 = std::fs::read_to_string(out.join("svid.pem")).unwrap();
    assert!(x509.contains("BEGIN CERTIFICATE"));

    // The same binary in a container without the label, outside the pod: nothing.
    let mut other: Vec<String> = ["run", "--rm", "--network", "none", "--label", "app=other"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    other = with_mounts(other);
    other.extend(
        [
            IMAGE,
            "/lanyard",
            "fetch",
            "--socket",
            "/run/lanyard/agent.sock",
            "--out-dir",
            "/out/x",
        ]
        .map(String::from),
    );
    let refused = Command::new("docker")
        .env("DOCKER_HOST", format!("unix://{}", d.socket().display()))
        .args(&other)
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "an unlabelled container got an identity"
    );
    d.docker(&["rm", "-f", &sleeper]);
}
