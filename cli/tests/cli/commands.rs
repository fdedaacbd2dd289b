//! The `lanyard demo` and `lanyard version` commands.

use std::process::Command;

use super::{ok, Tmp};

#[test]
fn demo_runs_end_to_end() {
    let t = Tmp::new("demo");
    let out = ok(&["demo", "--dir", &t.p("d")]);
    for step in 1..=7 {
        assert!(
            out.contains(&format!("== step {step}:")),
            "missing step {step}"
        );
    }
    assert!(out.contains("demo complete"));
    assert!(
        !out.contains(&std::fs::read_to_string(t.p("d/org/org.seed")).unwrap()),
        "demo printed a seed"
    );
}

/// `--version` names the commit the binary was built from.
#[test]
fn version_names_the_commit() {
    let v = ok(&["--version"]);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(head.status.success(), "the tests run in a git checkout");
    let head = String::from_utf8(head.stdout).unwrap();
    assert!(
        v.starts_with("lanyard ") && v.contains(&format!("(commit {})", head.trim())),
        "{v}"
    );
}
