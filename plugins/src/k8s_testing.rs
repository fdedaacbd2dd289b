//! A stand-in kubelet for tests where no cluster can run: HTTPS on loopback
//! with a certificate from its own CA (for `127.0.0.1` and `localhost`), serving
//! `GET /pods` to holders of one bearer token and 401 to everyone else, like the
//! kubelet's authenticated port. [`FakePod`] writes pod lists in the shape
//! `kubectl get --raw /api/v1/nodes/<node>/proxy/pods` shows.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// What answers `/pods`, given the 1-based number of the request.
type PodsFn = dyn Fn(u64) -> String + Send + Sync;

/// A fake kubelet on `127.0.0.1`, serving until dropped.
pub struct FakeKubelet {
    port: u16,
    ca_pem: String,
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for FakeKubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKubelet")
            .field("port", &self.port)
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

/// What every connection handler shares.
struct Shared {
    token: String,
    pods: Box<PodsFn>,
    delay: Duration,
    requests: Arc<AtomicU64>,
    tls: Arc<rustls::ServerConfig>,
}

impl FakeKubelet {
    /// Starts a kubelet answering `GET /pods` with `pods_json(n)` (`n`: this
    /// request's number, from 1) to requests bearing `token`, after `delay`.
    ///
    /// # Panics
    ///
    /// If the loopback listener or the certificates cannot be made: this is a
    /// test fixture, and a test cannot go on without it.
    pub fn start(
        token: &str,
        pods_json: impl Fn(u64) -> String + Send + Sync + 'static,
        delay: Duration,
    ) -> Self {
        #[allow(clippy::expect_used)]
        Self::try_start(token, pods_json, delay).expect("start the fake kubelet")
    }

    /// [`FakeKubelet::start`], returning errors instead of panicking.
    pub fn try_start(
        token: &str,
        pods_json: impl Fn(u64) -> String + Send + Sync + 'static,
        delay: Duration,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let (ca_pem, chain, key) = certificates(port)?;
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            pods: Box::new(pods_json),
            delay,
            requests: requests.clone(),
            tls: Arc::new(tls),
        });
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = shared.clone();
                // One thread per connection, so that concurrent clients overlap
                // as they would at a real kubelet.
                std::thread::spawn(move || {
                    // A client that rejects the certificate ends the exchange
                    // mid-handshake: not the fixture's failure.
                    let _ = serve(conn, &shared);
                });
            }
        });
        Ok(Self {
            port,
            ca_pem,
            requests,
            stop,
        })
    }

    /// The port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM certificate of the CA that signed the serving certificate.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// HTTP requests received so far (authorized or not). Connections that
    /// failed the TLS handshake sent none.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A fresh CA, and a serving certificate it signed for `127.0.0.1` (an IP SAN)
/// and `localhost`. Names carry `port`, so that two fake kubelets' CAs differ
/// by name as well as by key, as two clusters' would.
fn certificates(
    port: u16,
) -> Result<(String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("fake-node-{port}-ca@1700000000"),
    );
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    // rcgen makes "127.0.0.1" an IP address SAN, as the kubelet's own
    // self-signed certificate has for the node's addresses.
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, format!("fake-node-{port}@1700000000"));
    let cert = server.signed_by(&key, &issuer)?;
    let chain = vec![cert.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((ca_cert.pem(), chain, key))
}

/// Answers one HTTP/1.x request on `conn`, then closes it.
fn serve(conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let tls = rustls::ServerConnection::new(shared.tls.clone()).map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(tls, conn);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let head = String::from_utf8_lossy(&head);
    let n = shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let path = head.split_whitespace().nth(1).unwrap_or_default();
    let auth = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("authorization")
            .then(|| v.trim().to_owned())
    });
    std::thread::sleep(shared.delay);
    let (status, kind, body) = if auth.as_deref() != Some(&format!("Bearer {}", shared.token)) {
        // What the kubelet's authenticator answers to a missing or bad token.
        (
            "401 Unauthorized",
            "text/plain; charset=utf-8",
            "Unauthorized".to_owned(),
        )
    } else if path != "/pods" {
        (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "404 page not found\n".to_owned(),
        )
    } else {
        ("200 OK", "application/json", (shared.pods)(n))
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body.as_bytes())?;
    s.conn.send_close_notify();
    s.flush()
}

/// A container of a [`FakePod`].
#[derive(Debug, Clone)]
pub struct FakeContainer {
    /// The container's name in the pod spec.
    pub name: String,
    /// The image as the spec names it (`nginx:1.27`).
    pub image: String,
    /// `<runtime>://<64-hex>` once the runtime has created it; `None` while the
    /// kubelet still reports it waiting (`ContainerCreating`).
    pub container_id: Option<String>,
}

