//! Who may open a session: a gateway chain, a superseded credential, an impostor issuer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::StreamExt as _;
use lanyard_agent::upstream::{attest_node, Evidence};
use lanyard_proto::issuer as pb;
use lanyard_proto::issuer::node_client::NodeClient;
use lanyard_tests::{lanyard, rt, wait_for, Fleet};
use lanyard_token::pop::{issuer_proof_message, IssuerProof};
use lanyard_token::{jws, Claims, KeyPair, LeafRequest};

use super::{chain, chain_key, delegate, now, open_session, org};

/// Finding 1: a leaf from a gateway's chain, made into an agent credential for
/// an existing node (purpose, subject, the attacker's key) and re-signed with
/// that chain's seed, opens no session. The node's own credential still does,
/// so the refusal is the role, not a broken setup.
#[test]
fn attacker_a_gateway_chain_cannot_open_a_session_as_a_node() {
    let f = Fleet::new("sec-fleet-node");
    let addr = f.issuer_config("issuer1", "sqlite://issuer1/issuer.db");
    let _issuer = f.start_issuer("issuer1");
    delegate(&f, "gateway", &[]);
    let token = f.admin_cmd("issuer1", &["join-token", "create", "--name", "n1"]);
    let org = org(&f);
    rt().block_on(async {
        let tls = lanyard_agent::tls::client_config(&org).unwrap();
        let ch = lanyard_agent::tls::channel(&addr, tls).await.unwrap();
        let mut c = NodeClient::new(ch);
        let node_key = KeyPair::generate().unwrap();
        let cred = attest_node(&mut c, &node_key, Evidence::JoinToken(token))
            .await
            .unwrap();
        open_session(&mut c, &cred.jwt, &node_key).await.unwrap();

        // The CLI refuses to mint it outright.
        let d = f.dir.0.display().to_string();
        let out = lanyard(&[
            "token",
            "mint",
            "--issuer-jwt",
            &format!("{d}/gateway/chain.jwt"),
            "--issuer-seed",
            &format!("{d}/gateway/chain.seed"),
            "--subject",
            &cred.agent_id,
            "--purpose",
            "lanyard_agent",
            "--out",
            &format!("{d}/forged.jwt"),
        ]);
        assert!(
            !out.status.success(),
            "a gateway chain minted an agent credential"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("issuer"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // So the attacker signs around the API: a workload leaf for the node's
        // id with its own key, re-purposed and re-signed with the gateway seed.
        let attacker = KeyPair::generate().unwrap();
        let gw = chain(&f, "gateway");
        let leaf = gw
            .mint(
                &LeafRequest::workload(cred.agent_id.clone(), attacker.public(), 600),
                now(),
            )
            .unwrap();
        let mut claims: Claims =
            serde_json::from_slice(&jws::parse(&leaf).unwrap().payload).unwrap();
        claims.purpose = "lanyard_agent".into();
        let gw_key = chain_key(&f, "gateway");
        let forged = jws::encode(&serde_json::to_vec(&claims).unwrap(), |m| gw_key.sign(m));
        let e = open_session(&mut c, &forged, &attacker).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("issuer"), "{e:?}");
    });
}

/// "Not superseded": after the node renews, its old credential (a backup, a
/// copy an attacker lifted) opens no session; the new one does.
#[test]
fn attacker_a_superseded_agent_credential_opens_no_session() {
    let f = Fleet::new("sec-fleet-renew");
    let addr = f.issuer_config("issuer1", "sqlite://issuer1/issuer.db");
    let _issuer = f.start_issuer("issuer1");
    let token = f.admin_cmd("issuer1", &["join-token", "create", "--name", "n1"]);
    let org = org(&f);
    rt().block_on(async {
        let tls = lanyard_agent::tls::client_config(&org).unwrap();
        let ch = lanyard_agent::tls::channel(&addr, tls).await.unwrap();
        let mut c = NodeClient::new(ch);
        let old_key = KeyPair::generate().unwrap();
        let old = attest_node(&mut c, &old_key, Evidence::JoinToken(token))
            .await
            .unwrap();
        let session = open_session(&mut c, &old.jwt, &old_key).await.unwrap();
        // Renew to a new key within the session.
        let new_key = KeyPair::generate().unwrap();
        let nonce = c
            .get_nonce(pb::GetNonceRequest {})
            .await
            .unwrap()
            .into_inner()
            .nonce;
        let sig = new_key.sign(&issuer_proof_message(IssuerProof::Renew, &nonce));
        let mut req = tonic::Request::new(pb::RenewAgentRequest {
            nonce,
            agent_public_key: new_key.public().to_hex(),
            nonce_signature: sig.to_vec(),
        });
        req.metadata_mut()
            .insert("lanyard-session", session.session.parse().unwrap());
        let renewed = c.renew_agent(req).await.unwrap().into_inner();

        let e = open_session(&mut c, &old.jwt, &old_key).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("current credential"), "{e:?}");
        open_session(&mut c, &renewed.jwt, &new_key).await.unwrap();
    });
}

/// Serves TLS as an issuer with chain `name`'s credential (what an attacker
/// on the network path does with a stolen seed) and counts the connections
/// that complete a handshake, which is when an agent would send its join
/// token. Returns the address and the counter.
fn impostor(f: &Fleet, name: &str) -> (String, Arc<AtomicUsize>, tokio::runtime::Runtime) {
    let c = chain(f, name);
    let key = chain_key(f, name);
    let one = |file: &str| {
        let pem = std::fs::read_to_string(f.dir.join(&format!("{name}/{file}"))).unwrap();
        lanyard_agent::pem::decode_certs(&pem).remove(0)
    };
    let config = lanyard_agent::tls::server_config(
        &key,
        c.token(),
        one("chain.crt"),
        one("org.crt"),
        c.expires_at(),
        now(),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let done = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    runtime.spawn(async move {
        let mut conns = Box::pin(lanyard_agent::tls::incoming(listener, config));
        while let Some(conn) = conns.next().await {
            if conn.is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (addr, done, runtime)
}

/// Finding 2: an impostor on the network path with a gateway's chain (default
/// role, same org, a valid X.509 path to the org root) never completes a
/// handshake with an agent, so never sees its join token; nor does a real
/// issuer-role chain that is not the one `issuer_id` names.
#[test]
fn attacker_an_impostor_issuer_never_gets_the_join_token() {
    let f = Fleet::new("sec-fleet-impostor");
    delegate(&f, "gateway", &[]);
    delegate(&f, "rogue-issuer", &["--role", "issuer"]);
    let (gw_addr, gw_done, _gw_rt) = impostor(&f, "gateway");
    f.agent_config("n1", &gw_addr, "lanyard-join-token-the-attacker-wants");
    let mut agent = f.start_agent("n1");
    let log = f.dir.join("agent-n1.log");
    wait_for(30, "the agent to refuse the impostor", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains("no issuer role"))
    });
    assert_eq!(gw_done.load(Ordering::SeqCst), 0, "a handshake completed");
    assert!(agent.running());
    drop(agent);

    let (rogue_addr, rogue_done, _rogue_rt) = impostor(&f, "rogue-issuer");
    f.agent_config_with(
        "n2",
        &rogue_addr,
        "join_token = \"lanyard-join-token-the-attacker-wants\"\nissuer_id = \"issuer1\"",
    );
    let _agent = f.start_agent("n2");
    let log = f.dir.join("agent-n2.log");
    wait_for(30, "the agent to refuse the other issuer", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains("is not the configured issuer"))
    });
    assert_eq!(
        rogue_done.load(Ordering::SeqCst),
        0,
        "a handshake completed"
    );
}
