//! Revoked agents and chains: their credentials and SVIDs stop verifying within 5 s.

use lanyard_tests::{lanyard, rt, wait_for, Fleet};

use super::chain;

/// A JWT-SVID for this process from the agent at `socket`, or the status.
fn fetch_jwt_svid(socket: &std::path::Path, aud: &str) -> Result<String, tonic::Status> {
    use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
    rt().block_on(async {
        let ch = lanyard_agent::client::connect(socket).await.unwrap();
        let r = SpiffeWorkloadApiClient::new(ch)
            .fetch_jwtsvid(lanyard_agent::client::with_header(
                lanyard_proto::spiffe::JwtsvidRequest {
                    audience: vec![aud.into()],
                    spiffe_id: String::new(),
                },
            ))
            .await?;
        Ok(r.into_inner().svids.remove(0).svid)
    })
}

/// `ValidateJWTSVID` of `svid` for `aud` on the agent at `socket`.
fn validate_jwt_svid(socket: &std::path::Path, aud: &str, svid: &str) -> Result<(), tonic::Status> {
    use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
    rt().block_on(async {
        let ch = lanyard_agent::client::connect(socket).await.unwrap();
        SpiffeWorkloadApiClient::new(ch)
            .validate_jwtsvid(lanyard_agent::client::with_header(
                lanyard_proto::spiffe::ValidateJwtsvidRequest {
                    audience: aud.into(),
                    svid: svid.into(),
                },
            ))
            .await
            .map(|_| ())
    })
}

/// The seed + JWT credential this process gets from the agent at `socket`.
fn fetch_credential(socket: &std::path::Path) -> Option<String> {
    use lanyard_proto::workload::credentials_client::CredentialsClient;
    rt().block_on(async {
        let ch = lanyard_agent::client::connect(socket).await.ok()?;
        let mut s = CredentialsClient::new(ch)
            .fetch_credentials(lanyard_agent::client::with_header(
                lanyard_proto::workload::FetchCredentialsRequest::default(),
            ))
            .await
            .ok()?
            .into_inner();
        let creds = s.message().await.ok()??.credentials;
        creds.into_iter().next().map(|c| c.jwt)
    })
}

