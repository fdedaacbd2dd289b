//! Replays the committed fuzz corpora (`fuzz/` at the repository root: seeds,
//! minimised corpus, crash repros) through the same entry points the fuzz
//! targets use, so a past finding stays fixed without cargo-fuzz installed.
#![allow(clippy::unwrap_used)]

use std::path::Path;

fn fuzz_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    lanyard_token::fuzzing::replay(&fuzz_dir(), target, run).unwrap()
}

#[test]
fn selector_template_corpus() {
    let n = replay(
        "selector_template",
        lanyard_plugins::fuzzing::selector_template_bytes,
    );
    assert!(n >= 6, "corpus went missing: {n} files");
}

#[test]
fn cgroup_corpus() {
    let n = replay("cgroup", lanyard_plugins::fuzzing::cgroup_bytes);
    assert!(n >= 30, "corpus went missing: {n} files");
}
