//! A SQLite fleet: join, entries, an issuer outage and restart, and the security checks.

use std::time::{Duration, Instant};

use lanyard_agent::upstream::{attest_node, Evidence};
use lanyard_proto::issuer as pb;
use lanyard_proto::issuer::node_client::NodeClient;
use lanyard_tests::{http_get, my_uid, rt, wait_for, Fleet};
use lanyard_token::pop::{issuer_proof_message, IssuerProof};
use lanyard_token::{KeyPair, Verifier};

use super::{connected, credentials, jwt_svid, org, python_fetch, with_session};

/// A client of the issuer's Node API that speaks as the agent whose persisted
/// credential is in `data` (what a compromised node could do).
struct AsAgent {
    ch: tonic::transport::Channel,
    key: KeyPair,
    jwt: String,
}

impl AsAgent {
    async fn new(f: &Fleet, addr: &str, data: &str) -> Self {
        let tls = lanyard_agent::tls::client_config(&org(f)).unwrap();
        let ch = lanyard_agent::tls::channel(addr, tls).await.unwrap();
        // The agent's persisted credential: one 0600 file with its seed and JWT.
        let path = f.dir.join(&format!(
            "{data}/{}",
            lanyard_agent::upstream::AGENT_CREDENTIAL_FILE
        ));
        let stored: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let key = KeyPair::from_seed_text(stored["seed"].as_str().unwrap()).unwrap();
        let jwt = stored["jwt"].as_str().unwrap().to_owned();
        Self { ch, key, jwt }
    }

    fn client(&self) -> NodeClient<tonic::transport::Channel> {
        NodeClient::new(self.ch.clone())
    }

    async fn session_request(&self) -> pb::OpenSessionRequest {
        let nonce = self
            .client()
            .get_nonce(pb::GetNonceRequest {})
            .await
            .unwrap()
            .into_inner()
            .nonce;
        let sig = self
            .key
            .sign(&issuer_proof_message(IssuerProof::Session, &nonce));
        pb::OpenSessionRequest {
            agent_jwt: self.jwt.clone(),
            nonce,
            nonce_signature: sig.to_vec(),
        }
    }

    async fn sign_jwt(&self, session: &str, subject: &str) -> Result<String, tonic::Status> {
        let req = with_session(
            session,
            pb::SignJwtSvidRequest {
                spiffe_id: subject.into(),
                audiences: vec!["x".into()],
                ttl_secs: 60,
            },
        );
        self.client()
            .sign_jwt_svid(req)
            .await
            .map(|r| r.into_inner().token)
    }
}

