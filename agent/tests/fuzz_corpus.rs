//! Replays the committed fuzz corpora (`fuzz/` at the repository root: seeds,
//! minimised corpus, crash repros) through the same entry points the fuzz
//! targets use, so a past finding stays fixed without cargo-fuzz installed.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use lanyard_agent::fuzzing;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    lanyard_token::fuzzing::replay(&fuzz_dir(), target, run).unwrap()
}

#[test]
fn authority_fix_corpus() {
    let n = replay("authority_fix", fuzzing::authority_fix_bytes);
    assert!(n > 0, "corpus went missing");
}

#[test]
fn config_corpus() {
    let n = replay("agent_config", fuzzing::config_bytes);
    assert!(n > 0, "corpus went missing");
}

#[test]
fn workload_api_corpus() {
    let n = replay("workload_api", fuzzing::workload_api_bytes);
    assert!(n >= 5, "corpus went missing: {n} files");
}

/// Writes the Workload API seeds (one per request type that carries fields):
/// `cargo test -p lanyard-agent --test fuzz_corpus -- --ignored write_workload_api_seeds`.
#[test]
#[ignore = "writes files; run by hand when the protos change"]
fn write_workload_api_seeds() {
    use lanyard_proto::{spiffe, workload};
    use prost::Message as _;

    let key = lanyard_token::KeyPair::from_seed(&[7; 32]);
    let nonce = "bm9uY2U";
    let signature = lanyard_token::pop::prove(&key, nonce.as_bytes()).unwrap();
    let seeds: Vec<(&str, u8, Vec<u8>)> = vec![
        (
            "fetch_jwt_svid",
            0,
            spiffe::JwtsvidRequest {
                audience: vec!["db".into(), String::new()],
                spiffe_id: "spiffe://example.org/web".into(),
            }
            .encode_to_vec(),
        ),
        (
            "validate_jwt_svid",
            1,
            spiffe::ValidateJwtsvidRequest {
                audience: "db".into(),
                svid: "eyJhbGciOiJFUzI1NiJ9.e30.c2ln".into(),
            }
            .encode_to_vec(),
        ),
        (
            "fetch_credentials",
            2,
            workload::FetchCredentialsRequest {
                audiences: vec!["nats".into()],
            }
            .encode_to_vec(),
        ),
        (
            "sign_public_key",
            3,
            workload::SignPublicKeyRequest {
                subject: "spiffe://example.org/web".into(),
                public_key: key.public().to_hex(),
                nonce: nonce.into(),
                signature,
                audiences: vec!["nats".into()],
            }
            .encode_to_vec(),
        ),
        ("fetch_x509_svid", 4, Vec::new()),
    ];
    let root = fuzz_dir().join("seeds/workload_api");
    std::fs::create_dir_all(&root).unwrap();
    for (name, tag, bytes) in seeds {
        let mut data = vec![tag];
        data.extend(bytes);
        std::fs::write(root.join(name), data).unwrap();
    }
}
