//! The `k8s` workload attestor against a stand-in kubelet: HTTPS with a CA-signed
//! serving certificate, bearer-token checks, and real-shaped `/pods` answers; the
//! process is placed in its pod by a fake `/proc`.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use lanyard_plugins::container::ContainerAttestor;
use lanyard_plugins::k8s::{K8sAttestor, K8sConfig, K8sError};
use lanyard_plugins::k8s_testing::{pod_list_json, FakeContainer, FakeKubelet, FakePod};
use lanyard_plugins::{AttestError, ProcessRef, WorkloadAttestor};

const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImZha2UtMSJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bGFueWFyZDphZ2VudCJ9.c2ln";
const POD_UID: &str = "8b9dd266-60dd-4433-8e5e-3bdcc7697bee";
const ID: &str = "c72b44f312b344d22b2be689192bc97c7a1c7b7e0dec34aa172140e89d47980b";
const SIDECAR: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
const NODE: &str = "worker-1";
/// The process in the pod, and one on the host.
const IN_POD: i32 = 4242;
const ON_HOST: i32 = 77;

/// The pod: a Deployment's replica with the workload and a sidecar, and
/// (`workload_started: false`) its workload container not created yet.
fn pod(workload_started: bool) -> FakePod {
    FakePod {
        namespace: "shop".into(),
        name: "web-7d4b9c8f6d-x2k9p".into(),
        uid: POD_UID.into(),
        node_name: NODE.into(),
        service_account: "web".into(),
        labels: vec![
            ("app".into(), "web".into()),
            ("pod-template-hash".into(), "7d4b9c8f6d".into()),
        ],
        replica_set: Some("web-7d4b9c8f6d".into()),
        containers: vec![
            FakeContainer {
                name: "web".into(),
                image: "ghcr.io/example/web:2.4.1".into(),
                container_id: workload_started.then(|| format!("containerd://{ID}")),
            },
            FakeContainer {
                name: "proxy".into(),
                image: "envoyproxy/envoy:v1.31.2".into(),
                container_id: Some(format!("containerd://{SIDECAR}")),
            },
        ],
    }
}

/// Another pod on the node, so that matching has something to skip.
fn other_pod() -> FakePod {
    FakePod {
        namespace: "kube-system".into(),
        name: "coredns-76f75df574-8zq4n".into(),
        uid: "1eea9d90-af39-488d-9c44-3171eadc1718".into(),
        node_name: NODE.into(),
        service_account: "coredns".into(),
        labels: vec![("k8s-app".into(), "kube-dns".into())],
        replica_set: Some("coredns-76f75df574".into()),
        containers: vec![FakeContainer {
            name: "coredns".into(),
            image: "registry.k8s.io/coredns/coredns:v1.11.3".into(),
            container_id: Some(format!("containerd://{}", "d".repeat(64))),
        }],
    }
}

fn list(workload_started: bool) -> String {
    pod_list_json(&[other_pod(), pod(workload_started)])
}

/// A fake `/proc` with the workload in its pod's kubepods cgroup (systemd
/// driver, containerd) and a host process, plus the token and CA files.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(ca_pem: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let proc_root = dir.path().join("proc");
        let uid_ = POD_UID.replace('-', "_");
        let cgroup = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{ID}.scope\n"
        );
        for (pid, cgroup) in [
            (IN_POD, cgroup.as_str()),
            (ON_HOST, "0::/user.slice/user-1000.slice/session-3.scope\n"),
        ] {
            let d = proc_root.join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("cgroup"), cgroup).unwrap();
        }
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca_pem).unwrap();
        Self { dir }
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    fn config(&self, kubelet: &FakeKubelet) -> K8sConfig {
        let mut c = K8sConfig::new(self.token_file());
        c.kubelet_port = kubelet.port();
        c.ca_file = Some(self.dir.path().join("ca.crt"));
        c.node_name = Some(NODE.into());
        c
    }

    fn attestor(&self, config: K8sConfig) -> K8sAttestor {
        // Every cgroup directory the fake /proc names, on a stand-in cgroup
        // filesystem owned by this test's uid (standing in for root).
        let files: Vec<String> = std::fs::read_dir(self.dir.path().join("proc"))
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path().join("cgroup")).ok())
            .collect();
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        let fs = lanyard_plugins::cgroupfs::fake(&self.dir.path().join("cg"), &files).unwrap();
        let container = ContainerAttestor::new()
            .with_proc_root(self.dir.path().join("proc"))
            .with_cgroupfs(fs);
        K8sAttestor::new(config, container).unwrap()
    }
}

