//! The security suite (issue 6, part 4): what a reviewer of a SPIFFE agent would
//! try, each an assertion against real processes.
//!
//! - the caller: a wrong uid, a reused pid, a workload in one container asking
//!   for another container's identity;
//! - the tokens: a forged chain, another org's chain, a token from a revoked
//!   chain, tampered and unsigned JWT-SVIDs;
//! - the issuer: a replayed attestation nonce, one join token used by many nodes
//!   at once;
//! - the wire: an oversized gRPC message, a missing security header, bytes that
//!   are not HTTP/2 at all;
//! - at rest: the agent's files are private and no seed reaches its log.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};

use lanyard_agent::client::{connect, with_header};
use lanyard_agent::upstream::{attest_node, Evidence};
use lanyard_proto::issuer as pb;
use lanyard_proto::issuer::node_client::NodeClient;
use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::spiffe::{JwtsvidRequest, ValidateJwtsvidRequest};
use lanyard_tests::cgroups::{hierarchies, InCgroup};
use lanyard_tests::{entry, lanyard, lanyard_bin, my_uid, rt, script, Deployment, Fleet};
use lanyard_token::pop::{issuer_proof_message, IssuerProof};
use lanyard_token::{KeyPair, PublicKey};

fn python() -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-venv/bin/python");
    assert!(p.exists(), "scripts/test-all.sh creates the Python venv");
    p
}

/// A JWT-SVID for this process, or the gRPC status.
fn jwt_svid(socket: &Path, spiffe_id: &str) -> Result<String, tonic::Status> {
    rt().block_on(async {
        let ch = connect(socket).await.unwrap();
        let r = SpiffeWorkloadApiClient::new(ch)
            .fetch_jwtsvid(with_header(JwtsvidRequest {
                audience: vec!["security".into()],
                spiffe_id: spiffe_id.into(),
            }))
            .await?;
        Ok(r.into_inner().svids.remove(0).svid)
    })
}

