//! lanyard's own credentials: `fetch` with seed and JWT, `sign-public-key`, `fetch --watch`.

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};

use lanyard_agent::client::{connect, with_header};
use lanyard_proto::workload::credentials_client::CredentialsClient;
use lanyard_tests::{lanyard, my_uid, rt, Deployment};

use super::entries;

#[test]
fn seed_and_jwt_verify_against_the_org_key() {
    let d = Deployment::new("seedjwt", &entries(my_uid()));
    let _agent = d.start();
    let out_dir = d.dir.join("creds");
    let out = lanyard(&[
        "fetch",
        "--socket",
        d.socket().to_str().unwrap(),
        "--out-dir",
        out_dir.to_str().unwrap(),
        "--audience",
        "billing",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwt = out_dir.join("credential.jwt");
    let org = d.dir.join("org/org.public");
    let v = lanyard(&[
        "token",
        "verify",
        "--json",
        "--org-public",
        org.to_str().unwrap(),
        "--audience",
        "mqtt",
        jwt.to_str().unwrap(),
    ]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let claims: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(claims["claims"]["sub"], "spiffe://example.org/e2e");
    // The seed the workload got is the key the token names.
    let seed = lanyard_token::KeyPair::from_seed_text(
        &std::fs::read_to_string(out_dir.join("credential.seed")).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["claims"]["public_key"], seed.public().to_hex());
    for f in ["credential.seed", "svid.key", "jwt_svid.billing.token"] {
        assert_eq!(
            std::fs::metadata(out_dir.join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600,
            "{f}"
        );
    }
    // Proof of possession with the delivered seed.
    let nonce = d.dir.join("nonce");
    std::fs::write(&nonce, "e2e-nonce").unwrap();
    let sig = lanyard(&[
        "token",
        "prove",
        "--seed",
        out_dir.join("credential.seed").to_str().unwrap(),
        "--nonce-file",
        nonce.to_str().unwrap(),
    ]);
    let sig = String::from_utf8(sig.stdout).unwrap();
    let ok = lanyard(&[
        "token",
        "check-proof",
        "--token",
        jwt.to_str().unwrap(),
        "--nonce-file",
        nonce.to_str().unwrap(),
        "--signature",
        sig.trim(),
        "--org-public",
        org.to_str().unwrap(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn sign_public_key_keeps_the_seed_in_the_workload() {
    use lanyard_proto::workload::{GetNonceRequest, SignPublicKeyRequest};
    let d = Deployment::new("signpk", &entries(my_uid()));
    let _agent = d.start();
    rt().block_on(async {
        let mut c = CredentialsClient::new(connect(&d.socket()).await.unwrap());
        let key = lanyard_token::KeyPair::generate().unwrap();
        let nonce = c
            .get_nonce(with_header(GetNonceRequest {}))
            .await
            .unwrap()
            .into_inner()
            .nonce;
        let sig = lanyard_token::pop::prove(&key, nonce.as_bytes()).unwrap();
        let req = |nonce: &str, sig: &str| SignPublicKeyRequest {
            subject: "spiffe://example.org/e2e".into(),
            public_key: key.public().to_hex(),
            nonce: nonce.into(),
            signature: sig.into(),
            audiences: vec!["billing".into()],
        };
        let r = c
            .sign_public_key(with_header(req(&nonce, &sig)))
            .await
            .unwrap()
            .into_inner();
        let org = lanyard_token::PublicKey::from_file_text(
            &std::fs::read_to_string(d.dir.join("org/org.public")).unwrap(),
        )
        .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let t = lanyard_token::Verifier::new(org)
            .with_audience("billing")
            .verify(&r.jwt, now)
            .unwrap();
        assert_eq!(
            t.holder(),
            Some(key.public()),
            "the JWT must name the workload's own key"
        );
        // The nonce is single use.
        let again = c
            .sign_public_key(with_header(req(&nonce, &sig)))
            .await
            .unwrap_err();
        assert_eq!(again.code(), tonic::Code::PermissionDenied);
        // A proof by another key is refused.
        let nonce = c
            .get_nonce(with_header(GetNonceRequest {}))
            .await
            .unwrap()
            .into_inner()
            .nonce;
        let other = lanyard_token::pop::prove(
            &lanyard_token::KeyPair::generate().unwrap(),
            nonce.as_bytes(),
        )
        .unwrap();
        let err = c
            .sign_public_key(with_header(req(&nonce, &other)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    });
}

#[test]
fn fetch_watch_starts_the_child_only_after_every_file_is_written() {
    let d = Deployment::new("watch", &entries(my_uid()));
    let _agent = d.start();
    let out = d.dir.join("creds");
    let probe = format!(
        "for f in credential.seed credential.jwt org.public svid.pem svid.key bundle.pem jwt_svid.billing.token; do test -s {0}/$f || exit 1; done; echo complete > {0}/child-saw",
        out.display()
    );
    let mut watch = Command::new(lanyard_tests::lanyard_bin())
        .args([
            "fetch",
            "--socket",
            d.socket().to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--audience",
            "billing",
            "--watch",
            "--exec",
            "sh",
            "-c",
            &probe,
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let seen = out.join("child-saw");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !seen.exists() {
        assert!(watch.try_wait().unwrap().is_none(), "fetch --watch exited");
        assert!(
            std::time::Instant::now() < deadline,
            "the child never saw a complete set of files"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(std::fs::read_to_string(seen).unwrap().trim(), "complete");
}