fn process(pid: i32) -> ProcessRef {
    ProcessRef {
        pid,
        uid: 1000,
        gid: 1000,
        groups: None,
    }
}

fn attest(a: &K8sAttestor, pid: i32) -> Result<Vec<String>, AttestError> {
    Ok(a.attest(&process(pid))?
        .iter()
        .map(ToString::to_string)
        .collect())
}

fn expected() -> Vec<String> {
    let mut want: Vec<String> = [
        "k8s:ns:shop".to_owned(),
        "k8s:sa:web".to_owned(),
        "k8s:pod-name:web-7d4b9c8f6d-x2k9p".to_owned(),
        format!("k8s:pod-uid:{POD_UID}"),
        "k8s:pod-label:app:web".to_owned(),
        "k8s:pod-label:pod-template-hash:7d4b9c8f6d".to_owned(),
        "k8s:pod-owner:ReplicaSet:web-7d4b9c8f6d".to_owned(),
        format!("k8s:node-name:{NODE}"),
        "k8s:container-name:web".to_owned(),
        // The status image: what the runtime resolved, not the spec's text.
        "k8s:container-image:ghcr.io/example/web:2.4.1".to_owned(),
    ]
    .into();
    want.sort();
    want
}

#[test]
fn all_selectors_for_a_pod_container() {
    let kubelet = FakeKubelet::start(TOKEN, |_| list(true), Duration::ZERO);
    let f = Fixture::new(&kubelet.ca_pem());
    let a = f.attestor(f.config(&kubelet));
    assert_eq!(a.name(), "k8s");
    assert_eq!(attest(&a, IN_POD).unwrap(), expected());
    // Within the cache TTL a second attestation costs no request.
    assert_eq!(attest(&a, IN_POD).unwrap(), expected());
    assert_eq!((kubelet.requests(), a.kubelet_requests()), (1, 1));
}

#[test]
fn the_sidecar_is_told_apart_and_the_host_name_works() {
    let kubelet = FakeKubelet::start(TOKEN, |_| list(true), Duration::ZERO);
    let f = Fixture::new(&kubelet.ca_pem());
    // The sidecar's cgroup, in the same pod.
    let uid_ = POD_UID.replace('-', "_");
    std::fs::write(
        f.dir.path().join(format!("proc/{IN_POD}/cgroup")),
        format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{SIDECAR}.scope\n"),
    )
    .unwrap();
    // By DNS name: the certificate names localhost too.
    let mut c = f.config(&kubelet);
    c.kubelet_host = "localhost".into();
    let got = attest(&f.attestor(c), IN_POD).unwrap();
    assert!(
        got.contains(&"k8s:container-name:proxy".to_owned()),
        "{got:?}"
    );
    assert!(
        got.contains(&"k8s:container-image:docker.io/envoyproxy/envoy:v1.31.2".to_owned()),
        "{got:?}"
    );
    assert!(!got
        .iter()
        .any(|s| s.ends_with(":web") && s.contains("container-name")));
}

#[test]
fn a_container_not_yet_listed_is_waited_for() {
    let start = Instant::now();
    let kubelet = FakeKubelet::start(
        TOKEN,
        move |_| list(start.elapsed() >= Duration::from_millis(600)),
        Duration::ZERO,
    );
    let f = Fixture::new(&kubelet.ca_pem());
    let a = f.attestor(f.config(&kubelet));
    assert_eq!(attest(&a, IN_POD).unwrap(), expected());
    assert!(start.elapsed() >= Duration::from_millis(600));
    // Refetched every 250 ms (bypassing the 1 s cache) until it appeared.
    assert!(kubelet.requests() >= 3, "{}", kubelet.requests());
    assert_eq!(kubelet.requests(), a.kubelet_requests());
}