#[test]
fn a_caller_with_another_uid_gets_nothing() {
    let d = Deployment::new(
        "sec-uid",
        &entry("me", &[&format!("unix:uid:{}", my_uid())]),
    );
    let agent = d.start();
    let never = d.dir.join("never-written");
    // The socket is 0777: the caller's uid, not file permissions, decides.
    let out = Command::new("setpriv")
        .args(["--reuid", "54321", "--regid", "54321", "--clear-groups"])
        .arg(lanyard_bin())
        .args(["fetch", "--socket", d.socket().to_str().unwrap()])
        .args(["--out-dir", never.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "uid 54321 got credentials");
    assert!(err.contains("PermissionDenied"), "{err}");
    assert!(!never.exists());
    assert!(agent.log().contains("no entry matches"), "{}", agent.log());
    // This uid is served: the refusal above was about the uid alone.
    jwt_svid(&d.socket(), "").unwrap();
}

/// Puts a new `sleep` of uid 54321 on exactly `pid` (through `ns_last_pid`),
/// retrying while other processes on the machine take the number first.
fn occupy_pid(pid: u32) -> std::process::Child {
    for _ in 0..500 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .expect("writing ns_last_pid needs root in the initial pid namespace");
        // setpriv execs sleep: same pid.
        let mut c = Command::new("setpriv")
            .args([
                "--reuid",
                "54321",
                "--regid",
                "54321",
                "--clear-groups",
                "sleep",
                "60",
            ])
            .spawn()
            .unwrap();
        if c.id() == pid {
            return c;
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    panic!("could not get pid {pid} reused in 500 tries");
}

#[test]
fn a_reused_pid_never_receives_the_new_process_identity() {
    let sleep = std::fs::canonicalize("/bin/sleep").unwrap();
    let d = Deployment::new(
        "sec-pid",
        &entry(
            "privileged",
            &["unix:uid:54321", &format!("unix:path:{}", sleep.display())],
        ),
    );
    let _agent = d.start();
    let proxy = d.dir.join("relay");
    std::fs::create_dir_all(&proxy).unwrap();
    std::fs::set_permissions(&proxy, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let proxy = proxy.join("relay.sock");

    // The attacker runs as the same uid as the victim (the hard case: the uid
    // alone cannot tell them apart). It connects, hands its connection to a
    // child and exits.
    let attacker = Command::new("setpriv")
        .args(["--reuid", "54321", "--regid", "54321", "--clear-groups"])
        .args(["/usr/bin/python3", &script("pid_reuse.py")])
        .arg(d.socket())
        .arg(&proxy)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(attacker.status.success());
    let pid: u32 = String::from_utf8_lossy(&attacker.stdout)
        .trim()
        .parse()
        .unwrap();
    // `output()` reaped it: the number is free. The victim, whose binary is
    // entitled, takes it.
    let mut victim = occupy_pid(pid);
    // The agent would give that process the identity, were it to ask.
    let out = lanyard(&[
        "attest",
        "--pid",
        &pid.to_string(),
        "--config",
        d.dir.join("agent.toml").to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.to_string().contains("spiffe://example.org/privileged"),
        "the victim must be entitled for the attack to mean anything: {v}"
    );

    // The attacker's relay asks, over the connection the dead process opened.
    let status = rt().block_on(async {
        let ch = connect(&proxy).await.unwrap();
        let mut c = SpiffeWorkloadApiClient::new(ch);
        c.fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["security".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err()
    });
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let _ = victim.kill();
    let _ = victim.wait();
}

#[test]
fn a_workload_cannot_get_another_containers_identity() {
    assert!(
        my_uid() == 0 && !hierarchies().is_empty(),
        "the security suite runs as root on a machine with cgroups"
    );
    let (a, b) = ("a1".repeat(32), "b2".repeat(32));
    let d = Deployment::new(
        "sec-ctr",
        &format!(
            "{}{}",
            entry("ctr-a", &[&format!("container:id:{a}")]),
            entry("ctr-b", &[&format!("container:id:{b}")])
        ),
    );
    let _agent = d.start();
    let sock = d.socket().display().to_string();
    let ask = |wanted: &str| -> String {
        let p = InCgroup::spawn(
            &format!("lanyard-sec/docker/{a}"),
            python().to_str().unwrap(),
            &[&script("ask_for.py"), &sock, wanted],
        )
        .expect("a process in container a's cgroup");
        let out = p.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let own = ask("spiffe://example.org/ctr-a");
    assert_eq!(own, "ok spiffe://example.org/ctr-a");
    let other = ask("spiffe://example.org/ctr-b");
    assert!(other.starts_with("refused"), "{other}");
    assert!(other.contains("PERMISSION_DENIED"), "{other}");
    // The host process (no container) gets neither.
    let host = jwt_svid(&d.socket(), "").unwrap_err();
    assert_eq!(host.code(), tonic::Code::PermissionDenied);
}

/// `lanyard token verify` of `token` against `org`: (ok, stderr).
fn verify(org: &Path, token: &Path, deny: Option<&Path>) -> (bool, String) {
    let mut args = vec![
        "token".to_owned(),
        "verify".into(),
        "--org-public".into(),
        org.display().to_string(),
    ];
    if let Some(d) = deny {
        args.extend(["--deny-list".into(), d.display().to_string()]);
    }
    args.push(token.display().to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = lanyard(&refs);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mint(dir: &Path, chain: &str, out: &str) {
    let d = dir.display();
    let o = lanyard(&[
        "token",
        "mint",
        "--issuer-jwt",
        &format!("{d}/{chain}/chain.jwt"),
        "--issuer-seed",
        &format!("{d}/{chain}/chain.seed"),
        "--subject",
        "spiffe://example.org/w",
        "--out",
        &format!("{d}/{out}"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Rewrites a JWT's claims with `edit` (a Python expression over `c`), keeping
/// the original signature: what a forger without the key can do.
fn forge(token: &Path, edit: &str, out: &Path) {
    let prog = format!(
        "import base64,json,sys\n\
         h,p,s=open(sys.argv[1]).read().strip().split('.')\n\
         c=json.loads(base64.urlsafe_b64decode(p+'='*(-len(p)%4)))\n\
         {edit}\n\
         p=base64.urlsafe_b64encode(json.dumps(c).encode()).decode().rstrip('=')\n\
         open(sys.argv[2],'w').write('.'.join([h,p,s]))"
    );
    let st = Command::new("python3")
        .args(["-c", &prog])
        .arg(token)
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn forged_foreign_and_revoked_chains_are_refused() {
    let dir = lanyard_tests::TempDir::new("sec-chain");
    let d = dir.0.display().to_string();
    for org in ["org", "rogue"] {
        assert!(lanyard(&["org", "init", "--out", &format!("{d}/{org}")])
            .status
            .success());
    }
    for (org, chain) in [("org", "chain"), ("org", "chain2"), ("rogue", "rchain")] {
        assert!(lanyard(&[
            "org",
            "delegate",
            "--org-seed",
            &format!("{d}/{org}/org.seed"),
            "--out",
            &format!("{d}/{chain}"),
        ])
        .status
        .success());
    }
    let org = dir.join("org/org.public");
    mint(&dir.0, "chain", "good.jwt");
    mint(&dir.0, "chain2", "other.jwt");
    mint(&dir.0, "rchain", "foreign.jwt");
    assert!(verify(&org, &dir.join("good.jwt"), None).0);

    // Another org's chain: refused under this org's key.
    let (ok, why) = verify(&org, &dir.join("foreign.jwt"), None);
    assert!(!ok, "a token from another org's chain verified");
    assert!(!why.is_empty());

    // A forged chain: the rogue chain token rewritten to name this org's key as
    // its issuer, signature kept. The leaf minted from it must not verify.
    let org_hex = std::fs::read_to_string(&org).unwrap().trim().to_owned();
    forge(
        &dir.join("rchain/chain.jwt"),
        &format!("c['issuer']='I-{org_hex}'"),
        &dir.join("rchain/forged.jwt"),
    );
    std::fs::rename(dir.join("rchain/forged.jwt"), dir.join("rchain/chain.jwt")).unwrap();
    let o = lanyard(&[
        "token",
        "mint",
        "--issuer-jwt",
        &format!("{d}/rchain/chain.jwt"),
        "--issuer-seed",
        &format!("{d}/rchain/chain.seed"),
        "--subject",
        "spiffe://example.org/w",
        "--out",
        &format!("{d}/forged.jwt"),
    ]);
    if o.status.success() {
        assert!(
            !verify(&org, &dir.join("forged.jwt"), None).0,
            "forged chain verified"
        );
    }
    // A leaf whose claims were widened after signing.
    forge(
        &dir.join("good.jwt"),
        "c['sub']='spiffe://example.org/admin'",
        &dir.join("widened.jwt"),
    );
    assert!(!verify(&org, &dir.join("widened.jwt"), None).0);
    // An unsigned token (alg none) with the good token's claims.
    let good = std::fs::read_to_string(dir.join("good.jwt")).unwrap();
    let parts: Vec<&str> = good.trim().split('.').collect();
    std::fs::write(
        dir.join("none.jwt"),
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]),
    )
    .unwrap();
    assert!(!verify(&org, &dir.join("none.jwt"), None).0);

    // A revoked chain: every token it minted is refused with the deny list,
    // while another chain of the same org is untouched.
    let chain_jti = lanyard(&["token", "view", &format!("{d}/chain/chain.jwt")]);
    let view = String::from_utf8_lossy(&chain_jti.stdout).into_owned();
    let id = view
        .lines()
        .find_map(|l| l.trim().strip_prefix("id: "))
        .unwrap()
        .trim()
        .to_owned();
    let deny = dir.join("deny.jwt");
    assert!(lanyard(&[
        "org",
        "revoke-chain",
        "--org-seed",
        &format!("{d}/org/org.seed"),
        "--id",
        &id,
        "--deny-list",
        deny.to_str().unwrap(),
    ])
    .status
    .success());
    let (ok, why) = verify(&org, &dir.join("good.jwt"), Some(&deny));
    assert!(!ok, "a token from a revoked chain verified");
    assert!(why.contains("revoked"), "{why}");
    assert!(verify(&org, &dir.join("other.jwt"), Some(&deny)).0);
    // A deny list signed by another org is an error, not an empty list.
    let rogue_deny = dir.join("rogue-deny.jwt");
    assert!(lanyard(&[
        "org",
        "revoke-chain",
        "--org-seed",
        &format!("{d}/rogue/org.seed"),
        "--id",
        &id,
        "--deny-list",
        rogue_deny.to_str().unwrap(),
    ])
    .status
    .success());
    assert!(!verify(&org, &dir.join("other.jwt"), Some(&rogue_deny)).0);
}

#[test]
fn jwt_svid_validation_refuses_tampered_foreign_and_unsigned_tokens() {
    let d = Deployment::new(
        "sec-jwt",
        &entry("me", &[&format!("unix:uid:{}", my_uid())]),
    );
    let _agent = d.start();
    let other = Deployment::new(
        "sec-jwt-other",
        &entry("me", &[&format!("unix:uid:{}", my_uid())]),
    );
    let _other_agent = other.start();
    let good = jwt_svid(&d.socket(), "").unwrap();
    let foreign = jwt_svid(&other.socket(), "").unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let mut sig = parts[2].to_owned();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    sig.replace_range(0..1, flipped);
    let tampered = format!("{}.{}.{sig}", parts[0], parts[1]);
    let unsigned = format!("eyJhbGciOiJub25lIn0.{}.", parts[1]);
    rt().block_on(async {
        let mut c = SpiffeWorkloadApiClient::new(connect(&d.socket()).await.unwrap());
        let validate = |svid: String| ValidateJwtsvidRequest {
            audience: "security".into(),
            svid,
        };
        c.validate_jwtsvid(with_header(validate(good.clone())))
            .await
            .unwrap();
        for (what, t) in [
            ("tampered signature", tampered),
            ("another org's agent", foreign),
            ("alg none", unsigned),
            ("garbage", "not.a.jwt".into()),
        ] {
            let e = c
                .validate_jwtsvid(with_header(validate(t)))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{what}: {e:?}");
        }
        let e = c
            .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
                audience: "someone-else".into(),
                svid: good.clone(),
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "wrong audience");
    });
}

#[test]
fn oversized_messages_missing_headers_and_junk_bytes() {
    let d = Deployment::new(
        "sec-wire",
        &entry("me", &[&format!("unix:uid:{}", my_uid())]),
    );
    let agent = d.start();
    rt().block_on(async {
        let mut c = SpiffeWorkloadApiClient::new(connect(&d.socket()).await.unwrap());
        let req = |aud: String| JwtsvidRequest {
            audience: vec![aud],
            spiffe_id: String::new(),
        };
        // No `workload.spiffe.io: true`: InvalidArgument, as the SPIFFE spec says.
        let e = c
            .fetch_jwtsvid(tonic::Request::new(req("a".into())))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        let mut r = tonic::Request::new(req("a".into()));
        r.metadata_mut()
            .insert("workload.spiffe.io", "false".parse().unwrap());
        let e = c.fetch_jwtsvid(r).await.unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::InvalidArgument,
            "header false: {e:?}"
        );
        // 200 KB: over the 64 KiB cap, refused before decoding.
        let e = c
            .fetch_jwtsvid(with_header(req("x".repeat(200_000))))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        // The same connection still works.
        c.fetch_jwtsvid(with_header(req("a".into()))).await.unwrap();
    });
    // Bytes that are not HTTP/2: the connection is dropped, the agent carries on.
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xff; 4096],
        b"",
    ] {
        use std::io::{Read as _, Write as _};
        let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .unwrap();
        let _ = s.write_all(junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    jwt_svid(&d.socket(), "").unwrap();
    assert!(!agent.log().contains("panicked"), "{}", agent.log());
}

#[test]
fn the_agents_files_are_private_and_no_seed_is_logged() {
    let d = Deployment::new(
        "sec-files",
        &entry("me", &[&format!("unix:uid:{}", my_uid())]),
    );
    let agent = d.start();
    let out = d.dir.join("out");
    let o = lanyard(&[
        "fetch",
        "--socket",
        d.socket().to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    // The cache is written within a second of a mint.
    let cache = lanyard_tests::wait_for(10, "the credential cache", || {
        std::fs::read_dir(d.dir.join("data"))
            .ok()?
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().starts_with("cache"))
            .map(|e| e.path())
    });
    use std::os::unix::fs::MetadataExt as _;
    for entry in std::fs::read_dir(d.dir.join("data")).unwrap() {
        let p = entry.unwrap().path();
        let mode = std::fs::metadata(&p).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", p.display());
    }
    assert!(cache.exists());
    // Every seed the workload received is absent from the agent's log.
    let log = agent.log();
    let mut seeds = 0;
    for f in std::fs::read_dir(&out).unwrap() {
        let p = f.unwrap().path();
        let name = p.to_string_lossy();
        if name.ends_with(".seed") || name.ends_with(".key") {
            let secret = std::fs::read_to_string(&p).unwrap();
            let mode = std::fs::metadata(&p).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
            for line in secret
                .lines()
                .filter(|l| l.len() >= 32 && !l.starts_with("-----"))
            {
                assert!(
                    !log.contains(line.trim()),
                    "a secret from {} is in the log",
                    p.display()
                );
            }
            seeds += 1;
        }
    }
    assert!(
        seeds >= 2,
        "expected a seed and an X.509 key in {}",
        out.display()
    );
}

/// A nonce from `GetNonce`, signed for attestation by a fresh key.
async fn signed_nonce(
    c: &mut NodeClient<tonic::transport::Channel>,
) -> (KeyPair, Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let nonce = c
        .get_nonce(pb::GetNonceRequest {})
        .await
        .unwrap()
        .into_inner()
        .nonce;
    let sig = key
        .sign(&issuer_proof_message(IssuerProof::Attest, &nonce))
        .to_vec();
    (key, nonce, sig)
}

#[test]
fn issuer_refuses_a_replayed_nonce_and_admits_one_node_per_join_token() {
    let f = Fleet::new("sec-issuer");
    let addr = f.issuer_config_with(
        "issuer1",
        "sqlite://issuer1/issuer.db",
        "[limits]\nattest_per_sec = 100\nattest_burst = 200\n",
    );
    let _issuer = f.start_issuer("issuer1");
    let org =
        PublicKey::from_file_text(&std::fs::read_to_string(f.dir.join("org/org.public")).unwrap())
            .unwrap();
    let t1 = f.admin_cmd("issuer1", &["join-token", "create", "--name", "n1"]);
    let t2 = f.admin_cmd("issuer1", &["join-token", "create", "--name", "n2"]);
    let shared = f.admin_cmd("issuer1", &["join-token", "create", "--name", "shared"]);
    rt().block_on(async {
        let tls = lanyard_agent::tls::client_config(&org).unwrap();
        let ch = lanyard_agent::tls::channel(&addr, tls).await.unwrap();
        let mut c = NodeClient::new(ch.clone());

        // A nonce is single use: the same signed attestation replayed with
        // another valid join token is refused, though the token stays unspent.
        let (key, nonce, sig) = signed_nonce(&mut c).await;
        let req = |token: &str| pb::AttestRequest {
            nonce: nonce.clone(),
            agent_public_key: key.public().to_hex(),
            nonce_signature: sig.clone(),
            evidence: Some(pb::attest_request::Evidence::JoinToken(token.into())),
        };
        c.attest(req(&t1)).await.unwrap();
        let e = c.attest(req(&t2)).await.unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::PermissionDenied,
            "replayed nonce: {e:?}"
        );
        // A nonce signed by one key cannot be used for another.
        let (_, nonce, sig) = signed_nonce(&mut c).await;
        let e = c
            .attest(pb::AttestRequest {
                nonce,
                agent_public_key: KeyPair::generate().unwrap().public().to_hex(),
                nonce_signature: sig,
                evidence: Some(pb::attest_request::Evidence::JoinToken(t2.clone())),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        // t2 was never spent by the refused calls.
        attest_node(
            &mut c,
            &KeyPair::generate().unwrap(),
            Evidence::JoinToken(t2.clone()),
        )
        .await
        .unwrap();

        // Sixteen nodes race one join token: exactly one is admitted.
        let mut racers = Vec::new();
        for _ in 0..16 {
            let (ch, token) = (ch.clone(), shared.clone());
            racers.push(tokio::spawn(async move {
                let mut c = NodeClient::new(ch);
                attest_node(
                    &mut c,
                    &KeyPair::generate().unwrap(),
                    Evidence::JoinToken(token),
                )
                .await
                .map_err(|s| s.code())
            }));
        }
        let mut won = 0;
        for r in racers {
            match r.await.unwrap() {
                Ok(_) => won += 1,
                Err(code) => assert_eq!(code, tonic::Code::PermissionDenied),
            }
        }
        assert_eq!(won, 1, "one join token admitted {won} nodes");
    });
}
