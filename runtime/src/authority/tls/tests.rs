//! Unit tests for the issuer TLS: handshakes against real loopback listeners, and
//! the certificate helpers other modules' tests share.

use super::*;
use futures_util::StreamExt as _;
use lanyard_token::KeyPair;
use tokio::net::TcpListener;

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `(org.crt, chain.crt)` in DER, as `lanyard org delegate` makes them.
pub(crate) fn delegate(org: &KeyPair, chain: &KeyPair, nbf: u64, exp: u64) -> (Vec<u8>, Vec<u8>) {
    let (org_pem, chain_pem) =
        crate::svid::delegate_certs(org, &chain.public(), &[], nbf, exp).unwrap();
    let one = |pem: &str| crate::pem::decode_certs(pem).into_iter().next().unwrap();
    (one(&org_pem), one(&chain_pem))
}

/// An issuer-role chain token for `chain`, valid from `nbf` to `exp`.
pub(crate) fn chain_jwt(org: &KeyPair, chain: &KeyPair, nbf: u64, exp: u64) -> String {
    let req = lanyard_token::DelegateRequest {
        name: "issuer-0".into(),
        validity_secs: exp.saturating_sub(nbf).max(1),
        roles: vec!["issuer".into()],
        ..Default::default()
    };
    lanyard_token::delegate(org, &chain.public(), &req, nbf).unwrap()
}

/// An issuer for `org` with a day of validity left.
fn issuer(org: &KeyPair) -> Arc<rustls::ServerConfig> {
    let chain = KeyPair::generate().unwrap();
    let (org_crt, chain_crt) = delegate(org, &chain, now() - 60, now() + 86_400);
    let jwt = chain_jwt(org, &chain, now() - 60, now() + 86_400);
    server_config(&chain, &jwt, chain_crt, org_crt, now() + 86_400, now()).unwrap()
}

/// Serves `config` on loopback; returns the address.
async fn serve(config: Arc<rustls::ServerConfig>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut conns = Box::pin(incoming(listener, config));
        while let Some(conn) = conns.next().await {
            // Keep each connection open until the client goes away.
            tokio::spawn(async move {
                let mut conn = conn.unwrap();
                let _ = tokio::io::copy(&mut tokio::io::empty(), &mut conn).await;
                let mut buf = [0u8; 64];
                let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await;
            });
        }
    });
    addr
}

