//! End-to-end with the upstream issuer: real `lanyard issuer` and `lanyard agent`
//! processes, real SPIFFE clients (Rust `spiffe` crate, Python `spiffe` package),
//! SQLite and a real PostgreSQL server, and the issuer's gRPC API driven directly
//! for the security checks an agent's own code would never attempt.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use lanyard_agent::client::{connect, with_header};
use lanyard_agent::upstream::{attest_node, open_session, Evidence};
use lanyard_proto::issuer as pb;
use lanyard_proto::issuer::node_client::NodeClient;
use lanyard_proto::workload::credentials_client::CredentialsClient;
use lanyard_proto::workload::FetchCredentialsRequest;
use lanyard_tests::{http_get, my_uid, rt, wait_for, Fleet};
use lanyard_token::pop::{issuer_proof_message, IssuerProof};
use lanyard_token::{KeyPair, PublicKey, Verifier};
use spiffe::WorkloadApiClient;

fn org(f: &Fleet) -> PublicKey {
    PublicKey::from_file_text(&std::fs::read_to_string(f.dir.join("org/org.public")).unwrap())
        .unwrap()
}

/// A JWT-SVID for `aud` from the agent at `socket`, via the Rust spiffe crate.
fn jwt_svid(socket: &std::path::Path, aud: &str) -> Result<String, String> {
    rt().block_on(async {
        let c = WorkloadApiClient::connect_to(format!("unix:{}", socket.display()))
            .await
            .map_err(|e| e.to_string())?;
        let svid = c
            .fetch_jwt_svid([aud], None)
            .await
            .map_err(|e| e.to_string())?;
        let bundles = c.fetch_jwt_bundles().await.map_err(|e| e.to_string())?;
        spiffe::JwtSvid::parse_and_validate(svid.token(), &bundles, &[aud])
            .map_err(|e| e.to_string())?;
        Ok(format!("{} {}", svid.spiffe_id(), svid.token()))
    })
}

