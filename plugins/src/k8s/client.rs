//! TLS trust for the kubelet client: the CA bundle, or the verifier behind
//! `insecure_skip_verify`. The exchange itself is hyper's ([`crate::http`]).
//! Kept apart from the attestor, which only decides what the pod list means.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::K8sError;

/// Largest `/pods` body read. A node's pod list is well under a MiB even at the
/// default 110 pods; the cap only stops a runaway answer from exhausting memory.
pub(super) const MAX_BODY: usize = 64 * 1024 * 1024;

/// Reads the CA bundle at `path` into a root store.
pub(super) fn load_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, K8sError> {
    let err = |reason: String| K8sError::Ca {
        path: path.display().to_string(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))? {
        let cert = cert.map_err(|e| err(e.to_string()))?;
        roots.add(cert).map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no CERTIFICATE in the file".into()));
    }
    Ok(roots)
}

/// The verifier behind `insecure_skip_verify`: any certificate is accepted, but
/// handshake signatures are still checked so the connection is at least to the
/// holder of *some* key.
#[derive(Debug)]
pub(super) struct NoVerification(pub(super) Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