/// A pod, written as the kubelet's `/pods` lists it.
#[derive(Debug, Clone)]
pub struct FakePod {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `spec.nodeName`.
    pub node_name: String,
    /// `spec.serviceAccountName`.
    pub service_account: String,
    /// `metadata.labels`.
    pub labels: Vec<(String, String)>,
    /// The controlling `ReplicaSet`'s name, if any.
    pub replica_set: Option<String>,
    /// `spec.containers`, with a status each.
    pub containers: Vec<FakeContainer>,
}

impl FakePod {
    /// The pod as one item of the kubelet's `PodList`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        const STARTED: &str = "2025-06-12T09:14:03Z";
        let labels: serde_json::Map<_, _> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let mut metadata = json!({
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
            "resourceVersion": "48213",
            "creationTimestamp": "2025-06-12T09:13:58Z",
            "labels": labels,
            "annotations": {
                "kubernetes.io/config.seen": "2025-06-12T09:13:58.412339871Z",
                "kubernetes.io/config.source": "api"
            }
        });
        if let Some(rs) = &self.replica_set {
            metadata["generateName"] = json!(format!("{rs}-"));
            metadata["ownerReferences"] = json!([{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": rs,
                "uid": "5f0c8e1a-3b7d-4e29-a6c4-9d2f1b8e7a30",
                "controller": true,
                "blockOwnerDeletion": true
            }]);
        }
        let token_volume = "kube-api-access-7qk2m";
        let containers: Vec<_> = self
            .containers
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "image": c.image,
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "resources": {},
                    "volumeMounts": [{
                        "name": token_volume,
                        "readOnly": true,
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"
                    }],
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent"
                })
            })
            .collect();
        let statuses: Vec<_> = self
            .containers
            .iter()
            .map(|c| match &c.container_id {
                // The runtime reports the image it resolved, fully qualified.
                Some(id) => json!({
                    "name": c.name,
                    "state": {"running": {"startedAt": STARTED}},
                    "lastState": {},
                    "ready": true,
                    "restartCount": 0,
                    "image": qualified(&c.image),
                    "imageID": format!("{}@sha256:6a83f7d0d5c2e1b9a4f8e7c6d5b4a3928170f6e5d4c3b2a1908f7e6d5c4b3a29", repository(&qualified(&c.image))),
                    "containerID": id,
                    "started": true
                }),
                None => json!({
                    "name": c.name,
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                    "lastState": {},
                    "ready": false,
                    "restartCount": 0,
                    "image": c.image,
                    "imageID": "",
                    "started": false
                }),
            })
            .collect();
        let running = self.containers.iter().all(|c| c.container_id.is_some());
        json!({
            "metadata": metadata,
            "spec": {
                "volumes": [{
                    "name": token_volume,
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                        ],
                        "defaultMode": 420
                    }
                }],
                "containers": containers,
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst",
                "serviceAccountName": self.service_account,
                "serviceAccount": self.service_account,
                "nodeName": self.node_name,
                "securityContext": {},
                "schedulerName": "default-scheduler",
                "tolerations": [
                    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                ],
                "priority": 0,
                "enableServiceLinks": true,
                "preemptionPolicy": "PreemptLowerPriority"
            },
            "status": {
                "phase": if running { "Running" } else { "Pending" },
                "conditions": [
                    {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": null, "lastTransitionTime": STARTED},
                    {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2025-06-12T09:13:58Z"},
                    {"type": "Ready", "status": if running { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": STARTED},
                    {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2025-06-12T09:13:58Z"}
                ],
                "hostIP": "10.0.0.5",
                "hostIPs": [{"ip": "10.0.0.5"}],
                "podIP": "10.244.1.7",
                "podIPs": [{"ip": "10.244.1.7"}],
                "startTime": "2025-06-12T09:13:58Z",
                "containerStatuses": statuses,
                "qosClass": "BestEffort"
            }
        })
    }
}

/// `nginx:1.27` as the runtime reports it: `docker.io/library/nginx:1.27`.
fn qualified(image: &str) -> String {
    let first = image.split('/').next().unwrap_or_default();
    let has_registry =
        image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        image.to_owned()
    } else if image.contains('/') {
        format!("docker.io/{image}")
    } else {
        format!("docker.io/library/{image}")
    }
}

/// The image name without its tag (what an `imageID` digest is attached to).
fn repository(image: &str) -> &str {
    image
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or(image, |(repo, _)| repo)
}

/// The kubelet's `/pods` answer listing `pods`.
pub fn pod_list_json(pods: &[FakePod]) -> String {
    serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": pods.iter().map(FakePod::to_json).collect::<Vec<_>>()
    })
    .to_string()
}
