//! Entry points shared by the cargo-fuzz targets (`fuzz/` at the repository
//! root) and the corpus replay test (`tests/fuzz_corpus.rs`), so a crash the
//! fuzzer finds replays as an ordinary `cargo test`.

use std::path::Path;

/// The `:authority` rewriter on arbitrary bytes, fed in chunks whose size is the
/// first byte.
pub fn authority_fix_bytes(data: &[u8]) {
    crate::authority_fix::fuzz_one(data);
}

/// The config parser on arbitrary text.
pub fn config_bytes(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::parse(text, Path::new("/etc/lanyard"), |_| None);
    }
}

/// The Workload API request handling on arbitrary bytes: the first byte picks a
/// request type, the rest is decoded with prost as that message and, when it
/// decodes, converted the way the server's handler converts it.
pub fn workload_api_bytes(data: &[u8]) {
    use lanyard_proto::{spiffe, workload};
    use prost::Message as _;

    use crate::socket::api::{spiffe as s, workload as w};

    let Some((&tag, bytes)) = data.split_first() else {
        return;
    };
    match tag % 8 {
        0 => {
            if let Ok(r) = spiffe::JwtsvidRequest::decode(bytes) {
                if let Ok(ask) = s::jwt_svid_request(&r) {
                    assert!(!ask.audiences.is_empty());
                    assert!(ask.audiences.iter().all(|a| !a.is_empty()));
                }
            }
        }
        1 => {
            if let Ok(r) = spiffe::ValidateJwtsvidRequest::decode(bytes) {
                if let Ok(ask) = s::validate_jwt_svid_request(&r) {
                    assert!(!ask.svid.is_empty() && !ask.audience.is_empty());
                }
            }
        }
        2 => {
            if let Ok(r) = workload::FetchCredentialsRequest::decode(bytes) {
                let _ = w::fetch_credentials_request(r);
            }
        }
        3 => {
            if let Ok(r) = workload::SignPublicKeyRequest::decode(bytes) {
                let _ = w::sign_public_key_request(r);
            }
        }
        // Requests with no fields the server reads: decoding is the conversion.
        4 => {
            let _ = spiffe::X509svidRequest::decode(bytes);
        }
        5 => {
            let _ = spiffe::X509BundlesRequest::decode(bytes);
        }
        6 => {
            let _ = spiffe::JwtBundlesRequest::decode(bytes);
        }
        _ => {
            let _ = workload::GetNonceRequest::decode(bytes);
        }
    }
}