async fn handshake(
    addr: std::net::SocketAddr,
    org: &lanyard_token::PublicKey,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(client_config(org).unwrap());
    let tcp = TcpStream::connect(addr).await?;
    tokio::time::timeout(
        Duration::from_secs(5),
        connector.connect(issuer_name().unwrap(), tcp),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn handshake_with_the_org_key_negotiates_h2() {
    let org = KeyPair::generate().unwrap();
    let addr = serve(issuer(&org)).await;
    let tls = handshake(addr, &org.public()).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN_H2));
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test]
async fn another_org_key_is_refused() {
    let org = KeyPair::generate().unwrap();
    let other = KeyPair::generate().unwrap();
    let addr = serve(issuer(&org)).await;
    let err = handshake(addr, &other.public()).await.unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn a_chain_delegated_by_another_org_is_refused() {
    let org = KeyPair::generate().unwrap();
    let other = KeyPair::generate().unwrap();
    let chain = KeyPair::generate().unwrap();
    let (org_crt, _) = delegate(&org, &chain, now() - 60, now() + 86_400);
    let (_, foreign_chain_crt) = delegate(&other, &chain, now() - 60, now() + 86_400);
    // The issuer's own self-check refuses the mismatch at startup...
    let jwt = chain_jwt(&org, &chain, now() - 60, now() + 86_400);
    let err = server_config(
        &chain,
        &jwt,
        foreign_chain_crt.clone(),
        org_crt.clone(),
        now() + 86_400,
        now(),
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::Chain(_)), "{err}");
    // ...and an issuer that skips it is refused by agents.
    let (certs, key) = issuer_chain(
        &chain,
        &jwt,
        foreign_chain_crt,
        org_crt,
        now() + 86_400,
        now(),
    )
    .unwrap();
    let addr = serve(config_for(certs, key).unwrap()).await;
    let err = handshake(addr, &org.public()).await.unwrap_err();
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn a_self_signed_impostor_is_refused() {
    let org = KeyPair::generate().unwrap();
    // Claims the org's name in a root of its own key.
    let impostor = KeyPair::generate().unwrap();
    let chain = KeyPair::generate().unwrap();
    let (fake_root, chain_crt) = delegate(&impostor, &chain, now() - 60, now() + 86_400);
    let jwt = chain_jwt(&impostor, &chain, now() - 60, now() + 86_400);
    let (certs, key) =
        issuer_chain(&chain, &jwt, chain_crt, fake_root, now() + 86_400, now()).unwrap();
    let addr = serve(config_for(certs, key).unwrap()).await;
    let err = handshake(addr, &org.public()).await.unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn an_expired_chain_is_refused() {
    let org = KeyPair::generate().unwrap();
    let chain = KeyPair::generate().unwrap();
    let (org_crt, chain_crt) = delegate(&org, &chain, now() - 7_200, now() - 3_600);
    let jwt = chain_jwt(&org, &chain, now() - 7_200, now() - 3_600);
    let err = server_config(
        &chain,
        &jwt,
        chain_crt.clone(),
        org_crt.clone(),
        now() - 3_600,
        now(),
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::Expired { .. }), "{err}");
    // An issuer that ignores the chain's expiry and makes a valid leaf anyway.
    let (certs, key) =
        issuer_chain(&chain, &jwt, chain_crt, org_crt, now() + 3_600, now()).unwrap();
    let addr = serve(config_for(certs, key).unwrap()).await;
    let err = handshake(addr, &org.public()).await.unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

#[tokio::test]
async fn a_silent_client_does_not_block_others() {
    let org = KeyPair::generate().unwrap();
    let addr = serve(issuer(&org)).await;
    // Connects, then says nothing: its handshake waits out the 10 s limit.
    let _silent = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    handshake(addr, &org.public()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn grpc_round_trip() {
    use lanyard_proto::workload::credentials_client::CredentialsClient;
    use lanyard_proto::workload::credentials_server::{Credentials, CredentialsServer};
    use lanyard_proto::workload::*;

    struct Echo;
    #[tonic::async_trait]
    impl Credentials for Echo {
        type FetchCredentialsStream =
            futures_util::stream::Empty<Result<FetchCredentialsResponse, tonic::Status>>;
        async fn fetch_credentials(
            &self,
            _: tonic::Request<FetchCredentialsRequest>,
        ) -> Result<tonic::Response<Self::FetchCredentialsStream>, tonic::Status> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn get_nonce(
            &self,
            request: tonic::Request<GetNonceRequest>,
        ) -> Result<tonic::Response<GetNonceResponse>, tonic::Status> {
            // Proves the connect info reaches handlers.
            let nonce = request.remote_addr().map(|a| a.ip().to_string());
            Ok(tonic::Response::new(GetNonceResponse {
                nonce: nonce.unwrap_or_default(),
            }))
        }
        async fn sign_public_key(
            &self,
            _: tonic::Request<SignPublicKeyRequest>,
        ) -> Result<tonic::Response<SignPublicKeyResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented(""))
        }
    }

    let org = KeyPair::generate().unwrap();
    let config = issuer(&org);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CredentialsServer::new(Echo))
            .serve_with_incoming(incoming(listener, config)),
    );
    let client_config = client_config(&org.public()).unwrap();

    // Lazy: builds with nothing listening, connects on first use.
    let lazy = lazy_channel(&addr, client_config.clone());
    let reply = CredentialsClient::new(lazy)
        .get_nonce(GetNonceRequest {})
        .await
        .unwrap();
    assert_eq!(reply.into_inner().nonce, "127.0.0.1");

    let eager = channel(&addr, client_config).await.unwrap();
    CredentialsClient::new(eager)
        .get_nonce(GetNonceRequest {})
        .await
        .unwrap();

    // The wrong org: the eager channel fails to connect.
    let other = KeyPair::generate().unwrap();
    let err = channel(&addr, super::client_config(&other.public()).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::Connect(_)), "{err}");
}

#[test]
fn the_org_spki_matches_what_a_trust_anchor_holds() {
    let org = KeyPair::generate().unwrap();
    let (org_crt, _) = delegate(&org, &KeyPair::generate().unwrap(), now(), now() + 60);
    let (_, spki) = anchor(&CertificateDer::from(org_crt)).unwrap();
    assert_eq!(
        spki,
        OrgKeyVerifier::new(IssuerPolicy::new(org.public(), None, Arc::default())).org_spki
    );
}