/// Finding 5: `lanyard agent revoke` reaches what the agent already handed
/// out. Within 5 s, the seed + JWT credential it brokered fails `token verify`
/// with the current deny list, and its JWT-SVID fails `ValidateJWTSVID` on
/// another agent; before, both passed.
#[test]
fn attacker_a_revoked_agents_credentials_stop_verifying_within_5_s() {
    let f = Fleet::new("sec-fleet-agent-revoke");
    let addr = f.issuer_config("issuer1", "sqlite://issuer1/issuer.db");
    let _issuer = f.start_issuer("issuer1");
    let uid = lanyard_tests::my_uid();
    for n in ["n1", "n2"] {
        let token = f.admin_cmd("issuer1", &["join-token", "create", "--name", n]);
        f.agent_config(n, &addr, &token);
        f.admin_cmd(
            "issuer1",
            &[
                "entry",
                "create",
                "--subject",
                &format!("spiffe://example.org/{n}-workload"),
                "--selector",
                &format!("unix:uid:{uid}"),
                "--node-selector",
                &format!("join:name:{n}"),
            ],
        );
    }
    let _a1 = f.start_agent("n1");
    let _a2 = f.start_agent("n2");
    let (s1, s2) = (f.agent_socket("n1"), f.agent_socket("n2"));
    let svid = wait_for(30, "n1's JWT-SVID", || fetch_jwt_svid(&s1, "svc").ok());
    let cred = wait_for(30, "n1's credential", || fetch_credential(&s1));
    wait_for(30, "n2 to serve", || fetch_jwt_svid(&s2, "svc").ok());
    let cred_file = f.dir.join("n1-cred.jwt");
    std::fs::write(&cred_file, &cred).unwrap();
    let org_pub = f.dir.join("org/org.public");
    let deny = f.dir.join("n2/data/deny.jwt");
    let verify = || {
        let mut args = vec![
            "token".to_owned(),
            "verify".into(),
            "--org-public".into(),
            org_pub.display().to_string(),
        ];
        if deny.exists() {
            args.extend(["--deny-list".into(), deny.display().to_string()]);
        }
        args.push(cred_file.display().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        lanyard(&args)
    };
    let ok = verify();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    validate_jwt_svid(&s2, "svc", &svid).unwrap();

    f.admin_cmd(
        "issuer1",
        &[
            "agent",
            "revoke",
            "spiffe://example.org/lanyard/agent/join_token/n1",
        ],
    );
    let started = std::time::Instant::now();
    wait_for(5, "n1's credentials to be refused", || {
        let v = verify();
        let refused =
            v.status.code() == Some(1) && String::from_utf8_lossy(&v.stderr).contains("agent");
        (refused && validate_jwt_svid(&s2, "svc", &svid).is_err()).then_some(())
    });
    println!("refused {:?} after the revoke", started.elapsed());
    // n2's own workloads are untouched.
    let mine = fetch_jwt_svid(&s2, "svc").unwrap();
    validate_jwt_svid(&s2, "svc", &mine).unwrap();
}

/// `lanyard fetch` once into `dir`: svid.pem, bundle.pem and the rest.
fn fetch_files(socket: &std::path::Path, dir: &std::path::Path) -> bool {
    lanyard(&[
        "fetch",
        "--socket",
        socket.to_str().unwrap(),
        "--out-dir",
        dir.to_str().unwrap(),
    ])
    .status
    .success()
}

/// `openssl verify` of `svid` (leaf + chain CA) against `bundle`, the roots an
/// agent serves. `-partial_chain`: the roots are chain CAs, not self-signed.
fn verifies(bundle: &std::path::Path, svid: &std::path::Path) -> bool {
    std::process::Command::new("openssl")
        .arg("verify")
        .arg("-partial_chain")
        .arg("-CAfile")
        .arg(bundle)
        .arg("-untrusted")
        .arg(svid)
        .arg(svid)
        .output()
        .unwrap()
        .status
        .success()
}

/// Finding 3 (revocation): an X.509-SVID and a JWT-SVID signed by an issuer
/// replica's chain stop validating with what the agent serves within 5 s of
/// `lanyard org revoke-chain` at the other replica. The bundle's X.509 roots are
/// the live chains' CA certificates, so the revoked one drops out.
#[test]
fn attacker_a_revoked_chains_svids_stop_validating_within_5_s() {
    let uid = lanyard_tests::my_uid();
    let pg = lanyard_tests::postgres::PgServer::start();
    let f = Fleet::new("sec-fleet-chain-revoke");
    let a_addr = f.issuer_config("replica-a", &pg.url());
    let b_addr = f.issuer_config("replica-b", &pg.url());
    let _a = f.start_issuer("replica-a");
    let _b = f.start_issuer("replica-b");
    let token = f.admin_cmd("replica-a", &["join-token", "create", "--name", "gw1"]);
    f.agent_config("gw1", &format!("{a_addr},{b_addr}"), &token);
    let _agent = f.start_agent("gw1");
    let sock = f.agent_socket("gw1");
    f.admin_cmd(
        "replica-a",
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
    let before = f.dir.join("before");
    wait_for(30, "the agent to serve SVIDs", || {
        fetch_files(&sock, &before).then_some(())
    });
    let svid = before.join("svid.pem");
    assert!(verifies(&before.join("bundle.pem"), &svid));
    let jwt = wait_for(10, "a JWT-SVID", || fetch_jwt_svid(&sock, "svc").ok());
    validate_jwt_svid(&sock, "svc", &jwt).unwrap();
    // Which replica signed them: the agent talks to one at a time.
    let issuer_of = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-issuer", "-in"])
        .arg(&svid)
        .output()
        .unwrap();
    let issuer_of = String::from_utf8_lossy(&issuer_of.stdout).into_owned();
    let (signer, other) = ["replica-a", "replica-b"]
        .into_iter()
        .map(|r| {
            let public = std::fs::read_to_string(f.dir.join(&format!("{r}/chain.public")))
                .unwrap()
                .trim()
                .to_owned();
            (r, issuer_of.contains(&public[..16]))
        })
        .fold((None, None), |(s, o), (r, signed)| {
            if signed {
                (Some(r), o)
            } else {
                (s, Some(r))
            }
        });
    let (signer, other) = (signer.unwrap(), other.unwrap());
    let chain_jti = chain(&f, signer).jti().to_owned();

    f.admin_cmd(other, &["org", "revoke-chain", "--id", &chain_jti]);
    let started = std::time::Instant::now();
    let bundle = f.dir.join("bundle-now.pem");
    wait_for(5, "the revoked chain's SVIDs to stop validating", || {
        let roots = x509_bundle(&sock)?;
        std::fs::write(&bundle, roots).unwrap();
        let x509_refused = !verifies(&bundle, &svid);
        (x509_refused && validate_jwt_svid(&sock, "svc", &jwt).is_err()).then_some(())
    });
    println!("refused {:?} after revoke-chain", started.elapsed());
    // The other replica's chain CA is what the agent serves now.
    let other_crt = std::fs::read_to_string(f.dir.join(&format!("{other}/chain.crt"))).unwrap();
    assert_eq!(
        std::fs::read_to_string(&bundle).unwrap().trim(),
        other_crt.trim()
    );
}

/// The X.509 roots the agent at `socket` serves now (FetchX509Bundles), PEM.
fn x509_bundle(socket: &std::path::Path) -> Option<String> {
    use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
    rt().block_on(async {
        let ch = lanyard_agent::client::connect(socket).await.ok()?;
        let mut s = SpiffeWorkloadApiClient::new(ch)
            .fetch_x509_bundles(lanyard_agent::client::with_header(
                lanyard_proto::spiffe::X509BundlesRequest {},
            ))
            .await
            .ok()?
            .into_inner();
        let msg = s.message().await.ok()??;
        let der = msg.bundles.into_values().next()?;
        Some(lanyard_agent::pem::certs(&der))
    })
}
