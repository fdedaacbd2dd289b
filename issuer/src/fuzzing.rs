//! Entry points shared by the cargo-fuzz targets (`fuzz/` at the repository
//! root) and the corpus replay test (`tests/fuzz_corpus.rs`), so a crash the
//! fuzzer finds replays as an ordinary `cargo test`.
//!
//! The gRPC targets take a first byte that picks the request type and decode the
//! rest with prost as that message; a message that decodes goes through the
//! same conversion (request → domain value or `Status`) the handler runs.

use std::path::Path;

use lanyard_proto::issuer as pb;
use prost::Message as _;

use crate::{admin, node_api};

/// The trust domain the gRPC targets check SPIFFE IDs against.
pub const TRUST_DOMAIN: &str = "example.org";
/// The time OpenSession verifies agent credentials at (the deny-list fuzz
/// seeds' time: their chain is valid then).
pub const NOW: u64 = lanyard_token::fuzzing::DENY_NOW;

/// `lanyard.issuer.v1.Node` requests.
pub fn node_request_bytes(data: &[u8]) {
    let Some((&tag, bytes)) = data.split_first() else {
        return;
    };
    match tag % 8 {
        0 => {
            if let Ok(r) = pb::AttestRequest::decode(bytes) {
                let _ = node_api::attest_request(r);
            }
        }
        1 => {
            if let Ok(r) = pb::OpenSessionRequest::decode(bytes) {
                let verifier = lanyard_token::Verifier::new(lanyard_token::fuzzing::deny_org());
                if let Ok(ask) = node_api::open_session_request(r, &verifier, NOW) {
                    assert!(ask.expires_at <= NOW + crate::state::SESSION_TTL_SECS);
                }
            }
        }
        2 => {
            if let Ok(r) = pb::RenewAgentRequest::decode(bytes) {
                let _ = node_api::renew_agent_request(r);
            }
        }
        3 => {
            if let Ok(r) = pb::SyncRequest::decode(bytes) {
                let _ = node_api::sync_request(&r);
            }
        }
        4 => {
            if let Ok(r) = pb::SignCredentialRequest::decode(bytes) {
                let _ = node_api::sign_credential_request(r);
            }
        }
        5 => {
            if let Ok(r) = pb::SignX509SvidRequest::decode(bytes) {
                if let Ok(ask) = node_api::x509_svid_request(r, TRUST_DOMAIN) {
                    assert!(ask
                        .spiffe_id
                        .starts_with(&format!("spiffe://{TRUST_DOMAIN}/")));
                }
            }
        }
        6 => {
            if let Ok(r) = pb::SignJwtSvidRequest::decode(bytes) {
                if let Ok(ask) = node_api::jwt_svid_request(r, TRUST_DOMAIN) {
                    assert!(!ask.audiences.is_empty());
                }
            }
        }
        _ => {
            let _ = pb::GetNonceRequest::decode(bytes);
        }
    }
}

/// `lanyard.issuer.v1.Admin` requests.
pub fn admin_request_bytes(data: &[u8]) {
    let Some((&tag, bytes)) = data.split_first() else {
        return;
    };
    match tag % 8 {
        0 => {
            if let Ok(r) = pb::Entry::decode(bytes) {
                if let Ok(e) = admin::entry_request(&r, TRUST_DOMAIN) {
                    assert!(!e.selectors.is_empty() && !e.node_selectors.is_empty());
                    assert!(e.ttl_secs > 0);
                    assert!(!e.subject.contains("{trust_domain}"));
                }
            }
        }
        1 => {
            if let Ok(r) = pb::CreateJoinTokenRequest::decode(bytes) {
                if let Ok(ask) = admin::join_token_request(r) {
                    assert!((1..=admin::MAX_JOIN_TOKEN_TTL_SECS).contains(&ask.ttl_secs));
                }
            }
        }
        2 => {
            if let Ok(r) = pb::AllowNodeRequest::decode(bytes) {
                let _ = admin::allow_node_request(&r);
            }
        }
        3 => {
            if let Ok(r) = pb::SetAgentStatusRequest::decode(bytes) {
                let _ = admin::agent_status_request(r);
            }
        }
        4 => {
            if let Ok(r) = pb::RevokeRequest::decode(bytes) {
                let _ = admin::revoke_request(r);
            }
        }
        // Requests the handlers read no checked fields from.
        5 => {
            let _ = pb::DeleteEntryRequest::decode(bytes);
        }
        6 => {
            let _ = pb::ListEntriesRequest::decode(bytes);
        }
        _ => {
            let _ = pb::ListAgentsRequest::decode(bytes);
        }
    }
}

/// The issuer's config parser on arbitrary text.
pub fn config_bytes(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::IssuerConfig::parse(text, Path::new("/etc/lanyard"), |_| None);
    }
}
