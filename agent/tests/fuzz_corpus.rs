//! Replays the committed fuzz corpora through the same entry points the fuzz
//! targets use, so a past finding stays fixed without cargo-fuzz installed.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

fn inputs(dir: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(dir);
    std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

#[test]
fn authority_fix_corpus() {
    let all = inputs("authority_fix");
    assert!(!all.is_empty());
    for data in all {
        lanyard_agent::authority_fix::fuzz_one(&data);
    }
}

#[test]
fn config_corpus() {
    let all = inputs("config");
    assert!(!all.is_empty());
    for data in all {
        if let Ok(text) = std::str::from_utf8(&data) {
            let _ = lanyard_agent::config::Config::parse(text, Path::new("/etc/lanyard"), |_| None);
        }
    }
}