fn python_fetch(socket: &std::path::Path) -> serde_json::Value {
    let py = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-venv/bin/python");
    assert!(py.exists(), "scripts/test-all.sh creates the Python venv");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/spiffe_client.py");
    let out = std::process::Command::new(py)
        .arg(script)
        .arg(socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The seed + JWT credentials the agent gives this process.
fn credentials(socket: &std::path::Path) -> Vec<lanyard_proto::workload::Credential> {
    rt().block_on(async {
        let mut c = CredentialsClient::new(connect(socket).await.unwrap());
        let mut s = c
            .fetch_credentials(with_header(FetchCredentialsRequest::default()))
            .await
            .unwrap()
            .into_inner();
        s.message().await.unwrap().unwrap().credentials
    })
}

fn connected(health: &str) -> Option<()> {
    let (code, body) = http_get(health, "/readyz")?;
    (code == 200 && body.contains("upstream: connected")).then_some(())
}

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

#[test]
fn postgres_two_replicas_share_the_store_and_agents_fail_over() {
    let uid = my_uid();
    let pg = lanyard_tests::postgres::PgServer::start();
    let f = Fleet::new("fleet-pg");
    let a_addr = f.issuer_config("replica-a", &pg.url());
    let b_addr = f.issuer_config("replica-b", &pg.url());
    let a = f.start_issuer("replica-a");
    let b = f.start_issuer("replica-b");
    // A join token made at A, redeemed by an agent that may reach either.
    let token = f.admin_cmd("replica-a", &["join-token", "create", "--name", "gw1"]);
    let health = f.agent_config("gw1", &format!("{a_addr},{b_addr}"), &token);
    let _agent = f.start_agent("gw1");
    let sock = f.agent_socket("gw1");
    wait_for(10, "agent connected", || connected(&health));
    assert!(jwt_svid(&sock, "one").is_err(), "no entry yet");
    f.admin_cmd(
        "replica-b",
        &[
            "entry",
            "create",
            "--subject",
            "spiffe://example.org/ha",
            "--selector",
            &format!("unix:uid:{uid}"),
            "--node-selector",
            "join:name:gw1",
        ],
    );
    wait_for(5, "entry written at B to reach the agent through A", || {
        jwt_svid(&sock, "one").ok()
    });
    assert_eq!(
        python_fetch(&sock)["jwt_spiffe_id"],
        "spiffe://example.org/ha"
    );
    // Both replicas see one store.
    let la = f.admin_cmd("replica-a", &["entry", "list", "--json"]);
    let lb = f.admin_cmd("replica-b", &["entry", "list", "--json"]);
    assert_eq!(la, lb);

    // A dies: the agent fails over to B, gets new entries and new signatures.
    a.kill9();
    f.admin_cmd(
        "replica-b",
        &[
            "entry",
            "create",
            "--subject",
            "spiffe://example.org/after",
            "--selector",
            &format!("unix:uid:{uid}"),
            "--node-selector",
            "join:name:gw1",
        ],
    );
    wait_for(20, "failover to B", || {
        let (code, body) = http_get(&health, "/readyz")?;
        (code == 200 && body.contains(&format!("connected to {b_addr}"))).then_some(())
    });
    wait_for(5, "the entry made after failover", || {
        credentials(&sock)
            .iter()
            .any(|c| c.subject == "spiffe://example.org/after")
            .then_some(())
    });
    // A new audience needs a signature now: B signs it, and the JWKS the agent
    // publishes (both replicas' keys) validates it.
    let fresh = jwt_svid(&sock, "two").unwrap();
    assert!(fresh.starts_with("spiffe://example.org/"), "{fresh}");

    // A comes back, and B's chain credential is revoked (at B itself): B stops
    // signing and reports not ready, the agent moves to A, drops everything B's
    // chain signed, and serves credentials from A's chain.
    let a = f.start_issuer("replica-a");
    let chain_jti = |name: &str| {
        let jwt = std::fs::read_to_string(f.dir.join(&format!("{name}/chain.jwt"))).unwrap();
        let c: lanyard_token::Claims =
            serde_json::from_slice(&lanyard_token::jws::parse(jwt.trim()).unwrap().payload)
                .unwrap();
        c.jti.unwrap()
    };
    let (a_jti, b_jti) = (chain_jti("replica-a"), chain_jti("replica-b"));
    f.admin_cmd("replica-b", &["org", "revoke-chain", "--id", &b_jti]);
    wait_for(10, "agent on A", || {
        let (code, body) = http_get(&health, "/readyz")?;
        (code == 200 && body.contains(&format!("connected to {a_addr}"))).then_some(())
    });
    wait_for(10, "credentials from A's chain only", || {
        let creds = credentials(&sock);
        (creds.len() == 2
            && creds.iter().all(|c| {
                let v = Verifier::new(org(&f)).verify(&c.jwt, lanyard_agent::api::now());
                v.is_ok_and(|v| {
                    v.claims()
                        .iss
                        .as_deref()
                        .is_some_and(|i| i.starts_with(&format!("C-{a_jti}.")))
                })
            }))
        .then_some(())
    });
    let b_health = std::fs::read_to_string(f.dir.join("replica-b.toml"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("health_addr = \"")
                .map(|r| r.trim_end_matches('"').to_owned())
        })
        .unwrap();
    let (code, body) = http_get(&b_health, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("revoked"), "{body}");
    drop((a, b));
}

/// Attests with a join token and opens a session, as an agent would.
async fn join(
    addr: &str,
    org: &PublicKey,
    token: &str,
) -> (NodeClient<tonic::transport::Channel>, String) {
    let tls = lanyard_agent::tls::client_config(org).unwrap();
    let mut c = NodeClient::new(lanyard_agent::tls::channel(addr, tls).await.unwrap());
    let key = KeyPair::generate().unwrap();
    let cred = attest_node(&mut c, &key, Evidence::JoinToken(token.into()))
        .await
        .unwrap();
    let session = open_session(&mut c, &key, &cred.jwt).await.unwrap().session;
    (c, session)
}

fn with_session<T>(session: &str, msg: T) -> tonic::Request<T> {
    lanyard_agent::upstream::with_session(session, msg).unwrap()
}

fn sign_req(subject: &str, key: &str) -> pb::SignCredentialRequest {
    pb::SignCredentialRequest {
        subject: subject.into(),
        public_key: key.into(),
        ttl_secs: 60,
        ..pb::SignCredentialRequest::default()
    }
}

#[test]
fn limits_answer_resource_exhausted_and_malformed_input_invalid_argument() {
    let f = Fleet::new("fleet-limits");
    let addr = f.issuer_config_with(
        "issuer1",
        "sqlite://issuer1/issuer.db",
        "[limits]\nsign_per_sec = 2\nsign_burst = 10\nattest_per_sec = 1\nattest_burst = 40\n",
    );
    let _issuer = f.start_issuer("issuer1");
    let t1 = f.admin_cmd("issuer1", &["join-token", "create", "--name", "n1"]);
    let t2 = f.admin_cmd("issuer1", &["join-token", "create", "--name", "n2"]);
    for n in ["n1", "n2"] {
        f.admin_cmd(
            "issuer1",
            &[
                "entry",
                "create",
                "--subject",
                &format!("spiffe://example.org/{n}"),
                "--selector",
                "unix:uid:1",
                "--node-selector",
                &format!("join:name:{n}"),
            ],
        );
    }
    let org = org(&f);
    let holder = KeyPair::generate().unwrap().public().to_hex();
    rt().block_on(async {
        let (mut a, sa) = join(&addr, &org, &t1).await;
        let (mut b, sb) = join(&addr, &org, &t2).await;

        // Malformed input: InvalidArgument.
        let bad_key = a
            .sign_credential(with_session(&sa, sign_req("spiffe://example.org/n1", "zz")))
            .await
            .unwrap_err();
        assert_eq!(bad_key.code(), tonic::Code::InvalidArgument, "{bad_key:?}");
        let bad_point = a
            .sign_x509_svid(with_session(
                &sa,
                pb::SignX509SvidRequest {
                    spiffe_id: "spiffe://example.org/n1".into(),
                    public_key: vec![4; 10],
                    ttl_secs: 60,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(
            bad_point.code(),
            tonic::Code::InvalidArgument,
            "{bad_point:?}"
        );

        // An oversized request: ResourceExhausted, and the issuer carries on.
        let huge = a
            .sign_credential(with_session(
                &sa,
                sign_req(
                    &format!("spiffe://example.org/{}", "x".repeat(100_000)),
                    &holder,
                ),
            ))
            .await
            .unwrap_err();
        assert_eq!(huge.code(), tonic::Code::ResourceExhausted, "{huge:?}");

        // Agent n1 floods signing: past its burst it gets ResourceExhausted ...
        let mut exhausted = 0;
        for _ in 0..40 {
            match a
                .sign_credential(with_session(
                    &sa,
                    sign_req("spiffe://example.org/n1", &holder),
                ))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::ResourceExhausted => exhausted += 1,
                Err(s) => panic!("unexpected {s:?}"),
            }
        }
        assert!(
            exhausted >= 25,
            "only {exhausted} of 40 refused over a burst of 10"
        );
        // ... while agent n2's budget is its own.
        b.sign_credential(with_session(
            &sb,
            sign_req("spiffe://example.org/n2", &holder),
        ))
        .await
        .unwrap();

        // Unauthenticated attestations from one address: limited too.
        let mut refused = 0;
        for _ in 0..60 {
            let junk = pb::AttestRequest {
                nonce: vec![0; 32],
                agent_public_key: String::new(),
                nonce_signature: vec![],
                evidence: None,
            };
            if let Err(s) = a.attest(junk).await {
                if s.code() == tonic::Code::ResourceExhausted {
                    refused += 1;
                }
            }
        }
        assert!(
            refused > 0,
            "60 attestations over a burst of 40 were all served"
        );
        // GetNonce has no per-address budget (issuing a nonce stores nothing),
        // so a flood from an agent's address cannot keep it from its session.
        for _ in 0..60 {
            a.get_nonce(pb::GetNonceRequest {}).await.unwrap();
        }
    });
}

#[test]
fn device_key_node_renews_its_credential_and_reattests_after_a_lapse() {
    let uid = my_uid();
    let f = Fleet::new("fleet-device");
    let addr = f.issuer_config_with(
        "issuer1",
        "sqlite://issuer1/issuer.db",
        "agent_ttl = \"6s\"\n",
    );
    let _issuer = f.start_issuer("issuer1");
    // The gateway's device key, made on the device.
    let d = f.dir.0.display().to_string();
    let keygen = lanyard_tests::lanyard(&["node", "keygen", "--out", &format!("{d}/device")]);
    assert!(keygen.status.success());
    assert!(
        String::from_utf8_lossy(&keygen.stdout).contains("device.seed"),
        "{}",
        String::from_utf8_lossy(&keygen.stdout)
    );
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(format!("{d}/device/device.seed"))
                .unwrap()
                .permissions()
        ) & 0o777,
        0o600
    );
    // Never a second key over the first.
    assert!(
        !lanyard_tests::lanyard(&["node", "keygen", "--out", &format!("{d}/device")])
            .status
            .success()
    );
    f.admin_cmd(
        "issuer1",
        &[
            "node",
            "allow",
            "--public-key",
            &format!("{d}/device/device.public"),
            "--name",
            "gw7",
        ],
    );
    let health = f.agent_config_with(
        "gw7",
        &addr,
        &format!("device_seed = \"{d}/device/device.seed\"\ndevice_name = \"gw7\""),
    );
    let agent = f.start_agent("gw7");
    let sock = f.agent_socket("gw7");
    wait_for(10, "agent connected", || connected(&health));
    assert!(jwt_svid(&sock, "a").is_err(), "no entry yet");
    f.admin_cmd(
        "issuer1",
        &[
            "entry",
            "create",
            "--subject",
            "spiffe://example.org/gw",
            "--selector",
            &format!("unix:uid:{uid}"),
            "--node-selector",
            "device:name:gw7",
        ],
    );
    wait_for(5, "the entry", || jwt_svid(&sock, "a").ok());
    let agents: serde_json::Value =
        serde_json::from_str(&f.admin_cmd("issuer1", &["agent", "list", "--json"])).unwrap();
    assert_eq!(
        agents[0]["id"],
        "spiffe://example.org/lanyard/agent/device/gw7"
    );
    assert_eq!(
        agents[0]["selectors"],
        serde_json::json!(["device:name:gw7"])
    );

    // Renewal at half-life, with a new key: the persisted credential changes and
    // the agent keeps serving.
    let jwt_path = f.dir.join(&format!(
        "gw7/data/{}",
        lanyard_agent::upstream::AGENT_CREDENTIAL_FILE
    ));
    let first = std::fs::read_to_string(&jwt_path).unwrap();
    wait_for(10, "agent credential renewal", || {
        (std::fs::read_to_string(&jwt_path).ok()? != first).then_some(())
    });
    assert!(
        jwt_svid(&sock, "b").is_ok(),
        "signing after renewal: {}",
        agent.log()
    );

    // A lapse: the agent is down longer than its credential lives. At restart
    // it proves the device key again and carries on.
    agent.kill9();
    std::thread::sleep(Duration::from_secs(7));
    let agent = f.start_agent("gw7");
    wait_for(15, "agent reconnected after the lapse", || {
        connected(&health)
    });
    assert!(
        agent.log().contains("node attested to the issuer"),
        "no re-attestation: {}",
        agent.log()
    );
    assert!(jwt_svid(&sock, "c").is_ok(), "signing after re-attestation");

    // A template entry: one entry, the subject filled from each caller's selectors
    // by the agent, and recognised (within the node's scope) by the issuer.
    f.admin_cmd(
        "issuer1",
        &[
            "entry",
            "create",
            "--subject",
            "spiffe://{trust_domain}/gw/{unix:user}",
            "--selector",
            &format!("unix:uid:{uid}"),
            "--node-selector",
            "device:name:gw7",
        ],
    );
    let user = if uid == 0 {
        "root".to_owned()
    } else {
        format!("{uid}")
    };
    let want = format!("spiffe://example.org/gw/{user}");
    wait_for(5, "the templated identity", || {
        credentials(&sock)
            .iter()
            .any(|c| c.subject == want)
            .then_some(())
    });

    // Revoking the agent credential's jti voids its sessions; a device node
    // proves its key again and carries on with a new credential.
    let before: serde_json::Value =
        serde_json::from_str(&f.admin_cmd("issuer1", &["agent", "list", "--json"])).unwrap();
    let old_jti = before[0]["credential_jti"].as_str().unwrap().to_owned();
    f.admin_cmd("issuer1", &["token", "revoke", "--jti", &old_jti]);
    wait_for(15, "a new agent credential after the revocation", || {
        let now: serde_json::Value =
            serde_json::from_str(&f.admin_cmd("issuer1", &["agent", "list", "--json"])).ok()?;
        (now[0]["credential_jti"].as_str()? != old_jti).then_some(())
    });
    wait_for(15, "signing after re-attestation", || {
        jwt_svid(&sock, "r").ok()
    });

    // Suspension is refused at once and reversible.
    let id = "spiffe://example.org/lanyard/agent/device/gw7";
    f.admin_cmd("issuer1", &["agent", "suspend", id]);
    wait_for(5, "suspended agent refused", || {
        jwt_svid(&sock, "d").is_err().then_some(())
    });
    f.admin_cmd("issuer1", &["agent", "resume", id]);
    wait_for(70, "resumed agent served", || jwt_svid(&sock, "e").ok());
}

/// Kubernetes PSAT node attestation. No API server can run here, so a stand-in
/// token issuer (`lanyard_plugins::node::psat_testing`) signs real-shaped
/// projected tokens and publishes the JWKS the issuer is configured with.
#[test]
fn k8s_psat_node_attestation_scopes_entries_by_node_name() {
    let uid = my_uid();
    let f = Fleet::new("fleet-psat");
    let cluster = lanyard_plugins::node::psat_testing::FakeCluster::new().unwrap();
    std::fs::write(f.dir.join("jwks.json"), cluster.jwks_json()).unwrap();
    let addr = f.issuer_config_with(
        "issuer1",
        "sqlite://issuer1/issuer.db",
        "[node_attestors.k8s_psat]\ncluster = \"prod\"\naudience = \"lanyard\"\nallowed = [\"lanyard:lanyard-agent\"]\njwks_file = \"jwks.json\"\n",
    );
    let _issuer = f.start_issuer("issuer1");
    let now = lanyard_agent::api::now();
    std::fs::write(
        f.dir.join("psat.token"),
        cluster.token("lanyard", "lanyard-agent", "node-1", "lanyard", now),
    )
    .unwrap();
    let health = f.agent_config_with("n1", &addr, "psat_token_file = \"psat.token\"");
    let _agent = f.start_agent("n1");
    let sock = f.agent_socket("n1");
    wait_for(10, "agent connected", || connected(&health));
    assert!(jwt_svid(&sock, "a").is_err(), "no entry yet");
    for node in ["node-1", "node-2"] {
        f.admin_cmd(
            "issuer1",
            &[
                "entry",
                "create",
                "--subject",
                &format!("spiffe://example.org/{node}"),
                "--selector",
                &format!("unix:uid:{uid}"),
                "--node-selector",
                "k8s_psat:cluster:prod",
                "--node-selector",
                &format!("k8s_psat:agent_node_name:{node}"),
            ],
        );
    }
    let got = wait_for(5, "the node-1 entry", || jwt_svid(&sock, "a").ok());
    assert!(got.starts_with("spiffe://example.org/node-1 "), "{got}");
    let creds = credentials(&sock);
    assert_eq!(
        creds.len(),
        1,
        "only node-1's entry reaches node-1: {creds:?}"
    );
    let agents: serde_json::Value =
        serde_json::from_str(&f.admin_cmd("issuer1", &["agent", "list", "--json"])).unwrap();
    assert_eq!(
        agents[0]["id"],
        "spiffe://example.org/lanyard/agent/k8s_psat/prod/node-1"
    );

    // A service account outside the allow-list, a wrong audience: refused.
    rt().block_on(async {
        let tls = lanyard_agent::tls::client_config(&org(&f)).unwrap();
        let mut c = NodeClient::new(lanyard_agent::tls::channel(&addr, tls).await.unwrap());
        for token in [
            cluster.token("default", "default", "node-3", "lanyard", now),
            cluster.token("lanyard", "lanyard-agent", "node-3", "other", now),
        ] {
            let key = KeyPair::generate().unwrap();
            let e = attest_node(&mut c, &key, Evidence::K8sPsat(token))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        }
    });
}