#[test]
fn a_container_that_never_appears_fails_closed_after_pod_wait() {
    let kubelet = FakeKubelet::start(TOKEN, |_| list(false), Duration::ZERO);
    let f = Fixture::new(&kubelet.ca_pem());
    let mut c = f.config(&kubelet);
    c.pod_wait = Duration::from_secs(1);
    let a = f.attestor(c);
    let start = Instant::now();
    let err = attest(&a, IN_POD).unwrap_err();
    let waited = start.elapsed();
    assert!(
        matches!(&err, AttestError::Io { what, .. } if what == "kubelet"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("kubelet: container {ID} of pod {POD_UID} not in the kubelet's pod list after 1s")
    );
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(kubelet.requests() >= 4, "{}", kubelet.requests());

    // A pod the kubelet does not list at all: the same.
    let gone = FakeKubelet::start(TOKEN, |_| pod_list_json(&[other_pod()]), Duration::ZERO);
    let f = Fixture::new(&gone.ca_pem());
    let mut c = f.config(&gone);
    c.pod_wait = Duration::from_millis(300);
    let err = attest(&f.attestor(c), IN_POD).unwrap_err();
    assert!(
        err.to_string()
            .contains("not in the kubelet's pod list after 300ms"),
        "{err}"
    );
}

#[test]
fn fifty_concurrent_attestations_cost_one_request() {
    let kubelet = FakeKubelet::start(TOKEN, |_| list(true), Duration::from_millis(300));
    let f = Fixture::new(&kubelet.ca_pem());
    let a = Arc::new(f.attestor(f.config(&kubelet)));
    let barrier = Arc::new(Barrier::new(50));
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let (a, barrier) = (a.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                attest(&a, IN_POD)
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap(), expected());
    }
    assert_eq!(kubelet.requests(), 1);
    assert_eq!(a.kubelet_requests(), 1);
}

#[test]
fn concurrent_waiters_share_the_refetches() {
    // 20 attestations of a container that appears after ~600 ms: each round of
    // refetching is shared, so the kubelet sees about one request per 250 ms
    // (plus one per round for waiters whose need began mid-flight), not 20.
    let start = Instant::now();
    let kubelet = FakeKubelet::start(
        TOKEN,
        move |_| list(start.elapsed() >= Duration::from_millis(600)),
        Duration::from_millis(50),
    );
    let f = Fixture::new(&kubelet.ca_pem());
    let a = Arc::new(f.attestor(f.config(&kubelet)));
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let a = a.clone();
            std::thread::spawn(move || attest(&a, IN_POD))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap(), expected());
    }
    assert!(kubelet.requests() <= 10, "{}", kubelet.requests());
}

#[test]
fn an_unknown_ca_fails_verification() {
    let kubelet = FakeKubelet::start(TOKEN, |_| list(true), Duration::ZERO);
    // Another kubelet's CA: valid, but it did not sign this kubelet's certificate.
    let stranger = FakeKubelet::start(TOKEN, |_| list(true), Duration::ZERO);
    let f = Fixture::new(&stranger.ca_pem());
    let mut c = f.config(&kubelet);
    assert!(!c.insecure_skip_verify, "verification is on by default");
    c.pod_wait = Duration::from_millis(500);
    let err = attest(&f.attestor(c.clone()), IN_POD).unwrap_err();
    assert!(
        matches!(&err, AttestError::Io { what, .. } if what == "kubelet"),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("invalid peer certificate: UnknownIssuer") && text.contains("after 500ms"),
        "{text}"
    );
    // No request got past the handshake.
    assert_eq!(kubelet.requests(), 0);

    // The explicit opt-out accepts it (and is the only way to).
    c.insecure_skip_verify = true;
    c.ca_file = None;
    assert_eq!(attest(&f.attestor(c), IN_POD).unwrap(), expected());
    assert_eq!(kubelet.requests(), 1);
}

