//! Replays the committed fuzz corpora (`fuzz/` at the repository root: seeds,
//! minimised corpus, crash repros) through the same entry points the fuzz
//! targets use, so a past finding stays fixed without cargo-fuzz installed.
#![allow(clippy::unwrap_used)]

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for dir in ["seeds", "corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.file_name().is_some_and(|f| f != ".keep") {
                run(&std::fs::read(&path).unwrap());
                n += 1;
            }
        }
    }
    n
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
