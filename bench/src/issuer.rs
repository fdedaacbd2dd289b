//! The issuer's figures, against a real issuer process (this binary re-executed
//! as `__issuer DIR`) on SQLite, driven over TLS like real agents:
//! - `issuer_sign_per_s`: seed + JWT credentials signed per second for one agent
//!   session with 64 calls in flight, next to the same mints done in-process
//!   (the floor: what the signature itself costs), as a ratio;
//! - `entry_sync_10000_ms`: a new agent's first `Sync` delivering 10,000 entries
//!   in its node scope;
//! - `issuer_rss_1000_agents`: issuer RSS with 1,000 attested agents, each on its
//!   own TLS connection with an open `Sync` stream.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanyard_agent::upstream::{attest_node, open_session, Evidence};
use lanyard_proto::issuer as pb;
use lanyard_proto::issuer::admin_client::AdminClient;
use lanyard_proto::issuer::node_client::NodeClient;
use lanyard_token::{KeyPair, PublicKey};
use tonic::transport::Channel;

/// What the issuer run measured.
#[derive(Debug, Clone)]
pub struct IssuerFigures {
    pub sign_per_s: f64,
    pub local_mint_per_s: f64,
    pub sync_10000_ms: f64,
    pub sync_bytes: usize,
    pub rss_idle: f64,
    pub rss_agents: f64,
    pub agents: usize,
}

/// Writes the issuer's files and config into `dir`; returns its listen address.
pub fn setup(dir: &Path) -> String {
    lanyard_agent::testing::delegated(dir, "", &["issuer"]).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    // The store on tmpfs where there is one: writing the 10,000 entries is not
    // measured, and a disk's fsync per admin write (1-2 ms) would dominate the run.
    let shm = Path::new("/dev/shm");
    let db = if shm.is_dir() {
        shm.join(format!("lanyard-bench-{}-{port}.db", std::process::id()))
    } else {
        dir.join("issuer.db")
    };
    // Limits far above the load: this measures signing, not the rate limiter.
    std::fs::write(
        dir.join("issuer.toml"),
        format!(
            "trust_domain = \"example.org\"\nlisten = \"{listen}\"\nadmin_socket = \"admin.sock\"\nstore = \"sqlite://{}\"\nhealth_addr = \"off\"\n\
             [authority]\nchain_jwt = \"chain.jwt\"\nchain_seed = \"chain.seed\"\norg_public = \"org.public\"\n\
             [limits]\nsign_per_sec = 10000000\nsign_burst = 10000000\nattest_per_sec = 10000000\nattest_burst = 10000000\n",
            db.display()
        ),
    )
    .unwrap();
    listen
}

