//! End-to-end with the upstream issuer: real `lanyard issuer` and `lanyard agent`
//! processes, real SPIFFE clients (Rust `spiffe` crate, Python `spiffe` package),
//! SQLite and a real PostgreSQL server, and the issuer's gRPC API driven directly
//! for the security checks an agent's own code would never attempt.
#![allow(clippy::unwrap_used, clippy::panic)]

mod limits;
mod node_attestation;
mod postgres;
mod sqlite;

use lanyard_agent::client::{connect, with_header};
use lanyard_agent::upstream::{attest_node, open_session, Evidence};
use lanyard_proto::issuer::node_client::NodeClient;
use lanyard_proto::workload::credentials_client::CredentialsClient;
use lanyard_proto::workload::FetchCredentialsRequest;
use lanyard_tests::{http_get, rt, Fleet};
use lanyard_token::{KeyPair, PublicKey};
use spiffe::WorkloadApiClient;

pub(crate) fn org(f: &Fleet) -> PublicKey {
    PublicKey::from_file_text(&std::fs::read_to_string(f.dir.join("org/org.public")).unwrap())
        .unwrap()
}

/// A JWT-SVID for `aud` from the agent at `socket`, via the Rust spiffe crate.
pub(crate) fn jwt_svid(socket: &std::path::Path, aud: &str) -> Result<String, String> {
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

pub(crate) fn python_fetch(socket: &std::path::Path) -> serde_json::Value {
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
pub(crate) fn credentials(socket: &std::path::Path) -> Vec<lanyard_proto::workload::Credential> {
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

pub(crate) fn connected(health: &str) -> Option<()> {
    let (code, body) = http_get(health, "/readyz")?;
    (code == 200 && body.contains("upstream: connected")).then_some(())
}

/// Attests with a join token and opens a session, as an agent would.
pub(crate) async fn join(
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

pub(crate) fn with_session<T>(session: &str, msg: T) -> tonic::Request<T> {
    lanyard_agent::upstream::with_session(session, msg).unwrap()
}
