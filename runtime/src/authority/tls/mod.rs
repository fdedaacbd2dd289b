//! TLS between agents and the issuer, anchored on the org key alone.
//!
//! The issuer's server identity is its chain issuer credential: at startup it makes a
//! fresh P-256 leaf for [`ISSUER_SERVER_NAME`], signs it with the chain key and
//! presents `[leaf, chain.crt, org.crt]`. An agent is configured with nothing but the
//! org public key (DESIGN.md, Trust model): [`OrgKeyVerifier`] takes the last
//! presented certificate as the candidate root, accepts it only if its key *is* the
//! org key, and then verifies the path to it as usual. So there is no CA bundle to
//! distribute, and an issuer whose chain was delegated by another org, or a
//! self-signed impostor, fails the handshake.
//!
//! There is no client authentication here: agents prove themselves in-band, by
//! signing a fresh nonce with their own seed for every session.

mod accept;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
pub(crate) mod tests;

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{aws_lc_rs, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::svid::SvidError;
use crate::tls_identity::IssuerPolicy;
pub use accept::{incoming, TlsConn};

/// The DNS name in the issuer's TLS leaf, and the only one agents accept: the
/// issuer is identified by its credential, not by where it is reached.
pub const ISSUER_SERVER_NAME: &str = "lanyard-issuer";

/// gRPC needs HTTP/2; negotiating it also keeps an HTTP/1 client from talking past us.
const ALPN_H2: &[u8] = b"h2";
/// How long an agent waits for TCP connect plus handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an agent pings the issuer on its connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may go unanswered before the connection is dropped.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Clock skew allowed at agents, as for X.509-SVIDs.
const CLOCK_SKEW: u64 = 60;

/// Why a TLS configuration or connection could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The leaf key or certificate could not be made, or the chain key is unusable.
    #[error("certificate: {0}")]
    Certificate(#[from] SvidError),
    /// rustls refused the configuration (key and certificate mismatch, protocol versions).
    #[error("tls config: {0}")]
    Config(#[from] rustls::Error),
    /// The chain issuer credential has expired, so no agent would accept what it signs.
    #[error("the chain credential expired at {not_after} (now {now})")]
    Expired {
        /// Its end of validity, Unix seconds.
        not_after: u64,
        /// The time it was checked at, Unix seconds.
        now: u64,
    },
    /// `chain.crt` and `org.crt` do not certify the chain key (from another org or
    /// another delegation, or not yet valid): agents would refuse every handshake.
    #[error("chain.crt and org.crt do not certify this chain key: {0}")]
    Chain(rustls::Error),
    /// The issuer could not be reached, or the handshake failed.
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
}

/// The one crypto stack (DESIGN.md, Crypto); no process-wide default is installed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

fn issuer_name() -> Result<ServerName<'static>, rustls::Error> {
    ServerName::try_from(ISSUER_SERVER_NAME)
        .map_err(|e| rustls::Error::General(format!("server name: {e}")))
}

/// The issuer's TLS configuration: a fresh P-256 leaf for [`ISSUER_SERVER_NAME`],
/// signed by the chain key, presented as `[leaf, chain.crt, org.crt]`. TLS 1.3 only,
/// ALPN `h2`, no client certificates.
///
/// `not_after` is the chain credential's expiry: the leaf lives as long as it, so
/// rebuild the configuration when the chain credential is renewed. Before returning,
/// the chain is verified against `org.crt` exactly as agents will, so a wrong
/// `chain.crt` fails here, at startup, instead of in every agent's handshake.
pub fn server_config(
    chain_key: &lanyard_token::KeyPair,
    chain_jwt: &str,
    chain_crt_der: Vec<u8>,
    org_crt_der: Vec<u8>,
    not_after: u64,
    now: u64,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    if not_after <= now {
        return Err(TlsError::Expired { not_after, now });
    }
    let (chain, key) = issuer_chain(
        chain_key,
        chain_jwt,
        chain_crt_der,
        org_crt_der,
        not_after,
        now,
    )?;
    self_check(&chain, now)?;
    config_for(chain, key)
}

/// The leaf and the chain it is presented with, unchecked.
pub(crate) fn issuer_chain(
    chain_key: &lanyard_token::KeyPair,
    chain_jwt: &str,
    chain_crt_der: Vec<u8>,
    org_crt_der: Vec<u8>,
    not_after: u64,
    now: u64,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let issuer = crate::svid::chain_issuer(chain_key, now, not_after)?;
    let key = rcgen::KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(SvidError::from)?;
    let mut p = CertificateParams::default();
    p.distinguished_name = crate::svid::dn(ISSUER_SERVER_NAME.to_owned());
    let name = ISSUER_SERVER_NAME.try_into().map_err(SvidError::from)?;
    p.subject_alt_names = vec![SanType::DnsName(name)];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = crate::svid::time(now.saturating_sub(CLOCK_SKEW));
    p.not_after = crate::svid::time(not_after);
    p.serial_number = Some(crate::svid::random_serial()?);
    // The chain token, whose org-signed grant says this chain may be the issuer.
    p.custom_extensions = vec![crate::tls_identity::chain_token_extension(chain_jwt)];
    let leaf = p.signed_by(&key, &issuer).map_err(SvidError::from)?;
    let chain = vec![
        leaf.der().clone(),
        CertificateDer::from(chain_crt_der),
        CertificateDer::from(org_crt_der),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((chain, key))
}

/// Verifies `chain` the way an agent of the org in its last certificate would.
fn self_check(chain: &[CertificateDer<'static>], now: u64) -> Result<(), TlsError> {
    let Some((leaf, rest)) = chain.split_first() else {
        return Err(TlsError::Chain(CertificateError::BadEncoding.into()));
    };
    // The org the chain claims, to check that the chain really leads there.
    let org_spki = match rest.last() {
        Some(root) => anchor(root).map_err(TlsError::Chain)?.1,
        None => Vec::new(),
    };
    verify_chain(
        &org_spki,
        leaf,
        rest,
        UnixTime::since_unix_epoch(Duration::from_secs(now)),
        provider().signature_verification_algorithms,
    )
    .map_err(TlsError::Chain)
}

fn config_for(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// An agent's TLS configuration for the issuer: TLS 1.3 only, ALPN `h2`, and the
/// server verified by [`OrgKeyVerifier`], so `org` is the only thing trusted.
/// Any non-revoked issuer-role chain of `org` is accepted; the agent itself
/// uses [`client_config_with`] to add its deny list and `issuer_id`.
pub fn client_config(
    org: &lanyard_token::PublicKey,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    client_config_with(IssuerPolicy::new(*org, None, Arc::default()))
}

/// [`client_config`] with the issuer `policy` (deny list, `issuer_id`).
pub fn client_config_with(policy: IssuerPolicy) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let verifier =
        OrgKeyVerifier::with_algorithms(policy, provider.signature_verification_algorithms);
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A server certificate verifier that trusts exactly one key: the org's, and
/// only an issuer-role chain of it.
///
/// The last certificate the server presents is the candidate root. It is accepted
/// only if its public key is the org key; then the end-entity certificate must chain
/// to it through the certificates in between (signatures, validity at `now`, CA
/// constraints, EKU serverAuth) and name [`ISSUER_SERVER_NAME`]. Nothing else, no
/// system roots and no configured CA file, is consulted. Then the chain token
/// in the leaf must pass the [`IssuerPolicy`] (issuer role, not revoked, the
/// configured `issuer_id`): any org chain can make a valid X.509 path.
#[derive(Debug)]
pub struct OrgKeyVerifier {
    /// The org key's SubjectPublicKeyInfo *contents* (algorithm and key, without the
    /// outer SEQUENCE), the form a `TrustAnchor` holds it in.
    org_spki: Vec<u8>,
    policy: IssuerPolicy,
    algorithms: WebPkiSupportedAlgorithms,
}

impl OrgKeyVerifier {
    /// A verifier for `policy`, with the aws-lc-rs signature algorithms.
    pub fn new(policy: IssuerPolicy) -> Self {
        Self::with_algorithms(
            policy,
            aws_lc_rs::default_provider().signature_verification_algorithms,
        )
    }

    fn with_algorithms(policy: IssuerPolicy, algorithms: WebPkiSupportedAlgorithms) -> Self {
        // AlgorithmIdentifier { id-Ed25519 } then BIT STRING { 0 unused bits, key } (RFC 8410).
        let mut org_spki = vec![0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        org_spki.extend_from_slice(policy.org().as_bytes());
        Self {
            org_spki,
            policy,
            algorithms,
        }
    }
}

/// A one-anchor store for `root`, and the anchor's SPKI contents.
fn anchor(root: &CertificateDer<'_>) -> Result<(RootCertStore, Vec<u8>), rustls::Error> {
    let mut store = RootCertStore::empty();
    store.add(root.clone())?;
    let spki = store
        .roots
        .first()
        .map(|a| a.subject_public_key_info.to_vec())
        .unwrap_or_default();
    Ok((store, spki))
}

/// The whole server check: see [`OrgKeyVerifier`].
fn verify_chain(
    org_spki: &[u8],
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    algorithms: WebPkiSupportedAlgorithms,
) -> Result<(), rustls::Error> {
    // Even an org that signs the leaf directly presents its root after it.
    let Some((root, between)) = intermediates.split_last() else {
        return Err(CertificateError::UnknownIssuer.into());
    };
    let (store, root_spki) = anchor(root)?;
    // A TrustAnchor keeps the SPKI without its outer SEQUENCE; so does `org_spki`.
    if root_spki != org_spki {
        return Err(CertificateError::UnknownIssuer.into());
    }
    let cert = ParsedCertificate::try_from(end_entity)?;
    verify_server_cert_signed_by_trust_anchor(&cert, &store, between, now, algorithms.all)?;
    verify_server_name(&cert, &issuer_name()?)
}

impl ServerCertVerifier for OrgKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        // Ignored on purpose: the issuer is known by its credential, whatever name
        // or address it was dialled by.
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_chain(
            &self.org_spki,
            end_entity,
            intermediates,
            now,
            self.algorithms,
        )?;
        self.policy
            .check_leaf(end_entity.as_ref(), now.as_secs())
            .map_err(|e| {
                tracing::warn!(error = %e, "refusing the issuer's TLS identity");
                rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                    Arc::new(e),
                )))
            })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The configs only enable TLS 1.3; refuse rather than trust that.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn endpoint() -> Endpoint {
    // The URI only fills `:authority`; the connector below decides where to go.
    // HTTP/2 PINGs on idle connections too: the agent's Sync stream is silent
    // while nothing changes, and without them a cut network (no FIN, no RST)
    // left agents "connected" to a dead link for as long as it lasted.
    Endpoint::from_static("http://lanyard-issuer")
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
}

/// A connector for the issuer at `address` (`host:port`): TCP with TCP_NODELAY, then
/// TLS for [`ISSUER_SERVER_NAME`]. The endpoint's timeout covers both.
fn connector(
    address: &str,
    config: Arc<rustls::ClientConfig>,
) -> impl tower::Service<
    tonic::codegen::http::Uri,
    Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = std::io::Error,
    Future = impl Send,
> + Send
       + Clone
       + 'static {
    let address = address.to_owned();
    let connector = tokio_rustls::TlsConnector::from(config);
    tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let address = address.clone();
        let connector = connector.clone();
        async move {
            let name = issuer_name().map_err(std::io::Error::other)?;
            let tcp = TcpStream::connect(&address).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        }
    })
}

/// Connects to the issuer at `address` (`host:port`) over TLS verified by
/// `config` (see [`client_config`]); fails if it is unreachable within 5 s or
/// does not prove the org's delegation.
pub async fn channel(
    address: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel, TlsError> {
    Ok(endpoint()
        .connect_with_connector(connector(address, config))
        .await?)
}

/// Like [`channel`], but connects on first use (and reconnects as needed), so an
/// agent that starts while the issuer is down still starts. Needs a tokio runtime.
pub fn lazy_channel(address: &str, config: Arc<rustls::ClientConfig>) -> Channel {
    endpoint().connect_with_connector_lazy(connector(address, config))
}
