//! The `lanyard` CLI contract, exercised through the real binary.
#![allow(clippy::unwrap_used, clippy::panic)]

mod chain;
mod commands;
mod malformed;
mod revoke;
mod vectors;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) fn lanyard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lanyard"))
        .args(args)
        .output()
        .unwrap()
}

pub(crate) fn ok(args: &[&str]) -> String {
    let out = lanyard(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and expects exit 1 with exactly one line on stderr; returns that line.
pub(crate) fn invalid(args: &[&str]) -> String {
    let out = lanyard(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err.lines().count(),
        1,
        "want one line on stderr, got {err:?}"
    );
    err
}

pub(crate) struct Tmp(PathBuf);

impl Tmp {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("lanyard-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    fn p(&self, rel: &str) -> String {
        self.0.join(rel).to_string_lossy().into_owned()
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn mode(p: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

pub(crate) fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../token/tests/vectors/choria/chain")
}