/// Removes the stores [`setup`] put on tmpfs (with their WAL files).
pub fn cleanup() {
    let prefix = format!("lanyard-bench-{}-", std::process::id());
    if let Ok(rd) = std::fs::read_dir("/dev/shm") {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The `__issuer DIR` child.
pub fn run(dir: &Path) {
    let config = lanyard_issuer::config::IssuerConfig::load(&dir.join("issuer.toml")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bound = lanyard_issuer::app::build(config).await.unwrap();
        bound.wait_termination().await.unwrap();
    });
}

pub(crate) async fn admin(dir: &Path) -> AdminClient<Channel> {
    AdminClient::new(
        lanyard_agent::client::connect(&dir.join("admin.sock"))
            .await
            .unwrap(),
    )
}

pub(crate) async fn join_token(a: &mut AdminClient<Channel>, name: &str) -> String {
    a.create_join_token(pb::CreateJoinTokenRequest {
        ttl_secs: 3600,
        name: name.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .token
}

/// A simulated agent: attested with a join token, one session, its own connection.
struct SimAgent {
    client: NodeClient<Channel>,
    session: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl SimAgent {
    async fn join(addr: &str, org: &PublicKey, token: String) -> Self {
        let tls = lanyard_agent::tls::client_config(org).unwrap();
        let ch = lanyard_agent::tls::channel(addr, tls).await.unwrap();
        let mut client = NodeClient::new(ch).max_decoding_message_size(64 * 1024 * 1024);
        let key = KeyPair::generate().unwrap();
        let cred = attest_node(&mut client, &key, Evidence::JoinToken(token))
            .await
            .unwrap();
        let session = open_session(&mut client, &key, &cred.jwt)
            .await
            .unwrap()
            .session
            .parse()
            .unwrap();
        Self { client, session }
    }

    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut()
            .insert("lanyard-session", self.session.clone());
        r
    }

    async fn sync(&self) -> tonic::Streaming<pb::SyncResponse> {
        self.client
            .clone()
            .sync(self.req(pb::SyncRequest { since_revision: 0 }))
            .await
            .unwrap()
            .into_inner()
    }
}

/// An entry for `unix:uid:UID` workloads on node `join:name:NODE`.
pub(crate) async fn entry(a: &mut AdminClient<Channel>, subject: &str, node: &str, uid: u32) {
    a.create_entry(pb::Entry {
        subject: subject.into(),
        selectors: vec![format!("unix:uid:{uid}")],
        node_selectors: vec![format!("join:name:{node}")],
        ..pb::Entry::default()
    })
    .await
    .unwrap();
}

/// Runs the three measurements against the issuer at `addr` (pid `pid`).
pub async fn measure(dir: &Path, addr: &str, pid: u32, quick: bool) -> IssuerFigures {
    let org = PublicKey::from_file_text(&std::fs::read_to_string(dir.join("org.public")).unwrap())
        .unwrap();
    let mut adm = admin(dir).await;

    // 1. Signing throughput, next to in-process mints of the same credential.
    let signer = SimAgent::join(addr, &org, join_token(&mut adm, "signer").await).await;
    entry(&mut adm, "spiffe://example.org/bench/sign", "signer", 1000).await;
    let signer = Arc::new(signer);
    let secs = if quick { 2.0 } else { 5.0 };
    let holder = KeyPair::generate().unwrap().public().to_hex();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (s, holder) = (signer.clone(), holder.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                s.client
                    .clone()
                    .sign_credential(s.req(pb::SignCredentialRequest {
                        subject: "spiffe://example.org/bench/sign".into(),
                        public_key: holder.clone(),
                        ttl_secs: 600,
                        ..pb::SignCredentialRequest::default()
                    }))
                    .await
                    .unwrap();
                n += 1;
            }
            n
        }));
    }
    let start = Instant::now();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let sign_per_s = total as f64 / start.elapsed().as_secs_f64();
    let local_mint_per_s = local_mints(dir, secs);

    let t = Instant::now();
    // 2. Entry sync: 10,000 entries in one node's scope, then that node's first Sync.
    let n_entries = 10_000;
    let sync_token = join_token(&mut adm, "sync").await;
    let mut writers = Vec::new();
    // Many writers: each admin write refreshes the issuer's view (a copy of every
    // entry), and concurrent writes share a refresh.
    // 64 writers share 8 connections (the admin socket limits connections).
    let n_writers = 64;
    let mut conns = Vec::new();
    for _ in 0..8 {
        conns.push(admin(dir).await);
    }
    for w in 0..n_writers {
        let mut a = conns[w % conns.len()].clone();
        writers.push(tokio::spawn(async move {
            for i in (w..n_entries).step_by(n_writers) {
                entry(
                    &mut a,
                    &format!("spiffe://example.org/bench/e{i}"),
                    "sync",
                    1000,
                )
                .await;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    eprintln!(
        "         issuer: {n_entries} entries written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let syncer = SimAgent::join(addr, &org, sync_token).await;
    let start = Instant::now();
    let mut stream = syncer.sync().await;
    let first = stream.message().await.unwrap().unwrap();
    let sync_10000_ms = start.elapsed().as_secs_f64() * 1e3;
    assert_eq!(first.entries.len(), n_entries, "every entry in scope, once");
    let sync_bytes = prost::Message::encoded_len(&first);
    drop(stream);

    // 3. RSS with 1,000 agents, each on its own TLS connection with a Sync stream.
    let rss_idle = crate::rss_mib(pid);
    let t = Instant::now();
    let agents = 1000;
    let mut tokens = Vec::new();
    for i in 0..agents {
        tokens.push(join_token(&mut adm, &format!("sim{i}")).await);
    }
    let addr = addr.to_owned();
    let org2 = org;
    let mut joined = Vec::new();
    // All simulated agents connect from 127.0.0.1, and the issuer lets one
    // address have at most 32 handshakes in progress (so that one host's
    // stalled handshakes cannot starve the fleet): join in groups below that.
    for chunk in tokens.chunks(16) {
        let mut js = Vec::new();
        for t in chunk {
            let (addr, t) = (addr.clone(), t.clone());
            js.push(tokio::spawn(async move {
                let a = SimAgent::join(&addr, &org2, t).await;
                let mut s = a.sync().await;
                s.message().await.unwrap().unwrap();
                (a, s)
            }));
        }
        for j in js {
            joined.push(j.await.unwrap());
        }
    }
    eprintln!(
        "         issuer: {agents} agents joined in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_agents = crate::rss_mib(pid);
    drop(joined);
    IssuerFigures {
        sign_per_s,
        local_mint_per_s,
        sync_10000_ms,
        sync_bytes,
        rss_idle,
        rss_agents,
        agents,
    }
}

/// In-process mints with the same chain credential and request shape: the
/// cost of the signatures alone, with no network, session or store.
fn local_mints(dir: &Path, secs: f64) -> f64 {
    let chain = lanyard_token::ChainIssuer::new(
        &std::fs::read_to_string(dir.join("chain.jwt")).unwrap(),
        KeyPair::from_seed_text(&std::fs::read_to_string(dir.join("chain.seed")).unwrap()).unwrap(),
    )
    .unwrap();
    let holder = KeyPair::generate().unwrap().public();
    let now = lanyard_agent::api::now();
    let deadline = Instant::now() + Duration::from_secs_f64(secs / 2.0);
    let start = Instant::now();
    let mut n = 0u64;
    while Instant::now() < deadline {
        let mut leaf =
            lanyard_token::LeafRequest::workload("spiffe://example.org/bench/sign", holder, 600);
        leaf.clamp_to_issuer = true;
        std::hint::black_box(chain.mint(&leaf, now).unwrap());
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}