#[test]
fn sqlite_fleet_join_entry_outage_restart_and_security() {
    let uid = my_uid();
    let f = Fleet::new("fleet-sqlite");
    let addr = f.issuer_config("issuer1", "sqlite://issuer1/issuer.db");
    let mut issuer = f.start_issuer("issuer1");
    let token = f.admin_cmd(
        "issuer1",
        &["join-token", "create", "--name", "gw1", "--ttl", "10m"],
    );
    assert!(token.starts_with("lanyard-jt-"), "{token}");
    let health = f.agent_config("gw1", &addr, &token);
    let agent = f.start_agent("gw1");
    let sock = f.agent_socket("gw1");
    wait_for(10, "agent connected upstream", || connected(&health));

    // Attest once before any entry exists: the unix attestor hashes this (large,
    // debug) test binary on first contact, which must not count as sync latency.
    assert!(jwt_svid(&sock, "billing").is_err(), "no entry yet");
    // An entry for this process, scoped to this node; and one scoped elsewhere.
    f.admin_cmd(
        "issuer1",
        &[
            "entry",
            "create",
            "--subject",
            "spiffe://example.org/e2e",
            "--selector",
            &format!("unix:uid:{uid}"),
            "--node-selector",
            "join:name:gw1",
            "--audience",
            "mqtt",
        ],
    );
    // `entry create` refuses what could never match and what is already there.
    let admin = f.admin("issuer1");
    for (selector, why) in [
        (format!("unix:uid:{uid}"), "already gives"),
        ("unixx:uid:0".to_owned(), "unknown type"),
        ("unix:uid".to_owned(), "unix:uid"),
    ] {
        let out = lanyard_tests::lanyard(&[
            "entry",
            "create",
            "--subject",
            "spiffe://example.org/e2e",
            "--selector",
            &selector,
            "--node-selector",
            "join:name:gw1",
            "--audience",
            "mqtt",
            "--admin-socket",
            &admin,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{selector}: {err}");
        assert!(err.contains(why), "{selector}: {err}");
    }
    f.admin_cmd(
        "issuer1",
        &[
            "entry",
            "create",
            "--subject",
            "spiffe://example.org/elsewhere",
            "--selector",
            &format!("unix:uid:{uid}"),
            "--node-selector",
            "join:name:gw2",
        ],
    );
    let started = Instant::now();
    let jwt = wait_for(5, "the entry to reach the agent", || {
        jwt_svid(&sock, "billing").ok()
    });
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "entry took {:?}",
        started.elapsed()
    );
    assert!(jwt.starts_with("spiffe://example.org/e2e "), "{jwt}");

    // The Python spiffe package (grpc C-core) gets the same identity.
    let py = python_fetch(&sock);
    assert_eq!(py["jwt_spiffe_id"], "spiffe://example.org/e2e");
    assert_eq!(py["x509_spiffe_id"], "spiffe://example.org/e2e");

    // The seed + JWT credential verifies with the org public key alone; the
    // out-of-scope entry is not among the credentials.
    let creds = credentials(&sock);
    assert_eq!(creds.len(), 1, "{creds:?}");
    let now = lanyard_agent::api::now();
    let v = Verifier::new(org(&f)).verify(&creds[0].jwt, now).unwrap();
    assert_eq!(v.claims().sub.as_deref(), Some("spiffe://example.org/e2e"));
    let seed = KeyPair::from_seed_text(&creds[0].seed).unwrap();
    assert_eq!(v.holder(), Some(seed.public()));

    // Security, speaking the Node API as this (possibly compromised) agent.
    rt().block_on(async {
        let a = AsAgent::new(&f, &addr, "gw1/data").await;
        // Reusing the join token fails.
        let k = KeyPair::generate().unwrap();
        let r = attest_node(&mut a.client(), &k, Evidence::JoinToken(token.clone()))
            .await
            .unwrap_err();
        assert_eq!(r.code(), tonic::Code::PermissionDenied, "{r:?}");

        // A session needs a fresh nonce signature; replaying one gets nothing.
        let req = a.session_request().await;
        let session = a
            .client()
            .open_session(req.clone())
            .await
            .unwrap()
            .into_inner()
            .session;
        let replay = a.client().open_session(req).await.unwrap_err();
        assert_eq!(replay.code(), tonic::Code::PermissionDenied, "{replay:?}");
        // The credential without a signature by its seed gets nothing either.
        let mut forged = a.session_request().await;
        forged.nonce_signature = KeyPair::generate()
            .unwrap()
            .sign(&issuer_proof_message(IssuerProof::Session, &forged.nonce))
            .to_vec();
        assert_eq!(
            a.client().open_session(forged).await.unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        // A session id that was never issued.
        assert_eq!(
            a.sign_jwt(&"0".repeat(64), "spiffe://example.org/e2e")
                .await
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );

        // In scope: signed. Out of the node's scope: refused, whatever it asks.
        a.sign_jwt(&session, "spiffe://example.org/e2e")
            .await
            .unwrap();
        let out = a
            .sign_jwt(&session, "spiffe://example.org/elsewhere")
            .await
            .unwrap_err();
        assert_eq!(out.code(), tonic::Code::PermissionDenied, "{out:?}");
    });

    // SIGKILL the issuer: the agent keeps serving.
    issuer.kill9();
    assert!(
        jwt_svid(&sock, "billing").is_ok(),
        "cached JWT-SVID after issuer death"
    );
    assert_eq!(
        python_fetch(&sock)["x509_spiffe_id"],
        "spiffe://example.org/e2e"
    );
    // Restart the agent too, with the issuer still down: it still serves (the
    // IoT gateway boot case), from the persisted entries and cache.
    agent.kill9();
    let agent = f.start_agent("gw1");
    assert!(
        jwt_svid(&sock, "billing").is_ok(),
        "after restart with the issuer down: {}",
        agent.log()
    );
    let (code, body) = http_get(&health, "/readyz").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("upstream: "), "{body}");
    assert!(!body.contains("connected to"), "{body}");

    // Restart the issuer: the agent reconnects and a new entry arrives within 2 s.
    issuer = f.start_issuer("issuer1");
    wait_for(70, "agent reconnected", || connected(&health));
    let new_id = f.admin_cmd(
        "issuer1",
        &[
            "entry",
            "create",
            "--subject",
            "spiffe://example.org/new",
            "--selector",
            &format!("unix:uid:{uid}"),
            "--node-selector",
            "join:name:gw1",
        ],
    );
    let started = Instant::now();
    wait_for(5, "the new entry", || {
        credentials(&sock)
            .iter()
            .any(|c| c.subject == "spiffe://example.org/new")
            .then_some(())
    });
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "new entry took {:?}",
        started.elapsed()
    );

    // Revoking a token's jti: the agent stops serving that credential within 5 s.
    let before = credentials(&sock);
    let e2e = before
        .iter()
        .find(|c| c.subject == "spiffe://example.org/e2e")
        .unwrap();
    let jti = Verifier::new(org(&f))
        .verify(&e2e.jwt, lanyard_agent::api::now())
        .unwrap()
        .claims()
        .jti
        .clone()
        .unwrap();
    f.admin_cmd("issuer1", &["token", "revoke", "--jti", &jti]);
    let started = Instant::now();
    wait_for(5, "the revoked credential to be replaced", || {
        let now = credentials(&sock);
        let c = now
            .iter()
            .find(|c| c.subject == "spiffe://example.org/e2e")?;
        (c.jwt != e2e.jwt).then_some(())
    });
    assert!(started.elapsed() < Duration::from_secs(5));
    // The agent keeps the issuer's (chain-signed) deny list for local verifiers;
    // `lanyard token verify` with only the org key honours it.
    std::fs::write(f.dir.join("old.jwt"), &e2e.jwt).unwrap();
    let org_pub = f.dir.join("org/org.public").display().to_string();
    let old = f.dir.join("old.jwt").display().to_string();
    let verify = |extra: &[&str]| {
        let mut args = vec!["token", "verify", "--org-public", org_pub.as_str()];
        args.extend_from_slice(extra);
        args.push(&old);
        lanyard_tests::lanyard(&args)
    };
    assert!(verify(&[]).status.success(), "valid without the deny list");
    let deny = f.dir.join("gw1/data/deny.jwt").display().to_string();
    let refused = verify(&["--deny-list", &deny]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Deleting an entry: the agent stops serving it.
    f.admin_cmd("issuer1", &["entry", "delete", &new_id]);
    wait_for(5, "the deleted entry to disappear", || {
        (!credentials(&sock)
            .iter()
            .any(|c| c.subject == "spiffe://example.org/new"))
        .then_some(())
    });
    let listed = f.admin_cmd("issuer1", &["entry", "list"]);
    assert!(!listed.contains(&new_id), "{listed}");

    // Revoking the agent: the issuer refuses it within 5 s.
    let list = f.admin_cmd("issuer1", &["agent", "list", "--json"]);
    let agents: serde_json::Value = serde_json::from_str(&list).unwrap();
    let id = agents[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(id, "spiffe://example.org/lanyard/agent/join_token/gw1");
    rt().block_on(async {
        let a = AsAgent::new(&f, &addr, "gw1/data").await;
        let req = a.session_request().await;
        let session = a
            .client()
            .open_session(req)
            .await
            .unwrap()
            .into_inner()
            .session;
        f.admin_cmd("issuer1", &["agent", "revoke", &id]);
        let started = Instant::now();
        loop {
            match a.sign_jwt(&session, "spiffe://example.org/e2e").await {
                Err(s) if s.code() == tonic::Code::PermissionDenied => break,
                _ => assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "revoked agent still served"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let req = a.session_request().await;
        assert_eq!(
            a.client().open_session(req).await.unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    });
    let listed = f.admin_cmd("issuer1", &["agent", "list"]);
    assert!(listed.contains("revoked"), "{listed}");
    drop(agent);
    drop(issuer);
}