#[test]
fn a_bad_or_missing_ca_fails_at_start() {
    let kubelet = FakeKubelet::start(TOKEN, |_| list(true), Duration::ZERO);
    let f = Fixture::new("not a certificate\n");
    let new = |c: K8sConfig| K8sAttestor::new(c, ContainerAttestor::new());
    assert!(matches!(new(f.config(&kubelet)), Err(K8sError::Ca { .. })));
    let mut c = f.config(&kubelet);
    c.ca_file = Some(f.dir.path().join("missing.crt"));
    assert!(matches!(new(c), Err(K8sError::Ca { .. })));
    let mut c = f.config(&kubelet);
    c.ca_file = None;
    assert!(matches!(new(c), Err(K8sError::NoCa)));
    let mut c = f.config(&kubelet);
    c.kubelet_host = "not a host".into();
    assert!(matches!(new(c), Err(K8sError::Host(_))));
}

#[test]
fn a_wrong_token_fails_closed() {
    let kubelet = FakeKubelet::start(TOKEN, |_| list(true), Duration::ZERO);
    let f = Fixture::new(&kubelet.ca_pem());
    std::fs::write(
        f.token_file(),
        "eyJhbGciOiJSUzI1NiJ9.bm90LXRoaXMtb25l.c2ln\n",
    )
    .unwrap();
    let mut c = f.config(&kubelet);
    c.pod_wait = Duration::from_millis(500);
    let err = attest(&f.attestor(c), IN_POD).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("HTTP 401"), "{text}");
    assert!(kubelet.requests() >= 2, "retried: {}", kubelet.requests());
}

#[test]
fn a_rotated_token_is_read_at_the_next_fetch() {
    let kubelet = FakeKubelet::start(TOKEN, |_| list(true), Duration::ZERO);
    let f = Fixture::new(&kubelet.ca_pem());
    std::fs::write(f.token_file(), "expired-token\n").unwrap();
    let a = f.attestor(f.config(&kubelet));
    let token_file = f.token_file();
    let rotate = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        write_atomically(&token_file, &format!("{TOKEN}\n"));
    });
    assert_eq!(attest(&a, IN_POD).unwrap(), expected());
    rotate.join().unwrap();
}

/// Like the kubelet's atomic writer: a new file renamed over the old.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

#[test]
fn a_pod_on_another_node_is_refused() {
    let kubelet = FakeKubelet::start(TOKEN, |_| list(true), Duration::ZERO);
    let f = Fixture::new(&kubelet.ca_pem());
    let mut c = f.config(&kubelet);
    c.node_name = Some("worker-2".into());
    let err = attest(&f.attestor(c), IN_POD).unwrap_err();
    assert!(err.to_string().contains("not this node worker-2"), "{err}");
}

#[test]
fn a_host_process_gets_nothing_and_costs_no_request() {
    let kubelet = FakeKubelet::start(TOKEN, |_| list(true), Duration::ZERO);
    let f = Fixture::new(&kubelet.ca_pem());
    let a = f.attestor(f.config(&kubelet));
    assert_eq!(attest(&a, ON_HOST).unwrap(), Vec::<String>::new());
    // A plain docker container (no pod) neither.
    std::fs::write(
        f.dir.path().join(format!("proc/{ON_HOST}/cgroup")),
        format!("0::/system.slice/docker-{ID}.scope\n"),
    )
    .unwrap();
    assert_eq!(attest(&a, ON_HOST).unwrap(), Vec::<String>::new());
    assert_eq!((kubelet.requests(), a.kubelet_requests()), (0, 0));
}

#[test]
fn an_unreachable_kubelet_fails_closed() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let kubelet = FakeKubelet::start(TOKEN, |_| list(true), Duration::ZERO);
    let f = Fixture::new(&kubelet.ca_pem());
    let mut c = f.config(&kubelet);
    c.kubelet_port = port;
    c.pod_wait = Duration::from_millis(300);
    let err = attest(&f.attestor(c), IN_POD).unwrap_err();
    assert!(err.to_string().contains("after 300ms"), "{err}");
}
