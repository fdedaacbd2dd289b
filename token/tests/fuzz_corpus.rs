//! Replays the committed fuzz corpora (and any crash repros) through the fuzz
//! entry points, so a past crash stays fixed without cargo-fuzz installed. The
//! fuzz crate is `fuzz/` at the repository root; `seeds/` holds the hand-made
//! starting inputs under stable names (cmin renames `corpus/`).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use lanyard_token::fuzzing::{DENY_NOW, DENY_ORG_SEED};
use lanyard_token::{deny, KeyPair};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every input of `target`: seeds, minimised corpus and regressions.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    lanyard_token::fuzzing::replay(&fuzz_dir(), target, run).unwrap()
}

#[test]
fn corpus_replays_without_panic() {
    let n = replay("verify", lanyard_token::fuzzing::verify_bytes);
    assert!(n >= 13, "corpus went missing: {n} files");
}

#[test]
fn deny_list_corpus_replays_without_panic() {
    let n = replay("deny_list", lanyard_token::fuzzing::deny_list_bytes);
    assert!(n >= 2, "corpus went missing: {n} files");
}

#[test]
fn corpus_lanyard_tokens_are_valid() {
    // The corpus must reach the accepting paths, or the fuzzer only explores errors.
    let root = fuzz_dir().join("seeds/verify");
    let org = lanyard_token::PublicKey::from_hex(
        "bccd00d522a5c6293bb32e58dbd416229a9b775945f99dcd4bbd17d70b23de74",
        false,
    )
    .unwrap();
    for f in ["lanyard_leaf.jwt", "lanyard_chain.jwt"] {
        let t = std::fs::read_to_string(root.join(f)).unwrap();
        lanyard_token::Verifier::new(org)
            .verify(t.trim(), 1_795_500_000)
            .unwrap();
    }
}

#[test]
fn deny_list_seeds_are_valid() {
    // One list signed by the org, one by a chain issuer: both accepting paths.
    let org = KeyPair::from_seed(&DENY_ORG_SEED).public();
    let root = fuzz_dir().join("seeds/deny_list");
    let by_org = deny::parse(
        &std::fs::read_to_string(root.join("org_signed.jws")).unwrap(),
        &org,
        DENY_NOW,
    )
    .unwrap();
    assert_eq!(by_org.signer_chain(), None);
    let by_chain = deny::parse(
        &std::fs::read_to_string(root.join("chain_signed.jws")).unwrap(),
        &org,
        DENY_NOW,
    )
    .unwrap();
    assert!(by_chain.signer_chain().is_some());
}

/// Writes the deny-list seeds again (they hold random KSUIDs, so only on demand):
/// `cargo test -p lanyard-token --test fuzz_corpus -- --ignored write_deny_list_seeds`.
#[test]
#[ignore = "writes files; run by hand when the deny-list format changes"]
fn write_deny_list_seeds() {
    let org = KeyPair::from_seed(&DENY_ORG_SEED);
    let mut denied = deny::Denied::default();
    denied.jtis.insert("3MVUmuoA6KiC9vfUlPWtgWZksOh".into());
    denied.chains.insert("2dzRc8qYiZGXHcZWHqnM7MgOqWk".into());
    let chain_key = KeyPair::from_seed(&[0x43; 32]);
    let req = lanyard_token::DelegateRequest {
        name: "fuzz".into(),
        validity_secs: 86_400,
        // Only an issuer-role chain may sign deny lists.
        roles: vec!["issuer".into()],
        ..Default::default()
    };
    let chain_jwt =
        lanyard_token::delegate(&org, &chain_key.public(), &req, DENY_NOW - 60).unwrap();
    let chain = lanyard_token::ChainIssuer::new(&chain_jwt, chain_key).unwrap();
    let root = fuzz_dir().join("seeds/deny_list");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("org_signed.jws"),
        deny::sign(&org, &denied, 7, DENY_NOW).unwrap(),
    )
    .unwrap();
    std::fs::write(
        root.join("chain_signed.jws"),
        deny::sign_by_chain(&chain, &denied, 8, DENY_NOW).unwrap(),
    )
    .unwrap();
    std::fs::write(
        root.join("org_signed_empty.jws"),
        deny::sign(&org, &deny::Denied::default(), 1, DENY_NOW).unwrap(),
    )
    .unwrap();
}
