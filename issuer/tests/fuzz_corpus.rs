//! Replays the committed fuzz corpora (`fuzz/` at the repository root: seeds,
//! minimised corpus, crash repros) through the same entry points the fuzz
//! targets use, so a past finding stays fixed without cargo-fuzz installed.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use lanyard_issuer::fuzzing;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    lanyard_token::fuzzing::replay(&fuzz_dir(), target, run).unwrap()
}

#[test]
fn node_api_corpus() {
    let n = replay("issuer_node_api", fuzzing::node_request_bytes);
    assert!(n >= 7, "corpus went missing: {n} files");
}

#[test]
fn admin_api_corpus() {
    let n = replay("issuer_admin_api", fuzzing::admin_request_bytes);
    assert!(n >= 5, "corpus went missing: {n} files");
}

#[test]
fn config_corpus() {
    let n = replay("issuer_config", fuzzing::config_bytes);
    assert!(n >= 1, "corpus went missing: {n} files");
}

#[test]
fn the_open_session_seed_reaches_the_accepting_path() {
    use prost::Message as _;
    let data = std::fs::read(fuzz_dir().join("seeds/issuer_node_api/open_session")).unwrap();
    let r = lanyard_proto::issuer::OpenSessionRequest::decode(&data[1..]).unwrap();
    let verifier = lanyard_token::Verifier::new(lanyard_token::fuzzing::deny_org());
    let ask = lanyard_issuer::node_api::open_session_request(r, &verifier, fuzzing::NOW).unwrap();
    assert_eq!(ask.agent_id, "spiffe://example.org/lanyard/agent/join/n1");
}

/// Writes the Node and Admin seeds (one per request type that carries fields):
/// `cargo test -p lanyard-issuer --test fuzz_corpus -- --ignored write_seeds`.
#[test]
#[ignore = "writes files; run by hand when the protos change"]
fn write_seeds() {
    use lanyard_proto::issuer as pb;
    use lanyard_token::fuzzing::{DENY_NOW, DENY_ORG_SEED};
    use lanyard_token::KeyPair;
    use prost::Message as _;

    let org = KeyPair::from_seed(&DENY_ORG_SEED);
    let chain_key = KeyPair::from_seed(&[0x43; 32]);
    let req = lanyard_token::DelegateRequest {
        name: "fuzz".into(),
        validity_secs: 86_400,
        // The issuer's chain: it signs agent credentials.
        roles: vec!["issuer".into()],
        ..Default::default()
    };
    let chain_jwt =
        lanyard_token::delegate(&org, &chain_key.public(), &req, DENY_NOW - 60).unwrap();
    let chain = lanyard_token::ChainIssuer::new(&chain_jwt, chain_key).unwrap();
    let agent = KeyPair::from_seed(&[0x44; 32]);
    let mut leaf = lanyard_token::LeafRequest::workload(
        "spiffe://example.org/lanyard/agent/join/n1",
        agent.public(),
        3600,
    );
    leaf.purpose = lanyard_token::claims::PURPOSE_AGENT.into();
    let agent_jwt = chain.mint(&leaf, DENY_NOW - 10).unwrap();
    let key = agent.public().to_hex();
    let sig = agent.sign(b"nonce").to_vec();
    let td = "spiffe://example.org/web";

    let node: Vec<(&str, u8, Vec<u8>)> = vec![
        (
            "attest_join",
            0,
            pb::AttestRequest {
                nonce: b"nonce".to_vec(),
                agent_public_key: key.clone(),
                nonce_signature: sig.clone(),
                evidence: Some(pb::attest_request::Evidence::JoinToken("jt".into())),
            }
            .encode_to_vec(),
        ),
        (
            "attest_device",
            0,
            pb::AttestRequest {
                nonce: b"nonce".to_vec(),
                agent_public_key: key.clone(),
                nonce_signature: sig.clone(),
                evidence: Some(pb::attest_request::Evidence::Device(pb::DeviceEvidence {
                    name: "gw-1".into(),
                    signature: sig.clone(),
                })),
            }
            .encode_to_vec(),
        ),
        (
            "open_session",
            1,
            pb::OpenSessionRequest {
                agent_jwt,
                nonce: b"nonce".to_vec(),
                nonce_signature: sig.clone(),
            }
            .encode_to_vec(),
        ),
        (
            "renew_agent",
            2,
            pb::RenewAgentRequest {
                nonce: b"nonce".to_vec(),
                agent_public_key: key.clone(),
                nonce_signature: sig.clone(),
            }
            .encode_to_vec(),
        ),
        (
            "sync",
            3,
            pb::SyncRequest { since_revision: 7 }.encode_to_vec(),
        ),
        (
            "sign_credential",
            4,
            pb::SignCredentialRequest {
                subject: td.into(),
                public_key: key.clone(),
                audiences: vec!["nats".into()],
                networks: vec!["prod".into()],
                ttl_secs: 600,
                attrs: vec!["unix:uid:1000".into()],
            }
            .encode_to_vec(),
        ),
        (
            "sign_x509_svid",
            5,
            pb::SignX509SvidRequest {
                spiffe_id: td.into(),
                public_key: vec![0x30, 0x59, 0x30, 0x13],
                ttl_secs: 600,
            }
            .encode_to_vec(),
        ),
        (
            "sign_jwt_svid",
            6,
            pb::SignJwtSvidRequest {
                spiffe_id: td.into(),
                audiences: vec!["db".into()],
                ttl_secs: 0,
            }
            .encode_to_vec(),
        ),
    ];
    let admin: Vec<(&str, u8, Vec<u8>)> = vec![
        (
            "entry",
            0,
            pb::Entry {
                subject: "spiffe://{trust_domain}/ns/{k8s:ns}/sa/{k8s:sa}".into(),
                selectors: vec!["k8s:ns:shop".into(), "unix:uid:1000".into()],
                node_selectors: vec!["join:name:n1".into()],
                ttl_secs: 600,
                audiences: vec!["db".into()],
                networks: vec!["prod".into()],
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "create_join_token",
            1,
            pb::CreateJoinTokenRequest {
                ttl_secs: 600,
                name: "n1".into(),
            }
            .encode_to_vec(),
        ),
        (
            "allow_node",
            2,
            pb::AllowNodeRequest {
                name: "gw-1".into(),
                public_key: key.clone(),
            }
            .encode_to_vec(),
        ),
        (
            "set_agent_status",
            3,
            pb::SetAgentStatusRequest {
                id: "spiffe://example.org/lanyard/agent/join/n1".into(),
                status: "suspended".into(),
            }
            .encode_to_vec(),
        ),
        (
            "revoke",
            4,
            pb::RevokeRequest {
                what: Some(pb::revoke_request::What::Jti(
                    "3MVUmuoA6KiC9vfUlPWtgWZksOh".into(),
                )),
            }
            .encode_to_vec(),
        ),
    ];
    for (target, seeds) in [("issuer_node_api", node), ("issuer_admin_api", admin)] {
        let root = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&root).unwrap();
        for (name, tag, bytes) in seeds {
            let mut data = vec![tag];
            data.extend(bytes);
            std::fs::write(root.join(name), data).unwrap();
        }
    }
}
