//! Replays the committed fuzz corpus (and any crash repros) through the fuzz entry
//! point, so a past crash stays fixed without cargo-fuzz installed. `seeds/` holds
//! the hand-made starting inputs under stable names (cmin renames `corpus/`).

#[test]
fn corpus_replays_without_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["seeds/verify", "corpus/verify", "regressions/verify"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries {
            let data = std::fs::read(e.unwrap().path()).unwrap();
            lanyard_token::fuzzing::verify_bytes(&data);
            n += 1;
        }
    }
    assert!(n >= 13, "corpus went missing: {n} files");
}

#[test]
fn corpus_lanyard_tokens_are_valid() {
    // The corpus must reach the accepting paths, or the fuzzer only explores errors.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/verify");
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
