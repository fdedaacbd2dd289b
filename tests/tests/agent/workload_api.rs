//! The SPIFFE Workload API with real clients (Rust `spiffe`, Python over gRPC C core) and its error codes.

use std::process::{Command, Stdio};

use lanyard_agent::client::{connect, with_header};
use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::spiffe::JwtsvidRequest;
use lanyard_proto::workload::credentials_client::CredentialsClient;
use lanyard_proto::workload::FetchCredentialsRequest;
use lanyard_tests::{my_uid, rt, Deployment};
use spiffe::{WorkloadApiClient, X509Svid};

use super::{entries, pem};

fn openssl(dir: &std::path::Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write as _;
    let mut c = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin).unwrap();
    c.wait_with_output().unwrap()
}

#[test]
fn rust_spiffe_client_gets_and_validates_svids() {
    let d = Deployment::new("spiffe-rs", &entries(my_uid()));
    let _agent = d.start();
    rt().block_on(async {
        let client = WorkloadApiClient::connect_to(format!("unix:{}", d.socket().display()))
            .await
            .unwrap();

        // JWT-SVID: fetched, validated by the agent, and validated locally by the
        // spiffe crate against the JWT bundle the agent publishes.
        let svid = client.fetch_jwt_svid(["billing"], None).await.unwrap();
        assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/e2e");
        let validated = client
            .validate_jwt_token(["billing"], svid.token())
            .await
            .unwrap();
        assert_eq!(validated.spiffe_id(), svid.spiffe_id());
        assert!(
            client
                .validate_jwt_token(["other"], svid.token())
                .await
                .is_err(),
            "wrong audience accepted"
        );
        let bundles = client.fetch_jwt_bundles().await.unwrap();
        let local =
            spiffe::JwtSvid::parse_and_validate(svid.token(), &bundles, &["billing"]).unwrap();
        assert_eq!(local.spiffe_id(), svid.spiffe_id());
        // The same audience set again is served from the cache.
        let again = client.fetch_jwt_svid(["billing"], None).await.unwrap();
        assert_eq!(again.token(), svid.token());

        // X.509-SVID: one URI SAN, and its chain verifies to the bundle (openssl).
        let x: X509Svid = client.fetch_x509_svid().await.unwrap();
        assert_eq!(x.spiffe_id().to_string(), "spiffe://example.org/e2e");
        let xb = client.fetch_x509_bundles().await.unwrap();
        let td = spiffe::TrustDomain::new("example.org").unwrap();
        let bundle = xb.get(&td).unwrap();
        let roots = bundle.authorities();
        assert!(!roots.is_empty());
        let chain: String = x.cert_chain().iter().map(|c| pem(c.as_ref())).collect();
        let root: String = roots.iter().map(|c| pem(c.as_ref())).collect();
        std::fs::write(d.dir.join("leaf.pem"), pem(x.cert_chain()[0].as_ref())).unwrap();
        std::fs::write(d.dir.join("chain.pem"), chain).unwrap();
        std::fs::write(d.dir.join("root.pem"), &root).unwrap();
        let out = openssl(
            &d.dir.0,
            &[
                "verify",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "chain.pem",
                "-purpose",
                "sslclient",
                "leaf.pem",
            ],
            b"",
        );
        assert!(
            out.status.success(),
            "openssl: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The bundle's root key is the org public key: one anchor.
        let org_public = std::fs::read_to_string(d.dir.join("org/org.public")).unwrap();
        let spki = openssl(
            &d.dir.0,
            &["x509", "-noout", "-pubkey", "-in", "root.pem"],
            b"",
        );
        let der = openssl(
            &d.dir.0,
            &["pkey", "-pubin", "-outform", "DER"],
            &spki.stdout,
        );
        assert!(
            lanyard_token::hex::encode(&der.stdout).ends_with(&org_public),
            "root key is not the org key"
        );
    });
}

#[test]
fn header_audience_and_identity_errors_use_spiffe_codes() {
    let d = Deployment::new("codes", &entries(my_uid()));
    let _agent = d.start();
    rt().block_on(async {
        let ch = connect(&d.socket()).await.unwrap();
        let mut c = SpiffeWorkloadApiClient::new(ch.clone());
        let req = JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        };
        let err = c.fetch_jwtsvid(tonic::Request::new(req)).await.unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "no header: {err:?}"
        );
        let err = c
            .fetch_jwtsvid(with_header(JwtsvidRequest {
                audience: vec![],
                spiffe_id: String::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "empty audience: {err:?}"
        );
        let err = c
            .fetch_jwtsvid(with_header(JwtsvidRequest {
                audience: vec!["a".into()],
                spiffe_id: "spiffe://example.org/nobody".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::PermissionDenied,
            "identity not issued to caller: {err:?}"
        );
        let mut creds = CredentialsClient::new(ch);
        let err = creds
            .fetch_credentials(tonic::Request::new(FetchCredentialsRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    });
}

/// The venv `scripts/test-all.sh` creates with the PyPI `spiffe` package.
fn python() -> std::path::PathBuf {
    let p = std::env::var_os("LANYARD_PYTHON").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-venv/bin/python"),
        std::path::PathBuf::from,
    );
    assert!(
        p.exists(),
        "{} missing: scripts/test-all.sh creates the venv with the spiffe package",
        p.display()
    );
    p
}

#[test]
fn python_spiffe_client_over_grpc_c_core() {
    let d = Deployment::new("python", &entries(my_uid()));
    let agent = d.start();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/spiffe_client.py");
    let out = Command::new(python())
        .arg(script)
        .arg(d.socket())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python client failed: {}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["jwt_spiffe_id"], "spiffe://example.org/e2e");
    assert_eq!(v["jwt_audience"], serde_json::json!(["billing"]));
    assert_eq!(v["x509_spiffe_id"], "spiffe://example.org/e2e");
    assert_eq!(v["x509_chain_len"], 2);
    assert_eq!(v["x509_bundle_roots"], 1);
}
